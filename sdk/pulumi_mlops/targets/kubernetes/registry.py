"""ModelRegistry on Kubernetes: the MLflow server's Deployment, Service, NetworkPolicy, volumes,
optional Ingress and disruption budget, and the PostgreSQL StatefulSet it may run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.plans.registry import RegistryPlan
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.kubernetes._objects import (
    PodObjects,
    deployment_strategy,
    disruption_budget,
    dns_egress,
    external_egress,
    meta,
    network_policy,
    peer_rule,
    pod_objects,
    pod_spec,
    skip_annotations,
    storage_spec,
)

__all__ = ["KubernetesDatabase", "KubernetesRegistry", "materialize"]

# Ports an external database may listen on (PostgreSQL, MySQL, SQL Server).
_EXTERNAL_DB_PORTS = (5432, 3306, 1433)


@dataclass(frozen=True)
class KubernetesDatabase:
    """The PostgreSQL the registry runs.

    Attributes:
        pods: Its ServiceAccount, Secret and ConfigMap.
        service: Its headless Service.
        stateful_set: Its StatefulSet (one replica, volumes kept when deleted).
        network_policy: Only the MLflow server may connect; it connects to nobody.
    """

    pods: PodObjects
    service: k8s.core.v1.Service
    stateful_set: k8s.apps.v1.StatefulSet
    network_policy: k8s.networking.v1.NetworkPolicy


@dataclass(frozen=True)
class KubernetesRegistry:
    """The registry's Kubernetes objects.

    Attributes:
        pods: The server's ServiceAccount, Secret and ConfigMap.
        claims: The server's PersistentVolumeClaims, by mount name.
        server: The server's Deployment.
        service: Its ClusterIP Service.
        network_policy: Who may connect to the server, and where it connects to.
        disruption_budget: At most one server pod down at a time (two or more replicas).
        ingress: The Ingress in front of it, if any.
        database: The PostgreSQL it runs, if any.
    """

    pods: PodObjects
    claims: Mapping[str, k8s.core.v1.PersistentVolumeClaim]
    server: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    network_policy: k8s.networking.v1.NetworkPolicy
    disruption_budget: k8s.policy.v1.PodDisruptionBudget | None
    ingress: k8s.networking.v1.Ingress | None
    database: KubernetesDatabase | None


def materialize(
    parent: pulumi.ComponentResource,
    plan: RegistryPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> KubernetesRegistry:
    """Declare the registry's Kubernetes objects under ``parent``."""
    opts = target.resource_options(parent)
    server, name, selector = plan.server, plan.server_name, plan.server_selector
    labels = {**plan.labels, **selector}

    pods = pod_objects(name, target, labels, server, secret_data, opts)
    access_mode = "ReadWriteMany" if plan.shared_storage else "ReadWriteOnce"
    claims = {
        m.name: k8s.core.v1.PersistentVolumeClaim(
            f"{plan.name}-{m.name}", metadata=meta(target, f"{plan.name}-{m.name}", labels),
            spec=storage_spec(target, m.size, access_mode), opts=opts,
        )
        for m in server.mounts if m.kind == "data"
    }
    template_spec = pod_spec(
        server, secret_name=name, config_map_name=f"{name}-files", service_account=name,
        claims={mount: f"{plan.name}-{mount}" for mount in claims},
        spread_labels=selector if plan.shared_storage else None,
    )
    deployment = k8s.apps.v1.Deployment(
        name,
        metadata=meta(target, name, labels, skip_annotations(server)),
        spec={
            "replicas": plan.replicas,
            "selector": {"match_labels": dict(selector)},
            "strategy": deployment_strategy(plan.update_strategy),
            "progress_deadline_seconds": plan.rollout_deadline_seconds,
            "revision_history_limit": 5,
            "template": {"metadata": {"labels": labels}, "spec": template_spec},
        },
        # Pods must not start before the Secret and volumes they mount exist.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[*pods.mounted(), *claims.values()])),
    )
    service = k8s.core.v1.Service(
        name,
        metadata=meta(target, name, labels),
        spec={
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": server.port, "target_port": "http",
                       "protocol": "TCP"}],
        },
        opts=opts,
    )
    ingress = plan.ingress
    peers = [peer_rule(p) for p in plan.allow_from]
    if ingress is not None:
        peers.append({"namespace_selector": {"match_labels": {
            "kubernetes.io/metadata.name": ingress.controller_namespace}}})
    egress = [dns_egress(target)]
    if plan.database is not None:
        egress.append({
            "to": [{"pod_selector": {"match_labels": dict(plan.database_selector)}}],
            "ports": [{"protocol": "TCP", "port": plan.database.port}],
        })
    elif plan.external_database:
        egress.append(external_egress(_EXTERNAL_DB_PORTS, plan.egress_cidrs))
    if plan.artifact_store_egress:
        egress.append(external_egress((443,), plan.egress_cidrs))
    policy = network_policy(
        name, target, labels, selector,
        [{"from": peers, "ports": [{"protocol": "TCP", "port": server.port}]}], egress, opts)
    budget = (disruption_budget(name, target, labels, selector, opts)
              if plan.disruption_budget else None)
    return KubernetesRegistry(
        pods=pods, claims=claims, server=deployment, service=service, network_policy=policy,
        disruption_budget=budget,
        ingress=_ingress(plan, target, labels, opts) if ingress is not None else None,
        database=(_database(plan, target, secret_data, opts)
                  if plan.database is not None else None),
    )


