"""Live model quality end to end: the serving workload ModelService renders, run for real,
scores breast_cancer (a classifier) and diabetes (a regressor) rows, gets their true labels on
``/feedback`` by the answers' request ids, and its ``/metrics`` give sklearn's accuracy and
mean absolute error on those rows; with two workers, the counters are summed and the feedback
answered by the other worker is unmatched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import pulumi_mlops as mlops
from pulumi_mlops.contracts.model_uri import ModelRef
from pulumi_mlops.local import RunningWorkload, run_workload
from pulumi_mlops.plans.service import ModelServiceArgs, plan_service
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.recording import RUNTIME_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALIAS = "champion"
BATCH = 4  # 30 answers of the 120 test rows: enough ids for the unmatched share


def _data(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    load = load_breast_cancer if name == "cancer" else load_diabetes
    x, y = load(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=120, random_state=0)
    return x_train, x_test, y_train, y_test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with `cancer` (LogisticRegression) and `diabetes` (LinearRegression), each
    version 1 under alias `champion`."""
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        mlflow.set_experiment("feedback-e2e")
        for name, model in (("cancer", make_pipeline(StandardScaler(), LogisticRegression())),
                            ("diabetes", LinearRegression())):
            x_train, _, y_train, _ = _data(name)
            model.fit(x_train, y_train)
            with mlflow.start_run():
                mlflow.sklearn.log_model(
                    model, name="model", input_example=x_train.head(3),
                    registered_model_name=name,
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                        include_skops=True))
            MlflowClient().set_registered_model_alias(name, ALIAS, "1")
        yield registry


@contextlib.contextmanager
def serving(store: Registry, name: str, workers: int, root: Path) -> Iterator[RunningWorkload]:
    """Run the serving workload ModelService renders for ``models:/<name>@champion``."""
    args = ModelServiceArgs(
        registry=mlops.RegistryEndpoint(tracking_uri=store.url, username=store.username,
                                        password=store.password),
        target=mlops.DockerTarget(), model_uri=f"models:/{name}@{ALIAS}", port=free_port(),
        metrics_port=free_port(),
        image=RUNTIME_IMAGE, workers=workers)
    access = args.registry.access()
    plan = plan_service(name, args, {"stable": ModelRef(args.stable_uri(), name, "1", ALIAS)},
                        tracking_uri=access.tracking_uri, username=access.username,
                        has_password=access.has_password)
    workload = plan.tracks[0].workload
    assert workload.command[:2] == ("mlops", "serve") and "--workers" in workload.command
    with run_workload(workload, {"tracking-password": store.password}, root,
                      timeout=120) as running:
        yield running


def feedback_counters(url: str) -> dict[str, float]:
    page = requests.get(url + "/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "mlops_feedback_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name.startswith("mlops_feedback_") and sample.name.endswith("_total"):
                found[sample.name] = sample.value
            elif sample.name == "mlops_model_loaded":
                found["loaded"] = sample.value
    return found


Rows = np.ndarray[Any, Any]


def score_and_feed_back(url: str, x: pd.DataFrame, y: pd.Series) -> tuple[Rows, Rows, Rows]:
    """Score ``x`` in batches (a new connection each), then send each batch's true labels to
    /feedback by its request id (a new connection each); the predictions, the labels and
    whether each row was matched (by the server's answer)."""
    answers = []
    for start in range(0, len(x), BATCH):
        rows = x.iloc[start:start + BATCH]
        body = '{"dataframe_split": ' + rows.to_json(orient="split", index=False) + "}"
        answer = requests.post(url + "/invocations", data=body, timeout=30,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        rid = answer.headers["X-Request-Id"]
        assert list(answer.json()) == ["predictions"]  # MLflow's body, unchanged
        answers.append((rid, np.asarray(answer.json()["predictions"]).ravel(),
                        y.iloc[start:start + BATCH].tolist()))
    matched = []
    for rid, _, labels in answers:
        answer = requests.post(url + "/feedback", json={"request_id": rid, "labels": labels},
                               timeout=30)
        assert answer.status_code == 200, answer.text
        summary = answer.json()
        assert summary["matched"] + summary["unmatched"] == len(labels)
        assert summary["matched"] in (0, len(labels))  # an id is matched whole or not at all
        matched.append(np.full(len(labels), summary["matched"] > 0))
    return (np.concatenate([a[1] for a in answers]),
            np.concatenate([np.asarray(a[2]) for a in answers]), np.concatenate(matched))


@pytest.mark.parametrize("workers", [1, 2])
def test_live_accuracy_equals_sklearns_on_the_labelled_rows(store: Registry, tmp_path: Path,
                                                            workers: int) -> None:
    _, x_test, _, y_test = _data("cancer")
    with serving(store, "cancer", workers, tmp_path) as server:
        before = feedback_counters(server.metrics_url)
        assert before == {"matched": 0.0, "unmatched": 0.0, "mlops_feedback_correct_total": 0.0,
                          "mlops_feedback_absolute_error_total": 0.0,
                          "mlops_feedback_squared_error_total": 0.0, "loaded": 1.0}
        predicted, labels, matched = score_and_feed_back(server.url, x_test, y_test)
        after = feedback_counters(server.metrics_url)
    assert after["matched"] == matched.sum()
    assert after["unmatched"] == (~matched).sum()
    accuracy = after["mlops_feedback_correct_total"] / after["matched"]
    assert accuracy == pytest.approx(accuracy_score(labels[matched], predicted[matched]),
                                     abs=1e-12)
    assert after["mlops_feedback_absolute_error_total"] == 0.0
    if workers == 1:
        assert after["unmatched"] == 0 and after["matched"] == len(x_test)
    else:
        # The feedback answered by the worker that did not score the rows is unmatched:
        # about half of it, as the kernel spreads connections over the two workers.
        assert 0.15 < after["unmatched"] / len(x_test) < 0.85, after


@pytest.mark.parametrize("workers", [1, 2])
def test_live_mean_absolute_error_equals_sklearns(store: Registry, tmp_path: Path,
                                                  workers: int) -> None:
    _, x_test, _, y_test = _data("diabetes")
    with serving(store, "diabetes", workers, tmp_path) as server:
        predicted, labels, matched = score_and_feed_back(server.url, x_test, y_test)
        after = feedback_counters(server.metrics_url)
    assert after["matched"] == matched.sum() and after["unmatched"] == (~matched).sum()
    assert after["mlops_feedback_correct_total"] == 0.0
    mae = after["mlops_feedback_absolute_error_total"] / after["matched"]
    assert mae == pytest.approx(mean_absolute_error(labels[matched], predicted[matched]),
                                rel=1e-9)
    mse = after["mlops_feedback_squared_error_total"] / after["matched"]
    assert mse == pytest.approx(float(np.mean((labels[matched] - predicted[matched]) ** 2)),
                                rel=1e-9)
    if workers == 1:
        assert after["matched"] == len(x_test)
    else:
        assert 0.15 < after["unmatched"] / len(x_test) < 0.85, after
