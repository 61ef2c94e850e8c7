"""Reference environment: one Pulumi stack per environment (dev, staging, prod).

The stack config has a few keys of its own (the target, `databaseUri`, how services and retrain
schedules are named) and passes every other entry to a component as it is: ``mlops:registry``
to `ModelRegistry`, each ``mlops:services.<name>`` to a `ModelService`, each
``mlops:retrain.<name>`` to a `RetrainSchedule`, written as their args are, with camelCase keys
(`pulumi_mlops.config.ConfigInputs`). So a typo or a bad value fails the preview before
anything is declared, and every error, also a rule the component checks itself, names the
config key the value came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

import pulumi_mlops as mlops
from pulumi_mlops.config import ConfigInputs, load_config
from pulumi_mlops.errors import InputError

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The keys of each target, besides `mlops:target` itself (the others are left alone).
_TARGET_KEYS = {"kubernetes": ("namespace", "storage_class", "ingress_class", "gateway",
                               "image_registry"),
                "docker": ("publish_host",)}
WHERE = f"stack {pulumi.get_stack()!r} config"


class TeamAccess(BaseModel):
    """What a team's stack may do in the registry (``mlops:teams.<team>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel,
                              populate_by_name=True)

    models: list[str]
    experiments: list[str] = Field(default_factory=list)


class EnvironmentConfig(BaseModel):
    """The whole stack config (keys under the ``mlops:`` namespace)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel,
                              populate_by_name=True)

    target: Literal["docker", "kubernetes"]
    # The target's inputs (`KubernetesTarget`, `DockerTarget`); unset, the target's defaults.
    namespace: str | None = None
    storage_class: str | None = None
    ingress_class: str | None = None
    publish_host: str | None = None
    gateway: dict[str, Any] | None = None
    # Where RuntimeImage pushes the runtime image it builds (Kubernetes; `ImageRegistry`).
    image_registry: dict[str, Any] | None = None
    # A prebuilt runtime image instead of building one from the repository's Dockerfile.
    image: str | None = None
    # Refuse `image` unless pinned by digest (what a production stack wants).
    require_image_digest: bool = False
    # The components' inputs, each entry as its args model takes it.
    registry: dict[str, Any] = Field(default_factory=dict)
    services: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retrain: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # MonitoringStack's inputs (it watches every service, the registry and every retrain
    # schedule); unset, no monitoring.
    monitoring: dict[str, Any] | None = None
    # Teams whose own stacks use this registry: each gets a registry user of its own that
    # writes its models (`ModelRegistry.grant_write`), exported as `team_registry_usernames`
    # and `team_registry_passwords` (a secret).
    teams: dict[str, TeamAccess] = Field(default_factory=dict)
    # Set with `pulumi config set --secret databaseUri ...` when registry.database is external.
    database_uri: object | None = None

    @field_validator("services", "retrain", "teams")
    @classmethod
    def _component_names(cls, entries: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        example = "fraud-nightly" if info.field_name == "retrain" else "fraud"
        for name in entries:
            # The name prefixes Kubernetes objects and DNS names (`<name>-canary`,
            # `<name>-retrain` …).
            if not _NAME.match(name) or len(name) > 40:
                raise InputError(
                    "must be named by a lowercase DNS label of at most 40 characters "
                    "(letters, digits and '-', starting with a letter)",
                    f"rename the key {name!r}, e.g. to {example!r}.", field=name)
        return entries

    @field_validator("gateway")
    @classmethod
    def _gateway_needs_kubernetes(cls, gateway: dict[str, Any] | None,
                                  info: ValidationInfo) -> dict[str, Any] | None:
        if gateway is not None and info.data.get("target") != "kubernetes":
            raise InputError("is only supported with `mlops:target` kubernetes",
                             "remove `mlops:gateway` from this stack.")
        return gateway


@contextlib.contextmanager
def _under_config_keys(key: Callable[[str], str]) -> Iterator[None]:
    """Report a component's input errors under the config keys the values came from."""
    try:
        yield
    except mlops.ValidationError as err:
        raise mlops.ValidationError(WHERE, [p.renamed(key) for p in err.problems]) from None


def _target(cfg: EnvironmentConfig) -> tuple[mlops.Target, Callable[[str], str]]:
    """The target, and the config key of each of its inputs (``gateway.name`` →
    ``mlops:gateway.name``)."""
    kind: type[mlops.KubernetesTarget | mlops.DockerTarget] = (
        mlops.KubernetesTarget if cfg.target == "kubernetes" else mlops.DockerTarget)
    values = {to_camel(k): getattr(cfg, k) for k in _TARGET_KEYS[cfg.target]
              if getattr(cfg, k) is not None}
    inputs = ConfigInputs.read("mlops", kind, values, separator=":")

    def key(path: str) -> str:
        return inputs.key(path) if path else "mlops:target"

    with _under_config_keys(inputs.key):
        return kind(**inputs.inputs), key


