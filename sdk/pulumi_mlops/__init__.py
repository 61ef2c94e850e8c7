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
    from pulumi_mlops.components.image import RuntimeImage
    from pulumi_mlops.components.monitoring import MonitoringStack
    from pulumi_mlops.components.registry import ModelRegistry, RegistryGrant
    from pulumi_mlops.components.resolver import registry_resolver
    from pulumi_mlops.components.retrain import RetrainSchedule
    from pulumi_mlops.components.service import ModelService
    from pulumi_mlops.errors import ValidationError
    from pulumi_mlops.plans.alerting import Alertmanager, Receiver
    from pulumi_mlops.plans.grafana import Grafana
    from pulumi_mlops.plans.image import RuntimeImageArgs
    from pulumi_mlops.plans.image_registry import ImageRegistry
    from pulumi_mlops.plans.monitoring import DriftAlerts, Prometheus, Quality, Slo
    from pulumi_mlops.plans.monitoring_stack import MonitoringStackArgs
    from pulumi_mlops.plans.registry import (
        Database,
        ModelRegistryArgs,
        Peer,
        Permission,
        RegistryIngress,
    )
    from pulumi_mlops.plans.registry_ref import RegistryEndpoint
    from pulumi_mlops.plans.retrain import Gates, RetrainScheduleArgs
    from pulumi_mlops.plans.service import Autoscaling, Coercion, ModelServiceArgs, Rollout
    from pulumi_mlops.plans.target import DockerTarget, GatewayRef, KubernetesTarget, Target
    from pulumi_mlops.plans.workload import Resources


_EXPORTS = {
    "Alertmanager": "pulumi_mlops.plans.alerting",
    "Autoscaling": "pulumi_mlops.plans.service",
    "Database": "pulumi_mlops.plans.registry",
    "DockerTarget": "pulumi_mlops.plans.target",
    "DriftAlerts": "pulumi_mlops.plans.monitoring",
    "Gates": "pulumi_mlops.plans.retrain",
    "GatewayRef": "pulumi_mlops.plans.target",
    "Grafana": "pulumi_mlops.plans.grafana",
    "ImageRegistry": "pulumi_mlops.plans.image_registry",
    "KubernetesTarget": "pulumi_mlops.plans.target",
    "Coercion": "pulumi_mlops.plans.service",
    "ModelRegistry": "pulumi_mlops.components.registry",
    "ModelRegistryArgs": "pulumi_mlops.plans.registry",
    "ModelService": "pulumi_mlops.components.service",
    "ModelServiceArgs": "pulumi_mlops.plans.service",
    "MonitoringStack": "pulumi_mlops.components.monitoring",
    "MonitoringStackArgs": "pulumi_mlops.plans.monitoring_stack",
    "Peer": "pulumi_mlops.plans.registry",
    "Permission": "pulumi_mlops.plans.registry",
    "Prometheus": "pulumi_mlops.plans.monitoring",
    "Quality": "pulumi_mlops.plans.monitoring",
    "Receiver": "pulumi_mlops.plans.alerting",
    "RegistryEndpoint": "pulumi_mlops.plans.registry_ref",
    "RegistryGrant": "pulumi_mlops.components.registry",
    "RegistryIngress": "pulumi_mlops.plans.registry",
    "Resources": "pulumi_mlops.plans.workload",
    "RetrainSchedule": "pulumi_mlops.components.retrain",
    "RetrainScheduleArgs": "pulumi_mlops.plans.retrain",
    "Rollout": "pulumi_mlops.plans.service",
    "RuntimeImage": "pulumi_mlops.components.image",
    "RuntimeImageArgs": "pulumi_mlops.plans.image",
    "Slo": "pulumi_mlops.plans.monitoring",
    "Target": "pulumi_mlops.plans.target",
    "ValidationError": "pulumi_mlops.errors",
    "registry_resolver": "pulumi_mlops.components.resolver",
}

__all__ = [
    "Alertmanager",
    "Autoscaling",
    "Coercion",
    "Database",
    "DockerTarget",
    "DriftAlerts",
    "Gates",
    "GatewayRef",
    "Grafana",
    "ImageRegistry",
    "KubernetesTarget",
    "ModelRegistry",
    "ModelRegistryArgs",
    "ModelService",
    "ModelServiceArgs",
    "MonitoringStack",
    "MonitoringStackArgs",
    "Peer",
    "Permission",
    "Prometheus",
    "Quality",
    "Receiver",
    "RegistryEndpoint",
    "RegistryGrant",
    "RegistryIngress",
    "Resources",
    "RetrainSchedule",
    "RetrainScheduleArgs",
    "Rollout",
    "RuntimeImage",
    "RuntimeImageArgs",
    "Slo",
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
