"""Kubernetes objects every component's materializer shares (pulumi-kubernetes).

Pod templates are built by pure functions from a `Workload`, so every component gets the same
Pod Security Standards *restricted* hardening, probes and secret handling.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.plans.registry import Peer
from pulumi_mlops.plans.registry_ref import RegistryPeer
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.plans.workload import (
    METRICS_PORT_NAME,
    RUN_AS_USER,
    ExecCheck,
    HttpCheck,
    SecretRef,
    UpdateStrategy,
    Workload,
)

# Checks checkov would flag on hardened workloads here, each skipped only where it applies and
# for a stated reason. Kept in one place so the reasons are reviewed together.
_SKIP_TAG_PINNED = ("CKV_K8S_43", "image pinned by version tag (pulled Always); pass an image "
                    "reference with an @sha256 digest to pin by digest")
_SKIP_SECRET_ENV = ("CKV_K8S_35", "the program reads these credentials only from environment "
                    "variables; they come from a Secret by secretKeyRef, never inline")
_SKIP_SIDECAR_READINESS = ("CKV_K8S_9", "the sidecars have no readiness probe on purpose, so "
                           "that a sidecar never takes the pod out of its Service (their "
                           "liveness probes restart them); the workload's own container has one")


def _pinned_by_digest(image: Any) -> bool:
    # An output (a built image) is only known at deployment: treated as pinned by tag.
    return isinstance(image, str) and "@sha256:" in image


def skip_annotations(workload: Workload) -> dict[str, str]:
    """checkov's skip annotations (``checkov.io/skipN: ID=reason``) for the checks that apply."""
    skips = []
    if not _pinned_by_digest(workload.image):
        skips.append(_SKIP_TAG_PINNED)
    if any(isinstance(v, SecretRef) for v in workload.env.values()):
        skips.append(_SKIP_SECRET_ENV)
    if workload.sidecars:
        skips.append(_SKIP_SIDECAR_READINESS)
    return {f"checkov.io/skip{i}": f"{cid}={why}" for i, (cid, why) in enumerate(skips, 1)}


