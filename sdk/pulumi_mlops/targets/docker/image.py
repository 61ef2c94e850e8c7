"""RuntimeImage: the image build (pulumi-docker's ``Image``), pushed to a registry or kept on
the engine that runs the target's containers."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.image import ImagePlan
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget

__all__ = ["materialize"]


def materialize(
    parent: pulumi.ComponentResource,
    plan: ImagePlan,
    target: KubernetesTarget | DockerTarget | None,
    registry_password: pulumi.Input[str] | None,
) -> docker.Image:
    """Declare the build under ``parent``; ``registry_password`` is the secret the push
    authenticates with (None for the engine's own credentials)."""
    # A DockerTarget builds on its own engine, where its containers will find the image.
    opts = (target.resource_options(parent) if isinstance(target, DockerTarget)
            else pulumi.ResourceOptions(parent=parent))
    registry: dict[str, Any] | None = None
    if plan.registry_server is not None:
        registry = {"server": plan.registry_server}
        if plan.registry_username is not None:
            registry["username"] = plan.registry_username
            registry["password"] = pulumi.Output.secret(registry_password)
    build: dict[str, Any] = {"context": plan.context, "dockerfile": plan.dockerfile}
    if plan.platform is not None:
        build["platform"] = plan.platform
    if plan.build_args:
        build["args"] = dict(plan.build_args)
    return docker.Image(
        f"{plan.name}-image",
        image_name=plan.image_name,
        build=build,
        registry=registry,
        skip_push=not plan.push,
        opts=opts,
    )
