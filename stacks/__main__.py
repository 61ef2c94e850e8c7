"""Reference environment: one Pulumi stack per environment (dev, staging, prod).

The stack's config is read into one validated model (`EnvironmentConfig`) before anything is
declared, so a typo or a bad value fails the preview with the config key and the fix. Rules a
component checks itself (a canary on Docker, a bound on replicas) are reported under the config
key the value came from, too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pulumi
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

import pulumi_mlops as mlops
from pulumi_mlops.config import load_config
from pulumi_mlops.errors import InputError, Problem


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


class AutoscalingConfig(_Config):
    """``autoscaling`` of a service: a HorizontalPodAutoscaler on CPU (Kubernetes only)."""

    min_replicas: int = 2
    max_replicas: int
    target_cpu: int = 70


# The settings each rollout kind takes (camelCase, as written in the stack file).
_ROLLOUT_SETTINGS = {
    "rolling": (),
    "canary": ("modelUri", "weight"),
    "blueGreen": ("active", "preview"),
    "shadow": ("modelUri", "percent"),
}


class RolloutConfig(_Config):
    """``rollout`` of a service: how a new model version reaches traffic."""

    kind: Literal["rolling", "canary", "blueGreen", "shadow"] = "rolling"
    model_uri: str | None = None
    weight: int | None = None
    percent: int | None = None
    active: str | None = None
    preview: str | None = None

    @model_validator(mode="after")
    def _settings_of_kind(self) -> RolloutConfig:
        allowed = _ROLLOUT_SETTINGS[self.kind]
        for name in ("model_uri", "weight", "percent", "active", "preview"):
            key = to_camel(name)
            if getattr(self, name) is not None and key not in allowed:
                kinds = " or ".join(k for k, keys in _ROLLOUT_SETTINGS.items() if key in keys)
                raise InputError(f"is not a setting of a {self.kind} rollout",
                                 f"remove it, or set `kind` to {kinds}.", field=key)
        if self.kind in ("canary", "shadow") and self.model_uri is None:
            raise InputError(f"is required for a {self.kind} rollout",
                             "set it to the candidate model, e.g. 'models:/cancer@challenger'.",
                             field="modelUri")
        return self

    def build(self) -> mlops.Rollout:
        """The component's rollout."""
        if self.kind == "canary":
            assert self.model_uri is not None
            return mlops.Rollout.canary(self.model_uri, *_given(self.weight))
        if self.kind == "shadow":
            assert self.model_uri is not None
            return mlops.Rollout.shadow(self.model_uri, *_given(self.percent))
        if self.kind == "blueGreen":
            return mlops.Rollout.blue_green(active=self.active, preview=self.preview)
        return mlops.Rollout.rolling()


class ServiceConfig(_Config):
    """One entry of ``mlops:services``: a ModelService, keyed by its name."""

    # Default: ``models:/<service name>@champion``.
    model_uri: str | None = None
    replicas: int = 1
    autoscaling: AutoscalingConfig | None = None
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    workers: int = 1
    port: int = 8080
    hostname: str | None = None
    wait_ready: bool = True


class RetrainResourcesConfig(ResourcesConfig):
    """``resources`` of a retrain schedule. Default: 500m/1Gi requested, 2 CPU/2Gi limit."""

    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


class GatesConfig(_Config):
    """``gates`` of a retrain schedule, by metric (``roc_auc``, ``log_loss``, ``rmse`` …).

    Default: no gate, every new version is promoted.
    """

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    min_improvement: dict[str, float] = Field(default_factory=dict)
    max_regression: dict[str, float] = Field(default_factory=dict)


