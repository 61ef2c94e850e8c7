"""The reference stack program rejects malformed stack config with the key the user wrote.

Each case copies the project (Pulumi.yaml and stacks/) into a temporary directory, writes one
bad ``stacks/Pulumi.bad.yaml`` and runs the program under the mock harness, as `mlops render`
does. The entries of ``mlops:registry``, ``mlops:services`` and ``mlops:retrain`` go to the
components' own args models as written, so most rules here are the components' own, reported
under the config keys.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime import settings

import pulumi_mlops as mlops
from pulumi_mlops.config import ConfigInputs
from pulumi_mlops.render.harness import ProgramConfigError, record_program

PROJECT = Path(__file__).resolve().parents[2]
URI_PASSWORD = "hunter2-db-secret"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the reference project, safe to rewrite."""
    shutil.copy(PROJECT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    shutil.copy(PROJECT / "Dockerfile", tmp_path / "Dockerfile")  # RuntimeImage builds it
    shutil.copytree(PROJECT / "stacks", tmp_path / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.fixture
def forget_failed_outputs() -> Iterator[None]:
    """Drop outputs a failed deployment left behind (harness bug, see test_registry_validation)."""
    yield
    settings.SETTINGS.outputs.clear()
    # Mark the failed futures' errors as seen. Otherwise asyncio logs them, with a traceback,
    # whenever the garbage collector happens to run; inside pytest's own traceback formatting
    # that re-enters ast.parse, which Python 3.11 aborts with a SystemError (INTERNALERROR).
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
            obj.exception()


def write_stack(project: Path, config: dict[str, Any], stack: str = "bad") -> str:
    (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return stack


# Kubernetes nodes pull the runtime image from a registry the stack pushes it to.
K8S = {"mlops:target": "kubernetes",
       "mlops:imageRegistry": {"server": "registry.example.com", "namespace": "ml"}}
DOCKER = {"mlops:target": "docker"}
GATEWAY = {"mlops:gateway": {"name": "public", "namespace": "gateway-system"}}


def services(**service: Any) -> dict[str, Any]:
    """``mlops:services`` with one service, ``cancer``, configured by ``service``."""
    return {"mlops:services": {"cancer": service}}


def svc_key(key: str) -> str:
    return f"mlops:services.cancer.{key}"


NIGHTLY = {"schedule": "0 3 * * *", "modelName": "cancer", "dataset": "sklearn:breast_cancer",
           "estimator": "sklearn.linear_model.LogisticRegression"}


def retrain(**changes: Any) -> dict[str, Any]:
    """``mlops:retrain`` with one schedule, ``nightly``: `NIGHTLY` with ``changes`` (a None
    value removes the key)."""
    schedule = {k: v for k, v in {**NIGHTLY, **changes}.items() if v is not None}
    return {"mlops:retrain": {"nightly": schedule}}


def rt_key(key: str) -> str:
    return f"mlops:retrain.nightly.{key}"


# (config, accepted config keys, a secret that must not be echoed). Whether the stack's own
# model or a component checks the value, the message names the config key it came from.
CASES = [
    pytest.param({"mlops:target": "openshift"}, ("mlops:target",), None,
                 id="unknown-target"),
    pytest.param({"mlops:namespace": "ml"}, ("mlops:target",), None, id="missing-target"),
    pytest.param({"target": "openshift"}, ("mlops:target",), None,
                 id="unknown-target-without-project-prefix"),
    pytest.param({**K8S, "mlops:registry": {"replicas": -1}}, ("mlops:registry.replicas",), None,
                 id="replicas-negative"),
    pytest.param({**K8S, "mlops:registry": {"replicas": "two"}}, ("mlops:registry.replicas",),
                 None, id="replicas-not-a-number"),
    pytest.param({**K8S, "mlops:registery": {"replicas": 2}}, ("mlops:registery",), None,
                 id="unknown-key-typo"),
    pytest.param({**K8S, "mlops:registry": {"replica": 2}}, ("mlops:registry.replica",), None,
                 id="unknown-nested-key-typo"),
    pytest.param({**K8S, "mlops:registry": "big"}, ("mlops:registry",), None,
                 id="registry-not-a-mapping"),
    pytest.param({**K8S, "mlops:registry": {"database": "mongo"}}, ("mlops:registry.database",),
                 None, id="database-unknown-kind"),
    pytest.param({**K8S, "mlops:registry": {"database": "external"}}, ("mlops:databaseUri",),
                 None, id="external-database-without-uri"),
    pytest.param({**K8S, "mlops:registry": {"defaultPermission": "ALL"}},
                 ("mlops:registry.defaultPermission",), None, id="default-permission-unknown"),
    pytest.param({**K8S, "mlops:registry": {"artifactsDestination": "ftp://x"}},
                 ("mlops:registry.artifactsDestination",), None,
                 id="artifacts-destination-ftp"),
    pytest.param({"mlops:target": "docker", "mlops:registry": {"replicas": 2}},
                 ("mlops:registry.replicas",), None, id="replicas-2-on-docker"),
    pytest.param({**K8S, "mlops:registry": {"database": "sqlite"}},
                 ("mlops:registry.database",), None, id="sqlite-on-kubernetes"),
    pytest.param({**K8S, "mlops:registry": {"database": {"kind": "sqlite"}}},
                 ("mlops:registry.database",), None, id="sqlite-on-kubernetes-as-a-mapping"),
    pytest.param({**K8S, "mlops:registry": {"resources": {"cpuLimit": "lots"}}},
                 ("mlops:registry.resources.cpuLimit",), None, id="cpu-limit-not-a-quantity"),
    pytest.param({**K8S, "mlops:registry": {"port": 80}}, ("mlops:registry.port",), None,
                 id="registry-port-privileged"),
    pytest.param({**K8S, "mlops:registry": {"artifactsStorageSize": "lots"}},
                 ("mlops:registry.artifactsStorageSize",), None,
                 id="artifacts-storage-size-not-a-quantity"),
    pytest.param({**K8S, "mlops:namespace": "Bad_NS"}, ("mlops:namespace",), None,
                 id="namespace-not-dns-label"),
    pytest.param({**K8S, "mlops:storageClass": "Fast_SSD"}, ("mlops:storageClass",), None,
                 id="storage-class-not-dns-name"),
    pytest.param({"mlops:target": "docker", "mlops:publishHost": "everywhere"},
                 ("mlops:publishHost",), None, id="publish-host-not-an-address"),
    pytest.param({**K8S, "mlops:registry": {"database": {"kind": "postgres",
                                                          "storageSize": "10 GB"}}},
                 ("mlops:registry.database.storageSize",), None,
                 id="database-storage-not-a-quantity"),
    pytest.param({**K8S, "mlops:registry": {"databaseStorage": "10Gi"}},
                 ("mlops:registry.databaseStorage",), None, id="database-storage-old-key"),
    pytest.param({**K8S, "mlops:registry": {"ingress": {"host": "Not A Host"}}},
                 ("mlops:registry.ingress.host",), None, id="ingress-host-not-dns-name"),
    pytest.param({"mlops:target": "docker", "mlops:registry": {"ingress": {
        "host": "mlflow.example.com"}}}, ("mlops:registry.ingress",), None,
                 id="ingress-on-docker"),
    pytest.param(
        {**K8S, "mlops:registry": {"database": "external"},
         "mlops:databaseUri": f"postgresql://mlflow:{URI_PASSWORD}@:5432/mlflow"},
        ("mlops:databaseUri",), URI_PASSWORD, id="plaintext-database-uri-without-host"),
    pytest.param(
        {**K8S, "mlops:registry": {"database": {
            "kind": "external", "uri": f"postgresql://mlflow:{URI_PASSWORD}@db:5432/mlflow"}}},
        ("mlops:registry.database.uri",), URI_PASSWORD, id="database-uri-in-the-entry"),
    pytest.param({**K8S, "mlops:registry": {"target": "docker"}}, ("mlops:registry.target",),
                 None, id="target-in-the-registry-entry"),
    pytest.param({**K8S, "mlops:registry": {"adminPassword": "short-secret"}},
                 ("mlops:registry.adminPassword",), "short-secret",
                 id="admin-password-too-short"),
    # mlops:services: what the config model checks ...
    pytest.param({**K8S, "mlops:services": ["cancer"]}, ("mlops:services",), None,
                 id="services-not-a-mapping"),
    pytest.param({**K8S, "mlops:services": {"Cancer_1": {}}}, ("mlops:services.Cancer_1",),
                 None, id="service-name-not-dns-label"),
    pytest.param({**K8S, **services(replica=2)}, (svc_key("replica"),), None,
                 id="service-unknown-key-typo"),
    pytest.param({**K8S, **services(replicas="two")}, (svc_key("replicas"),), None,
                 id="service-replicas-not-a-number"),
    pytest.param({**K8S, **services(autoscaling={"minReplicas": 2})},
                 (svc_key("autoscaling.maxReplicas"),), None,
                 id="autoscaling-without-max-replicas"),
    pytest.param({**K8S, **services(rollout={"kind": "blueGreen"})}, (svc_key("rollout.kind"),),
                 None, id="rollout-kind-unknown"),
    pytest.param({**K8S, **services(registry="other")}, (svc_key("registry"),), None,
                 id="registry-in-a-service-entry"),
    pytest.param({**K8S, **services(model_uri="s3://models/cancer")}, (svc_key("model_uri"),),
                 None, id="model-uri-written-snake-case"),
    pytest.param({**K8S, **services(rollout={"kind": "canary"})},
                 (svc_key("rollout.modelUri"),), None, id="canary-without-model-uri"),
    pytest.param({**K8S, **services(rollout={"kind": "canary", "modelUri": "models:/cancer/2",
                                             "percent": 10})},
                 (svc_key("rollout.percent"),), None, id="canary-with-shadow-percent"),
    pytest.param({**K8S, **services(rollout={"weight": 10})}, (svc_key("rollout.weight"),),
                 None, id="rolling-with-weight"),
    pytest.param({**DOCKER, **GATEWAY}, ("mlops:gateway",), None, id="gateway-on-docker"),
    pytest.param({**K8S, "mlops:gateway": {"name": "public"}}, ("mlops:gateway.namespace",),
                 None, id="gateway-without-namespace"),
    # ... and what the component checks, reported under the config key too.
    pytest.param({**K8S, **services(replicas=0)}, (svc_key("replicas"),), None,
                 id="service-replicas-zero"),
    pytest.param({**K8S, **services(modelUri="s3://models/cancer")}, (svc_key("modelUri"),),
                 None, id="model-uri-not-models-scheme"),
    pytest.param({**K8S, **services(autoscaling={"minReplicas": 5, "maxReplicas": 3})},
                 (svc_key("autoscaling.minReplicas"),), None, id="autoscaling-min-above-max"),
    pytest.param({**K8S, **services(rollout={"kind": "canary",
                                             "modelUri": "models:/cancer/2", "weight": 101})},
                 (svc_key("rollout.weight"),), None, id="canary-weight-above-100"),
    pytest.param({**K8S, **services(rollout={"kind": "shadow",
                                             "modelUri": "models:/cancer/2"})},
                 (svc_key("rollout"),), None, id="shadow-without-gateway"),
    pytest.param({**K8S, **GATEWAY, **services(rollout={"kind": "shadow",
                                                        "modelUri": "models:/cancer/2"})},
                 (svc_key("hostname"),), None, id="shadow-through-gateway-without-hostname"),
    pytest.param({**K8S, **services(modelUri="models:/cancer/1", rollout={
        "kind": "blue_green", "active": "models:/cancer/2"})}, (svc_key("modelUri"),), None,
                 id="blue-green-with-model-uri-and-active"),
    pytest.param({**K8S, **services(rollout="shadow")}, (svc_key("rollout.modelUri"),
                                                         svc_key("rollout")), None,
                 id="rollout-kind-alone-without-model-uri"),
    pytest.param({**K8S, **services(allowFrom=[{"podLabels": {"app": "web"}},
                                               {"podLabel": {"app": "api"}}])},
                 (svc_key("allowFrom[1].podLabel"),), None, id="service-allow-from-typo"),
    pytest.param({**K8S, **services(coerce="loose")}, (svc_key("coerce"),), None,
                 id="service-coerce-unknown"),
    pytest.param({**K8S, **services(resources={"cpuRequest": "2", "cpuLimit": "1"})},
                 (svc_key("resources.cpuRequest"),), None, id="service-cpu-request-above-limit"),
    pytest.param({**K8S, **services(port=80)}, (svc_key("port"),), None,
                 id="service-port-privileged"),
    pytest.param({**K8S, **services(hostname="Cancer Example")}, (svc_key("hostname"),), None,
                 id="service-hostname-not-dns-name"),
    pytest.param({**DOCKER, **services(replicas=2)}, (svc_key("replicas"),), None,
                 id="service-replicas-2-on-docker"),
    pytest.param({**DOCKER, **services(autoscaling={"maxReplicas": 3})},
                 (svc_key("autoscaling"),), None, id="autoscaling-on-docker"),
    pytest.param({**DOCKER, **services(rollout={"kind": "canary",
                                                "modelUri": "models:/cancer/2"})},
                 (svc_key("rollout"),), None, id="canary-on-docker"),
    # mlops:retrain: what the config model checks ...
    pytest.param({**K8S, "mlops:retrain": ["nightly"]}, ("mlops:retrain",), None,
                 id="retrain-not-a-mapping"),
    pytest.param({**K8S, "mlops:retrain": {"Nightly_1": NIGHTLY}}, ("mlops:retrain.Nightly_1",),
                 None, id="retrain-name-not-dns-label"),
    pytest.param({**K8S, **retrain(modelname="cancer")}, (rt_key("modelname"),), None,
                 id="retrain-unknown-key-typo"),
    pytest.param({**K8S, **retrain(schedule=None)}, (rt_key("schedule"),), None,
                 id="retrain-without-schedule"),
    pytest.param({**K8S, **retrain(gates={"min": {"roc_auc": "high"}})},
                 (rt_key("gates.min.roc_auc"),), None, id="retrain-gate-not-a-number"),
    pytest.param({**K8S, **retrain(gates={"minimum": {"roc_auc": 0.9}})},
                 (rt_key("gates.minimum"),), None, id="retrain-gate-kind-unknown"),
    pytest.param({**K8S, **retrain(search={"C": 1.0})}, (rt_key("search.C"),), None,
                 id="retrain-search-not-a-list"),
    # ... and what the component checks, reported under the config key too.
    pytest.param({**K8S, **retrain(schedule="nightly")}, (rt_key("schedule"),), None,
                 id="retrain-schedule-not-cron"),
    pytest.param({**K8S, **retrain(gates={"minImprovement": {"Roc-AUC": 0.0}})},
                 (rt_key("gates.minImprovement.Roc-AUC"),), None,
                 id="retrain-gate-metric-not-a-metric-name"),
    pytest.param({**K8S, **retrain(gates={"maxRegression": {"log_loss": -1}})},
                 (rt_key("gates.maxRegression.log_loss"),), None,
                 id="retrain-max-regression-negative"),
    pytest.param({**K8S, **retrain(trainer="pkg.train:fit")}, (rt_key("estimator"),), None,
                 id="retrain-estimator-and-trainer"),
    pytest.param({**K8S, **retrain(estimator=None)}, (rt_key("estimator"),), None,
                 id="retrain-without-estimator-or-trainer"),
    pytest.param({**K8S, **retrain(estimator="LogisticRegression")}, (rt_key("estimator"),),
                 None, id="retrain-estimator-not-an-import-path"),
    pytest.param({**K8S, **retrain(dataset="sklearn:mnist")}, (rt_key("dataset"),), None,
                 id="retrain-dataset-not-bundled"),
    pytest.param({**K8S, **retrain(dataset="https://data.example.com/cancer.csv")},
                 (rt_key("targetColumn"),), None, id="retrain-csv-without-target-column"),
    pytest.param({**K8S, **retrain(promoteAlias="challenger")}, (rt_key("promoteAlias"),), None,
                 id="retrain-promote-alias-is-the-challenger-alias"),
    pytest.param({**K8S, **retrain(timeout=10)}, (rt_key("timeout"),), None,
                 id="retrain-timeout-below-a-minute"),
    pytest.param({**K8S, **retrain(datasetHeaders={"Authorization": "Bearer hunter2-token"})},
                 (rt_key("datasetHeaders"),), "hunter2-token",
                 id="retrain-dataset-headers-without-a-url-dataset"),
    pytest.param({**K8S, **retrain(datasetHeaders={"Bad Header": "Bearer hunter2-token"},
                                   dataset="https://data.example.com/cancer.csv",
                                   targetColumn="label")},
                 (rt_key("datasetHeaders"),), "hunter2-token",
                 id="retrain-dataset-headers-bad-header-name"),
    pytest.param({**DOCKER, **retrain(resources={"cpuRequest": "4"})},
                 (rt_key("resources.cpuRequest"),), None, id="retrain-cpu-request-above-limit"),
]


@pytest.mark.usefixtures("forget_failed_outputs")
@pytest.mark.parametrize(("config", "paths", "secret"), CASES)
def test_malformed_stack_config_is_rejected_with_the_key(
    project: Path, config: dict[str, Any], paths: tuple[str, ...], secret: str | None
) -> None:
    stack = write_stack(project, config)

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    message = str(raised.value)
    assert any(f"`{p}`" in message for p in paths), message
    assert {p.path for p in raised.value.problems} & set(paths), message
    assert "Fix:" in message
    if secret is not None:
        assert secret not in message


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_record_and_declare_resources(project: Path, stack: str) -> None:
    recording = record_program(project, stack)

    assert recording.resources
    assert recording.of_type("mlops:index:ModelRegistry")
    assert "tracking_uri" in recording.outputs
    [service] = recording.of_type("mlops:index:ModelService")
    assert service.name == "cancer"
    assert set(recording.outputs["endpoints"]) == set(recording.outputs["models"]) == {"cancer"}
    [schedule] = recording.of_type("mlops:index:RetrainSchedule")
    assert schedule.name == "cancer-nightly"
    assert set(recording.outputs["retrain_schedules"]) == {"cancer-nightly"}


def test_unknown_stack_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ProgramConfigError, match=r"known stacks are dev, prod, staging"):
        record_program(project, "qa")


@pytest.mark.usefixtures("forget_failed_outputs")
def test_external_database_with_secret_uri_renders(project: Path) -> None:
    stack = write_stack(project, {
        **K8S,
        "mlops:registry": {"database": "external"},
        "mlops:databaseUri": {"secure": "v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBBBBBBBBBBBBBBBBBB"},
    })

    recording = record_program(project, stack)

    assert recording.of_type("mlops:index:ModelRegistry")


def test_numeric_namespace_is_a_namespace(project: Path) -> None:
    stack = write_stack(project, {**K8S, "mlops:namespace": "123"})

    recording = record_program(project, stack)

    assert recording.of_type("mlops:index:ModelRegistry")


def _component(recording: Any, name: str) -> Any:
    return next(c for c in recording.components if getattr(c, "plan", None) is not None
                and c.plan.name == name)


def test_a_component_rule_names_the_config_keys_in_rule_and_fix(project: Path) -> None:
    stack = write_stack(project, {**K8S, **services(
        autoscaling={"minReplicas": 5, "maxReplicas": 3})})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    assert str(raised.value) == (
        "stack 'bad' config: `mlops:services.cancer.autoscaling.minReplicas` must not exceed "
        "`mlops:services.cancer.autoscaling.maxReplicas` (got 5). Fix: lower "
        "`mlops:services.cancer.autoscaling.minReplicas` or raise "
        "`mlops:services.cancer.autoscaling.maxReplicas`.")


def test_a_service_serves_the_champion_of_its_name_by_default(project: Path) -> None:
    stack = write_stack(project, {**K8S, "mlops:services": {"fraud": {}}})

    recording = record_program(project, stack)

    plan = _component(recording, "fraud").plan
    assert [(t.track, t.model.uri, t.replicas) for t in plan.tracks] == [
        ("stable", "models:/fraud@champion", 1)]


def test_a_canary_through_the_gateway_declares_a_weighted_route(project: Path) -> None:
    stack = write_stack(project, {**K8S, **GATEWAY, **services(
        hostname="cancer.example.com",
        rollout={"kind": "canary", "modelUri": "models:/cancer/2", "weight": 20})})

    recording = record_program(project, stack)

    [route] = recording.of_type("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute")
    backends = route.inputs["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [("cancer", 80), ("cancer-canary", 20)]
    assert recording.outputs["endpoints"]["cancer"] == "http://cancer.example.com"


def test_blue_green_serves_the_active_model_without_a_model_uri(project: Path) -> None:
    stack = write_stack(project, {**K8S, **services(rollout={
        "kind": "blue_green", "active": "models:/cancer/3", "preview": "models:/cancer/4"})})

    recording = record_program(project, stack)

    plan = _component(recording, "cancer").plan
    assert [(t.track, t.object_name) for t in plan.tracks] == [
        ("active", "cancer-v3"), ("preview", "cancer-v4")]


def test_a_stack_without_services_declares_none(project: Path) -> None:
    stack = write_stack(project, K8S)

    recording = record_program(project, stack)

    assert recording.of_type("mlops:index:ModelService") == []
    assert recording.outputs["endpoints"] == {}


def test_the_docs_stack_config_example_renders(project: Path) -> None:
    doc = (PROJECT / "docs" / "model-service.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    stack = write_stack(project, {**K8S, **yaml.safe_load(example)})

    recording = record_program(project, stack)

    plan = _component(recording, "cancer").plan
    assert [t.track for t in plan.tracks] == ["stable", "canary"]


def test_a_component_rule_about_a_gate_names_the_metric_as_written(project: Path) -> None:
    stack = write_stack(project, {**K8S, **retrain(gates={"minImprovement": {"Roc-AUC": 0.0}})})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    assert str(raised.value) == (
        "stack 'bad' config: `mlops:retrain.nightly.gates.minImprovement.Roc-AUC` must match "
        "the pattern `^[a-z][a-z0-9_]*$` (got 'Roc-AUC'). Fix: set "
        "`mlops:retrain.nightly.gates.minImprovement.Roc-AUC` to a value matching "
        "`^[a-z][a-z0-9_]*$`.")


def test_a_retrain_schedule_takes_the_components_defaults_for_unset_settings(
    project: Path,
) -> None:
    stack = write_stack(project, {**K8S, **retrain(params={"max_depth": None},
                                                   gates={"min": {"roc_auc": 0.9}})})

    recording = record_program(project, stack)

    plan = _component(recording, "nightly").plan
    assert plan.config.params == {"max_depth": None}
    assert plan.config.gates.min == {"roc_auc": 0.9}
    assert plan.config.promote_alias == "champion"
    assert plan.job.resources.cpu_request == "500m"
    assert plan.job.startup_seconds == 3600
    assert plan.config.schedule == "0 3 * * *"


def test_a_rule_across_inputs_names_each_related_input_by_its_config_key(project: Path) -> None:
    stack = write_stack(project, {**DOCKER, **services(
        rollout={"kind": "canary", "modelUri": "models:/cancer/2"})})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    [problem] = raised.value.problems
    assert problem.related == (svc_key("rollout.kind"), "mlops:target")
    assert str(raised.value) == (
        "stack 'bad' config: `mlops:services.cancer.rollout` canary rollouts need the Kubernetes "
        "target (got 'canary'). Fix: set `mlops:services.cancer.rollout.kind` to rolling on "
        "Docker, or deploy to a Kubernetes `mlops:target`.")


def test_a_nested_rule_names_the_key_as_written(project: Path) -> None:
    stack = write_stack(project, {**K8S, "mlops:registry": {"database": "sqlite"}})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    assert str(raised.value) == (
        "stack 'bad' config: `mlops:registry.database` cannot be SQLite on Kubernetes (got "
        "'sqlite'). Fix: set `mlops:registry.database` to postgres (run beside the server) or "
        "external (a database you run).")


def test_a_database_uri_in_the_entry_is_refused_without_echoing_it(project: Path) -> None:
    uri = f"postgresql://mlflow:{URI_PASSWORD}@db:5432/mlflow"
    stack = write_stack(project, {**K8S, "mlops:registry": {"database": {
        "kind": "external", "uri": uri}}})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    assert str(raised.value) == (
        "stack 'bad' config: `mlops:registry.database.uri` is set by the program, from "
        "`mlops:databaseUri` (got '[redacted]'). Fix: remove it, and set `mlops:databaseUri` "
        "instead.")


def test_a_nested_input_given_in_part_keeps_the_components_defaults(project: Path) -> None:
    stack = write_stack(project, {**K8S, **retrain(resources={"cpuLimit": "4"})})

    recording = record_program(project, stack)

    resources = _component(recording, "nightly").plan.job.resources
    assert (resources.cpu_request, resources.memory_request, resources.cpu_limit,
            resources.memory_limit) == ("500m", "1Gi", "4", "2Gi")


def test_every_input_of_the_args_model_can_be_set(project: Path) -> None:
    stack = write_stack(project, {**K8S, **services(
        scratchSize="4Gi", modelLoadTimeout=600, coerce="lossy",
        allowFrom=[{"namespaceLabels": {"team": "fraud"}}])})

    recording = record_program(project, stack)

    service = _component(recording, "cancer")
    assert (service.args.scratch_size, service.args.model_load_timeout,
            service.args.coerce.value) == ("4Gi", 600, "lossy")
    assert service.plan.allow_from == (mlops.Peer.namespaces({"team": "fraud"}),)


def test_config_inputs_map_keys_both_ways_by_the_args_model() -> None:
    entry = ConfigInputs.read("mlops:retrain.nightly", mlops.RetrainScheduleArgs, {
        "modelName": "cancer", "target_column": "label", "params": {"maxDepth": 3},
        "gates": {"minImprovement": {"Roc-AUC": 0.0}}, "resources": {"cpuLimit": "4"}})

    assert entry.inputs == {
        "model_name": "cancer", "target_column": "label", "params": {"maxDepth": 3},
        "gates": {"min_improvement": {"Roc-AUC": 0.0}},
        "resources": {"cpu_request": "500m", "memory_request": "1Gi", "cpu_limit": "4",
                      "memory_limit": "2Gi"}}
    assert [entry.key(p) for p in ("model_name", "target_column", "params.maxDepth",
                                   "gates.min_improvement.Roc-AUC", "resources.memory_limit",
                                   "successful_jobs_history", "(root)")] == [
        "mlops:retrain.nightly.modelName", "mlops:retrain.nightly.target_column",
        "mlops:retrain.nightly.params.maxDepth",
        "mlops:retrain.nightly.gates.minImprovement.Roc-AUC",
        "mlops:retrain.nightly.resources.memoryLimit",
        "mlops:retrain.nightly.successfulJobsHistory", "mlops:retrain.nightly"]


# --- the runtime image: built from the repository, never implied ---------------------------


def _image_of(recording: Any, type_: str, name: str) -> Any:
    inputs = recording.get(type_, name).inputs
    if type_ == "docker:index/container:Container":
        return inputs["image"]
    return inputs["spec"]["template"]["spec"]["containers"][0]["image"]


def test_the_dev_stack_builds_the_runtime_image_and_runs_it(project: Path) -> None:
    recording = record_program(project, "dev", preview=False)  # as `pulumi up` sees it

    [build] = recording.of_type("docker:index/image:Image")
    assert build.inputs["skipPush"] is True  # kept on the dev engine
    assert build.inputs["build"]["dockerfile"] == "../Dockerfile"
    # The workloads run the image built on the engine (by the ID the provider reports for a
    # local build); nothing pulls it from elsewhere.
    for name in ("cancer", "cancer-nightly-retrain"):
        assert _image_of(recording, "docker:index/container:Container", name) == (
            build.outputs["repoDigest"])
    pulled = {r.inputs["name"] for r in recording.of_type("docker:index/remoteImage:RemoteImage")}
    # Only third-party images: the registry's and Prometheus'.
    assert pulled == {"ghcr.io/mlflow/mlflow:v3.17.2-full", "prom/prometheus:v2.53.4"}


def test_a_kubernetes_stack_without_an_image_registry_says_where_to_push(
        project: Path, forget_failed_outputs: None) -> None:
    stack = write_stack(project, {"mlops:target": "kubernetes", **services()})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    assert "`mlops:imageRegistry` is required on the Kubernetes target" in str(raised.value)


def test_a_stack_requiring_digests_refuses_an_image_pinned_by_tag(
        project: Path, forget_failed_outputs: None) -> None:
    tagged = "registry.example.com/ml/mlops-runtime:0.1.0"
    stack = write_stack(project, {**K8S, "mlops:requireImageDigest": True,
                                  "mlops:image": tagged, **services()})

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    message = str(raised.value)
    assert "`mlops:image` must be pinned by digest in this stack" in message
    assert tagged in message


def test_a_given_image_is_what_every_workload_runs(project: Path) -> None:
    pinned = "registry.example.com/ml/mlops-runtime@sha256:" + "a" * 64
    stack = write_stack(project, {**K8S, "mlops:requireImageDigest": True,
                                  "mlops:image": pinned, **services(), **retrain()})

    recording = record_program(project, stack)

    assert not recording.of_type("docker:index/image:Image")  # nothing built
    assert _image_of(recording, "kubernetes:apps/v1:Deployment", "cancer") == pinned
    job = recording.get("kubernetes:batch/v1:CronJob", "nightly-retrain").inputs
    assert job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "image"] == pinned
