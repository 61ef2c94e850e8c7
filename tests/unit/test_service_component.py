"""ModelService under Pulumi's mocks: every rollout on Kubernetes, Docker and its errors, alias
pinning, secrets, outputs, parentage, and what a new model version changes in a plan."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pulumi
import pytest

import pulumi_mlops as mlops
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.errors import InputError
from pulumi_mlops.policy.pss import check_manifest
from pulumi_mlops.render import (
    Recording,
    build_stack_plan,
    diff_stack_plans,
    format_text,
    record,
    redact,
    unwrap_secrets,
)
from pulumi_mlops.render.manifests import manifests
from tests.recording import RUNTIME_IMAGE, external_egress, failing

COMPONENT = "mlops:index:ModelService"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
IMAGE = "docker:index/remoteImage:RemoteImage"
KUBERNETES_VERSION = "1.33.0"

GATEWAY = mlops.GatewayRef(name="public", namespace="gateways", section_name="https")
K8S = mlops.KubernetesTarget(namespace="ml")
K8S_GW = mlops.KubernetesTarget(namespace="ml", gateway=GATEWAY)
DOCKER = mlops.DockerTarget()
ENDPOINT = mlops.RegistryEndpoint(tracking_uri="http://mlflow.platform.svc.cluster.local:5000")
WHERE = "ModelService 'fraud'"
SELECTOR = {"app.kubernetes.io/name": "model-service", "app.kubernetes.io/instance": "fraud"}


def pinned(version: str) -> Callable[[str, str], str]:
    """A resolver standing in for the registry: every alias points at ``version``."""
    return lambda name, alias: version


@pytest.fixture(autouse=True)
def no_registry_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default resolver reads these; no test may depend on the machine running it.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def service(target: mlops.Target = K8S, **kwargs: Any) -> Recording:
    kwargs.setdefault("registry", ENDPOINT)
    kwargs.setdefault("image", RUNTIME_IMAGE)
    if "rollout" not in kwargs or kwargs["rollout"].kind != "blue_green":
        kwargs.setdefault("model_uri", "models:/fraud@champion")
    kwargs.setdefault("resolver", pinned("7"))
    return record(lambda: ModelService("fraud", target=target, **kwargs))


def inputs(rec: Recording, type_: str, name: str) -> dict[str, Any]:
    return redact(dict(rec.get(type_, name).inputs))  # type: ignore[no-any-return]


def pod(rec: Recording, name: str = "fraud") -> dict[str, Any]:
    return inputs(rec, DEPLOYMENT, name)["spec"]["template"]  # type: ignore[no-any-return]


def server(rec: Recording, name: str = "fraud") -> dict[str, Any]:
    [container] = pod(rec, name)["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def model_uri_arg(command: list[str]) -> str:
    return command[command.index("--model-uri") + 1]


def children(rec: Recording) -> set[tuple[str, str]]:
    component = rec.get(COMPONENT, "fraud")
    return {(r.type, r.name) for r in rec.resources if r.parent == component.urn}


def seconds(duration: str) -> int:
    """Seconds of a Go duration as the Docker materializer writes them (``5m0s``)."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", duration)
    assert match, duration
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """The warnings the program logged through `pulumi.log.warn` (the mock engine logs them)."""
    with caplog.at_level(logging.WARNING):
        yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- structure


def test_every_child_is_parented_to_the_service_and_named_after_it() -> None:
    for rec in (service(K8S_GW, hostname="fraud.example.com",
                        rollout=mlops.Rollout.canary("models:/fraud/8", 10)),
                service(DOCKER)):
        component = rec.get(COMPONENT, "fraud")
        owned = [r for r in rec.resources if r is not component]
        assert owned
        assert all(rec.parent_of(r) is component for r in owned)
        assert all(r.name == "fraud" or r.name.startswith("fraud-") for r in owned)


def test_a_rolling_service_declares_one_deployment_behind_one_service() -> None:
    rec = service()

    assert children(rec) == {(ACCOUNT, "fraud"), (DEPLOYMENT, "fraud"), (SERVICE, "fraud"),
                             (NETPOL, "fraud")}
    deployment = inputs(rec, DEPLOYMENT, "fraud")
    assert deployment["metadata"]["namespace"] == "ml"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == {**SELECTOR,
                                                             "mlops.dev/track": "stable"}
    svc = inputs(rec, SERVICE, "fraud")["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": "http",
                             "protocol": "TCP"}]
    assert server(rec)["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]


def test_outputs_and_public_attributes() -> None:
    built: list[ModelService] = []

    def program() -> None:
        svc = ModelService("fraud", image=RUNTIME_IMAGE,
                           registry=ENDPOINT, target=K8S, resolver=pinned("7"),
                           model_uri="models:/fraud@champion",
                           rollout=mlops.Rollout.canary("models:/fraud/8", 25), replicas=3)
        built.append(svc)
        pulumi.export("endpoint", svc.endpoint)
        pulumi.export("models", svc.models)

    rec = record(program)

    assert rec.outputs["endpoint"] == "http://fraud.ml.svc.cluster.local"
    models = rec.outputs["models"]
    assert models["stable"] == {"name": "fraud", "version": "7", "alias": "champion",
                                "uri": "models:/fraud@champion"}
    assert (models["canary"]["name"], models["canary"]["version"]) == ("fraud", "8")
    assert models["canary"].get("alias") is None
    [svc] = built
    assert set(svc.deployments) == {"stable", "canary"}
    assert svc.deployment is svc.deployments["stable"]
    assert svc.deployments["canary"] is svc.children.deployments["canary"]
    assert svc.service is svc.children.services[0]
    assert svc.plan.track("canary").object_name == "fraud-canary"
    assert rec.components == [svc]


def test_the_endpoint_is_the_gateway_host_when_routed() -> None:
    def program() -> None:
        svc = ModelService("fraud", image=RUNTIME_IMAGE,
                           registry=ENDPOINT, target=K8S_GW, model_uri="models:/fraud/7",
                           hostname="fraud.example.com")
        pulumi.export("endpoint", svc.endpoint)

    assert record(program).outputs["endpoint"] == "http://fraud.example.com"


# --------------------------------------------------------------------------- Kubernetes pods


@pytest.mark.parametrize("timeout", [10, 299, 300, 3600])
def test_the_startup_probe_covers_the_model_load_timeout(timeout: int) -> None:
    rec = service(model_load_timeout=timeout)
    container = server(rec)

    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert timeout <= budget < timeout + startup["periodSeconds"]
    # The rollout deadline covers the load budget too, with room for the image pull.
    deployment = inputs(rec, DEPLOYMENT, "fraud")["spec"]
    assert deployment["progressDeadlineSeconds"] > budget


def test_readiness_and_liveness_probe_different_endpoints() -> None:
    container = server(service())

    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"
    # A slow model call must not get a loaded replica restarted.
    assert container["livenessProbe"]["failureThreshold"] * container["livenessProbe"][
        "periodSeconds"] > container["readinessProbe"]["failureThreshold"] * container[
        "readinessProbe"]["periodSeconds"]


def test_pods_drain_before_they_are_killed() -> None:
    template = pod(service())
    [container] = template["spec"]["containers"]

    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = int(container["command"][container["command"].index("--drain-seconds") + 1])
    assert int(sleep[1]) + drain < template["spec"]["terminationGracePeriodSeconds"]


def test_pods_are_hardened_with_requests_and_limits() -> None:
    rec = service(resources=mlops.Resources(cpu_request="500m", memory_request="1Gi",
                                            cpu_limit="2", memory_limit="2Gi"))
    spec = pod(rec)["spec"]
    container = server(rec)

    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    assert spec["serviceAccountName"] == "fraud"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}} in spec["volumes"]
    account = inputs(rec, ACCOUNT, "fraud")
    assert account["automountServiceAccountToken"] is False


