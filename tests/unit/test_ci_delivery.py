"""The delivery loop's CI examples (examples/ci/deploy-on-promotion.yml and
deploy-on-promotion.gitlab-ci.yml): their structure (triggers, the stages in order, the read-only
registry credentials, the approval gate on prod), the canary script run against stand-ins of
`pulumi` and `mlops` for each exit code of `mlops canary-check`, and the plan step run for real.
The pull-request workflow's script is run in tests/unit/test_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
READ_ONLY = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


def _load(name: str) -> dict[Any, Any]:
    return dict(yaml.safe_load((CI / name).read_text()))


def _steps_running(job: dict[str, Any], text: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if text in str(s.get("run", ""))]


# --- GitHub Actions ----------------------------------------------------------------------------


def test_github_runs_on_a_schedule_or_when_the_registry_calls() -> None:
    workflow = _load("deploy-on-promotion.yml")
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"]
    assert triggers["repository_dispatch"] == {"types": ["model-promoted"]}
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_github_plans_with_the_read_only_user_and_comments_the_version_moves() -> None:
    plan = _load("deploy-on-promotion.yml")["jobs"]["plan"]
    (step,) = _steps_running(plan, "mlops plan")
    assert set(step["env"]) >= READ_ONLY
    assert all(v == f"${{{{ secrets.{k} }}}}" for k, v in step["env"].items())
    assert "mlops diff --exit-code" in step["run"]
    assert "mlops diff --format markdown" in step["run"]
    (comment,) = _steps_running(plan, "gh issue comment")
    assert "comment.md" in comment["run"]


def test_github_deploys_dev_then_staging_then_prod_behind_its_environments_approval() -> None:
    jobs = _load("deploy-on-promotion.yml")["jobs"]
    assert list(jobs) == ["plan", "deploy-dev", "deploy-staging", "deploy-prod"]
    assert jobs["deploy-dev"]["needs"] == "plan"
    assert jobs["deploy-staging"]["needs"] == ["plan", "deploy-dev"]
    assert jobs["deploy-prod"]["needs"] == ["plan", "deploy-staging"]
    for stack in ("dev", "staging"):
        job = jobs[f"deploy-{stack}"]
        assert job["environment"] == stack and job["env"]["STACK"] == stack
        assert _steps_running(job, 'pulumi up --yes --stack "$STACK"')
    # Required reviewers are a setting of the `prod` environment: the job waits for them.
    prod = jobs["deploy-prod"]
    assert prod["environment"] == "prod"
    (rollout,) = _steps_running(prod, "canary-rollout.sh")
    assert READ_ONLY | {"PROMETHEUS_URL", "CANARY_WEIGHTS"} <= set(rollout["env"])
    assert "model_version.py" in rollout["run"]


# --- GitLab CI ---------------------------------------------------------------------------------


def test_gitlab_plans_then_deploys_with_a_manual_protected_prod() -> None:
    pipeline = _load("deploy-on-promotion.gitlab-ci.yml")
    assert pipeline["stages"] == ["plan", "dev", "staging", "prod"]
    sources = pipeline["workflow"]["rules"][0]["if"]
    assert '"schedule"' in sources and '"trigger"' in sources
    plan = pipeline["plan"]
    script = "\n".join(plan["script"])
    assert "mlops plan" in script and "mlops diff --format markdown" in script
    assert plan["artifacts"]["reports"]["dotenv"] == "changes.env"
    assert pipeline["deploy-dev"]["environment"]["name"] == "dev"
    assert pipeline["deploy-staging"]["needs"] == ["plan", "deploy-dev"]
    prod = pipeline["deploy-prod"]
    assert prod["needs"] == ["plan", "deploy-staging"]
    assert prod["environment"] == {"name": "prod", "deployment_tier": "production"}
    (rule,) = prod["rules"]
    assert rule["when"] == "manual" and rule["allow_failure"] is False
    assert "canary-rollout.sh" in "\n".join(prod["script"])


# --- the canary script, with `pulumi` and `mlops` stood in for --------------------------------

PULUMI = """#!/bin/sh
echo "pulumi $*" >> "$CALLS"
"""
MLOPS = """#!/bin/sh
echo "mlops $*" >> "$CALLS"
if [ "$1" = canary-check ]; then
  code=$(head -n 1 "$CODES"); sed -i 1d "$CODES"
  echo "decision: exit $code"
  exit "$code"
fi
if [ "$1" = plan ]; then
  printf '{"models": {"mlops:index:ModelService::cancer": {"stable": {"version": "%s"}}}}' \\
    "$RESOLVED" > "$5"
