"""MonitoringStack: its args and `plan_monitoring`, the pure function deciding what it declares
on each target (the rules and PromQL are `pulumi_mlops.plans.monitoring`'s, the dashboards
`pulumi_mlops.plans.dashboards`').

Modes: on Kubernetes, ``operator``: a PodMonitor per track of every service (so every series
gets the ``service`` and ``track`` target labels, and ``version`` from the pod's label) and one
for the registry's server pods (their metrics exporter's port; ``registry`` label), one
PrometheusRule, and the dashboards as ConfigMaps for Grafana's sidecar, all labelled
``release: <release>`` for kube-prometheus-stack's selectors; a retrain CronJob's outcome comes
from kube-state-metrics' series. On Docker,
``standalone``: a Prometheus container scraping every service's, the registry's metrics
exporter's and each retrain scheduler's container by name on their network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from croniter import croniter
from pydantic import Field

from pulumi_mlops._validation import ArgsModel
from pulumi_mlops.contracts.scrape import (
    REGISTRY_LABEL,
    SCHEDULE_LABEL,
    SERVICE_LABEL,
    TRACK_LABEL,
    VERSION_LABEL,
)
from pulumi_mlops.errors import Problem
from pulumi_mlops.plans.alerting import Alertmanager, alertmanager_workload
from pulumi_mlops.plans.dashboards import dashboards
from pulumi_mlops.plans.grafana import Grafana, grafana_workload
from pulumi_mlops.plans.monitoring import (
    DriftAlerts,
    Prometheus,
    Quality,
    Schedule,
    Scraped,
    Slo,
    prometheus_workload,
    rule_groups,
)
from pulumi_mlops.plans.registry import RegistryPlan
from pulumi_mlops.plans.retrain import RetrainPlan
from pulumi_mlops.plans.service import ServicePlan
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import METRICS_PORT_NAME, Workload

__all__ = [
    "DASHBOARD_LABEL",
    "POD_VERSION_LABEL",
    "RELEASE_LABEL",
    "MonitoringPlan",
    "MonitoringStackArgs",
    "PodScrape",
    "plan_monitoring",
    "schedule_interval",
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
        registry: The ModelRegistry it watches (scraped: the MLflow server's metrics, at its
            exporter).
            Default: None.
        retrain: The RetrainSchedules it watches: on Docker their schedulers are scraped; on
            Kubernetes their CronJobs' outcome is read from kube-state-metrics' series (which
            kube-prometheus-stack scrapes). Default: none.
        slos: The services' objectives. Default: `Slo()` (99.9 % non-5xx, no latency SLO).
        drift: When drift alerts. Default: `DriftAlerts()`.
        quality: Floors on live model quality from delayed labels. Default: `Quality()`
            (recorded, no floor).
        prometheus: Which Prometheus. Default: `Prometheus.standalone()`; on a cluster running
            kube-prometheus-stack give `Prometheus.operator(release=...)`.
        alertmanager: standalone: an Alertmanager of the stack's own, routing ``page`` and
            ``ticket`` alerts to their receivers. Default: None (alerts show in Prometheus
            only). In operator mode the cluster's Alertmanager routes them.
        grafana: standalone: a Grafana of the stack's own, with the dashboards and the
            Prometheus data source provisioned. Default: None (the dashboards are outputs; in
            operator mode ConfigMaps for the cluster's Grafana).
    """

    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")]
    services: Annotated[list[Any], Field(min_length=1)]
    registry: Any | None = None
    retrain: list[Any] = Field(default_factory=list)
    slos: Slo = Field(default_factory=Slo)
    drift: DriftAlerts = Field(default_factory=DriftAlerts)
    quality: Quality = Field(default_factory=Quality)
    prometheus: Prometheus = Field(default_factory=Prometheus.standalone)
    alertmanager: Alertmanager | None = None
    grafana: Grafana | None = None

    def problems(self) -> list[Problem]:
        """Rules across inputs: the Prometheus mode the target supports, one target for all."""
        found: list[Problem] = []
        on_k8s = isinstance(self.target, KubernetesTarget)
        if (on_k8s and self.prometheus.mode == "standalone" and self.retrain
                and self.prometheus.kube_state_metrics is None):
            found.append(Problem(
                "prometheus.kube_state_metrics", "is needed to watch retrain schedules on "
                "Kubernetes: their outcome is the CronJob's and Jobs' status", None,
                "give `Prometheus.standalone(kube_state_metrics=\"kube-state-metrics."
                "kube-system.svc:8080\")` (the cluster's kube-state-metrics), or use "
                "`Prometheus.operator(...)` with kube-prometheus-stack, which scrapes it."))
        if self.grafana is not None and self.prometheus.mode == "operator":
            found.append(Problem(
                "grafana", "is for a standalone Prometheus", "Grafana(...)",
                "the cluster's Grafana (kube-prometheus-stack's sidecar) loads the dashboards "
                "from the ConfigMaps the stack declares: drop `grafana`."))
        if self.alertmanager is not None and self.prometheus.mode == "operator":
            found.append(Problem(
                "alertmanager", "is for a standalone Prometheus", "Alertmanager(...)",
                "route the alerts with the cluster's Alertmanager (their `severity` label is "
                "`page` or `ticket`), or drop `alertmanager`."))
        if not on_k8s and self.prometheus.mode == "operator":
            found.append(Problem(
                "prometheus", "the Prometheus Operator runs on Kubernetes only", "operator",
                "use `Prometheus.standalone()` on a DockerTarget."))
        watched: list[tuple[str, Any, type, str]] = [
            (f"services[{i}]", s, ServicePlan, "ModelService") for i, s in enumerate(self.services)]
        watched += [(f"retrain[{i}]", s, RetrainPlan, "RetrainSchedule")
                    for i, s in enumerate(self.retrain)]
        if self.registry is not None:
            watched.append(("registry", self.registry, RegistryPlan, "ModelRegistry"))
        for path, component, plan_type, kind in watched:
            if not isinstance(getattr(component, "plan", None), plan_type):
                found.append(Problem(path, f"must be a {kind}", type(component).__name__,
                                     f"pass the {kind} component to watch (a registry "
                                     "referenced from another stack is watched by that "
                                     "stack's MonitoringStack)."))
            elif component.args.target.kind != self.target.kind:
                found.append(Problem(path, "runs on another kind of target",
                                     component.args.target.kind,
                                     "watch components on the MonitoringStack's own target."))
            elif (isinstance(self.target, KubernetesTarget)
                  and component.args.target.namespace != self.target.namespace):
                # Its monitors select pods (and its rules Jobs) in the stack's own namespace.
                found.append(Problem(path, "runs in another namespace",
                                     component.args.target.namespace,
                                     "declare one MonitoringStack per namespace."))
        return found