def test_updates_surge_never_drop_below_desired_and_fail_past_the_deadline() -> None:
    rec = service(replicas=4, model_load_timeout=600)
    deployment = inputs(rec, DEPLOYMENT, "fraud")["spec"]

    assert deployment["strategy"] == {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    deadline = deployment["progressDeadlineSeconds"]
    assert deadline >= 600
    # `pulumi up` fails on a rollout that never becomes ready (the provider sees the progress
    # deadline pass), but not on a healthy one replacing pods one at a time.
    timeouts = rec.get(DEPLOYMENT, "fraud").custom_timeouts
    assert set(timeouts) == {"create", "update"}
    assert seconds(timeouts["create"]) > deadline
    assert seconds(timeouts["update"]) > 4 * deadline


def test_scrape_hints_are_on_the_pods_and_the_service() -> None:
    rec = service(port=9000, metrics_port=9001)
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "9001",
              "prometheus.io/path": "/metrics"}

    assert scrape.items() <= pod(rec)["metadata"]["annotations"].items()
    metadata = inputs(rec, SERVICE, "fraud")["metadata"]
    assert scrape.items() <= metadata["annotations"].items()
    assert metadata["labels"]["mlops.dev/scrape"] == "true"


def test_one_replica_has_no_disruption_budget_and_no_spread() -> None:
    rec = service(replicas=1)

    assert rec.of_type(PDB) == []
    assert "topologySpreadConstraints" not in pod(rec)["spec"]


def test_several_replicas_allow_one_disruption_and_spread_across_nodes() -> None:
    rec = service(replicas=3)

    budget = inputs(rec, PDB, "fraud")["spec"]
    stable = {**SELECTOR, "mlops.dev/track": "stable"}
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": stable}}
    [spread] = pod(rec)["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"] == {"matchLabels": stable}
    assert spread["maxSkew"] == 1


def test_autoscaling_declares_an_autoscaler_that_owns_the_replicas() -> None:
    rec = service(replicas=5, autoscaling=mlops.Autoscaling(min_replicas=2, max_replicas=8,
                                                            target_cpu=60))

    hpa = inputs(rec, HPA, "fraud")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "fraud"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    deployment = inputs(rec, DEPLOYMENT, "fraud")["spec"]
    assert "replicas" not in deployment
    assert "topologySpreadConstraints" in deployment["template"]["spec"]
    assert inputs(rec, PDB, "fraud")["spec"]["maxUnavailable"] == 1
    assert seconds(rec.get(DEPLOYMENT, "fraud").custom_timeouts["update"]) > (
        8 * deployment["progressDeadlineSeconds"])
    assert service(replicas=3).of_type(HPA) == []


def test_an_empty_allow_from_admits_nobody_not_everybody() -> None:
    policy = inputs(service(allow_from=[]), NETPOL, "fraud")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == []


def test_the_network_policy_admits_callers_and_reaches_dns_and_registry() -> None:
    # (Prometheus is admitted by the MonitoringStack that scrapes the service.)
    rec = service(allow_from=[mlops.Peer.namespace("teams")])

    policy = inputs(rec, NETPOL, "fraud")["spec"]
    assert policy["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "teams"}}},
    ]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8080}]
    dns, registry = policy["egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert sorted(p["port"] for p in dns["ports"]) == [53, 53]
    # A registry given by URI: its port, anywhere but link-local (cloud metadata).
    assert registry == external_egress(5000)


def test_egress_to_a_registry_component_is_limited_to_its_server_pods() -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=mlops.KubernetesTarget(namespace="platform"),
                                       port=5001)
        ModelService("fraud", image=RUNTIME_IMAGE,
                     registry=registry, target=K8S, model_uri="models:/fraud/7")

    rec = record(program)

    _dns, registry = inputs(rec, NETPOL, "fraud")["spec"]["egress"]
    assert registry == {
        "to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "platform"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow",
                                            "app.kubernetes.io/instance": "reg",
                                            "app.kubernetes.io/component": "server"}}}],
        "ports": [{"protocol": "TCP", "port": 5001}],
    }
    # Those labels are the registry server's own pod labels.
    registry_pods = pod(rec, "reg-mlflow")["metadata"]["labels"]
    assert registry["to"][0]["podSelector"]["matchLabels"].items() <= registry_pods.items()
    env = env_of(server(rec))
    assert env["MLFLOW_TRACKING_URI"] == "http://reg-mlflow.platform.svc.cluster.local:5001"
    assert env["MLFLOW_TRACKING_USERNAME"] == "fraud-service"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "fraud",
                                                                "key": "tracking-password"}}
    # The service's Secret holds its own user's password only; the admin's stays with the
    # registry and the grant's reconcile Job.
    data = unwrap_secrets(rec.get(SECRET, "fraud").inputs["stringData"])
    registry_data = unwrap_secrets(rec.get(SECRET, "reg-mlflow").inputs["stringData"])
    grant_data = unwrap_secrets(rec.get(SECRET, "reg-grant-fraud-service").inputs["stringData"])
    assert data == {"tracking-password": grant_data["grant-password"]}
    assert grant_data["admin-password"] == registry_data["admin-password"]
    assert registry_data["admin-password"] not in data.values()


def test_an_https_registry_endpoint_opens_port_443() -> None:
    rec = service(registry=mlops.RegistryEndpoint(tracking_uri="https://mlflow.example.com"))

    assert inputs(rec, NETPOL, "fraud")["spec"]["egress"][1] == external_egress(443)
    # Narrowed to the registry's declared network.
    narrowed = service(registry=mlops.RegistryEndpoint(tracking_uri="https://mlflow.example.com",
                                                       cidrs=["198.51.100.0/24"]))
    assert inputs(narrowed, NETPOL, "fraud")["spec"]["egress"][1] == external_egress(
        443, cidrs=("198.51.100.0/24",))


ROLLOUTS = [mlops.Rollout.rolling(), mlops.Rollout.canary("models:/fraud/8", 20),
            mlops.Rollout.shadow("models:/fraud/8", 50),
            mlops.Rollout.blue_green(preview="models:/fraud/8")]


