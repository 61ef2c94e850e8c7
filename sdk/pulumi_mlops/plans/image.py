"""RuntimeImage: build the runtime image (``mlops serve``, ``mlops retrain``) and push it.

The repository's Dockerfile builds the image; this component declares that build with
pulumi-docker and pushes the result to an image registry, taken from the target
(``image_registry``) or given explicitly. Components that run the runtime take ``image=``:
this component's `image_ref` (digest-pinned), or a prebuilt image pinned by tag or digest.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pulumi
from pydantic import Field, field_validator

from pulumi_mlops._validation import ArgsModel
from pulumi_mlops.contracts.version import __version__
from pulumi_mlops.errors import InputError, Problem
from pulumi_mlops.plans.image_registry import IMAGE_PATH, ImageRegistry
from pulumi_mlops.plans.registry import check_pinned_image
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget

__all__ = [
    "DEFAULT_RUNTIME_REPOSITORY",
    "ImagePlan",
    "RuntimeImageArgs",
    "check_runtime_image",
    "plan_runtime_image",
    "require_runtime_image",
]

DEFAULT_RUNTIME_REPOSITORY = "mlops-runtime"
# OCI tag grammar.
_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
# os/arch[/variant], e.g. linux/amd64, linux/arm64/v8.
_PLATFORM = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"
_BUILD_ARG = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _version_tag(version: str) -> str:
    # PEP 440 local versions ('0.1.0+g1234') carry '+', which tags do not allow.
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)


class RuntimeImageArgs(ArgsModel):
    """Inputs of `RuntimeImage`.

    Attributes:
        context: Build context: the directory holding the pulumi-mlops sources (the
            repository root), relative to the program's working directory or absolute.
        target: Where the image is used. Its ``image_registry`` is where the image is
            pushed; a `DockerTarget` also builds on its own Docker engine. Default: none
            (then ``registry`` is required, and the ambient Docker provider builds).
        registry: Registry to push to. Default: the target's ``image_registry``; without
            either, the image stays on the `DockerTarget`'s engine (a `KubernetesTarget`
            needs a registry, since its nodes pull from one).
        repository: Image repository under the registry (and its namespace).
            Default: ``mlops-runtime``.
        tag: Image tag; consumers use the pushed digest, the tag is for people.
            Default: the pulumi-mlops version.
        dockerfile: Path of the Dockerfile, relative to ``context``. Default: ``Dockerfile``.
        platform: Platform to build for, e.g. ``linux/amd64`` when the cluster's nodes differ
            from the machine running Pulumi. Default: the Docker engine's own.
        build_args: Extra ``--build-arg`` values (e.g. ``REVISION``). Default: none.
    """

    context: Annotated[str, Field(min_length=1)]
    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")] | None = None
    registry: ImageRegistry | None = None
    repository: Annotated[str, Field(pattern=IMAGE_PATH, max_length=200)] = (
        DEFAULT_RUNTIME_REPOSITORY
    )
    tag: Annotated[str, Field(pattern=_TAG)] = Field(
        default_factory=lambda: _version_tag(__version__)
    )
    dockerfile: Annotated[str, Field(min_length=1)] = "Dockerfile"
    platform: Annotated[str, Field(pattern=_PLATFORM)] | None = None
    build_args: dict[str, str] = Field(default_factory=dict)

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        if not Path(value).is_dir():
            raise InputError(
                f"must be an existing directory (relative to {Path.cwd()})",
                "pass the directory holding the pulumi-mlops sources and its Dockerfile, "
                "e.g. the repository root.",
            )
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if value == "latest":
            raise InputError("must not be 'latest'",
                             "use a version tag, e.g. '0.1.0' or a commit hash.")
        return value

    @field_validator("build_args")
    @classmethod
    def _build_args(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not re.match(_BUILD_ARG, k))
        if bad:
            raise InputError(
                f"must have build-arg names as keys (letters, digits and '_'), not {bad}",
                "rename the keys to match the Dockerfile's ARG names, e.g. 'REVISION'.",
            )
        return value

    def effective_registry(self) -> ImageRegistry | None:
        """The registry the image is pushed to: the given one, else the target's."""
        if self.registry is not None:
            return self.registry
        return self.target.image_registry if self.target is not None else None

    def problems(self) -> list[Problem]:
        """Rules that span several inputs."""
        found: list[Problem] = []
        registry = self.effective_registry()
        if registry is None and self.target is None:
            found.append(Problem(
                "registry", "is required without a target", None,
                "pass `registry=ImageRegistry(server=...)`, or a `target` (a DockerTarget "
                "keeps the image on its engine).", related=("target",)))
        elif registry is None and isinstance(self.target, KubernetesTarget):
            found.append(Problem(
                "registry", "is required on the Kubernetes target (nodes pull images from a "
                "registry)", None,
                "set `target.image_registry` (the KubernetesTarget's), or pass `registry=`.",
                related=("target.image_registry",)))
        dockerfile = Path(self.context, self.dockerfile)
        if not dockerfile.is_file():
            found.append(Problem(
                "dockerfile", f"must name an existing file ({dockerfile} does not exist)",
                self.dockerfile,
                "point `context` at the pulumi-mlops sources, or `dockerfile` at the "
                "Dockerfile (relative to `context`).", related=("context",)))
        return found


