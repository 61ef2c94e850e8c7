"""ModelService on Docker: one container on the registry's network (or its own), its port
published on the target's ``publish_host``. Docker runs one track: rolling updates only."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.service import ServicePlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import (
    DockerWorkload,
    client_network,
    materialize_workload,
)

__all__ = ["DockerService", "materialize"]


@dataclass(frozen=True)
class DockerService:
    """The service's Docker objects.

    Attributes:
        network: Its own network, when the registry is not a component on this engine.
        server: The ``mlops serve`` container, its image and scratch space.
    """

    network: docker.Network | None
    server: DockerWorkload


def materialize(
    parent: pulumi.ComponentResource,
    plan: ServicePlan,
    target: DockerTarget,
    secret_data: pulumi.Output[dict[str, str]],
    network: docker.Network | None,
    after: tuple[pulumi.Resource, ...],
) -> DockerService:
    """Declare the service's container on ``network`` (the registry's; its own when None)
    under ``parent``, started after ``after`` (the registry's container)."""
    joined, own, opts = client_network(parent, target, plan.name, plan.labels, network, after)
    (track,) = plan.tracks
    server = materialize_workload(
        track.object_name, track.workload, target=target, network=joined,
        aliases=[plan.name], labels=track.labels, secret_data=secret_data, opts=opts,
        publish=True, wait=plan.wait_ready,
    )
    return DockerService(own, server)
