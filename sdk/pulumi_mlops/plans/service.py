"""ModelService: a registered model version behind a stable endpoint, with rollouts.

Args are validated on construction. Aliases are resolved at program time when the registry can
be reached (`pulumi_mlops.components.resolver`), so the version is pinned into the pod spec and
moving an alias shows up in the next preview. `plan_service` is the pure function that decides
every name, label, command line and environment variable; the component materializes that plan
on the chosen target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import HOSTNAME, QUANTITY, ArgsModel
from pulumi_mlops.contracts.model_uri import (
    MODEL_URI_FIX,
    MODEL_URI_RULE,
    ModelRef,
    ModelUriError,
)
from pulumi_mlops.contracts.model_uri import parse_model_uri as contract_parse
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.errors import InputError, Problem
from pulumi_mlops.plans.image import check_runtime_image, require_runtime_image
from pulumi_mlops.plans.registry import Peer
from pulumi_mlops.plans.registry_ref import (
    RegistryPeer,
    RegistryReference,
    check_registry,
    credentials_env,
    same_target_problem,
)
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import (
    DRAIN_SECONDS,
    UNHEALTHY_EXIT_SECONDS,
    EnvValue,
    HttpCheck,
    Mount,
    Resources,
    Workload,
    pod_lifecycle,
    url_host,
)
from pulumi_mlops.runtime.serve.limits import Limits

__all__ = [
    "Autoscaling",
    "ModelRef",
    "ModelServiceArgs",
    "PublicRoute",
    "Rollout",
    "RolloutKind",
    "ServicePlan",
    "TrackPlan",
    "parse_model_uri",
    "plan_service",
    "pod_lifecycle",
    "public_routes",
]

_LABEL_PREFIX = "mlops.dev"


# --------------------------------------------------------------------------- inputs


def parse_model_uri(uri: str) -> ModelRef:
    """Parse a model URI ModelService can deploy (`pulumi_mlops.contracts.model_uri`, with
    ``deployable=True``: its name becomes a label value, its version or alias an object name).

    Raises:
        InputError: for any other URI, saying what is wrong with it.
    """
    try:
        return contract_parse(uri, deployable=True)
    except ModelUriError as err:
        raise InputError(f"{MODEL_URI_RULE} ({err.reason})", MODEL_URI_FIX) from None


def _check_model_uri(value: str | None) -> str | None:
    if value is not None:
        parse_model_uri(value)
    return value


class Autoscaling(ArgsModel):
    """Horizontal autoscaling on CPU (a HorizontalPodAutoscaler; Kubernetes only).

    Attributes:
        min_replicas: Fewest replicas. Default: 2.
        max_replicas: Most replicas.
        target_cpu: Average CPU utilization to hold, percent of the CPU request. Default: 70.
    """

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    target_cpu: Annotated[int, Field(ge=1, le=100)] = 70

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise InputError("must not exceed `max_replicas`",
                             "lower `min_replicas` or raise `max_replicas`.",
                             field="min_replicas", related=("max_replicas",))
        return self


class Coercion(StrEnum):
    """What ``mlops serve`` does with a request value that would change in converting it to its
    column's type (2.9 into an integer column, ``"7"`` into a number, ``true`` into a double)."""

    STRICT = "strict"
    """Answer 400 naming the column."""
    LOSSY = "lossy"
    """Convert it, as MLflow's scoring server does."""


class RolloutKind(StrEnum):
    """How a new model version reaches traffic."""

    ROLLING = "rolling"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"
    SHADOW = "shadow"


