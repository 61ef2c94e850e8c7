"""MonitoringStack: Prometheus rules, scraping and Grafana dashboards for model services.

The inputs and `plan_monitoring` are in `pulumi_mlops.plans.monitoring_stack`; the rules and
PromQL in `pulumi_mlops.plans.monitoring`; the dashboards in `pulumi_mlops.plans.dashboards`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_random as random

from pulumi_mlops.components._base import Component
from pulumi_mlops.plans.alerting import (
    ALERTMANAGER_CONFIG_KEY,
    Alertmanager,
    alertmanager_config,
    secret_fields,
)
from pulumi_mlops.plans.grafana import GRAFANA_ADMIN_PASSWORD
from pulumi_mlops.plans.monitoring_stack import (
    MonitoringPlan,
    MonitoringStackArgs,
    plan_monitoring,
)
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.docker import monitoring as docker_monitoring
from pulumi_mlops.targets.kubernetes import monitoring as kubernetes_monitoring

__all__ = ["MonitoringStack"]


def _alertmanager_data(alerting: Alertmanager | None) -> pulumi.Output[dict[str, str]]:
    """The Alertmanager's secret data: its configuration, rendered once the receivers' secret
    values are known."""
    if alerting is None:
        return pulumi.Output.from_input({})
    fields = secret_fields(alerting)
    values: pulumi.Output[dict[str, Any]] = (
        pulumi.Output.all(**fields) if fields else pulumi.Output.from_input({}))
    return pulumi.Output.secret(values.apply(
        lambda known: {ALERTMANAGER_CONFIG_KEY: alertmanager_config(
            alerting, {k: str(v) for k, v in known.items()})}))


class MonitoringStack(Component[MonitoringStackArgs, MonitoringPlan]):
    """Rules, alerts, scraping and dashboards for model services.

    Example:
        >>> mon = mlops.MonitoringStack("monitoring", target=k8s, services=[fraud],
        ...                             slos=mlops.Slo(availability=0.999, latency_p99_ms=50),
        ...                             prometheus=mlops.Prometheus.operator("kps"))
    """

    kind = "MonitoringStack"
    args_type = MonitoringStackArgs

    prometheus_url: pulumi.Output[str | None]
    """Prometheus inside the cluster or Docker network (standalone); None in operator mode
    (the cluster's own Prometheus evaluates the rules)."""
    external_prometheus_url: pulumi.Output[str | None]
    """Prometheus from the Docker host (its published port); None on Kubernetes (reach it
    with ``kubectl port-forward``)."""
    grafana_url: pulumi.Output[str | None]
    """Grafana inside the cluster or Docker network, when the stack has one."""
    external_grafana_url: pulumi.Output[str | None]
    """Grafana from the Docker host (its published port); None on Kubernetes."""
    grafana_admin_password: pulumi.Output[str | None]
    """The Grafana admin's password (a secret): given, or generated."""
    rule_groups: pulumi.Output[list[dict[str, Any]]]
    """The generated rule groups (Prometheus' rule-file format)."""
    dashboards: pulumi.Output[dict[str, dict[str, Any]]]
    """The Grafana dashboards' JSON documents, by uid."""
    watched_services: pulumi.Output[list[str]]
    """The names of the ModelServices it watches, sorted. Registered as an output so that
    policies, which see components only through their outputs, can tell which services are
    monitored (``services-monitored``, docs/policy.md)."""
    children: kubernetes_monitoring.KubernetesMonitoring | docker_monitoring.DockerMonitoring
    """What the component declared on its target."""

    def __init__(
        self,
        name: str,
        args: MonitoringStackArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        """Declare the monitoring of ``services``.

        Args:
            name: Component name; also the prefix of every child's name (a DNS label).
            args: The inputs as one object; or pass them as keyword arguments.
            opts: Pulumi resource options.
            **kwargs: The fields of `MonitoringStackArgs`.
        """
        super().__init__(name, args, opts, kwargs)

    def _plan(self, name: str, args: MonitoringStackArgs) -> MonitoringPlan:
        return plan_monitoring(name, args, [service.plan for service in args.services],
                               args.registry.plan if args.registry is not None else None,
                               [schedule.plan for schedule in args.retrain])

    def _declare(self, name: str, args: MonitoringStackArgs,
                 plan: MonitoringPlan) -> Mapping[str, Any]:
        url: str | None = None
        external: str | None = None
        alerting = _alertmanager_data(args.alertmanager)
        grafana_password: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        if args.grafana is not None:
            grafana_password = pulumi.Output.secret(
                args.grafana.admin_password if args.grafana.admin_password is not None
                else random.RandomPassword(f"{name}-grafana-admin-password", length=24,
                                           special=False, opts=self._child).result)
        grafana_data = grafana_password.apply(
            lambda p: {} if p is None else {GRAFANA_ADMIN_PASSWORD: p})
        grafana_url: str | None = None
        external_grafana: str | None = None
        if isinstance(args.target, KubernetesTarget):
            self.children = kubernetes_monitoring.materialize(
                self, plan, args.target, alerting, grafana_data)
            if plan.prometheus is not None:
                url = (f"http://{args.target.service_host(plan.prometheus.name)}:"
                       f"{args.prometheus.port}")
            if plan.grafana is not None:
                grafana_url = (f"http://{args.target.service_host(plan.grafana.name)}:"
                               f"{plan.grafana.port}")
        else:
            first = args.services[0]
            network = first.children.network or first.args.registry.access_network()
            self.children = docker_monitoring.materialize(
                self, plan, args.target, network,
                tuple(s.deployment for s in args.services), alerting, grafana_data)
            assert plan.prometheus is not None
            port = args.prometheus.port
            url = f"http://{plan.prometheus.name}:{port}"
            external = f"http://{args.target.publish_host}:{port}"
            if plan.grafana is not None:
                grafana_url = f"http://{plan.grafana.name}:{plan.grafana.port}"
                external_grafana = f"http://{args.target.publish_host}:{plan.grafana.port}"
        self.prometheus_url = pulumi.Output.from_input(url)
        self.external_prometheus_url = pulumi.Output.from_input(external)
        self.grafana_url = pulumi.Output.from_input(grafana_url)
        self.external_grafana_url = pulumi.Output.from_input(external_grafana)
        self.grafana_admin_password = grafana_password
        self.rule_groups = pulumi.Output.from_input([dict(g) for g in plan.groups])
        self.dashboards = pulumi.Output.from_input(dict(plan.dashboards))
        self.watched_services = pulumi.Output.from_input(
            sorted(service.component_name for service in args.services))
        return {"prometheus_url": self.prometheus_url,
                "external_prometheus_url": self.external_prometheus_url,
                "grafana_url": self.grafana_url,
                "external_grafana_url": self.external_grafana_url,
                "grafana_admin_password": self.grafana_admin_password,
                "rule_groups": self.rule_groups, "dashboards": self.dashboards,
                "watched_services": self.watched_services}
