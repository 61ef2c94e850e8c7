"""`mlops render`, `mlops plan`, `mlops diff` and the shipped examples, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pulumi.runtime import rpc

from pulumi_mlops.cli import main
from pulumi_mlops.render import record_program
from tests.recording import secret_values

REPO = Path(__file__).resolve().parents[2]
# A runtime image the stacks take instead of building one (the project publishes none).
IMAGE = "registry.example.com/ml/mlops-runtime:1.0"


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
    assert names == {"registry-mlflow", "registry-mlflow-init", "registry-mlflow-metrics", "cancer",
                     "cancer-nightly-retrain", "cancer-nightly-retrain-init",
                     "registry-grant-cancer-service", "registry-grant-cancer-service-init",
                     "registry-grant-cancer-nightly-retrain",
                     "registry-grant-cancer-nightly-retrain-init",
                     "monitoring-prometheus", "monitoring-prometheus-init"}


def test_render_reports_bad_config_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "stacks", project / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Pulumi.yaml", project)
    shutil.copy(REPO / "Dockerfile", project)  # the dev stack builds it
    (project / "stacks" / "Pulumi.bad.yaml").write_text(yaml.safe_dump(
        {"config": {"mlops:target": "kubernetes", "mlops:image": IMAGE,
                    "mlops:registry": {"replicas": -1}}}))
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


def test_team_stack_example_serves_through_the_platform_registry() -> None:
    from pulumi_mlops.render import SecretOutput, unwrap_secrets

    platform = {"tracking_uri": "http://registry-mlflow.mlops.svc.cluster.local:5000",
                "registry_admin_username": "admin",
                "registry_admin_password": SecretOutput("admin-password-0123456789"),
                "team_registry_usernames": {"fraud": "team-fraud"},
                "team_registry_passwords": SecretOutput({"fraud": "team-password-0123456789"}),
                "runtime_image": "registry.example.com/ml-platform/mlops-runtime@sha256:"
                                 + "d" * 64}
    recording = record_program(REPO / "examples" / "team-stack", "dev",
                               stack_outputs={"organization/mlops/dev": platform})
    deployment = recording.get("kubernetes:apps/v1:Deployment", "fraud")
    canary = recording.get("kubernetes:apps/v1:Deployment", "fraud-canary")
    assert deployment and canary and recording.get(
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "fraud")
    # The URI and credentials arrive as outputs: the pods read them from the service's Secret.
    env = {e["name"]: e for e in
           unwrap_secrets(deployment.inputs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == \
        "tracking-password"
    secret = recording.get("kubernetes:core/v1:Secret", "fraud")
    assert rpc.is_rpc_secret(secret.inputs["stringData"])  # still a secret in the state
    # The team's own user (the platform's grant_write), never the registry's admin.
    assert unwrap_secrets(secret.inputs)["stringData"]["tracking-password"] == \
        "team-password-0123456789"
    assert unwrap_secrets(secret.inputs)["stringData"]["tracking-username"] == "team-fraud"
    assert "admin-password-0123456789" not in json.dumps(unwrap_secrets(recording.outputs))
    assert set(recording.outputs) == {"fraud_endpoint", "fraud_models"}


# --- mlops plan / mlops diff -------------------------------------------------------------------

STACKS = ["dev", "staging", "prod"]


@pytest.fixture(scope="module", autouse=True)
def no_registry() -> Iterator[None]:
    """As in a pull request's CI job, which has no registry (the suite's is a local store):
    the plans' warnings say so, the same in every test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`mlops plan` of every shipped stack, written once for the module."""
    out = tmp_path_factory.mktemp("plans")
    for stack in STACKS:
        assert main(["plan", "--cwd", str(REPO), "--stack", stack,
                     "--out", str(out / f"{stack}.json")]) == 0
    return {stack: out / f"{stack}.json" for stack in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_plan_of_a_shipped_stack_is_byte_identical_every_time(
    stack: str, plans: dict[str, Path], tmp_path: Path
) -> None:
    again = tmp_path / "again.json"

    assert main(["plan", "--cwd", str(REPO), "--stack", stack, "--out", str(again)]) == 0

    assert again.read_bytes() == plans[stack].read_bytes()
    plan = json.loads(again.read_text())
    assert plan["format"] == "mlops-plan/v1" and plan["stack"] == stack
    assert plan["resources"]["mlops:index:ModelRegistry::registry"]["parent"] is None


@pytest.mark.parametrize("stack", STACKS)
def test_plan_of_a_shipped_stack_holds_no_secret_value(
    stack: str, plans: dict[str, Path]
) -> None:
    secrets = secret_values(record_program(REPO, stack))
    text = plans[stack].read_text()

    # The generated admin password and Flask key are among them (the mock derives them).
    assert len(secrets) >= 2
    for value in secrets:
        for line in value.splitlines():
            if len(line) >= 8:
                assert line not in text, f"secret leaked: {line[:4]}..."
    assert '"[secret]"' in text


def test_plan_goes_to_stdout_by_default_and_nothing_else_does(
    capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    assert main(["plan", "--cwd", str(REPO), "--stack", "dev"]) == 0

    assert capsys.readouterr().out == plans["dev"].read_text()


def test_diff_of_staging_and_prod_shows_what_prod_adds(
    capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    assert main(["diff", str(plans["staging"]), str(plans["prod"])]) == 0

    out = capsys.readouterr().out
    assert out.startswith("mlops diff: stack staging -> prod\n")
    assert "Resources: 1 to add, 0 to remove," in out
    assert "+ kubernetes:networking.k8s.io/v1:Ingress::registry-mlflow\n" in out
    deployment = out.split("~ kubernetes:apps/v1:Deployment::registry-mlflow\n")[1]
    deployment = deployment.split("\n~ ")[0]
    assert "    ~ spec.replicas: 2 -> 3\n" in deployment
    assert ('    ~ spec.template.spec.containers[name=mlflow].resources.limits.memory: '
            '"2Gi" -> "4Gi"') in deployment
    assert '~ spec.volumeClaimTemplates[0].spec.resources.requests.storage: "20Gi" -> "100Gi"' \
        in out
    assert '~ metadata.namespace: "mlops-staging" -> "mlops"' in out
    assert "Model versions" not in out


def test_diff_exit_code_says_whether_anything_changed(
    capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    assert main(["diff", "--exit-code", str(plans["staging"]), str(plans["prod"])]) == 1
    assert main(["diff", "--exit-code", str(plans["prod"]), str(plans["prod"])]) == 0

    count = len(json.loads(plans["prod"].read_text())["resources"])
    out = capsys.readouterr().out
    same = out[out.rindex("mlops diff: stack prod\n"):]
    assert same.endswith(f"\nNo changes ({count} resources unchanged).\n")
    # The plan's warnings are shown even when nothing changes.
    assert "Warnings:\n  ! ModelService 'cancer': could not resolve" in same


def test_diff_as_markdown_and_as_json(
    capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    assert main(["diff", "--format", "markdown", str(plans["staging"]),
                 str(plans["prod"])]) == 0
    markdown = capsys.readouterr().out
    assert main(["diff", "--format", "json", str(plans["staging"]), str(plans["prod"])]) == 0
    doc = json.loads(capsys.readouterr().out)

    assert markdown.startswith("### mlops diff: `staging` → `prod`\n")
    assert ("<details><summary><code>~</code> change Deployment <code>registry-mlflow</code>"
            in markdown)
    assert "- spec.replicas: 2\n+ spec.replicas: 3\n" in markdown
    staging = json.loads(plans["staging"].read_text())
    assert (doc["summary"]["add"], doc["summary"]["remove"]) == (1, 0)
    assert doc["summary"]["change"] + doc["summary"]["unchanged"] == len(staging["resources"])
    assert [r["key"] for r in doc["added"]] == [
        "kubernetes:networking.k8s.io/v1:Ingress::registry-mlflow"]


def test_diff_of_a_plan_in_an_unknown_format_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "mlops-plan/v2", "stack": "prod", "resources": {}}))

    assert main(["diff", str(future), str(plans["prod"])]) == 2
    assert main(["diff", str(plans["prod"]), str(tmp_path / "missing.json")]) == 2

    err = capsys.readouterr().err
    assert f"error: {future}: plan format 'mlops-plan/v2' is not supported" in err
    assert "missing.json: cannot read the plan" in err


def test_a_secret_set_again_in_stack_config_shows_in_the_diff_but_not_its_ciphertext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "stacks", project / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Pulumi.yaml", project)
    shutil.copy(REPO / "Dockerfile", project)  # the dev stack builds it
    ciphertexts = {"before": "v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBBBBBBBBBBBBBBBBBB",
                   "after": "v1:CCCCCCCCCCCCCCCC:DDDDDDDDDDDDDDDDDDDDDDDDDDDD"}
    for stack, ciphertext in ciphertexts.items():
        (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": {
            "mlops:target": "kubernetes", "mlops:image": IMAGE,
            "mlops:registry": {"database": "external"},
            "mlops:databaseUri": {"secure": ciphertext}}}))
        assert main(["plan", "--cwd", str(project), "--stack", stack,
                     "--out", str(tmp_path / f"{stack}.json")]) == 0
        assert ciphertext not in (tmp_path / f"{stack}.json").read_text()
    capsys.readouterr()

    assert main(["diff", "--exit-code", str(tmp_path / "before.json"),
                 str(tmp_path / "after.json")]) == 1

    out = capsys.readouterr().out
    assert "Encrypted config:\n    mlops:databaseUri: set again" in out
    assert "DDDD" not in out


