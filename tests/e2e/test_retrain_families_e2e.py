"""Every scikit-learn family through retrain → register → serve, against a real registry.

For each family (classification and regression where both exist) the job command
RetrainSchedule renders runs once, as one slot of its schedule; then the server command
ModelService renders for ``models:/<name>/1`` starts, and its answers to the holdout rows must
equal ``mlflow.pyfunc.load_model(...).predict`` on the same rows. The logged model must record
exactly the types skops does not trust by default that it is made of, no more.

Each reference stack's own retrain config (``mlops:retrain`` in ``stacks/Pulumi.<stack>.yaml``)
is rendered by the stack program and run for real too.

One registry serves the whole module; the data is small (scikit-learn's breast_cancer,
diabetes and wine, and a generated CSV with numeric and string columns, downloaded by the job
from a local HTTP server as a URL dataset would be).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import skops.io
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

import pulumi_mlops as mlops
from pulumi_mlops.components.registry import ModelRegistry
from pulumi_mlops.components.retrain import RetrainSchedule
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.contracts.metrics import (
    BIN_LABEL,
    DRIFT_OBSERVATIONS,
    FEATURE_LABEL,
    OTHER_BIN,
    PREDICTION_FEATURE,
)
from pulumi_mlops.local import RunningWorkload, run_job, run_workload
from pulumi_mlops.plans.retrain import RetrainScheduleArgs, plan_retrain
from pulumi_mlops.render import record, record_program
from pulumi_mlops.runtime.drift.spec import (
    PROFILE_ARTIFACT_PATH,
    CategoricalFeature,
    NumericFeature,
    load_profile,
)
from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.runtime.retrain.data import infer_task, load_dataset, split
from pulumi_mlops.runtime.retrain.job import EXIT_NOT_PROMOTED, EXIT_PROMOTED
from pulumi_mlops.runtime.retrain.registry import SLOT_TAG
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.loopback import http_server

# The guard is against a hang, not a speed claim: on a shared two-core machine under load the
# twenty jobs and servers may take longer than the default ten minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/mlops-runtime@sha256:" + "e" * 64
MIXED = "mixed"  # stands for the generated CSV of the `mixed_csv` fixture


@dataclass(frozen=True)
class Family:
    """One estimator family on one task: what the retrain config says."""

    id: str
    dataset: str
    estimator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    trainer: str | None = None

    @property
    def model_name(self) -> str:
        return f"fam-{self.id}"


FAMILIES = (
    Family("linear-classification", "sklearn:breast_cancer",
           "sklearn.linear_model.LogisticRegression", {"max_iter": 5000}),
    Family("linear-regression", "sklearn:diabetes", "sklearn.linear_model.Ridge"),
    Family("tree-classification", "sklearn:wine", "sklearn.tree.DecisionTreeClassifier",
           {"max_depth": 4}),
    Family("tree-regression", "sklearn:diabetes", "sklearn.tree.DecisionTreeRegressor",
           {"max_depth": 4}),
    Family("random-forest-classification", "sklearn:breast_cancer",
           "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 15}),
    Family("random-forest-regression", "sklearn:diabetes",
           "sklearn.ensemble.RandomForestRegressor", {"n_estimators": 15}),
    Family("extra-trees-classification", "sklearn:wine", "sklearn.ensemble.ExtraTreesClassifier",
           {"n_estimators": 15}),
    Family("extra-trees-regression", "sklearn:diabetes", "sklearn.ensemble.ExtraTreesRegressor",
           {"n_estimators": 15}),
    Family("gradient-boosting-classification", "sklearn:breast_cancer",
           "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 30}),
    Family("gradient-boosting-regression", "sklearn:diabetes",
           "sklearn.ensemble.GradientBoostingRegressor", {"n_estimators": 30}),
    Family("hist-gradient-boosting-classification", "sklearn:wine",
           "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
    Family("hist-gradient-boosting-regression", "sklearn:diabetes",
           "sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 20}),
    Family("svm-classification", "sklearn:breast_cancer", "sklearn.svm.SVC",
           {"probability": True}),
    Family("svm-regression", "sklearn:diabetes", "sklearn.svm.SVR"),
    Family("knn-classification", "sklearn:wine", "sklearn.neighbors.KNeighborsClassifier"),
    Family("knn-regression", "sklearn:diabetes", "sklearn.neighbors.KNeighborsRegressor"),
    Family("naive-bayes-classification", "sklearn:breast_cancer",
           "sklearn.naive_bayes.GaussianNB"),
    # Mixed numeric and string columns: the job puts the estimator behind its own
    # scaling + one-hot pipeline ...
    Family("mixed-pipeline-classification", f"{MIXED}:churned",
           "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
    Family("mixed-pipeline-regression", f"{MIXED}:spend", "sklearn.linear_model.Ridge"),
    # ... or a trainer returns the team's own Pipeline with a ColumnTransformer.
    Family("trainer-pipeline-classification", f"{MIXED}:churned",
           trainer="tests.e2e.retrain_trainers:mixed_pipeline"),
)

# Families whose serving fails because of the model server (not the job): id -> the server's
# error. Each is a strict xfail, so a fixed server turns it into a failure to remove here.
SERVER_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_client(tmp_path_factory.mktemp("registry")) as running:
        yield running


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """URLs of two CSVs of the same generated customers (numeric and string columns), one
    labelled with a string class (``churned``), one with a number (``spend``).

    Served over HTTP on loopback: a local path would be a path inside the job's container,
    which the local runner maps to the job's own directory."""
    rng = np.random.default_rng(7)
    rows = 400
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, rows),
        "income": rng.normal(50.0, 15.0, rows).round(2),
        "city": rng.choice(["paris", "lyon", "nice", "lille"], rows),
        "plan": rng.choice(["basic", "pro"], rows),
    })
    score = (0.05 * (frame["age"] - 45) + 0.08 * (frame["income"] - 50)
             + (frame["city"] == "paris") * 1.2 - (frame["plan"] == "basic") * 0.9)
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-score)), "yes", "no")
    spend = (2.0 * frame["income"] + 30.0 * (frame["plan"] == "pro")
             + rng.normal(0.0, 5.0, rows)).round(2)
    folder = tmp_path_factory.mktemp("data")
    frame.assign(churned=churned).to_csv(folder / "customers-churn.csv", index=False)
    frame.assign(spend=spend).to_csv(folder / "customers-spend.csv", index=False)
    with http_server(functools.partial(_QuietHandler, directory=str(folder))) as base:
        yield {"churned": f"{base}/customers-churn.csv", "spend": f"{base}/customers-spend.csv"}