def _ingress(plan: RegistryPlan, target: KubernetesTarget, labels: Mapping[str, str],
             opts: pulumi.ResourceOptions) -> k8s.networking.v1.Ingress:
    ingress = plan.ingress
    assert ingress is not None
    name = plan.server_name
    spec: dict[str, Any] = {
        "rules": [{"host": ingress.host, "http": {"paths": [{
            "path": "/", "path_type": "Prefix",
            "backend": {"service": {"name": name, "port": {"name": "http"}}},
        }]}}],
    }
    if target.ingress_class:
        spec["ingress_class_name"] = target.ingress_class
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secret_name": ingress.tls_secret_name}]
    return k8s.networking.v1.Ingress(name, metadata=meta(target, name, labels), spec=spec,
                                     opts=opts)


def _database(
    plan: RegistryPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
    opts: pulumi.ResourceOptions,
) -> KubernetesDatabase:
    db = plan.database
    assert db is not None and db.port is not None
    name, selector = plan.database_name, plan.database_selector
    labels = {**plan.labels, **selector}
    pods = pod_objects(name, target, labels, db, secret_data, opts)
    service = k8s.core.v1.Service(
        name,
        metadata=meta(target, name, labels),
        spec={"cluster_ip": "None", "selector": dict(selector),
              "ports": [{"name": "tcp", "port": db.port, "target_port": "tcp",
                         "protocol": "TCP"}]},
        opts=opts,
    )
    stateful_set = k8s.apps.v1.StatefulSet(
        name,
        metadata=meta(target, name, labels, skip_annotations(db)),
        spec={
            "replicas": 1,
            "service_name": name,
            "selector": {"match_labels": dict(selector)},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(
                db, secret_name=name, config_map_name=f"{name}-files", service_account=name,
                claims={},
            )},
            "volume_claim_templates": [
                {"metadata": {"name": m.name, "labels": labels},
                 "spec": storage_spec(target, m.size, "ReadWriteOnce")}
                for m in db.mounts if m.kind == "data"
            ],
            "persistent_volume_claim_retention_policy": {"when_deleted": "Retain",
                                                         "when_scaled": "Retain"},
        },
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[pods.secret] if pods.secret is not None else [])),
    )
    # Only the MLflow server talks to the database; the database talks to nobody.
    policy = network_policy(
        name, target, labels, selector,
        [{"from": [{"pod_selector": {"match_labels": dict(plan.server_selector)}}],
          "ports": [{"protocol": "TCP", "port": db.port}]}], [], opts)
    return KubernetesDatabase(pods, service, stateful_set, policy)
