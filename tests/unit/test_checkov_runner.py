"""Tests for the checkov helper that render tests use on rendered manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pulumi_mlops.policy.pss import check_manifest
from tests.checkov import CheckovError, parse_checkov_json, run_checkov

INSECURE_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: insecure
  namespace: mlops
  annotations:
    checkov.io/skip1: CKV_K8S_43=image digests are pinned at release time
spec:
  replicas: 1
  selector:
    matchLabels: {app: insecure}
  template:
    metadata:
      labels: {app: insecure}
    spec:
      containers:
        - name: server
          image: nginx:latest
          securityContext:
            privileged: true
"""

RESOURCE = "Deployment.mlops.insecure"

HARDENED_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model
  namespace: mlops
spec:
  replicas: 2
  selector:
    matchLabels: {app: model}
  template:
    metadata:
      labels: {app: model}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: server
          image: ghcr.io/example/model@sha256:DIGEST
          ports: [{name: http, containerPort: 8080}]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {cpu: "1", memory: 512Mi}
          readinessProbe: {httpGet: {path: /health, port: http}}
          livenessProbe: {httpGet: {path: /health, port: http}}
""".replace("DIGEST", "0123456789abcdef" * 4)

NETWORK_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: model
  namespace: mlops
spec:
  podSelector:
    matchLabels: {app: model}
  policyTypes: [Ingress]
  ingress:
    - ports: [{port: 8080}]
"""


@pytest.mark.slow
def test_insecure_deployment_fails_specific_checks_and_honours_skip(tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text(INSECURE_DEPLOYMENT)

    result = run_checkov(tmp_path)

    failed = result.failed_for(RESOURCE)
    assert "CKV_K8S_16" in failed  # privileged container
    assert "CKV_K8S_14" in failed  # image tag `latest`
    assert {"CKV_K8S_11", "CKV_K8S_13"} <= failed  # no CPU / memory limits
    assert "CKV_K8S_20" in failed  # allowPrivilegeEscalation not false
    assert result.passed > 0
    assert all(f.file == "/deployment.yaml" for f in result.failed if f.resource == RESOURCE)

    # The annotation moves the digest check from failed to skipped, with its reason.
    assert "CKV_K8S_43" not in result.failed_ids
    skipped = [s for s in result.skipped if s.check_id == "CKV_K8S_43"]
    assert len(skipped) == 1
    assert skipped[0].resource == RESOURCE
    assert skipped[0].suppress_comment == "image digests are pinned at release time"


@pytest.mark.slow
def test_hardened_deployment_fails_only_the_network_policy_check(tmp_path: Path) -> None:
    # The PSS-restricted, limited, probed, digest-pinned Deployment that components render; the
    # one thing checkov still wants is a NetworkPolicy selecting its pods, in the same scan.
    assert check_manifest(yaml.safe_load(HARDENED_DEPLOYMENT)) == []
    (tmp_path / "deployment.yaml").write_text(HARDENED_DEPLOYMENT)

    alone = run_checkov(tmp_path)
    assert alone.failed_ids == {"CKV2_K8S_6"}

    (tmp_path / "network-policy.yaml").write_text(NETWORK_POLICY)
    with_policy = run_checkov(tmp_path)
    assert with_policy.failed == []
    assert with_policy.passed > alone.passed


@pytest.mark.slow
def test_empty_directory_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(CheckovError, match="scanned no resources"):
        run_checkov(tmp_path)


@pytest.mark.slow
def test_invalid_yaml_is_an_error_not_silently_skipped(tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text(INSECURE_DEPLOYMENT)
    (tmp_path / "broken.yaml").write_text("kind: Pod\nspec: [unclosed\n")
    with pytest.raises(CheckovError, match=r"broken\.yaml is not valid YAML"):
        run_checkov(tmp_path)


def _check(check_id: str, resource: str) -> dict[str, object]:
    return {
        "check_id": check_id,
        "check_name": f"name of {check_id}",
        "resource": resource,
        "file_path": "/m.yaml",
        "file_abs_path": "/tmp/m.yaml",
        "check_result": {"result": "FAILED"},
    }


def _report(check_type: str, failed: list[str], passed: int) -> dict[str, object]:
    return {
        "check_type": check_type,
        "results": {
            "failed_checks": [_check(c, "Pod.default.p") for c in failed],
            "passed_checks": [_check("CKV_K8S_1", "Pod.default.p")] * passed,
            "skipped_checks": [],
            "parsing_errors": [],
        },
        "summary": {"passed": passed, "failed": len(failed), "resource_count": 1},
    }


def test_parse_single_framework_report() -> None:
    result = parse_checkov_json(json.dumps(_report("kubernetes", ["CKV_K8S_16"], 3)))
    assert result.failed_ids == {"CKV_K8S_16"}
    assert result.failed[0].check_name == "name of CKV_K8S_16"
    assert result.passed == 3
    assert result.scanned_files == frozenset({Path("/tmp/m.yaml")})


def test_parse_list_of_framework_reports_merges_them() -> None:
    reports = [_report("kubernetes", ["CKV_K8S_16"], 2), _report("secrets", ["CKV_SECRET_2"], 1)]
    result = parse_checkov_json(json.dumps(reports))
    assert result.failed_ids == {"CKV_K8S_16", "CKV_SECRET_2"}
    assert result.passed == 3
    assert result.resource_count == 2


def test_parse_empty_summary_is_an_error() -> None:
    empty = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
    with pytest.raises(CheckovError, match="scanned no resources"):
        parse_checkov_json(json.dumps(empty))


def test_parse_reported_parsing_errors_is_an_error() -> None:
    report = _report("kubernetes", [], 1)
    report["summary"] = {"passed": 1, "failed": 0, "resource_count": 1, "parsing_errors": 1}
    with pytest.raises(CheckovError, match="could not parse 1 file"):
        parse_checkov_json(json.dumps(report))


def test_parse_non_json_is_an_error() -> None:
    with pytest.raises(CheckovError, match="did not print JSON"):
        parse_checkov_json("Traceback (most recent call last):")