def _data_inputs(family: Family, mixed_csv: dict[str, str]) -> dict[str, Any]:
    if family.dataset.startswith(f"{MIXED}:"):
        target = family.dataset.split(":", 1)[1]
        return {"dataset": mixed_csv[target], "target_column": target}
    return {"dataset": family.dataset}


def _job_args(registry: Registry, family: Family, mixed_csv: dict[str, str]
              ) -> RetrainScheduleArgs:
    model: dict[str, Any] = ({"trainer": family.trainer} if family.trainer else
                             {"estimator": family.estimator, "params": family.params})
    return RetrainScheduleArgs(
        registry=mlops.RegistryEndpoint(tracking_uri=registry.url, username=registry.username,
                                        password=registry.password),
        target=mlops.DockerTarget(), schedule="0 3 * * *", image=IMAGE,
        model_name=family.model_name, **_data_inputs(family, mixed_csv), **model)


@dataclass(frozen=True)
class Retrained:
    """One family's job run: its config and the finished process."""

    config: RetrainConfig
    returncode: int
    output: str


class Jobs:
    """Each family's job, run at most once: those of the selected tests up front, two at a
    time (the jobs are independent, one model each, and the machine has two cores); any
    other when first asked for."""

    def __init__(self, run: Callable[[Family], Retrained]) -> None:
        self._run = run
        self._done: dict[str, Retrained] = {}

    def prefetch(self, families: list[Family]) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for family, result in zip(families, pool.map(self._run, families), strict=True):
                self._done[family.id] = result

    def __getitem__(self, family_id: str) -> Retrained:
        if family_id not in self._done:
            self._done[family_id] = self._run(next(f for f in FAMILIES if f.id == family_id))
        return self._done[family_id]


