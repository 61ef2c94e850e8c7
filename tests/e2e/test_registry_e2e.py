"""A real MLflow server started from the command ModelRegistry renders, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from pulumi_mlops.contracts.metrics import (
    REGISTRY_REQUEST_DURATION,
    REGISTRY_REQUESTS,
    REGISTRY_STATUS_LABEL,
)
from tests.e2e.registry import BACKENDS, Registry, registry_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CAP = 4 * 2**20
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture(scope="module", params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One server per backend, shared by the module's tests (each uses its own model names),
    accepting request bodies up to `CAP` bytes."""
    with registry_client(tmp_path_factory.mktemp(request.param), request.param,
                         max_upload_bytes=CAP) as running:
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


def _chunks(size: int) -> Iterator[bytes]:
    """A body of ``size`` bytes sent chunked: no Content-Length tells the server its size."""
    for start in range(0, size, 2**16):
        yield b"x" * min(2**16, size - start)


def _stored(registry: Registry, directory: str) -> dict[str, int]:
    listed = requests.get(f"{registry.url}{ARTIFACTS}?path={directory}",
                          auth=("admin", registry.password), timeout=30)
    assert listed.status_code == 200, listed.text
    return {f["path"]: int(f["file_size"]) for f in listed.json().get("files", [])}


def test_an_upload_over_the_cap_is_refused_and_nothing_of_it_is_kept(registry: Registry) -> None:
    assert registry.plan.server.env["MLOPS_MAX_REQUEST_BYTES"] == str(CAP)  # as rendered
    auth = ("admin", registry.password)
    put = f"{registry.url}{ARTIFACTS}/capped"
    assert requests.put(f"{put}/at-cap.bin", data=b"x" * CAP, auth=auth,
                        timeout=60).status_code == 200
    assert requests.put(f"{put}/small-chunked.bin", data=_chunks(1000), auth=auth,
                        timeout=60).status_code == 200
    over = requests.put(f"{put}/over.bin", data=b"x" * (CAP + 1), auth=auth, timeout=60)
    assert over.status_code == 413 and over.json()["error_code"] == "RESOURCE_EXHAUSTED"
    # Chunked: the server learns the size only as it reads, and drops what it staged.
    chunked = requests.put(f"{put}/over-chunked.bin", data=_chunks(3 * CAP), auth=auth,
                           timeout=60)
    assert chunked.status_code == 413
    # Before authentication: a client without credentials cannot make it read a large body.
    anonymous = requests.put(f"{put}/anonymous.bin", data=b"x" * (CAP + 1), timeout=60)
    assert anonymous.status_code == 413
    assert _stored(registry, "capped") == {"at-cap.bin": CAP, "small-chunked.bin": 1000}
    # The server still answers on the same connections' successors.
    assert requests.get(registry.url + "/health", timeout=10).status_code == 200


