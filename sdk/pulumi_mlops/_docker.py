"""Materialize workloads as Docker containers (pulumi-docker).

Every container runs as a non-root user with a read-only root filesystem, all capabilities
dropped and no-new-privileges. Docker has no secret volumes and a read-only container cannot
take uploads, so a short-lived init container (root, only CAP_CHOWN) hands the volumes to the
workload's user and writes its config files, whose content it receives as Pulumi secrets.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_docker as docker

from pulumi_mlops.targets import DockerTarget
from pulumi_mlops.workload import (
    RUN_AS_USER,
    ExecCheck,
    HttpCheck,
    Workload,
    cpu_cores,
    quantity_bytes,
    resolve,
)

if TYPE_CHECKING:
    from pulumi_mlops.components.registry import RegistryPlan
    from pulumi_mlops.components.retrain import RetrainPlan
    from pulumi_mlops.components.service import ServicePlan

_HARDENING: dict[str, Any] = {
    "user": f"{RUN_AS_USER}:{RUN_AS_USER}",
    "read_only": True,
    "capabilities": {"drops": ["ALL"]},
    "security_opts": ["no-new-privileges:true"],
    # Docker's init as PID 1: it passes stop signals on and reaps orphaned processes (the
    # scheduler's runs may leave some; the scheduler itself is not a reaper).
    "init": True,
}


def cpus(quantity: str) -> str:
    """Docker's ``--cpus`` value for a Kubernetes CPU quantity (``500m`` → ``0.5``)."""
    return f"{cpu_cores(quantity):g}"


def healthcheck(workload: Workload) -> dict[str, Any]:
    """The container healthcheck for the workload's health check."""
    if isinstance(workload.health, HttpCheck):
        url = f"http://127.0.0.1:{workload.port}{workload.health.path}"
        test = ["CMD", "python", "-c",
                f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)"]
    else:
        assert isinstance(workload.health, ExecCheck)
        test = ["CMD", *workload.health.command]
    return {"tests": test, "interval": "10s", "timeout": "5s", "retries": 3,
            "start_period": f"{workload.startup_seconds}s", "start_interval": "2s"}


def init_script(workload: Workload) -> str:
    """Shell script the init container runs: own the data volumes, write the config files."""
    lines = ["set -eu", "umask 077"]
    data = [m.path for m in workload.mounts if m.kind == "data"]
    if data:
        lines.append(f"chown {RUN_AS_USER}:{RUN_AS_USER} " + " ".join(data))
    for i, f in enumerate(workload.files):
        lines.append(f'printf %s "$MLOPS_FILE_{i}" > {f.path}')
        lines.append(f"chown {RUN_AS_USER}:{RUN_AS_USER} {f.path}")
    return "\n".join(lines)


def _labels(labels: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in sorted(labels.items())]


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
) -> dict[str, pulumi.Resource]:
    """Declare volumes, the init container and the container of one workload.

    With ``wait``, `pulumi up` waits for the container's healthcheck to pass.
    """
    out: dict[str, pulumi.Resource] = {}
    image = docker.RemoteImage(f"{object_name}-image", name=workload.image, keep_locally=True,
                               opts=opts)
    out["image"] = image
    volumes: list[dict[str, Any]] = []
    init_volumes: list[dict[str, Any]] = []
    for m in workload.mounts:
        if m.kind == "data":
            vol = docker.Volume(f"{object_name}-{m.name}", name=f"{object_name}-{m.name}",
                                labels=_labels(labels), opts=opts)
            out[f"{m.name}_volume"] = vol
            volumes.append({"volume_name": vol.name, "container_path": m.path})
    config_dirs = sorted({posixpath.dirname(f.path) for f in workload.files})
    for i, directory in enumerate(config_dirs):
        vol = docker.Volume(f"{object_name}-config-{i}", name=f"{object_name}-config-{i}",
                            labels=_labels(labels), opts=opts)
        out[f"config_volume_{i}"] = vol
        init_volumes.append({"volume_name": vol.name, "container_path": directory})
        volumes.append({"volume_name": vol.name, "container_path": directory, "read_only": True})
    init_volumes += [v for v in volumes if not v.get("read_only")]

    depends: list[pulumi.Resource] = []
    if init_volumes:
        files = list(workload.files)
        init_env: pulumi.Output[list[str]] = pulumi.Output.secret(secret_data.apply(
            lambda d: [f"MLOPS_FILE_{i}={resolve(f.content, d)}" for i, f in enumerate(files)]
        ))
        init = docker.Container(
            f"{object_name}-init",
            name=f"{object_name}-init",
            image=image.image_id,
            entrypoints=["sh", "-c", init_script(workload)],
            envs=init_env,
            user="0:0",
            read_only=True,
            capabilities={"drops": ["ALL"], "adds": ["CHOWN"]},
            security_opts=["no-new-privileges:true"],
            volumes=init_volumes,
            network_mode="none",
            attach=True,
            must_run=False,
            labels=_labels(labels),
            opts=opts,
        )
        out["init"] = init
        depends.append(init)

    env = dict(workload.env)
    envs: pulumi.Output[list[str]] = pulumi.Output.secret(
        secret_data.apply(lambda d: [f"{k}={resolve(v, d)}" for k, v in env.items()])
    )
    r = workload.resources
    ports = (
        [{"internal": workload.port, "external": workload.port, "ip": target.publish_host}]
        if publish else []
    )
    out["container"] = docker.Container(
        object_name,
        name=object_name,
        image=image.image_id,
        entrypoints=list(workload.command),
        envs=envs,
        **_HARDENING,
        # The kernel's tmpfs takes a byte count (or k/m/g), not a quantity such as 2Gi.
        tmpfs={m.path: f"rw,noexec,nosuid,size={quantity_bytes(m.size)}"
               for m in workload.mounts if m.kind == "scratch"},
        volumes=volumes,
        networks_advanced=[{"name": network.name, "aliases": aliases}],
        ports=ports,
        healthcheck=healthcheck(workload),
        memory=r.memory_limit_mib(),
        cpus=cpus(r.cpu_limit),
        restart="unless-stopped",
        wait=wait,
        wait_timeout=workload.startup_seconds,
        labels=_labels(labels),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends)),
    )
    return out


