"""`mlops promote` between two real MLflow registries started from ModelRegistry's rendered
commands ("staging" on SQLite, "prod" on PostgreSQL), each with its own admin password: a
version trained by the retrain job in staging is copied to prod with its artifacts, signature,
drift profile and lineage; a second promotion registers nothing; the protected alias needs an
approval; wrong names, a stack name without the Pulumi CLI and wrong credentials fail clearly.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

from pulumi_mlops import DockerTarget, Gates, RegistryEndpoint
from pulumi_mlops.contracts import lineage
from pulumi_mlops.local import run_job
from pulumi_mlops.plans.retrain import RetrainScheduleArgs, plan_retrain
from pulumi_mlops.runtime import promote
from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH
from pulumi_mlops.runtime.retrain.job import EXIT_PROMOTED
from pulumi_mlops.runtime.serve.loading import load_served_model
from tests.e2e.registry import Registry, running_registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "cancer"
IMAGE = "registry.example.com/mlops-runtime@sha256:" + "e" * 64


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """(staging, prod); staging holds version 1 of `MODEL`, trained and promoted to
    ``champion`` by the retrain job RetrainSchedule renders."""
    with running_registry(tmp_path_factory.mktemp("staging"), "sqlite-docker") as staging, \
            running_registry(tmp_path_factory.mktemp("prod"), "postgres-kubernetes") as prod:
        args = RetrainScheduleArgs(
            registry=RegistryEndpoint(tracking_uri=staging.url, username=staging.username,
                                      password=staging.password),
            target=DockerTarget(), schedule="0 3 * * *", image=IMAGE,
            gates=Gates(min={"roc_auc": 0.9}), dataset="sklearn:breast_cancer",
            model_name=MODEL, estimator="sklearn.linear_model.LogisticRegression",
            params={"max_iter": 5000})
        plan = plan_retrain("nightly", args, tracking_uri=staging.url,
                            username=staging.username, has_password=True)
        done = run_job(plan.job, {"tracking-password": staging.password},
                       tmp_path_factory.mktemp("job"), timeout=180,
                       env={"MLOPS_CODE_VERSION": "abc123", "MLOPS_SCHEDULE_SLOT": "slot-1",
                            "PYTHONPATH": str(ROOT)})
        assert done.returncode == EXIT_PROMOTED, done.stdout + done.stderr
        yield staging, prod


@pytest.fixture
def sides(registries: tuple[Registry, Registry],
          monkeypatch: pytest.MonkeyPatch) -> tuple[Registry, Registry]:
    """Per-side credentials only; the process's own MLflow credentials are wrong for both, so
    a request that used them would fail."""
    staging, prod = registries
    monkeypatch.setenv("MLOPS_FROM_USERNAME", staging.username)
    monkeypatch.setenv("MLOPS_FROM_PASSWORD", staging.password)
    monkeypatch.setenv("MLOPS_TO_USERNAME", prod.username)
    monkeypatch.setenv("MLOPS_TO_PASSWORD", prod.password)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "nobody")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-password")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return staging, prod


def _profile(registry: Registry, run_id: str, dst: Path) -> dict[str, Any]:
    """A run's drift profile, read from ``registry`` named explicitly (never MLflow's global
    tracking URI, which an earlier test in the same worker may have left elsewhere)."""
    path = download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT_PATH,
                              dst_path=str(dst), tracking_uri=registry.url)
    loaded: dict[str, Any] = json.loads(Path(path).read_text())
    return loaded


def _client(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """An admin client of ``registry`` (sets this process's MLflow credentials to its own)."""
    for key, value in registry.env().items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=registry.url, registry_uri=registry.url)


def _versions(client: MlflowClient) -> list[str]:
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")),
                  key=int)


def _promote(staging: Registry, prod: Registry, *extra: str) -> int:
    return promote.main(["--from", staging.url, "--to", prod.url, *extra])