def pod_security_context() -> dict[str, Any]:
    """Pod-level security context for the *restricted* profile."""
    return {
        "run_as_non_root": True,
        "run_as_user": RUN_AS_USER,
        "run_as_group": RUN_AS_USER,
        "fs_group": RUN_AS_USER,
        "fs_group_change_policy": "OnRootMismatch",
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level security context for the *restricted* profile."""
    return {
        "allow_privilege_escalation": False,
        "privileged": False,
        "read_only_root_filesystem": True,
        "run_as_non_root": True,
        "run_as_user": RUN_AS_USER,
        "run_as_group": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def _check(health: HttpCheck | ExecCheck, port_name: str) -> dict[str, Any]:
    if isinstance(health, HttpCheck):
        return {"http_get": {"path": health.path, "port": port_name}}
    return {"exec_": {"command": list(health.command)}}


def _port_name(workload: Workload, sidecar: bool) -> str:
    # Port names are unique within a pod; a sidecar's is its container's name.
    if sidecar:
        return workload.name[:15]
    return "http" if isinstance(workload.health, HttpCheck) else "tcp"


def probes(workload: Workload, *, sidecar: bool = False) -> dict[str, Any]:
    """Startup probe whose budget covers `startup_seconds`; distinct readiness and liveness.
    None for a batch container: its exit status is its health. A sidecar gets no readiness
    probe: it must not take its pod out of its Service."""
    if workload.health is None:
        return {}
    port = _port_name(workload, sidecar)
    check = _check(workload.health, port)
    live = _check(workload.liveness or workload.health, port)
    period = 5
    found = {
        "startup_probe": {**check, "period_seconds": period, "timeout_seconds": 3,
                          "failure_threshold": math.ceil(workload.startup_seconds / period)},
        "readiness_probe": {**check, "period_seconds": 10, "timeout_seconds": 3,
                            "failure_threshold": 3},
        "liveness_probe": {**live, "period_seconds": 20, "timeout_seconds": 5,
                           "failure_threshold": 3},
    }
    if sidecar:
        del found["readiness_probe"]
    return found


def literal_files(workload: Workload) -> dict[str, str]:
    """ConfigMap data for the workload's literal config files, keyed by file name."""
    return {
        posixpath.basename(f.path): f.content
        for f in workload.files
        if isinstance(f.content, str)
    }


def pod_spec(
    workload: Workload,
    *,
    secret_name: str,
    config_map_name: str,
    service_account: str,
    claims: Mapping[str, str],
    spread_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The hardened pod spec of one workload.

    Args:
        workload: What runs.
        secret_name: Secret holding the workload's secret references.
        config_map_name: ConfigMap holding its literal files (see `literal_files`).
        service_account: ServiceAccount name (its token is never mounted).
        claims: Data mount name → PersistentVolumeClaim name. Data mounts missing here are
            expected to come from a StatefulSet's volumeClaimTemplates.
        spread_labels: When given, spread pods with these labels across nodes.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for m in workload.mounts:
        if m.kind == "scratch":
            volumes.append({"name": m.name, "empty_dir": {"size_limit": m.size}})
        elif m.name in claims:
            volumes.append({"name": m.name,
                            "persistent_volume_claim": {"claim_name": claims[m.name]}})
        mounts.append({"name": m.name, "mount_path": m.path})
    by_dir: dict[str, list[dict[str, Any]]] = {}
    for f in workload.files:
        key = posixpath.basename(f.path)
        source = (
            {"secret": {"name": secret_name, "items": [{"key": f.content.key, "path": key}]}}
            if isinstance(f.content, SecretRef)
            else {"config_map": {"name": config_map_name, "items": [{"key": key, "path": key}]}}
        )
        by_dir.setdefault(posixpath.dirname(f.path), []).append(source)
    for i, (directory, sources) in enumerate(sorted(by_dir.items())):
        name = f"config-{i}"
        volumes.append({"name": name, "projected": {"sources": sources, "default_mode": 0o440}})
        mounts.append({"name": name, "mount_path": directory, "read_only": True})
    containers = [_container(workload, secret_name, mounts, sidecar=False)]
    containers += [
        _container(s, secret_name, [{"name": m.name, "mount_path": m.path,
                                     "read_only": m.read_only} for m in s.mounts],
                   sidecar=True)
        for s in workload.sidecars
    ]
    spec: dict[str, Any] = {
        "service_account_name": service_account,
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }
    if spread_labels is not None:
        spec["topology_spread_constraints"] = [{
            "max_skew": 1,
            "topology_key": "kubernetes.io/hostname",
            "when_unsatisfiable": "ScheduleAnyway",
            "label_selector": {"match_labels": dict(spread_labels)},
        }]
    return spec


def _container(workload: Workload, secret_name: str, mounts: list[dict[str, Any]], *,
               sidecar: bool) -> dict[str, Any]:
    env = [
        {"name": k, "value_from": {"secret_key_ref": {"name": secret_name, "key": v.key}}}
        if isinstance(v, SecretRef)
        else {"name": k, "value": v}
        for k, v in workload.env.items()
    ]
    r = workload.resources
    container: dict[str, Any] = {
        "name": workload.name,
        "image": workload.image,
        # A tag can be moved; re-resolving it on every start keeps nodes from running a stale
        # copy. A digest cannot move, so the cached copy is the right one.
        "image_pull_policy": "IfNotPresent" if _pinned_by_digest(workload.image) else "Always",
        "command": list(workload.command),
        "env": env,
        "resources": {
            "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
            "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
        },
        "security_context": container_security_context(),
        "volume_mounts": mounts,
        "termination_message_policy": "FallbackToLogsOnError",
        **probes(workload, sidecar=sidecar),
    }
    if workload.port is not None:
        container["ports"] = [{"name": _port_name(workload, sidecar),
                               "container_port": workload.port, "protocol": "TCP"}]
    if workload.metrics_port is not None:
        container.setdefault("ports", []).append(
            {"name": METRICS_PORT_NAME, "container_port": workload.metrics_port,
             "protocol": "TCP"})
    return container


def meta(target: KubernetesTarget, name: str, labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": target.namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def peer_rule(peer: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_labels is not None:
        out["namespace_selector"] = {"match_labels": peer.namespace_labels}
    if peer.pod_labels is not None:
        out["pod_selector"] = {"match_labels": peer.pod_labels}
    return out


def dns_egress(target: KubernetesTarget) -> dict[str, Any]:
    """Egress rule allowing DNS lookups against the cluster DNS pods."""
    return {
        "to": [{
            "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name":
                                                    target.dns_namespace}},
            "pod_selector": {"match_labels": dict(target.dns_pod_labels)},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def storage_spec(target: KubernetesTarget, size: str, access_mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "access_modes": [access_mode],
        "resources": {"requests": {"storage": size}},
    }
    if target.storage_class:
        spec["storage_class_name"] = target.storage_class
    return spec


@dataclass(frozen=True)
class PodObjects:
    """What a workload's pods need besides their controller.

    Attributes:
        service_account: Its ServiceAccount (no token mounted).
        secret: Its Secret (the keys its env and files reference); None when it reads none.
        config_map: Its ConfigMap of literal config files; None when it has none.
    """

    service_account: k8s.core.v1.ServiceAccount
    secret: k8s.core.v1.Secret | None
    config_map: k8s.core.v1.ConfigMap | None

    def mounted(self) -> list[pulumi.Resource]:
        """What pods mount, so must exist before them."""
        return [r for r in (self.secret, self.config_map) if r is not None]


def pod_objects(name: str, target: KubernetesTarget, labels: Mapping[str, str],
                workload: Workload, secret_data: pulumi.Output[dict[str, str]],
                opts: pulumi.ResourceOptions) -> PodObjects:
    """Declare ``name``'s ServiceAccount, and its Secret and ``<name>-files`` ConfigMap when
    the workload reads any."""
    account = k8s.core.v1.ServiceAccount(
        name, metadata=meta(target, name, labels), automount_service_account_token=False,
        opts=opts,
    )
    secret = None
    keys = sorted(workload.secret_keys())
    if keys:
        data: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
            secret_data.apply(lambda d: {k: d[k] for k in keys}))
        secret = k8s.core.v1.Secret(
            name, metadata=meta(target, name, labels), type="Opaque", string_data=data,
            opts=opts,
        )
    config_map = None
    files = literal_files(workload)
    if files:
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-files", metadata=meta(target, f"{name}-files", labels), data=files,
            opts=opts,
        )
    return PodObjects(account, secret, config_map)


def deployment_strategy(strategy: UpdateStrategy) -> dict[str, Any]:
    """A Deployment's strategy: rolling with one surge pod and none unavailable, or recreate."""
    if strategy is UpdateStrategy.RECREATE:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": 1}}


def network_policy(name: str, target: KubernetesTarget, labels: Mapping[str, str],
                   selector: Mapping[str, str], ingress: list[dict[str, Any]],
                   egress: list[dict[str, Any]],
                   opts: pulumi.ResourceOptions) -> k8s.networking.v1.NetworkPolicy:
    """A NetworkPolicy for the pods ``selector`` picks: only ``ingress`` in, ``egress`` out."""
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=meta(target, name, labels),
        spec={
            "pod_selector": {"match_labels": dict(selector)},
            "policy_types": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
        opts=opts,
    )


def disruption_budget(name: str, target: KubernetesTarget, labels: Mapping[str, str],
                      selector: Mapping[str, str],
                      opts: pulumi.ResourceOptions) -> k8s.policy.v1.PodDisruptionBudget:
    """At most one of the selected pods down at a time for voluntary disruptions."""
    return k8s.policy.v1.PodDisruptionBudget(
        name,
        metadata=meta(target, name, labels),
        spec={"max_unavailable": 1, "selector": {"match_labels": dict(selector)}},
        opts=opts,
    )


# "Anywhere" for an external endpoint whose address is not declared: every address but the
# link-local ranges, where clouds serve instance metadata and credentials (169.254.169.254,
# AWS's fd00:ec2::254).
_ANYWHERE = ({"ip_block": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
             {"ip_block": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}})


def external_egress(ports: Sequence[int], cidrs: Sequence[str] = ()) -> dict[str, Any]:
    """Egress to an endpoint outside the cluster on ``ports``: to ``cidrs`` when declared, else
    to any address but the link-local ones (cloud metadata)."""
    to = [{"ip_block": {"cidr": c}} for c in cidrs] if cidrs else [dict(b) for b in _ANYWHERE]
    return {"to": to, "ports": [{"protocol": "TCP", "port": p} for p in ports]}


def registry_egress(peer: RegistryPeer) -> dict[str, Any]:
    """Egress to the registry: its server pods when they are known, else its ports at its
    declared addresses (anywhere but link-local when none is declared)."""
    if peer.namespace is None or peer.pod_labels is None:
        return external_egress(peer.ports, peer.cidrs)
    return {
        "to": [{
            "namespace_selector": {"match_labels": {
                "kubernetes.io/metadata.name": peer.namespace}},
            "pod_selector": {"match_labels": dict(peer.pod_labels)},
        }],
        "ports": [{"protocol": "TCP", "port": p} for p in peer.ports],
    }
