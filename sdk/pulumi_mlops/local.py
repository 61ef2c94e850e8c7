"""Run a workload as a local process, from the command line its component rendered.

The same `Workload` the Kubernetes and Docker materializers use is run here with only three
remappings, each of which stands for something the container platform provides:

- container paths (volumes, config directories) → directories under a local root;
- the bind address → 127.0.0.1 (loopback only);
- service DNS names → loopback addresses (``hosts``), as cluster DNS would resolve them.

A long-running workload (a server) is started with `run_workload`; a batch workload (the
retrain job a CronJob runs at every slot) is run to completion once with `run_job`. `make demo`
and the end-to-end tests run workloads this way.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pulumi_mlops.plans.workload import HttpCheck, Workload, resolve

__all__ = ["LocalCommand", "RunningWorkload", "localize", "run_job", "run_workload"]

_PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class LocalCommand:
    """A workload made runnable here.

    Attributes:
        argv: The command line.
        env: The full process environment.
        files: Config files to write (local path → content).
        directories: Directories to create before start.
        cwd: Working directory.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str]
    files: Mapping[Path, str]
    directories: tuple[Path, ...]
    cwd: Path


def _path_map(workload: Workload, root: Path) -> dict[str, str]:
    mapping = {m.path: str(root / m.name) for m in workload.mounts}
    for i, directory in enumerate(sorted({posixpath.dirname(f.path) for f in workload.files})):
        mapping.setdefault(directory, str(root / f"config-{i}"))
    return mapping


def _rewriter(replacements: Mapping[str, str]) -> re.Pattern[str]:
    # One pass, longest first, so a replaced path is never rewritten again.
    keys = sorted(replacements, key=len, reverse=True)
    return re.compile("|".join(re.escape(k) + r"(?![A-Za-z0-9_.-])" for k in keys))


def localize(
    workload: Workload,
    secrets: Mapping[str, str],
    root: Path,
    *,
    hosts: Mapping[str, str] | None = None,
) -> LocalCommand:
    """The workload's command, env and files with container paths and names remapped.

    Args:
        workload: What the component rendered.
        secrets: Its secret data (as the component's secret store would hold it).
        root: Local directory standing in for the container's volumes.
        hosts: ``"name:port"`` or ``"name"`` of services → ``"127.0.0.1:port"`` here.
    """
    replacements = {**_path_map(workload, root), **dict(hosts or {})}
    pattern = _rewriter(replacements)

    def remap(text: str) -> str:
        # With nothing to replace, the pattern would be empty and match everywhere.
        if not replacements:
            return text
        return pattern.sub(lambda m: replacements[m.group(0)], text)

    argv = [remap(a) for a in workload.command]
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--host", "-h") and argv[i + 1] in ("0.0.0.0", "::"):
            argv[i + 1] = "127.0.0.1"
    # The workload's own interpreter and tools come first, as in its image.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
    env["PATH"] = path
    env.update({k: remap(resolve(v, secrets)) for k, v in workload.env.items()})
    files = {
        Path(remap(f.path)): remap(resolve(f.content, secrets)) for f in workload.files
    }
    directories = tuple(Path(remap(m.path)) for m in workload.mounts)
    return LocalCommand(tuple(argv), env, files, directories, root)


@dataclass
class RunningWorkload:
    """A started local workload.

    Attributes:
        process: The process.
        url: ``http://127.0.0.1:<port>``.
        log_path: Its combined stdout/stderr.
        sidecars: Its sidecars, started beside it, by name.
        metrics_url: Where its ``/metrics`` answers: ``http://127.0.0.1:<metrics_port>``, or
            ``url`` for a workload without a metrics port.
    """

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    sidecars: dict[str, RunningWorkload] = field(default_factory=dict)
    metrics_url: str = ""

    def __post_init__(self) -> None:
        if not self.metrics_url:
            self.metrics_url = self.url

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _prepare(command: LocalCommand) -> LocalCommand:
    """Create the command's directories and config files (as its volumes would hold them)."""
    command.cwd.mkdir(parents=True, exist_ok=True)
    for directory in command.directories:
        directory.mkdir(parents=True, exist_ok=True)
    for path, content in command.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o600)
    if shutil.which(command.argv[0], path=command.env["PATH"]) is None:
        raise RuntimeError(f"{command.argv[0]!r} is not installed here")
    return command