def test_what_the_program_prints_does_not_end_up_in_a_plan_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "stacks", tmp_path / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Pulumi.yaml", tmp_path)
    shutil.copy(REPO / "Dockerfile", tmp_path)  # the dev stack builds it
    main_py = tmp_path / "stacks" / "__main__.py"
    main_py.write_text(main_py.read_text() + '\nprint("hello from the program")\n')

    assert main(["plan", "--cwd", str(tmp_path), "--stack", "dev"]) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["stack"] == "dev"
    assert "hello from the program" in captured.err


@pytest.mark.slow
def test_the_pull_request_workflow_comments_the_diff_of_every_stack(tmp_path: Path) -> None:
    """Runs the workflow's plan-and-diff script on a base and a head checkout, as CI does."""
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "pull-request.yml").read_text())
    job = workflow["jobs"]["plan-diff"]
    step = next(s for s in job["steps"] if s.get("name") == "Plan and diff every stack")
    for side in ("base", "head"):
        shutil.copytree(REPO / "stacks", tmp_path / side / "stacks",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "Pulumi.yaml", tmp_path / side)
        shutil.copy(REPO / "Dockerfile", tmp_path / side)  # the dev stack builds it
        # Stands in for the side's virtual environment, with this checkout's mlops.
        mlops = tmp_path / side / ".venv" / "bin" / "mlops"
        mlops.parent.mkdir(parents=True)
        mlops.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pulumi_mlops.cli "$@"\n')
        mlops.chmod(0o755)
    (tmp_path / "base" / "stacks" / "Pulumi.dev.yaml").unlink()
    prod = tmp_path / "head" / "stacks" / "Pulumi.prod.yaml"
    prod.write_text(prod.read_text().replace("replicas: 3", "replicas: 4"))
    summary = tmp_path / "summary.md"

    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                   cwd=tmp_path, check=True, capture_output=True, text=True,
                   env={**os.environ, **job["env"], "GITHUB_STEP_SUMMARY": str(summary)})

    comment = (tmp_path / "comment.md").read_text()
    count = {stack: len(json.loads((tmp_path / "plans" / f"head-{stack}.json").read_text())
                        ["resources"]) for stack in ("staging", "prod")}
    assert "### mlops diff: `dev`\n\nNew stack: nothing to compare with." in comment
    staging_section = comment.split("### mlops diff: `staging`")[1].split("### mlops diff")[0]
    assert staging_section.rstrip().endswith(
        f"No changes ({count['staging']} resources unchanged).")
    assert "**Warnings**" in staging_section  # the unresolved alias, nothing changing
    prod_section = comment.split("### mlops diff: `prod`")[1]
    assert f"**0 to add, 0 to remove, 1 to change** ({count['prod'] - 1} unchanged)" \
        in prod_section
    assert "- spec.replicas: 3\n+ spec.replicas: 4\n" in prod_section
    assert summary.read_text() == comment


