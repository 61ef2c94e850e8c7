"""A private Docker engine for the tests: `dockerd` started under a temporary directory.

The daemon's socket, exec root and PID file live in a fresh temporary directory; its data root
(images and build cache) lives in a cache directory kept between runs on one machine
(``$MLOPS_DOCKER_CACHE``, default ``~/.cache/pulumi-mlops/dockerd``), so images are built once.
A lock file keeps two test runs from sharing one data root. The daemon is stopped by its PID
(SIGTERM, then SIGKILL after a grace period); nothing is stopped by name.

Flags, as these machines need them: no iptables and no default bridge (user-defined networks
still resolve container names, and published ports bind to 127.0.0.1). Storage: ``overlay2``
where the kernel allows it, else ``vfs`` (slower, a full copy per layer).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

START_TIMEOUT = 60.0
STOP_GRACE = 30.0
LOCK_TIMEOUT = 1800.0
"""How long a second run waits for the data root's lock (the first run's whole session)."""


class DockerUnavailableError(RuntimeError):
    """dockerd is not installed here, or cannot start."""


@dataclass(frozen=True)
class Daemon:
    """A running private dockerd."""

    host: str
    """``unix://…`` socket URL, for ``DOCKER_HOST`` and `docker.DockerClient`."""
    pid: int
    data_root: Path
    storage_driver: str

    def client(self) -> docker.DockerClient:
        """A Docker SDK client for this daemon (API version negotiated)."""
        return docker.DockerClient(base_url=self.host, version="auto", timeout=600)

    def env(self) -> dict[str, str]:
        """The environment for the ``docker`` CLI to use this daemon."""
        return {**os.environ, "DOCKER_HOST": self.host}


def cache_dir() -> Path:
    """Where the daemon's data root (images, build cache) is kept between runs."""
    configured = os.environ.get("MLOPS_DOCKER_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "pulumi-mlops"
    return base / "dockerd"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DockerUnavailableError(
                        f"{path} is held by another test run for over {LOCK_TIMEOUT:.0f}s"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        # Its whole process group (it leads one): the containerd it started goes too.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _start(run_dir: Path, data_root: Path, driver: str) -> tuple[subprocess.Popen[bytes], str]:
    socket = run_dir / "docker.sock"
    with (run_dir / f"dockerd-{driver}.log").open("wb") as log:
        process = subprocess.Popen(
            ["dockerd", "--storage-driver", driver, "--iptables=false", "--ip6tables=false",
             "--bridge=none", "--data-root", str(data_root), "--exec-root",
             str(run_dir / "exec"), "--pidfile", str(run_dir / "docker.pid"),
             "-H", f"unix://{socket}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    host = f"unix://{socket}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if socket.exists():
            try:
                with contextlib.closing(docker.DockerClient(base_url=host, version="auto")) as c:
                    if c.info().get("Driver") == driver:
                        return process, host
            except docker.errors.DockerException:
                pass
        time.sleep(0.3)
    _stop(process)
    tail = (run_dir / f"dockerd-{driver}.log").read_text(errors="replace")[-2000:]
    raise DockerUnavailableError(f"dockerd ({driver}) did not start:\n{tail}")


@contextlib.contextmanager
def running_daemon() -> Iterator[Daemon]:
    """Start a private dockerd, yield it, stop it by its PID.

    Raises:
        DockerUnavailableError: dockerd is not installed or cannot start.
    """
    if shutil.which("dockerd") is None:
        raise DockerUnavailableError(
            "dockerd is not installed: run scripts/system-deps.sh (apt-get install docker.io)")
    data_root = cache_dir()
    with _locked(data_root.parent / "dockerd.lock"):
        # Short path: the daemon's sockets live under it (a unix socket path has 108 bytes).
        run_dir = Path(tempfile.mkdtemp(prefix="mlops-dockerd-", dir="/tmp"))
        try:
            errors = []
            for driver in ("overlay2", "vfs"):
                try:
                    process, host = _start(run_dir, data_root, driver)
                    break
                except DockerUnavailableError as exc:
                    errors.append(str(exc))
            else:
                raise DockerUnavailableError("\n".join(errors))
            try:
                yield Daemon(host=host, pid=process.pid, data_root=data_root,
                             storage_driver=driver)
            finally:
                _stop(process)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
