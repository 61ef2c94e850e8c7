"""RetrainSchedule on Docker: a long-lived scheduler container (``mlops schedule``) that runs
the retrain job at every slot, on the registry's network (or its own); it publishes no port."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.retrain import RetrainPlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import (
    DockerWorkload,
    client_network,
    materialize_workload,
)

__all__ = ["DockerRetrain", "materialize"]


@dataclass(frozen=True)
class DockerRetrain:
    """The schedule's Docker objects.

    Attributes:
        network: Its own network, when the registry is not a component on this engine.
        scheduler: The scheduler container, its image, config volume and init.
    """

    network: docker.Network | None
    scheduler: DockerWorkload


def materialize(
    parent: pulumi.ComponentResource,
    plan: RetrainPlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
    network: docker.Network | None,
    after: tuple[pulumi.Resource, ...],
) -> DockerRetrain:
    """Declare the scheduler container on ``network`` (the registry's; its own when None)
    under ``parent``, started after ``after`` (the registry's container)."""
    joined, own, opts = client_network(parent, target, plan.object_name, plan.labels, network,
                                       after)
    scheduler = materialize_workload(
        plan.object_name, plan.scheduler, target=target, network=joined,
        aliases=[plan.object_name], labels=plan.labels, secret_data=secret_data, opts=opts,
        publish=False,
    )
    return DockerRetrain(own, scheduler)
