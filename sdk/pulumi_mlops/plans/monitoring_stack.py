"""MonitoringStack: its args and `plan_monitoring`, the pure function deciding what it declares
on each target (the rules and PromQL are `pulumi_mlops.plans.monitoring`'s, the dashboards
`pulumi_mlops.plans.dashboards`').

Modes: on Kubernetes, ``operator``: a PodMonitor per track of every service (so every series
gets the ``service`` and ``track`` target labels, and ``version`` from the pod's label), one
PrometheusRule, and the dashboards as ConfigMaps for Grafana's sidecar, all labelled
``release: <release>`` for kube-prometheus-stack's selectors. On Docker, ``standalone``: a
Prometheus container scraping every service's container by name on their network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from pulumi_mlops._validation import ArgsModel
from pulumi_mlops.contracts.scrape import SERVICE_LABEL, TRACK_LABEL, VERSION_LABEL
from pulumi_mlops.errors import Problem
from pulumi_mlops.plans.dashboards import dashboards
from pulumi_mlops.plans.monitoring import (
    DriftAlerts,
    Prometheus,
    Scraped,
    Slo,
    prometheus_workload,
    rule_groups,
)
from pulumi_mlops.plans.service import ServicePlan
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import Workload

__all__ = [
    "DASHBOARD_LABEL",
    "POD_VERSION_LABEL",
    "RELEASE_LABEL",
    "MonitoringPlan",
    "MonitoringStackArgs",
    "PodScrape",
    "plan_monitoring",
]

DASHBOARD_LABEL = "grafana_dashboard"
"""The label Grafana's dashboard sidecar (kube-prometheus-stack) loads ConfigMaps by (``"1"``)."""
RELEASE_LABEL = "release"
"""The label kube-prometheus-stack's Prometheus selects PodMonitors and PrometheusRules by."""
POD_VERSION_LABEL = "mlops.dev/model-version"
"""The pod label that carries the served model version (`pulumi_mlops.plans.service`)."""


class MonitoringStackArgs(ArgsModel):
    """Inputs of a MonitoringStack.

    Attributes:
        target: Where it runs: a `KubernetesTarget` or a `DockerTarget`, that of the services.
        services: The ModelServices it watches (at least one).
        slos: The services' objectives. Default: `Slo()` (99.9 % non-5xx, no latency SLO).
        drift: When drift alerts. Default: `DriftAlerts()`.
        prometheus: Which Prometheus. Default: `Prometheus.standalone()` on Docker;
            on Kubernetes give `Prometheus.operator(release=...)`.
    """

    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")]
    services: Annotated[list[Any], Field(min_length=1)]
    slos: Slo = Field(default_factory=Slo)
    drift: DriftAlerts = Field(default_factory=DriftAlerts)
    prometheus: Prometheus = Field(default_factory=Prometheus.standalone)

    def problems(self) -> list[Problem]:
        """Rules across inputs: the Prometheus mode the target supports, one target for all."""
        found: list[Problem] = []
        on_k8s = isinstance(self.target, KubernetesTarget)
        if on_k8s and self.prometheus.mode == "standalone":
            found.append(Problem(
                "prometheus", "a standalone Prometheus is not available on Kubernetes yet",
                "standalone", "give `Prometheus.operator(release=...)` (kube-prometheus-stack "
                "or any Prometheus Operator), or run MonitoringStack on a DockerTarget."))
        if not on_k8s and self.prometheus.mode == "operator":
            found.append(Problem(
                "prometheus", "the Prometheus Operator runs on Kubernetes only", "operator",
                "use `Prometheus.standalone()` on a DockerTarget."))
        for i, service in enumerate(self.services):
            plan = getattr(service, "plan", None)
            if not isinstance(plan, ServicePlan):
                found.append(Problem(f"services[{i}]", "must be a ModelService",
                                     type(service).__name__,
                                     "pass the ModelService components to watch."))
            elif service.args.target.kind != self.target.kind:
                found.append(Problem(f"services[{i}]", "runs on another kind of target",
                                     service.args.target.kind,
                                     "watch services on the MonitoringStack's own target."))
            elif (isinstance(self.target, KubernetesTarget)
                  and service.args.target.namespace != self.target.namespace):
                # Its PodMonitors select pods in the stack's own namespace.
                found.append(Problem(f"services[{i}]", "runs in another namespace",
                                     service.args.target.namespace,
                                     "declare one MonitoringStack per namespace."))
        return found


@dataclass(frozen=True)
class PodScrape:
    """One track's pods, as a Prometheus Operator PodMonitor selects them.

    Attributes:
        name: The PodMonitor's name.
        selector: The track's pod selector.
        labels: The target labels set on every series (service, track).
    """

    name: str
    selector: Mapping[str, str]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class MonitoringPlan:
    """Everything a MonitoringStack declares, independent of the target.

    Attributes:
        name: Component name.
        groups: The rule groups (Prometheus' rule-file format).
        dashboards: The Grafana dashboards' JSON documents, by uid.
        pods: operator mode: the PodMonitors, one per track of every service.
        release: operator mode: the value of `RELEASE_LABEL` on what Prometheus must select.
        prometheus: standalone mode: the Prometheus workload (config and rules in its files).
        scraped: standalone mode: its static targets.
    """

    name: str
    groups: tuple[dict[str, Any], ...]
    dashboards: Mapping[str, dict[str, Any]]
    pods: tuple[PodScrape, ...]
    release: str | None
    prometheus: Workload | None
    scraped: tuple[Scraped, ...]


def plan_monitoring(name: str, args: MonitoringStackArgs,
                    services: Sequence[ServicePlan]) -> MonitoringPlan:
    """The plan for ``args`` watching the services whose plans are ``services``."""
    groups = tuple(rule_groups([s.name for s in services], args.slos, args.drift))
    pods: list[PodScrape] = []
    scraped: list[Scraped] = []
    for service in services:
        for track in service.tracks:
            labels = {SERVICE_LABEL: service.name, TRACK_LABEL: track.track}
            pods.append(PodScrape(f"{track.object_name}", dict(track.selector), labels))
            version = track.model.version or "unresolved"
            scraped.append(Scraped("mlops-service", f"{track.object_name}:{service.port}",
                                   {**labels, VERSION_LABEL: version},
                                   service.scrape.path))
    standalone = args.prometheus.mode == "standalone"
    return MonitoringPlan(
        name=name, groups=groups, dashboards=dashboards(),
        pods=() if standalone else tuple(pods),
        release=None if standalone else args.prometheus.release,
        prometheus=prometheus_workload(name, args.prometheus, scraped, groups)
        if standalone else None,
        scraped=tuple(scraped) if standalone else (),
    )
