"""Reconcile one registry client's MLflow user and permissions: what `ModelRegistry.grant_read`
and `ModelRegistry.grant_write` declare, applied from inside the registry's network.

MLflow keeps users and permissions in the registry, which is usually reachable only from its
cluster or Docker network, so this runs there: a Job on Kubernetes, a one-shot container on
Docker, from the registry's own image (the file is mounted and run as
``python registry_access.py --spec FILE``; it imports only the standard library and mlflow). It
authenticates as the registry's admin (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``); the client
user's password comes from ``MLOPS_GRANT_PASSWORD``.

The spec (JSON): ``{"username": str, "read": [model, ...], "write": [model, ...],
"experiments": [name, ...]}``. What it makes true, through MLflow's role API (MLflow ≥ 3.13;
the roles it owns are named ``mlops-...``):

- the user exists, is not an admin, and has the declared password;
- a role ``mlops-read-<model>`` per model the user reads or writes: READ on the registered model
  and on every experiment its versions were logged in (found now) or will be logged in (the
  writers' experiments, added by their grants), so the user can load the versions' artifacts
  even where ``default_permission`` is ``NO_PERMISSIONS``;
- a role ``mlops-user-<username>`` holding exactly EDIT on the models it writes (created empty
  if missing, so the user never becomes their owner) and on its experiments (created if
  missing).

Idempotent: a second run with the same spec changes nothing and says so. It never deletes a
user, a role it did not create, or a permission of a role it shares (``mlops-read-*``); it
removes from the user's own role what the spec no longer declares. Bounded: at most
`MAX_VERSIONS` versions of a model are read, and each call times out.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_VERSIONS", "Spec", "main", "reconcile"]

MAX_VERSIONS = 1000
"""The most versions of one model whose experiments a run looks up."""
_WORKSPACE = "default"
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class Spec:
    """One client's access.

    Attributes:
        username: The MLflow user.
        read: Registered models it reads (and loads).
        write: Registered models it writes: registers versions, moves aliases.
        experiments: Experiments it logs runs to (by name).
    """

    username: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> Spec:
        """Read a spec file, refusing unknown keys."""
        raw = json.loads(path.read_text())
        unknown = set(raw) - {"username", "read", "write", "experiments"}
        if unknown or not isinstance(raw.get("username"), str):
            raise ValueError(f"{path}: a spec has a `username` and only `read`, `write`, "
                             f"`experiments` (unknown: {sorted(unknown)})")
        return cls(raw["username"], *(tuple(raw.get(k, ())) for k in
                                      ("read", "write", "experiments")))


@dataclass
class Report:
    """What a run did, a line per change (and what it found already true)."""

    changes: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def note(self, changed: bool, what: str) -> None:
        (self.changes if changed else self.unchanged).append(what)


def _code(err: Exception) -> str | None:
    return getattr(err, "error_code", None)


def _authenticates(tracking_uri: str, username: str, password: str) -> bool:
    # MLflow's client has no call for "who am I"; its REST route answers 200 or 401.
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/users/current")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as err:
        if err.code == 401:
            return False
        raise


def _wait_until_up(tracking_uri: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if time.monotonic() > deadline:
                raise SystemExit(f"the registry at {tracking_uri} did not answer /health "
                                 f"within {seconds:.0f} s: {err}") from None
            time.sleep(2)


def _ensure(get: Callable[[], Any], create: Callable[[], Any]) -> tuple[Any, bool]:
    """The object ``get`` returns, created when it raises MLflow's not-found."""
    from mlflow.exceptions import MlflowException

    try:
        return get(), False
    except MlflowException as err:
        if _code(err) != _NOT_FOUND:
            raise
    return create(), True


