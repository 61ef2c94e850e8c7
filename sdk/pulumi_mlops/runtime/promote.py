"""``mlops promote``: copy a registered model version from one MLflow registry to another (one
registry per environment, promotion by copying versions) and move an alias on the copy.

What is copied, all through MLflow's client and each registry's artifact proxy: the version's
model directory (byte for byte, so its ``MLmodel`` signature, requirements and files are the
source's), the drift profile its run carries (``PROFILE_ARTIFACT_PATH``, which the serving
runtime reads from the version's run), and the version's tags (its lineage). Added on the copy
and on the run that holds it: `~pulumi_mlops.contracts.lineage.ORIGIN_TAGS`, naming the source
registry, model, version and run.

Idempotent: a source version already copied (found by its origin tags) is not copied again;
only the alias is (re)moved. Moving a protected alias (default ``champion``) takes an approval
(``--approved-by``, ``--reason``), recorded as `~pulumi_mlops.contracts.lineage.APPROVAL_TAGS`
on the version before the alias moves to it.

Credentials: MLflow's client reads ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (and the other
``MLFLOW_TRACKING_*`` variables) from the environment at every request, and one set cannot
serve two registries. Each side is therefore talked to inside
`~pulumi_mlops.runtime.environ.environment`, which sets exactly that side's
``MLFLOW_TRACKING_*`` variables from ``MLOPS_FROM_*`` or ``MLOPS_TO_*`` (`SIDE_VARIABLES`) and
restores the environment after. The sides never overlap (a download
finishes before an upload starts), so no request carries the other side's credentials.
Passwords are never command-line arguments (process lists, CI logs).

MLflow (and the drift package, which imports pandas) is imported where it is used, so that
building the ``mlops`` parser and ``mlops promote --help`` do not pay for it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pulumi_mlops.contracts.lineage import (
    APPROVAL_ALIAS_TAG,
    APPROVAL_AT_TAG,
    APPROVAL_BY_TAG,
    APPROVAL_REASON_TAG,
    ORIGIN_MODEL_TAG,
    ORIGIN_REGISTRY_TAG,
    ORIGIN_RUN_TAG,
    ORIGIN_VERSION_TAG,
)
from pulumi_mlops.contracts.model_uri import ModelUriError, parse_model_uri
from pulumi_mlops.runtime.environ import environment

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_PROTECTED_ALIASES",
    "EXIT_APPROVAL_REQUIRED",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "SIDE_VARIABLES",
    "Approval",
    "Origin",
    "Outcome",
    "PromoteError",
    "Request",
    "SourceModel",
    "add_parser",
    "approval_problem",
    "find_promoted_version",
    "lineage_tags",
    "main",
    "parse_source_model",
    "promote",
    "registry_identity",
    "resolve_registry",
    "run",
    "side_variables",
]

EXIT_OK: Final = 0
"""The alias holds the promoted version (copied now, or found already copied)."""
EXIT_FAILED: Final = 1
"""A registry call failed (unreachable, credentials refused, no permission)."""
EXIT_USAGE: Final = 2
"""Bad arguments: a malformed ``--model``, a stack name without the Pulumi CLI, one registry
given as both sides."""
EXIT_APPROVAL_REQUIRED: Final = 3
"""The alias is protected and ``--approved-by``/``--reason`` are missing; nothing changed."""
EXIT_NOT_FOUND: Final = 4
"""The source has no such model, alias or version; nothing changed."""

DEFAULT_PROTECTED_ALIASES: Final = ("champion",)
"""Aliases that move only with an approval, unless ``--protected-alias`` says otherwise."""
DEFAULT_EXPERIMENT: Final = "mlops-promotions"
"""The destination experiment whose runs hold the copied artifacts."""

_NOT_COPIED = ("mlops.promoted_from.", "mlops.approval.")
"""Tag prefixes of a source version that describe its own registry's promotion, not lineage."""

SIDE_VARIABLES: Final = ("USERNAME", "PASSWORD", "TOKEN", "INSECURE_TLS", "SERVER_CERT_PATH",
                         "CLIENT_CERT_PATH")