def _doc_block(doc: str, after: str, lang: str) -> str:
    """The first ```lang block after the line ``after`` in a docs page."""
    rest = doc.split(after, 1)[1]
    return rest.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_the_plan_and_diff_docs_show_real_output(
    capsys: pytest.CaptureFixture[str], plans: dict[str, Path]
) -> None:
    doc = (REPO / "docs" / "plan-and-diff.md").read_text()
    shown = _doc_block(doc, "mlops diff plans/staging.json plans/prod.json", "text")
    example = json.loads(_doc_block(doc, "## `mlops plan`", "json"))

    assert main(["diff", str(plans["staging"]), str(plans["prod"])]) == 0

    assert capsys.readouterr().out.startswith(shown)
    real = json.loads(plans["prod"].read_text())
    assert example.keys() == real.keys()
    [(key, resource)] = example["resources"].items()
    assert real["resources"][key]["parent"] == resource["parent"]
    assert real["resources"][key]["inputs"]["spec"]["replicas"] == 3
    assert real["outputs"]["tracking_uri"] == example["outputs"]["tracking_uri"]


# --- mlops --version, make up / make down ------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from pulumi_mlops.contracts.version import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"mlops {__version__}\n"
    assert __version__ == version("pulumi-mlops")


def _make_dry_run(*args: str) -> list[str]:
    """The commands `make -n` prints for ``args`` in the repository (nothing is run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, env=env,
                          check=True, capture_output=True, text=True)
    return done.stdout.splitlines()


def _pulumi_vars(words: list[str]) -> dict[str, str]:
    return {k: v for k, _, v in (w.partition("=") for w in words) if k.startswith("PULUMI_")}


def test_make_up_and_down_use_one_backend_and_passphrase_and_up_says_how_to_read_outputs(
    plans: dict[str, Path],
) -> None:
    import shlex

    up = _make_dry_run("up", "YES=1")
    down = _make_dry_run("down", "YES=1")

    (deploy,) = [line for line in up if "pulumi up --refresh --stack dev --yes" in line]
    (destroy,) = [line for line in down if "pulumi destroy --stack dev --yes" in line]
    state = REPO / ".pulumi-state"
    expected = {"PULUMI_BACKEND_URL": f"file://{state}",
                "PULUMI_CONFIG_PASSPHRASE_FILE": f"{state / 'passphrase'}"}
    assert _pulumi_vars(shlex.split(deploy)) == expected
    assert _pulumi_vars(shlex.split(destroy)) == expected
    # What `make up` prints at the end: run its echo commands, then read the printed commands.
    echoed = subprocess.run(["sh", "-c", "\n".join(line for line in up
                                                   if line.startswith("echo "))],
                            check=True, capture_output=True, text=True).stdout
    printed = [shlex.split(line) for line in echoed.splitlines()
               if "pulumi stack output" in line]
    assert [words[2:] for words in printed] == [
        ["pulumi", "stack", "output", "--stack", "dev"],
        ["pulumi", "stack", "output", "--stack", "dev", "--show-secrets",
         "registry_admin_password"]]
    assert all(_pulumi_vars(words) == expected for words in printed)
    assert "registry_admin_password" in json.loads(plans["dev"].read_text())["outputs"]
    assert "make down" in echoed


def test_make_up_and_down_run_pulumi_with_the_same_state_as_the_printed_commands(
    tmp_path: Path,
) -> None:
    """The Makefile's targets, run for real with stand-ins for the Pulumi and Docker CLIs."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", project)
    shutil.copy(REPO / "scripts" / "preflight.sh", project / "scripts")
    (project / "stacks").mkdir()
    shutil.copy(REPO / "stacks" / "Pulumi.dev.yaml", project / "stacks")  # what preflight reads
    for name in ("pyproject.toml", "requirements/runtime.txt"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).touch()
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").symlink_to(sys.executable)
    os.utime(project / "pyproject.toml", (0, 0))
    os.utime(project / "requirements/runtime.txt", (0, 0))
    (project / ".venv" / ".installed").touch()  # installed: make up installs nothing
    calls = tmp_path / "calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("pulumi", "docker"):
        (fake / tool).write_text(
            f'#!/bin/sh\necho "{tool} $* | $PULUMI_BACKEND_URL | $PULUMI_CONFIG_PASSPHRASE_FILE"'
            f' >> "{calls}"\necho "{tool} 0.0"\n')
        (fake / tool).chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
           "PATH": f"{fake}:{os.environ['PATH']}"}

    def make(*args: str) -> str:
        return subprocess.run(["make", "--no-print-directory", *args], cwd=project, env=env,
                              check=True, capture_output=True, text=True).stdout

    printed = make("up", "YES=1")
    password = next(line for line in printed.splitlines() if "--show-secrets" in line)
    subprocess.run(["sh", "-c", password], cwd=project, env=env, check=True,
                   capture_output=True)
    make("down", "YES=1")

    state = project / ".pulumi-state"
    assert len((state / "passphrase").read_text().strip()) >= 32
    same = f" | file://{state} | {state / 'passphrase'}"
    pulumi = [line for line in calls.read_text().splitlines() if line.startswith("pulumi ")]
    assert pulumi == [
        "pulumi version |  | ", "pulumi stack select --create dev" + same,
        "pulumi up --refresh --stack dev --yes" + same, "pulumi stack output --stack dev" + same,
        "pulumi stack output --stack dev --show-secrets registry_admin_password" + same,
        "pulumi version |  | ", "pulumi destroy --stack dev --yes" + same]


