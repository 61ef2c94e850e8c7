"""MonitoringStack under Pulumi's mocks: what it declares on each target.

Operator mode's custom resources are checked against the Prometheus Operator's CRD schemas
(`tests.render.prometheus_operator`). The PrometheusRule's groups go through
``promtool check rules``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import pulumi_mlops as mlops
from pulumi_mlops.plans.dashboards import dashboards
from pulumi_mlops.plans.monitoring import Schedule, rule_groups
from pulumi_mlops.plans.monitoring_stack import schedule_interval
from pulumi_mlops.render import Recording, record, unwrap_secrets
from tests.recording import RUNTIME_IMAGE
from tests.render.prometheus_operator import POD_MONITOR, PROMETHEUS_RULE
from tests.unit.docker_init import init_files

CUSTOM = "kubernetes:monitoring.coreos.com/v1:{kind}"
K8S = mlops.KubernetesTarget(namespace="ml")



def _operator() -> Recording:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        fraud = mlops.ModelService("fraud", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                                   model_uri="models:/fraud/3",
                                   rollout=mlops.Rollout.canary("models:/fraud/4", weight=10))
        weekly = mlops.RetrainSchedule("weekly", target=K8S, registry=registry,
                                       image=RUNTIME_IMAGE, schedule="0 3 * * 1",
                                       model_name="fraud", dataset="sklearn:breast_cancer",
                                       estimator="sklearn.linear_model.LogisticRegression")
        mlops.MonitoringStack("mon", target=K8S, services=[fraud], registry=registry,
                              retrain=[weekly], slos=mlops.Slo(latency_p99_ms=50),
                              quality=mlops.Quality(min_accuracy=0.8),
                              prometheus=mlops.Prometheus.operator("kps", namespace="obs"))

    return record(program, preview=False)


def _object(resource: Any) -> dict[str, Any]:
    inputs = dict(unwrap_secrets(dict(resource.inputs)))
    return {k: v for k, v in inputs.items() if k in ("apiVersion", "kind", "metadata", "spec")}


def test_operator_mode_declares_crds_the_operator_accepts_labelled_for_its_release() -> None:
    rec = _operator()
    monitors = rec.of_type(CUSTOM.format(kind="PodMonitor"))
    (rule,) = rec.of_type(CUSTOM.format(kind="PrometheusRule"))
    assert {m.name for m in monitors} == {"mon-fraud", "mon-fraud-canary", "mon-reg-mlflow"}
    for resource, schema in [*((m, POD_MONITOR) for m in monitors), (rule, PROMETHEUS_RULE)]:
        document = _object(resource)
        jsonschema.validate(document, schema)
        assert document["metadata"]["labels"]["release"] == "kps"
        assert document["metadata"]["namespace"] == "ml"
    stable = _object(rec.get(CUSTOM.format(kind="PodMonitor"), "mon-fraud"))
    relabel = {r["targetLabel"]: r for r in stable["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert relabel["service"]["replacement"] == "fraud"
    assert relabel["track"]["replacement"] == "stable"
    assert relabel["version"]["sourceLabels"] == [
        "__meta_kubernetes_pod_label_mlops_dev_model_version"]
    registry = _object(rec.get(CUSTOM.format(kind="PodMonitor"), "mon-reg-mlflow"))["spec"]
    assert registry["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "reg"
    assert registry["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "registry", "replacement": "reg"} in \
        registry["podMetricsEndpoints"][0]["relabelings"]
    # Its metrics exporter's port (MLflow serves its own /metrics to admins only), without
    # credentials: no Secret of the stack's own holds any.
    assert registry["podMetricsEndpoints"][0]["port"] == "metrics"
    # The servers' metrics port, which answers nothing else.
    assert stable["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    for monitor in monitors:
        assert "basicAuth" not in _object(monitor)["spec"]["podMetricsEndpoints"][0]
    assert not [s.name for s in rec.of_type("kubernetes:core/v1:Secret")
                if s.name.startswith("mon-")]
    groups = _object(rule)["spec"]["groups"]
    assert groups == rule_groups(
        ["fraud"], mlops.Slo(latency_p99_ms=50), mlops.DriftAlerts(),
        mlops.Quality(min_accuracy=0.8), "reg",
        [Schedule("weekly-retrain", 7 * 86400)], namespace="ml")


def test_operator_mode_admits_prometheus_to_each_scraped_port_only() -> None:
    rec = _operator()
    policies = {r.name: _object(r)["spec"] for r in rec.of_type(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy") if r.name.endswith("-scrape")}
    assert set(policies) == {"mon-fraud-scrape", "mon-fraud-canary-scrape",
                             "mon-reg-mlflow-scrape"}
    for name, spec in policies.items():
        monitor = _object(rec.get(CUSTOM.format(kind="PodMonitor"), name.removesuffix("-scrape")))
        assert spec["podSelector"] == monitor["spec"]["selector"]
        # Ingress only: the workloads' own policies keep ruling their egress.
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "obs"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
        # The metrics port only: a model server's scoring port (8080) stays closed to it.
        assert rule["ports"] == [{"protocol": "TCP",
                                  "port": 9101 if "reg" in name else 9102}]


def test_a_schedules_interval_is_its_longest_gap() -> None:
    assert schedule_interval("0 3 * * *") == 86400
    assert schedule_interval("*/15 * * * *") == 900
    assert schedule_interval("0 9 * * 1-5") == 3 * 86400  # Friday to Monday
    assert schedule_interval("0 0 1 * *") == 31 * 86400


def test_the_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/system-deps.sh"
    (rule,) = _operator().of_type(CUSTOM.format(kind="PrometheusRule"))
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": _object(rule)["spec"]["groups"]}))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dashboards_are_config_maps_for_the_grafana_sidecar() -> None:
    rec = _operator()
    maps = {r.name: _object(r) | {"data": r.inputs["data"]}
            for r in rec.of_type("kubernetes:core/v1:ConfigMap") if r.name.startswith("mon-")}
    assert set(maps) == {f"mon-{uid}" for uid in dashboards()}
    for name, document in maps.items():
        assert document["metadata"]["labels"]["grafana_dashboard"] == "1"
        uid = name.removeprefix("mon-")
        assert json.loads(document["data"][f"{uid}.json"]) == dashboards()[uid]


def test_docker_runs_a_hardened_prometheus_scraping_the_service_container() -> None:
    components: list[Any] = []

    def program() -> None:
        target = mlops.DockerTarget()
        registry = mlops.ModelRegistry("reg", target=target)
        service = mlops.ModelService("fraud", target=target, registry=registry,
                                     image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        components.append(mlops.MonitoringStack("mon", target=target, services=[service],
                                                registry=registry))

    rec = record(program, preview=False)
    container = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-prometheus").inputs)))
    init = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-prometheus-init").inputs)))
    assert container["user"] == "10001:10001" and container["readOnly"] is True
    assert container["healthcheck"]["tests"][:2] == ["CMD", "wget"]
    assert container["ports"] == [{"internal": 9090, "external": 9090, "ip": "127.0.0.1"}]
    assert container["networksAdvanced"][0]["name"] == "reg-net"
    files = list(init_files(init).values())
    config = next(yaml.safe_load(f) for f in files if "scrape_configs" in f)
    registry, service = config["scrape_configs"]
    assert service["static_configs"] == [{"targets": ["fraud:9102"], "labels": {
        "service": "fraud", "track": "stable", "version": "3"}}]
    # The registry's metrics exporter, without credentials: Prometheus holds no secret.
    assert registry["static_configs"] == [{"targets": ["reg-mlflow-metrics:9101"],
                                           "labels": {"registry": "reg"}}]
    assert "basic_auth" not in registry
    password = dict(unwrap_secrets(dict(rec.get("random:index/randomPassword:RandomPassword",
                                                "reg-admin-password").outputs)))["result"]
    assert password not in "".join(files)
    assert "password" not in init["entrypoints"][2]
    (mon,) = components
    assert mon.external_prometheus_url is not None


@pytest.mark.parametrize(("target", "prometheus", "path"), [
    (mlops.DockerTarget(), mlops.Prometheus.operator("kps"), "prometheus"),
])
def test_a_mode_the_target_cannot_run_is_refused(target: Any, prometheus: Any,
                                                 path: str) -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        service = mlops.ModelService("fraud", target=target, registry=registry,
                                     image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        mlops.MonitoringStack("mon", target=target, services=[service], prometheus=prometheus)

    with pytest.raises(mlops.ValidationError, match=f"`{path}`"):
        record(program)


def _standalone(slos: Any = None, **prometheus: Any) -> Recording:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        fraud = mlops.ModelService("fraud", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                                   model_uri="models:/fraud/3")
        nightly = mlops.RetrainSchedule("nightly", target=K8S, registry=registry,
                                        image=RUNTIME_IMAGE, schedule="0 3 * * *",
                                        model_name="fraud", dataset="sklearn:breast_cancer",
                                        estimator="sklearn.linear_model.LogisticRegression")
        mlops.MonitoringStack("mon", target=K8S, services=[fraud], registry=registry,
                              retrain=[nightly], slos=slos or mlops.Slo(),
                              prometheus=mlops.Prometheus.standalone(**prometheus))

    return record(program, preview=False)


def test_standalone_on_kubernetes_runs_prometheus_finding_pods_by_dns() -> None:
    rec = _standalone(kube_state_metrics="kube-state-metrics.kube-system.svc:8080")
    assert rec.of_type(CUSTOM.format(kind="PodMonitor")) == []
    assert rec.of_type(CUSTOM.format(kind="PrometheusRule")) == []
    stateful_set = rec.get("kubernetes:apps/v1:StatefulSet", "mon-prometheus").inputs["spec"]
    (container,) = stateful_set["template"]["spec"]["containers"]
    assert container["image"] == "prom/prometheus:v2.53.4"
    assert stateful_set["template"]["spec"]["automountServiceAccountToken"] is False
    assert stateful_set["volumeClaimTemplates"][0]["spec"]["resources"]["requests"][
        "storage"] == "10Gi"
    config = yaml.safe_load(rec.get("kubernetes:core/v1:ConfigMap", "mon-prometheus-files")
                            .inputs["data"]["prometheus.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"mlops-service/mon-fraud", "mlops-registry/mon-reg-mlflow",
                         "kube-state-metrics"}
    # Headless Services of its own, listing ready and unready pods.
    headless = _object(rec.get("kubernetes:core/v1:Service", "mon-fraud"))["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert jobs["mlops-service/mon-fraud"]["dns_sd_configs"][0]["names"] == [
        "mon-fraud.ml.svc.cluster.local"]
    assert jobs["kube-state-metrics"]["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "kube_(cronjob|job)_.+", "action": "keep"}]
    # The registry's metrics exporter, by its pods' DNS records; no credentials, so no Secret.
    assert jobs["mlops-registry/mon-reg-mlflow"]["dns_sd_configs"] == [
        {"names": ["mon-reg-mlflow.ml.svc.cluster.local"], "type": "A", "port": 9101}]
    assert "basic_auth" not in jobs["mlops-registry/mon-reg-mlflow"]
    assert not [r.name for r in rec.of_type("kubernetes:core/v1:Secret")
                if r.name.startswith("mon-")]
    policies = {r.name: _object(r)["spec"] for r in rec.of_type(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy") if r.name.startswith("mon-")}
    assert policies["mon-fraud-scrape"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                                         "app.kubernetes.io/instance": "mon"}}}]
    egress = policies["mon-prometheus"]["egress"]
    assert {"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}]} in egress
    assert len(egress) == 4  # DNS, the service, the registry, kube-state-metrics


def test_a_changed_rule_rolls_the_standalone_prometheus() -> None:
    # It does not reload its files by itself: the pod template carries their digest.
    def digest(slos: Any) -> str:
        rec = _standalone(slos, kube_state_metrics="kube-state-metrics.kube-system.svc:8080")
        template = rec.get("kubernetes:apps/v1:StatefulSet", "mon-prometheus").inputs[
            "spec"]["template"]["metadata"]
        return str(template["annotations"]["mlops.dev/config-digest"])

    same = digest(mlops.Slo())
    assert len(same) == 64 and digest(mlops.Slo()) == same
    assert digest(mlops.Slo(availability=0.99)) != same


def test_standalone_on_kubernetes_needs_kube_state_metrics_for_retrain_schedules() -> None:
    with pytest.raises(mlops.ValidationError, match=r"`prometheus\.kube_state_metrics`"):
        _standalone()


def test_services_must_be_model_services() -> None:
    with pytest.raises(mlops.ValidationError, match="services"):
        record(lambda: mlops.MonitoringStack("mon", target=K8S, services=["fraud"],
                                             prometheus=mlops.Prometheus.operator()))
    with pytest.raises(mlops.ValidationError, match="services"):
        record(lambda: mlops.MonitoringStack("mon", target=K8S, services=[],
                                             prometheus=mlops.Prometheus.operator()))


def test_services_in_another_namespace_are_refused() -> None:
    other = mlops.KubernetesTarget(namespace="team-b")

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=other)
        service = mlops.ModelService("fraud", target=other, registry=registry,
                                     image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        mlops.MonitoringStack("mon", target=K8S, services=[service],
                              prometheus=mlops.Prometheus.operator())

    with pytest.raises(mlops.ValidationError, match="another namespace"):
        record(program)
