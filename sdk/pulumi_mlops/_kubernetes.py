"""Materialize workloads as Kubernetes objects (pulumi-kubernetes).

Pod templates are built by pure functions from a `Workload`, so every component gets the same
Pod Security Standards *restricted* hardening, probes and secret handling.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.contracts.retrain import SLOT_ENV
from pulumi_mlops.targets import KubernetesTarget
from pulumi_mlops.workload import (
    RUN_AS_USER,
    ExecCheck,
    HttpCheck,
    RegistryPeer,
    SecretRef,
    Workload,
    pod_lifecycle,
)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the API server sets on every pod of a Job (Kubernetes 1.27+, as ``timeZone``),
holding the Job's name: the CronJob's run's idempotency key, given to the job as ``SLOT_ENV``."""
TTL_AFTER_FINISHED = 7 * 24 * 3600
"""Seconds a finished Job is kept (``ttlSecondsAfterFinished``), beside the history limits."""

if TYPE_CHECKING:
    from pulumi_mlops.components.registry import Peer, RegistryPlan
    from pulumi_mlops.components.retrain import RetrainPlan
    from pulumi_mlops.components.service import ServicePlan

# Checks checkov would flag on hardened workloads here, each skipped only where it applies and
# for a stated reason. Kept in one place so the reasons are reviewed together.
_SKIP_TAG_PINNED = ("CKV_K8S_43", "image pinned by version tag (pulled Always); pass an image "
                    "reference with an @sha256 digest to pin by digest")
_SKIP_SECRET_ENV = ("CKV_K8S_35", "the program reads these credentials only from environment "
                    "variables; they come from a Secret by secretKeyRef, never inline")
_EXTERNAL_DB_PORTS = (5432, 3306, 1433)


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


def _check(health: HttpCheck | ExecCheck) -> dict[str, Any]:
    if isinstance(health, HttpCheck):
        return {"http_get": {"path": health.path, "port": "http"}}
    return {"exec_": {"command": list(health.command)}}