def _registry_inputs(cfg: EnvironmentConfig, given: Mapping[str, Any]) -> ConfigInputs:
    """``mlops:registry``, with the URI of an external database from `mlops:databaseUri`."""
    inputs = ConfigInputs.read("mlops:registry", mlops.ModelRegistryArgs, cfg.registry,
                               given={**given, "database.uri": "mlops:databaseUri"})
    database = inputs.inputs.get("database")
    if isinstance(database, Mapping) and database.get("kind") == "external":
        if cfg.database_uri is None:
            raise mlops.ValidationError.single(
                WHERE, "mlops:databaseUri",
                f"is required when `{inputs.key('database.kind')}` is external", None,
                "run `pulumi config set --secret databaseUri postgresql://...`.")
        database = {**database, "uri": cfg.database_uri}
        return dataclasses.replace(inputs, inputs={**inputs.inputs, "database": database})
    return inputs


def _runtime_image(cfg: EnvironmentConfig, target: mlops.Target) -> Any:
    """`mlops:image`, else the runtime image built from this repository's Dockerfile: kept on
    the engine on Docker, pushed to the target's `mlops:imageRegistry` on Kubernetes (its
    reference is then pinned by digest). The project publishes no image to fall back on."""
    if cfg.image is not None:
        if cfg.require_image_digest and "@sha256:" not in cfg.image:
            raise mlops.ValidationError.single(
                WHERE, "mlops:image", "must be pinned by digest in this stack "
                "(`mlops:requireImageDigest` is true)", cfg.image,
                "use the image's `repository@sha256:...` reference, or unset `mlops:image` to "
                "build and push the image from the repository's Dockerfile.")
        return cfg.image
    # The program runs in stacks/; the Dockerfile is at the repository's root.
    keys = {"registry": "mlops:imageRegistry", "image_registry": "mlops:imageRegistry",
            "target": "mlops:target"}
    with _under_config_keys(lambda path: keys.get(path, path)):
        return mlops.RuntimeImage("runtime", context="..", target=target).image_ref


cfg = load_config(EnvironmentConfig)
target, target_key = _target(cfg)
image = _runtime_image(cfg, target)
# Inputs the stack sets for every component, and the keys they come from.
STACK_INPUTS = {"target": target_key, "image": "mlops:image"}

entry = _registry_inputs(cfg, STACK_INPUTS)
with _under_config_keys(entry.key):
    registry = mlops.ModelRegistry("registry", target=target, **entry.inputs)

pulumi.export("tracking_uri", registry.tracking_uri)
# From where the user is: the published port on Docker, the Ingress on Kubernetes (if any).
pulumi.export("registry_url", registry.external_tracking_uri)
pulumi.export("registry_admin_username", registry.admin_username)
pulumi.export("registry_admin_password", registry.admin_password)
pulumi.export("runtime_image", image)
# A team's stack uses its own user (`RegistryEndpoint`), never the admin's.
teams = {name: registry.grant_write(f"team-{name}", access.models, access.experiments)
         for name, access in cfg.teams.items()}
pulumi.export("team_registry_usernames", {name: g.username for name, g in teams.items()})
pulumi.export("team_registry_passwords", {name: g.password for name, g in teams.items()})


def _service(name: str, values: dict[str, Any]) -> mlops.ModelService:
    entry = ConfigInputs.read(f"mlops:services.{name}", mlops.ModelServiceArgs, values,
                              given={**STACK_INPUTS, "registry": "mlops:registry"})
    inputs = dict(entry.inputs)
    rollout = inputs.get("rollout")
    if "model_uri" not in inputs and not (isinstance(rollout, Mapping) and rollout.get("active")):
        # Unless blue/green names its active model, the alias `champion` of the model called
        # like the service is served.
        inputs["model_uri"] = f"models:/{name}@champion"
    with _under_config_keys(entry.key):
        return mlops.ModelService(name, registry=registry, target=target, image=image,
                                  **inputs)


def _retrain(name: str, values: dict[str, Any]) -> mlops.RetrainSchedule:
    entry = ConfigInputs.read(f"mlops:retrain.{name}", mlops.RetrainScheduleArgs, values,
                              given={**STACK_INPUTS, "registry": "mlops:registry"})
    with _under_config_keys(entry.key):
        return mlops.RetrainSchedule(name, registry=registry, target=target, image=image,
                                     **entry.inputs)


services = {name: _service(name, values) for name, values in cfg.services.items()}
pulumi.export("endpoints", {name: s.endpoint for name, s in services.items()})
pulumi.export("service_urls", {name: s.external_endpoint for name, s in services.items()})
pulumi.export("models", {name: s.models for name, s in services.items()})
retrain = {name: _retrain(name, values) for name, values in cfg.retrain.items()}
pulumi.export("retrain_schedules", {name: r.schedule for name, r in retrain.items()})

if cfg.monitoring is not None and services:
    entry = ConfigInputs.read("mlops:monitoring", mlops.MonitoringStackArgs, cfg.monitoring,
                              given={"target": target_key, "services": "mlops:services",
                                     "registry": "mlops:registry",
                                     "retrain": "mlops:retrain"})
    with _under_config_keys(entry.key):
        monitoring = mlops.MonitoringStack("monitoring", target=target,
                                           services=list(services.values()),
                                           registry=registry,
                                           retrain=list(retrain.values()), **entry.inputs)
    pulumi.export("prometheus_url", monitoring.external_prometheus_url)
