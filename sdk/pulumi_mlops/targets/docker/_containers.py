"""Docker containers every component's materializer shares (pulumi-docker).

Every container runs as a non-root user with a read-only root filesystem, all capabilities
dropped and no-new-privileges. Docker has no secret volumes and a read-only container cannot
take uploads, so a short-lived init container (root, only CAP_CHOWN) hands the volumes to the
workload's user and writes its config files, whose content it receives as a Pulumi secret when
any of them is secret (else in plain, so previews show how they change); it runs within
`INIT_RESOURCES`.

Process limit: pulumi-docker (5.2, like the Terraform provider it bridges) has no input for
Docker's ``--pids-limit``, so a workload's ``resources.pids_limit`` is rendered as the ``nproc``
ulimit, the one process bound it offers. The kernel counts that per user, not per container:
every container running as `RUN_AS_USER` on one engine shares it (a fork bomb in one leaves the
others unable to fork, but not the host), and it is not enforced for root (the init container,
which runs a fixed script and no user code).

Unhealthy containers: Docker's restart policy acts on exits only, and Docker never restarts a
container its health check reports unhealthy. A workload whose plan sets
``unhealthy_exit_seconds`` exits by itself once unhealthy that long (``mlops serve``'s
watchdog), and ``restart=unless-stopped`` starts it again; for processes we do not own (the
MLflow server, PostgreSQL) the health check marks the container unhealthy and an operator
restarts it (``docker ps --filter health=unhealthy``, then ``docker restart``).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.plans.workload import (
    INIT_RESOURCES,
    RUN_AS_USER,
    EnvValue,
    ExecCheck,
    HttpCheck,
    Resources,
    SecretRef,
    Workload,
    cpu_cores,
    pod_lifecycle,
    quantity_bytes,
    resolve,
)

_HARDENING: dict[str, Any] = {
    "user": f"{RUN_AS_USER}:{RUN_AS_USER}",
    "read_only": True,
    "capabilities": {"drops": ["ALL"]},
    "security_opts": ["no-new-privileges:true"],
    # Docker's init as PID 1: it passes stop signals on and reaps orphaned processes (the
    # scheduler's runs may leave some; the scheduler itself is not a reaper).
    "init": True,
}


REPLACE_ON_CHANGES = ("tmpfs", "healthcheck", "init")
"""Container inputs the provider neither forces a replacement for nor applies in place."""
WAIT_MARGIN_SECONDS = 60


def cpus(quantity: str) -> str:
    """Docker's ``--cpus`` value for a Kubernetes CPU quantity (``500m`` → ``0.5``), written as
    the provider reads it back from the engine (``1`` → ``1.0``; kreuzwerker's
    ``nanoInt64ToDecimalString``). ``cpus`` forces a replacement, so any other spelling would
    replace the container on every `pulumi up`."""
    nano = round(cpu_cores(quantity) * 1e9)
    whole, frac = divmod(nano, 10**9)
    nine = f"{whole}.{frac:09d}"
    if nine.count("0") == 9:
        return f"{whole}.{frac // 10**8}"
    return nine.rstrip("0")


def go_duration(seconds: int) -> str:
    """Whole seconds as Go's ``time.Duration.String()`` writes them (``300`` → ``5m0s``): the
    provider reads health check durations back in that form, and any other spelling is a diff
    on every `pulumi up`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def limits(resources: Resources) -> dict[str, Any]:
    """The container inputs bounding memory, CPU and processes (see the module's note on
    ``nproc``). Swap is the memory limit itself, i.e. none, as on Kubernetes (Docker's default
    would add as much swap again)."""
    n = resources.pids_limit
    memory = resources.memory_limit_mib()
    return {"memory": memory, "memory_swap": memory, "cpus": cpus(resources.cpu_limit),
            "ulimits": [{"name": "nproc", "soft": n, "hard": n}]}


