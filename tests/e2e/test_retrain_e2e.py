"""`mlops retrain` against a real MLflow registry started from ModelRegistry's rendered command:
promotion, a gate that fails, idempotent retries keyed by the run's identity (a Kubernetes Job's
name, the scheduler's slot, none by hand), a changed config under the same key, and a fault at
each stage moving no alias."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

from pulumi_mlops import DockerTarget, Gates, RegistryEndpoint
from pulumi_mlops.local import run_job
from pulumi_mlops.plans.retrain import RetrainScheduleArgs, plan_retrain
from pulumi_mlops.runtime.drift.spec import (
    PREDICTION_FEATURE,
    PROFILE_ARTIFACT_PATH,
    CategoricalFeature,
    load_profile,
)
from pulumi_mlops.runtime.retrain import job
from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.runtime.retrain.config_file import config_digest
from pulumi_mlops.runtime.retrain.data import load_dataset, split
from pulumi_mlops.runtime.retrain.job import (
    EXIT_CONFIG_CHANGED,
    EXIT_FAILED,
    EXIT_NOT_PROMOTED,
    EXIT_PROMOTED,
)
from pulumi_mlops.runtime.retrain.registry import CONFIG_TAG, SLOT_TAG
from tests.e2e.registry import Registry, registry_client
from tests.loopback import http_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MLOPS = str(Path(sys.executable).parent / "mlops")
ROOT = Path(__file__).resolve().parents[2]
MODEL = "cancer"
IMAGE = "registry.example.com/mlops-runtime@sha256:" + "f" * 64
GATES = {"min": {"roc_auc": 0.9}, "min_improvement": {"roc_auc": -0.01},
         "max_regression": {"log_loss": 0.05}}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_client(tmp_path_factory.mktemp("registry")) as running:
        yield running


def _retrain(tmp_path: Path, registry: Registry, slot: str | None,
             scratch: dict[str, str] | None = None, **inputs: Any
             ) -> subprocess.CompletedProcess[str]:
    """Run the job command RetrainSchedule renders, as one run of its schedule would (with
    ``slot`` None: as a run by hand, without a key). ``scratch`` files are put in the job's
    ``/tmp`` (name → content), where a dataset path ``/tmp/<name>`` finds them."""
    args = RetrainScheduleArgs(
        registry=RegistryEndpoint(tracking_uri=registry.url, username=registry.username,
                                  password=registry.password),
        target=DockerTarget(), schedule="0 3 * * *", image=IMAGE,
        gates=Gates(**GATES), **{"dataset": "sklearn:breast_cancer", "model_name": MODEL,
                                 **inputs})
    plan = plan_retrain("nightly", args, tracking_uri=registry.url, username=registry.username,
                        has_password=True)
    assert plan.job.command == ("mlops", "retrain", "--config", "/etc/mlops/retrain.json")
    # Every run loads the champion as the cluster's job would: no pickle unless opted in.
    assert plan.job.env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == (
        "true" if inputs.get("allow_pickle") else "false")
    secrets = {"tracking-password": registry.password}
    if inputs.get("dataset_headers"):
        # What the component's Secret holds (`pulumi.Output.json_dumps` of the input).
        secrets["dataset-headers"] = json.dumps(inputs["dataset_headers"])
    # What the platform adds to one run: the key (the scheduler's slot, a Kubernetes Job's
    # name) and the code version; PYTHONPATH lets the job import the test trainers, as an
    # image would ship them.
    env = {"MLOPS_CODE_VERSION": "abc123", "PYTHONPATH": str(ROOT)}
    if slot is not None:
        env["MLOPS_SCHEDULE_SLOT"] = slot
    root = tmp_path / f"job-{slot or 'by-hand'}"
    while root.exists():
        root = root.with_name(root.name + "-again")
    for name, content in (scratch or {}).items():
        # The local runner maps the container's /tmp to the job's own `tmp` directory.
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "tmp" / name).write_text(content)
    return run_job(plan.job, secrets, root, timeout=120, env=env)


def _state(model: str = MODEL) -> tuple[dict[str, str], list[str]]:
    client = MlflowClient()
    aliases = {k: str(v) for k, v in (client.get_registered_model(model).aliases or {}).items()}
    versions = sorted((str(v.version) for v in client.search_model_versions(
        f"name = '{model}'")), key=int)
    return aliases, versions


def test_first_run_registers_and_promotes_with_lineage_and_profile(
        registry: Registry, tmp_path: Path) -> None:
    done = _retrain(tmp_path, registry, "slot-1",
                    estimator="sklearn.linear_model.LogisticRegression",
                    params={"max_iter": 5000})
    assert done.returncode == EXIT_PROMOTED, done.stdout + done.stderr
    assert "PROMOTED to `champion`" in done.stdout
    for stage in ("load_dataset", "split", "train", "evaluate", "log_run", "champion", "gates",
                  "register", "promote"):
        assert f"stage={stage} status=ok duration=" in done.stderr
    assert _state() == ({"champion": "1", "challenger": "1"}, ["1"])
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["mlops.dataset.uri"] == "sklearn:breast_cancer"
    assert len(tags["mlops.dataset.sha256"]) == 64
    assert tags["mlops.dataset.rows"] == "569"
    assert json.loads(tags["mlops.params"]) == {"max_iter": 5000}
    assert set(json.loads(tags["mlops.metrics"])) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert tags["mlops.code_version"] == "abc123"
    assert tags["mlops.image_digest"] == IMAGE
    assert tags["mlops.schedule_slot"] == "slot-1"
    assert tags["mlops.gates_passed"] == "true"
    assert tags["mlops.outcome"] == "promoted"
    profile = load_profile(mlflow.artifacts.load_dict(
        f"runs:/{tags['mlops.run_id']}/{PROFILE_ARTIFACT_PATH}"))
    # The 30 input columns, then the classifier's predictions of the holdout rows: classes.
    assert len(profile.features) == 31
    assert profile.numeric_inputs == tuple(load_breast_cancer(as_frame=True).data.columns)
    assert list(profile.features)[-1] == PREDICTION_FEATURE
    assert isinstance(profile.prediction, CategoricalFeature)
    config = RetrainConfig.model_validate(
        {"model_name": MODEL, "dataset": "sklearn:breast_cancer", "gates": GATES,
         "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 5000}})
    dataset = load_dataset(config.dataset, config.target_column)
    holdout = split(dataset, config.holdout_fraction, config.seed, "classification").x_holdout
    predicted = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(holdout)
    assert dict(profile.prediction.frequencies) == pytest.approx(
        {str(c): float(np.mean(predicted == c)) for c in np.unique(predicted)})
    run = MlflowClient().get_run(tags["mlops.run_id"])
    assert run.data.metrics["roc_auc"] > 0.9
    assert run.data.params["max_iter"] == "5000"


def test_a_worse_model_is_registered_as_challenger_but_not_promoted(
        registry: Registry, tmp_path: Path) -> None:
    done = _retrain(tmp_path, registry, "slot-2", estimator="sklearn.dummy.DummyClassifier")
    assert done.returncode == EXIT_NOT_PROMOTED, done.stdout + done.stderr
    assert "NOT promoted" in done.stdout
    assert "min              roc_auc    FAIL" in done.stdout
    assert _state() == ({"champion": "1", "challenger": "2"}, ["1", "2"])
    tags = MlflowClient().get_model_version(MODEL, "2").tags
    assert tags["mlops.gates_passed"] == "false"
    assert tags["mlops.champion_version"] == "1"


def test_a_retried_slot_registers_nothing_and_reports_its_outcome(
        registry: Registry, tmp_path: Path) -> None:
    done = _retrain(tmp_path, registry, "slot-2", estimator="sklearn.dummy.DummyClassifier")
    assert done.returncode == EXIT_NOT_PROMOTED, done.stdout + done.stderr
    assert "already ran" in done.stdout
    assert _state() == ({"champion": "1", "challenger": "2"}, ["1", "2"])


def _config(tmp_path: Path, **changes: Any) -> RetrainConfig:
    values: dict[str, Any] = {"model_name": MODEL, "dataset": "sklearn:breast_cancer",
                              "trainer": "tests.e2e.retrain_trainers:scaled_logistic",
                              "gates": GATES}
    return RetrainConfig.model_validate({**values, **changes})


@pytest.mark.parametrize("fault", ["missing dataset", "malformed csv", "training raises",
                                   "evaluation raises"])
def test_a_fault_at_any_stage_moves_no_alias(registry: Registry, tmp_path: Path,
                                             fault: str) -> None:
    before = _state()
    trainer = "tests.e2e.retrain_trainers:scaled_logistic"
    inputs: dict[str, Any]
    scratch: dict[str, str] = {}
    if fault == "missing dataset":
        inputs = {"dataset": "/tmp/nope.csv", "target_column": "y"}
    elif fault == "malformed csv":
        scratch = {"data.csv": "a,b,y\n1,2,0\n1,2,3,4,5\n3,4,1\n"}
        inputs = {"dataset": "/tmp/data.csv", "target_column": "y"}
    elif fault == "training raises":
        trainer = "tests.e2e.retrain_trainers:raising"
        inputs = {}
    else:
        trainer = "tests.e2e.retrain_trainers:predict_raises"
        inputs = {}
    done = _retrain(tmp_path, registry, f"fault-{fault.replace(' ', '-')}", scratch,
                    trainer=trainer, **inputs)
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    stage = {"missing dataset": "load_dataset", "malformed csv": "load_dataset",
             "training raises": "train", "evaluation raises": "evaluate"}[fault]
    assert f"FAILED at stage `{stage}`" in done.stdout
    if fault == "malformed csv":
        assert "is malformed" in done.stdout
    assert _state() == before


def test_a_retry_after_a_crash_between_registration_and_promotion_finishes_the_promotion(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SCHEDULE_SLOT", "crash-before-promote")
    aliases, versions = _state()

    def crash(*args: Any) -> None:
        raise ConnectionError("injected: registry unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(job, "promote", crash)
        assert job.run(_config(tmp_path)) == EXIT_FAILED
    new = str(int(versions[-1]) + 1)
    assert _state() == (aliases, [*versions, new])
    assert "mlops.outcome" not in MlflowClient().get_model_version(MODEL, new).tags

    # The retry registers nothing; the champion is still the one compared with, so it moves.
    assert job.run(_config(tmp_path)) == EXIT_PROMOTED
    assert _state() == ({"champion": new, "challenger": new}, [*versions, new])
    assert MlflowClient().get_model_version(MODEL, new).tags["mlops.outcome"] == "promoted"


def test_a_registry_that_stops_answering_mid_way_moves_no_alias(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SCHEDULE_SLOT", "fault-frozen-registry")
    monkeypatch.setenv("MLOPS_TEST_REGISTRY_PGID", str(registry.running.process.pid))
    # The frozen registry must fail a request quickly rather than after minutes of retries
    # (only here: elsewhere a busy machine may take more than 3 s to answer).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    before = _state()
    try:
        code = job.run(_config(
            tmp_path, trainer="tests.e2e.retrain_trainers:freeze_registry_then_train"))
    finally:
        os.killpg(registry.running.process.pid, signal.SIGCONT)
    assert code == EXIT_FAILED
    assert _state() == before


# --------------------------------------------------------------------------- idempotency key

QUICK = {"trainer": "tests.e2e.retrain_trainers:scaled_logistic"}
# How a CronJob names the Job of one scheduled time: `<cronjob>-<minutes since the epoch>`; on
# Kubernetes the pod gets it from its `batch.kubernetes.io/job-name` label.
NIGHTLY_JOB = "nightly-retrain-29390580"


def _versions() -> list[str]:
    return _state()[1]


def test_a_retried_pod_of_the_same_job_registers_nothing_new(
        registry: Registry, tmp_path: Path) -> None:
    first = _retrain(tmp_path, registry, NIGHTLY_JOB, **QUICK)
    assert first.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), first.stdout + first.stderr
    versions = _versions()
    tags = MlflowClient().get_model_version(MODEL, versions[-1]).tags
    assert tags[SLOT_TAG] == NIGHTLY_JOB

    again = _retrain(tmp_path, registry, NIGHTLY_JOB, **QUICK)
    assert again.returncode == first.returncode, again.stdout + again.stderr
    assert f"slot {NIGHTLY_JOB} already ran" in again.stdout
    assert _versions() == versions


def test_a_job_created_by_hand_from_the_cron_job_runs_after_the_nightly_run(
        registry: Registry, tmp_path: Path) -> None:
    # `kubectl create job --from=cronjob/nightly-retrain nightly-manual`: a new Job, a new name.
    versions = _versions()
    done = _retrain(tmp_path, registry, "nightly-manual", **QUICK)
    assert done.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), done.stdout + done.stderr
    assert "already ran" not in done.stdout
    new = str(int(versions[-1]) + 1)
    assert _versions() == [*versions, new]
    assert MlflowClient().get_model_version(MODEL, new).tags[SLOT_TAG] == "nightly-manual"


def test_a_run_by_hand_without_a_key_always_runs(registry: Registry, tmp_path: Path) -> None:
    versions = _versions()
    for attempt in (1, 2):
        done = _retrain(tmp_path, registry, None, **QUICK)
        assert done.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), done.stdout + done.stderr
        assert len(_versions()) == len(versions) + attempt
    for version in _versions()[len(versions):]:
        tags = MlflowClient().get_model_version(MODEL, version).tags
        assert SLOT_TAG not in tags
        assert len(tags[CONFIG_TAG]) == 64


def test_a_changed_config_under_the_same_key_is_reported_not_skipped(
        registry: Registry, tmp_path: Path) -> None:
    key = "nightly-retrain-29391020"
    first = _retrain(tmp_path, registry, key, **QUICK)
    assert first.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), first.stdout + first.stderr
    before = _state()
    recorded = MlflowClient().get_model_version(MODEL, before[1][-1]).tags[CONFIG_TAG]

    # The stack was updated between the attempt and its retry: other params, same Job.
    changed = _retrain(tmp_path, registry, key, **QUICK, params={"C": 0.5})
    assert changed.returncode == EXIT_CONFIG_CHANGED, changed.stdout + changed.stderr
    assert f"the config changed since slot {key} ran" in changed.stdout
    assert recorded[:12] in changed.stdout
    assert "nothing registered" in changed.stdout
    assert _state() == before


def test_the_recorded_config_digest_is_the_rendered_configs(registry: Registry) -> None:
    args = RetrainScheduleArgs(
        registry=RegistryEndpoint(tracking_uri=registry.url, username=registry.username,
                                  password=registry.password),
        target=DockerTarget(), schedule="0 3 * * *", image=IMAGE, model_name=MODEL,
        gates=Gates(**GATES), dataset="sklearn:breast_cancer", **QUICK)
    config = plan_retrain("nightly", args, tracking_uri=registry.url).config
    [version] = MlflowClient().search_model_versions(
        f"name = '{MODEL}' and tags.`{SLOT_TAG}` = '{NIGHTLY_JOB}'")
    assert version.tags[CONFIG_TAG] == config_digest(config)


# --------------------------------------------------------------------------- concurrent runs


def test_a_run_whose_champion_moved_while_it_ran_loses_cleanly(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    model = "cancer-race"
    config = _config(tmp_path, model_name=model, gates={})
    assert job.run(config) == EXIT_PROMOTED
    assert _state(model) == ({"champion": "1", "challenger": "1"}, ["1"])
    capsys.readouterr()

    # Two runs of one slot's model, interleaved: the second starts and finishes while the
    # first is between evaluating the champion (version 1) and promoting.
    real = job.evaluate_champion
    codes: list[int] = []

    def evaluate_then_let_the_other_run(*args: Any) -> Any:
        champion = real(*args)
        if not codes:
            codes.append(-1)
            monkeypatch.setattr(job, "evaluate_champion", real)
            codes.append(job.run(config))
        return champion

    monkeypatch.setattr(job, "evaluate_champion", evaluate_then_let_the_other_run)
    first = job.run(config)

    assert codes == [-1, EXIT_PROMOTED]  # the other run registered version 2, promoted it
    assert first == EXIT_NOT_PROMOTED
    assert _state(model) == ({"champion": "2", "challenger": "3"}, ["1", "2", "3"])
    tags = MlflowClient().get_model_version(model, "3").tags
    assert tags["mlops.champion_version"] == "1"
    assert tags["mlops.gates_passed"] == "true"
    assert tags["mlops.outcome"] == "not_promoted"
    assert ("NOT promoted: every gate passed, but `champion` moved from version 1 to 2 while "
            "this run ran") in capsys.readouterr().out
    [lost] = [r.getMessage() for r in caplog.records if "stage=promote lost" in r.getMessage()]
    assert "moved from 1 to 2" in lost and "version 3 is not promoted" in lost


def test_a_run_whose_promotion_is_overwritten_at_once_reports_it_lost(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = "cancer-overwritten"
    config = _config(tmp_path, model_name=model, gates={})
    assert [job.run(config), job.run(config)] == [EXIT_PROMOTED, EXIT_PROMOTED]
    assert _state(model) == ({"champion": "2", "challenger": "2"}, ["1", "2"])
    capsys.readouterr()
    new = "3"
    real = MlflowClient.set_registered_model_alias

    def set_then_overwritten(self: MlflowClient, name: str, alias: str, version: str) -> None:
        real(self, name, alias, version)
        if alias == "champion" and str(version) == new:
            # Another run's set lands between this run's set and its check.
            real(self, name, alias, "1")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_then_overwritten)
    assert job.run(config) == EXIT_NOT_PROMOTED
    assert _state(model) == ({"champion": "1", "challenger": "3"}, ["1", "2", "3"])
    assert "moved from version 2 to 1 while this run ran" in capsys.readouterr().out
    assert MlflowClient().get_model_version(model, "3").tags["mlops.outcome"] == "not_promoted"


# --------------------------------------------------------------------------- champion loading


def test_the_champion_of_a_previous_run_loads_with_pickle_deserialization_off(
        registry: Registry, tmp_path: Path) -> None:
    model = "cancer-skops"
    forest = {"model_name": model, "estimator": "sklearn.ensemble.RandomForestClassifier",
              "params": {"n_estimators": 10}}
    first = _retrain(tmp_path, registry, None, **forest)
    assert first.returncode == EXIT_PROMOTED, first.stdout + first.stderr
    second = _retrain(tmp_path, registry, None, **forest)

    assert second.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), second.stdout + second.stderr
    assert "stage=champion status=ok" in second.stderr
    assert "version=1" in second.stderr.split("stage=champion", 1)[1].split("\n", 1)[0]
    assert MlflowClient().get_model_version(model, "2").tags["mlops.champion_version"] == "1"
    # A forest needs a type skops does not trust by default: the job trusted it from the model.
    mlmodel = Path(mlflow.artifacts.download_artifacts(f"models:/{model}/1")) / "MLmodel"
    assert "sklearn.tree._tree.Tree" in mlmodel.read_text()


def test_a_pickled_champion_fails_the_run_unless_allow_pickle_is_set(
        registry: Registry, tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    model = "cancer-pickled"
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    with mlflow.start_run():
        mlflow.sklearn.log_model(LogisticRegression(max_iter=5000).fit(x, y), name="model",
                                 serialization_format="cloudpickle",
                                 registered_model_name=model)
    MlflowClient().set_registered_model_alias(model, "champion", "1")

    refused = _retrain(tmp_path, registry, None, model_name=model, **QUICK)
    assert refused.returncode == EXIT_FAILED, refused.stdout + refused.stderr
    assert "FAILED at stage `champion`" in refused.stdout
    assert "cloudpickle-format model" in refused.stdout and "allow_pickle=True" in refused.stdout
    assert _state(model) == ({"champion": "1"}, ["1"])

    allowed = _retrain(tmp_path, registry, None, model_name=model, allow_pickle=True, **QUICK)
    assert allowed.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), (
        allowed.stdout + allowed.stderr)
    assert MlflowClient().get_model_version(model, "2").tags["mlops.champion_version"] == "1"


# --------------------------------------------------------------------------- dataset credentials

TOKEN = "Bearer e2e-dataset-t0ken-5c1d"


@contextlib.contextmanager
def _dataset_server(body: bytes) -> Iterator[tuple[str, list[str | None]]]:
    """Serve ``body`` at ``/cancer.csv`` to requests bearing `TOKEN` only (401 otherwise)."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != TOKEN:
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with http_server(Handler) as url:
        yield f"{url}/cancer.csv", seen


def test_dataset_credentials_are_sent_as_headers_and_recorded_nowhere(
        registry: Registry, tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    model = "cancer-url"
    body = load_breast_cancer(as_frame=True).frame.to_csv(index=False).encode()
    with _dataset_server(body) as (url, seen):
        done = _retrain(tmp_path, registry, "url-1", model_name=model, dataset=url,
                        target_column="target", dataset_headers={"Authorization": TOKEN},
                        **QUICK)

    assert done.returncode == EXIT_PROMOTED, done.stdout + done.stderr
    assert seen == [TOKEN]
    secret = TOKEN.split()[1]
    assert secret not in done.stdout + done.stderr
    [config] = (tmp_path / "job-url-1").rglob("retrain.json")
    assert '"dataset_headers_env": "MLOPS_DATASET_HEADERS"' in config.read_text()
    assert secret not in config.read_text()
    version = MlflowClient().get_model_version(model, "1")
    assert version.tags["mlops.dataset.uri"] == url
    run = MlflowClient().get_run(version.tags["mlops.run_id"])
    recorded = json.dumps([version.tags, run.data.tags, run.data.params])
    assert url in recorded
    assert secret not in recorded