def probes(workload: Workload) -> dict[str, Any]:
    """Startup probe whose budget covers `startup_seconds`; distinct readiness and liveness."""
    check = _check(workload.health)
    live = _check(workload.liveness or workload.health)
    period = 5
    return {
        "startup_probe": {**check, "period_seconds": period, "timeout_seconds": 3,
                          "failure_threshold": math.ceil(workload.startup_seconds / period)},
        "readiness_probe": {**check, "period_seconds": 10, "timeout_seconds": 3,
                            "failure_threshold": 3},
        "liveness_probe": {**live, "period_seconds": 20, "timeout_seconds": 5,
                           "failure_threshold": 3},
    }


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
    batch: bool = False,
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
        batch: A run-to-completion container (a Job's): it listens on no port and has no
            probes; its exit status is its health.
    """
    env = [
        {"name": k, "value_from": {"secret_key_ref": {"name": secret_name, "key": v.key}}}
        if isinstance(v, SecretRef)
        else {"name": k, "value": v}
        for k, v in workload.env.items()
    ]
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
    r = workload.resources
    container: dict[str, Any] = {
        "name": workload.name,
        "image": workload.image,
        # A tag can be moved; re-resolving it on every start keeps nodes from running a stale
        # copy. A digest cannot move, so the cached copy is the right one.
        "image_pull_policy": "IfNotPresent" if _pinned_by_digest(workload.image) else "Always",
        "command": list(workload.command),
        "env": env,
        "ports": [{"name": "http" if isinstance(workload.health, HttpCheck) else "tcp",
                   "container_port": workload.port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
            "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
        },
        "security_context": container_security_context(),
        "volume_mounts": mounts,
        "termination_message_policy": "FallbackToLogsOnError",
        **probes(workload),
    }
    if batch:
        del container["ports"]
        for probe in ("startup_probe", "readiness_probe", "liveness_probe"):
            del container[probe]
    spec: dict[str, Any] = {
        "service_account_name": service_account,
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": pod_security_context(),
        "containers": [container],
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


def _meta(target: KubernetesTarget, name: str, labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": target.namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _peer(peer: Peer) -> dict[str, Any]:
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


def _storage_spec(target: KubernetesTarget, size: str, access_mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "access_modes": [access_mode],
        "resources": {"requests": {"storage": size}},
    }
    if target.storage_class:
        spec["storage_class_name"] = target.storage_class
    return spec


def materialize_registry(
    parent: pulumi.ComponentResource,
    plan: RegistryPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> dict[str, pulumi.Resource]:
    """Declare the registry's Kubernetes objects under ``parent``."""
    opts = target.resource_options(parent)
    out: dict[str, pulumi.Resource] = {}
    server, name = plan.server, plan.server_name
    selector = {**{k: plan.labels[k] for k in ("app.kubernetes.io/name",
                                                 "app.kubernetes.io/instance")},
                "app.kubernetes.io/component": "server"}
    labels = {**plan.labels, **selector}

    out["service_account"] = _service_account(name, target, labels, opts)
    out["secret"] = _secret(name, target, labels, secret_data, server, opts)
    _files_config_map(name, target, labels, server, opts, out)
    claims: dict[str, str] = {}
    shared = plan.replicas > 1
    for m in server.mounts:
        if m.kind == "data":
            claim = f"{plan.name}-{m.name}"
            # Several replicas write the same artifacts, so the volume must be shared.
            out[f"{m.name}_claim"] = k8s.core.v1.PersistentVolumeClaim(
                claim, metadata=_meta(target, claim, labels),
                spec=_storage_spec(target, m.size, "ReadWriteMany" if shared else "ReadWriteOnce"),
                opts=opts,
            )
            claims[m.name] = claim
    template_spec = pod_spec(
        server, secret_name=name, config_map_name=f"{name}-files", service_account=name,
        claims=claims, spread_labels=selector if shared else None,
    )
    # A ReadWriteOnce volume cannot attach to a surge pod on another node: recreate instead.
    strategy = (
        {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": 1}}
        if shared or not claims
        else {"type": "Recreate"}
    )
    out["server"] = k8s.apps.v1.Deployment(
        name,
        metadata=_meta(target, name, labels, skip_annotations(server)),
        spec={
            "replicas": plan.replicas,
            "selector": {"match_labels": selector},
            "strategy": strategy,
            "progress_deadline_seconds": server.startup_seconds + 300,
            "revision_history_limit": 5,
            "template": {"metadata": {"labels": labels}, "spec": template_spec},
        },
        # Pods must not start before the Secret and volumes they mount exist.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[r for k, r in out.items() if k != "service_account"])),
    )
    out["service"] = k8s.core.v1.Service(
        name,
        metadata=_meta(target, name, labels),
        spec={
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": server.port, "target_port": "http",
                       "protocol": "TCP"}],
        },
        opts=opts,
    )
    ingress = plan.ingress
    peers = [_peer(p) for p in plan.allow_from]
    if ingress is not None:
        peers.append({"namespace_selector": {"match_labels": {
            "kubernetes.io/metadata.name": ingress.controller_namespace}}})
    egress = [dns_egress(target)]
    if plan.database is not None:
        egress.append({
            "to": [{"pod_selector": {"match_labels": _db_selector(plan)}}],
            "ports": [{"protocol": "TCP", "port": plan.database.port}],
        })
    elif plan.external_database:
        egress.append({"ports": [{"protocol": "TCP", "port": p} for p in _EXTERNAL_DB_PORTS]})
    if plan.artifact_store_egress:
        egress.append({"ports": [{"protocol": "TCP", "port": 443}]})
    out["network_policy"] = k8s.networking.v1.NetworkPolicy(
        name,
        metadata=_meta(target, name, labels),
        spec={
            "pod_selector": {"match_labels": selector},
            "policy_types": ["Ingress", "Egress"],
            "ingress": [{"from": peers,
                         "ports": [{"protocol": "TCP", "port": server.port}]}],
            "egress": egress,
        },
        opts=opts,
    )
    if plan.replicas >= 2:
        out["disruption_budget"] = k8s.policy.v1.PodDisruptionBudget(
            name,
            metadata=_meta(target, name, labels),
            spec={"max_unavailable": 1, "selector": {"match_labels": selector}},
            opts=opts,
        )
    if ingress is not None:
        ingress_spec: dict[str, Any] = {
            "rules": [{"host": ingress.host, "http": {"paths": [{
                "path": "/", "path_type": "Prefix",
                "backend": {"service": {"name": name, "port": {"name": "http"}}},
            }]}}],
        }
        if target.ingress_class:
            ingress_spec["ingress_class_name"] = target.ingress_class
        if ingress.tls_secret_name:
            ingress_spec["tls"] = [{"hosts": [ingress.host],
                                    "secret_name": ingress.tls_secret_name}]
        out["ingress"] = k8s.networking.v1.Ingress(
            name, metadata=_meta(target, name, labels), spec=ingress_spec, opts=opts
        )
    if plan.database is not None:
        out.update(_materialize_postgres(plan, target, secret_data, selector, opts))
    return out


