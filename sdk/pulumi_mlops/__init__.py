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
from typing import TYPE_CHECKING, Any

from pulumi_mlops.contracts.version import __version__ as __version__

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
    from pulumi_mlops.components.resolver import registry_resolver
    from pulumi_mlops.components.retrain import RetrainSchedule, RetrainScheduleArgs
    from pulumi_mlops.components.service import (
        Autoscaling,
        Coercion,
        ModelService,
        ModelServiceArgs,
        RegistryEndpoint,
        Rollout,
    )
    from pulumi_mlops.errors import ValidationError
    from pulumi_mlops.image_registry import ImageRegistry
    from pulumi_mlops.runtime.retrain.config import Gates
    from pulumi_mlops.targets import DockerTarget, GatewayRef, KubernetesTarget, Target
    from pulumi_mlops.workload import Resources


_EXPORTS = {
    "Autoscaling": "pulumi_mlops.components.service",
    "Database": "pulumi_mlops.components.registry",
    "DockerTarget": "pulumi_mlops.targets",
    "Gates": "pulumi_mlops.runtime.retrain.config",
    "GatewayRef": "pulumi_mlops.targets",
    "ImageRegistry": "pulumi_mlops.image_registry",
    "KubernetesTarget": "pulumi_mlops.targets",
    "Coercion": "pulumi_mlops.components.service",
    "ModelRegistry": "pulumi_mlops.components.registry",
    "ModelRegistryArgs": "pulumi_mlops.components.registry",
    "ModelService": "pulumi_mlops.components.service",
    "ModelServiceArgs": "pulumi_mlops.components.service",
    "Peer": "pulumi_mlops.components.registry",
    "Permission": "pulumi_mlops.components.registry",
    "RegistryEndpoint": "pulumi_mlops.components.service",
    "RegistryIngress": "pulumi_mlops.components.registry",
    "Resources": "pulumi_mlops.workload",
    "RetrainSchedule": "pulumi_mlops.components.retrain",
    "RetrainScheduleArgs": "pulumi_mlops.components.retrain",
    "Rollout": "pulumi_mlops.components.service",
    "RuntimeImage": "pulumi_mlops.components.image",
    "RuntimeImageArgs": "pulumi_mlops.components.image",
    "Target": "pulumi_mlops.targets",
    "ValidationError": "pulumi_mlops.errors",
    "registry_resolver": "pulumi_mlops.components.resolver",
}

__all__ = [
    "Autoscaling",
    "Coercion",
    "Database",
    "DockerTarget",
    "Gates",
    "GatewayRef",
    "ImageRegistry",
    "KubernetesTarget",
    "ModelRegistry",
    "ModelRegistryArgs",
    "ModelService",
    "ModelServiceArgs",
    "Peer",
    "Permission",
    "RegistryEndpoint",
    "RegistryIngress",
    "Resources",
    "RetrainSchedule",
    "RetrainScheduleArgs",
    "Rollout",
    "RuntimeImage",
    "RuntimeImageArgs",
    "Target",
    "ValidationError",
    "registry_resolver",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pulumi_mlops' has no attribute {name!r}")
