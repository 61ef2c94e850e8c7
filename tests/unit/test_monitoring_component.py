"""MonitoringStack under Pulumi's mocks: what it declares on each target.

Operator mode's custom resources are checked against the Prometheus Operator's CRD schemas
(``monitoring.coreos.com/v1``, prometheus-operator v0.93 ``example/prometheus-operator-crd``)
for the fields we emit, closed like the Gateway API check: a field we start emitting must be
added here from the CRD first. The PrometheusRule's groups go through ``promtool check rules``.
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
from pulumi_mlops.plans.monitoring import rule_groups
from pulumi_mlops.render import Recording, record, unwrap_secrets
from tests.recording import RUNTIME_IMAGE

CUSTOM = "kubernetes:monitoring.coreos.com/v1:{kind}"
K8S = mlops.KubernetesTarget(namespace="ml")

# --- the CRDs' schemas, for the fields MonitoringStack emits ----------------------------------

_DURATION = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
             r"(([0-9]+)ms)?)$")
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_METADATA = _closed({"name": {"type": "string"}, "namespace": {"type": "string"},
                     "labels": _STRINGS}, ("name",))
_RELABEL = _closed({
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                        "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                        "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                        "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    "sourceLabels": {"type": "array",
                     "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "targetLabel": {"type": "string"}, "replacement": {"type": "string"},
})
POD_MONITOR = _closed({
    "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
    "metadata": _METADATA,
    "spec": _closed({
        "selector": _closed({"matchLabels": _STRINGS}),
        "namespaceSelector": _closed({"matchNames": {"type": "array",
                                                      "items": {"type": "string"}}}),
        "podMetricsEndpoints": {"type": "array", "items": _closed({
            "port": {"type": "string"}, "path": {"type": "string"},
            "relabelings": {"type": "array", "items": _RELABEL}})},
    }, ("selector",)),
}, ("apiVersion", "kind", "metadata", "spec"))
PROMETHEUS_RULE = _closed({
    "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
    "metadata": _METADATA,
    "spec": _closed({"groups": {"type": "array", "items": _closed({
        "name": {"type": "string", "minLength": 1},
        "rules": {"type": "array", "items": _closed({
            "record": {"type": "string"}, "alert": {"type": "string"},
            "expr": {"type": "string"},
            "for": {"type": "string", "pattern": _DURATION},
            "keep_firing_for": {"type": "string", "minLength": 1, "pattern": _DURATION},
            "labels": _STRINGS, "annotations": _STRINGS}, ("expr",))},
    }, ("name",))}}),
}, ("apiVersion", "kind", "metadata", "spec"))


def _operator() -> Recording:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        fraud = mlops.ModelService("fraud", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                                   model_uri="models:/fraud/3",
                                   rollout=mlops.Rollout.canary("models:/fraud/4", weight=10))
        mlops.MonitoringStack("mon", target=K8S, services=[fraud],
                              slos=mlops.Slo(latency_p99_ms=50),
                              prometheus=mlops.Prometheus.operator("kps"))

    return record(program, preview=False)


def _object(resource: Any) -> dict[str, Any]:
    inputs = dict(unwrap_secrets(dict(resource.inputs)))
    return {k: v for k, v in inputs.items() if k in ("apiVersion", "kind", "metadata", "spec")}


def test_operator_mode_declares_crds_the_operator_accepts_labelled_for_its_release() -> None:
    rec = _operator()
    monitors = rec.of_type(CUSTOM.format(kind="PodMonitor"))
    (rule,) = rec.of_type(CUSTOM.format(kind="PrometheusRule"))
    assert {m.name for m in monitors} == {"mon-fraud", "mon-fraud-canary"}
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
    groups = _object(rule)["spec"]["groups"]
    assert groups == rule_groups(["fraud"], mlops.Slo(latency_p99_ms=50), mlops.DriftAlerts())


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
        components.append(mlops.MonitoringStack("mon", target=target, services=[service]))

    rec = record(program, preview=False)
    container = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-prometheus").inputs)))
    init = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-prometheus-init").inputs)))
    assert container["user"] == "10001:10001" and container["readOnly"] is True
    assert container["healthcheck"]["tests"][:2] == ["CMD", "wget"]
    assert container["ports"] == [{"internal": 9090, "external": 9090, "ip": "127.0.0.1"}]
    assert container["networksAdvanced"][0]["name"] == "reg-net"
    files = [e.split("=", 1)[1] for e in init["envs"]]
    config = next(yaml.safe_load(f) for f in files if "scrape_configs" in f)
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["fraud:8080"], "labels": {
        "service": "fraud", "track": "stable", "version": "3"}}]
    (mon,) = components
    assert mon.external_prometheus_url is not None


@pytest.mark.parametrize(("target", "prometheus", "path"), [
    (K8S, mlops.Prometheus.standalone(), "prometheus"),
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