@pytest.mark.parametrize(("rollout", "target"), [
    # Shadow without a Gateway is an error (tested below).
    pytest.param(r, t, id=f"{r.kind.value}-{tid}")
    for r in ROLLOUTS for t, tid in ((K8S, "service"), (K8S_GW, "gateway"))
    if not (r.kind == "shadow" and t.gateway is None)
])
def test_every_object_is_schema_valid_and_every_pod_restricted(
    rollout: mlops.Rollout, target: mlops.KubernetesTarget
) -> None:
    rec = service(target, rollout=rollout, hostname="fraud.example.com", replicas=2,
                  autoscaling=mlops.Autoscaling(max_replicas=4),
                  registry=mlops.RegistryEndpoint(tracking_uri="http://r:5000", username="svc",
                                                  password="s3cret-pass"),
                  model_uri="models:/fraud/7")

    objects = manifests(rec)
    kinds = {m["kind"] for m in objects}
    assert {"Deployment", "Service", "NetworkPolicy", "ServiceAccount", "Secret",
            "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    for manifest in objects:
        if manifest["kind"] == "HTTPRoute":
            continue  # a CRD: kubernetes-validate knows only built-in kinds
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        assert check_manifest(manifest) == []
    assert ("HTTPRoute" in kinds) == (target.gateway is not None)


# --------------------------------------------------------------------------- rollouts


def test_canary_without_a_gateway_splits_by_replicas_and_warns_with_the_weight(
    warnings: Callable[[], list[str]],
) -> None:
    rec = service(replicas=3, rollout=mlops.Rollout.canary("models:/fraud/8", 10))

    assert children(rec) == {(ACCOUNT, "fraud"), (DEPLOYMENT, "fraud"),
                             (DEPLOYMENT, "fraud-canary"), (SERVICE, "fraud"),
                             (NETPOL, "fraud"), (PDB, "fraud")}
    stable, canary = (inputs(rec, DEPLOYMENT, n)["spec"] for n in ("fraud", "fraud-canary"))
    assert (stable["replicas"], canary["replicas"]) == (3, 1)
    assert stable["selector"]["matchLabels"]["mlops.dev/track"] == "stable"
    assert canary["selector"]["matchLabels"]["mlops.dev/track"] == "canary"
    assert model_uri_arg(server(rec, "fraud-canary")["command"]) == "models:/fraud/8"
    # One Service over both tracks.
    selector = inputs(rec, SERVICE, "fraud")["spec"]["selector"]
    assert selector == {**SELECTOR, "mlops.dev/serving": "true"}
    for spec in (stable, canary):
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    [warning] = [w for w in warnings() if "Gateway" in w]
    assert warning.startswith(f"{WHERE}: no Gateway on the target")
    assert "the canary gets 1 of 4 replicas, about 25% of requests instead of 10%" in warning


def test_canary_without_a_gateway_at_an_achievable_weight_does_not_warn(
    warnings: Callable[[], list[str]],
) -> None:
    rec = service(replicas=3, rollout=mlops.Rollout.canary("models:/fraud/8", 25))

    assert inputs(rec, DEPLOYMENT, "fraud-canary")["spec"]["replicas"] == 1
    assert warnings() == []


def test_canary_through_a_gateway_splits_by_route_weight() -> None:
    rec = service(K8S_GW, hostname="fraud.example.com", replicas=3,
                  rollout=mlops.Rollout.canary("models:/fraud/8", 10))

    route = inputs(rec, ROUTE, "fraud")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["namespace"] == "ml"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "name": "public", "namespace": "gateways",
                                   "sectionName": "https"}]
    assert spec["hostnames"] == ["fraud.example.com"]
    [rule] = spec["rules"]
    assert rule["backendRefs"] == [{"name": "fraud", "port": 80, "weight": 90},
                                   {"name": "fraud-canary", "port": 80, "weight": 10}]
    assert "filters" not in rule
    assert inputs(rec, DEPLOYMENT, "fraud-canary")["spec"]["replicas"] == 1
    stable_svc, canary_svc = (inputs(rec, SERVICE, n)["spec"]["selector"]
                              for n in ("fraud", "fraud-canary"))
    assert stable_svc == {**SELECTOR, "mlops.dev/track": "stable"}
    assert canary_svc == {**SELECTOR, "mlops.dev/track": "canary"}
    # The Gateway's namespace may reach the pods.
    peers = inputs(rec, NETPOL, "fraud")["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "gateways"}}} in peers


def test_a_gateway_without_a_listener_name_attaches_to_every_listener() -> None:
    target = mlops.KubernetesTarget(namespace="ml", gateway=mlops.GatewayRef(
        name="public", namespace="gateways"))
    rec = service(target, hostname="fraud.example.com")

    [parent] = inputs(rec, ROUTE, "fraud")["spec"]["parentRefs"]
    assert "sectionName" not in parent
    assert inputs(rec, ROUTE, "fraud")["spec"]["rules"][0]["backendRefs"] == [
        {"name": "fraud", "port": 80, "weight": 100}]


def _routed(matches: list[dict[str, Any]], path: str) -> bool:
    """Whether a Gateway forwards ``path`` by these matches (core support: Exact, PathPrefix by
    path elements)."""
    for match in matches:
        kind, value = match["path"]["type"], match["path"]["value"]
        if kind == "Exact" and path == value:
            return True
        if kind == "PathPrefix" and (path == value or path.startswith(value.rstrip("/") + "/")):
            return True
    return False


def test_the_gateway_routes_scoring_and_health_only() -> None:
    rec = service(K8S_GW, hostname="fraud.example.com",
                  rollout=mlops.Rollout.canary("models:/fraud-v2/8", 20))
    (rule,) = inputs(rec, ROUTE, "fraud")["spec"]["rules"]
    matches = rule["matches"]
    # Core features only: no method matching.
    assert all(set(m) == {"path"} for m in matches)
    for path in ("/invocations", "/ping", "/health", "/v2/health/ready", "/v2/health/live",
                 "/v2/models/fraud/infer", "/v2/models/fraud-v2/infer"):
        assert _routed(matches, path), path
    for path in ("/metrics", "/version", "/feedback", "/v2", "/v2/models/fraud",
                 "/v2/models/fraud/ready", "/v2/models/other/infer", "/invocations/x",
                 "/v2/healthz"):
        assert not _routed(matches, path), path


def test_a_gateway_without_a_hostname_leaves_a_rolling_service_unrouted() -> None:
    assert service(K8S_GW).of_type(ROUTE) == []


def test_shadow_mirrors_requests_through_the_gateway() -> None:
    rec = service(K8S_GW, hostname="fraud.example.com",
                  rollout=mlops.Rollout.shadow("models:/fraud/8", percent=20))

    assert {n for t, n in children(rec) if t == DEPLOYMENT} == {"fraud", "fraud-shadow"}
    assert {n for t, n in children(rec) if t == SERVICE} == {"fraud", "fraud-shadow"}
    [rule] = inputs(rec, ROUTE, "fraud")["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "fraud", "port": 80, "weight": 100}]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "fraud-shadow", "port": 80}, "percent": 20}}]
    assert inputs(rec, SERVICE, "fraud-shadow")["spec"]["selector"] == {
        **SELECTOR, "mlops.dev/track": "shadow"}
    assert model_uri_arg(server(rec, "fraud-shadow")["command"]) == "models:/fraud/8"
    assert inputs(rec, DEPLOYMENT, "fraud-shadow")["spec"]["replicas"] == 1


def test_shadow_without_a_gateway_is_an_error_with_the_fix() -> None:
    err, rec = failing(lambda: ModelService(
        "fraud", image=RUNTIME_IMAGE, registry=ENDPOINT, target=K8S, model_uri="models:/fraud/7",
        rollout=mlops.Rollout.shadow("models:/fraud/8")))

    assert err.where == WHERE
    assert [p.path for p in err.problems] == ["rollout"]
    message = str(err)
    assert message.startswith(f"{WHERE}: `rollout` shadow traffic needs a Gateway")
    assert "Fix: set KubernetesTarget(gateway=GatewayRef(...))" in message
    assert rec.resources == []


@pytest.mark.parametrize("rollout", [mlops.Rollout.canary("models:/fraud/8"),
                                     mlops.Rollout.shadow("models:/fraud/8")],
                         ids=lambda r: r.kind.value)
def test_splitting_through_a_gateway_needs_a_hostname(rollout: mlops.Rollout) -> None:
    err, rec = failing(lambda: ModelService(
        "fraud", image=RUNTIME_IMAGE,
registry=ENDPOINT, target=K8S_GW, model_uri="models:/fraud/7", rollout=rollout))

    assert [p.path for p in err.problems] == ["hostname"]
    assert f"is required for a {rollout.kind.value} rollout through the Gateway" in str(err)
    assert "Fix: set `hostname`" in str(err)
    assert rec.resources == []


def blue_green(active: str, preview: str, **kwargs: Any) -> Recording:
    return service(rollout=mlops.Rollout.blue_green(active=active, preview=preview), **kwargs)


def test_blue_green_keeps_one_deployment_per_version_and_selects_the_active_one() -> None:
    rec = blue_green("models:/fraud/7", "models:/fraud/8")

    assert children(rec) == {(ACCOUNT, "fraud"), (DEPLOYMENT, "fraud-v7"),
                             (DEPLOYMENT, "fraud-v8"), (SERVICE, "fraud"),
                             (SERVICE, "fraud-preview"), (NETPOL, "fraud")}
    for version in ("7", "8"):
        deployment = inputs(rec, DEPLOYMENT, f"fraud-v{version}")["spec"]
        assert deployment["selector"]["matchLabels"] == {**SELECTOR,
                                                         "mlops.dev/model-key": f"v{version}"}
        assert model_uri_arg(server(rec, f"fraud-v{version}")["command"]) == (
            f"models:/fraud/{version}")
    assert inputs(rec, SERVICE, "fraud")["spec"]["selector"]["mlops.dev/model-key"] == "v7"
    assert inputs(rec, SERVICE, "fraud-preview")["spec"]["selector"][
        "mlops.dev/model-key"] == "v8"


@pytest.mark.parametrize("replicas", [1, 2])
def test_swapping_blue_green_roles_changes_only_selectors(replicas: int) -> None:
    before = build_stack_plan(blue_green("models:/fraud/7", "models:/fraud/8", replicas=replicas))
    after = build_stack_plan(blue_green("models:/fraud/8", "models:/fraud/7", replicas=replicas))

    diff = diff_stack_plans(before, after)

    assert (diff.added, diff.removed) == ((), ())
    changed = {c.key: [f.path for f in c.fields] for c in diff.changed}
    expected = {f"{SERVICE}::fraud", f"{SERVICE}::fraud-preview"}
    if replicas >= 2:
        expected.add(f"{PDB}::fraud")  # the budget protects whichever version is active
    assert set(changed) == expected
    assert not any(key.startswith(DEPLOYMENT) for key in changed)
    assert changed[f"{SERVICE}::fraud"] == [("spec", "selector", "mlops.dev/model-key")]
    assert changed[f"{SERVICE}::fraud-preview"] == [("spec", "selector",
                                                     "mlops.dev/model-key")]


def test_blue_green_through_a_gateway_routes_to_the_active_service() -> None:
    rec = service(K8S_GW, hostname="fraud.example.com", model_uri="models:/fraud/7",
                  rollout=mlops.Rollout.blue_green(preview="models:/fraud/8"))

    spec = inputs(rec, ROUTE, "fraud")["spec"]
    assert spec["hostnames"] == ["fraud.example.com"]
    # Cut-over switches the Service's selector; the route stays as it is.
    assert spec["rules"][0]["backendRefs"] == [{"name": "fraud", "port": 80, "weight": 100}]


def test_blue_green_active_defaults_to_the_model_uri() -> None:
    rec = service(model_uri="models:/fraud/7",
                  rollout=mlops.Rollout.blue_green(preview="models:/fraud/8"))

    assert {n for t, n in children(rec) if t == DEPLOYMENT} == {"fraud-v7", "fraud-v8"}
    assert inputs(rec, SERVICE, "fraud")["spec"]["selector"]["mlops.dev/model-key"] == "v7"


def test_blue_green_takes_the_active_model_once() -> None:
    err, rec = failing(lambda: ModelService(
        "fraud", image=RUNTIME_IMAGE, registry=ENDPOINT, target=K8S, model_uri="models:/fraud/7",
        rollout=mlops.Rollout.blue_green(active="models:/fraud/7")))

    assert [p.path for p in err.problems] == ["model_uri"]
    assert "Only one of `model_uri` or `rollout.active` can be provided" in str(err)
    assert rec.resources == []


def test_blue_green_preview_must_be_another_version_after_resolution() -> None:
    err, rec = failing(lambda: ModelService(
        "fraud", image=RUNTIME_IMAGE, registry=ENDPOINT, target=K8S, resolver=pinned("7"),
        rollout=mlops.Rollout.blue_green(active="models:/fraud@champion",
                                         preview="models:/fraud/7")))

    assert [p.path for p in err.problems] == ["rollout.preview"]
    assert "must be another model version than the active one" in str(err)
    assert rec.resources == []


# --------------------------------------------------------------------------- Docker


@pytest.mark.parametrize(("kwargs", "path", "rule"), [
    ({"rollout": mlops.Rollout.canary("models:/fraud/8")}, "rollout",
     "canary rollouts need the Kubernetes target"),
    ({"rollout": mlops.Rollout.blue_green(preview="models:/fraud/8")}, "rollout",
     "blue_green rollouts need the Kubernetes target"),
    ({"rollout": mlops.Rollout.shadow("models:/fraud/8")}, "rollout",
     "shadow rollouts need the Kubernetes target"),
    ({"autoscaling": mlops.Autoscaling(max_replicas=3)}, "autoscaling",
     "is only supported on the Kubernetes target"),
    ({"replicas": 2}, "replicas", "must be 1 on the Docker target"),
], ids=["canary", "blue-green", "shadow", "autoscaling", "replicas"])
def test_docker_rejects_what_needs_kubernetes(kwargs: dict[str, Any], path: str,
                                              rule: str) -> None:
    err, rec = failing(lambda: ModelService("fraud", image=RUNTIME_IMAGE,
                                            registry=ENDPOINT, target=DOCKER,
                                            model_uri="models:/fraud/7", **kwargs))

    assert err.where == WHERE
    assert [p.path for p in err.problems] == [path]
    assert f"`{path}` {rule}" in str(err)
    assert "Fix:" in str(err)
    assert rec.resources == []


def test_docker_runs_one_hardened_container_on_the_registry_network() -> None:
    built: list[ModelService] = []

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=DOCKER)
        svc = ModelService("fraud", image=RUNTIME_IMAGE, registry=registry, target=DOCKER,
                           model_uri="models:/fraud@champion", resolver=pinned("3"), port=8081)
        built.append(svc)
        pulumi.export("endpoint", svc.endpoint)

    rec = record(program)

    assert children(rec) == {(IMAGE, "fraud-image"), (CONTAINER, "fraud")}
    container = inputs(rec, CONTAINER, "fraud")
    assert container["user"] == "10001:10001"
    assert container["readOnly"] is True
    assert container["capabilities"] == {"drops": ["ALL"]}
    assert container["securityOpts"] == ["no-new-privileges:true"]
    assert container["ports"] == [{"internal": 8081, "external": 8081, "ip": "127.0.0.1"}]
    assert container["networksAdvanced"] == [{"name": "reg-net", "aliases": ["fraud"]}]
    assert container["healthcheck"]["tests"][:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:8081/health" in container["healthcheck"]["tests"][3]
    assert seconds(container["healthcheck"]["startPeriod"]) >= 300
    assert container["tmpfs"] == {"/tmp": f"rw,noexec,nosuid,size={2 * 2**30}"}
    assert model_uri_arg(container["entrypoints"]) == "models:/fraud/3"
    assert ("mlops.dev/model-version", "3") in {
        (label["label"], label["value"]) for label in container["labels"]}
    assert container["envs"] == "[secret]"
    envs = unwrap_secrets(rec.get(CONTAINER, "fraud").inputs["envs"])
    assert "MLFLOW_TRACKING_URI=http://reg-mlflow:5000" in envs
    assert "MLFLOW_TRACKING_USERNAME=fraud-service" in envs
    assert "MLOPS_MODEL_VERSION=3" in envs
    # Its own user's password (the one its grant reconciles), never the admin's.
    registry_envs = unwrap_secrets(rec.get(CONTAINER, "reg-mlflow").inputs["envs"])
    [admin] = [e.split("=", 1)[1] for e in registry_envs
               if e.startswith("MLFLOW_AUTH_ADMIN_PASSWORD=")]
    assert f"MLFLOW_TRACKING_PASSWORD={admin}" not in envs
    password = dict(unwrap_secrets(dict(rec.get(
        "random:index/randomPassword:RandomPassword",
        "reg-grant-fraud-service-password").outputs)))["result"]
    assert f"MLFLOW_TRACKING_PASSWORD={password}" in envs
    assert rec.outputs["endpoint"] == "http://fraud:8081"
    # Started once its user is reconciled (after the registry's container), so its first load
    # attempt finds the registry and its user.
    grant = rec.get(CONTAINER, "reg-grant-fraud-service")
    assert grant.urn in rec.get(CONTAINER, "fraud").dependencies
    assert rec.get(CONTAINER, "reg-mlflow").urn in grant.dependencies
    [svc] = built
    assert svc.service is None
    assert svc.deployment is svc.children.server.container


def test_docker_with_a_registry_endpoint_gets_its_own_network() -> None:
    rec = service(DOCKER)

    assert (NETWORK, "fraud-net") in children(rec)
    assert inputs(rec, CONTAINER, "fraud")["networksAdvanced"][0]["name"] == "fraud-net"


def test_docker_bounds_processes_and_exits_when_unhealthy_for_the_restart_policy() -> None:
    rec = service(DOCKER, resources=mlops.Resources(pids_limit=1024))

    container = inputs(rec, CONTAINER, "fraud")
    assert container["ulimits"] == [{"name": "nproc", "soft": 1024, "hard": 1024}]
    # Docker restarts on exit only: the server exits once unhealthy for a minute.
    assert container["restart"] == "unless-stopped"
    command = container["entrypoints"]
    assert command[command.index("--exit-when-unhealthy-seconds") + 1] == "60"
    # No volume or config file: no init container.
    assert {c.name for c in rec.of_type(CONTAINER)} == {"fraud"}


def test_kubernetes_has_the_liveness_probe_and_no_watchdog() -> None:
    [container] = pod(service())["spec"]["containers"]
    assert "--exit-when-unhealthy-seconds" not in container["command"] + container.get(
        "args", [])
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"


# --------------------------------------------------------------------------- alias pinning


def test_a_resolved_alias_is_pinned_into_the_pod_spec(
    warnings: Callable[[], list[str]],
) -> None:
    asked: list[tuple[str, str]] = []

    def resolver(name: str, alias: str) -> str:
        asked.append((name, alias))
        return "7"

    rec = service(resolver=resolver)

    assert asked == [("fraud", "champion")]
    template = pod(rec)
    container = server(rec)
    assert model_uri_arg(container["command"]) == "models:/fraud/7"
    # The server still reports which alias the version came from.
    assert container["command"][-2:] == ["--model-alias", "champion"]
    assert template["metadata"]["labels"]["mlops.dev/model-version"] == "7"
    assert template["metadata"]["labels"]["mlops.dev/model-name"] == "fraud"
    assert template["metadata"]["annotations"]["mlops.dev/model-alias"] == "champion"
    env = env_of(container)
    assert (env["MLOPS_MODEL_VERSION"], env["MLOPS_MODEL_ALIAS"]) == ("7", "champion")
    assert warnings() == []


def test_a_pinned_version_never_asks_the_registry() -> None:
    def resolver(name: str, alias: str) -> str:
        raise AssertionError("asked")

    rec = service(model_uri="models:/fraud/4", resolver=resolver)

    assert model_uri_arg(server(rec)["command"]) == "models:/fraud/4"
    assert "mlops.dev/model-alias" not in pod(rec)["metadata"]["annotations"]


def test_an_unreachable_registry_keeps_the_alias_and_warns(
    warnings: Callable[[], list[str]],
) -> None:
    rec = service(resolver=lambda name, alias: None)

    template = pod(rec)
    assert model_uri_arg(server(rec)["command"]) == "models:/fraud@champion"
    assert template["metadata"]["labels"]["mlops.dev/model-version"] == "unresolved"
    assert template["metadata"]["annotations"]["mlops.dev/model-alias"] == "champion"
    assert env_of(server(rec))["MLOPS_MODEL_VERSION"] == ""
    [warning] = warnings()
    assert warning.startswith(f"{WHERE}: could not resolve "
                              "'models:/fraud@champion'")
    assert "the stable track keeps the alias and resolves it at start-up" in warning
    assert "Set MLFLOW_TRACKING_URI" in warning


def test_by_default_the_registry_of_the_environment_is_asked(
    warnings: Callable[[], list[str]],
) -> None:
    rec = record(lambda: ModelService("fraud", image=RUNTIME_IMAGE, registry=ENDPOINT, target=K8S,
                                      model_uri="models:/fraud@champion"))

    # No MLFLOW_TRACKING_URI here (see the autouse fixture): resolved at start-up.
    assert model_uri_arg(server(rec)["command"]) == "models:/fraud@champion"
    assert any("keeps the alias" in w for w in warnings())


def test_each_track_is_resolved_and_warned_about_on_its_own(
    warnings: Callable[[], list[str]],
) -> None:
    rec = service(replicas=3, resolver=lambda name, alias: "7" if alias == "champion" else None,
                  rollout=mlops.Rollout.canary("models:/fraud@challenger", 25))

    assert model_uri_arg(server(rec)["command"]) == "models:/fraud/7"
    assert model_uri_arg(server(rec, "fraud-canary")["command"]) == "models:/fraud@challenger"
    [warning] = warnings()
    assert "'models:/fraud@challenger'" in warning and "the canary track" in warning


def missing_alias(name: str, alias: str) -> str:
    raise InputError(f"names alias {alias!r} of model {name!r}, which the registry does not "
                     "have", "set the alias in the registry, or pin a version.")


@pytest.mark.parametrize(("kwargs", "path", "uri"), [
    ({"model_uri": "models:/fraud@gone"}, "model_uri", "models:/fraud@gone"),
    ({"model_uri": "models:/fraud/7", "rollout": mlops.Rollout.canary("models:/fraud@gone")},
     "rollout.model_uri", "models:/fraud@gone"),
    ({"rollout": mlops.Rollout.blue_green(active="models:/fraud@gone")}, "rollout.active",
     "models:/fraud@gone"),
    ({"model_uri": "models:/fraud/7",
      "rollout": mlops.Rollout.blue_green(preview="models:/fraud@gone")}, "rollout.preview",
     "models:/fraud@gone"),
], ids=["stable", "canary", "blue-green-active", "blue-green-preview"])
def test_an_alias_the_registry_does_not_have_is_an_error_naming_the_input(
    kwargs: dict[str, Any], path: str, uri: str
) -> None:
    err, rec = failing(lambda: ModelService("fraud", image=RUNTIME_IMAGE,
                                            registry=ENDPOINT, target=K8S,
                                            resolver=missing_alias, **kwargs))

    assert err.where == WHERE
    [problem] = err.problems
    assert (problem.path, problem.value) == (path, uri)
    assert str(err).startswith(f"{WHERE}: `{path}` names alias 'gone' of model 'fraud'")
    assert "Fix: set the alias in the registry" in str(err)
    assert rec.resources == []


# --------------------------------------------------------------------------- registry secrets


def test_a_literal_password_reaches_the_pods_only_through_a_secret() -> None:
    password = "pl41n-text-Pa55word"
    rec = service(registry=mlops.RegistryEndpoint(
        tracking_uri="http://mlflow.platform:5000", username="svc", password=password))

    secret = rec.get(SECRET, "fraud")
    assert inputs(rec, SECRET, "fraud")["stringData"] == {"tracking-password": "[secret]"}
    assert unwrap_secrets(secret.inputs["stringData"]) == {"tracking-password": password}
    env = env_of(server(rec))
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.platform:5000"
    assert env["MLFLOW_TRACKING_USERNAME"] == "svc"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "fraud",
                                                                "key": "tracking-password"}}
    for resource in rec.resources:
        assert password not in json.dumps(redact(dict(resource.inputs))), resource.name
    assert password not in json.dumps(redact(rec.outputs))


PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def test_by_default_every_track_refuses_models_that_run_code_when_loaded() -> None:
    # Unset, MLflow unpickles whatever a registered version holds, with the pod's registry
    # credentials at hand: anyone who can register a version could act as the registry admin.
    rec = service(rollout=mlops.Rollout.canary(model_uri="models:/fraud/8", weight=10))

    for name in ("fraud", "fraud-canary"):
        assert env_of(server(rec, name))[PICKLE_ENV] == "false"


def test_pickle_models_load_only_with_the_explicit_opt_in() -> None:
    rec = service(allow_pickle=True)

    assert env_of(server(rec))[PICKLE_ENV] == "true"


@pytest.mark.parametrize(("allow_pickle", "rendered"), [(False, "false"), (True, "true")])
def test_the_docker_container_renders_the_same_pickle_setting(allow_pickle: bool,
                                                              rendered: str) -> None:
    rec = service(DOCKER, allow_pickle=allow_pickle)

    assert f"{PICKLE_ENV}={rendered}" in unwrap_secrets(rec.get(CONTAINER, "fraud").inputs["envs"])


def test_registry_outputs_from_a_stack_reference_travel_as_secrets() -> None:
    password = "from-another-stack-Pa55"

    def program() -> None:
        endpoint = mlops.RegistryEndpoint(
            tracking_uri=pulumi.Output.secret("http://mlflow.platform:5000"),
            username=pulumi.Output.from_input("svc"),
            password=pulumi.Output.secret(password))
        ModelService("fraud", image=RUNTIME_IMAGE,
                     registry=endpoint, target=K8S, model_uri="models:/fraud/7")

    rec = record(program)

    assert unwrap_secrets(rec.get(SECRET, "fraud").inputs["stringData"]) == {
        "tracking-password": password, "tracking-uri": "http://mlflow.platform:5000",
        "tracking-username": "svc"}
    env = env_of(server(rec))
    for variable, key in (("MLFLOW_TRACKING_URI", "tracking-uri"),
                          ("MLFLOW_TRACKING_USERNAME", "tracking-username"),
                          ("MLFLOW_TRACKING_PASSWORD", "tracking-password")):
        assert env[variable] == {"secretKeyRef": {"name": "fraud", "key": key}}
    for resource in rec.resources:
        assert password not in json.dumps(redact(dict(resource.inputs)))
    # Where the registry is is only known at deployment: the usual registry ports.
    assert inputs(rec, NETPOL, "fraud")["spec"]["egress"][1] == external_egress(80, 443, 5000)