class RetrainConfig(_Config):
    """One entry of ``mlops:retrain``: a RetrainSchedule, keyed by its name.

    Unset settings take the component's defaults (docs/retrain-schedule.md).
    """

    schedule: str
    model_name: str
    dataset: str
    target_column: str | None = None
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: str | None = None
    search: dict[str, list[Any]] | None = None
    search_iterations: int | None = None
    task: str | None = None
    gates: GatesConfig = Field(default_factory=GatesConfig)
    promote_alias: str | None = None
    resources: RetrainResourcesConfig = Field(default_factory=RetrainResourcesConfig)
    scratch_size: str | None = None
    timeout: int | None = None
    retries: int | None = None
    starting_deadline: int | None = None
    suspend: bool = False
    successful_jobs_history: int | None = None
    failed_jobs_history: int | None = None


class GatewayConfig(_Config):
    """``mlops:gateway``: the Gateway API Gateway that routes to services (Kubernetes)."""

    name: str
    namespace: str
    section_name: str | None = None


_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class EnvironmentConfig(_Config):
    """The whole stack config (keys under the ``mlops:`` namespace)."""

    target: Literal["docker", "kubernetes"]
    namespace: str = "mlops"
    storage_class: str | None = None
    ingress_class: str | None = None
    publish_host: str = "127.0.0.1"
    gateway: GatewayConfig | None = None
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    retrain: dict[str, RetrainConfig] = Field(default_factory=dict)
    # Set with `pulumi config set --secret databaseUri ...` when registry.database is external.
    database_uri: object | None = None

    @field_validator("services", "retrain")
    @classmethod
    def _component_names(cls, entries: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        example = "fraud" if info.field_name == "services" else "fraud-nightly"
        for name in entries:
            # The name prefixes Kubernetes objects and DNS names (`<name>-canary`,
            # `<name>-retrain` …).
            if not _SERVICE_NAME.match(name) or len(name) > 40:
                raise InputError(
                    "must be named by a lowercase DNS label of at most 40 characters "
                    "(letters, digits and '-', starting with a letter)",
                    f"rename the key {name!r}, e.g. to {example!r}.", field=name)
        return entries

    @field_validator("gateway")
    @classmethod
    def _gateway_needs_kubernetes(cls, gateway: GatewayConfig | None,
                                  info: ValidationInfo) -> GatewayConfig | None:
        if gateway is not None and info.data.get("target") != "kubernetes":
            raise InputError("is only supported with `mlops:target` kubernetes",
                             "remove `mlops:gateway` from this stack.")
        return gateway


def _given(value: int | None) -> tuple[int, ...]:
    """A factory's optional argument when set, so its documented default applies otherwise."""
    return () if value is None else (value,)


def _target(cfg: EnvironmentConfig) -> mlops.Target:
    if cfg.target == "kubernetes":
        gateway = (mlops.GatewayRef(name=cfg.gateway.name, namespace=cfg.gateway.namespace,
                                    section_name=cfg.gateway.section_name)
                   if cfg.gateway else None)
        return mlops.KubernetesTarget(namespace=cfg.namespace, storage_class=cfg.storage_class,
                                      ingress_class=cfg.ingress_class, gateway=gateway)
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


# The component input that a nested args object, validated on its own, stands for.
_NESTED_INPUTS = {"Rollout": "rollout", "Autoscaling": "autoscaling", "Resources": "resources"}
# An input name in backticks, as components write them in rules and fixes.
_INPUT_NAME = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)`")
# Inputs keyed by the user's own names (metrics, estimator parameters): kept as written below.
_VERBATIM_KEYS = frozenset({"params", "search", "min", "max", "min_improvement",
                            "max_regression"})


# Fixes of component rules, in the stack file's words, by (section, input path).
_STACK_FIXES = {
    ("retrain", "estimator"): "set `{key}.estimator` to a scikit-learn estimator's import path, "
                              "e.g. sklearn.ensemble.RandomForestClassifier, or `{key}.trainer` "
                              "to pkg.module:function.",
    ("retrain", "target_column"): "set `{key}.targetColumn` to the name of the label column.",
}


def _config_key(section: str, name: str, path: str) -> str:
    """The config key of a component input path (``autoscaling.min_replicas`` …) of the
    entry ``name`` of ``mlops:<section>``."""
    if path == "target":
        return "mlops:target"
    parts: list[str] = []
    verbatim = False
    for part in path.split("."):
        parts.append(part if verbatim else to_camel(part))
        verbatim = verbatim or (part in _VERBATIM_KEYS and section == "retrain")
    return f"mlops:{section}.{name}." + ".".join(parts)


def _config_problem(section: str, name: str, base: str, problem: Problem) -> Problem:
    path = f"{base}.{problem.path}" if base else problem.path
    # Inputs named in the rule or the fix are siblings of the one the problem is about (or
    # the input itself, named in full).
    parent = path.rpartition(".")[0]

    def keys(text: str) -> str:
        def key(m: re.Match[str]) -> str:
            named = m[1] if m[1] == path or not parent else f"{parent}.{m[1]}"
            return f"`{_config_key(section, name, named)}`"

        return _INPUT_NAME.sub(key, text)

    # The input itself, named in full even where it is no plain name (``gates.min.Roc-AUC``).
    fix = keys(problem.fix.replace(f"`{problem.path}`",
                                   f"`{_config_key(section, name, path)}`"))
    if (section, path) in _STACK_FIXES and "=" in fix:
        # The component's fix speaks Python; say it in the stack file's words.
        fix = _STACK_FIXES[section, path].format(key=f"mlops:{section}.{name}")
    if section == "services" and path == "rollout":
        # The component's fix speaks Python; say it in the stack file's words.
        fix = ("set `kind` to rolling on Docker, or deploy the stack with `mlops:target` "
               "kubernetes." if cfg.target == "docker" else
               "set `mlops:gateway` to the Gateway's name and namespace, or use a canary.")
    return Problem(_config_key(section, name, path), keys(problem.rule), problem.value, fix)


@contextlib.contextmanager
def _config_keys(section: str, name: str) -> Iterator[None]:
    """Report a component's input error under the config key the value came from."""
    try:
        yield
    except mlops.ValidationError as err:
        base = _NESTED_INPUTS.get(err.where, "")
        raise mlops.ValidationError(
            f"stack {pulumi.get_stack()!r} config",
            [_config_problem(section, name, base, p) for p in err.problems],
        ) from None


def _service(name: str, svc: ServiceConfig) -> mlops.ModelService:
    with _config_keys("services", name):
        rollout = svc.rollout.build()
        # Blue/green names its active model in the rollout; otherwise the alias `champion`
        # of the model called like the service is served.
        model_uri = svc.model_uri or (None if rollout.active else f"models:/{name}@champion")
        return mlops.ModelService(
            name,
            registry=registry,
            target=target,
            model_uri=model_uri,
            rollout=rollout,
            replicas=svc.replicas,
            autoscaling=mlops.Autoscaling(**svc.autoscaling.model_dump())
            if svc.autoscaling else None,
            resources=mlops.Resources(**svc.resources.model_dump()),
            workers=svc.workers,
            port=svc.port,
            hostname=svc.hostname,
            wait_ready=svc.wait_ready,
        )


def _retrain(name: str, rt: RetrainConfig) -> mlops.RetrainSchedule:
    with _config_keys("retrain", name):
        # Unset settings are left out, so the component's documented defaults apply.
        settings = {k: v for k, v in rt.model_dump(exclude={"gates", "resources"}).items()
                    if v is not None}
        return mlops.RetrainSchedule(
            name,
            registry=registry,
            target=target,
            gates=rt.gates.model_dump(),
            resources=mlops.Resources(**rt.resources.model_dump()),
            **settings,
        )


services = {name: _service(name, svc) for name, svc in cfg.services.items()}
pulumi.export("endpoints", {name: s.endpoint for name, s in services.items()})
pulumi.export("models", {name: s.models for name, s in services.items()})
retrain = {name: _retrain(name, rt) for name, rt in cfg.retrain.items()}
pulumi.export("retrain_schedules", {name: r.schedule for name, r in retrain.items()})
