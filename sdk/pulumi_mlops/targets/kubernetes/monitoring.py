"""MonitoringStack on Kubernetes, operator mode: a PodMonitor per service track, one
PrometheusRule, and each dashboard in a ConfigMap for Grafana's sidecar, all labelled for the
Prometheus Operator release that selects them (kube-prometheus-stack's ``release`` label)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.contracts.scrape import VERSION_LABEL
from pulumi_mlops.plans.monitoring_stack import (
    DASHBOARD_LABEL,
    POD_VERSION_LABEL,
    RELEASE_LABEL,
    MonitoringPlan,
)
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.kubernetes._objects import meta

__all__ = ["API_VERSION", "KubernetesMonitoring", "materialize"]

API_VERSION = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class KubernetesMonitoring:
    """The monitoring objects.

    Attributes:
        pod_monitors: One per track of every service.
        rules: The PrometheusRule holding every rule group.
        dashboards: One ConfigMap per dashboard.
    """

    pod_monitors: tuple[k8s.apiextensions.CustomResource, ...]
    rules: k8s.apiextensions.CustomResource
    dashboards: tuple[k8s.core.v1.ConfigMap, ...]


def _pod_label_source(label: str) -> str:
    """Prometheus' Kubernetes discovery meta label for a pod label."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def materialize(parent: pulumi.ComponentResource, plan: MonitoringPlan,
                target: KubernetesTarget) -> KubernetesMonitoring:
    """Declare the PodMonitors, the PrometheusRule and the dashboard ConfigMaps under
    ``parent``."""
    opts = target.resource_options(parent)
    assert plan.release is not None
    labels = {"app.kubernetes.io/name": "mlops-monitoring", "app.kubernetes.io/instance": plan.name,
              "app.kubernetes.io/part-of": "pulumi-mlops", "app.kubernetes.io/managed-by": "pulumi",
              RELEASE_LABEL: plan.release}
    monitors = []
    for pods in plan.pods:
        relabel: list[dict[str, Any]] = [
            {"action": "replace", "targetLabel": key, "replacement": value}
            for key, value in sorted(pods.labels.items())]
        relabel.append({"action": "replace", "targetLabel": VERSION_LABEL,
                        "sourceLabels": [_pod_label_source(POD_VERSION_LABEL)]})
        name = f"{plan.name}-{pods.name}"
        monitors.append(k8s.apiextensions.CustomResource(
            name, api_version=API_VERSION, kind="PodMonitor",
            metadata=meta(target, name, labels),
            spec={"selector": {"matchLabels": dict(pods.selector)},
                  "namespaceSelector": {"matchNames": [target.namespace]},
                  "podMetricsEndpoints": [{"port": "http", "path": "/metrics",
                                           "relabelings": relabel}]},
            opts=opts))
    rules = k8s.apiextensions.CustomResource(
        f"{plan.name}-rules", api_version=API_VERSION, kind="PrometheusRule",
        metadata=meta(target, f"{plan.name}-rules", labels),
        spec={"groups": [dict(g) for g in plan.groups]}, opts=opts)
    boards = tuple(
        k8s.core.v1.ConfigMap(
            f"{plan.name}-{uid}", metadata=meta(target, f"{plan.name}-{uid}",
                                                {**labels, DASHBOARD_LABEL: "1"}),
            data={f"{uid}.json": json.dumps(document, sort_keys=True)}, opts=opts)
        for uid, document in sorted(plan.dashboards.items()))
    return KubernetesMonitoring(tuple(monitors), rules, boards)