def test_a_registry_without_credentials_needs_no_secret() -> None:
    rec = service()

    assert rec.of_type(SECRET) == []
    assert "MLFLOW_TRACKING_PASSWORD" not in env_of(server(rec))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("kwargs", "path"), [
    ({"model_uri": None}, "model_uri"),
    ({"model_uri": "models:/fraud"}, "model_uri"),
    ({"model_uri": "runs:/abc/model"}, "model_uri"),
    ({"registry": "http://mlflow:5000"}, "registry"),
    ({"registry": mlops.RegistryEndpoint(tracking_uri="http://r:5000"), "port": 80}, "port"),
    ({"replicas": 0}, "replicas"),
    ({"hostname": "Not A Host"}, "hostname"),
    ({"model_load_timeout": 5}, "model_load_timeout"),
    ({"resolver": "registry"}, "resolver"),
    ({"image": "ghcr.io/pulumi-mlops/mlops-runtime:latest"}, "image"),
    ({"replica": 2}, "replica"),
    # Removed: the MonitoringStack that scrapes a service admits its Prometheus.
    ({"monitoring_namespace": "monitoring"}, "monitoring_namespace"),
    ({"allow_pickle": "sometimes"}, "allow_pickle"),
    ({"image": None}, "image"),
], ids=["no-model", "uri-without-version", "runs-uri", "registry-string", "port-80",
        "replicas-0", "hostname", "load-timeout", "resolver-not-callable", "image-latest",
        "typo", "monitoring-namespace-removed", "allow-pickle-not-a-boolean", "no-image"])