def reconcile(spec: Spec, tracking_uri: str, password: str) -> Report:
    """Make the registry at ``tracking_uri`` hold ``spec`` (as its admin, from the standard
    ``MLFLOW_TRACKING_*`` variables)."""
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    auth, client, report = AuthServiceClient(tracking_uri), MlflowClient(tracking_uri), Report()
    user, created = _ensure(lambda: auth.get_user(spec.username),
                            lambda: auth.create_user(spec.username, password))
    if user.is_admin:
        raise SystemExit(f"user {spec.username!r} is an admin of the registry; a client never "
                         "gets admin rights: choose another username")
    report.note(created, f"user {spec.username}: created")
    if not created:
        stale = not _authenticates(tracking_uri, spec.username, password)
        if stale:
            auth.update_user_password(spec.username, password)
        report.note(stale, f"user {spec.username}: password set")

    roles = {r.name: r for r in auth.list_roles(_WORKSPACE)}

    def role(name: str, description: str) -> Any:
        if name not in roles:
            roles[name] = auth.create_role(_WORKSPACE, name, description)
            report.note(True, f"role {name}: created")
        return roles[name]

    def grant(target: Any, wanted: dict[tuple[str, str], str], exact: bool) -> None:
        have = {(p.resource_type, p.resource_pattern): p
                for p in auth.list_role_permissions(target.id)}
        for key, level in sorted(wanted.items()):
            current = have.get(key)
            what = f"role {target.name}: {level} on {key[0]} {key[1]}"
            if current is None:
                auth.add_role_permission(target.id, key[0], key[1], level)
            elif current.permission != level:
                auth.update_role_permission(current.id, level)
            report.note(current is None or current.permission != level, what)
        for key, current in sorted(have.items()) if exact else ():
            if key not in wanted:
                auth.remove_role_permission(current.id)
                report.note(True, f"role {target.name}: removed {key[0]} {key[1]}")

    experiment_ids: dict[str, str] = {}
    for name in spec.experiments:
        experiment = client.get_experiment_by_name(name)
        made = experiment is None
        if made:
            experiment = client.get_experiment(client.create_experiment(name))
        report.note(made, f"experiment {name}: created")
        experiment_ids[name] = experiment.experiment_id
    for model in spec.write:
        _, made = _ensure(functools.partial(client.get_registered_model, model),
                          functools.partial(client.create_registered_model, model))
        report.note(made, f"registered model {model}: created")

    mine = {**{("registered_model", m): "EDIT" for m in spec.write},
            **{("experiment", e): "EDIT" for e in experiment_ids.values()}}
    own = role(f"mlops-user-{spec.username}", f"what pulumi-mlops granted {spec.username}")
    grant(own, mine, exact=True)
    assigned = {r.name for r in auth.list_user_roles(spec.username)}
    for model in dict.fromkeys((*spec.read, *spec.write)):
        readers = role(f"mlops-read-{model}", f"read the registered model {model} and load "
                                             "its versions")
        wanted = {("registered_model", model): "READ",
                  **{("experiment", e): "READ" for e in _version_experiments(client, model)}}
        if model in spec.write:
            wanted.update({("experiment", e): "READ" for e in experiment_ids.values()})
        grant(readers, wanted, exact=False)
    for name in [own.name, *(f"mlops-read-{m}" for m in dict.fromkeys((*spec.read,
                                                                         *spec.write)))]:
        if name not in assigned:
            auth.assign_role(spec.username, roles[name].id)
        report.note(name not in assigned, f"user {spec.username}: in role {name}")
    return report


def _version_experiments(client: Any, model: str) -> list[str]:
    """The experiments the model's versions (at most `MAX_VERSIONS`) were logged in."""
    from mlflow.exceptions import MlflowException

    quoted = model.replace("'", "\\'")
    try:
        versions = client.search_model_versions(f"name='{quoted}'", max_results=MAX_VERSIONS)
    except MlflowException as err:
        if _code(err) == _NOT_FOUND:
            return []
        raise
    found: dict[str, None] = {}
    for version in versions:
        if version.run_id:
            found[client.get_run(version.run_id).info.experiment_id] = None
        elif getattr(version, "model_id", None):
            found[client.get_logged_model(version.model_id).experiment_id] = None
    return list(found)


def main(argv: list[str] | None = None) -> int:
    """``python registry_access.py --spec FILE``: apply the spec, print what changed."""
    parser = argparse.ArgumentParser(prog="registry_access", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--wait-seconds", type=float, default=300.0,
                        help="how long to wait for the registry to answer (default 300)")
    args = parser.parse_args(argv)
    spec = Spec.load(args.spec)
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    password = os.environ.get("MLOPS_GRANT_PASSWORD", "")
    if len(password) < 16:
        raise SystemExit("MLOPS_GRANT_PASSWORD must hold the user's password (16 characters "
                         "or more)")
    _wait_until_up(tracking_uri, args.wait_seconds)
    report = reconcile(spec, tracking_uri, password)
    for line in report.changes:
        print(f"changed: {line}", flush=True)
    print(f"{spec.username}: {len(report.changes)} changed, {len(report.unchanged)} unchanged",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
