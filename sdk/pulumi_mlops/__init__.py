"""pulumi-mlops: Pulumi components that declare an MLOps environment as code.

Example:
    >>> import pulumi_mlops as mlops
    >>> target = mlops.KubernetesTarget(namespace="ml")
    >>> registry = mlops.ModelRegistry("registry", target=target)

Names load lazily, so the container runtime (``pulumi_mlops.runtime``, ``mlops serve``) runs
without Pulumi installed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulumi_mlops.components.image import RuntimeImage, RuntimeImageArgs
    from pulumi_mlops.components.registry import (
        Database,
        ModelRegistry,
        ModelRegistryArgs,
        Peer,
        Permission,
        RegistryIngress,
    )
    from pulumi_mlops.errors import ValidationError
    from pulumi_mlops.image_registry import ImageRegistry
    from pulumi_mlops.targets import DockerTarget, KubernetesTarget, Target
    from pulumi_mlops.workload import Resources

try:
    __version__ = version("pulumi-mlops")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "Database": "pulumi_mlops.components.registry",
    "DockerTarget": "pulumi_mlops.targets",
    "ImageRegistry": "pulumi_mlops.image_registry",
    "KubernetesTarget": "pulumi_mlops.targets",
    "ModelRegistry": "pulumi_mlops.components.registry",
    "ModelRegistryArgs": "pulumi_mlops.components.registry",
    "Peer": "pulumi_mlops.components.registry",
    "Permission": "pulumi_mlops.components.registry",
    "RegistryIngress": "pulumi_mlops.components.registry",
    "Resources": "pulumi_mlops.workload",
    "RuntimeImage": "pulumi_mlops.components.image",
    "RuntimeImageArgs": "pulumi_mlops.components.image",
    "Target": "pulumi_mlops.targets",
    "ValidationError": "pulumi_mlops.errors",
}

__all__ = [
    "Database",
    "DockerTarget",
    "ImageRegistry",
    "KubernetesTarget",
    "ModelRegistry",
    "ModelRegistryArgs",
    "Peer",
    "Permission",
    "RegistryIngress",
    "Resources",
    "RuntimeImage",
    "RuntimeImageArgs",
    "Target",
    "ValidationError",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pulumi_mlops' has no attribute {name!r}")
