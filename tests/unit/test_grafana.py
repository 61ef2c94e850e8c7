"""MonitoringStack's own Grafana: what it is provisioned with and how it is declared.

Grafana has no package these machines can install, so it does not run in these tests: its
provisioning files are checked against the format Grafana's documentation gives for file
provisioning (``apiVersion: 1``; ``datasources`` with name, type, access, url; dashboard
``providers`` of type ``file`` with ``options.path``), the dashboards against the documents the
round-trip and query tests check (tests/unit/test_monitoring_rules.py,
tests/e2e/test_monitoring_e2e.py), and the declared objects by the render checks.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

import pulumi_mlops as mlops
from pulumi_mlops._pulumi_compat import is_secret_envelope
from pulumi_mlops.plans.dashboards import dashboards
from pulumi_mlops.plans.grafana import (
    DATASOURCE_UID,
    GRAFANA_DASHBOARDS,
    GRAFANA_PROVISIONING,
    Grafana,
    grafana_workload,
)
from pulumi_mlops.plans.workload import SecretRef
from pulumi_mlops.render import record, unwrap_secrets
from tests.recording import RUNTIME_IMAGE


def _files(workload: Any) -> dict[str, Any]:
    return {f.path: f.content for f in workload.files}


def test_grafana_is_provisioned_with_prometheus_and_every_dashboard() -> None:
    workload = grafana_workload("mon", Grafana(), "http://mon-prometheus:9090", dashboards())
    files = _files(workload)
    datasources = yaml.safe_load(
        files[f"{GRAFANA_PROVISIONING}/datasources/mlops-datasources.yaml"])
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source == {"name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID,
                      "access": "proxy", "url": "http://mon-prometheus:9090",
                      "isDefault": True, "editable": False}
    providers = yaml.safe_load(files[f"{GRAFANA_PROVISIONING}/dashboards/mlops-dashboards.yaml"])
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"] == {"path": GRAFANA_DASHBOARDS}
    boards = {path.rsplit("/", 1)[1]: json.loads(content) for path, content in files.items()
              if path.startswith(GRAFANA_DASHBOARDS)}
    assert boards == {f"{uid}.json": document for uid, document in dashboards().items()}
    # Every dashboard picks its data source by a variable of Prometheus' type: the provisioned
    # default one.
    for document in boards.values():
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"


def test_the_admin_password_comes_from_a_secret_file_and_nothing_phones_home() -> None:
    workload = grafana_workload("mon", Grafana(admin_user="ops"), "http://p:9090", {})
    password_file = workload.env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert isinstance(password_file, str)
    assert _files(workload)[password_file] == SecretRef("grafana-admin-password")
    assert not any("PASSWORD" in k and not k.endswith("__FILE") for k in workload.env)
    assert workload.env["GF_SECURITY_ADMIN_USER"] == "ops"
    for key in ("GF_USERS_ALLOW_SIGN_UP", "GF_AUTH_ANONYMOUS_ENABLED",
                "GF_ANALYTICS_REPORTING_ENABLED", "GF_ANALYTICS_CHECK_FOR_UPDATES"):
        assert workload.env[key] == "false", key
    # Everything it writes goes to its volumes (a read-only root).
    writable = [m.path for m in workload.mounts]
    for key in ("GF_PATHS_DATA", "GF_PATHS_LOGS", "GF_PATHS_PLUGINS"):
        assert any(str(workload.env[key]).startswith(path) for path in writable), key


def test_a_short_admin_password_is_refused() -> None:
    with pytest.raises(mlops.ValidationError, match="admin_password"):
        Grafana(admin_password="short")


def _program(target: Any, prometheus: Any, grafana: Any) -> Any:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        service = mlops.ModelService("fraud", target=target, registry=registry,
                                     image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        mon = mlops.MonitoringStack("mon", target=target, services=[service],
                                    prometheus=prometheus, grafana=grafana)
        pulumi.export("grafana_url", mon.grafana_url)
        pulumi.export("external_grafana_url", mon.external_grafana_url)
        pulumi.export("grafana_admin_password", mon.grafana_admin_password)

    return program


def test_on_docker_grafana_is_hardened_published_and_its_password_an_output_secret() -> None:
    rec = record(_program(mlops.DockerTarget(), mlops.Prometheus.standalone(),
                          mlops.Grafana()), preview=False)
    container = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-grafana").inputs)))
    assert container["user"] == "10001:10001" and container["readOnly"] is True
    assert container["capabilities"] == {"drops": ["ALL"]}
    assert container["ports"] == [{"internal": 3000, "external": 3000, "ip": "127.0.0.1"}]
    assert container["entrypoints"] == ["/run.sh"]
    outputs = rec.outputs
    assert outputs["external_grafana_url"] == "http://127.0.0.1:3000"
    assert outputs["grafana_url"] == "http://mon-grafana:3000"
    assert is_secret_envelope(outputs["grafana_admin_password"])
    password = unwrap_secrets(outputs["grafana_admin_password"])
    init = rec.get("docker:index/container:Container", "mon-grafana-init").inputs
    assert is_secret_envelope(init["envs"])
    assert len(password) == 24
    assert any(e.endswith(f"={password}") for e in unwrap_secrets(init["envs"]))


def test_on_kubernetes_grafana_reaches_prometheus_only() -> None:
    k8s = mlops.KubernetesTarget(namespace="ml")
    rec = record(_program(k8s, mlops.Prometheus.standalone(),
                          mlops.Grafana(admin_password="a-given-password-1234")), preview=False)
    assert rec.get("kubernetes:apps/v1:StatefulSet", "mon-grafana")
    secret = rec.get("kubernetes:core/v1:Secret", "mon-grafana")
    assert is_secret_envelope(secret.inputs["stringData"])
    assert unwrap_secrets(secret.inputs["stringData"]) == {
        "grafana-admin-password": "a-given-password-1234"}
    policy = dict(unwrap_secrets(dict(rec.get(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "mon-grafana").inputs)))["spec"]
    assert policy["egress"][1] == {"to": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "mon"}}}],
        "ports": [{"protocol": "TCP", "port": 9090}]}
    # Every file reaches the pod: the ConfigMap keys them by name.
    data = rec.get("kubernetes:core/v1:ConfigMap", "mon-grafana-files").inputs["data"]
    assert set(data) == {"mlops-datasources.yaml", "mlops-dashboards.yaml",
                         *(f"{uid}.json" for uid in dashboards())}
    assert yaml.safe_load(data["mlops-datasources.yaml"])["datasources"][0]["url"] == (
        "http://mon-prometheus.ml.svc.cluster.local:9090")


def test_operator_mode_leaves_dashboards_to_the_clusters_grafana() -> None:
    k8s = mlops.KubernetesTarget(namespace="ml")
    with pytest.raises(mlops.ValidationError, match="`grafana`"):
        record(_program(k8s, mlops.Prometheus.operator("kps"), mlops.Grafana()))
