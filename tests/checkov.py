"""Run checkov on rendered Kubernetes manifests, from its own virtualenv.

checkov pins an old ``packaging`` that conflicts with the project's dependencies, so it lives in
``<repo>/.venv-checkov``, created on first use. Render tests call :func:`run_checkov` on a
directory of YAML manifests and assert on the :class:`CheckovResult`.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the parent of the ``tests/`` directory."""

CHECKOV_VERSION = "3.3.30"
"""The checkov release the render tests are written against."""

CHECKOV_VENV = REPO_ROOT / ".venv-checkov"
"""The virtualenv holding checkov, separate from the project's own."""

# Written only after checkov answered `--version` correctly, so an install that was interrupted
# (killed worker, full disk) is redone instead of being trusted.
_MARKER = CHECKOV_VENV / ".checkov-installed"
# Inside the venv directory so it is covered by the `.venv-*/` ignore rule; never deleted, so
# every worker locks the same inode.
_LOCK = CHECKOV_VENV / ".install.lock"

# Kinds that always draw dozens of checks, so a file holding one must show up in the results.
_POD_KINDS = frozenset(
    {
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    }
)

_INSTALL_TIMEOUT_S = 1200
_RUN_TIMEOUT_S = 600


class CheckovError(RuntimeError):
    """checkov could not be installed, failed to run, or scanned nothing."""


class FailedCheck(NamedTuple):
    """One check that a resource failed."""

    check_id: str
    """The checkov check id, e.g. ``CKV_K8S_16``."""
    resource: str
    """The resource as checkov names it, e.g. ``Deployment.default.web``."""
    file: str
    """The manifest file, as checkov reports it (``/``-prefixed, relative to the scanned
    directory)."""
    check_name: str
    """The check's human-readable title."""


class SkippedCheck(NamedTuple):
    """One check that a resource suppressed with a ``checkov.io/skip`` annotation."""

    check_id: str
    """The checkov check id that was skipped."""
    resource: str
    """The resource as checkov names it."""
    suppress_comment: str
    """The reason given in the annotation."""


@dataclass(frozen=True)
class CheckovResult:
    """The outcome of one checkov scan of a directory."""

    failed: list[FailedCheck] = field(default_factory=list)
    """Every failed check, one entry per (check, resource)."""
    passed: int = 0
    """How many (check, resource) pairs passed."""
    skipped: list[SkippedCheck] = field(default_factory=list)
    """Every check suppressed by an annotation."""
    resource_count: int = 0
    """How many resources checkov scanned (it adds a derived Pod for each workload)."""
    scanned_files: frozenset[Path] = frozenset()
    """The absolute paths of the files that at least one check result names."""

    @property
    def failed_ids(self) -> set[str]:
        """The distinct ids of the failed checks."""
        return {f.check_id for f in self.failed}

    @property
    def skipped_ids(self) -> set[str]:
        """The distinct ids of the skipped checks."""
        return {s.check_id for s in self.skipped}

    def failed_for(self, resource: str) -> set[str]:
        """The ids of the checks a single resource failed.

        Args:
            resource: The resource name as checkov prints it, e.g. ``Deployment.default.web``.

        Returns:
            The failed check ids for that resource.
        """
        return {f.check_id for f in self.failed if f.resource == resource}


def _checkov_executable() -> Path:
    return CHECKOV_VENV / "bin" / "checkov"


def _installed() -> bool:
    try:
        return _MARKER.read_text().strip() == CHECKOV_VERSION and _checkov_executable().exists()
    except FileNotFoundError:
        return False