class Rollout(ArgsModel):
    """The rollout strategy; build it with a factory method.

    Attributes:
        kind: The strategy.
        model_uri: The candidate model (canary, shadow).
        weight: Percent of requests the canary answers.
        percent: Percent of requests mirrored to the shadow.
        active: The model serving traffic (blue/green).
        preview: The model deployed beside it, reachable on the preview Service (blue/green).
    """

    kind: RolloutKind = RolloutKind.ROLLING
    model_uri: str | None = None
    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    percent: Annotated[int, Field(ge=1, le=100)] | None = None
    active: str | None = None
    preview: str | None = None

    _uris = field_validator("model_uri", "active", "preview")(_check_model_uri)

    @classmethod
    def rolling(cls) -> Rollout:
        """Replace pods in place, one at a time, never below the desired count (the default)."""
        return cls()

    @classmethod
    def canary(cls, model_uri: str, weight: int = 10) -> Rollout:
        """Run ``model_uri`` beside the stable model and send it ``weight`` percent of requests.

        With a Gateway on the target the split is exact (weighted HTTPRoute backends);
        without one it is approximated by replica counts behind the one Service.
        """
        return cls(kind=RolloutKind.CANARY, model_uri=model_uri, weight=weight)

    @classmethod
    def blue_green(cls, active: str | None = None, preview: str | None = None) -> Rollout:
        """Keep one Deployment per model version; the Service selects the ``active`` one.

        ``active`` defaults to the service's ``model_uri``. Switching ``active`` and
        ``preview`` only switches Service selectors: cut-over and rollback are instant.
        """
        return cls(kind=RolloutKind.BLUE_GREEN, active=active, preview=preview)

    @classmethod
    def shadow(cls, model_uri: str, percent: int = 100) -> Rollout:
        """Mirror ``percent`` of requests to ``model_uri``; its answers are discarded (needs a
        Gateway on the target)."""
        return cls(kind=RolloutKind.SHADOW, model_uri=model_uri, percent=percent)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Rollout:
        inputs: dict[RolloutKind, set[str]] = {
            RolloutKind.ROLLING: set(),
            RolloutKind.CANARY: {"model_uri", "weight"},
            RolloutKind.BLUE_GREEN: {"active", "preview"},
            RolloutKind.SHADOW: {"model_uri", "percent"},
        }
        for name in ("model_uri", "weight", "percent", "active", "preview"):
            if getattr(self, name) is not None and name not in inputs[self.kind]:
                kinds = " or ".join(k.value for k, taken in inputs.items() if name in taken)
                raise InputError(f"is not an input of a {self.kind.value} rollout",
                                 f"remove `{name}`, or set `kind` to {kinds}.",
                                 field=name, related=("kind",))
        if self.kind in (RolloutKind.CANARY, RolloutKind.SHADOW) and self.model_uri is None:
            raise InputError(f"is required for a {self.kind.value} rollout",
                             "set `model_uri` to the candidate model, e.g. "
                             "'models:/fraud@challenger'.",
                             field="model_uri")
        return self


