"""Reference environment: one Pulumi stack per environment (dev, staging, prod).

The stack's config is read into one validated model (`EnvironmentConfig`) before anything is
declared, so a typo or a bad value fails the preview with the config key and the fix.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

import pulumi_mlops as mlops
from pulumi_mlops.config import load_config


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel,
                              populate_by_name=True, arbitrary_types_allowed=True)


class ResourcesConfig(_Config):
    """Requests and limits, as Kubernetes quantities (``cpuRequest``, ``memoryLimit`` …)."""

    cpu_request: str = "250m"
    memory_request: str = "512Mi"
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"


class RegistryConfig(_Config):
    """``mlops:registry``: the ModelRegistry of the environment."""

    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    port: int = 5000
    database: Literal["sqlite", "postgres", "external"] | None = None
    database_storage: str = "10Gi"
    artifacts_destination: str | None = None
    artifacts_storage: str = "20Gi"
    ingress_host: str | None = None
    ingress_tls_secret: str | None = None
    default_permission: mlops.Permission = mlops.Permission.READ
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)


class EnvironmentConfig(_Config):
    """The whole stack config (keys under the ``mlops:`` namespace)."""

    target: Literal["docker", "kubernetes"]
    namespace: str = "mlops"
    storage_class: str | None = None
    ingress_class: str | None = None
    publish_host: str = "127.0.0.1"
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    # Set with `pulumi config set --secret databaseUri ...` when registry.database is external.
    database_uri: object | None = None


def _target(cfg: EnvironmentConfig) -> mlops.Target:
    if cfg.target == "kubernetes":
        return mlops.KubernetesTarget(namespace=cfg.namespace, storage_class=cfg.storage_class,
                                      ingress_class=cfg.ingress_class)
    return mlops.DockerTarget(publish_host=cfg.publish_host)


def _database(cfg: EnvironmentConfig) -> mlops.Database | None:
    kind = cfg.registry.database
    if kind == "sqlite":
        return mlops.Database.sqlite()
    if kind == "postgres":
        return mlops.Database.postgres(storage_size=cfg.registry.database_storage)
    if kind == "external":
        if cfg.database_uri is None:
            raise mlops.ValidationError.single(
                f"stack {pulumi.get_stack()!r} config", "mlops:databaseUri",
                "is required when `mlops:registry.database` is external", None,
                "run `pulumi config set --secret databaseUri postgresql://...`.",
            )
        return mlops.Database.external(cfg.database_uri)  # type: ignore[arg-type]
    return None


cfg = load_config(EnvironmentConfig)
target = _target(cfg)
reg = cfg.registry
registry = mlops.ModelRegistry(
    "registry",
    target=target,
    replicas=reg.replicas,
    port=reg.port,
    database=_database(cfg),
    artifacts_destination=reg.artifacts_destination,
    artifacts_storage_size=reg.artifacts_storage,
    default_permission=reg.default_permission,
    ingress=mlops.RegistryIngress(host=reg.ingress_host, tls_secret_name=reg.ingress_tls_secret)
    if reg.ingress_host else None,
    resources=mlops.Resources(**reg.resources.model_dump()),
)

pulumi.export("tracking_uri", registry.tracking_uri)
pulumi.export("registry_admin_username", registry.admin_username)
pulumi.export("registry_admin_password", registry.admin_password)
