"""ModelService on Kubernetes: a Deployment per track, the Services in front of them, the
autoscaler, disruption budget and NetworkPolicy, and a Gateway API HTTPRoute for exact splits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.contracts.scrape import SCRAPE_LABEL
from pulumi_mlops.plans.service import ServicePlan, TrackPlan, public_routes
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.plans.workload import UpdateStrategy
from pulumi_mlops.targets.kubernetes._objects import (
    PodObjects,
    deployment_strategy,
    disruption_budget,
    dns_egress,
    meta,
    network_policy,
    peer_rule,
    pod_objects,
    pod_spec,
    registry_egress,
    skip_annotations,
)

__all__ = ["KubernetesService", "http_route", "materialize"]

_VERSION_LABEL = "mlops.dev/model-version"


@dataclass(frozen=True)
class KubernetesService:
    """The service's Kubernetes objects.

    Attributes:
        pods: The pods' ServiceAccount and Secret.
        deployments: Each track's Deployment, by track name.
        services: Every Service: the stable endpoint's first, then canary/shadow/preview.
        autoscaler: The stable track's HorizontalPodAutoscaler, if any.
        disruption_budget: At most one stable pod down at a time (two or more), if any.
        network_policy: Who may connect (peers, monitoring, the Gateway), where pods connect.
        route: The Gateway API HTTPRoute, when the target has a Gateway and the rollout uses it.
    """

    pods: PodObjects
    deployments: Mapping[str, k8s.apps.v1.Deployment]
    services: tuple[k8s.core.v1.Service, ...]
    autoscaler: k8s.autoscaling.v2.HorizontalPodAutoscaler | None
    disruption_budget: k8s.policy.v1.PodDisruptionBudget | None
    network_policy: k8s.networking.v1.NetworkPolicy
    route: k8s.apiextensions.CustomResource | None


def materialize(
    parent: pulumi.ComponentResource,
    plan: ServicePlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> KubernetesService:
    """Declare the service's Kubernetes objects under ``parent``."""
    opts = target.resource_options(parent)
    name, labels = plan.name, plan.labels
    pods = pod_objects(name, target, labels, plan.tracks[0].workload, secret_data, opts)
    deployments = {t.track: _deployment(plan, t, target, pods, opts) for t in plan.tracks}
    scrape = plan.scrape.annotations()
    services = tuple(
        k8s.core.v1.Service(
            service_name,
            metadata=meta(target, service_name, {**labels, SCRAPE_LABEL: "true"}, scrape),
            spec={"type": "ClusterIP", "selector": dict(selector),
                  "ports": [{"name": "http", "port": 80, "target_port": "http",
                             "protocol": "TCP"}]},
            opts=opts,
        )
        for service_name, selector in {name: plan.endpoint_selector,
                                       **plan.extra_services}.items()
    )
    stable = plan.tracks[0]
    autoscaler = None
    if plan.autoscaler is not None:
        min_replicas, max_replicas, target_cpu = plan.autoscaler
        autoscaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            name,
            metadata=meta(target, name, labels),
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
    budget = (disruption_budget(name, target, labels, stable.selector, opts)
              if plan.disruption_budget else None)
    gateway = target.gateway if plan.route else None
    peers = [peer_rule(p) for p in plan.allow_from]
    if gateway is not None:
        peers.append({"namespace_selector": {"match_labels": {
            "kubernetes.io/metadata.name": gateway.namespace}}})
    policy = network_policy(
        name, target, labels, plan.selector,
        # No peer admits nobody: a rule with an empty `from` would admit every source.
        [{"from": peers, "ports": [{"protocol": "TCP", "port": plan.port}]}] if peers else [],
        [dns_egress(target), registry_egress(plan.registry)], opts)
    return KubernetesService(
        pods=pods, deployments=deployments, services=services, autoscaler=autoscaler,
        disruption_budget=budget, network_policy=policy,
        route=http_route(plan, target, opts) if gateway is not None else None,
    )


def _deployment(plan: ServicePlan, t: TrackPlan, target: KubernetesTarget, pods: PodObjects,
                opts: pulumi.ResourceOptions) -> k8s.apps.v1.Deployment:
    name = plan.name
    spec = pod_spec(t.workload, secret_name=name, config_map_name=f"{name}-files",
                    service_account=name, claims={},
                    spread_labels=t.selector if t.spread else None)
    spec["termination_grace_period_seconds"] = plan.grace_seconds
    spec["containers"][0]["lifecycle"] = {
        "pre_stop": {"exec_": {"command": ["sleep", str(plan.pre_stop_seconds)]}}}
    deployment_spec: dict[str, Any] = {
        "selector": {"match_labels": dict(t.selector)},
        "strategy": deployment_strategy(UpdateStrategy.ROLLING),
        "min_ready_seconds": 5,
        "progress_deadline_seconds": plan.rollout_deadline_seconds,
        "revision_history_limit": 5,
        "template": {"metadata": {"labels": dict(t.labels), "annotations": dict(t.annotations)},
                     "spec": spec},
    }
    if t.replicas is not None:
        deployment_spec["replicas"] = t.replicas
    return k8s.apps.v1.Deployment(
        t.object_name,
        # The version label stays on the pods: a new version changes only the template.
        metadata=meta(target, t.object_name,
                      {k: v for k, v in t.labels.items() if k != _VERSION_LABEL},
                      {**skip_annotations(t.workload),
                       **({} if plan.wait_ready else {"pulumi.com/skipAwait": "true"})}),
        spec=deployment_spec,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=pods.mounted(),
            custom_timeouts=pulumi.CustomTimeouts(
                create=f"{t.create_timeout_seconds}s",
                update=f"{t.update_timeout_seconds}s"))),
    )


def http_route(plan: ServicePlan, target: KubernetesTarget,
               opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    """The Gateway API HTTPRoute: weighted backends (canary), a request mirror (shadow), for
    the public requests only (`public_routes`)."""
    gateway = target.gateway
    assert gateway is not None
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                              "name": gateway.name, "namespace": gateway.namespace}
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix" if r.prefix else "Exact", "value": r.path}}
                    for r in public_routes([t.model.name for t in plan.tracks])],
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
        metadata=meta(target, plan.name, plan.labels),
        spec=spec,
        opts=opts,
    )
