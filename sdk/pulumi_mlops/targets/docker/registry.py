"""ModelRegistry on Docker: a network, the MLflow server's container (port published on the
target's ``publish_host``) and the PostgreSQL container it may run."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.registry import RegistryPlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import (
    DockerWorkload,
    labels_list,
    materialize_workload,
)

__all__ = ["DockerRegistry", "materialize"]


@dataclass(frozen=True)
class DockerRegistry:
    """The registry's Docker objects.

    Attributes:
        network: The network its clients join (containers resolve each other by name).
        server: The MLflow server's image, volumes, init and container.
        database: The PostgreSQL's, if the registry runs one.
    """

    network: docker.Network
    server: DockerWorkload
    database: DockerWorkload | None


def materialize(
    parent: pulumi.ComponentResource,
    plan: RegistryPlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> DockerRegistry:
    """Declare the registry's network, volumes and containers under ``parent``."""
    opts = target.resource_options(parent)
    network = docker.Network(f"{plan.name}-net", name=f"{plan.name}-net",
                             labels=labels_list(plan.labels), opts=opts)
    database = None
    if plan.database is not None:
        database = materialize_workload(
            plan.database_name, plan.database, target=target, network=network,
            aliases=[plan.database_name], labels=plan.labels, secret_data=secret_data,
            opts=opts, publish=False,
        )
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[database.container]))
    server = materialize_workload(
        plan.server_name, plan.server, target=target, network=network,
        aliases=[plan.server_name], labels=plan.labels, secret_data=secret_data, opts=opts,
        publish=True,
    )
    return DockerRegistry(network, server, database)