def test_the_readme_documents_make_down_beside_make_up() -> None:
    readme = (REPO / "README.md").read_text()
    commands = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]

    assert "make down" in commands
    assert "--show-secrets registry_admin_password" in commands


# --- mlops demo: what it cannot run, its folders, its progress ---------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the demo's temporary folders go in this test (to see whether one is left)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(root))
    return root


def test_demo_check_of_a_stack_it_cannot_run_fails_saying_what_it_skipped_and_why(
    temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--cwd", str(REPO), "--stack", "staging", "--check"]) == 1

    out = capsys.readouterr().out
    assert ("registry: skipped, its database runs in the target; the demo runs SQLite "
            "registries (use the dev stack)\n") in out
    assert ("cancer-nightly: skipped, its registry "
            "(http://registry-mlflow.mlops-staging.svc.cluster.local:5000) is not one") in out
    assert "cancer: skipped, its registry" in out
    assert ("nothing ran, so nothing was checked: all 4 workloads of stack 'staging' were "
            "skipped") in out
    assert "mlops demo --stack dev" in out
    assert list(temp_root.iterdir()) == []


def test_demo_keeps_the_workdir_it_was_given_and_says_where(
    tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "kept"

    assert main(["demo", "--cwd", str(REPO), "--stack", "prod", "--check",
                 "--workdir", str(workdir)]) == 1

    assert workdir.is_dir()
    assert f"data and logs kept in {workdir}\n" in capsys.readouterr().out
    assert list(temp_root.iterdir()) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_demo_removes_its_temporary_folder_on_ctrl_c_and_on_error(
    error: type[BaseException], temp_root: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pulumi_mlops import demo

    def start_then_fail(recording: object, stack: object, root: Path,
                        progress: object) -> None:
        (root / "registry").mkdir()
        (root / "registry" / "mlflow.db").write_text("data")
        raise error("registry failed to start")

    monkeypatch.setattr(demo, "_start_registries", start_then_fail)

    if error is KeyboardInterrupt:
        assert demo.run_demo(REPO, "dev") == 130
        assert "interrupted; stopped everything" in capsys.readouterr().out
    else:
        with pytest.raises(error, match="registry failed to start"):
            demo.run_demo(REPO, "dev")
    assert list(temp_root.iterdir()) == []


def test_demo_shows_the_retrain_job_stages_as_they_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pulumi_mlops.demo import _echo_stage
    from pulumi_mlops.local import run_job
    from pulumi_mlops.plans.workload import ExecCheck, Workload

    stages = ("import logging, sys, time\n"
              "logging.basicConfig(stream=sys.stderr, level=logging.INFO, "
              "format='%(asctime)s %(levelname)s job %(message)s')\n"
              "logging.info('stage=load_dataset status=ok duration=0.40s rows=569')\n"
              "print('progress bar', flush=True)\n"
              "logging.error('stage=train status=failed duration=1.25s error=ValueError: x')\n")
    job = Workload(name="job", image="img:1", command=("python", "-c", stages), env={},
                   port=0, health=ExecCheck(("true",)), startup_seconds=60)
    seen: list[str] = []

    def show(line: str) -> None:
        seen.append(line)
        _echo_stage(line)

    result = run_job(job, {}, tmp_path, on_line=show)

    assert capsys.readouterr().out == ("  load_dataset: ok (0.40s) rows=569\n"
                                       "  train: failed (1.25s) error=ValueError: x\n")
    assert "progress bar" in seen and result.stdout == "progress bar\n"
    assert result.returncode == 0 and "stage=train" in result.stderr
    assert "stage=train" in (tmp_path / "job.log").read_text()


@pytest.mark.slow
def test_make_dist_builds_a_wheel_with_the_package_and_the_mlops_command(
    tmp_path: Path,
) -> None:
    import zipfile

    from pulumi_mlops.contracts.version import __version__

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    subprocess.run(["make", "--no-print-directory", "dist", f"DIST={tmp_path}"], cwd=REPO,
                   env=env, check=True, capture_output=True, text=True)

    (wheel,) = tmp_path.glob("pulumi_mlops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"pulumi_mlops-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {"pulumi_mlops", info}
    assert "pulumi_mlops/components/service.py" in names
    assert "mlops = pulumi_mlops.cli:main" in entry_points
    assert "\nRequires-Dist: pulumi<" in metadata  # its dependencies come with it


def _preflight(tmp_path: Path, stack: str, config: str | None = None,
               tools: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """scripts/preflight.sh for ``stack`` (a shipped stack file, or ``config``), with stand-in
    commands: ``tools`` maps a name to the shell body of its stand-in."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    for shipped in (REPO / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(shipped, project / "stacks")
    if config is not None:
        (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(config)
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (tools or {}).items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    return subprocess.run(["sh", str(REPO / "scripts" / "preflight.sh")], cwd=project,
                          env={"PATH": f"{fake}:/usr/bin:/bin", "STACK": stack},
                          capture_output=True, text=True, check=False)


PULUMI = {"pulumi": "echo v3.272.0"}
DOCKER_UP = {"docker": "echo 28.2.2"}
DOCKER_DOWN = {"docker": "exit 1"}
KUBECTL = {"kubectl": "echo prod-cluster"}
NO_CONTEXT = {"kubectl": "exit 1"}


def test_preflight_of_the_dev_stack_needs_a_docker_daemon(tmp_path: Path) -> None:
    failed = _preflight(tmp_path, "dev", tools={**PULUMI, **DOCKER_DOWN})

    assert failed.returncode == 1
    assert "a running Docker daemon" in failed.stderr
    assert "stack 'dev' deploys to Docker" in failed.stderr


def test_preflight_of_a_kubernetes_stack_needs_a_context_and_docker_to_build(
        tmp_path: Path) -> None:
    ok = _preflight(tmp_path / "ok", "staging", tools={**PULUMI, **DOCKER_UP, **KUBECTL})
    no_context = _preflight(tmp_path / "ctx", "staging",
                            tools={**PULUMI, **DOCKER_UP, **NO_CONTEXT})
    no_docker = _preflight(tmp_path / "docker", "staging",
                           tools={**PULUMI, **DOCKER_DOWN, **KUBECTL})

    assert ok.returncode == 0, ok.stderr
    assert "kubernetes context prod-cluster" in ok.stdout
    assert no_context.returncode == 1 and "current Kubernetes context" in no_context.stderr
    assert no_docker.returncode == 1
    assert "builds the runtime image (set mlops:image to skip that)" in no_docker.stderr


def test_preflight_of_a_kubernetes_stack_with_an_image_needs_no_docker(tmp_path: Path) -> None:
    config = ("config:\n  mlops:target: kubernetes\n"
              "  mlops:image: registry.example.com/ml/mlops-runtime@sha256:" + "a" * 64 + "\n")
    result = _preflight(tmp_path, "given", config, tools={**PULUMI, **DOCKER_DOWN, **KUBECTL})

    assert result.returncode == 0, result.stderr
    assert "docker" not in result.stdout


def test_preflight_names_the_known_stacks_for_an_unknown_one(tmp_path: Path) -> None:
    result = _preflight(tmp_path, "qa", tools=PULUMI)

    assert result.returncode == 1
    assert "no stack 'qa'" in result.stderr and "dev" in result.stderr


@pytest.mark.parametrize("command, option", [("promote", "--approved-by"),
                                             ("canary-check", "--prometheus")])
def test_runtime_commands_are_wired_into_mlops(command: str, option: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert option in capsys.readouterr().out
    # Bad arguments are a usage error (2), not a traceback.
    with pytest.raises(SystemExit) as exited:
        main([command])
    assert exited.value.code == 2