def materialize_registry(
    parent: pulumi.ComponentResource,
    plan: RegistryPlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> dict[str, pulumi.Resource]:
    """Declare the registry's network, volumes and containers under ``parent``."""
    opts = target.resource_options(parent)
    network = docker.Network(f"{plan.name}-net", name=f"{plan.name}-net",
                             labels=_labels(plan.labels), opts=opts)
    out: dict[str, pulumi.Resource] = {"network": network}
    if plan.database is not None:
        db = materialize_workload(
            plan.database_name, plan.database, target=target, network=network,
            aliases=[plan.database_name], labels=plan.labels, secret_data=secret_data,
            opts=opts, publish=False,
        )
        out.update({f"database_{k}": v for k, v in db.items()})
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[db["container"]])
        )
    server = materialize_workload(
        plan.server_name, plan.server, target=target, network=network,
        aliases=[plan.server_name], labels=plan.labels, secret_data=secret_data, opts=opts,
        publish=True,
    )
    out.update(server)
    out["server"] = server["container"]
    return out


def _beside_registry(
    parent: pulumi.ComponentResource,
    target: DockerTarget,
    name: str,
    labels: Mapping[str, str],
    network: pulumi.Resource | None,
    after: list[pulumi.Resource],
) -> tuple[docker.Network, pulumi.ResourceOptions, dict[str, pulumi.Resource]]:
    """The network a registry client's containers join (the registry's, or a new
    ``<name>-net``), options that start them after ``after``, and the children declared."""
    opts = pulumi.ResourceOptions.merge(target.resource_options(parent),
                                        pulumi.ResourceOptions(depends_on=after))
    out: dict[str, pulumi.Resource] = {}
    if network is None:
        network = docker.Network(f"{name}-net", name=f"{name}-net", labels=_labels(labels),
                                 opts=opts)
        out["network"] = network
    assert isinstance(network, docker.Network)
    return network, opts, out


def materialize_service(
    parent: pulumi.ComponentResource,
    plan: ServicePlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
    network: pulumi.Resource | None,
    after: list[pulumi.Resource],
) -> dict[str, pulumi.Resource]:
    """Declare the service's container on the registry's network (or its own) under ``parent``,
    started after ``after`` (the registry's container, when it is on the same engine).

    Docker runs one track (rolling updates only); the port is published on the target's
    ``publish_host``.
    """
    network, opts, out = _beside_registry(parent, target, plan.name, plan.labels, network, after)
    (track,) = plan.tracks
    created = materialize_workload(
        track.object_name, track.workload, target=target, network=network,
        aliases=[plan.name], labels=track.labels, secret_data=secret_data, opts=opts,
        publish=True, wait=plan.wait_ready,
    )
    out.update(created)
    out[f"deployment_{track.track}"] = created["container"]
    return out


def materialize_retrain(
    parent: pulumi.ComponentResource,
    plan: RetrainPlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
    network: pulumi.Resource | None,
    after: list[pulumi.Resource],
) -> dict[str, pulumi.Resource]:
    """Declare the scheduler container (``mlops schedule`` around the retrain job) on the
    registry's network (or its own) under ``parent``, started after ``after`` (the registry's
    container, when it is on the same engine); it publishes no port."""
    network, opts, out = _beside_registry(parent, target, plan.object_name, plan.labels,
                                          network, after)
    out.update(materialize_workload(
        plan.object_name, plan.scheduler, target=target, network=network,
        aliases=[plan.object_name], labels=plan.labels, secret_data=secret_data, opts=opts,
        publish=False,
    ))
    return out
