"""ModelService's pure parts: model URIs, rollouts, autoscaling, the canary split, the plan, and
the registry resolver against stand-in servers. No Pulumi runtime."""

from __future__ import annotations

import base64
import contextlib
import http.server
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import pulumi_mlops as mlops
from pulumi_mlops.components.resolver import RegistryResolver, registry_resolver
from pulumi_mlops.errors import InputError, ValidationError
from pulumi_mlops.plans.registry_ref import RegistryEndpoint
from pulumi_mlops.plans.service import (
    Autoscaling,
    ModelRef,
    ModelServiceArgs,
    Rollout,
    RolloutKind,
    ServicePlan,
    _canary_replicas,
    parse_model_uri,
    plan_service,
    pod_lifecycle,
)
from pulumi_mlops.plans.target import GatewayRef
from pulumi_mlops.plans.workload import HttpCheck, SecretRef
from tests.loopback import reply
from tests.recording import RUNTIME_IMAGE

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENDPOINT = RegistryEndpoint(tracking_uri="http://registry-mlflow.ml.svc.cluster.local:5000")
GATEWAY = GatewayRef(name="public", namespace="gateways")
K8S = mlops.KubernetesTarget(namespace="ml")
K8S_GW = mlops.KubernetesTarget(namespace="ml", gateway=GATEWAY)

model_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
versions = st.integers(min_value=1, max_value=999_999_999).map(str)
aliases = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,62}", fullmatch=True)


def args_of(**kwargs: Any) -> ModelServiceArgs:
    kwargs.setdefault("registry", ENDPOINT)
    kwargs.setdefault("target", K8S)
    kwargs.setdefault("image", RUNTIME_IMAGE)
    if "rollout" not in kwargs or kwargs["rollout"].kind != RolloutKind.BLUE_GREEN:
        kwargs.setdefault("model_uri", "models:/fraud/7")
    return ModelServiceArgs(**kwargs)


def plan_of(args: ModelServiceArgs, **models: str) -> ServicePlan:
    refs = {track: parse_model_uri(uri) for track, uri in models.items()}
    refs.setdefault("stable", parse_model_uri(args.stable_uri()))
    return plan_service("fraud", args, refs, tracking_uri="http://registry:5000")


# --------------------------------------------------------------------------- model URIs


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/fraud/7", ("fraud", "7", None)),
    ("models:/fraud@champion", ("fraud", None, "champion")),
    ("models:/Fraud_Detector.v2/123", ("Fraud_Detector.v2", "123", None)),
    ("models:/f@_staging-2", ("f", None, "_staging-2")),
])
def test_model_uris_name_a_version_or_an_alias(uri: str, expected: tuple[Any, ...]) -> None:
    ref = parse_model_uri(uri)

    assert (ref.name, ref.version, ref.alias) == expected
    assert ref.uri == uri


