"""Rendered manifests: schema, Pod Security Standards, checkov, secrets.

What is rendered: the reference stacks, a program with every ModelService rollout (weighted
canary and shadow through a Gateway, blue/green, a canary split by replicas, a registry given
by address), and the Python examples of docs/model-service.md and docs/retrain-schedule.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pulumi
import pytest
import yaml

import pulumi_mlops as mlops
from pulumi_mlops.policy.pss import check_manifest, pod_spec_of
from pulumi_mlops.render import Recording, record, record_program, unwrap_secrets, write_render
from pulumi_mlops.render.manifests import REDACTED
from tests.checkov import run_checkov
from tests.recording import secret_values
from tests.render import gateway_api, prometheus_operator

REPO = Path(__file__).resolve().parents[2]
# The Kubernetes version the manifests are validated against (kubernetes-validate is pinned).
KUBERNETES_VERSION = "1.33.0"
K8S_STACKS = ["staging", "prod"]
SERVICE_DOC = REPO / "docs" / "model-service.md"
RETRAIN_DOC = REPO / "docs" / "retrain-schedule.md"
MONITORING_DOC = REPO / "docs" / "monitoring-stack.md"


IMAGE = "registry.example.com/ml/mlops-runtime@sha256:" + "c" * 64


def rollouts_program() -> None:
    """Every ModelService rollout on Kubernetes, so each object kind it declares is checked."""
    routed = mlops.KubernetesTarget(
        namespace="ml", gateway=mlops.GatewayRef(name="public", namespace="gateway-system",
                                                 section_name="https"))
    registry = mlops.ModelRegistry("registry", target=routed)
    mlops.ModelService(
        "fraud", image=IMAGE, registry=registry, target=routed, model_uri="models:/fraud@champion",
        resolver=lambda name, alias: "7", hostname="fraud.example.com",
        autoscaling=mlops.Autoscaling(min_replicas=2, max_replicas=6),
        rollout=mlops.Rollout.canary(model_uri="models:/fraud/8", weight=10))
    mlops.ModelService(
        "churn", image=IMAGE, registry=registry, target=routed, model_uri="models:/churn/3",
        hostname="churn.example.com", rollout=mlops.Rollout.shadow("models:/churn/4", 25))
    mlops.ModelService(
        "ranker", image=IMAGE,
registry=registry, target=routed, replicas=2, hostname="ranker.example.com",
        rollout=mlops.Rollout.blue_green(active="models:/ranker/2", preview="models:/ranker/3"))
    mlops.ModelService(
        "scorer", image=IMAGE, registry=registry, target=routed, model_uri="models:/scorer/5",
        hostname="scorer.example.com")
    # No Gateway: the canary share follows replica counts behind the one Service.
    plain = mlops.KubernetesTarget(namespace="ml")
    mlops.ModelService(
        "pricing", image=IMAGE,
registry=registry, target=plain, model_uri="models:/pricing/1", replicas=3,
        rollout=mlops.Rollout.canary("models:/pricing/2", weight=25))
    # A registry of another stack, by address, with credentials as secrets.
    mlops.ModelService(
        "team", image=IMAGE, target=plain, model_uri="models:/team/4",
        registry=mlops.RegistryEndpoint(
            tracking_uri="https://mlflow.example.com", username="team-svc",
            password=pulumi.Output.secret("team-registry-password-1234")))


def standalone_monitoring_program() -> None:
    """A MonitoringStack with a Prometheus of its own on Kubernetes, watching a service with a
    canary, the registry and a retrain schedule (through kube-state-metrics)."""
    k8s = mlops.KubernetesTarget(namespace="ml")
    registry = mlops.ModelRegistry("registry", target=k8s)
    fraud = mlops.ModelService(
        "fraud", image=IMAGE, registry=registry, target=k8s, model_uri="models:/fraud/3",
        rollout=mlops.Rollout.canary("models:/fraud/4", weight=10))
    nightly = mlops.RetrainSchedule(
        "nightly", image=IMAGE, registry=registry, target=k8s, schedule="0 3 * * *",
        model_name="fraud", dataset="sklearn:breast_cancer",
        estimator="sklearn.linear_model.LogisticRegression")
    mlops.MonitoringStack(
        "monitoring", target=k8s, services=[fraud], registry=registry, retrain=[nightly],
        prometheus=mlops.Prometheus.standalone(
            kube_state_metrics="kube-state-metrics.kube-system.svc:8080"),
        alertmanager=mlops.Alertmanager(
            page=mlops.Receiver.webhook(pulumi.Output.secret(
                "https://hooks.example.com/services/T0/B0/render-secret-token")),
            ticket=mlops.Receiver.email(
                to="ml@example.com", from_address="alerts@example.com",
                smarthost="smtp.example.com:587", username="alerts",
                password=pulumi.Output.secret("smtp-render-password-1234"))),
        grafana=mlops.Grafana())


def doc_examples(doc: Path) -> list[str]:
    """The ```python blocks of a docs page; each is a complete program."""
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


def _doc_program(doc: Path, index: int) -> Callable[[], None]:
    def program() -> None:
        exec(doc_examples(doc)[index], {})

    return program


# Programs rendered besides the stacks, by name.
PROGRAMS: dict[str, Callable[[], None]] = {
    "rollouts": rollouts_program,
    "standalone-monitoring": standalone_monitoring_program,
    **{f"docs-model-service-{i}": _doc_program(SERVICE_DOC, i)
       for i in range(len(doc_examples(SERVICE_DOC)))},
    **{f"docs-retrain-schedule-{i}": _doc_program(RETRAIN_DOC, i)
       for i in range(len(doc_examples(RETRAIN_DOC)))},
    **{f"docs-monitoring-stack-{i}": _doc_program(MONITORING_DOC, i)
       for i in range(len(doc_examples(MONITORING_DOC)))},
}
K8S_RENDERS = [*K8S_STACKS, *PROGRAMS]


class Rendered:
    def __init__(self, recording: Recording, out: Path, files: list[Path]) -> None:
        self.recording = recording
        self.out = out
        self.files = files
        self.manifests = [yaml.safe_load(f.read_text()) for f in files]


_cache: dict[str, Rendered] = {}


def render(name: str, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """A stack of the reference program, or one of `PROGRAMS`, rendered once per session."""
    if name not in _cache:
        program = PROGRAMS.get(name)
        # As `pulumi up` applies it: what the engine computes (the pushed runtime image's
        # reference) is known, where a preview shows it as [computed].
        recording = (record_program(REPO, name, preview=False) if program is None
                     else record(program, project="mlops", stack="render"))
        out = tmp_path_factory.mktemp(f"render-{name}")
        files = write_render(recording, out)
        _cache[name] = Rendered(recording, out, files)
    return _cache[name]


@pytest.fixture(params=K8S_STACKS)
def k8s_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


@pytest.fixture(params=K8S_RENDERS)
def k8s_render(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


@pytest.fixture(params=["dev", *K8S_STACKS])
def any_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


@pytest.fixture(params=["dev", *K8S_RENDERS])
def any_render(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


def by_kind(rendered: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    """The rendered objects of one kind, by name."""
    return {m["metadata"]["name"]: m for m in rendered.manifests if m["kind"] == kind}


# Custom resources kubernetes-validate has no schema for, and what they are checked against.
CUSTOM_SCHEMAS = {(gateway_api.API_VERSION, "HTTPRoute"): gateway_api.HTTP_ROUTE_SCHEMA,
                  (prometheus_operator.API_VERSION, "PodMonitor"): prometheus_operator.POD_MONITOR,
                  (prometheus_operator.API_VERSION, "PrometheusRule"):
                      prometheus_operator.PROMETHEUS_RULE}


def validate(manifest: dict[str, Any]) -> None:
    """Validate one object: built-in kinds by kubernetes-validate, ours by `CUSTOM_SCHEMAS`.

    Raises:
        kubernetes_validate.ValidationError, jsonschema.ValidationError, AssertionError.
    """
    schema = CUSTOM_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if schema is None:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"no schema for {manifest['apiVersion']} {manifest['kind']}: add one "
                        "to CUSTOM_SCHEMAS (from the resource's CRD) instead of skipping it")
        return
    jsonschema.validate(manifest, schema)
    assert gateway_api.cel_violations(manifest) == []
    # Its ObjectMeta is an ObjectMeta like any other: validate it on a built-in kind.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": manifest["metadata"]},
                                 KUBERNETES_VERSION, strict=True)


def test_kubernetes_stacks_render_the_registry_objects(k8s_stack: Rendered) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in k8s_stack.manifests}
    assert {
        ("Deployment", "registry-mlflow"), ("Service", "registry-mlflow"),
        ("NetworkPolicy", "registry-mlflow"), ("Secret", "registry-mlflow"),
        ("StatefulSet", "registry-postgres"), ("Service", "registry-postgres"),
        ("NetworkPolicy", "registry-postgres"), ("PodDisruptionBudget", "registry-mlflow"),
    } <= kinds


def test_kubernetes_stacks_render_the_model_service_objects(k8s_stack: Rendered) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in k8s_stack.manifests}
    assert {
        ("Deployment", "cancer"), ("Service", "cancer"), ("HorizontalPodAutoscaler", "cancer"),
        ("PodDisruptionBudget", "cancer"), ("NetworkPolicy", "cancer"),
        ("ServiceAccount", "cancer"), ("Secret", "cancer"),
    } <= kinds
    outputs = k8s_stack.recording.outputs
    assert outputs["endpoints"]["cancer"].startswith("http://cancer.mlops")
    assert outputs["models"]["cancer"]["stable"]["uri"] == "models:/cancer@champion"


def test_kubernetes_stacks_declare_their_monitoring_for_the_clusters_operator(
        k8s_stack: Rendered) -> None:
    custom = [m for m in k8s_stack.manifests
              if m["apiVersion"] == prometheus_operator.API_VERSION]
    monitors = {m["metadata"]["name"]: m for m in custom if m["kind"] == "PodMonitor"}
    # The service's stable track and the registry's server pods.
    assert set(monitors) == {"monitoring-cancer", "monitoring-registry-mlflow"}
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in custom)
    registry = monitors["monitoring-registry-mlflow"]["spec"]
    assert {"action": "replace", "targetLabel": "registry", "replacement": "registry"} in \
        registry["podMetricsEndpoints"][0]["relabelings"]
    (rule,) = [m for m in custom if m["kind"] == "PrometheusRule"]
    groups = {g["name"]: g for g in rule["spec"]["groups"]}
    assert set(groups) == {"mlops-service-cancer", "mlops-registry-registry",
                           "mlops-retrain-cancer-nightly-retrain"}
    # The CronJob's outcome from kube-state-metrics, in the stack's namespace, a daily schedule
    # overdue after two days.
    overdue = next(r for r in groups["mlops-retrain-cancer-nightly-retrain"]["rules"]
                   if r.get("alert") == "MlopsRetrainOverdue")
    namespace = k8s_stack.manifests[0]["metadata"]["namespace"]
    assert f'kube_cronjob_created{{namespace="{namespace}",cronjob="cancer-nightly-retrain"}}' \
        in overdue["expr"]
    assert overdue["expr"].endswith("> 172800")


def test_every_object_is_valid_against_the_kubernetes_schema(k8s_render: Rendered) -> None:
    assert k8s_render.manifests
    for manifest in k8s_render.manifests:
        validate(manifest)


def test_schema_validation_catches_a_broken_object(k8s_stack: Rendered) -> None:
    deployment = next(m for m in k8s_stack.manifests if m["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_pod_spec_passes_pod_security_standards_restricted(k8s_render: Rendered) -> None:
    workloads = [m for m in k8s_render.manifests if pod_spec_of(m) is not None]
    assert workloads
    assert {m["kind"] for m in workloads} <= {"Deployment", "StatefulSet", "CronJob", "Job"}
    for manifest in workloads:
        assert check_manifest(manifest) == []


@pytest.mark.slow
def test_checkov_reports_no_failed_check(k8s_render: Rendered) -> None:
    result = run_checkov(k8s_render.out)
    assert result.failed == []
    assert result.passed > 50
    # Every skipped check was skipped deliberately, with the reason in the annotation.
    for check_id, _resource, comment in result.skipped:
        assert comment and len(comment) > 20, check_id


def test_no_secret_value_appears_in_any_rendered_file(any_render: Rendered) -> None:
    secrets = secret_values(any_render.recording)
    # With a registry, its generated admin password and Flask key are among them (the mock
    # derives them); without one, the password of the registry given by address.
    has_registry = any(r.type == "mlops:index:ModelRegistry"
                       for r in any_render.recording.resources)
    assert len(secrets) >= (2 if has_registry else 1)
    texts = [p.read_text() for p in any_render.out.iterdir()]
    for value in secrets:
        for piece in _secret_pieces(value):
            assert not any(piece in t for t in texts), f"secret leaked: {piece[:4]}..."


def _secret_pieces(value: str) -> list[str]:
    """What of a secret value must appear nowhere: its lines, but for the Alertmanager's
    configuration (a secret as a whole, for its receivers' URLs and passwords, the rest being
    public routing), those URLs and passwords."""
    try:
        document = yaml.safe_load(value)
    except yaml.YAMLError:
        document = None
    if isinstance(document, dict) and "receivers" in document:
        return [str(config[key]) for receiver in document["receivers"]
                for kind, configs in receiver.items() if kind.endswith("_configs")
                for config in configs for key in ("url", "api_url", "auth_password")
                if key in config]
    return [line for line in value.splitlines() if len(line) >= 8]


def test_secrets_reach_pods_only_by_secret_reference(k8s_stack: Rendered) -> None:
    secret_names = {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                    "PGPASSWORD", "POSTGRES_PASSWORD", "MLFLOW_TRACKING_PASSWORD"}
    seen = set()
    for manifest in k8s_stack.manifests:
        spec = pod_spec_of(manifest)
        for container in (spec or {}).get("containers", []):
            for env in container.get("env", []):
                if env["name"] in secret_names:
                    assert "value" not in env
                    assert env["valueFrom"]["secretKeyRef"]["name"]
                    seen.add(env["name"])
                else:
                    assert "password" not in env.get("value", "").lower()
    assert seen == secret_names
    for secret in (m for m in k8s_stack.manifests if m["kind"] == "Secret"):
        assert set(secret["stringData"].values()) == {REDACTED}


def test_stack_outputs_keep_the_admin_password_secret(any_stack: Rendered) -> None:
    outputs = any_stack.recording.outputs
    assert unwrap_secrets(outputs["registry_admin_password"]) != REDACTED
    listing = json.loads((any_stack.out / "resources.json").read_text())
    assert listing["outputs"]["registry_admin_password"] == REDACTED
    assert listing["outputs"]["tracking_uri"].startswith("http://registry-mlflow")


# --- ModelService rollouts --------------------------------------------------------------------


@pytest.fixture
def rollouts(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render("rollouts", tmp_path_factory)


def test_each_rollout_declares_one_deployment_per_track(rollouts: Rendered) -> None:
    deployments = by_kind(rollouts, "Deployment")
    assert {"fraud", "fraud-canary", "churn", "churn-shadow", "ranker-v2", "ranker-v3",
            "scorer", "pricing", "pricing-canary", "team"} <= set(deployments)
    services = by_kind(rollouts, "Service")
    assert {"fraud", "fraud-canary", "churn", "churn-shadow", "ranker", "ranker-preview",
            "scorer", "pricing", "team"} <= set(services)
    # Blue/green: the Services select a model version; switching only switches selectors.
    assert services["ranker"]["spec"]["selector"]["mlops.dev/model-key"] == "v2"
    assert services["ranker-preview"]["spec"]["selector"]["mlops.dev/model-key"] == "v3"
    # Canary without a Gateway: one Service over both tracks, 1 canary pod beside 3 stable.
    assert services["pricing"]["spec"]["selector"]["mlops.dev/serving"] == "true"
    assert deployments["pricing-canary"]["spec"]["replicas"] == 1
    # Pinned versions are in the pod spec, where a preview shows them move.
    command = deployments["fraud"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--model-uri") + 1] == "models:/fraud/7"


def test_the_gateway_route_splits_and_mirrors_by_service(rollouts: Rendered) -> None:
    routes = by_kind(rollouts, "HTTPRoute")
    assert set(routes) == {"fraud", "churn", "ranker", "scorer"}
    services = by_kind(rollouts, "Service")
    for route in routes.values():
        (parent,) = route["spec"]["parentRefs"]
        assert (parent["name"], parent["namespace"], parent["sectionName"]) == (
            "public", "gateway-system", "https")
        # Every backend is a rendered Service in the route's namespace, on a port it serves.
        for _where, ref in gateway_api.backend_refs(route["spec"]):
            service = services[ref["name"]]
            assert service["metadata"]["namespace"] == route["metadata"]["namespace"]
            assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}
    fraud = routes["fraud"]["spec"]
    assert fraud["hostnames"] == ["fraud.example.com"]
    assert [(b["name"], b["weight"]) for b in fraud["rules"][0]["backendRefs"]] == [
        ("fraud", 90), ("fraud-canary", 10)]
    # Blue/green through the Gateway: to the Service, whose selector picks the active version.
    assert [(b["name"], b["weight"]) for b in routes["ranker"]["spec"]["rules"][0][
        "backendRefs"]] == [("ranker", 100)]
    (mirror,) = routes["churn"]["spec"]["rules"][0]["filters"]
    assert mirror["requestMirror"] == {"backendRef": {"name": "churn-shadow", "port": 80},
                                       "percent": 25}
    # The Gateway's namespace may reach the pods it routes to.
    policy = by_kind(rollouts, "NetworkPolicy")["fraud"]
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "gateway-system"}}} in peers


@pytest.mark.parametrize(("path", "value"), [
    (("rules", 0, "backendRefs", 0, "weight"), -1),
    (("rules", 0, "backendRefs", 0, "port"), 0),
    (("rules", 0, "backendRefs", 0, "prot"), 80),
    (("hostnames", 0), "Fraud.Example.com"),
    (("parentRefs", 0, "namespace"), "Gateway_System"),
    (("rules", 0, "matches", 0, "path", "type"), "Prefix"),
])
def test_route_schema_catches_a_broken_route(rollouts: Rendered, path: tuple[Any, ...],
                                             value: Any) -> None:
    broken = json.loads(json.dumps(by_kind(rollouts, "HTTPRoute")["fraud"]))
    node = broken["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, gateway_api.HTTP_ROUTE_SCHEMA)


def test_route_rules_catch_a_service_backend_without_port(rollouts: Rendered) -> None:
    broken = json.loads(json.dumps(by_kind(rollouts, "HTTPRoute")["churn"]))
    del broken["spec"]["rules"][0]["filters"][0]["requestMirror"]["backendRef"]["port"]
    broken["spec"]["rules"][0]["filters"][0]["type"] = "RequestHeaderModifier"
    assert len(gateway_api.cel_violations(broken)) == 2


# --- RetrainSchedule ---------------------------------------------------------------------------


@pytest.fixture
def retrain_renders(tmp_path_factory: pytest.TempPathFactory) -> list[Rendered]:
    return [render(f"docs-retrain-schedule-{i}", tmp_path_factory)
            for i in range(len(doc_examples(RETRAIN_DOC)))]


def test_each_retrain_schedule_renders_a_forbid_cron_job_with_its_config(
    retrain_renders: list[Rendered],
) -> None:
    from pulumi_mlops.runtime.retrain.config import RetrainConfig

    for rendered, name in zip(retrain_renders, ("fraud-nightly", "churn-weekly"), strict=True):
        object_name = f"{name}-retrain"
        cron_job = by_kind(rendered, "CronJob")[object_name]
        assert cron_job["spec"]["concurrencyPolicy"] == "Forbid"
        pod = pod_spec_of(cron_job)
        assert pod is not None and pod["restartPolicy"] == "Never"
        config_map = by_kind(rendered, "ConfigMap")[f"{object_name}-files"]
        config = RetrainConfig.model_validate_json(config_map["data"]["retrain.json"])
        assert config.schedule == cron_job["spec"]["schedule"]
        policy = by_kind(rendered, "NetworkPolicy")[object_name]
        assert policy["spec"]["ingress"] == []
        assert by_kind(rendered, "ServiceAccount")[object_name][
            "automountServiceAccountToken"] is False