@dataclass(frozen=True)
class PodScrape:
    """One track's pods, as a Prometheus Operator PodMonitor selects them.

    Attributes:
        name: The PodMonitor's name.
        selector: The track's pod selector.
        labels: The target labels set on every series (service and track, or registry).
        port: The metrics port (which a NetworkPolicy admits Prometheus to).
        port_name: The name of that container port in the pods (a sidecar's is its
            container's name).
        path: The metrics path.
    """

    name: str
    selector: Mapping[str, str]
    labels: Mapping[str, str]
    port: int
    port_name: str = "http"
    path: str = "/metrics"


@dataclass(frozen=True)
class MonitoringPlan:
    """Everything a MonitoringStack declares, independent of the target.

    Attributes:
        name: Component name.
        groups: The rule groups (Prometheus' rule-file format).
        dashboards: The Grafana dashboards' JSON documents, by uid.
        pods: Kubernetes: the scraped pod sets, one per track of every service, and the
            registry's (operator mode: a PodMonitor each; standalone: a headless Service
            each).
        release: operator mode: the value of `RELEASE_LABEL` on what Prometheus must select.
        scraper_namespace: operator mode: the namespace Prometheus scrapes from.
        alertmanager: standalone: the Alertmanager workload (its configuration is secret data,
            `~pulumi_mlops.plans.alerting.alertmanager_config`).
        alertmanager_egress: The TCP ports the Alertmanager may reach anywhere (Kubernetes).
        grafana: standalone: the Grafana workload (its admin password is secret data).
        prometheus: standalone mode: the Prometheus workload (config and rules in its files).
        scraped: standalone mode: its static targets.
    """

    name: str
    groups: tuple[dict[str, Any], ...]
    dashboards: Mapping[str, dict[str, Any]]
    pods: tuple[PodScrape, ...]
    release: str | None
    scraper_namespace: str | None
    prometheus: Workload | None
    alertmanager: Workload | None
    alertmanager_egress: tuple[int, ...]
    grafana: Workload | None
    scraped: tuple[Scraped, ...]