@pytest.fixture(scope="module")
def retrained(request: pytest.FixtureRequest, registry: Registry, mixed_csv: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    """Each family's rendered job, run once as its schedule's slot would."""
    root = tmp_path_factory.mktemp("jobs")

    def run(family: Family) -> Retrained:
        plan = plan_retrain(family.model_name, _job_args(registry, family, mixed_csv),
                            tracking_uri=registry.url, username=registry.username,
                            has_password=True)
        assert plan.job.command == ("mlops", "retrain", "--config", "/etc/mlops/retrain.json")
        # What the platform adds to one run: the slot (the scheduler sets it); PYTHONPATH lets
        # the job import the test trainers, as an image would ship them.
        done = run_job(plan.job, {"tracking-password": registry.password}, root / family.id,
                       timeout=240, env={"MLOPS_SCHEDULE_SLOT": "2026-11-24T03:00Z",
                                         "PYTHONPATH": str(ROOT)})
        return Retrained(plan.config, done.returncode, done.stdout + done.stderr)

    jobs = Jobs(run)
    selected = {item.callspec.params["family"].id for item in request.session.items
                if "family" in getattr(getattr(item, "callspec", None), "params", {})}
    jobs.prefetch([f for f in FAMILIES if f.id in selected])
    return jobs


@contextlib.contextmanager
def serving(registry: Registry, model_uri: str, root: Path) -> Iterator[RunningWorkload]:
    """Start the server command ModelService renders for ``model_uri``."""
    port, metrics_port = free_port(), free_port()
    endpoint = mlops.RegistryEndpoint(tracking_uri=registry.url, username=registry.username,
                                      password=registry.password)
    recording = record(lambda: ModelService("svc", registry=endpoint, target=mlops.DockerTarget(),
                                            model_uri=model_uri, port=port,
                                            metrics_port=metrics_port, image=IMAGE),
                       preview=True)
    (service,) = [c for c in recording.components if isinstance(c, ModelService)]
    workload = service.plan.tracks[0].workload
    assert workload.command[:4] == ("mlops", "serve", "--model-uri", model_uri)
    with run_workload(workload, {"tracking-password": registry.password}, root,
                      timeout=120) as running:
        yield running
        # Its graceful drain (ten seconds, tested with the server) would only slow twenty
        # families down: the process group this test started ends at once.
        os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait(timeout=30)


def _holdout(config: RetrainConfig) -> pd.DataFrame:
    """The rows the job held out, from the job's own loading and split."""
    dataset = load_dataset(config.dataset, config.target_column)
    task = infer_task(dataset.y) if config.task == "auto" else config.task
    return split(dataset, config.holdout_fraction, config.seed, task).x_holdout


def _predict(url: str, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    # json.dumps writes each float so that it reads back to the same double (pandas' to_json
    # keeps 10 digits): the server must see the very rows pyfunc predicted on.
    split_doc = frame.to_dict(orient="split", index=False)
    body = json.dumps({"dataframe_split": split_doc})
    response = requests.post(url + "/invocations", data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"]).ravel()


def _marks(family: Family) -> list[pytest.MarkDecorator]:
    reason = SERVER_FAILURES.get(family.id)
    return [] if reason is None else [pytest.mark.xfail(strict=True, reason=reason)]


@pytest.mark.parametrize("family", [pytest.param(f, id=f.id, marks=_marks(f))
                                    for f in FAMILIES])
def test_retrained_version_serves_what_pyfunc_predicts(
        family: Family, registry: Registry, retrained: Jobs,
        tmp_path: Path) -> None:
    run = retrained[family.id]
    assert run.returncode == EXIT_PROMOTED, run.output
    name = family.model_name
    version = MlflowClient().get_model_version_by_alias(name, "champion")
    assert version.version == "1"
    assert version.tags[SLOT_TAG] == "2026-11-24T03:00Z"

    # The model trusts exactly the types it is made of: what skops reports for the saved file.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1",
                                                     dst_path=str(tmp_path / "model")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert flavor["skops_trusted_types"] == sorted(
        skops.io.get_untrusted_types(file=local / flavor["pickled_model"]))

    rows = _holdout(run.config)
    # Loaded from the copy just downloaded: the same files, without two more downloads (each
    # registry request pays for an authentication).
    expected = np.asarray(mlflow.pyfunc.load_model(str(local)).predict(rows)).ravel()
    # The job's own loader for the champion loads it too.
    _assert_same_predictions(np.asarray(mlflow.sklearn.load_model(str(local)).predict(rows)),
                             expected)
    # The job profiled the model's predictions of the holdout rows as the server monitors
    # them: classes for a classifier, values for a regressor.
    profile = load_profile(mlflow.artifacts.load_dict(
        f"runs:/{version.run_id}/{PROFILE_ARTIFACT_PATH}"))
    reference = profile.prediction
    assert list(profile.features)[-1] == PREDICTION_FEATURE
    assert isinstance(reference, CategoricalFeature if family.id.endswith("classification")
                      else NumericFeature)
    # Up to the values an ulp away from an edge (a quantile may be one of the values, and
    # the job's and this process's BLAS may round their last bit differently).
    slack = _near_edges(reference, expected)
    np.testing.assert_allclose(np.array(_binned(reference, expected)),
                               np.array(_shares(reference)) * len(expected), atol=slack + 1e-6)
    with serving(registry, f"models:/{name}/1", tmp_path) as server:
        answered = _predict(server.url, rows)
        _assert_same_predictions(answered, expected)
        # The server binned the predictions it answered in the profile's bins: the bins of
        # what pyfunc predicts, but for a value an ulp away from an edge.
        served = _served_prediction_counts(server.metrics_url, _binned(reference, answered))
        assert served == _binned(reference, answered)
        if slack == 0:
            assert served == _binned(reference, expected)


def _shares(reference: NumericFeature | CategoricalFeature) -> list[float]:
    if isinstance(reference, NumericFeature):
        return list(reference.proportions)
    return [*reference.frequencies.values(), 0.0]


def _binned(reference: NumericFeature | CategoricalFeature,
            predictions: np.ndarray[Any, Any]) -> list[int]:
    """A plain recount of ``predictions`` in the profile's bins (categorical: the training
    classes in profile order, then "other")."""
    if isinstance(reference, NumericFeature):
        values = predictions.astype(np.float64)
        bins = np.searchsorted(np.asarray(reference.edges), values, side="left")
        return np.bincount(bins, minlength=len(reference.edges) + 1).tolist()
    known = list(reference.frequencies)
    labels = [str(v) for v in predictions.tolist()]
    return [labels.count(c) for c in known] + [sum(v not in known for v in labels)]


def _near_edges(reference: NumericFeature | CategoricalFeature,
                predictions: np.ndarray[Any, Any]) -> int:
    if not isinstance(reference, NumericFeature) or not reference.edges:
        return 0
    values = predictions.astype(np.float64)
    return int(sum(np.isclose(values, e, rtol=1e-9, atol=0).sum() for e in reference.edges))


def _served_prediction_counts(url: str, expected: list[int]) -> list[float]:
    """``mlops_drift_observations_total{feature="__prediction__"}`` per bin, once it equals
    ``expected`` or after a few seconds (with several workers, another worker's rows reach a
    scrape within its periodic flush)."""
    deadline = time.monotonic() + 10
    while True:
        page = requests.get(url + "/metrics", timeout=10).text
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if (sample.name == DRIFT_OBSERVATIONS + "_total"
                        and sample.labels[FEATURE_LABEL] == PREDICTION_FEATURE):
                    counts[sample.labels[BIN_LABEL]] = sample.value
        ordered = [counts.get(str(i), -1.0) for i in range(len(expected))]
        if OTHER_BIN in counts:
            ordered[-1] = counts[OTHER_BIN]
        if ordered == expected or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(counts) == len(expected), counts
    return ordered


def _assert_same_predictions(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]
                             ) -> None:
    """Labels exactly; numbers to the last bits only: a BLAS product (linear models, SVR)
    rounds its last bit differently with the memory layout of the matrix and the number of
    threads, so two processes predicting the same rows may differ by an ulp or two."""
    assert actual.shape == expected.shape
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)
    else:
        np.testing.assert_array_equal(actual, expected)


def test_the_matrix_covers_every_family_on_each_task_it_has() -> None:
    ids = {f.id for f in FAMILIES}
    for kind in ("linear", "tree", "random-forest", "extra-trees", "gradient-boosting",
                 "hist-gradient-boosting", "svm", "knn", "mixed-pipeline"):
        assert {f"{kind}-classification", f"{kind}-regression"} <= ids
    assert {"naive-bayes-classification", "trainer-pipeline-classification"} <= ids
    svc = next(f for f in FAMILIES if f.id == "svm-classification")
    assert svc.params == {"probability": True}


def test_with_pickle_off_mlflow_refuses_skops_and_the_job_still_scores_its_champion(
        registry: Registry, retrained: Jobs, mixed_csv: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3.17 gates skops behind the variable too: the trust list is read from the model
    # itself. Recording trusted types must not weaken that in MLflow.
    family = next(f for f in FAMILIES if f.id == "random-forest-classification")
    assert retrained[family.id].returncode == EXIT_PROMOTED
    uri = f"models:/{family.model_name}/1"
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    for load in (mlflow.sklearn.load_model, mlflow.pyfunc.load_model):
        with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
            load(uri)

    # The job, as RetrainSchedule renders it (pickle off), loads the champion with the types
    # it records that scikit-learn defines, scores it, and registers the new version.
    client = MlflowClient()
    versions = len(client.search_model_versions(f"name = '{family.model_name}'"))
    plan = plan_retrain(family.model_name, _job_args(registry, family, mixed_csv),
                        tracking_uri=registry.url, username=registry.username,
                        has_password=True)
    assert plan.job.env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    done = run_job(plan.job, {"tracking-password": registry.password}, tmp_path, timeout=240,
                   env={"MLOPS_SCHEDULE_SLOT": "pickle-off"})
    assert done.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), done.stdout + done.stderr
    assert "FAILED" not in done.stdout
    assert len(client.search_model_versions(f"name = '{family.model_name}'")) == versions + 1


# --------------------------------------------------------------------------- reference stacks


def _stack_retrain(stack: str) -> RetrainSchedule:
    # Rendered as CI previews a pull request, without the registry's credentials: the
    # service's alias is kept for start-up rather than checked against this registry.
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                     "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        recording = record_program(ROOT, stack, preview=True)
    schedules = [c for c in recording.components if isinstance(c, RetrainSchedule)]
    assert [s.plan.name for s in schedules] == ["cancer-nightly"], stack
    return schedules[0]


def _registry_of(schedule: RetrainSchedule) -> ModelRegistry:
    registry = schedule.args.registry
    assert isinstance(registry, ModelRegistry)
    return registry


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_reference_stack_retrain_config_runs_and_registers_a_version(
        stack: str, registry: Registry, tmp_path: Path) -> None:
    schedule = _stack_retrain(stack)
    plan = schedule.plan
    # The file the ConfigMap (Kubernetes) or the init container (Docker) mounts is the config
    # the job reads.
    rendered = json.loads(str(plan.job.files[0].content))
    assert RetrainConfig.model_validate(rendered) == plan.config
    tracking = urlsplit(str(plan.job.env["MLFLOW_TRACKING_URI"]))
    client = MlflowClient()
    before = {v.version for v in client.search_model_versions(
        f"name = '{plan.config.model_name}'")}
    # The key the platform gives the run: a CronJob names its Job after the scheduled time.
    key = f"{plan.object_name}-{stack}-29390580"
    # As the schedule's own registry user, reconciled as its grant rendered it.
    hosts = {tracking.netloc: urlsplit(registry.url).netloc}
    users = registry.reconcile(_registry_of(schedule).grants.values(), tmp_path, hosts)
    done = run_job(plan.job, registry.client_secrets(plan.job, users), tmp_path,
                   hosts=hosts, timeout=300, env={"MLOPS_SCHEDULE_SLOT": key})
    assert done.returncode in (EXIT_PROMOTED, EXIT_NOT_PROMOTED), done.stdout + done.stderr
    after = client.search_model_versions(f"name = '{plan.config.model_name}'")
    new = [v for v in after if v.version not in before]
    assert len(new) == 1, done.stdout
    assert new[0].tags[SLOT_TAG] == key
    assert json.loads(new[0].tags["mlops.params"]) == plan.config.params
    model = mlflow.sklearn.load_model(f"models:/{plan.config.model_name}/{new[0].version}")
    rows = _holdout(plan.config)
    assert len(model.predict(rows)) == len(rows)