def _db_selector(plan: RegistryPlan) -> dict[str, str]:
    return {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": plan.name,
            "app.kubernetes.io/component": "database"}


def _service_account(name: str, target: KubernetesTarget, labels: Mapping[str, str],
                     opts: pulumi.ResourceOptions) -> k8s.core.v1.ServiceAccount:
    return k8s.core.v1.ServiceAccount(
        name, metadata=_meta(target, name, labels), automount_service_account_token=False,
        opts=opts,
    )


def _secret(name: str, target: KubernetesTarget, labels: Mapping[str, str],
            secret_data: pulumi.Output[dict[str, str]], workload: Workload,
            opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
    keys = sorted(workload.secret_keys())
    data: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
        secret_data.apply(lambda d: {k: d[k] for k in keys}))
    return k8s.core.v1.Secret(
        name,
        metadata=_meta(target, name, labels),
        type="Opaque",
        string_data=data,
        opts=opts,
    )


def _files_config_map(name: str, target: KubernetesTarget, labels: Mapping[str, str],
                      workload: Workload, opts: pulumi.ResourceOptions,
                      out: dict[str, pulumi.Resource], prefix: str = "") -> None:
    data = literal_files(workload)
    if data:
        out[f"{prefix}config_map"] = k8s.core.v1.ConfigMap(
            f"{name}-files", metadata=_meta(target, f"{name}-files", labels), data=data,
            opts=opts,
        )


def _materialize_postgres(
    plan: RegistryPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
    server_selector: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> dict[str, pulumi.Resource]:
    db = plan.database
    assert db is not None
    name = plan.database_name
    selector = _db_selector(plan)
    labels = {**plan.labels, **selector}
    data = [m for m in db.mounts if m.kind == "data"]
    out: dict[str, pulumi.Resource] = {
        "database_service_account": _service_account(name, target, labels, opts),
        "database_secret": _secret(name, target, labels, secret_data, db, opts),
    }
    _files_config_map(name, target, labels, db, opts, out, prefix="database_")
    out["database_service"] = k8s.core.v1.Service(
        name,
        metadata=_meta(target, name, labels),
        spec={"cluster_ip": "None", "selector": selector,
              "ports": [{"name": "tcp", "port": db.port, "target_port": "tcp",
                         "protocol": "TCP"}]},
        opts=opts,
    )
    out["database"] = k8s.apps.v1.StatefulSet(
        name,
        metadata=_meta(target, name, labels, skip_annotations(db)),
        spec={
            "replicas": 1,
            "service_name": name,
            "selector": {"match_labels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(
                db, secret_name=name, config_map_name=f"{name}-files", service_account=name,
                claims={},
            )},
            "volume_claim_templates": [
                {"metadata": {"name": m.name, "labels": labels},
                 "spec": _storage_spec(target, m.size, "ReadWriteOnce")}
                for m in data
            ],
            "persistent_volume_claim_retention_policy": {"when_deleted": "Retain",
                                                         "when_scaled": "Retain"},
        },
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[out["database_secret"]])),
    )
    out["database_network_policy"] = k8s.networking.v1.NetworkPolicy(
        name,
        metadata=_meta(target, name, labels),
        spec={
            "pod_selector": {"match_labels": selector},
            "policy_types": ["Ingress", "Egress"],
            # Only the MLflow server talks to the database; the database talks to nobody.
            "ingress": [{"from": [{"pod_selector": {"match_labels": dict(server_selector)}}],
                         "ports": [{"protocol": "TCP", "port": db.port}]}],
            "egress": [],
        },
        opts=opts,
    )
    return out



# --------------------------------------------------------------------------- ModelService


def _registry_egress(peer: RegistryPeer) -> dict[str, Any]:
    """Egress to the registry: its server pods when they are known, else its ports."""
    ports = [{"protocol": "TCP", "port": p} for p in peer.ports]
    if peer.namespace is None or peer.pod_labels is None:
        return {"ports": ports}
    return {
        "to": [{
            "namespace_selector": {"match_labels": {
                "kubernetes.io/metadata.name": peer.namespace}},
            "pod_selector": {"match_labels": dict(peer.pod_labels)},
        }],
        "ports": ports,
    }