class ModelServiceArgs(ArgsModel):
    """Inputs of `ModelService`.

    Attributes:
        registry: The registry serving the model: a `ModelRegistry`, or a `RegistryEndpoint`
            (tracking URI and credentials, e.g. from a `StackReference`).
        target: Where it runs: a `KubernetesTarget` or a `DockerTarget`.
        model_uri: ``models:/name/version`` or ``models:/name@alias`` of the stable model.
            Required (no default) except with ``Rollout.blue_green(active=...)``, which names
            the model instead; only one of the two can be given.
        rollout: How new versions reach traffic. Default: ``Rollout.rolling()``.
        replicas: Replicas of the stable track. Default: 1. Ignored when ``autoscaling`` is
            set.
        autoscaling: CPU autoscaling (Kubernetes). Default: none, a fixed replica count.
        image: The runtime image: ``RuntimeImage(...).image_ref`` (built from the repository's
            Dockerfile), or a prebuilt image pinned by tag or digest. Required: the project
            publishes no image, so none is implied.
        port: Container port of ``mlops serve``. On Docker also the published host port.
            Default: 8080.
        metrics_port: Container port of the server's ``/metrics``, which answers nothing else
            (and the serving port does not answer ``/metrics``): a MonitoringStack admits its
            Prometheus to this port only, so a scraper never reaches scoring. Not published
            on Docker. Default: 9102.
        workers: Server worker processes per replica. Default: 1. Each holds at most
            ``mlops serve --max-concurrency`` scoring requests at once, sized so that request
            bodies fit in
            half the memory limit (32 per worker with the default 1Gi and one worker).
        coerce: Request values that would change in converting them to their column's type:
            ``Coercion.STRICT`` answers 400 naming the column, ``Coercion.LOSSY`` converts them
            as MLflow's scoring server does. Default: strict.
        allow_pickle: Whether the server may load a model whose loading can run code: a
            pickle or cloudpickle file (of any flavor), a skops file that trusts types other
            than scikit-learn classes, code logged with the model (code paths, models from
            code) or a loader module that is not MLflow's. Rendered as
            ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``. Default: false: such a model fails to
            load (exit code 3, naming this input), because whoever can register a version of
            the model could otherwise run code in the server with its registry credentials;
            scikit-learn models saved with skops (what ``mlops retrain`` registers) load
            either way. Turn it on only when everyone who can register versions of the
            served models is trusted. Breaking change: before this input, such models loaded
            (MLflow's default).
        resources: Requests and limits per replica. Default: 250m/512Mi requested, 1 CPU/1Gi
            limit.
        scratch_size: Size of the writable ``/tmp`` the model is downloaded to. Default: 2Gi.
        model_load_timeout: Seconds a replica may take to download and load the model before
            it counts as failed; the startup probe and the rollout deadline cover it.
            Default: 300.
        hostname: Host name the Gateway route matches (Kubernetes with a Gateway). Default:
            none; required for canary and shadow rollouts through a Gateway.
        allow_from: Who may call the service (NetworkPolicy). Default: pods in the same
            namespace.
        wait_ready: Whether `pulumi up` waits for the new pods (Docker: the container) to be
            ready, and fails when they are not in time. Default: true. Turn it off only where
            the model may not be registered yet (a fresh dev registry): the server then keeps
            retrying until it is.
        resolver: Resolves an alias to a version at program time. Default:
            `registry_resolver()`, which asks the registry at ``MLFLOW_TRACKING_URI`` (with
            ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) of the environment running Pulumi; when
            that is unset or unreachable the alias is kept and resolved at start-up, with a
            warning.
    """

    registry: RegistryReference
    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")]
    model_uri: str | None = None
    rollout: Rollout = Field(default_factory=Rollout.rolling)
    replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    autoscaling: Autoscaling | None = None
    image: Any
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9102
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    coerce: Coercion = Coercion.STRICT
    allow_pickle: bool = False
    resources: Resources = Field(default_factory=Resources)
    scratch_size: Annotated[str, Field(pattern=QUANTITY)] = "2Gi"
    model_load_timeout: Annotated[int, Field(ge=10, le=3600)] = 300
    hostname: Annotated[str, Field(pattern=HOSTNAME, max_length=253)] | None = None
    allow_from: list[Peer] = Field(default_factory=lambda: [Peer.same_namespace()])
    wait_ready: bool = True
    resolver: Any = None

    _uri = field_validator("model_uri")(_check_model_uri)

    _registry = field_validator("registry", mode="before")(check_registry)

    @field_validator("image")
    @classmethod
    def _image(cls, value: Any) -> Any:
        return check_runtime_image(value)

    _image_given = model_validator(mode="before")(require_runtime_image)

    @field_validator("resolver")
    @classmethod
    def _resolver(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise InputError("must be callable as resolver(name, alias) -> version | None",
                             "pass a function, or omit it to ask the registry.")
        return value

    def stable_uri(self) -> str:
        """The model the main Service serves (``model_uri``, or the blue/green ``active``)."""
        uri = self.rollout.active or self.model_uri
        assert uri is not None
        return uri

    def problems(self) -> list[Problem]:
        """Rules that span several inputs."""
        found: list[Problem] = []
        kind = self.rollout.kind
        if self.metrics_port == self.port:
            found.append(Problem("metrics_port", "must differ from `port`", self.metrics_port,
                                 "choose another `metrics_port` (default 9102).",
                                 related=("port",)))
        if kind == RolloutKind.BLUE_GREEN and self.rollout.active and self.model_uri:
            found.append(Problem("model_uri",
                                 "Only one of `model_uri` or `rollout.active` can be provided",
                                 self.model_uri, "drop one of the two.",
                                 related=("rollout.active",)))
        elif self.model_uri is None and not self.rollout.active:
            found.append(Problem("model_uri", "is required", None,
                                 "pass model_uri='models:/<name>@<alias>' (or /<version>)."))
        if isinstance(self.target, DockerTarget):
            if kind != RolloutKind.ROLLING:
                found.append(Problem(
                    "rollout", f"{kind.value} rollouts need the Kubernetes target", kind.value,
                    "set `rollout.kind` to rolling on Docker, or deploy to a Kubernetes "
                    "`target`.", related=("rollout.kind", "target")))
            if self.autoscaling is not None:
                found.append(Problem("autoscaling", "is only supported on the Kubernetes target",
                                     self.autoscaling.max_replicas, "remove `autoscaling`."))
            if self.replicas > 1:
                found.append(Problem("replicas", "must be 1 on the Docker target",
                                     self.replicas, "set `replicas` to 1, or use Kubernetes."))
        else:
            gateway = self.target.gateway is not None
            if kind == RolloutKind.SHADOW and not gateway:
                found.append(Problem(
                    "rollout", "shadow traffic needs a Gateway on the target", kind.value,
                    "set KubernetesTarget(gateway=GatewayRef(...)), i.e. `target.gateway`, or "
                    "set `rollout.kind` to canary.", related=("target.gateway", "rollout.kind")))
            if gateway and kind in (RolloutKind.CANARY, RolloutKind.SHADOW) and not self.hostname:
                found.append(Problem(
                    "hostname", f"is required for a {kind.value} rollout through the Gateway",
                    None, "set `hostname` to the name clients call the service by."))
        same_target = same_target_problem(self.registry, self.target)
        if same_target is not None:
            found.append(same_target)
        return found


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrackPlan:
    """One Deployment of the service.

    Attributes:
        track: ``stable``, ``canary``, ``shadow``, ``active`` or ``preview``.
        object_name: Name of its Deployment (and container on Docker).
        model: The model it serves.
        replicas: Its replica count; None when an autoscaler owns it.
        workload: What runs.
        labels: Pod labels (selector labels included).
        selector: Labels that select exactly this track's pods.
        annotations: Pod annotations (scrape hints, the alias).
        spread: Whether its pods are spread across nodes (two or more, or an autoscaler).
        create_timeout_seconds: Seconds `pulumi up` waits for a new Deployment to be ready.
        update_timeout_seconds: Seconds it waits for an update: every pod replaced one after
            another, each within the rollout deadline.
    """

    track: str
    object_name: str
    model: ModelRef
    replicas: int | None
    workload: Workload
    labels: Mapping[str, str]
    selector: Mapping[str, str]
    annotations: Mapping[str, str]
    spread: bool
    create_timeout_seconds: int
    update_timeout_seconds: int


@dataclass(frozen=True)
class PublicRoute:
    """A request path a Gateway route forwards to the service from outside the cluster.

    Attributes:
        path: The request path.
        prefix: Whether ``path`` is a prefix (by path elements) rather than the exact path.
    """

    path: str
    prefix: bool = False


def public_routes(model_names: Sequence[str]) -> tuple[PublicRoute, ...]:
    """What a Gateway route forwards: scoring and health, by the paths the Gateway API's core
    support matches (exact and prefix; no method matching, an extended feature). Not
    ``/metrics`` (the scraper's), ``/version``, the V2 metadata (``/v2``, ``/v2/models/<name>``)
    nor ``/feedback`` (labels that move the live-quality figures come from inside the
    cluster): the gateway answers 404 for them. V2 inference is routed for each served model's
    name, unversioned."""
    return (PublicRoute("/invocations"), PublicRoute("/ping"), PublicRoute("/health"),
            PublicRoute("/v2/health", prefix=True),
            *(PublicRoute(f"/v2/models/{name}/infer") for name in sorted(set(model_names))))


@dataclass(frozen=True)
class ServicePlan:
    """Everything the service declares, independent of the target.

    Attributes:
        name: Component name; the stable endpoint's Service name.
        tracks: The Deployments, stable (or active) first.
        labels: Labels shared by every object.
        selector: Labels shared by every pod of the service (all tracks).
        endpoint_selector: Labels of the pods the main Service sends traffic to.
        extra_services: Further Services by name: their pod selector (canary, shadow, preview).
        route: Gateway route backends as (Service name, weight), when split by a Gateway.
        mirror: (Service name, percent) mirrored by the Gateway route, for shadow.
        effective_canary_weight: Percent of traffic the canary gets (replica-proportional
            without a Gateway).
        warnings: What the user should know about the plan.
        port: The port the server listens on (and is scraped at).
        autoscaler: (min, max, target CPU %) of the stable track's autoscaler; None for fixed
            replicas.
        disruption_budget: Whether the stable track keeps a disruption budget (at least two
            pods).
        wait_ready: Whether `pulumi up` waits for the pods to become ready.
        allow_from: Who may connect to the pods (besides the Gateway; Prometheus is admitted
            by the MonitoringStack that scrapes them).
        registry: Where the pods reach their registry (their egress).
        hostname: The Gateway route's hostname, if any.
        external_endpoint: Where clients outside the cluster or Docker network reach the
            service: the port published on the Docker host, or the Gateway route's hostname;
            None without either.
        scrape: Where Prometheus scrapes the pods (and the Services in front of them).
        rollout_deadline_seconds: Seconds a rollout may go without progress before it counts
            as failed (the old pods keep serving).
        pre_stop_seconds: Seconds a stopping pod keeps serving while the endpoint stops
            sending it requests.
        grace_seconds: Seconds a stopping pod has in all: the pre-stop wait, the server's
            drain and in-flight requests.
    """

    name: str
    tracks: tuple[TrackPlan, ...]
    labels: Mapping[str, str]
    selector: Mapping[str, str]
    endpoint_selector: Mapping[str, str]
    port: int
    autoscaler: tuple[int, int, int] | None
    disruption_budget: bool
    wait_ready: bool
    allow_from: tuple[Peer, ...]
    registry: RegistryPeer
    hostname: str | None
    external_endpoint: str | None
    scrape: ScrapeTarget
    rollout_deadline_seconds: int
    pre_stop_seconds: int
    grace_seconds: int
    extra_services: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    route: tuple[tuple[str, int], ...] = ()
    mirror: tuple[str, int] | None = None
    effective_canary_weight: float | None = None
    warnings: tuple[str, ...] = ()

    def track(self, name: str) -> TrackPlan:
        """The track called ``name``."""
        return next(t for t in self.tracks if t.track == name)


def max_concurrency(memory_limit_mib: int, workers: int) -> int:
    """Scoring requests each worker may hold at once so that the request bodies they can be
    made to hold (workers x this x the 16 MiB body limit) fit in half the memory limit, the
    other half being the model, the runtime and one request's decoding per worker; at most
    the server's default (32)."""
    body_mib = Limits().max_body_bytes // 2**20
    return max(1, min(Limits().max_concurrency, memory_limit_mib // 2 // (workers * body_mib)))


def serve_workload(model: ModelRef, args: ModelServiceArgs, *, tracking_uri: EnvValue,
                   username: EnvValue | None, has_password: bool) -> Workload:
    """The ``mlops serve`` container for one model: command, env, probes, scratch space."""
    env: dict[str, EnvValue] = {
        "HOME": "/tmp",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLOPS_MODEL_NAME": model.name,
        "MLOPS_MODEL_VERSION": model.version or "",
        "MLOPS_MODEL_ALIAS": model.alias or "",
        # Unset, MLflow's loaders unpickle whatever a registered version holds: code run with
        # this server's registry credentials by anyone who can register a version.
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true" if args.allow_pickle else "false",
    }
    env.update(credentials_env(username, has_password))
    command: tuple[str, ...] = (
        "mlops", "serve",
        "--model-uri", model.serving_uri,
        "--host", "0.0.0.0",
        "--port", str(args.port),
        "--metrics-port", str(args.metrics_port),
        "--workers", str(args.workers),
        "--drain-seconds", str(DRAIN_SECONDS),
    )
    if model.alias and model.version:
        # Pinned from an alias: the server still reports which alias it serves.
        command += ("--model-alias", model.alias)
    if args.coerce is not Coercion.STRICT:
        command += ("--coerce", args.coerce.value)
    concurrency = max_concurrency(args.resources.memory_limit_mib(), args.workers)
    if concurrency != Limits().max_concurrency:  # the server's default renders nothing new
        command += ("--max-concurrency", str(concurrency))
    # Docker restarts on exit only (Kubernetes has the liveness probe): the server exits itself.
    unhealthy_exit = UNHEALTHY_EXIT_SECONDS if isinstance(args.target, DockerTarget) else None
    if unhealthy_exit is not None:
        command += ("--exit-when-unhealthy-seconds", str(unhealthy_exit))
    return Workload(
        name="server",
        image=args.image,
        command=command,
        env=env,
        port=args.port,
        metrics_port=args.metrics_port,
        health=HttpCheck("/health"),
        liveness=HttpCheck("/ping"),
        mounts=(Mount("tmp", "/tmp", "scratch", args.scratch_size),),
        resources=args.resources,
        startup_seconds=args.model_load_timeout,
        unhealthy_exit_seconds=unhealthy_exit,
    )


def plan_service(
    name: str,
    args: ModelServiceArgs,
    models: Mapping[str, ModelRef],
    *,
    tracking_uri: EnvValue,
    username: EnvValue | None = None,
    has_password: bool = False,
) -> ServicePlan:
    """The service's Deployments, labels, commands and traffic split: one pure function.

    Args:
        name: Component name.
        args: Validated inputs.
        models: The (resolved) model of every track: ``stable`` plus ``canary``,
            ``shadow`` or ``preview`` as the rollout needs.
        tracking_uri: The registry URI the containers use (a literal or a secret reference).
        username: The registry user, if any.
        has_password: Whether the containers read ``tracking-password`` from secret data.
    """
    kind = args.rollout.kind
    gateway = isinstance(args.target, KubernetesTarget) and args.target.gateway is not None
    base = {
        "app.kubernetes.io/name": "model-service",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "pulumi-mlops",
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if isinstance(args.target, KubernetesTarget):
        base.update(args.target.labels)
    selector = {k: base[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    stable_replicas = args.autoscaling.min_replicas if args.autoscaling else args.replicas
    warnings: list[str] = []
    scrape = ScrapeTarget(args.metrics_port)
    # A rollout that never becomes ready fails `pulumi up` (the old pods keep serving); with
    # maxSurge 1 an update replaces pods one after another, each within the deadline.
    deadline = args.model_load_timeout + 120

    blue_green = kind == RolloutKind.BLUE_GREEN

    def track(track_name: str, object_name: str, model: ModelRef,
              replicas: int | None) -> TrackPlan:
        # Blue/green pods are told apart by model version, not by role, so switching roles
        # only switches Service selectors and leaves both Deployments as they are.
        distinct = ({f"{_LABEL_PREFIX}/model-key": model.key} if blue_green
                    else {f"{_LABEL_PREFIX}/track": track_name})
        track_selector = {**selector, **distinct}
        labels = {**base, **track_selector, f"{_LABEL_PREFIX}/model-name": model.name,
                  f"{_LABEL_PREFIX}/model-version": model.version or "unresolved"}
        annotations = {**scrape.annotations(), f"{_LABEL_PREFIX}/model-uri": model.uri}
        if model.alias:
            annotations[f"{_LABEL_PREFIX}/model-alias"] = model.alias
        workload = serve_workload(model, args, tracking_uri=tracking_uri, username=username,
                                  has_password=has_password)
        pods = max(replicas, 1) if replicas is not None else (
            args.autoscaling.max_replicas if args.autoscaling else 1)
        return TrackPlan(track_name, object_name, model, replicas, workload, labels,
                         track_selector, annotations, spread=(replicas or 2) >= 2,
                         create_timeout_seconds=deadline + 60,
                         update_timeout_seconds=deadline * pods + 60)

    stable = models["stable"]
    tracks: list[TrackPlan] = []
    extra: dict[str, Mapping[str, str]] = {}
    route: tuple[tuple[str, int], ...] = ()
    mirror: tuple[str, int] | None = None
    effective: float | None = None
    hpa_owned = None if args.autoscaling else stable_replicas
    if blue_green:
        tracks.append(track("active", f"{name}-{stable.key}", stable, hpa_owned))
        endpoint = dict(tracks[0].selector)
        if "preview" in models:
            preview = models["preview"]
            tracks.append(track("preview", f"{name}-{preview.key}", preview, stable_replicas))
            extra[f"{name}-preview"] = dict(tracks[1].selector)
        if gateway and args.hostname:
            route = ((name, 100),)  # to the Service, whose selector picks the active version
    else:
        tracks.append(track("stable", name, stable, hpa_owned))
        endpoint = dict(tracks[0].selector)
        if kind == RolloutKind.CANARY:
            weight = args.rollout.weight if args.rollout.weight is not None else 10
            if gateway:
                canary = track("canary", f"{name}-canary", models["canary"], 1)
                extra[f"{name}-canary"] = dict(canary.selector)
                route = ((name, 100 - weight), (f"{name}-canary", weight))
                effective = float(weight)
            else:
                canary_replicas = _canary_replicas(stable_replicas, weight)
                canary = track("canary", f"{name}-canary", models["canary"], canary_replicas)
                # One Service over both tracks: traffic follows the replica counts.
                endpoint = {**selector, f"{_LABEL_PREFIX}/serving": "true"}
                effective = round(100 * canary_replicas / (stable_replicas + canary_replicas), 1)
                if canary_replicas and effective != weight:
                    warnings.append(
                        f"no Gateway on the target: the canary gets {canary_replicas} of "
                        f"{stable_replicas + canary_replicas} replicas, about {effective:g}% of "
                        f"requests instead of {weight}%. Add a Gateway for an exact split.")
            tracks.append(canary)
        elif kind == RolloutKind.SHADOW:
            shadow = track("shadow", f"{name}-shadow", models["shadow"], 1)
            tracks.append(shadow)
            extra[f"{name}-shadow"] = dict(shadow.selector)
            route = ((name, 100),)
            mirror = (f"{name}-shadow", args.rollout.percent or 100)
        elif gateway and args.hostname:
            route = ((name, 100),)
    if endpoint.get(f"{_LABEL_PREFIX}/serving") == "true":
        serving = {f"{_LABEL_PREFIX}/serving": "true"}
        tracks = [replace(t, labels={**t.labels, **serving}) for t in tracks]
    a = args.autoscaling
    pre_stop, grace = pod_lifecycle()
    return ServicePlan(
        name=name, tracks=tuple(tracks), labels=base, selector=selector,
        endpoint_selector=endpoint, extra_services=extra, route=route, mirror=mirror,
        effective_canary_weight=effective, warnings=tuple(warnings), port=args.port,
        autoscaler=(None if a is None else (a.min_replicas, a.max_replicas, a.target_cpu)),
        disruption_budget=(a.min_replicas if a is not None else args.replicas) >= 2,
        wait_ready=args.wait_ready, allow_from=tuple(args.allow_from),
        registry=args.registry.peer(),
        hostname=args.hostname, scrape=scrape,
        external_endpoint=(
            f"http://{url_host(args.target.publish_host)}:{args.port}"
            if isinstance(args.target, DockerTarget) else
            f"http://{args.hostname}" if route and args.hostname else None),
        rollout_deadline_seconds=deadline,
        pre_stop_seconds=pre_stop, grace_seconds=grace,
    )


def _canary_replicas(stable: int, weight: int) -> int:
    """Canary replicas so that canary / (stable + canary) comes closest to ``weight``%.

    At most as many as the stable track has: beyond half of the traffic, a canary is a new
    stable version, and without a Gateway it would cost ever more replicas.
    """
    if weight == 0:
        return 0
    stable = max(stable, 1)
    exact = stable * weight / (100 - weight) if weight < 100 else float(stable)
    candidates = {min(max(c, 1), stable) for c in (math.floor(exact), math.ceil(exact))}
    return min(candidates, key=lambda c: (abs(c / (stable + c) - weight / 100), c))