"""``MLOPS_<SIDE>_<X>`` becomes ``MLFLOW_TRACKING_<X>`` while that side is talked to."""

_MODEL_ARTIFACT = "model"
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
_REFUSED = ("UNAUTHENTICATED", "PERMISSION_DENIED")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_STACK_OUTPUT = "registry_url"
_PULUMI_TIMEOUT = 120.0


class PromoteError(Exception):
    """A promotion that cannot go on; ``exit_code`` is what ``mlops promote`` exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class SourceModel:
    """What ``--model`` names: a registered model and one of its aliases or versions."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_source_model(value: str) -> SourceModel:
    """Parse ``NAME@ALIAS`` or ``NAME/VERSION`` (a ``models:/`` prefix is allowed), with
    MLflow's rules for names, aliases and versions.

    Raises:
        PromoteError: (`EXIT_USAGE`) anything else, saying what is wrong.
    """
    uri = value if value.startswith("models:/") else f"models:/{value}"
    try:
        ref = parse_model_uri(uri)
    except ModelUriError as err:
        raise PromoteError(f"--model {value!r} must be NAME@ALIAS or NAME/VERSION (e.g. "
                           f"fraud@champion, fraud/7): {err.reason}", EXIT_USAGE) from None
    return SourceModel(ref.name, ref.alias, ref.version)


