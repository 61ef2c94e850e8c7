"""MonitoringStack on Kubernetes.

Operator mode: a PodMonitor per service track and one for the registry, each with a
NetworkPolicy admitting Prometheus' namespace to the metrics port, one PrometheusRule, and each
dashboard in a ConfigMap for Grafana's sidecar, all labelled for the Prometheus Operator release
that selects them (kube-prometheus-stack's ``release`` label).

Standalone: a Prometheus StatefulSet of the stack's own (its config and rules in a ConfigMap,
its data on a PersistentVolumeClaim, hardened like every pod here), finding each scraped pod set
through a headless Service of the stack's own by DNS (no Kubernetes API access, so no RBAC), a
NetworkPolicy admitting it to each pod set's metrics port, and one for Prometheus itself: in
from its namespace, out to DNS, the scraped pods, kube-state-metrics and its Alertmanager only.
An Alertmanager (optional) likewise, its configuration in a Secret, reached by Prometheus only,
reaching DNS and its receivers' ports; and Grafana (optional), reaching DNS and Prometheus.
"""

from __future__ import annotations

import hashlib
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
    PodScrape,
)
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.plans.workload import Workload
from pulumi_mlops.targets.kubernetes._objects import (
    dns_egress,
    external_egress,
    literal_files,
    meta,
    pod_objects,
    pod_spec,
    skip_annotations,
    storage_spec,
)

__all__ = ["API_VERSION", "CONFIG_DIGEST_ANNOTATION", "KubernetesAlertmanager",
           "KubernetesGrafana", "KubernetesMonitoring", "KubernetesPrometheus", "materialize"]

API_VERSION = "monitoring.coreos.com/v1"
CONFIG_DIGEST_ANNOTATION = "mlops.dev/config-digest"
"""On a standalone Prometheus' or Alertmanager's pod template: a digest of its files, so a
changed config rolls the pod."""


@dataclass(frozen=True)
class KubernetesPrometheus:
    """A standalone Prometheus.

    Attributes:
        stateful_set: Its StatefulSet (one replica, its data on a claim).
        service: The Service in front of it (port ``http``).
        network_policy: What it may reach and be reached from.
        scrape_services: The headless Services it finds the scraped pods by, one per pod set.
    """

    stateful_set: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    network_policy: k8s.networking.v1.NetworkPolicy
    scrape_services: tuple[k8s.core.v1.Service, ...]


@dataclass(frozen=True)
class KubernetesAlertmanager:
    """A standalone Alertmanager.

    Attributes:
        stateful_set: Its StatefulSet (one replica, silences on a claim).
        service: The Service Prometheus sends alerts to.
        network_policy: Prometheus in; DNS and the receivers' ports out.
    """

    stateful_set: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    network_policy: k8s.networking.v1.NetworkPolicy


@dataclass(frozen=True)
class KubernetesGrafana:
    """A standalone Grafana.

    Attributes:
        stateful_set: Its StatefulSet (one replica, users and preferences on a claim).
        service: The Service in front of it.
        network_policy: Its namespace in; DNS and Prometheus out.
    """

    stateful_set: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    network_policy: k8s.networking.v1.NetworkPolicy


@dataclass(frozen=True)
class KubernetesMonitoring:
    """The monitoring objects.

    Attributes:
        pod_monitors: operator mode: one per track of every service, and the registry's.
        network_policies: One per scraped pod set: Prometheus admitted to the metrics port.
        rules: operator mode: the PrometheusRule holding every rule group (standalone: in
            Prometheus' config).
        dashboards: One ConfigMap per dashboard.
        prometheus: standalone: Prometheus itself.
        alertmanager: standalone: the Alertmanager, when the stack routes alerts.
        grafana: standalone: Grafana, when the stack has one.
    """

    pod_monitors: tuple[k8s.apiextensions.CustomResource, ...]
    network_policies: tuple[k8s.networking.v1.NetworkPolicy, ...]
    rules: k8s.apiextensions.CustomResource | None
    dashboards: tuple[k8s.core.v1.ConfigMap, ...]
    prometheus: KubernetesPrometheus | None
    alertmanager: KubernetesAlertmanager | None
    grafana: KubernetesGrafana | None


