"""ModelService: a registered model version behind a stable endpoint, with rollouts.

The inputs and `plan_service`, the pure function deciding every name, label, command line and
environment variable, are in `pulumi_mlops.plans.service`. This component resolves aliases at
program time when the registry can be reached (`pulumi_mlops.components.resolver`), so the
version is pinned into the pod spec and moving an alias shows up in the next preview, then
materializes the plan on the chosen target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from pulumi_mlops.components._base import Component, secret_data
from pulumi_mlops.components.resolver import ModelResolver, RegistryResolver
from pulumi_mlops.errors import InputError, ValidationError
from pulumi_mlops.plans import monitoring
from pulumi_mlops.plans.registry_ref import RegistryClient, client_user
from pulumi_mlops.plans.service import (
    ModelRef,
    ModelServiceArgs,
    RolloutKind,
    ServicePlan,
    parse_model_uri,
    plan_service,
)
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.docker import service as docker_service
from pulumi_mlops.targets.kubernetes import service as kubernetes_service

__all__ = ["ModelService"]


class ModelService(Component[ModelServiceArgs, ServicePlan]):
    """A registered model served by ``mlops serve`` behind a stable endpoint.

    Example:
        >>> svc = mlops.ModelService("fraud", registry=reg, model_uri="models:/fraud@champion",
        ...                          target=k8s, rollout=mlops.Rollout.canary(
        ...                              model_uri="models:/fraud/8", weight=10))
        >>> pulumi.export("endpoint", svc.endpoint)
    """

    kind = "ModelService"
    args_type = ModelServiceArgs

    endpoint: pulumi.Output[str]
    """URL of the stable endpoint inside the cluster / Docker network (or the Gateway host)."""
    external_endpoint: pulumi.Output[str | None]
    """URL from outside the cluster or Docker network: the port published on the Docker host
    (``http://127.0.0.1:<port>``) or the Gateway route's hostname; None without either."""
    models: pulumi.Output[dict[str, dict[str, str | None]]]
    """Per track: the model name, version (None when unresolved), alias and URI."""
    model_promotions: pulumi.Output[dict[str, dict[str, Any] | None]]
    """Per track served through an alias: the model ``name``, and what the version the alias
    resolved to carries about it (`~pulumi_mlops.contracts.lineage.promotion_record`: an
    approval recorded for that alias, whether a gated retrain of this registry trained it);
    None when the resolver did not say. Read by the ``promotion-approved`` policy."""
    children: kubernetes_service.KubernetesService | docker_service.DockerService
    """What the component declared on its target (Deployments, Services … or a container)."""
    deployments: dict[str, pulumi.Resource]
    """Each track's Deployment (Kubernetes) or Container (Docker), by track name."""
    deployment: pulumi.Resource
    """The stable (or active) track's Deployment or Container."""
    service: pulumi.Resource | None
    """The stable endpoint's Service (Kubernetes); None on Docker."""

    def __init__(
        self,
        name: str,
        args: ModelServiceArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        """Declare a model service.

        Args:
            name: Component name; also the prefix of every child's name (a DNS label).
            args: The inputs as one object; or pass them as keyword arguments.
            opts: Pulumi resource options.
            **kwargs: The fields of `ModelServiceArgs`.
        """
        super().__init__(name, args, opts, kwargs)

    def _plan(self, name: str, args: ModelServiceArgs) -> ServicePlan:
        self._resolver: ModelResolver = args.resolver or RegistryResolver()
        models = _resolve_models(self.where(name), args, self._resolver)
        # A user of its own that reads the models it serves; never the registry's admin.
        self._access = access = args.registry.access(RegistryClient(
            client_user(name, "service"), read=tuple(sorted({m.name for m in models.values()}))))
        return plan_service(name, args, models, tracking_uri=access.tracking_uri,
                            username=access.username, has_password=access.has_password)

    def _declare(self, name: str, args: ModelServiceArgs,
                 plan: ServicePlan) -> Mapping[str, Any]:
        self._log_plan(name, plan)
        access = self._access
        data = secret_data(access.secret_values)
        if isinstance(args.target, KubernetesTarget):
            k8s = kubernetes_service.materialize(self, plan, args.target, data)
            self.children = k8s
            self.deployments = dict(k8s.deployments)
            self.service = k8s.services[0]
            host = args.target.service_host(name)
            endpoint = (f"http://{args.hostname}" if plan.route and args.hostname
                        else f"http://{host}")
        else:
            docker = docker_service.materialize(self, plan, args.target, data, access.network,
                                                access.after)
            self.children = docker
            self.deployments = {plan.tracks[0].track: docker.server.container}
            self.service = None
            endpoint = f"http://{plan.tracks[0].object_name}:{args.port}"
        self.deployment = self.deployments[plan.tracks[0].track]
        self.endpoint = pulumi.Output.from_input(endpoint)
        self.external_endpoint = pulumi.Output.from_input(plan.external_endpoint)
        self.models = pulumi.Output.from_input({
            t.track: {"name": t.model.name, "version": t.model.version, "alias": t.model.alias,
                      "uri": t.model.uri} for t in plan.tracks})
        promotion = getattr(self._resolver, "promotion", None)
        promotions: dict[str, dict[str, Any] | None] = {}
        for t in plan.tracks:
            if t.model.alias is None:
                continue
            found = promotion(t.model.name, t.model.alias) if callable(promotion) else None
            promotions[t.track] = None if found is None else {"name": t.model.name, **found}
        self._promotions = promotions
        self.model_promotions = pulumi.Output.from_input(promotions)
        return {"endpoint": self.endpoint, "external_endpoint": self.external_endpoint,
                "models": self.models, "model_promotions": self.model_promotions}

    def declared_models(self) -> Mapping[str, ModelRef]:
        """Each track's model (``stable``, ``canary`` …), pinned to its version when resolved."""
        return {t.track: t.model for t in self.plan.tracks}

    def declared_promotions(self) -> Mapping[str, Mapping[str, Any] | None]:
        """The value of `model_promotions`, as a plain mapping."""
        return self._promotions

    # Metric verbs: PromQL over the metric contract, as MonitoringStack's rules and dashboards
    # use it (series carry the `service` target label MonitoringStack's scrape sets).

    def metric_request_rate(self, window: str = "5m") -> str:
        """PromQL: scoring requests per second, all replicas and tracks."""
        return monitoring.request_rate(self.component_name, window)

    def metric_error_ratio(self, window: str = "5m") -> str:
        """PromQL: share of scoring requests answered with a 5xx."""
        return monitoring.error_ratio(self.component_name, window)

    def metric_latency(self, quantile: float = 0.99, window: str = "5m") -> str:
        """PromQL: the ``quantile`` of scoring latency, seconds."""
        return monitoring.latency_quantile(self.component_name, quantile, window)

    def metric_drift(self, feature: str | None = None) -> str:
        """PromQL: input drift of all replicas' traffic against the training profile (PSI or
        Jensen-Shannon distance), per model version; one feature or all of them."""
        return monitoring.feature_drift(self.component_name, feature)

    def _log_plan(self, name: str, plan: ServicePlan) -> None:
        """The plan's warnings, and what each alias resolved to (or why it did not)."""
        where = self.where(name)
        resolver = self._resolver
        for warning in plan.warnings:
            pulumi.log.warn(f"{where}: {warning}", self)
        at = (f"registry {resolver.registry}" if isinstance(resolver, RegistryResolver)
              else "the program's resolver")
        for t in plan.tracks:
            if t.model.alias is not None and t.model.version is not None:
                pulumi.log.info(f"{where}: {t.model.uri!r} resolved to version "
                                f"{t.model.version} at {at}", self)
            elif t.model.version is None:
                why = (resolver.why_unresolved() if isinstance(resolver, RegistryResolver)
                       else "the program's resolver did not answer")
                pulumi.log.warn(
                    f"{where}: could not resolve {t.model.uri!r} ({why}); the "
                    f"{t.track} track keeps the alias and resolves it at start-up, so moving "
                    "the alias will not show in previews. Set MLFLOW_TRACKING_URI (and "
                    "credentials) where Pulumi runs to pin the version.", self)


def _resolve_models(where: str, args: ModelServiceArgs,
                    resolver: ModelResolver) -> dict[str, ModelRef]:
    uris = {"stable": args.stable_uri()}
    rollout = args.rollout
    if rollout.kind in (RolloutKind.CANARY, RolloutKind.SHADOW):
        assert rollout.model_uri is not None
        uris[rollout.kind.value] = rollout.model_uri
    elif rollout.kind == RolloutKind.BLUE_GREEN and rollout.preview:
        uris["preview"] = rollout.preview
    out: dict[str, ModelRef] = {}
    for track_name, uri in uris.items():
        ref = parse_model_uri(uri)
        if ref.alias is not None:
            try:
                version = resolver(ref.name, ref.alias)
            except InputError as err:
                path = {"stable": "rollout.active" if rollout.active else "model_uri",
                        "preview": "rollout.preview"}.get(track_name, "rollout.model_uri")
                raise ValidationError.single(where, path, err.rule, uri, err.fix) from None
            ref = ModelRef(ref.uri, ref.name, version, ref.alias)
        out[track_name] = ref
    if (rollout.kind == RolloutKind.BLUE_GREEN and "preview" in out
            and out["preview"].key == out["stable"].key):
        raise ValidationError.single(where, "rollout.preview",
                                     "must be another model version than the active one",
                                     rollout.preview, "preview a different version, or drop it.")
    return out
