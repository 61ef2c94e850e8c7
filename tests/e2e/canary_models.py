"""Models and serving for the canary-check end-to-end test: a degraded model that really fails
(the server answers 500 for it), and `mlops serve` started from the command ModelService renders
for a pinned version.

Kept apart from the test module so that cloudpickle can ship `Flaky` by value to the server
process, which cannot import ``tests``.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cloudpickle
import mlflow
import mlflow.pyfunc
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import pulumi_mlops as mlops
from pulumi_mlops.components.registry import ModelRegistry
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.local import RunningWorkload, run_job, run_workload
from pulumi_mlops.plans.registry_access import grant_secret_data, plan_grant
from pulumi_mlops.plans.registry_ref import RegistryClient, client_user
from pulumi_mlops.render import record
from tests.e2e.registry import Registry
from tests.recording import RUNTIME_IMAGE

MODEL = "cancer"
POISON_COLUMN = "mean radius"
POISON = 40.0
"""Rows whose `POISON_COLUMN` is above this make `Flaky` raise (the data's largest is 28.1)."""


class Flaky(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """The breast-cancer classifier, but failing on every batch with a row past `POISON`: the
    degraded canary (a bug in a new version, as the server sees one)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> Any:
        if (model_input[POISON_COLUMN] > POISON).any():
            raise RuntimeError("the degraded canary fails on purpose")
        return self.model.predict(model_input)


def _fitted(c: float) -> Any:
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x, y)


def register(c: float, *, flaky: bool = False) -> str:
    """Register a new version of `MODEL`: the classifier fitted with ``C=c`` (skops, loaded
    without pickle), or `Flaky` around it (a pyfunc: served only with ``allow_pickle``)."""
    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    model = _fitted(c)
    with mlflow.start_run():
        if flaky:
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            info = mlflow.pyfunc.log_model(
                name="model", python_model=Flaky(model), input_example=x.head(3),
                registered_model_name=MODEL, pip_requirements=["mlflow", "scikit-learn"])
        else:
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=x.head(3), registered_model_name=MODEL,
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                    include_skops=True))
    return str(info.registered_model_version)


def poisoned(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the first one past `POISON` (`Flaky` fails on it, the others do not)."""
    rows = rows.copy()
    rows.iloc[0, rows.columns.get_loc(POISON_COLUMN)] = POISON + 10
    return rows


def grant_service_user(store: Registry, root: Path) -> str:
    """Run the reconcile `ModelService` declares for its registry user (READ on `MODEL`) as
    rendered; that user's password."""
    password = secrets.token_urlsafe(24)
    client = RegistryClient(client_user(MODEL, "service"), read=(MODEL,))
    run = run_job(plan_grant(store.plan, client).workload,
                  grant_secret_data(store.password, password), root, hosts=store.hosts,
                  timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return password


@contextlib.contextmanager
def serving_version(store: Registry, password: str, version: str, root: Path, *, port: int,
                    metrics_port: int, allow_pickle: bool = False
                    ) -> Iterator[RunningWorkload]:
    """Declare a registry and `MODEL` pinned to ``version`` on Docker under mocks, and run the
    serving workload its plan renders (the registry's in-network name mapped to ``store``),
    with ``password`` for its registry user (`grant_service_user`)."""
    registry_port = urlsplit(store.url).port

    def program() -> None:
        target = mlops.DockerTarget()
        registry = mlops.ModelRegistry("reg", target=target, port=registry_port)
        mlops.ModelService(MODEL, registry=registry, target=target, image=RUNTIME_IMAGE,
                           model_uri=f"models:/{MODEL}/{version}", port=port,
                           metrics_port=metrics_port, allow_pickle=allow_pickle)

    recording = record(program, preview=True)
    (service,) = [c for c in recording.components if isinstance(c, ModelService)]
    (registry,) = [c for c in recording.components if isinstance(c, ModelRegistry)]
    hosts = {urlsplit(registry.plan.tracking_uri).netloc: urlsplit(store.url).netloc}
    workload = service.plan.tracks[0].workload
    assert workload.env["MLFLOW_TRACKING_USERNAME"] == client_user(MODEL, "service")
    with run_workload(workload, {"tracking-password": password},
                      root, hosts=hosts, timeout=120) as running:
        yield running
