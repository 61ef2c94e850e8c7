"""The reference stacks rendered to manifests: schema, Pod Security Standards, checkov, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pulumi_mlops.policy.pss import check_manifest, pod_spec_of
from pulumi_mlops.render import Recording, record_program, unwrap_secrets, write_render
from pulumi_mlops.render.manifests import REDACTED
from tests.checkov import run_checkov

REPO = Path(__file__).resolve().parents[2]
# The Kubernetes version the manifests are validated against (kubernetes-validate is pinned).
KUBERNETES_VERSION = "1.33.0"
K8S_STACKS = ["staging", "prod"]


class Rendered:
    def __init__(self, recording: Recording, out: Path, files: list[Path]) -> None:
        self.recording = recording
        self.out = out
        self.files = files
        self.manifests = [yaml.safe_load(f.read_text()) for f in files]


_cache: dict[str, Rendered] = {}


def render(stack: str, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    if stack not in _cache:
        recording = record_program(REPO, stack)
        out = tmp_path_factory.mktemp(f"render-{stack}")
        files = write_render(recording, out)
        _cache[stack] = Rendered(recording, out, files)
    return _cache[stack]


@pytest.fixture(params=K8S_STACKS)
def k8s_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


@pytest.fixture(params=["dev", *K8S_STACKS])
def any_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(request.param, tmp_path_factory)


def test_kubernetes_stacks_render_the_registry_objects(k8s_stack: Rendered) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in k8s_stack.manifests}
    assert {
        ("Deployment", "registry-mlflow"), ("Service", "registry-mlflow"),
        ("NetworkPolicy", "registry-mlflow"), ("Secret", "registry-mlflow"),
        ("StatefulSet", "registry-postgres"), ("Service", "registry-postgres"),
        ("NetworkPolicy", "registry-postgres"), ("PodDisruptionBudget", "registry-mlflow"),
    } <= kinds


def test_every_object_is_valid_against_the_kubernetes_schema(k8s_stack: Rendered) -> None:
    assert k8s_stack.manifests
    for manifest in k8s_stack.manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_a_broken_object(k8s_stack: Rendered) -> None:
    deployment = next(m for m in k8s_stack.manifests if m["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_pod_spec_passes_pod_security_standards_restricted(k8s_stack: Rendered) -> None:
    workloads = [m for m in k8s_stack.manifests if pod_spec_of(m) is not None]
    assert {m["kind"] for m in workloads} == {"Deployment", "StatefulSet"}
    for manifest in workloads:
        assert check_manifest(manifest) == []


@pytest.mark.slow
def test_checkov_reports_no_failed_check(k8s_stack: Rendered) -> None:
    result = run_checkov(k8s_stack.out)
    assert result.failed == []
    assert result.passed > 50
    # Every skipped check was skipped deliberately, with the reason in the annotation.
    for check_id, _resource, comment in result.skipped:
        assert comment and len(comment) > 20, check_id


def _secret_values(recording: Recording) -> set[str]:
    """Every value that travelled as a Pulumi secret, long enough to be meaningful."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        from pulumi.runtime import rpc

        if rpc.is_rpc_secret(value):
            walk(rpc.unwrap_rpc_secret(value), True)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, secret)
        elif isinstance(value, list):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, str) and len(value) >= 8:
            found.add(value)

    for r in recording.resources:
        walk(dict(r.inputs), False)
    return found


def test_no_secret_value_appears_in_any_rendered_file(any_stack: Rendered) -> None:
    secrets = _secret_values(any_stack.recording)
    # The generated admin password and Flask key are among them (the mock derives them).
    assert len(secrets) >= 2
    texts = [p.read_text() for p in any_stack.out.iterdir()]
    for value in secrets:
        for line in value.splitlines():
            if len(line) >= 8:
                assert not any(line in t for t in texts), f"secret leaked: {line[:4]}..."


def test_secrets_reach_pods_only_by_secret_reference(k8s_stack: Rendered) -> None:
    secret_names = {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                    "PGPASSWORD", "POSTGRES_PASSWORD"}
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