@pytest.mark.parametrize("uri", [
    "models:/fraud", "models:/fraud/", "models:/fraud/0", "models:/fraud/07",
    "models:/fraud/latest", "models:/fraud@", "models:/fraud@1st", "models:/-fraud/1",
    "runs:/abc/model", "s3://bucket/model", "models:/fraud/7/extra", "", "models:/fraud @x",
])
def test_other_uris_are_rejected_with_the_fix(uri: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_model_uri(uri)

    rule, reason = raised.value.rule.split(" (", 1)
    assert rule == "must be models:/<name>/<version> or models:/<name>@<alias>"
    assert reason.endswith(")") and len(reason) > 10  # says what is wrong with this one
    assert "models:/fraud@champion" in raised.value.fix


@given(name=model_names, version=versions)
def test_a_version_uri_round_trips_and_serves_itself(name: str, version: str) -> None:
    uri = f"models:/{name}/{version}"

    ref = parse_model_uri(uri)

    assert (ref.name, ref.version, ref.alias) == (name, version, None)
    assert ref.serving_uri == uri
    assert ref.key == f"v{version}"


@given(name=model_names, alias=aliases, version=st.none() | versions)
def test_an_alias_is_served_pinned_when_resolved_and_as_given_otherwise(
    name: str, alias: str, version: str | None
) -> None:
    uri = f"models:/{name}@{alias}"
    parsed = parse_model_uri(uri)
    assert (parsed.name, parsed.version, parsed.alias) == (name, None, alias)

    ref = ModelRef(uri, name, version, alias)

    assert ref.serving_uri == (f"models:/{name}/{version}" if version else uri)


@given(alias=aliases, version=st.none() | versions)
@example(alias="a" * 19 + "-b", version=None)  # cut right after a '-'
@example(alias="__", version=None)  # nothing left of it
def test_the_model_key_is_always_a_short_dns_label(alias: str, version: str | None) -> None:
    key = ModelRef(f"models:/m@{alias}", "m", version, alias).key

    # It names blue/green Deployments (`<name>-<key>`) and is a label value.
    assert DNS_LABEL.match(key), key
    assert len(key) <= 20 or key == f"v{version}"
    assert LABEL_VALUE.match(key)


# --------------------------------------------------------------------------- inputs


def test_rollout_factories_build_each_kind_with_only_its_inputs() -> None:
    assert Rollout.rolling() == Rollout()
    assert Rollout.rolling().kind == RolloutKind.ROLLING
    canary = Rollout.canary("models:/fraud/8")
    assert (canary.kind, canary.model_uri, canary.weight) == (RolloutKind.CANARY,
                                                              "models:/fraud/8", 10)
    shadow = Rollout.shadow("models:/fraud/8", percent=25)
    assert (shadow.kind, shadow.model_uri, shadow.percent) == (RolloutKind.SHADOW,
                                                               "models:/fraud/8", 25)
    assert Rollout.shadow("models:/fraud/8").percent == 100
    bg = Rollout.blue_green(active="models:/fraud/7", preview="models:/fraud/8")
    assert (bg.kind, bg.active, bg.preview, bg.model_uri) == (
        RolloutKind.BLUE_GREEN, "models:/fraud/7", "models:/fraud/8", None)


@pytest.mark.parametrize(("build", "path"), [
    (lambda: Rollout(kind=RolloutKind.CANARY, model_uri="models:/f/2", percent=5), "percent"),
    (lambda: Rollout(kind=RolloutKind.SHADOW, model_uri="models:/f/2", weight=5), "weight"),
    (lambda: Rollout(kind=RolloutKind.ROLLING, model_uri="models:/f/2"), "model_uri"),
    (lambda: Rollout(kind=RolloutKind.BLUE_GREEN, model_uri="models:/f/2"), "model_uri"),
    (lambda: Rollout(kind=RolloutKind.CANARY), "model_uri"),
    (lambda: Rollout(kind=RolloutKind.SHADOW), "model_uri"),
    (lambda: Rollout.canary("models:/f/2", weight=101), "weight"),
    (lambda: Rollout.canary("models:/f/2", weight=-1), "weight"),
    (lambda: Rollout.shadow("models:/f/2", percent=0), "percent"),
    (lambda: Rollout.canary("models:/f"), "model_uri"),
    (lambda: Rollout.blue_green(preview="runs:/abc/model"), "preview"),
    (lambda: Rollout.blue_green(active="models:/f/latest"), "active"),
])
def test_a_malformed_rollout_names_its_input(build: Callable[[], Rollout], path: str) -> None:
    with pytest.raises(ValidationError) as raised:
        build()

    assert raised.value.where == "Rollout"
    assert [p.path for p in raised.value.problems] == [path]
    assert f"`{path}`" in str(raised.value) and "Fix:" in str(raised.value)


def test_autoscaling_defaults_and_bounds() -> None:
    auto = Autoscaling(max_replicas=5)
    assert (auto.min_replicas, auto.max_replicas, auto.target_cpu) == (2, 5, 70)

    with pytest.raises(ValidationError) as raised:
        Autoscaling(min_replicas=6, max_replicas=5)

    assert [p.path for p in raised.value.problems] == ["min_replicas"]
    assert "must not exceed `max_replicas`" in str(raised.value)
    with pytest.raises(ValidationError, match="`target_cpu`"):
        Autoscaling(max_replicas=5, target_cpu=0)


def test_registry_endpoint_needs_an_http_uri_and_both_credentials_or_neither() -> None:
    assert RegistryEndpoint(tracking_uri="https://mlflow.example.com").username is None
    with pytest.raises(ValidationError, match="`tracking_uri` must be an http"):
        RegistryEndpoint(tracking_uri="file:///tmp/mlruns")
    with pytest.raises(ValidationError) as raised:
        RegistryEndpoint(tracking_uri="http://r:5000", username="svc")
    assert [p.path for p in raised.value.problems] == ["password"]
    with pytest.raises(ValidationError) as raised:
        RegistryEndpoint(tracking_uri="http://r:5000", password="hunter2-hunter2")
    assert "hunter2" not in str(raised.value)


# --------------------------------------------------------------------------- canary split


@pytest.mark.parametrize(("stable", "weight", "canary"), [
    (1, 10, 1), (1, 50, 1), (1, 0, 0), (3, 25, 1), (3, 50, 3), (4, 20, 1), (9, 10, 1),
    (2, 75, 2), (3, 90, 3), (1, 100, 1), (10, 10, 1), (10, 30, 4),
])
def test_canary_replicas_for_some_splits(stable: int, weight: int, canary: int) -> None:
    assert _canary_replicas(stable, weight) == canary


@given(stable=st.integers(1, 50), weight=st.integers(1, 100))
def test_the_canary_split_is_the_closest_achievable(stable: int, weight: int) -> None:
    canary = _canary_replicas(stable, weight)

    def error(c: int) -> float:
        return abs(c / (stable + c) - weight / 100)

    # Never more canary replicas than stable ones; within that, no count comes closer.
    assert 1 <= canary <= stable
    assert all(error(canary) <= error(c) + 1e-12 for c in range(1, stable + 1))


@given(stable=st.integers(1, 20), weight=st.integers(0, 99))
def test_without_a_gateway_the_plan_reports_the_effective_weight(stable: int,
                                                                 weight: int) -> None:
    plan = plan_of(args_of(replicas=stable, rollout=Rollout.canary("models:/fraud/8", weight)),
                   canary="models:/fraud/8")

    canary = plan.track("canary")
    assert canary.replicas == _canary_replicas(stable, weight)
    assert plan.track("stable").replicas == stable
    effective = round(100 * (canary.replicas or 0) / (stable + (canary.replicas or 0)), 1)
    assert plan.effective_canary_weight == effective
    assert plan.route == ()
    if effective == weight or canary.replicas == 0:
        assert plan.warnings == ()
    else:
        [warning] = plan.warnings
        assert f"about {effective:g}% of requests instead of {weight}%" in warning
        assert f"the canary gets {canary.replicas} of {stable + canary.replicas} replicas" \
            in warning
        assert "Add a Gateway for an exact split" in warning


@given(weight=st.integers(0, 100))
def test_through_a_gateway_the_canary_weight_is_exact(weight: int) -> None:
    plan = plan_of(args_of(target=K8S_GW, hostname="fraud.example.com", replicas=3,
                           rollout=Rollout.canary("models:/fraud/8", weight)),
                   canary="models:/fraud/8")

    assert plan.route == (("fraud", 100 - weight), ("fraud-canary", weight))
    assert plan.effective_canary_weight == weight
    assert plan.warnings == ()
    assert plan.track("canary").replicas == 1
    assert plan.extra_services == {"fraud-canary": plan.track("canary").selector}
    assert plan.endpoint_selector == plan.track("stable").selector


def test_without_a_gateway_one_service_selects_both_tracks_by_a_serving_label() -> None:
    plan = plan_of(args_of(replicas=3, rollout=Rollout.canary("models:/fraud/8", 25)),
                   canary="models:/fraud/8")

    assert plan.extra_services == {}
    assert plan.endpoint_selector == {**plan.selector, "mlops.dev/serving": "true"}
    for track in plan.tracks:
        assert track.labels["mlops.dev/serving"] == "true"
        # The Deployments' selectors stay apart (and immutable); only the Service spans both.
        assert "mlops.dev/serving" not in track.selector
    assert plan.track("stable").selector != plan.track("canary").selector


# --------------------------------------------------------------------------- the plan


@given(name=model_names, version=versions, alias=st.none() | aliases,
       port=st.integers(1024, 65535), workers=st.integers(1, 8))
def test_the_command_always_pins_the_resolved_version(
    name: str, version: str, alias: str | None, port: int, workers: int
) -> None:
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    ref = ModelRef(uri, name, version, alias)
    args = args_of(port=port, workers=workers)

    plan = plan_service("svc", args, {"stable": ref}, tracking_uri="http://registry:5000")

    [track] = plan.tracks
    command = track.workload.command
    assert command[:2] == ("mlops", "serve")
    assert command[command.index("--model-uri") + 1] == f"models:/{name}/{version}"
    assert command[command.index("--port") + 1] == str(port)
    assert command[command.index("--workers") + 1] == str(workers)
    assert track.workload.env["MLOPS_MODEL_VERSION"] == version
    assert track.workload.env["MLOPS_MODEL_NAME"] == name
    assert track.labels["mlops.dev/model-version"] == version
    assert track.annotations["mlops.dev/model-uri"] == uri
    if alias:
        assert track.annotations["mlops.dev/model-alias"] == alias
        assert track.workload.env["MLOPS_MODEL_ALIAS"] == alias
    else:
        assert "mlops.dev/model-alias" not in track.annotations


@pytest.mark.parametrize("coerce, rendered", [
    (None, None), (mlops.Coercion.STRICT, None), (mlops.Coercion.LOSSY, "lossy"),
    ("lossy", "lossy"),
])
def test_coercion_reaches_the_server_command_only_when_it_is_not_the_default(
    coerce: Any, rendered: str | None
) -> None:
    args = args_of() if coerce is None else args_of(coerce=coerce)
    plan = plan_service("svc", args, {"stable": ModelRef("models:/fraud/7", "fraud", "7", None)},
                        tracking_uri="http://registry:5000")
    command = plan.tracks[0].workload.command
    if rendered is None:
        assert "--coerce" not in command  # the default changes no pod template
    else:
        assert command[command.index("--coerce") + 1] == rendered


@pytest.mark.parametrize("memory, workers, rendered", [
    ("1Gi", 1, None), ("1Gi", 2, "16"), ("512Mi", 1, "16"), ("4Gi", 8, "16"),
    ("8Gi", 1, None), ("256Mi", 64, "1"),
])
def test_the_concurrency_bound_keeps_request_bodies_in_half_the_memory_limit(
    memory: str, workers: int, rendered: str | None
) -> None:
    args = args_of(workers=workers, resources=mlops.Resources(memory_request=memory,
                                                              memory_limit=memory))
    plan = plan_service("svc", args, {"stable": ModelRef("models:/fraud/7", "fraud", "7", None)},
                        tracking_uri="http://registry:5000")
    command = plan.tracks[0].workload.command
    if rendered is None:
        assert "--max-concurrency" not in command  # the server's default: 32
    else:
        assert command[command.index("--max-concurrency") + 1] == rendered
    concurrency = int(rendered or 32)
    limit_mib = args.resources.memory_limit_mib()
    assert workers * concurrency * 16 <= limit_mib // 2 or concurrency == 1


def test_a_bad_coercion_is_refused_naming_the_input() -> None:
    with pytest.raises((ValidationError, InputError), match="coerce"):
        args_of(coerce="sometimes")


def test_an_unresolved_alias_is_served_as_given_and_labelled_unresolved() -> None:
    args = args_of(model_uri="models:/fraud@champion")

    plan = plan_service("fraud", args, {"stable": parse_model_uri("models:/fraud@champion")},
                        tracking_uri="http://registry:5000")

    track = plan.track("stable")
    command = track.workload.command
    assert command[command.index("--model-uri") + 1] == "models:/fraud@champion"
    assert track.labels["mlops.dev/model-version"] == "unresolved"
    assert track.workload.env["MLOPS_MODEL_VERSION"] == ""
    assert track.workload.env["MLOPS_MODEL_ALIAS"] == "champion"
    assert track.annotations["mlops.dev/model-alias"] == "champion"


def test_the_workload_probes_health_and_liveness_apart_within_the_load_budget() -> None:
    workload = plan_of(args_of(model_load_timeout=900, scratch_size="8Gi")).track(
        "stable").workload

    assert workload.health == HttpCheck("/health")
    assert workload.liveness == HttpCheck("/ping")
    assert workload.startup_seconds == 900
    [scratch] = workload.mounts
    assert (scratch.path, scratch.kind, scratch.size) == ("/tmp", "scratch", "8Gi")
    assert workload.env["HOME"] == "/tmp"


def test_credentials_come_from_secret_references_only() -> None:
    refs = {"stable": parse_model_uri("models:/fraud/7")}

    plan = plan_service("fraud", args_of(), refs, tracking_uri=SecretRef("tracking-uri"),
                        username="svc", has_password=True)

    env = plan.track("stable").workload.env
    assert env["MLFLOW_TRACKING_URI"] == SecretRef("tracking-uri")
    assert env["MLFLOW_TRACKING_USERNAME"] == "svc"
    assert env["MLFLOW_TRACKING_PASSWORD"] == SecretRef("tracking-password")
    anonymous = plan_service("fraud", args_of(), refs, tracking_uri="http://r:5000").track(
        "stable").workload.env
    assert "MLFLOW_TRACKING_PASSWORD" not in anonymous
    assert "MLFLOW_TRACKING_USERNAME" not in anonymous


def test_the_grace_period_outlasts_the_pre_stop_sleep_and_the_drain() -> None:
    pre_stop, grace = pod_lifecycle()
    command = plan_of(args_of()).track("stable").workload.command
    drain = int(command[command.index("--drain-seconds") + 1])

    assert 0 < pre_stop < grace
    assert pre_stop + drain < grace


def test_a_rolling_service_has_one_track_and_no_route_without_a_hostname() -> None:
    plan = plan_of(args_of(replicas=3, target=K8S_GW))

    [track] = plan.tracks
    assert (track.track, track.object_name, track.replicas) == ("stable", "fraud", 3)
    assert plan.route == () and plan.mirror is None and plan.extra_services == {}
    assert plan.endpoint_selector == track.selector == {
        **plan.selector, "mlops.dev/track": "stable"}
    routed = plan_of(args_of(target=K8S_GW, hostname="fraud.example.com"))
    assert routed.route == (("fraud", 100),)


def test_an_autoscaled_stable_track_leaves_its_replicas_to_the_autoscaler() -> None:
    plan = plan_of(args_of(replicas=9, autoscaling=Autoscaling(min_replicas=3, max_replicas=6),
                           rollout=Rollout.canary("models:/fraud/8", 25)),
                   canary="models:/fraud/8")

    assert plan.track("stable").replicas is None
    # The replica split is computed from the autoscaler's floor, not from `replicas`.
    assert plan.track("canary").replicas == _canary_replicas(3, 25) == 1


def test_shadow_mirrors_a_percentage_to_its_own_service() -> None:
    plan = plan_of(args_of(target=K8S_GW, hostname="fraud.example.com",
                           rollout=Rollout.shadow("models:/fraud/8", percent=30)),
                   shadow="models:/fraud/8")

    assert [(t.track, t.object_name, t.replicas) for t in plan.tracks] == [
        ("stable", "fraud", 1), ("shadow", "fraud-shadow", 1)]
    assert plan.route == (("fraud", 100),)
    assert plan.mirror == ("fraud-shadow", 30)
    assert plan.extra_services == {"fraud-shadow": plan.track("shadow").selector}
    assert plan.track("shadow").labels["mlops.dev/track"] == "shadow"


def test_blue_green_tells_pods_apart_by_model_and_services_pick_the_roles() -> None:
    plan = plan_of(args_of(replicas=2, rollout=Rollout.blue_green(
        active="models:/fraud/7", preview="models:/fraud/8")), preview="models:/fraud/8")

    active, preview = plan.tracks
    assert (active.track, active.object_name, active.replicas) == ("active", "fraud-v7", 2)
    assert (preview.track, preview.object_name, preview.replicas) == ("preview", "fraud-v8", 2)
    assert plan.endpoint_selector == {**plan.selector, "mlops.dev/model-key": "v7"}
    assert plan.extra_services == {"fraud-preview": {**plan.selector,
                                                     "mlops.dev/model-key": "v8"}}
    assert all("mlops.dev/track" not in t.labels for t in plan.tracks)


def test_swapping_blue_green_roles_keeps_every_deployment_as_it_was() -> None:
    def deployments(active: str, preview: str) -> dict[str, Any]:
        plan = plan_of(args_of(replicas=2, rollout=Rollout.blue_green(active=active,
                                                                      preview=preview)),
                       preview=preview)
        return {t.object_name: (t.labels, t.selector, t.annotations, t.replicas,
                                t.workload) for t in plan.tracks}

    assert deployments("models:/fraud/7", "models:/fraud/8") == deployments(
        "models:/fraud/8", "models:/fraud/7")


@pytest.mark.parametrize("rollout", [
    Rollout.rolling(), Rollout.canary("models:/fraud/8", 30),
    Rollout.shadow("models:/fraud/8", 50),
    Rollout.blue_green(active="models:/fraud/7", preview="models:/fraud/8"),
], ids=lambda r: r.kind.value)
def test_every_track_has_its_own_selector_within_the_service_labels(rollout: Rollout) -> None:
    candidate = {RolloutKind.CANARY: {"canary": "models:/fraud/8"},
                 RolloutKind.SHADOW: {"shadow": "models:/fraud/8"},
                 RolloutKind.BLUE_GREEN: {"preview": "models:/fraud/8"}}.get(rollout.kind, {})
    plan = plan_of(args_of(target=K8S_GW, hostname="fraud.example.com", replicas=2,
                           rollout=rollout), **candidate)

    selectors = [dict(t.selector) for t in plan.tracks]
    assert len(selectors) == len(plan.tracks) == 1 + len(candidate)
    for t in plan.tracks:
        assert dict(plan.selector).items() <= dict(t.selector).items()
        assert dict(t.selector).items() <= dict(t.labels).items()
        assert DNS_LABEL.match(t.object_name)
        assert all(LABEL_VALUE.match(v) for v in t.labels.values())
    # No pod of one track matches another track's selector.
    for i, a in enumerate(plan.tracks):
        for b in plan.tracks[i + 1:]:
            assert not dict(a.selector).items() <= dict(b.labels).items()
            assert not dict(b.selector).items() <= dict(a.labels).items()


# --------------------------------------------------------------------------- registry_resolver


class _Registry(http.server.BaseHTTPRequestHandler):
    """Answers the alias endpoint like MLflow does for model `fraud`, alias `champion` → 7."""

    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        if not self.path.startswith("/api/2.0/mlflow/registered-models/alias?"):
            self._send(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "no"})
        elif "alias=champion" in self.path and "name=fraud" in self.path:
            self._send(200, {"model_version": {"name": "fraud", "version": "7"}})
        elif "alias=locked" in self.path:
            self._send(403, {"error_code": "PERMISSION_DENIED", "message": "no"})
        else:
            self._send(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no alias"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        reply(self, status, body)

    def log_message(self, *args: Any) -> None:
        pass


class _LoginPage(_Registry):
    def do_GET(self) -> None:
        body = b"<html>sign in</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_resolver_asks_the_alias_endpoint_with_the_credentials() -> None:
    with serving(_Registry) as server:
        resolve = registry_resolver(environ={"MLFLOW_TRACKING_URI": url_of(server),
                                             "MLFLOW_TRACKING_USERNAME": "svc",
                                             "MLFLOW_TRACKING_PASSWORD": "pw-123"})
        assert resolve("fraud", "champion") == "7"

    [(path, auth)] = server.seen
    assert path.startswith("/api/2.0/mlflow/registered-models/alias?")
    assert "name=fraud" in path and "alias=champion" in path
    assert auth == "Basic " + base64.b64encode(b"svc:pw-123").decode()


def test_an_explicit_tracking_uri_wins_over_the_environment() -> None:
    with serving(_Registry) as server:
        resolve = registry_resolver(url_of(server),
                                    environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})
        assert resolve("fraud", "champion") == "7"
    assert len(server.seen) == 1