def registry_identity(tracking_uri: str) -> str:
    """The registry a tracking URI names, as recorded in `ORIGIN_REGISTRY_TAG`: without
    credentials, query or fragment, scheme and host in lower case, no trailing ``/``."""
    parts = urllib.parse.urlsplit(tracking_uri.strip())
    host = parts.netloc.rpartition("@")[2].lower()
    return urllib.parse.urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def resolve_registry(value: str, flag: str, *,
                     which: Callable[[str], str | None] = shutil.which,
                     run_command: Callable[..., Any] = subprocess.run) -> str:
    """The tracking URI ``value`` names: itself when it is a URI (has a scheme), else the
    ``registry_url`` output of the Pulumi stack of that name, read with the Pulumi CLI.

    Raises:
        PromoteError: (`EXIT_USAGE`) a stack name where the Pulumi CLI is not on ``PATH``, or
            whose stack has no usable ``registry_url`` output.
    """
    value = value.strip()
    if _URI.match(value):
        return value
    command = ["pulumi", "stack", "output", _STACK_OUTPUT, "--stack", value]
    shown = " ".join(command)
    if not value:
        raise PromoteError(f"{flag} is empty: give the registry's tracking URI (e.g. "
                           "https://mlflow.prod.example.com) or a Pulumi stack name",
                           EXIT_USAGE)
    if which("pulumi") is None:
        raise PromoteError(
            f"{flag} {value!r} is not a tracking URI (it has no scheme such as https://), so "
            f"it would be a Pulumi stack name; resolving it needs the Pulumi CLI (`{shown}`), "
            f"which is not on PATH. Give the registry's tracking URI instead, e.g. "
            f"{flag} https://mlflow.{value}.example.com", EXIT_USAGE)
    try:
        done = run_command(command, capture_output=True, text=True, timeout=_PULUMI_TIMEOUT,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PromoteError(f"{flag} {value!r}: `{shown}` failed: {err}", EXIT_USAGE) from None
    url = (done.stdout or "").strip()
    if done.returncode != 0 or not _URI.match(url):
        detail = (done.stderr or "").strip()[:500] or f"it printed {url!r}"
        raise PromoteError(f"{flag} {value!r}: `{shown}` gave no tracking URI ({detail}); "
                           "give the registry's tracking URI instead", EXIT_USAGE)
    return url


def side_variables(side: str, environ: Mapping[str, str]) -> dict[str, str | None]:
    """The ``MLFLOW_TRACKING_*`` variables while talking to ``side`` (``FROM`` or ``TO``):
    each `SIDE_VARIABLES` entry from ``MLOPS_<SIDE>_<X>``, None (unset) when that is unset, so
    that the process's own ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` reach neither side."""
    return {f"MLFLOW_TRACKING_{name}": environ.get(f"MLOPS_{side}_{name}")
            for name in SIDE_VARIABLES}


@dataclass(frozen=True)
class Origin:
    """The source version of a promotion."""

    registry: str
    model: str
    version: str
    run_id: str

    def tags(self) -> dict[str, str]:
        """The `~pulumi_mlops.contracts.lineage.ORIGIN_TAGS` of a copy of this version."""
        return {ORIGIN_REGISTRY_TAG: self.registry, ORIGIN_MODEL_TAG: self.model,
                ORIGIN_VERSION_TAG: self.version, ORIGIN_RUN_TAG: self.run_id}

    def matches(self, tags: Mapping[str, str]) -> bool:
        """Whether a version with ``tags`` is a copy of this version (registry, model and
        version agree; the run is recorded, not compared)."""
        return (tags.get(ORIGIN_REGISTRY_TAG) == self.registry
                and tags.get(ORIGIN_MODEL_TAG) == self.model
                and tags.get(ORIGIN_VERSION_TAG) == self.version)


def find_promoted_version(versions: Iterable[tuple[str, Mapping[str, str]]],
                          origin: Origin) -> str | None:
    """The destination version (number) that is a copy of ``origin``, given the destination
    model's ``(version, tags)`` pairs; the lowest when two promotions raced, None if none."""
    found = [int(version) for version, tags in versions if origin.matches(tags)]
    return str(min(found)) if found else None


def lineage_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The source version's tags a copy carries: all but its own promotion's origin and
    approval (a staging approval is not a production one)."""
    return {k: v for k, v in tags.items() if not k.startswith(_NOT_COPIED)}


@dataclass(frozen=True)
class Approval:
    """Who approved moving a protected alias, and why."""

    by: str
    reason: str

    def tags(self, alias: str, at: datetime.datetime) -> dict[str, str]:
        """The `~pulumi_mlops.contracts.lineage.APPROVAL_TAGS` recording this approval of
        moving ``alias`` at ``at``."""
        return {APPROVAL_BY_TAG: self.by, APPROVAL_REASON_TAG: self.reason,
                APPROVAL_AT_TAG: at.astimezone(datetime.UTC).isoformat(timespec="seconds"),
                APPROVAL_ALIAS_TAG: alias}


def approval_problem(alias: str, protected: Sequence[str], approved_by: str | None,
                     reason: str | None) -> str | None:
    """Why moving ``alias`` cannot go ahead with this approval, or None when it can."""
    if alias not in protected:
        return None
    missing = [flag for flag, value in (("--approved-by", approved_by), ("--reason", reason))
               if not (value or "").strip()]
    if not missing:
        return None
    return (f"the alias `{alias}` is protected on the destination: moving it needs an approval "
            f"record; give {' and '.join(missing)} (who approved, and why; recorded as "
            f"{APPROVAL_BY_TAG}, {APPROVAL_AT_TAG} and {APPROVAL_REASON_TAG} on the version). "
            f"Nothing was changed")


# --------------------------------------------------------------------------- the promotion


@dataclass(frozen=True)
class Request:
    """One ``mlops promote``: registries resolved, credentials per side."""

    source_uri: str
    dest_uri: str
    model: SourceModel
    to_alias: str
    protected: tuple[str, ...]
    approval: Approval | None
    experiment: str
    source_env: Mapping[str, str | None]
    dest_env: Mapping[str, str | None]


@dataclass(frozen=True)
class Outcome:
    """What `promote` did."""

    origin: Origin
    version: str
    registered: bool
    previous: str | None
    moved: bool
    drift_profile: bool | None


def _code(err: BaseException) -> str:
    return str(getattr(err, "error_code", "") or "")


def _failure(err: Exception, side: str, uri: str, doing: str) -> PromoteError:
    message = str(getattr(err, "message", None) or err).strip().splitlines()[0][:500]
    hint = ""
    if _code(err) in _REFUSED or "401" in message or "403" in message:
        hint = (f" (credentials come from MLOPS_{side}_USERNAME and MLOPS_{side}_PASSWORD, or "
                f"MLOPS_{side}_TOKEN; the user needs permission for this)")
    return PromoteError(f"{doing} on {registry_identity(uri)} failed: {message}{hint}")


def _source_version(client: Any, model: SourceModel) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model.name)
    except MlflowException as err:
        if _code(err) in _NOT_FOUND:
            raise PromoteError(f"the source registry has no model {model.name!r} (--model "
                               f"{model})", EXIT_NOT_FOUND) from None
        raise
    if model.alias is not None:
        aliases = dict(registered.aliases or {})
        if model.alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise PromoteError(f"model {model.name!r} has no alias {model.alias!r} in the "
                               f"source registry (its aliases: {known})", EXIT_NOT_FOUND)
        version = str(aliases[model.alias])
    else:
        version = str(model.version)
    try:
        return client.get_model_version(model.name, version)
    except MlflowException as err:
        if _code(err) in _NOT_FOUND:
            raise PromoteError(f"model {model.name!r} has no version {version} in the source "
                               "registry", EXIT_NOT_FOUND) from None
        raise


def _dest_state(client: Any, name: str, origin: Origin, alias: str) -> tuple[str | None,
                                                                               str | None]:
    """(the copy of ``origin`` if any, the version ``alias`` holds if any) on the destination."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        if _code(err) in _NOT_FOUND:
            return None, None
        raise
    holder = (registered.aliases or {}).get(alias)
    found = client.search_model_versions(
        f"name = '{_quoted(name)}' and tags.`{ORIGIN_VERSION_TAG}` = '{origin.version}'")
    pairs = [(str(v.version), dict(v.tags or {})) for v in found if v.name == name]
    return find_promoted_version(pairs, origin), None if holder is None else str(holder)


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def _download(client: Any, uri: str, source: Any, scratch: Path) -> tuple[Path, Path | None]:
    """The source version's model directory and its run's drift profile (None without one)."""
    from mlflow.artifacts import download_artifacts

    from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH

    artifact_uri = client.get_model_version_download_uri(source.name, source.version)
    model_dir = Path(download_artifacts(artifact_uri=artifact_uri,
                                        dst_path=str(scratch / "model"), tracking_uri=uri))
    if not (model_dir / "MLmodel").is_file():
        raise PromoteError(f"version {source.version} of {source.name!r} has no MLmodel file "
                           f"at {artifact_uri}: not an MLflow model")
    profile = None
    if source.run_id:
        folder = PROFILE_ARTIFACT_PATH.rpartition("/")[0]
        listed = {f.path for f in client.list_artifacts(source.run_id, folder)}
        if PROFILE_ARTIFACT_PATH in listed:
            profile = Path(download_artifacts(run_id=source.run_id,
                                              artifact_path=PROFILE_ARTIFACT_PATH,
                                              dst_path=str(scratch / "drift"),
                                              tracking_uri=uri))
    return model_dir, profile


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as err:  # created meanwhile by a concurrent promotion
        if _code(err) != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(client.get_experiment_by_name(name).experiment_id)


def _register(client: Any, request: Request, origin: Origin, source: Any, model_dir: Path,
              profile: Path | None) -> str:
    """Copy into a new run of the destination and register it; the new version's number."""
    from mlflow.exceptions import MlflowException

    from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH

    name = request.model.name
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if _code(err) != "RESOURCE_ALREADY_EXISTS":
            raise
    run = client.create_run(_experiment_id(client, request.experiment),
                            run_name=f"promote-{name}-v{origin.version}", tags=origin.tags())
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(model_dir), _MODEL_ARTIFACT)
        if profile is not None:
            client.log_artifact(run_id, str(profile),
                                PROFILE_ARTIFACT_PATH.rpartition("/")[0])
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri.rstrip('/')}/{_MODEL_ARTIFACT}",
            run_id=run_id, tags={**lineage_tags(dict(source.tags or {})), **origin.tags()},
            description=source.description or None)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return str(version.version)