fi
"""


def _rollout(tmp_path: Path, codes: list[int], resolved: str = "8",
             committed: str | None = None) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("pulumi", PULUMI), ("mlops", MLOPS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if committed is not None:  # `pulumi config get` answers the committed model URI
        (bin_dir / "pulumi").write_text(PULUMI + f'[ "$4" = get ] && echo "{committed}"\n'
                                        "exit 0\n")
    (tmp_path / "codes").write_text("".join(f"{c}\n" for c in codes))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
           "CODES": str(tmp_path / "codes"), "RESOLVED": resolved, "STACK": "prod",
           "SERVICE": "cancer", "OLD_VERSION": "7", "NEW_VERSION": "8",
           "PROMETHEUS_URL": "http://prometheus:9090", "CHECK_INTERVAL": "0", "MAX_WAITS": "3",
           "CANARY_CHECK_ARGS": "--window 10m"}
    run = subprocess.run(["bash", str(CI / "canary-rollout.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    calls = (tmp_path / "calls").read_text().splitlines()
    return run.returncode, calls, run.stdout + run.stderr


CONFIG = "pulumi config --stack prod"
KEY = "mlops:services.cancer"
CHECK = ("mlops canary-check --prometheus http://prometheus:9090 --service cancer "
         "--window 10m")
START = [f"{CONFIG} get --path {KEY}.modelUri",
         f"{CONFIG} set --path {KEY}.modelUri models:/cancer/7",
         f"{CONFIG} set --path {KEY}.rollout.kind canary",
         f"{CONFIG} set --path {KEY}.rollout.modelUri models:/cancer/8"]
UP = "pulumi up --yes --stack prod"


def _step(weight: int, checks: int) -> list[str]:
    return [f"{CONFIG} set --path {KEY}.rollout.weight {weight}", UP, *[CHECK] * checks]


def test_exit_0_at_every_weight_promotes(tmp_path: Path) -> None:
    code, calls, out = _rollout(tmp_path, [0, 0])
    assert code == 0, out
    assert calls == [*START, *_step(10, 1), *_step(25, 1),
                     f"{CONFIG} rm --path {KEY}.rollout", f"{CONFIG} rm --path {KEY}.modelUri",
                     "mlops plan --stack prod --out promote-plan.json", UP]


def test_exit_10_waits_at_the_same_weight(tmp_path: Path) -> None:
    code, calls, out = _rollout(tmp_path, [10, 10, 0, 0])
    assert code == 0, out
    assert calls[len(START):len(START) + 5] == _step(10, 3)
    assert "too little traffic yet (1/3); waiting" in out


def test_exit_1_rolls_back_and_fails_the_job(tmp_path: Path) -> None:
    code, calls, out = _rollout(tmp_path, [0, 1])
    assert code == 1
    assert calls == [*START, *_step(10, 1), *_step(25, 1), f"{CONFIG} rm --path {KEY}.rollout",
                     UP]
    assert "Rolling back: cancer version 8 (worse than stable at 25 %); stable stays on " \
           "version 7." in out


@pytest.mark.parametrize("codes, why", [
    ([10, 10, 10], "still too little traffic after 3 checks at 10 %"),
    ([2], "no verdict: mlops canary-check exited 2"),
])
def test_no_verdict_rolls_back(tmp_path: Path, codes: list[int], why: str) -> None:
    code, calls, out = _rollout(tmp_path, codes)
    assert code == 1
    assert calls[-2:] == [f"{CONFIG} rm --path {KEY}.rollout", UP]
    assert why in out


def test_promotion_restores_the_committed_uri_or_pins_the_checked_version(
        tmp_path: Path) -> None:
    code, calls, out = _rollout(tmp_path / "a", [0, 0], committed="models:/cancer@champion")
    assert code == 0, out
    assert f"{CONFIG} set --path {KEY}.modelUri models:/cancer@champion" in calls
    # The alias moved again during the rollout: the version checked is pinned.
    code, calls, out = _rollout(tmp_path / "b", [0, 0], resolved="9")
    assert code == 0, out
    assert calls[-2:] == [f"{CONFIG} set --path {KEY}.modelUri models:/cancer/8", UP]


def test_model_version_reads_the_stable_version_of_a_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"models": {"mlops:index:ModelService::cancer": {
        "stable": {"model": "cancer", "version": "8", "alias": "champion"},
        "canary": {"model": "cancer", "version": "9", "alias": None}}}}))
    script = str(CI / "model_version.py")
    for args, printed in (([str(plan), "cancer"], "8\n"), ([str(plan), "fraud"], "\n"),
                          ([str(tmp_path / "none.json"), "cancer"], "\n")):
        run = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                             check=True)
        assert run.stdout == printed


# --- the plan step, for real -------------------------------------------------------------------


@pytest.mark.slow
def test_the_plan_step_deploys_what_changed_since_the_last_deployment(tmp_path: Path) -> None:
    """Runs the GitHub plan step's script on a checkout whose staging is as deployed, whose prod
    changed since, and whose dev was never deployed."""
    workflow = _load("deploy-on-promotion.yml")
    (step,) = _steps_running(workflow["jobs"]["plan"], "mlops plan")
    shutil.copytree(REPO / "stacks", tmp_path / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Pulumi.yaml", tmp_path)
    shutil.copy(REPO / "Dockerfile", tmp_path)  # the dev stack builds it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mlops").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pulumi_mlops.cli "$@"\n')
    (bin_dir / "mlops").chmod(0o755)
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    for name in READ_ONLY:
        env.pop(name, None)  # what a run without the secrets gets: unresolved aliases
    from pulumi_mlops.cli import main

    for stack in ("staging", "prod"):
        assert main(["plan", "--cwd", str(tmp_path), "--stack", stack,
                     "--out", str(deployed / f"{stack}.json")]) == 0
    prod = tmp_path / "stacks" / "Pulumi.prod.yaml"
    prod.write_text(prod.read_text().replace("replicas: 3", "replicas: 4"))

    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                   cwd=tmp_path, env=env, check=True, capture_output=True, text=True)

    outputs = (tmp_path / "output").read_text().split()
    assert outputs == ["dev=true", "staging=false", "prod=true"]
    comment = (tmp_path / "comment.md").read_text()
    assert "### mlops diff: `dev`\n\nNo deployment saved yet: deploying." in comment
    assert "`staging`" not in comment
    assert "- spec.replicas: 3\n+ spec.replicas: 4\n" in comment.split("`prod`")[1]
    assert (tmp_path / "summary.md").read_text() == comment