def test_protected_alias_without_approval_changes_nothing(
        sides: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging, prod = sides
    assert _promote(staging, prod, "--model", f"{MODEL}@champion") == \
        promote.EXIT_APPROVAL_REQUIRED
    err = capsys.readouterr().err
    assert "`champion` is protected" in err
    assert "--approved-by and --reason" in err
    client = _client(prod, monkeypatch)
    assert client.search_registered_models() == []


def test_promote_copies_model_signature_drift_profile_and_lineage(
        sides: tuple[Registry, Registry], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging, prod = sides
    # As CI runs it: its own process, credentials only in the environment.
    done = subprocess.run(
        [sys.executable, "-m", "pulumi_mlops.runtime.promote", "--from", staging.url, "--to",
         prod.url, "--model", f"{MODEL}@champion", "--approved-by", "alice",
         "--reason", "CHG-42 passed staging soak"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False)
    assert done.returncode == promote.EXIT_OK, done.stdout + done.stderr
    assert "as version 1 of" in done.stdout and "`champion` moved to 1" in done.stdout
    assert staging.password not in done.stdout + done.stderr

    src = _client(staging, monkeypatch)
    source = src.get_model_version_by_alias(MODEL, "champion")
    src_dir = Path(download_artifacts(
        artifact_uri=src.get_model_version_download_uri(MODEL, source.version),
        dst_path=str(tmp_path / "src"), tracking_uri=staging.url))
    src_profile = _profile(staging, source.run_id, tmp_path / "src-drift")
    # MLflow's own loader refuses scikit-learn models unless told to trust them; these are
    # the test's own.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    src_model = mlflow.pyfunc.load_model(str(src_dir))

    dst = _client(prod, monkeypatch)
    copied = dst.get_model_version_by_alias(MODEL, "champion")
    assert _versions(dst) == ["1"] and copied.version == "1"
    dst_dir = Path(download_artifacts(
        artifact_uri=dst.get_model_version_download_uri(MODEL, copied.version),
        dst_path=str(tmp_path / "dst"), tracking_uri=prod.url))
    # The artifacts, byte for byte (the MLmodel file, its signature included).
    compared = filecmp.dircmp(src_dir, dst_dir)
    assert not (compared.left_only or compared.right_only or compared.diff_files)
    assert _same_tree(src_dir, dst_dir)
    assert Model.load(str(dst_dir / "MLmodel")).signature == \
        Model.load(str(src_dir / "MLmodel")).signature
    assert Model.load(str(dst_dir / "MLmodel")).signature is not None
    x = load_breast_cancer(as_frame=True).data
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(dst_dir)).predict(x),
                                  src_model.predict(x))
    # The drift profile on the copy's run, where the serving runtime reads it.
    assert copied.run_id and copied.run_id != source.run_id
    assert _profile(prod, copied.run_id, tmp_path / "dst-drift") == src_profile
    # The serving runtime reads the registry from the environment (`_client(prod)` set it),
    # and MLflow's fallbacks from its global tracking URI, which another test may have set.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(prod.url)
    try:
        served = load_served_model(f"models:/{MODEL}@champion", attempts=1)
    finally:
        mlflow.set_tracking_uri(previous)
    assert served.drift is not None
    assert served.info.version == "1" and served.info.run_id == copied.run_id
    # Lineage, origin and approval.
    tags = copied.tags
    for key, value in source.tags.items():
        assert tags[key] == value, key
    assert tags["mlops.run_id"] == source.run_id  # the lineage names the training run
    assert tags[lineage.ORIGIN_REGISTRY_TAG] == promote.registry_identity(staging.url)
    assert tags[lineage.ORIGIN_MODEL_TAG] == MODEL
    assert tags[lineage.ORIGIN_VERSION_TAG] == source.version
    assert tags[lineage.ORIGIN_RUN_TAG] == source.run_id
    assert tags[lineage.APPROVAL_BY_TAG] == "alice"
    assert tags[lineage.APPROVAL_REASON_TAG] == "CHG-42 passed staging soak"
    assert tags[lineage.APPROVAL_ALIAS_TAG] == "champion"
    assert tags[lineage.APPROVAL_AT_TAG].endswith("+00:00")
    run_tags = dst.get_run(copied.run_id).data.tags
    assert run_tags[lineage.ORIGIN_VERSION_TAG] == source.version


def _same_tree(left: Path, right: Path) -> bool:
    files = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file()) and \
        all((left / f).read_bytes() == (right / f).read_bytes() for f in files)


def test_second_promotion_registers_nothing_and_only_moves_the_alias(
        sides: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging, prod = sides
    approval = ["--approved-by", "bob", "--reason", "again"]
    assert _promote(staging, prod, "--model", f"{MODEL}@champion", *approval) == 0
    assert "already holds it: nothing changed" in capsys.readouterr().out
    # A version number names the same source version: still nothing new.
    assert _promote(staging, prod, "--model", f"{MODEL}/1", *approval) == 0
    # An alias that moved away is moved back, with no new version and a new approval; this
    # process's MLflow variables now name prod and its admin: the sides still use their own.
    _client(prod, monkeypatch).delete_registered_model_alias(MODEL, "champion")
    assert _promote(staging, prod, "--model", f"{MODEL}@champion", *approval) == 0
    assert "is already version 1 of" in capsys.readouterr().out
    # An alias that is not protected moves without an approval.
    assert _promote(staging, prod, "--model", f"{MODEL}@champion", "--to-alias", "canary") == 0
    client = _client(prod, monkeypatch)
    assert _versions(client) == ["1"]
    assert {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()} == \
        {"champion": "1", "canary": "1"}
    assert client.get_model_version(MODEL, "1").tags[lineage.APPROVAL_BY_TAG] == "bob"
    experiment = client.get_experiment_by_name(promote.DEFAULT_EXPERIMENT)
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_unknown_alias_or_model_is_a_clear_error(
        sides: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str]) -> None:
    staging, prod = sides
    assert _promote(staging, prod, "--model", f"{MODEL}@nope") == promote.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert f"model '{MODEL}' has no alias 'nope'" in err and "challenger, champion" in err
    assert _promote(staging, prod, "--model", "ghost@champion") == promote.EXIT_NOT_FOUND
    assert "the source registry has no model 'ghost'" in capsys.readouterr().err
    assert _promote(staging, prod, "--model", f"{MODEL}/99") == promote.EXIT_NOT_FOUND
    assert f"model '{MODEL}' has no version 99" in capsys.readouterr().err


def test_stack_name_needs_the_pulumi_cli(
        sides: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, prod = sides
    monkeypatch.setenv("PATH", str(tmp_path))  # no `pulumi` on it
    code = promote.main(["--from", "staging", "--to", prod.url, "--model", f"{MODEL}@champion"])
    assert code == promote.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--from 'staging' is not a tracking URI" in err
    assert "`pulumi stack output registry_url --stack staging`" in err
    assert "not on PATH" in err


def test_wrong_destination_credentials_fail_naming_the_variables(
        sides: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging, prod = sides
    monkeypatch.setenv("MLOPS_TO_PASSWORD", "wrong-password")
    code = _promote(staging, prod, "--model", f"{MODEL}@champion", "--to-alias", "canary")
    assert code == promote.EXIT_FAILED
    err = capsys.readouterr().err
    assert "MLOPS_TO_USERNAME and MLOPS_TO_PASSWORD" in err
    assert "wrong-password" not in err and prod.password not in err