def materialize_service(
    parent: pulumi.ComponentResource,
    plan: ServicePlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> dict[str, pulumi.Resource]:
    """Declare the service's Kubernetes objects under ``parent``."""
    opts = target.resource_options(parent)
    name, labels = plan.name, plan.labels
    out: dict[str, pulumi.Resource] = {}
    first = plan.tracks[0].workload
    out["service_account"] = _service_account(name, target, labels, opts)
    if first.secret_keys():
        out["secret"] = _secret(name, target, labels, secret_data, first, opts)
    pre_stop, grace = pod_lifecycle()
    # A rollout that never becomes ready fails `pulumi up` (the old pods keep serving).
    deadline = first.startup_seconds + 120
    for t in plan.tracks:
        # With maxSurge 1 an update replaces pods one after another, each within the progress
        # deadline; a stuck rollout still fails at that deadline, long before this timeout.
        pods = t.replicas if t.replicas is not None else (
            plan.autoscaler[1] if plan.autoscaler else 1)
        timeouts = pulumi.CustomTimeouts(create=f"{deadline + 60}s",
                                         update=f"{deadline * max(pods, 1) + 60}s")
        spec = pod_spec(t.workload, secret_name=name, config_map_name=f"{name}-files",
                        service_account=name, claims={},
                        spread_labels=t.selector if (t.replicas or 2) >= 2 else None)
        spec["termination_grace_period_seconds"] = grace
        spec["containers"][0]["lifecycle"] = {
            "pre_stop": {"exec_": {"command": ["sleep", str(pre_stop)]}}}
        deployment_spec: dict[str, Any] = {
            "selector": {"match_labels": dict(t.selector)},
            "strategy": {"type": "RollingUpdate",
                         "rolling_update": {"max_unavailable": 0, "max_surge": 1}},
            "min_ready_seconds": 5,
            "progress_deadline_seconds": deadline,
            "revision_history_limit": 5,
            "template": {"metadata": {"labels": dict(t.labels),
                                      "annotations": dict(t.annotations)},
                         "spec": spec},
        }
        if t.replicas is not None:
            deployment_spec["replicas"] = t.replicas
        out[f"deployment_{t.track}"] = k8s.apps.v1.Deployment(
            t.object_name,
            # The version label stays on the pods: a new version changes only the template.
            metadata=_meta(target, t.object_name,
                           {k: v for k, v in t.labels.items() if k != "mlops.dev/model-version"},
                           {**skip_annotations(t.workload),
                            **({} if plan.wait_ready else {"pulumi.com/skipAwait": "true"})}),
            spec=deployment_spec,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[r for k, r in out.items() if k == "secret"],
                custom_timeouts=timeouts)),
        )
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(plan.port),
              "prometheus.io/path": "/metrics"}
    services = {name: plan.endpoint_selector, **plan.extra_services}
    for service_name, selector in services.items():
        role = "service" if service_name == name else f"service_{service_name[len(name) + 1:]}"
        out[role] = k8s.core.v1.Service(
            service_name,
            metadata=_meta(target, service_name,
                           {**labels, "mlops.dev/scrape": "true"}, scrape),
            spec={"type": "ClusterIP", "selector": dict(selector),
                  "ports": [{"name": "http", "port": 80, "target_port": "http",
                             "protocol": "TCP"}]},
            opts=opts,
        )
    stable = plan.tracks[0]
    if plan.autoscaler is not None:
        min_replicas, max_replicas, target_cpu = plan.autoscaler
        out["autoscaler"] = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            name,
            metadata=_meta(target, name, labels),
            spec={
                "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment",
                                     "name": stable.object_name},
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization",
                                              "average_utilization": target_cpu}}}],
            },
            opts=opts,
        )
    if plan.disruption_budget:
        out["disruption_budget"] = k8s.policy.v1.PodDisruptionBudget(
            name,
            metadata=_meta(target, name, labels),
            spec={"max_unavailable": 1, "selector": {"match_labels": dict(stable.selector)}},
            opts=opts,
        )
    peers = [_peer(p) for p in plan.allow_from]
    peers.append({"namespace_selector": {"match_labels": {
        "kubernetes.io/metadata.name": plan.monitoring_namespace}}})
    if plan.route and target.gateway is not None:
        peers.append({"namespace_selector": {"match_labels": {
            "kubernetes.io/metadata.name": target.gateway.namespace}}})
    out["network_policy"] = k8s.networking.v1.NetworkPolicy(
        name,
        metadata=_meta(target, name, labels),
        spec={
            "pod_selector": {"match_labels": dict(plan.selector)},
            "policy_types": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": plan.port}]}],
            "egress": [dns_egress(target), _registry_egress(plan.registry)],
        },
        opts=opts,
    )
    if plan.route and target.gateway is not None:
        out["route"] = http_route(plan, target, opts)
    return out


