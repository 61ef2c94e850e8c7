"""Least privilege in the registry, under Pulumi's mocks: `ModelRegistry.grant_read` and
`grant_write` (and the users services and retrain schedules get by default) on both targets,
and the reconcile's spec. tests/e2e/test_registry_access_e2e.py runs the reconcile for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pulumi_mlops as mlops
from pulumi_mlops.components.registry import RegistryGrant
from pulumi_mlops.plans.registry import ModelRegistryArgs, plan_registry
from pulumi_mlops.plans.registry_access import plan_grant
from pulumi_mlops.plans.registry_ref import RegistryClient, client_user
from pulumi_mlops.render import Recording, record, unwrap_secrets
from pulumi_mlops.render.manifests import redact
from pulumi_mlops.runtime.registry_access import Spec
from tests.recording import RUNTIME_IMAGE, failing

JOB = "kubernetes:batch/v1:Job"
SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONTAINER = "docker:index/container:Container"
K8S = mlops.KubernetesTarget(namespace="ml")


def _program(target: Any, build: Any) -> Recording:
    grants: list[RegistryGrant] = []

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        grants.extend(build(registry))

    rec = record(program)
    rec.grants = grants  # type: ignore[attr-defined]
    return rec


def test_a_service_and_a_schedule_get_users_of_their_own_never_the_admins() -> None:
    def build(registry: mlops.ModelRegistry) -> list[RegistryGrant]:
        mlops.ModelService("fraud", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                           model_uri="models:/fraud/3",
                           rollout=mlops.Rollout.canary(model_uri="models:/fraud-v2/1",
                                                        weight=10))
        mlops.RetrainSchedule("nightly", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                              schedule="0 3 * * *", model_name="fraud",
                              dataset="sklearn:breast_cancer",
                              estimator="sklearn.linear_model.LogisticRegression")
        return list(registry.grants.values())

    rec = _program(K8S, build)
    by_user = {g.client.user: g.client for g in rec.grants}  # type: ignore[attr-defined]
    # The service reads every model it serves (both tracks); the schedule writes its model and
    # logs to its experiment; neither is anything more.
    assert by_user == {
        "fraud-service": RegistryClient("fraud-service", read=("fraud", "fraud-v2")),
        "nightly-retrain": RegistryClient("nightly-retrain", write=("fraud",),
                                          experiments=("retrain-fraud",))}
    admin = unwrap_secrets(rec.get(SECRET, "reg-mlflow").inputs["stringData"])["admin-password"]
    for name in ("fraud", "nightly-retrain"):
        data = unwrap_secrets(rec.get(SECRET, name).inputs["stringData"])
        assert admin not in data.values(), name
    # Only the registry and the reconciles hold the admin's password.
    holders = {s.name for s in rec.of_type(SECRET)
               if admin in json.dumps(unwrap_secrets(s.inputs.get("stringData", {})))}
    assert holders == {"reg-mlflow", "reg-grant-fraud-service", "reg-grant-nightly-retrain"}


def test_kubernetes_reconcile_is_a_job_named_by_its_spec_reaching_only_the_registry() -> None:
    rec = _program(K8S, lambda r: [r.grant_read("dashboards", ["fraud"])])
    (grant,) = rec.grants  # type: ignore[attr-defined]
    (job,) = rec.of_type(JOB)
    assert job.name == grant.plan.job_name
    assert job.name.startswith("reg-grant-dashboards-") and len(job.name) == len(
        "reg-grant-dashboards-") + 8
    spec = redact(dict(job.inputs))["spec"]
    assert spec["backoffLimit"] == 4 and spec["activeDeadlineSeconds"] == 600
    assert "ttlSecondsAfterFinished" not in spec
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    assert container["command"] == ["python", "/etc/mlops-registry-access/registry_access.py",
                                    "--spec", "/etc/mlops-registry-access/spec.json"]
    files = rec.get(CONFIG_MAP, "reg-grant-dashboards-files").inputs["data"]
    assert json.loads(files["spec.json"]) == {"username": "dashboards", "read": ["fraud"],
                                              "write": [], "experiments": []}
    source = Path(mlops.__file__).parent.joinpath("runtime", "registry_access.py").read_text()
    assert files["registry_access.py"] == source
    data = unwrap_secrets(rec.get(SECRET, "reg-grant-dashboards").inputs["stringData"])
    assert set(data) == {"admin-password", "grant-password"}
    password = unwrap_secrets(rec.get("random:index/randomPassword:RandomPassword",
                                      "reg-grant-dashboards-password").outputs)["result"]
    assert data["grant-password"] == password and len(password) == 32
    policies = {p.name: redact(dict(p.inputs))["spec"] for p in rec.of_type(NETPOL)}
    own = policies["reg-grant-dashboards"]
    assert own["ingress"] == []
    assert own["egress"][1] == {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow",
                                                "app.kubernetes.io/instance": "reg",
                                                "app.kubernetes.io/component": "server"}}}],
        "ports": [{"protocol": "TCP", "port": 5000}]}
    admit = policies["reg-grant-dashboards-admit"]
    assert admit["policyTypes"] == ["Ingress"]
    assert admit["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
        "mlops.dev/registry-user"] == "dashboards"


def test_a_changed_spec_names_a_new_job_and_the_same_spec_the_same_one() -> None:
    registry = plan_registry("reg", ModelRegistryArgs(target=K8S))
    read = plan_grant(registry, RegistryClient("team", read=("fraud",)))
    again = plan_grant(registry, RegistryClient("team", read=("fraud",)))
    more = plan_grant(registry, RegistryClient("team", read=("fraud", "churn")))
    assert read.job_name == again.job_name != more.job_name
    assert read.object_name == more.object_name == "reg-grant-team"


def test_docker_reconcile_runs_once_on_the_registry_network_before_its_client() -> None:
    def build(registry: mlops.ModelRegistry) -> list[RegistryGrant]:
        mlops.ModelService("fraud", target=mlops.DockerTarget(), registry=registry,
                           image=RUNTIME_IMAGE, model_uri="models:/fraud/3")
        return list(registry.grants.values())

    rec = _program(mlops.DockerTarget(), build)
    grant = rec.get(CONTAINER, "reg-grant-fraud-service")
    inputs = redact(dict(grant.inputs))
    assert inputs["attach"] is True and inputs["mustRun"] is False
    assert inputs["restart"] == "no"
    assert inputs["user"] == "10001:10001" and inputs["readOnly"] is True
    assert inputs["networksAdvanced"][0]["name"] == "reg-net"
    assert inputs.get("ports", []) == []
    assert rec.get(CONTAINER, "reg-mlflow").urn in grant.dependencies
    assert grant.urn in rec.get(CONTAINER, "fraud").dependencies
    envs = unwrap_secrets(grant.inputs["envs"])
    assert "MLFLOW_TRACKING_USERNAME=admin" in envs
    assert any(e.startswith("MLOPS_GRANT_PASSWORD=") for e in envs)


@pytest.mark.parametrize("user, rule", [
    ("Fraud_Service", "must be lowercase letters"),
    ("x" * 49, "must be lowercase letters"),
    ("admin", "must not be the admin's"),
])
def test_a_bad_username_is_refused_naming_the_input(user: str, rule: str) -> None:
    err, rec = failing(lambda: mlops.ModelRegistry("reg", target=K8S).grant_read(user, ["m"]))
    assert [p.path for p in err.problems] == ["user"]
    assert rule in str(err) and "Fix:" in str(err)
    assert not rec.of_type(JOB)


def test_one_user_is_granted_once() -> None:
    grants: list[Any] = []

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        grants.append(registry.grant_read("team", ["fraud"]))
        grants.append(registry.grant_read("team", ["fraud"]))
        with pytest.raises(mlops.ValidationError, match="granted twice with different rights"):
            registry.grant_write("team", ["fraud"])

    rec = record(program)
    assert grants[0] is grants[1]
    assert len(rec.of_type(JOB)) == 1


def test_client_users_are_dns_labels_of_at_most_48_and_stay_distinct() -> None:
    assert client_user("fraud", "service") == "fraud-service"
    long_a, long_b = client_user("a" * 45 + "x", "retrain"), client_user("a" * 45 + "y", "retrain")
    assert len(long_a) <= 48 and long_a != long_b and long_a.endswith("-retrain")


def test_a_spec_file_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"username": "u", "read": ["m"], "admin": True}))
    with pytest.raises(ValueError, match="admin"):
        Spec.load(path)
    path.write_text(json.dumps(RegistryClient("u", read=("m",), write=("n",)).spec()))
    assert Spec.load(path) == Spec("u", read=("m",), write=("n",))
