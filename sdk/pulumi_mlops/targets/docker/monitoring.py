"""MonitoringStack on Docker: a standalone Prometheus container on the services' network,
hardened like the others (its config and rule files written by the init container), its port
published on the target's ``publish_host``."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.monitoring import SCRAPE_PASSWORD
from pulumi_mlops.plans.monitoring_stack import MonitoringPlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import DockerWorkload, materialize_workload

__all__ = ["DockerMonitoring", "materialize"]


@dataclass(frozen=True)
class DockerMonitoring:
    """The monitoring containers.

    Attributes:
        prometheus: The Prometheus container, its image, volumes and init container.
    """

    prometheus: DockerWorkload


def materialize(parent: pulumi.ComponentResource, plan: MonitoringPlan, target: DockerTarget,
                network: docker.Network, after: tuple[pulumi.Resource, ...],
                registry_password: pulumi.Output[str | None]) -> DockerMonitoring:
    """Declare Prometheus on ``network`` under ``parent``, started after ``after``, with the
    registry's admin password when it scrapes the registry."""
    workload = plan.prometheus
    assert workload is not None
    opts = pulumi.ResourceOptions.merge(target.resource_options(parent),
                                        pulumi.ResourceOptions(depends_on=list(after)))
    labels = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": plan.name,
              "app.kubernetes.io/part-of": "pulumi-mlops", "app.kubernetes.io/managed-by": "pulumi"}
    prometheus = materialize_workload(
        workload.name, workload, target=target, network=network, aliases=[workload.name],
        labels=labels, secret_data=pulumi.Output.secret(registry_password.apply(
            lambda p: {} if p is None else {SCRAPE_PASSWORD: p})), opts=opts, publish=True)
    return DockerMonitoring(prometheus)