def http_route(plan: ServicePlan, target: KubernetesTarget,
               opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    """The Gateway API HTTPRoute: weighted backends (canary), a request mirror (shadow)."""
    gateway = target.gateway
    assert gateway is not None
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                              "name": gateway.name, "namespace": gateway.namespace}
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"name": service, "port": 80, "weight": weight}
                        for service, weight in plan.route],
    }
    if plan.mirror is not None:
        service, percent = plan.mirror
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": service, "port": 80}, "percent": percent}}]
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": [rule]}
    if plan.hostname:
        spec["hostnames"] = [plan.hostname]
    return k8s.apiextensions.CustomResource(
        plan.name,
        api_version="gateway.networking.k8s.io/v1",
        kind="HTTPRoute",
        metadata=_meta(target, plan.name, plan.labels),
        spec=spec,
        opts=opts,
    )


# --------------------------------------------------------------------------- RetrainSchedule


def materialize_retrain(
    parent: pulumi.ComponentResource,
    plan: RetrainPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> dict[str, pulumi.Resource]:
    """Declare the schedule's CronJob, its ServiceAccount, Secret, ConfigMap and NetworkPolicy."""
    cron = plan.cron
    opts = target.resource_options(parent)
    name, labels, job = plan.object_name, plan.labels, plan.job
    out: dict[str, pulumi.Resource] = {}
    out["service_account"] = _service_account(name, target, labels, opts)
    if job.secret_keys():
        out["secret"] = _secret(name, target, labels, secret_data, job, opts)
    _files_config_map(name, target, labels, job, opts, out)
    spec = pod_spec(job, secret_name=name, config_map_name=f"{name}-files",
                    service_account=name, claims={}, batch=True)
    # The job retries as a new pod (backoffLimit), so a failed pod stays for its logs.
    spec["restart_policy"] = "Never"
    # The run's idempotency key is its Job's name, which only the cluster knows: the API server
    # labels every pod of a Job with it (a retried pod too), the downward API hands it over.
    spec["containers"][0]["env"].append({
        "name": SLOT_ENV,
        "value_from": {"field_ref": {"field_path": f"metadata.labels['{JOB_NAME_LABEL}']"}},
    })
    out["cron_job"] = k8s.batch.v1.CronJob(
        name,
        metadata=_meta(target, name, labels, skip_annotations(job)),
        spec={
            "schedule": cron.schedule,
            # The scheduler in the Docker target reads the expression in UTC too.
            "time_zone": "Etc/UTC",
            "concurrency_policy": "Forbid",
            "starting_deadline_seconds": cron.starting_deadline_seconds,
            "suspend": cron.suspend,
            "successful_jobs_history_limit": cron.successful_jobs_history,
            "failed_jobs_history_limit": cron.failed_jobs_history,
            "job_template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "backoff_limit": cron.retries,
                    "active_deadline_seconds": cron.timeout_seconds,
                    "ttl_seconds_after_finished": TTL_AFTER_FINISHED,
                    "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
                },
            },
        },
        # Pods must not start before the Secret and ConfigMap they mount exist.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[r for k, r in out.items() if k in ("secret", "config_map")])),
    )
    egress = [dns_egress(target), _registry_egress(plan.registry)]
    if plan.dataset_port is not None:
        egress.append({"ports": [{"protocol": "TCP", "port": plan.dataset_port}]})
    out["network_policy"] = k8s.networking.v1.NetworkPolicy(
        name,
        metadata=_meta(target, name, labels),
        spec={
            "pod_selector": {"match_labels": dict(plan.selector)},
            "policy_types": ["Ingress", "Egress"],
            # A batch job serves nothing: no ingress rule admits anyone.
            "ingress": [],
            "egress": egress,
        },
        opts=opts,
    )
    return out
