"""Target-neutral description of one container: what runs, with which env, files and mounts.

A component's plan function returns a `Workload`; the Kubernetes and Docker materializers turn
it into their objects, and the local runner (`pulumi_mlops.local`) runs the same command on
this machine. What CI runs is what the cluster runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, model_validator

from pulumi_mlops._validation import QUANTITY, ValidatedModel
from pulumi_mlops.errors import InputError

__all__ = [
    "DRAIN_SECONDS",
    "INIT_RESOURCES",
    "METRICS_PORT_NAME",
    "PIDS_LIMIT",
    "UNHEALTHY_EXIT_SECONDS",
    "ConfigFile",
    "EnvValue",
    "ExecCheck",
    "HttpCheck",
    "Mount",
    "Resources",
    "SecretRef",
    "UpdateStrategy",
    "Workload",
    "pod_lifecycle",
    "resolve",
    "url_host",
    "url_port",
]

# How a serving pod stops (both targets): the endpoint stops sending it requests during the
# preStop sleep, the server drains for DRAIN_SECONDS (`mlops serve --drain-seconds`), then
# in-flight requests get the rest of the grace period.
_PRE_STOP_SECONDS = 5
DRAIN_SECONDS = 10
_IN_FLIGHT_SECONDS = 30


def url_host(address: str) -> str:
    """An IP address as the host of a URL (an IPv6 address in brackets)."""
    return f"[{address}]" if ":" in address else address


def url_port(url: str) -> int | None:
    """The TCP port an http(s) URL is reached at (its own, else the scheme's); None for any
    other kind of location (a bundled dataset, a local path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


def pod_lifecycle() -> tuple[int, int]:
    """(preStop sleep, termination grace) in seconds: the grace outlasts the preStop sleep,
    the server's drain and in-flight requests."""
    return _PRE_STOP_SECONDS, _PRE_STOP_SECONDS + DRAIN_SECONDS + _IN_FLIGHT_SECONDS

class UpdateStrategy(StrEnum):
    """How a long-running workload's pods are replaced on an update."""

    ROLLING = "rolling"
    """A new pod becomes ready before an old one stops."""
    RECREATE = "recreate"
    """The old pods stop before the new ones start (volumes only one node can mount)."""


# Tasks (processes and threads) a container may run. Above what ours run in normal work, also
# all together (Docker renders it as the per-user `nproc` ulimit, which every container running
# as RUN_AS_USER on one engine shares): a 16-worker server on a 64-core host is ~1,100 (OpenBLAS
# starts a thread per core in each process), PostgreSQL one process per connection (100 by
# default) plus ~10, the MLflow server a few gunicorn workers, the scheduler one job. Yet a fork
# bomb stops at it instead of taking the host's PIDs: 4096 is an eighth of the smallest kernel
# default pid_max (32768).
PIDS_LIMIT = 4096

# How long `mlops serve` may fail its own health check, after having passed it, before it exits
# non-zero for the target's restart policy to start it again (Docker, whose restart policy acts
# on exits only). Longer than Docker's health check takes to report it unhealthy (3 failed
# checks 10 s apart), so `docker ps` shows why before the restart.
UNHEALTHY_EXIT_SECONDS = 60

# Non-root identity every workload runs as; ≥ 10000 so it can never collide with a host user.
RUN_AS_USER = 10001


@dataclass(frozen=True)
class SecretRef:
    """A value that lives in the component's secret store (a Kubernetes Secret, a Pulumi secret).

    Attributes:
        key: Key of the value in the component's secret data.
    """

    key: str


EnvValue = str | SecretRef


METRICS_PORT_NAME = "metrics"
"""The name of a workload's `Workload.metrics_port` among its pod's ports (Kubernetes)."""


@dataclass(frozen=True)
class ConfigFile:
    """A read-only file mounted into the container.

    Attributes:
        path: Absolute path in the container.
        content: The literal content, or a reference to secret data holding it.
    """

    path: str
    content: str | SecretRef


@dataclass(frozen=True)
class Mount:
    """A writable directory.

    Attributes:
        name: Volume name, unique within the workload.
        path: Absolute mount path in the container.
        kind: ``data`` persists (PersistentVolumeClaim / named volume); ``scratch`` does not
            (emptyDir / tmpfs).
        size: Capacity (Kubernetes quantity), for ``data`` the claim size, for ``scratch`` the
            size limit.
        read_only: Mounted read-only: a sidecar's view of its workload's scratch mount of the
            same name.
    """

    name: str
    path: str
    kind: Literal["data", "scratch"]
    size: str
    read_only: bool = False


@dataclass(frozen=True)
class HttpCheck:
    """Health check by HTTP GET on the container's port.

    Attributes:
        path: The path to GET.
        command: What a container health check runs to GET it (Docker), for an image without
            Python; None runs Python's urllib, which the project's images and MLflow's carry.
    """

    path: str
    command: tuple[str, ...] | None = None

    @classmethod
    def wget(cls, path: str, port: int) -> HttpCheck:
        """GET ``path`` with busybox's wget: for the images without Python (Prometheus',
        Alertmanager's, Grafana's)."""
        return cls(path, command=("wget", "-q", "-O", "/dev/null",
                                  f"http://127.0.0.1:{port}{path}"))


@dataclass(frozen=True)
class ExecCheck:
    """Health check by running a command in the container."""

    command: tuple[str, ...]


class Resources(ValidatedModel):
    """Compute requests and limits, as Kubernetes quantities.

    Attributes:
        cpu_request: CPU the scheduler reserves. Default: ``250m``.
        memory_request: Memory the scheduler reserves. Default: ``512Mi``.
        cpu_limit: CPU ceiling. Default: ``1``.
        memory_limit: Memory ceiling; the container is killed above it. Default: ``1Gi``.
        pids_limit: Most tasks (processes and threads) the container may run at once; a
            fork bomb stops there instead of exhausting the host's process IDs. Default:
            4096. Docker only, as the ``nproc`` ulimit (pulumi-docker has no ``--pids-limit``
            input), which the kernel counts per user: the containers running as the same
            user on one engine share it. Kubernetes has no per-container limit (the
            kubelet's ``podPidsLimit`` bounds a whole pod, and is the node administrator's
            setting).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_request: Annotated[str, Field(pattern=QUANTITY)] = "250m"
    memory_request: Annotated[str, Field(pattern=QUANTITY)] = "512Mi"
    cpu_limit: Annotated[str, Field(pattern=QUANTITY)] = "1"
    memory_limit: Annotated[str, Field(pattern=QUANTITY)] = "1Gi"
    pids_limit: Annotated[int, Field(ge=16, le=1_000_000)] = PIDS_LIMIT

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if cpu_cores(self.cpu_request) > cpu_cores(self.cpu_limit):
            raise InputError("must not exceed `cpu_limit`",
                             "lower `cpu_request` or raise `cpu_limit`.", field="cpu_request",
                             related=("cpu_limit",))
        if quantity_bytes(self.memory_request) > quantity_bytes(self.memory_limit):
            raise InputError("must not exceed `memory_limit`",
                             "lower `memory_request` or raise `memory_limit`.",
                             field="memory_request", related=("memory_limit",))
        return self

    def memory_limit_mib(self) -> int:
        """The memory limit in MiB, for targets that take a number (Docker)."""
        return quantity_bytes(self.memory_limit) // 2**20


@dataclass(frozen=True)
class Workload:
    """One container, described independently of where it runs.

    Attributes:
        name: Container name.
        image: Image reference, pinned (a string, or a Pulumi output such as a built image's
            digest reference).
        command: The full argument vector (entrypoint included).
        env: Environment; values are literals or secret references.
        port: The TCP port the container serves on; None for a run-to-completion (batch)
            container, which listens on nothing.
        metrics_port: A second port answering its metrics only (a model server's), which
            Prometheus is admitted to instead of ``port``; None when the metrics, if any,
            are on ``port``.
        health: How to tell the container is ready to serve (startup and readiness); None
            for a batch container, whose exit status is its health.
        liveness: How to tell it is alive. Default: ``health``.
        files: Read-only config files.
        mounts: Writable directories.
        resources: Requests and limits.
        startup_seconds: Time the process may take to become healthy after start.
        unhealthy_exit_seconds: Where the target restarts a container only when it exits
            (Docker), the process's own watchdog: it exits non-zero once its health check has
            failed this long after having passed, and the restart policy starts it again.
            Set only together with the option in ``command`` that arms it (``mlops serve
            --exit-when-unhealthy-seconds``). None: the target's liveness probe restarts it
            (Kubernetes), or nothing does (a process we do not own on Docker, such as the
            MLflow server or PostgreSQL: the engine marks it unhealthy and an operator
            restarts it).
        sidecars: Containers that run beside this one for as long as it runs, reading its
            scratch mounts by name (MLflow's metrics exporter): on Kubernetes more containers
            in its pods, whose probes never hold back the pod's readiness; on Docker a
            container of their own each, ``<container>-<sidecar>``, on the same network, and
            a shared scratch mount is a tmpfs volume instead of the container's own tmpfs.
            A sidecar serves (it has a port and a health check) and has no files, no data
            mounts and no sidecars of its own.
    """

    name: str
    image: Any
    command: tuple[str, ...]
    env: Mapping[str, EnvValue]
    port: int | None
    health: HttpCheck | ExecCheck | None
    metrics_port: int | None = None
    liveness: HttpCheck | ExecCheck | None = None
    files: tuple[ConfigFile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    resources: Resources = field(default_factory=Resources)
    startup_seconds: int = 120
    unhealthy_exit_seconds: int | None = None
    sidecars: tuple[Workload, ...] = ()

    def __post_init__(self) -> None:
        scratch = {m.name for m in self.mounts if m.kind == "scratch"}
        for sidecar in self.sidecars:
            if (sidecar.files or sidecar.sidecars or sidecar.port is None
                    or sidecar.health is None
                    or any(m.name not in scratch or m.kind != "scratch"
                           for m in sidecar.mounts)):
                raise ValueError(f"{self.name}: sidecar {sidecar.name} must serve, and may "
                                 "only mount the workload's scratch mounts")

    def shared_mounts(self) -> frozenset[str]:
        """Names of the scratch mounts a sidecar mounts too."""
        return frozenset(m.name for s in self.sidecars for m in s.mounts)

    @property
    def batch(self) -> bool:
        """Whether the container runs to completion instead of serving."""
        return self.health is None

    def secret_keys(self) -> frozenset[str]:
        """Every secret key the workload reads, from env and files."""
        refs = [v for v in self.env.values() if isinstance(v, SecretRef)]
        refs += [f.content for f in self.files if isinstance(f.content, SecretRef)]
        return frozenset(r.key for r in refs)


_UNITS = {"m": 1e-3, "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
          "Ei": 2**60}


def quantity_value(quantity: str) -> float:
    """The number a Kubernetes quantity stands for (``500m`` → 0.5, ``1Ki`` → 1024)."""
    number = quantity.rstrip("mkMGTPEi")
    return float(number) * _UNITS[quantity[len(number):]]


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``512Mi`` or ``1G``."""
    return int(quantity_value(quantity))


def cpu_cores(quantity: str) -> float:
    """Cores in a Kubernetes CPU quantity such as ``500m`` or ``2``."""
    return quantity_value(quantity)


def resolve(value: str | SecretRef, secrets: Mapping[str, str]) -> str:
    """The literal value of an env value or file content, given the secret data."""
    if isinstance(value, SecretRef):
        return secrets[value.key]
    return value


# The Docker init container (root, CAP_CHOWN; `chown` and `printf` under `sh`) needs little,
# and being the one root container, gets no more than that.
INIT_RESOURCES = Resources(cpu_request="50m", memory_request="32Mi", cpu_limit="250m",
                           memory_limit="64Mi", pids_limit=32)