def test_an_alias_the_registry_does_not_have_is_an_input_error() -> None:
    with serving(_Registry) as server:
        resolve = registry_resolver(url_of(server), environ={})
        with pytest.raises(InputError) as raised:
            resolve("fraud", "gone")

    assert "alias 'gone' of model 'fraud'" in raised.value.rule
    assert "models:/<name>/<version>" in raised.value.fix


def test_a_registry_refusing_access_counts_as_unreachable() -> None:
    with serving(_Registry) as server:
        assert registry_resolver(url_of(server), environ={})("fraud", "locked") is None
    assert server.seen


def test_a_server_that_is_not_mlflow_counts_as_unreachable() -> None:
    with serving(_LoginPage) as server:
        assert registry_resolver(url_of(server), environ={})("fraud", "champion") is None


def test_a_port_speaking_something_else_counts_as_unreachable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        assert registry_resolver(f"http://127.0.0.1:{port}", environ={}, timeout=5)(
            "fraud", "champion") is None
        thread.join(timeout=5)


def test_nothing_listening_counts_as_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        assert registry_resolver(f"http://127.0.0.1:{port}", environ={}, timeout=2)(
            "fraud", "champion") is None


@pytest.mark.parametrize("environ", [
    {}, {"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"}, {"MLFLOW_TRACKING_URI": "databricks"},
], ids=["unset", "file-store", "databricks"])
def test_without_an_http_registry_nothing_is_asked(environ: dict[str, str]) -> None:
    assert registry_resolver(environ=environ)("fraud", "champion") is None


