"""`mlops render` and the shipped examples, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pulumi_mlops.cli import main
from pulumi_mlops.render import record_program

REPO = Path(__file__).resolve().parents[2]


def test_render_writes_manifests_and_a_redacted_listing(tmp_path: Path) -> None:
    assert main(["render", "--cwd", str(REPO), "--stack", "staging",
                 "--out-dir", str(tmp_path)]) == 0
    deployment = yaml.safe_load(
        (tmp_path / "mlops-staging-deployment-registry-mlflow.yaml").read_text())
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 2
    listing = json.loads((tmp_path / "resources.json").read_text())
    types = {r["type"] for r in listing["resources"]}
    assert "mlops:index:ModelRegistry" in types
    assert "random:index/randomPassword:RandomPassword" in types
    secret = next(r for r in listing["resources"]
                  if r["type"] == "kubernetes:core/v1:Secret" and r["name"] == "registry-mlflow")
    assert set(secret["inputs"]["stringData"].values()) == {"[secret]"}


def test_render_of_the_docker_stack_lists_docker_resources(tmp_path: Path) -> None:
    assert main(["render", "--cwd", str(REPO), "--out-dir", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*.yaml"))
    listing = json.loads((tmp_path / "resources.json").read_text())
    names = {r["name"] for r in listing["resources"]
             if r["type"] == "docker:index/container:Container"}
    assert names == {"registry-mlflow", "registry-mlflow-init"}


def test_render_reports_bad_config_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "stacks", project / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Pulumi.yaml", project)
    (project / "stacks" / "Pulumi.bad.yaml").write_text(yaml.safe_dump(
        {"config": {"mlops:target": "kubernetes", "mlops:registry": {"replicas": -1}}}))
    out = tmp_path / "out"
    assert main(["render", "--cwd", str(project), "--stack", "bad", "--out-dir", str(out)]) == 2
    assert "`mlops:registry.replicas` must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_render_of_an_unknown_stack_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--cwd", str(REPO), "--stack", "qa",
                 "--out-dir", str(tmp_path)]) == 2
    assert "known stacks are dev, prod, staging" in capsys.readouterr().err


def test_quickstart_example_declares_a_registry() -> None:
    recording = record_program(REPO / "examples" / "quickstart", "dev")
    assert recording.get("mlops:index:ModelRegistry", "registry")
    assert set(recording.outputs) == {"tracking_uri", "admin_username", "admin_password"}