def healthcheck(workload: Workload) -> dict[str, Any] | None:
    """The container healthcheck for the workload's health check; None for a batch one."""
    if workload.health is None:
        return None
    if isinstance(workload.health, HttpCheck) and workload.health.command is not None:
        test = ["CMD", *workload.health.command]
    elif isinstance(workload.health, HttpCheck):
        url = f"http://127.0.0.1:{workload.port}{workload.health.path}"
        test = ["CMD", "python", "-c",
                f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)"]
    else:
        assert isinstance(workload.health, ExecCheck)
        test = ["CMD", *workload.health.command]
    return {"tests": test, "interval": go_duration(10), "timeout": go_duration(5),
            "retries": 3, "start_period": go_duration(workload.startup_seconds),
            "start_interval": go_duration(2)}


def init_script(workload: Workload) -> str:
    """Shell script the init container runs: own the data volumes, write the config files.

    A literal file's content is in the script itself (plain in the state: a preview shows how
    it changes); a secret one's comes from the init container's secret environment
    (`init_env`), ``MLOPS_FILE_<index>``.
    """
    lines = ["set -eu", "umask 077"]
    data = [m.path for m in workload.mounts if m.kind == "data"]
    if data:
        lines.append(f"chown {RUN_AS_USER}:{RUN_AS_USER} " + " ".join(data))
    for i, f in enumerate(workload.files):
        value = (f'"$MLOPS_FILE_{i}"' if isinstance(f.content, SecretRef)
                 else shlex.quote(f.content))
        lines.append(f"printf %s {value} > {f.path}")
        lines.append(f"chown {RUN_AS_USER}:{RUN_AS_USER} {f.path}")
    return "\n".join(lines)


def init_env(workload: Workload, secret_data: pulumi.Output[dict[str, str]]
             ) -> pulumi.Output[list[str]] | None:
    """The init container's environment: the content of each secret config file (a secret),
    or None when the workload has none."""
    secret = [(i, f.content) for i, f in enumerate(workload.files)
              if isinstance(f.content, SecretRef)]
    if not secret:
        return None
    return pulumi.Output.secret(secret_data.apply(
        lambda d: [f"MLOPS_FILE_{i}={resolve(ref, d)}" for i, ref in secret]))


class InitContainerFailedError(RuntimeError):
    """An init container exited non-zero (`pulumi up` fails before the workload starts)."""


def after_init(envs: pulumi.Output[list[str]], exit_code: pulumi.Output[int | None],
               init_name: str) -> pulumi.Output[list[str]]:
    """The workload's environment once its init container has exited 0.

    The provider waits for an attached container to stop but ignores its exit status, so a
    failed init would leave the workload to start without its config files. Deriving the
    workload's environment from the init's exit code fails `pulumi up` there instead, with
    the reason; and because the code is unknown until the init has run, a re-run init (new
    config) replaces the workload too, which then reads the new files. The code is None where
    nothing ran (under mocks).
    """
    def check(values: list[Any]) -> list[str]:
        env, code = values
        if code not in (None, 0):
            raise InitContainerFailedError(
                f"init container `{init_name}` exited {code}: the config files were not "
                f"written or the volumes not handed to the workload's user; see `docker logs "
                f"{init_name}`, fix the cause and run `pulumi up` again")
        return list(env)

    return pulumi.Output.all(envs, exit_code).apply(check)


def labels_list(labels: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in sorted(labels.items())]


@dataclass(frozen=True)
class DockerWorkload:
    """One workload's Docker objects.

    Attributes:
        image: The image pulled by reference and kept on the engine; None for an image the
            program built on this engine (a `RuntimeImage`), which is used as it is.
        volumes: Its data volumes by mount name, its config volumes (``config-<i>``), and the
            tmpfs volumes of the scratch mounts its sidecars share, by mount name.
        init: The init container that owns the volumes and writes the config files; None
            when the workload has neither.
        container: The workload's container.
        sidecars: Its sidecars' containers (``<container>-<sidecar>``), by sidecar name.
    """

    image: docker.RemoteImage | None
    volumes: Mapping[str, docker.Volume]
    init: docker.Container | None
    container: docker.Container
    sidecars: Mapping[str, docker.Container]


def _envs(env: Mapping[str, EnvValue],
          secret_data: pulumi.Output[dict[str, str]]) -> pulumi.Output[list[str]]:
    values = dict(env)
    return pulumi.Output.secret(
        secret_data.apply(lambda d: [f"{k}={resolve(v, d)}" for k, v in values.items()]))