def _pod_label_source(label: str) -> str:
    """Prometheus' Kubernetes discovery meta label for a pod label."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def _admit(plan: MonitoringPlan, target: KubernetesTarget, pods: PodScrape,
           labels: dict[str, str], source: dict[str, Any],
           opts: pulumi.ResourceOptions) -> k8s.networking.v1.NetworkPolicy:
    """Additive to the workload's own policy: ``source`` may reach the metrics port (for a
    model service, its only port)."""
    name = f"{plan.name}-{pods.name}-scrape"
    return k8s.networking.v1.NetworkPolicy(
        name, metadata=meta(target, name, labels),
        spec={"pod_selector": {"match_labels": dict(pods.selector)},
              "policy_types": ["Ingress"],
              "ingress": [{"from": [source], "ports": [{"protocol": "TCP", "port": pods.port}]}]},
        opts=opts)


def _dashboards(plan: MonitoringPlan, target: KubernetesTarget, labels: dict[str, str],
                opts: pulumi.ResourceOptions) -> tuple[k8s.core.v1.ConfigMap, ...]:
    return tuple(
        k8s.core.v1.ConfigMap(
            f"{plan.name}-{uid}", metadata=meta(target, f"{plan.name}-{uid}",
                                                {**labels, DASHBOARD_LABEL: "1"}),
            data={f"{uid}.json": json.dumps(document, sort_keys=True)}, opts=opts)
        for uid, document in sorted(plan.dashboards.items()))


def materialize(parent: pulumi.ComponentResource, plan: MonitoringPlan,
                target: KubernetesTarget, alertmanager_data: pulumi.Output[dict[str, str]],
                grafana_data: pulumi.Output[dict[str, str]]) -> KubernetesMonitoring:
    """Declare the stack's objects under ``parent``: for the cluster's Prometheus Operator,
    or a Prometheus (and an Alertmanager and Grafana, with their secret data) of its own."""
    opts = target.resource_options(parent)
    if plan.prometheus is not None:
        return _standalone(plan, plan.prometheus, target, alertmanager_data, grafana_data,
                           opts)
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
        endpoint = {"port": pods.port_name, "path": pods.path, "relabelings": relabel}
        monitors.append(k8s.apiextensions.CustomResource(
            name, api_version=API_VERSION, kind="PodMonitor",
            metadata=meta(target, name, labels),
            spec={"selector": {"matchLabels": dict(pods.selector)},
                  "namespaceSelector": {"matchNames": [target.namespace]},
                  "podMetricsEndpoints": [endpoint]},
            opts=opts))
    # Prometheus' pods only (the operator labels them so), not every pod of its namespace.
    scraper = {"namespace_selector": {"match_labels": {
        "kubernetes.io/metadata.name": plan.scraper_namespace}},
        "pod_selector": {"match_labels": {"app.kubernetes.io/name": "prometheus"}}}
    policies = tuple(_admit(plan, target, pods, labels, scraper, opts) for pods in plan.pods)
    rules = k8s.apiextensions.CustomResource(
        f"{plan.name}-rules", api_version=API_VERSION, kind="PrometheusRule",
        metadata=meta(target, f"{plan.name}-rules", labels),
        spec={"groups": [dict(g) for g in plan.groups]}, opts=opts)
    return KubernetesMonitoring(tuple(monitors), policies, rules,
                                _dashboards(plan, target, labels, opts), None, None, None)


def _stateful(plan: MonitoringPlan, workload: Workload, app: str, target: KubernetesTarget,
              secret_data: pulumi.Output[dict[str, str]], opts: pulumi.ResourceOptions
              ) -> tuple[k8s.apps.v1.StatefulSet, k8s.core.v1.Service, dict[str, str],
                         dict[str, str]]:
    """One replica of ``workload`` with its data on a claim, and a Service in front; with
    its selector and labels."""
    assert workload.port is not None
    name = workload.name
    selector = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": plan.name}
    labels = {**selector, "app.kubernetes.io/part-of": "pulumi-mlops",
              "app.kubernetes.io/managed-by": "pulumi"}
    objects = pod_objects(name, target, labels, workload, secret_data, opts)
    after = [o for o in (objects.secret, objects.config_map) if o is not None]
    # Prometheus does not reload its files by itself: a changed config (a new target, a
    # changed rule) rolls the pod. Of literal files only: a digest of secret data would be a
    # secret (a short password can be guessed from it), and a secret in the pod template
    # would hide the whole spec from previews. (Prometheus reads a password file at every
    # scrape; a changed Alertmanager receiver needs `kubectl rollout restart`.)
    digest = hashlib.sha256(
        json.dumps(literal_files(workload), sort_keys=True).encode()).hexdigest()
    stateful_set = k8s.apps.v1.StatefulSet(
        name,
        metadata=meta(target, name, labels, skip_annotations(workload)),
        spec={
            "replicas": 1,
            "service_name": name,
            "selector": {"match_labels": selector},
            "template": {"metadata": {"labels": labels,
                                      "annotations": {CONFIG_DIGEST_ANNOTATION: digest}},
                         "spec": pod_spec(
                workload, secret_name=name, config_map_name=f"{name}-files",
                service_account=name, claims={})},
            "volume_claim_templates": [
                {"metadata": {"name": m.name, "labels": labels},
                 "spec": storage_spec(target, m.size, "ReadWriteOnce")}
                for m in workload.mounts if m.kind == "data"],
            "persistent_volume_claim_retention_policy": {"when_deleted": "Retain",
                                                         "when_scaled": "Retain"},
        },
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=after)))
    service = k8s.core.v1.Service(
        name, metadata=meta(target, name, labels),
        spec={"selector": selector, "ports": [{"name": "http", "port": workload.port,
                                               "target_port": "http", "protocol": "TCP"}]},
        opts=opts)
    return stateful_set, service, selector, labels


def _alertmanager(plan: MonitoringPlan, workload: Workload, target: KubernetesTarget,
                  secret_data: pulumi.Output[dict[str, str]], prometheus: dict[str, str],
                  opts: pulumi.ResourceOptions) -> KubernetesAlertmanager:
    """The Alertmanager: reached by Prometheus only, reaching DNS and its receivers' ports."""
    stateful_set, service, selector, labels = _stateful(
        plan, workload, "alertmanager", target, secret_data, opts)
    policy = k8s.networking.v1.NetworkPolicy(
        workload.name, metadata=meta(target, workload.name, labels),
        spec={"pod_selector": {"match_labels": selector},
              "policy_types": ["Ingress", "Egress"],
              "ingress": [{"from": [{"pod_selector": {"match_labels": prometheus}}],
                           "ports": [{"protocol": "TCP", "port": workload.port}]}],
              # Receivers (webhook, Slack, SMTP) anywhere but link-local (cloud metadata).
              "egress": [dns_egress(target), external_egress(plan.alertmanager_egress)]},
        opts=opts)
    return KubernetesAlertmanager(stateful_set, service, policy)