def test_malformed_input_is_rejected_with_its_path_and_nothing_declared(
    kwargs: dict[str, Any], path: str
) -> None:
    args = {"registry": ENDPOINT, "target": K8S, "model_uri": "models:/fraud/7",
            "image": RUNTIME_IMAGE, **kwargs}
    args = {k: v for k, v in args.items() if v is not None}

    err, rec = failing(lambda: ModelService("fraud", **args))

    assert err.where == WHERE
    assert path in {p.path for p in err.problems}, str(err)
    assert f"`{path}`" in str(err) and "Fix:" in str(err)
    assert rec.resources == []


def test_a_registry_on_another_kind_of_target_is_rejected() -> None:
    def build() -> None:
        registry = mlops.ModelRegistry("reg", target=DOCKER)
        ModelService("fraud", image=RUNTIME_IMAGE,
                     registry=registry, target=K8S, model_uri="models:/fraud/7")

    err, rec = failing(build)

    assert [p.path for p in err.problems] == ["registry"]
    assert "must run on the same kind of target" in str(err)
    assert rec.of_type(COMPONENT) == []


def test_args_object_and_keywords_build_the_same_service() -> None:
    kwargs: dict[str, Any] = {"registry": ENDPOINT, "target": K8S, "replicas": 2,
                              "model_uri": "models:/fraud/7", "image": RUNTIME_IMAGE}
    by_kwargs = build_stack_plan(record(lambda: ModelService("fraud", **kwargs)))
    by_args = build_stack_plan(record(lambda: ModelService(
        "fraud", mlops.ModelServiceArgs(**kwargs))))

    assert not diff_stack_plans(by_kwargs, by_args).has_changes