def promote(request: Request, now: Callable[[], datetime.datetime] = lambda:
            datetime.datetime.now(datetime.UTC)) -> Outcome:
    """Copy ``request.model``'s version unless already copied, record the approval if one is
    given, and move ``request.to_alias`` to the copy.

    Raises:
        PromoteError: what went wrong, with the exit code; a `EXIT_APPROVAL_REQUIRED` or
            `EXIT_NOT_FOUND` before anything changed.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    src = MlflowClient(tracking_uri=request.source_uri, registry_uri=request.source_uri)
    dst = MlflowClient(tracking_uri=request.dest_uri, registry_uri=request.dest_uri)
    name, alias = request.model.name, request.to_alias
    try:
        with environment(request.source_env):
            source = _source_version(src, request.model)
    except MlflowException as err:
        raise _failure(err, "FROM", request.source_uri, f"reading {request.model}") from err
    origin = Origin(registry_identity(request.source_uri), name, str(source.version),
                    str(source.run_id or ""))
    try:
        with environment(request.dest_env):
            existing, holder = _dest_state(dst, name, origin, alias)
    except MlflowException as err:
        raise _failure(err, "TO", request.dest_uri, f"reading model {name!r}") from err
    if existing is not None and holder == existing:
        return Outcome(origin, existing, False, holder, False, None)
    problem = approval_problem(alias, request.protected,
                               request.approval.by if request.approval else None,
                               request.approval.reason if request.approval else None)
    if problem is not None:
        raise PromoteError(problem, EXIT_APPROVAL_REQUIRED)
    profile_copied: bool | None = None
    model_dir: Path | None = None
    profile: Path | None = None
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as scratch:
        if existing is None:
            try:
                with environment(request.source_env):
                    model_dir, profile = _download(src, request.source_uri, source,
                                                   Path(scratch))
            except MlflowException as err:
                raise _failure(err, "FROM", request.source_uri,
                               f"downloading version {origin.version} of {name!r}") from err
            profile_copied = profile is not None
        try:
            with environment(request.dest_env):
                version = existing
                if version is None:
                    assert model_dir is not None  # downloaded above
                    version = _register(dst, request, origin, source, model_dir, profile)
                if request.approval is not None:
                    for key, value in request.approval.tags(alias, now()).items():
                        dst.set_model_version_tag(name, version, key, value)
                dst.set_registered_model_alias(name, alias, version)
        except MlflowException as err:
            raise _failure(err, "TO", request.dest_uri,
                           f"registering or aliasing model {name!r}") from err
    return Outcome(origin, version, existing is None, holder, True, profile_copied)


# --------------------------------------------------------------------------- command line


_DESCRIPTION = (
    "Copy a registered model version from one MLflow registry to another (one registry per "
    "environment) and move an alias to the copy: the model's artifacts through both "
    "registries' artifact proxies, its signature, the drift profile of its run, and its tags "
    "(lineage), plus mlops.promoted_from.* tags naming the source registry, model, version and "
    "run. Promoting the same source version again registers nothing and only moves the alias. "
    "Credentials per side from the environment, never from arguments: MLOPS_FROM_USERNAME, "
    "MLOPS_FROM_PASSWORD (or MLOPS_FROM_TOKEN) and MLOPS_TO_USERNAME, MLOPS_TO_PASSWORD (or "
    "MLOPS_TO_TOKEN); MLOPS_<SIDE>_INSECURE_TLS, _SERVER_CERT_PATH and _CLIENT_CERT_PATH as "
    "MLflow's MLFLOW_TRACKING_* ones.")
_EPILOG = (
    "exit status:\n"
    "  0  the alias holds the promoted version (copied now, or already copied)\n"
    "  1  a registry call failed (unreachable, credentials refused, no permission)\n"
    "  2  bad arguments, or a stack name where the Pulumi CLI is not installed\n"
    "  3  the alias is protected and --approved-by/--reason are missing; nothing changed\n"
    "  4  the source has no such model, alias or version; nothing changed")


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--from", dest="source", required=True, metavar="URI_OR_STACK",
                        help="source registry: a tracking URI, or a Pulumi stack name whose "
                        "`registry_url` output is read with the Pulumi CLI")
    parser.add_argument("--to", dest="dest", required=True, metavar="URI_OR_STACK",
                        help="destination registry, as --from")
    parser.add_argument("--model", required=True, metavar="NAME@ALIAS",
                        help="the source version: NAME@ALIAS (e.g. fraud@champion) or "
                        "NAME/VERSION")
    parser.add_argument("--to-alias", metavar="ALIAS",
                        help="alias to move to the copy on the destination (default: the "
                        "source alias, or champion when --model names a version)")
    parser.add_argument("--protected-alias", action="append", metavar="ALIAS",
                        help="an alias that moves only with --approved-by and --reason; "
                        "repeat for several (default: champion)")
    parser.add_argument("--approved-by", metavar="WHO",
                        help="who approved moving a protected alias (recorded as "
                        f"{APPROVAL_BY_TAG})")
    parser.add_argument("--reason", metavar="WHY",
                        help=f"why (recorded as {APPROVAL_REASON_TAG}; the time as "
                        f"{APPROVAL_AT_TAG})")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help="destination experiment whose runs hold the copies "
                        "(default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``promote`` to the ``mlops`` command's subparsers; it runs `run`."""
    parser = subparsers.add_parser(
        "promote", help="copy a model version from one MLflow registry to another and move "
        "an alias to it", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return _configure(parser)


def _request(ns: argparse.Namespace, environ: Mapping[str, str]) -> Request:
    model = parse_source_model(ns.model)
    to_alias = ns.to_alias or model.alias or "champion"
    try:
        to_alias = parse_model_uri(f"models:/{model.name}@{to_alias}").alias or to_alias
    except ModelUriError as err:
        raise PromoteError(f"--to-alias {ns.to_alias!r}: {err.reason}", EXIT_USAGE) from None
    source_uri = resolve_registry(ns.source, "--from")
    dest_uri = resolve_registry(ns.dest, "--to")
    if registry_identity(source_uri) == registry_identity(dest_uri):
        raise PromoteError(f"--from and --to name the same registry ({registry_identity(dest_uri)}"
                           "): promotion copies between two registries; to move an alias "
                           "within one, use MLflow's client", EXIT_USAGE)
    approval = None
    if ns.approved_by or ns.reason:
        approval = Approval((ns.approved_by or "").strip(), (ns.reason or "").strip())
    return Request(source_uri, dest_uri, model, to_alias,
                   tuple(ns.protected_alias or DEFAULT_PROTECTED_ALIASES), approval,
                   ns.experiment, side_variables("FROM", environ), side_variables("TO", environ))


def run(ns: argparse.Namespace) -> int:
    """Run a parsed ``mlops promote``; print what it did (stdout) or why not (stderr)."""
    try:
        request = _request(ns, os.environ)
        outcome = promote(request)
    except PromoteError as err:
        print(f"mlops promote: error: {err}", file=sys.stderr)
        return err.exit_code
    where = registry_identity(request.dest_uri)
    copy = (f"copied {outcome.origin.model} version {outcome.origin.version} of "
            f"{outcome.origin.registry} as version {outcome.version} of {where}"
            if outcome.registered else
            f"{outcome.origin.model} version {outcome.origin.version} of "
            f"{outcome.origin.registry} is already version {outcome.version} of {where}")
    if outcome.drift_profile is False:
        copy += " (the source run has no drift profile: no drift gauges when served)"
    if outcome.moved:
        print(f"{copy}; `{request.to_alias}` moved to {outcome.version} (was "
              f"{outcome.previous or 'unset'})")
    else:
        print(f"{copy}; `{request.to_alias}` already holds it: nothing changed")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlops promote`` with ``argv`` (the arguments after ``promote``)."""
    parser = _configure(argparse.ArgumentParser(
        prog="mlops promote", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    ns = parser.parse_args(argv)
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