def run_job(
    workload: Workload,
    secrets: Mapping[str, str],
    root: Path,
    *,
    hosts: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a batch workload once, to completion, as one run of its Job would.

    Its command, environment and files are remapped by `localize`, as for `run_workload`.

    Args:
        workload: What the component rendered (e.g. `RetrainPlan.job`).
        secrets: Its secret data.
        root: Local directory standing in for the container's volumes; the combined output
            is also written to ``<root>/<workload name>.log``.
        hosts: ``"name:port"`` or ``"name"`` of services → ``"127.0.0.1:port"`` here.
        env: Variables the platform would add to this one run. Default: none.
        timeout: Seconds before the run is killed. Default: the workload's time budget
            (``startup_seconds``: a retrain job's ``timeout``).
        on_line: Called with each line the run prints (stdout or stderr, without its line
            end) as it prints it, e.g. to show progress. Default: nothing is shown.

    Returns:
        The finished process, with its exit code and its stdout and stderr as text.

    Raises:
        RuntimeError: when the command is not installed here.
        subprocess.TimeoutExpired: when the run takes longer than ``timeout``.
    """
    command = _prepare(localize(workload, secrets, root, hosts=hosts))
    argv, full_env = command.argv, {**command.env, **dict(env or {})}
    budget = timeout or workload.startup_seconds
    if on_line is None:
        result = subprocess.run(argv, env=full_env, cwd=command.cwd, capture_output=True,
                                text=True, timeout=budget, check=False)
    else:
        result = _run_streaming(argv, full_env, command.cwd, budget, on_line)
    (root / f"{workload.name}.log").write_text(result.stdout + result.stderr)
    return result


def _run_streaming(argv: tuple[str, ...], env: Mapping[str, str], cwd: Path, timeout: float,
                   on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` with captured output, passing each line to ``on_line`` as it comes."""
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
    lock = threading.Lock()
    with subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:

        def pump(stream: str) -> None:
            for line in getattr(process, stream):
                captured[stream].append(line)
                with lock:
                    on_line(line.rstrip("\n"))

        readers = [threading.Thread(target=pump, args=(s,), daemon=True) for s in captured]
        for reader in readers:
            reader.start()
        try:
            process.wait(timeout=timeout)
        except BaseException:  # the timeout, or Ctrl-C: the run stops with its caller
            process.kill()
            process.wait()
            raise
        finally:
            for reader in readers:
                reader.join(timeout=5)
    return subprocess.CompletedProcess(list(argv), process.returncode,
                                       "".join(captured["stdout"]), "".join(captured["stderr"]))


@contextlib.contextmanager
def run_workload(
    workload: Workload,
    secrets: Mapping[str, str],
    root: Path,
    *,
    hosts: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Iterator[RunningWorkload]:
    """Start the workload locally, wait until its health check passes, then start its
    sidecars the same way (sharing ``root``, so they read its scratch mounts); stop them all
    on exit.

    Raises:
        RuntimeError: when it exits or stays unhealthy past its startup budget; the message
            carries the tail of its log.
    """
    if not isinstance(workload.health, HttpCheck):
        raise ValueError(f"{workload.name}: only HTTP health checks can be awaited locally")
    command = _prepare(localize(workload, secrets, root, hosts=hosts))
    log_path = root / f"{workload.name}.log"
    url = f"http://127.0.0.1:{workload.port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command.argv, env=dict(command.env), cwd=command.cwd, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    running = RunningWorkload(process, url, log_path, metrics_url=(
        f"http://127.0.0.1:{workload.metrics_port}" if workload.metrics_port else url))
    try:
        deadline = time.monotonic() + (timeout or workload.startup_seconds)
        while not _healthy(url + workload.health.path):
            if process.poll() is not None:
                raise RuntimeError(f"{workload.name} exited with {process.returncode}:\n"
                                   + running.log()[-4000:])
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{workload.name} not healthy in time:\n" + running.log()[-4000:]
                )
            time.sleep(0.25)
        with contextlib.ExitStack() as sidecars:
            for sidecar in workload.sidecars:
                running.sidecars[sidecar.name] = sidecars.enter_context(run_workload(
                    sidecar, secrets, root, hosts=hosts, timeout=timeout))
            yield running
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
