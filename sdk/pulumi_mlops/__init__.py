"""pulumi-mlops: Pulumi components that declare an MLOps environment as code.

Example:
    >>> import pulumi_mlops as mlops
    >>> target = mlops.KubernetesTarget(namespace="ml")
    >>> registry = mlops.ModelRegistry("registry", target=target)
"""

from pulumi_mlops.components.registry import (
    Database,
    ModelRegistry,
    ModelRegistryArgs,
    Peer,
    Permission,
    RegistryIngress,
)
from pulumi_mlops.errors import ValidationError
from pulumi_mlops.targets import DockerTarget, KubernetesTarget, Target
from pulumi_mlops.workload import Resources

__all__ = [
    "Database",
    "DockerTarget",
    "KubernetesTarget",
    "ModelRegistry",
    "ModelRegistryArgs",
    "Peer",
    "Permission",
    "RegistryIngress",
    "Resources",
    "Target",
    "ValidationError",
]
