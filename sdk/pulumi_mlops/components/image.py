"""RuntimeImage: build the runtime image (``mlops serve``, ``mlops retrain``) and push it.

The inputs and `plan_runtime_image` are in `pulumi_mlops.plans.image`, the build (pulumi-docker)
in `pulumi_mlops.targets.docker.image`; the image is pushed to an image registry, taken from the
target (``image_registry``) or given explicitly, or kept on a DockerTarget's engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from pulumi_mlops.components._base import Component
from pulumi_mlops.plans.image import ImagePlan, RuntimeImageArgs, plan_runtime_image
from pulumi_mlops.targets.docker import image as docker_image

__all__ = ["RuntimeImage"]


class RuntimeImage(Component[RuntimeImageArgs, ImagePlan]):
    """The runtime image, built from the repository's Dockerfile and pushed to a registry.

    The image holds ``mlops serve`` (and ``mlops retrain``) with the pinned requirements the
    tests run with, no Pulumi, and runs as a non-root user. Pass `image_ref` to components
    as ``image=``: after a push it is the immutable ``repository@sha256:...`` reference, so a
    rebuilt image rolls out as a diff.

    Example:
        >>> registry = mlops.ImageRegistry(server="registry.example.com", namespace="ml")
        >>> target = mlops.KubernetesTarget(namespace="ml", image_registry=registry)
        >>> runtime = mlops.RuntimeImage("runtime", context="..", target=target)
        >>> pulumi.export("runtime_image", runtime.image_ref)
    """

    kind = "RuntimeImage"
    args_type = RuntimeImageArgs

    image_ref: pulumi.Output[str]
    """What components run: ``<repository>@sha256:...`` once pushed; the local image ID when
    the image stays on a DockerTarget's engine."""
    image_name: pulumi.Output[str]
    """The tagged name, ``<server>/<namespace>/<repository>:<tag>``."""
    image: pulumi.Resource
    """The pulumi-docker ``Image`` that builds (and pushes) it."""

    def __init__(
        self,
        name: str,
        args: RuntimeImageArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        """Declare the image build.

        Args:
            name: Component name; also the prefix of its child's name (a DNS label).
            args: The inputs as one object; or pass them as keyword arguments.
            opts: Pulumi resource options.
            **kwargs: The fields of `RuntimeImageArgs`.
        """
        super().__init__(name, args, opts, kwargs)

    def _plan(self, name: str, args: RuntimeImageArgs) -> ImagePlan:
        return plan_runtime_image(name, args)

    def _declare(self, name: str, args: RuntimeImageArgs,
                 plan: ImagePlan) -> Mapping[str, Any]:
        registry = args.effective_registry()
        password = registry.password if registry is not None else None
        self.image = image = docker_image.materialize(self, plan, args.target, password)
        self.image_name = image.image_name
        # The engine reports a digest after a push (the image ID for a local build); without
        # one (mock runs) the tagged name stands in.
        self.image_ref = pulumi.Output.all(image.repo_digest, image.image_name).apply(
            lambda v: str(v[0] or v[1]))
        return {"image_ref": self.image_ref, "image_name": self.image_name}
