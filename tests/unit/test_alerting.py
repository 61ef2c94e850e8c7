"""MonitoringStack's alert routing, checked by Alertmanager's own tool: ``amtool check-config``
on every kind of receiver, and ``amtool config routes test`` for where each severity goes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

import pulumi_mlops as mlops
from pulumi_mlops._pulumi_compat import is_secret_envelope
from pulumi_mlops.plans.alerting import (
    ALERTMANAGER_CONFIG,
    Alertmanager,
    Receiver,
    alertmanager_config,
    alertmanager_workload,
    secret_fields,
)
from pulumi_mlops.render import record, unwrap_secrets
from tests.recording import RUNTIME_IMAGE, external_egress
from tests.unit.docker_init import init_files

HOOK = "https://hooks.example.com/services/T0/B0/very-secret-token"


@pytest.fixture(scope="module")
def amtool() -> str:
    found = shutil.which("amtool")
    if found is None:
        pytest.fail("amtool is not installed: run scripts/system-deps.sh (apt-get install "
                    "prometheus-alertmanager)")
    return found


def _config(alerting: Alertmanager, tmp_path: Path) -> Path:
    values = {key: f"secret-{key}" if key.endswith("password") else HOOK
              for key in secret_fields(alerting)}
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager_config(alerting, values))
    return path


def _route(amtool: str, config: Path, *labels: str) -> str:
    run = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}",
                          *labels], capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip()


EMAIL = Receiver.email(to="oncall@example.com", from_address="alerts@example.com",
                       smarthost="smtp.example.com:587", username="alerts",
                       password="smtp-password-1234")


@pytest.mark.parametrize("alerting", [
    Alertmanager(page=Receiver.webhook(HOOK)),
    Alertmanager(page=Receiver.slack(HOOK, channel="#oncall"), ticket=EMAIL),
    Alertmanager(page=EMAIL, ticket=Receiver.email(to="ml@example.com",
                                                   from_address="alerts@example.com",
                                                   smarthost="smtp.example.com:25")),
], ids=["webhook", "slack-and-email", "email"])
def test_every_receiver_kind_passes_amtool_and_pages_go_to_page(
        amtool: str, alerting: Alertmanager, tmp_path: Path) -> None:
    config = _config(alerting, tmp_path)
    run = subprocess.run([amtool, "check-config", str(config)], capture_output=True,
                         text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _route(amtool, config, "severity=page", "alertname=MlopsServiceDown") == "page"
    assert _route(amtool, config, "severity=ticket", "alertname=MlopsFeatureDrift") == "ticket"
    # An alert without a severity (none of ours) is not lost.
    assert _route(amtool, config, "alertname=Other") == "ticket"


def test_the_ticket_receiver_defaults_to_the_page_one(tmp_path: Path) -> None:
    config = yaml.safe_load(_config(Alertmanager(page=Receiver.webhook(HOOK)),
                                    tmp_path).read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["page"]["webhook_configs"] == receivers["ticket"]["webhook_configs"]
    assert receivers["page"]["webhook_configs"][0]["url"] == HOOK


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Receiver(kind="pager"), "kind"),
    (lambda: Receiver(kind="webhook"), "url"),
    (lambda: Receiver.email(to="a@example.com", from_address="b@example.com",
                            smarthost="smtp.example.com:587", username="u"), "password"),
    (lambda: Receiver.email(to="a@example.com", from_address="b@example.com",
                            smarthost="smtp.example.com"), "smarthost"),
])
def test_an_incomplete_receiver_is_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(mlops.ValidationError, match=f"`{field}`"):
        make()


def test_secrets_stay_out_of_the_receivers_repr_and_the_workload() -> None:
    alerting = Alertmanager(page=Receiver.webhook(HOOK), ticket=EMAIL)
    assert HOOK not in repr(alerting) and "smtp-password-1234" not in repr(alerting)
    assert secret_fields(alerting) == {"page.url": HOOK, "ticket.password": "smtp-password-1234"}
    workload = alertmanager_workload("mon", alerting)
    (config,) = workload.files
    assert config.path == ALERTMANAGER_CONFIG and not isinstance(config.content, str)


def _program(target: Any, prometheus: Any) -> Any:
    def program() -> None:
        # An output exists only under the (mock) runtime.
        hook = pulumi.Output.secret(HOOK)
        registry = mlops.ModelRegistry("reg", target=target)
        service = mlops.ModelService("fraud", target=target, registry=registry,
                                     image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        mlops.MonitoringStack("mon", target=target, services=[service], prometheus=prometheus,
                              alertmanager=Alertmanager(page=Receiver.webhook(hook)))

    return program


def test_on_docker_prometheus_sends_alerts_to_a_hardened_alertmanager() -> None:
    rec = record(_program(mlops.DockerTarget(), mlops.Prometheus.standalone()), preview=False)
    container = dict(unwrap_secrets(dict(
        rec.get("docker:index/container:Container", "mon-alertmanager").inputs)))
    assert container["user"] == "10001:10001" and container["readOnly"] is True
    assert container["capabilities"] == {"drops": ["ALL"]}
    assert container["ports"] == [{"internal": 9093, "external": 9093, "ip": "127.0.0.1"}]
    init = rec.get("docker:index/container:Container", "mon-alertmanager-init").inputs
    # The configuration carries the webhook's token: secret in the state.
    assert is_secret_envelope(init["envs"])
    files = init_files(init).values()
    (config,) = [yaml.safe_load(f) for f in files if "receivers" in f]
    assert config["receivers"][0]["webhook_configs"][0]["url"] == HOOK
    prometheus_init = rec.get("docker:index/container:Container", "mon-prometheus-init").inputs
    prometheus = next(yaml.safe_load(f) for f in init_files(prometheus_init).values()
                      if "scrape_configs" in f)
    assert prometheus["alerting"] == {"alertmanagers": [{"static_configs": [
        {"targets": ["mon-alertmanager:9093"]}]}]}


def test_on_kubernetes_the_alertmanager_is_reached_by_prometheus_only() -> None:
    k8s = mlops.KubernetesTarget(namespace="ml")
    rec = record(_program(k8s, mlops.Prometheus.standalone()), preview=False)
    secret = rec.get("kubernetes:core/v1:Secret", "mon-alertmanager")
    assert is_secret_envelope(secret.inputs["stringData"])
    policy = dict(unwrap_secrets(dict(rec.get(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "mon-alertmanager").inputs)))["spec"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "mon"}}}],
        "ports": [{"protocol": "TCP", "port": 9093}]}]
    # Receivers anywhere but link-local addresses (cloud metadata).
    assert policy["egress"][1] == external_egress(443, 465, 587)
    config = yaml.safe_load(rec.get("kubernetes:core/v1:ConfigMap", "mon-prometheus-files")
                            .inputs["data"]["prometheus.yml"])
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "mon-alertmanager.ml.svc.cluster.local:9093"]


def test_operator_mode_leaves_routing_to_the_clusters_alertmanager() -> None:
    k8s = mlops.KubernetesTarget(namespace="ml")
    with pytest.raises(mlops.ValidationError, match="`alertmanager`"):
        record(_program(k8s, mlops.Prometheus.operator("kps")))