def _run_install_step(args: list[str]) -> None:
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise CheckovError(
            f"installing checkov failed: {' '.join(args)} exited {proc.returncode}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def ensure_checkov() -> Path:
    """Install checkov into its own virtualenv unless it is already there.

    Idempotent, and safe when several pytest-xdist workers call it at once: the install runs under
    an exclusive file lock, and workers that waited find it done.

    Returns:
        The path of the ``checkov`` executable.

    Raises:
        CheckovError: The virtualenv could not be created or checkov could not be installed.
    """
    if _installed():
        return _checkov_executable()
    CHECKOV_VENV.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Another worker may have finished the install while this one waited for the lock.
            if _installed():
                return _checkov_executable()
            # No `--clear`: it would delete the lock file other workers hold. Re-running venv and
            # pip over a half-made environment repairs it.
            _run_install_step([sys.executable, "-m", "venv", str(CHECKOV_VENV)])
            python = CHECKOV_VENV / "bin" / "python"
            _run_install_step(
                [str(python), "-m", "pip", "install", "--quiet", f"checkov=={CHECKOV_VERSION}"]
            )
            proc = subprocess.run(
                [str(_checkov_executable()), "--version"],
                capture_output=True,
                text=True,
                timeout=_RUN_TIMEOUT_S,
                check=False,
                env=_checkov_env(),
            )
            if proc.returncode != 0 or proc.stdout.strip() != CHECKOV_VERSION:
                raise CheckovError(
                    f"checkov --version printed {proc.stdout.strip()!r} (exit {proc.returncode}), "
                    f"expected {CHECKOV_VERSION!r}\n{proc.stderr[-4000:]}"
                )
            _MARKER.write_text(CHECKOV_VERSION + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _checkov_executable()


def _checkov_env() -> dict[str, str]:
    env = dict(os.environ)
    # The project's venv must not leak into checkov's interpreter.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    # Tests run offline: no update check, no download of policy metadata.
    env["CKV_SKIP_PACKAGE_UPDATE_CHECK"] = "true"
    env["BC_SKIP_MAPPING"] = "TRUE"
    # By default checkov skips hidden subdirectories; scan everything the caller put there.
    env["CKV_IGNORE_HIDDEN_DIRECTORIES"] = "false"
    return env


def _reports(payload: Any) -> list[dict[str, Any]]:
    # One framework gives a dict, several give a list, and an empty scan gives a bare summary
    # dict without "results".
    if isinstance(payload, list):
        return [r for r in payload if isinstance(r, dict)]
    if isinstance(payload, dict):
        return [payload]
    raise CheckovError(f"unexpected checkov JSON of type {type(payload).__name__}")


def parse_checkov_json(text: str) -> CheckovResult:
    """Parse checkov's ``-o json`` output into a :class:`CheckovResult`.

    Args:
        text: checkov's standard output.

    Returns:
        The failed, passed and skipped checks across every report in the output.

    Raises:
        CheckovError: The output is not JSON, or checkov scanned no resource (a test asserting no
            failures must not pass because nothing was looked at).
    """
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckovError(f"checkov did not print JSON: {exc}\n{text[:4000]}") from exc

    failed: list[FailedCheck] = []
    skipped: list[SkippedCheck] = []
    scanned: set[Path] = set()
    passed = 0
    resource_count = 0
    parsing_errors = 0
    for report in _reports(payload):
        # The empty-scan summary is flat; a real report nests it under "summary".
        summary = report.get("summary", report)
        resource_count += int(summary.get("resource_count", 0))
        parsing_errors += int(summary.get("parsing_errors", 0))
        results = report.get("results") or {}
        for key in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in results.get(key) or []:
                if check.get("file_abs_path"):
                    scanned.add(Path(check["file_abs_path"]).resolve())
        passed += len(results.get("passed_checks") or [])
        for check in results.get("failed_checks") or []:
            failed.append(
                FailedCheck(
                    check_id=str(check.get("check_id", "")),
                    resource=str(check.get("resource", "")),
                    file=str(check.get("file_path", "")),
                    check_name=str(check.get("check_name", "")),
                )
            )
        for check in results.get("skipped_checks") or []:
            suppress = (check.get("check_result") or {}).get("suppress_comment", "")
            skipped.append(
                SkippedCheck(
                    check_id=str(check.get("check_id", "")),
                    resource=str(check.get("resource", "")),
                    suppress_comment=str(suppress),
                )
            )
    if parsing_errors:
        raise CheckovError(f"checkov could not parse {parsing_errors} file(s)\n{text[:4000]}")
    if resource_count == 0 and not (failed or skipped or passed):
        raise CheckovError("checkov scanned no resources; is the directory empty?")
    return CheckovResult(
        failed=failed,
        passed=passed,
        skipped=skipped,
        resource_count=resource_count,
        scanned_files=frozenset(scanned),
    )


def _workload_files(directory: Path) -> set[Path]:
    # checkov silently skips a YAML file it cannot parse (parsing_errors stays 0), so parse them
    # here: a broken file is an error, and a file holding a workload must appear in the results.
    files: set[Path] = set()
    for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise CheckovError(f"{path} is not valid YAML, checkov would skip it: {exc}") from exc
        if any(isinstance(doc, dict) and doc.get("kind") in _POD_KINDS for doc in docs):
            files.add(path.resolve())
    return files


def run_checkov(directory: Path) -> CheckovResult:
    """Scan a directory of Kubernetes YAML manifests with checkov.

    Args:
        directory: The directory holding the manifests; scanned recursively.

    Returns:
        The failed, passed and skipped checks.

    Raises:
        CheckovError: checkov could not be installed or run, a file is not valid YAML, a file
            holding a workload was not scanned, or nothing was scanned.
    """
    if not directory.is_dir():
        raise CheckovError(f"not a directory: {directory}")
    workload_files = _workload_files(directory)
    result = _scan(["--directory", str(directory), "--framework", "kubernetes"], directory)
    missed = workload_files - result.scanned_files
    if missed:
        raise CheckovError(
            "checkov reported nothing for these workload manifests: "
            + ", ".join(sorted(str(p) for p in missed))
        )
    return result


def run_checkov_dockerfile(dockerfile: Path) -> CheckovResult:
    """Scan one Dockerfile with checkov's ``dockerfile`` framework.

    Checks are skipped in the Dockerfile itself (``# checkov:skip=<id>:<reason>``), so the
    reason sits next to the instruction it excuses.

    Args:
        dockerfile: The Dockerfile.

    Returns:
        The failed, passed and skipped checks.

    Raises:
        CheckovError: checkov could not be installed or run, or it scanned nothing.
    """
    if not dockerfile.is_file():
        raise CheckovError(f"not a file: {dockerfile}")
    return _scan(["--file", str(dockerfile), "--framework", "dockerfile"], dockerfile.parent)


def _scan(target: list[str], cwd: Path) -> CheckovResult:
    """Run checkov on ``target`` (its what-to-scan arguments) and parse its JSON report."""
    args = [str(ensure_checkov()), *target, "--output", "json", "--compact", "--skip-download",
            # Failures are reported in the JSON; a non-zero exit is then only a real error.
            "--soft-fail"]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
        env=_checkov_env(),
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise CheckovError(
            f"checkov exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return parse_checkov_json(proc.stdout)