def require_runtime_image(data: Any) -> Any:
    """A ``model_validator(mode="before")`` of components that run the runtime: ``image`` must
    be given, since the project publishes no image that could be implied."""
    if isinstance(data, dict) and data.get("image") is None:
        raise InputError(
            "is required: the project publishes no runtime image",
            "pass `image=RuntimeImage(\"runtime\", context=\"...\", target=...).image_ref` "
            "(built from the pulumi-mlops Dockerfile), or an image you built, pinned by tag or "
            "digest.", field="image")
    return data


def check_runtime_image(image: Any) -> Any:
    """Validate an ``image=`` input of a component that runs the runtime.

    An Output (e.g. `RuntimeImage.image_ref`) is taken as is; a string must be pinned to a
    version tag or a digest.
    """
    if isinstance(image, pulumi.Output):
        return image
    if not isinstance(image, str):
        raise InputError("must be an image reference or a Pulumi output",
                         "pass `RuntimeImage(...).image_ref` or 'repo/image@sha256:...'.")
    check_pinned_image(image)
    return image


@dataclass(frozen=True)
class ImagePlan:
    """What the image build declares, decided before any resource.

    Attributes:
        name: Component name; the build is ``<name>-image``.
        image_name: Name the image is tagged with: ``<server>/<namespace>/<repository>:<tag>``
            when pushed, ``<repository>:<tag>`` when it stays on the engine.
        context: Build context, as given.
        dockerfile: Dockerfile path as pulumi-docker reads it (relative to the program's
            working directory, like ``context``).
        platform: Target platform, or None for the engine's.
        push: Whether the image is pushed to a registry.
        registry_server: Host of that registry (None when not pushed).
        registry_username: User pushing to it; None for the engine's own credentials.
        build_args: ``--build-arg`` values.
    """

    name: str
    image_name: str
    context: str
    dockerfile: str
    platform: str | None
    push: bool
    registry_server: str | None
    registry_username: str | None
    build_args: Mapping[str, str] = field(default_factory=dict)


def plan_runtime_image(name: str, args: RuntimeImageArgs) -> ImagePlan:
    """Name, build inputs and push decision of the runtime image: a pure function."""
    registry = args.effective_registry()
    repository = registry.repository(args.repository) if registry else args.repository
    return ImagePlan(
        name=name,
        image_name=f"{repository}:{args.tag}",
        context=args.context,
        # pulumi-docker resolves the Dockerfile against the working directory, not the context.
        dockerfile=posixpath.normpath(posixpath.join(args.context, args.dockerfile)),
        platform=args.platform,
        push=registry is not None,
        registry_server=registry.server if registry else None,
        registry_username=registry.username if registry else None,
        build_args=dict(args.build_args),
    )