def _grafana(plan: MonitoringPlan, workload: Workload, target: KubernetesTarget,
             secret_data: pulumi.Output[dict[str, str]], prometheus: dict[str, str],
             prometheus_port: int, opts: pulumi.ResourceOptions) -> KubernetesGrafana:
    """Grafana: reached from its namespace (``kubectl port-forward``), reaching DNS and
    Prometheus only."""
    stateful_set, service, selector, labels = _stateful(
        plan, workload, "grafana", target, secret_data, opts)
    policy = k8s.networking.v1.NetworkPolicy(
        workload.name, metadata=meta(target, workload.name, labels),
        spec={"pod_selector": {"match_labels": selector},
              "policy_types": ["Ingress", "Egress"],
              "ingress": [{"from": [{"pod_selector": {}}],
                           "ports": [{"protocol": "TCP", "port": workload.port}]}],
              "egress": [dns_egress(target),
                         {"to": [{"pod_selector": {"match_labels": prometheus}}],
                          "ports": [{"protocol": "TCP", "port": prometheus_port}]}]},
        opts=opts)
    return KubernetesGrafana(stateful_set, service, policy)


def _standalone(plan: MonitoringPlan, workload: Workload, target: KubernetesTarget,
                alertmanager_data: pulumi.Output[dict[str, str]],
                grafana_data: pulumi.Output[dict[str, str]],
                opts: pulumi.ResourceOptions) -> KubernetesMonitoring:
    assert workload.port is not None
    name = workload.name
    # Prometheus reads no secret: every target it scrapes answers without credentials.
    stateful_set, service, selector, labels = _stateful(
        plan, workload, "prometheus", target, pulumi.Output.from_input({}), opts)
    alertmanager = None
    if plan.alertmanager is not None:
        alertmanager = _alertmanager(plan, plan.alertmanager, target, alertmanager_data,
                                     selector, opts)
    grafana = None
    if plan.grafana is not None:
        grafana = _grafana(plan, plan.grafana, target, grafana_data, selector, workload.port,
                           opts)
    # Found by DNS: every pod, ready or not (a replica waiting for its model says so on
    # /metrics).
    scrape_services = tuple(
        k8s.core.v1.Service(
            f"{plan.name}-{pods.name}",
            metadata=meta(target, f"{plan.name}-{pods.name}", labels),
            spec={"cluster_ip": "None", "publish_not_ready_addresses": True,
                  "selector": dict(pods.selector),
                  "ports": [{"name": pods.port_name, "port": pods.port, "target_port": pods.port,
                             "protocol": "TCP"}]},
            opts=opts)
        for pods in plan.pods)
    prometheus_pods = {"pod_selector": {"match_labels": selector}}
    policies = tuple(_admit(plan, target, pods, labels, prometheus_pods, opts)
                     for pods in plan.pods)
    egress: list[dict[str, Any]] = [dns_egress(target)]
    egress += [{"to": [{"pod_selector": {"match_labels": dict(pods.selector)}}],
                "ports": [{"protocol": "TCP", "port": pods.port}]} for pods in plan.pods]
    egress += [{"to": [{"namespace_selector": {"match_labels": {
        "kubernetes.io/metadata.name": t.address.split(".")[1]}}}],
        "ports": [{"protocol": "TCP", "port": int(t.address.rsplit(":", 1)[1])}]}
        for t in plan.scraped if t.job == "kube-state-metrics"]
    if plan.alertmanager is not None:
        egress.append({"to": [{"pod_selector": {"match_labels": {
            "app.kubernetes.io/name": "alertmanager", "app.kubernetes.io/instance": plan.name}}}],
            "ports": [{"protocol": "TCP", "port": plan.alertmanager.port}]})
    own_policy = k8s.networking.v1.NetworkPolicy(
        name, metadata=meta(target, name, labels),
        spec={"pod_selector": {"match_labels": selector},
              "policy_types": ["Ingress", "Egress"],
              "ingress": [{"from": [{"pod_selector": {}}],
                           "ports": [{"protocol": "TCP", "port": workload.port}]}],
              "egress": egress},
        opts=opts)
    return KubernetesMonitoring(
        (), policies, None, _dashboards(plan, target, labels, opts),
        KubernetesPrometheus(stateful_set, service, own_policy, scrape_services), alertmanager,
        grafana)
