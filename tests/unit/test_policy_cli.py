"""`mlops plan --policy`: exit codes, what the plan records, and the violations in `mlops diff`
(the pull-request comment); the shipped stacks under the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulumi_mlops.cli import main

REPO = Path(__file__).resolve().parents[2]

PROGRAM = '''\
import pulumi

import pulumi_mlops as mlops

target = mlops.KubernetesTarget(namespace="ml")
registry = mlops.ModelRegistry("reg", target=target)
gates = (mlops.Gates(min={"roc_auc": 0.9}) if pulumi.Config().get_bool("gated")
         else mlops.Gates())
mlops.RetrainSchedule("nightly", target=target, registry=registry,
                      image="registry.example.com/ml/mlops-runtime:0.1.0",
                      schedule="0 3 * * *", model_name="fraud", dataset="sklearn:breast_cancer",
                      estimator="sklearn.linear_model.LogisticRegression", gates=gates)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a retrain schedule: gated in stack `gated`, not in stack `ungated`."""
    root = tmp_path / "project"
    (root / "program").mkdir(parents=True)
    (root / "Pulumi.yaml").write_text("name: demo\nruntime: python\nmain: program\n")
    (root / "program" / "__main__.py").write_text(PROGRAM)
    for stack, gated in (("gated", "true"), ("ungated", "false")):
        (root / f"Pulumi.{stack}.yaml").write_text(f"config:\n  demo:gated: {gated}\n")
    return root


def plan(project: Path, stack: str, out: Path, *extra: str) -> int:
    return main(["plan", "--cwd", str(project), "--stack", stack, "--out", str(out), *extra])


def test_a_mandatory_violation_makes_plan_exit_1_and_is_recorded(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"

    assert plan(project, "ungated", out, "--policy") == 1

    err = capsys.readouterr().err
    assert ("policy: [mandatory] retrain-gated: RetrainSchedule 'nightly' has no gate" in err)
    assert "policy: stack 'ungated': 1 violations (1 mandatory, blocking)" in err
    doc = json.loads(out.read_text())
    [violation] = doc["policy"]["violations"]
    assert violation["policy"] == "retrain-gated" and violation["level"] == "mandatory"
    assert violation["resource"] == "mlops:index:RetrainSchedule::nightly"
    assert any(w.startswith("policy violation [mandatory] retrain-gated: ")
               for w in doc["warnings"])


def test_a_stack_that_passes_exits_0_with_an_empty_policy_section(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plan.json"
    assert plan(project, "gated", out, "--policy") == 0
    assert json.loads(out.read_text())["policy"] == {"violations": []}


def test_without_policy_the_plan_has_no_policy_section_and_exits_0(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plan.json"
    assert plan(project, "ungated", out) == 0
    doc = json.loads(out.read_text())
    assert "policy" not in doc
    assert not any(w.startswith("policy violation") for w in doc["warnings"])


def test_policy_config_sets_levels_and_bad_config_exits_2(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    config = tmp_path / "policy.yaml"
    config.write_text("retrain-gated:\n  enforcementLevel: advisory\n")
    assert plan(project, "ungated", out, "--policy", "--policy-config", str(config)) == 0
    assert json.loads(out.read_text())["policy"]["violations"][0]["level"] == "advisory"

    config.write_text("retrain-gates: {}\n")
    assert plan(project, "ungated", out, "--policy", "--policy-config", str(config)) == 2
    assert "no policy named `retrain-gates`" in capsys.readouterr().err
    assert plan(project, "ungated", out, "--policy-config", str(config)) == 2
    assert "--policy-config needs --policy" in capsys.readouterr().err


def test_the_pull_request_comment_shows_the_violations(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, head = tmp_path / "base.json", tmp_path / "head.json"
    assert plan(project, "gated", base, "--policy") == 0
    assert plan(project, "ungated", head, "--policy") == 1
    capsys.readouterr()

    assert main(["diff", "--format", "markdown", str(base), str(head)]) == 0
    markdown = capsys.readouterr().out
    assert "**Policy violations** (1 mandatory: blocks the deployment)" in markdown
    assert ("- :no_entry: [mandatory] retrain-gated: RetrainSchedule &#x27;nightly&#x27; has "
            "no gate") in markdown
    assert markdown.index("**Policy violations**") < markdown.index("ConfigMap")

    assert main(["diff", str(base), str(head)]) == 0
    text = capsys.readouterr().out
    assert "Policy violations:\n  x [mandatory] retrain-gated: RetrainSchedule 'nightly'" in text


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_the_shipped_dev_and_staging_stacks_pass_the_policy(
    stack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan(REPO, stack, tmp_path / "plan.json", "--policy") == 0
    assert f"policy: stack '{stack}': 0 violations" in capsys.readouterr().err


def test_the_shipped_prod_stack_fails_only_on_third_party_images_pinned_by_tag(
    tmp_path: Path
) -> None:
    # Open: prod requires digests (`mlops:requireImageDigest`); MLflow's and PostgreSQL's
    # images are pinned by version tag until their digests are written into Pulumi.prod.yaml
    # (`mlops:registry.image`, `mlops:registry.database.image`), which needs the registry.
    out = tmp_path / "plan.json"
    assert plan(REPO, "prod", out, "--policy") == 1
    violations = json.loads(out.read_text())["policy"]["violations"]
    mandatory = [v for v in violations if v["level"] == "mandatory"]
    assert {v["policy"] for v in mandatory} == {"image-digest"}
    assert all("image `ghcr.io/mlflow/mlflow:v" in v["message"]
               or "image `postgres:" in v["message"] for v in mandatory)
    # Without a reachable registry the alias stays unresolved: reported, not blocking.
    assert [v["policy"] for v in violations if v["level"] == "advisory"] == [
        "model-version-pinned"]
