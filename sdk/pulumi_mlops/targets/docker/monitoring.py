"""MonitoringStack on Docker: a standalone Prometheus container on the services' network, and
optionally an Alertmanager and Grafana, hardened like the others (their config and rule files
written by the init container), their ports published on the target's ``publish_host``."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.monitoring_stack import MonitoringPlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import DockerWorkload, materialize_workload

__all__ = ["DockerMonitoring", "materialize"]


@dataclass(frozen=True)
class DockerMonitoring:
    """The monitoring containers.

    Attributes:
        prometheus: The Prometheus container, its image, volumes and init container.
        alertmanager: The Alertmanager's, when the stack routes alerts.
        grafana: Grafana's, when the stack has one.
    """

    prometheus: DockerWorkload
    alertmanager: DockerWorkload | None
    grafana: DockerWorkload | None


def materialize(parent: pulumi.ComponentResource, plan: MonitoringPlan, target: DockerTarget,
                network: docker.Network, after: tuple[pulumi.Resource, ...],
                alertmanager_data: pulumi.Output[dict[str, str]],
                grafana_data: pulumi.Output[dict[str, str]]) -> DockerMonitoring:
    """Declare Prometheus (and the Alertmanager and Grafana, with their secret data) on
    ``network`` under ``parent``, started after ``after``."""
    workload = plan.prometheus
    assert workload is not None
    opts = pulumi.ResourceOptions.merge(target.resource_options(parent),
                                        pulumi.ResourceOptions(depends_on=list(after)))

    def labels(name: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": plan.name,
                "app.kubernetes.io/part-of": "pulumi-mlops",
                "app.kubernetes.io/managed-by": "pulumi"}

    alertmanager = None
    if plan.alertmanager is not None:
        alertmanager = materialize_workload(
            plan.alertmanager.name, plan.alertmanager, target=target, network=network,
            aliases=[plan.alertmanager.name], labels=labels("alertmanager"),
            secret_data=alertmanager_data, opts=opts, publish=True)
    grafana = None
    if plan.grafana is not None:
        grafana = materialize_workload(
            plan.grafana.name, plan.grafana, target=target, network=network,
            aliases=[plan.grafana.name], labels=labels("grafana"), secret_data=grafana_data,
            opts=opts, publish=True)
    prometheus = materialize_workload(
        workload.name, workload, target=target, network=network, aliases=[workload.name],
        labels=labels("prometheus"), secret_data=pulumi.Output.from_input({}), opts=opts,
        publish=True)
    return DockerMonitoring(prometheus, alertmanager, grafana)