def _declare_fraud(resolver: Any) -> Any:
    from pulumi_mlops.render import record

    def program() -> None:
        mlops.ModelService("fraud", image=RUNTIME_IMAGE,
                           registry=ENDPOINT, target=K8S, resolver=resolver,
                           model_uri="models:/fraud@champion")

    return record(program, preview=True)


def test_a_plan_says_which_registry_an_alias_was_resolved_at_without_credentials() -> None:
    with serving(_Registry) as server:
        port = server.server_address[1]
        recording = _declare_fraud(RegistryResolver(
            f"http://127.0.0.1:{port}", environ={"MLFLOW_TRACKING_USERNAME": "svc",
                                                 "MLFLOW_TRACKING_PASSWORD": "pw-123"}))
    assert recording.notes == [f"ModelService 'fraud': 'models:/fraud@champion' resolved to "
                               f"version 7 at registry http://127.0.0.1:{port}"]
    assert not recording.warnings
    # A URI's own user, password and query never reach a message.
    assert RegistryResolver("https://u:p@mlflow.example.com:8443/ml?token=t").registry == (
        "https://mlflow.example.com:8443/ml")


@pytest.mark.parametrize("environ, why", [
    ({}, "no registry configured: MLFLOW_TRACKING_URI is unset"),
    ({"MLFLOW_TRACKING_URI": "sqlite:////tmp/x.db"}, "is a sqlite store"),
    ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"},
     "the registry at http://127.0.0.1:1 is unreachable"),
])
def test_an_unresolved_alias_warns_with_the_reason(environ: dict[str, str], why: str) -> None:
    recording = _declare_fraud(RegistryResolver(environ=environ, timeout=2))
    [warning] = recording.warnings
    assert "could not resolve 'models:/fraud@champion'" in warning and why in warning


def test_the_external_endpoint_is_where_clients_outside_reach_the_service() -> None:
    docker = plan_of(args_of(target=mlops.DockerTarget(), port=8081))
    routed = plan_of(args_of(target=K8S_GW, hostname="fraud.example.com"))
    internal = plan_of(args_of())

    assert docker.external_endpoint == "http://127.0.0.1:8081"
    assert routed.external_endpoint == "http://fraud.example.com"
    assert internal.external_endpoint is None
