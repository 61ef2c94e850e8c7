"""A real MLflow server started from the command ModelRegistry renders, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from tests.e2e.registry import BACKENDS, Registry, registry_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"



@pytest.fixture(scope="module", params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One server per backend, shared by the module's tests (each uses its own model names)."""
    with registry_client(tmp_path_factory.mktemp(request.param), request.param) as running:
        yield running


def test_unauthenticated_api_call_is_rejected(registry: Registry) -> None:
    response = requests.get(registry.url + SEARCH, timeout=10)
    assert response.status_code == 401


def test_health_needs_no_credentials(registry: Registry) -> None:
    response = requests.get(registry.url + "/health", timeout=10)
    assert response.status_code == 200


def test_foreign_host_header_is_refused(registry: Registry) -> None:
    response = requests.get(
        registry.url + SEARCH, headers={"Host": "evil.example.com"},
        auth=("admin", registry.password), timeout=10,
    )
    assert response.status_code == 403


def test_wrong_password_is_rejected(registry: Registry) -> None:
    response = requests.get(registry.url + SEARCH, auth=("admin", "password1234"), timeout=10)
    assert response.status_code == 401


def test_register_and_load_model_through_artifact_proxy(registry: Registry) -> None:
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=5000).fit(x, y)
    mlflow.set_experiment("e2e")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=x.head(3), registered_model_name="cancer"
        )
    assert str(info.registered_model_version) == "1"
    client = MlflowClient()
    version = client.get_model_version("cancer", "1")
    run = client.get_run(version.run_id)
    # Artifacts went through the server's proxy, not to a client-side path.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    loaded = mlflow.pyfunc.load_model("models:/cancer/1")
    np.testing.assert_array_equal(loaded.predict(x.head(20)), model.predict(x.head(20)))
    # The artifacts landed in the volume the plan mounts (remapped to the test's directory).
    assert any(registry.running.log_path.parent.joinpath("artifacts").rglob("MLmodel"))


def test_model_version_source_outside_the_registry_is_refused(registry: Registry) -> None:
    client = MlflowClient()
    client.create_registered_model("foreign")
    with pytest.raises(MlflowException, match="Invalid model version source"):
        client.create_model_version("foreign", source="file:///etc/passwd")