def _tmpfs_options(size: str) -> str:
    # The kernel's tmpfs takes a byte count (or k/m/g), not a quantity such as 2Gi.
    return f"noexec,nosuid,size={quantity_bytes(size)}"


def materialize_workload(
    object_name: str,
    workload: Workload,
    *,
    target: DockerTarget,
    network: docker.Network,
    aliases: list[str],
    labels: Mapping[str, str],
    secret_data: pulumi.Output[dict[str, str]],
    opts: pulumi.ResourceOptions,
    publish: bool,
    wait: bool = True,
    once: bool = False,
) -> DockerWorkload:
    """Declare volumes, the init container and the container of one workload.

    With ``wait``, `pulumi up` waits for the container's healthcheck to pass. With ``once``
    the (batch) workload runs to completion once, as `pulumi up` creates or replaces it, and
    `pulumi up` waits for it to exit (its exit status is not checked by the provider: the
    workload's output says what it did).
    """
    # A reference (a string) is pulled; an image the program builds (an output) is already on
    # the engine and may exist nowhere else, so pulling it would fail.
    image = None
    image_id: pulumi.Input[str] = workload.image
    if isinstance(workload.image, str):
        image = docker.RemoteImage(f"{object_name}-image", name=workload.image,
                                   keep_locally=True, opts=opts)
        image_id = image.image_id
    created: dict[str, docker.Volume] = {}
    volumes: list[dict[str, Any]] = []
    init_volumes: list[dict[str, Any]] = []
    for m in workload.mounts:
        if m.kind == "data":
            # Kept when the stack is destroyed or the volume replaced (a changed label forces
            # that): a new volume of the same name finds the data again.
            vol = docker.Volume(f"{object_name}-{m.name}", name=f"{object_name}-{m.name}",
                                labels=labels_list(labels), opts=pulumi.ResourceOptions.merge(
                                    opts, pulumi.ResourceOptions(retain_on_delete=True)))
            created[m.name] = vol
            volumes.append({"volume_name": vol.name, "container_path": m.path})
    config_dirs = sorted({posixpath.dirname(f.path) for f in workload.files})
    for i, directory in enumerate(config_dirs):
        vol = docker.Volume(f"{object_name}-config-{i}", name=f"{object_name}-config-{i}",
                            labels=labels_list(labels), opts=opts)
        created[f"config-{i}"] = vol
        init_volumes.append({"volume_name": vol.name, "container_path": directory})
        volumes.append({"volume_name": vol.name, "container_path": directory, "read_only": True})
    init_volumes += [v for v in volumes if not v.get("read_only")]
    shared = workload.shared_mounts()
    for m in workload.mounts:
        if m.name in shared:
            # A scratch directory a sidecar reads: a tmpfs the engine mounts while a container
            # uses it, owned by the workloads' user (so the init need not hand it over).
            vol = docker.Volume(
                f"{object_name}-{m.name}", name=f"{object_name}-{m.name}",
                driver_opts={"type": "tmpfs", "device": "tmpfs",
                             "o": f"{_tmpfs_options(m.size)},uid={RUN_AS_USER},"
                                  f"gid={RUN_AS_USER},mode=0700"},
                labels=labels_list(labels), opts=opts)
            created[m.name] = vol
            volumes.append({"volume_name": vol.name, "container_path": m.path})

    init = None
    if init_volumes:
        init = docker.Container(
            f"{object_name}-init",
            name=f"{object_name}-init",
            image=image_id,
            entrypoints=["sh", "-c", init_script(workload)],
            envs=init_env(workload, secret_data),
            user="0:0",
            read_only=True,
            capabilities={"drops": ["ALL"], "adds": ["CHOWN"]},
            security_opts=["no-new-privileges:true"],
            volumes=init_volumes,
            network_mode="none",
            **limits(INIT_RESOURCES),
            attach=True,
            must_run=False,
            labels=labels_list(labels),
            opts=opts,
        )

    envs = _envs(workload.env, secret_data)
    if init is not None:
        envs = after_init(envs, init.exit_code, f"{object_name}-init")
    ports = (
        [{"internal": workload.port, "external": workload.port, "ip": target.publish_host}]
        if publish and workload.port is not None else []
    )
    container = docker.Container(
        object_name,
        name=object_name,
        image=image_id,
        entrypoints=list(workload.command),
        envs=envs,
        **_HARDENING,
        tmpfs={m.path: f"rw,{_tmpfs_options(m.size)}"
               for m in workload.mounts if m.kind == "scratch" and m.name not in shared},
        volumes=volumes,
        networks_advanced=[{"name": network.name, "aliases": aliases}],
        ports=ports,
        healthcheck=healthcheck(workload),
        **limits(workload.resources),
        # Restarts a container that exited, also one whose watchdog ended it for being
        # unhealthy too long (`Workload.unhealthy_exit_seconds`).
        restart="no" if once else "unless-stopped",
        **({"attach": True, "must_run": False} if once else {}),
        # The provider's wait fails at once on a container without a health check.
        wait=wait and workload.health is not None,
        # Past the start period by one failing round of the health check and a margin.
        wait_timeout=workload.startup_seconds + WAIT_MARGIN_SECONDS,
        # SIGTERM, then this long to drain before SIGKILL (the provider's default stops with
        # no grace at all).
        destroy_grace_seconds=pod_lifecycle()[1],
        labels=labels_list(labels),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[init] if init is not None else [],
            # The provider updates these in its state only; the running container would keep
            # the old ones. Replacing it is what applies them.
            replace_on_changes=list(REPLACE_ON_CHANGES))),
    )
    sidecars = {
        sidecar.name: _sidecar(f"{object_name}-{sidecar.name}", sidecar, image_id, created,
                               network, labels, secret_data, pulumi.ResourceOptions.merge(
                                   opts, pulumi.ResourceOptions(depends_on=[container])),
                               wait=wait)
        for sidecar in workload.sidecars
    }
    return DockerWorkload(image, created, init, container, sidecars)