def schedule_interval(cron: str) -> int:
    """The longest time between two consecutive slots of ``cron`` (UTC), in seconds, over the
    slots of a year (at most 2,000): a monthly schedule's is 31 days, a weekday one's 3."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = croniter(cron, start)
    last, longest = slots.get_next(datetime), 0
    for _ in range(2000):
        slot = slots.get_next(datetime)
        longest = max(longest, int((slot - last).total_seconds()))
        last = slot
        if (slot - start).days > 366:
            break
    return longest


def plan_monitoring(name: str, args: MonitoringStackArgs, services: Sequence[ServicePlan],
                    registry: RegistryPlan | None = None,
                    retrain: Sequence[RetrainPlan] = ()) -> MonitoringPlan:
    """The plan for ``args`` watching the services, registry and retrain schedules whose
    plans are given."""
    on_k8s = isinstance(args.target, KubernetesTarget)
    schedules = [Schedule(r.object_name, schedule_interval(r.cron.schedule), r.cron.suspend)
                 for r in retrain]
    groups = tuple(rule_groups(
        [s.name for s in services], args.slos, args.drift, args.quality,
        registry.name if registry is not None else None, schedules,
        namespace=args.target.namespace if isinstance(args.target, KubernetesTarget) else None))
    pods: list[PodScrape] = []
    scraped: list[Scraped] = []
    if registry is not None:
        # Its metrics exporter (MLflow serves its own /metrics to admins only).
        labels = {REGISTRY_LABEL: registry.name}
        pods.append(PodScrape(registry.server_name, dict(registry.server_selector), labels,
                              registry.scrape.port, registry.metrics_exporter.name,
                              registry.scrape.path))
        scraped.append(Scraped("mlops-registry", f"{registry.scrape_host}:{registry.scrape.port}",
                               labels, registry.scrape.path))
    for plan in () if on_k8s else retrain:
        scraped.append(Scraped("mlops-retrain", f"{plan.object_name}:{plan.scrape.port}",
                               {SCHEDULE_LABEL: plan.object_name}, plan.scrape.path))
    for service in services:
        for track in service.tracks:
            labels = {SERVICE_LABEL: service.name, TRACK_LABEL: track.track}
            pods.append(PodScrape(track.object_name, dict(track.selector), labels,
                                  service.scrape.port, METRICS_PORT_NAME, service.scrape.path))
            version = track.model.version or "unresolved"
            scraped.append(Scraped("mlops-service", f"{track.object_name}:{service.scrape.port}",
                                   {**labels, VERSION_LABEL: version},
                                   service.scrape.path))
    standalone = args.prometheus.mode == "standalone"
    if standalone and isinstance(args.target, KubernetesTarget):
        # Each pod set behind a headless Service of the stack's own, found by DNS: no API
        # access (and so no RBAC) for Prometheus.
        target = args.target
        scraped = [replace(s, address=f"{target.service_host(f'{name}-{p.name}')}:{p.port}",
                           dns=True) for s, p in zip(scraped, pods, strict=True)]
        if args.prometheus.kube_state_metrics is not None and retrain:
            # Only what the retrain rules read, not every object of the cluster.
            scraped.append(Scraped("kube-state-metrics", args.prometheus.kube_state_metrics,
                                   {}, keep="kube_(cronjob|job)_.+"))
    alertmanager = (alertmanager_workload(name, args.alertmanager)
                    if args.alertmanager is not None else None)
    alertmanagers = []
    if alertmanager is not None:
        assert alertmanager.port is not None
        host = (args.target.service_host(alertmanager.name)
                if isinstance(args.target, KubernetesTarget) else alertmanager.name)
        alertmanagers.append(f"{host}:{alertmanager.port}")
    boards = dashboards()
    grafana = None
    if standalone and args.grafana is not None:
        prometheus = f"{name}-prometheus"
        host = (args.target.service_host(prometheus)
                if isinstance(args.target, KubernetesTarget) else prometheus)
        grafana = grafana_workload(name, args.grafana,
                                   f"http://{host}:{args.prometheus.port}", boards)
    return MonitoringPlan(
        name=name, groups=groups, dashboards=boards, grafana=grafana,
        pods=tuple(pods) if on_k8s else (),
        release=None if standalone else args.prometheus.release,
        scraper_namespace=None if standalone else args.prometheus.namespace,
        prometheus=prometheus_workload(name, args.prometheus, scraped, groups, alertmanagers)
        if standalone else None,
        alertmanager=alertmanager,
        alertmanager_egress=(tuple(args.alertmanager.egress_ports)
                             if args.alertmanager is not None else ()),
        scraped=tuple(scraped) if standalone else (),
    )