def _families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(registry: Registry) -> dict[str, Metric]:
    """The registry's metrics as Prometheus scrapes them, from the exporter beside the server
    (no credentials): family name → family."""
    response = requests.get(registry.metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return _families(response.text)


def requests_by_status(families: dict[str, Metric]) -> dict[str, float]:
    """`REGISTRY_REQUESTS` summed by `REGISTRY_STATUS_LABEL` (none before a first request:
    the multiprocess collector exports only series some worker has written)."""
    totals: dict[str, float] = {}
    counter = families.get(REGISTRY_REQUESTS)
    for sample in counter.samples if counter is not None else ():
        assert sample.name == REGISTRY_REQUESTS + "_total"
        assert set(sample.labels) == {"method", REGISTRY_STATUS_LABEL}
        status = sample.labels[REGISTRY_STATUS_LABEL]
        totals[status] = totals.get(status, 0.0) + sample.value
    return totals


def test_metrics_count_api_requests_by_status_across_workers(registry: Registry) -> None:
    before = requests_by_status(scrape(registry))
    for _ in range(6):  # more than the plan's two workers, so that both likely answer some
        ok = requests.get(registry.url + SEARCH, auth=("admin", registry.password), timeout=10)
        assert ok.status_code == 200
    assert requests.get(registry.url + SEARCH, timeout=10).status_code == 401
    assert requests.get(registry.url + "/health", timeout=10).status_code == 200

    families = scrape(registry)
    after = requests_by_status(families)

    assert families[REGISTRY_REQUESTS].type == "counter"
    assert families[REGISTRY_REQUEST_DURATION].type == "histogram"
    # /metrics sums every worker's files in the directory the plan mounts; /health and the
    # scrapes themselves are not counted.
    assert after.get("200", 0.0) - before.get("200", 0.0) == 6
    assert after.get("401", 0.0) - before.get("401", 0.0) == 1
    assert any(registry.running.log_path.parent.joinpath("metrics").glob("counter_*.db"))


def test_the_exporter_serves_exactly_what_mlflows_own_metrics_serve(registry: Registry) -> None:
    for _ in range(3):
        requests.get(registry.url + SEARCH, auth=("admin", registry.password), timeout=10)
    requests.get(registry.url + "/api/2.0/mlflow/registered-models/get?name=none",
                 auth=("admin", registry.password), timeout=10)
    # MLflow's own /metrics (admins only), then the exporter's: nothing counted in between.
    own = requests.get(registry.url + "/metrics", auth=("admin", registry.password), timeout=10)
    assert own.status_code == 200
    exported = scrape(registry)

    def samples(families: dict[str, Metric]) -> set[tuple[str, tuple[tuple[str, str], ...],
                                                        float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for f in families.values() for s in f.samples}

    assert samples(exported) == samples(_families(own.text))
    statuses = requests_by_status(exported)
    assert statuses.get("200", 0) >= 3 and statuses.get("404", 0) >= 1


def test_the_exporter_answers_metrics_only_and_reads_no_secret(registry: Registry) -> None:
    # Whatever the path, the exporter answers its exposition: nothing of the API behind it.
    response = requests.get(registry.metrics_url + SEARCH, timeout=10)
    assert response.status_code == 200
    assert "experiments" not in response.text
    assert REGISTRY_REQUESTS in response.text
    exporter = registry.running.sidecars["metrics"]
    assert registry.password not in exporter.log()
    environ = Path(f"/proc/{exporter.process.pid}/environ").read_bytes()
    assert b"MLFLOW_TRACKING_PASSWORD" not in environ
    assert b"MLFLOW_AUTH_ADMIN_PASSWORD" not in environ
    assert registry.password.encode() not in environ


def test_metrics_need_admin_credentials_as_the_api_does(registry: Registry) -> None:
    # Why the exporter exists: MLflow's basic-auth app lets only /health, /static,
    # /favicon.ico and server-info through.
    assert requests.get(registry.url + "/metrics", timeout=10).status_code == 401
    wrong = requests.get(registry.url + "/metrics", auth=("admin", "x" * 20), timeout=10)
    assert wrong.status_code == 401
    created = requests.post(registry.url + "/api/2.0/mlflow/users/create",
                            json={"username": "scraper", "password": "s" * 20},
                            auth=("admin", registry.password), timeout=10)
    assert created.status_code == 200
    # A user who is not an admin is refused too: no permission governs /metrics, and the
    # basic-auth app refuses what none governs (MLFLOW_BASIC_AUTH_FAIL_CLOSED, on by default).
    not_admin = requests.get(registry.url + "/metrics", auth=("scraper", "s" * 20), timeout=10)
    assert not_admin.status_code == 403


def test_the_documented_external_postgresql_uri_runs_on_the_images_driver(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # `postgresql://` names no driver: the server gets `postgresql+psycopg2://`, which MLflow's
    # image carries, whatever SQLAlchemy's default for the dialect.
    with registry_client(tmp_path_factory.mktemp("external"), "postgres-external") as external:
        client = MlflowClient()
        client.create_registered_model("external-db")
        assert client.get_registered_model("external-db").name == "external-db"
        environ = Path(f"/proc/{external.running.process.pid}/environ").read_bytes()
        assert b"MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://mlflow:" in environ