# --------------------------------------------------------------------------- version changes


def test_a_new_model_version_changes_only_the_stable_pod_template() -> None:
    def rendered(version: str) -> dict[str, Any]:
        def program() -> None:
            registry = mlops.ModelRegistry("reg", target=K8S)
            ModelService("fraud", image=RUNTIME_IMAGE, registry=registry, target=K8S, replicas=2,
                         model_uri="models:/fraud@champion", resolver=pinned(version),
                         autoscaling=mlops.Autoscaling(max_replicas=4))
        plan: dict[str, Any] = build_stack_plan(record(program))
        return plan

    before, after = rendered("7"), rendered("8")
    diff = diff_stack_plans(before, after)

    assert (diff.added, diff.removed) == ((), ())
    [change] = diff.changed
    assert change.key == f"{DEPLOYMENT}::fraud"
    assert change.parent is None
    paths = [f.path for f in change.fields]
    assert all(p[:2] == ("spec", "template") for p in paths), paths
    assert ("spec", "template", "metadata", "labels", "mlops.dev/model-version") in paths
    assert f"{SERVICE}::fraud" not in {c.key for c in diff.changed}
    assert diff.unchanged == len(before["resources"]) - 1
    # Declared by the component: one row per track, whatever fields carry the version.
    [(key, role, model, old, new)] = [(v.key, v.role, v.model, v.old, v.new)
                                      for v in diff.model_versions]
    assert (key, role, model, old, new) == (
        "mlops:index:ModelService::fraud", "stable", "fraud", "7", "8")
    text = format_text(diff)
    assert "  fraud 7 -> 8 (ModelService fraud, stable)" in text.splitlines(), text


def test_a_new_canary_version_changes_only_the_canary_pod_template() -> None:
    def rendered(version: str) -> dict[str, Any]:
        plan: dict[str, Any] = build_stack_plan(service(
            K8S_GW, hostname="fraud.example.com", replicas=2,
            rollout=mlops.Rollout.canary(f"models:/fraud/{version}", 10)))
        return plan

    diff = diff_stack_plans(rendered("8"), rendered("9"))

    assert [c.key for c in diff.changed] == [f"{DEPLOYMENT}::fraud-canary"]
    assert all(f.path[:2] == ("spec", "template") for f in diff.changed[0].fields)