def _sidecar(name: str, sidecar: Workload, image_id: pulumi.Input[str],
             volumes: Mapping[str, docker.Volume], network: docker.Network,
             labels: Mapping[str, str], secret_data: pulumi.Output[dict[str, str]],
             opts: pulumi.ResourceOptions, *, wait: bool) -> docker.Container:
    """A sidecar's container: hardened like its workload's, on the same network under its own
    name, mounting the workload's shared tmpfs volumes; never published."""
    return docker.Container(
        name,
        name=name,
        image=image_id,
        entrypoints=list(sidecar.command),
        envs=_envs(sidecar.env, secret_data),
        **_HARDENING,
        volumes=[{"volume_name": volumes[m.name].name, "container_path": m.path,
                  "read_only": m.read_only} for m in sidecar.mounts],
        networks_advanced=[{"name": network.name, "aliases": [name]}],
        healthcheck=healthcheck(sidecar),
        **limits(sidecar.resources),
        restart="unless-stopped",
        wait=wait,
        wait_timeout=sidecar.startup_seconds + WAIT_MARGIN_SECONDS,
        destroy_grace_seconds=pod_lifecycle()[1],
        labels=labels_list(labels),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            replace_on_changes=list(REPLACE_ON_CHANGES))),
    )


def client_network(
    parent: pulumi.ComponentResource,
    target: DockerTarget,
    name: str,
    labels: Mapping[str, str],
    network: docker.Network | None,
    after: tuple[pulumi.Resource, ...],
) -> tuple[docker.Network, docker.Network | None, pulumi.ResourceOptions]:
    """Where a registry client's containers run: the registry's network (or a new
    ``<name>-net``, returned second when declared here), and options that start them after
    ``after`` (the registry's container on the same engine)."""
    opts = pulumi.ResourceOptions.merge(target.resource_options(parent),
                                        pulumi.ResourceOptions(depends_on=list(after)))
    if network is not None:
        return network, None, opts
    own = docker.Network(f"{name}-net", name=f"{name}-net", labels=labels_list(labels),
                         opts=opts)
    return own, own, opts
