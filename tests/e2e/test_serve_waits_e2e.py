"""`mlops serve` for an alias that does not exist yet, against a real registry: it stays up,
unready, and serves the model as soon as the alias is set."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.e2e.serving import Server, start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLL_SECONDS = 1.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry run from ModelRegistry's rendered command, empty."""
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


def start_waiting(store: Registry, tmp: Path, uri: str, *extra: str) -> Server:
    # Alive (/ping 200) is all there is to wait for: the model does not exist yet.
    return start_serve(uri, tmp, "--alias-poll-seconds", str(POLL_SECONDS), *extra,
                       env=store.env(), ready_path="/ping", timeout=60)


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)


def assert_waiting(server: Server, uri: str) -> None:
    health = requests.get(server.url + "/health", timeout=5)
    assert health.status_code == 503
    assert f"waiting for {uri}: the alias does not exist yet" in health.text
    assert requests.get(server.url + "/ping", timeout=5).status_code == 200
    assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
    for path in ("/invocations", "/v2/models/waits/infer"):
        scored = requests.post(server.url + path, data=b'{"inputs": []}', timeout=5,
                               headers={"Content-Type": "application/json"})
        assert scored.status_code == 503
        assert scored.headers["Retry-After"] == "1"
        assert scored.json()["error_code"] == "SERVICE_UNAVAILABLE"
        assert uri in scored.json()["message"]


def test_a_missing_alias_is_waited_for_then_served(store: Registry, tmp_path: Path) -> None:
    uri = "models:/waits@champion"
    metrics_port = free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    server = start_waiting(store, tmp_path, uri, "--workers", "2",
                           "--metrics-port", str(metrics_port))
    try:
        # No registered model of that name yet.
        assert_waiting(server, uri)
        # Its metrics, on their own port only, say it waits for its model.
        assert "mlops_model_loaded 0.0" in requests.get(metrics, timeout=5).text
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        x, y = load_breast_cancer(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=5000).fit(x, y)
        mlflow.set_experiment("serve-waits-e2e")
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", input_example=x.head(3),
                                     registered_model_name="waits")
        # The model exists now, its alias not yet (MLflow answers that differently).
        time.sleep(3 * POLL_SECONDS)
        assert_waiting(server, uri)
        MlflowClient().set_registered_model_alias("waits", "champion", "1")
        deadline = time.monotonic() + POLL_SECONDS + 60
        while requests.get(server.url + "/health", timeout=5).status_code != 200:
            assert server.process.poll() is None, server.log.read_text()
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        batch = x.sample(50, random_state=1)
        body = '{"dataframe_split": ' + batch.to_json(orient="split", index=False) + "}"
        scored = requests.post(server.url + "/invocations", data=body, timeout=10,
                               headers={"Content-Type": "application/json"})
        assert scored.status_code == 200
        expected = mlflow.pyfunc.load_model("models:/waits/1").predict(batch)
        np.testing.assert_array_equal(np.asarray(scored.json()["predictions"]), expected)
        metadata = requests.get(server.url + "/v2/models/waits", timeout=5).json()
        assert metadata["parameters"]["model_alias"] == "champion"
        # The workers took the stand-in's metrics socket over too.
        assert "mlops_model_loaded 1.0" in requests.get(metrics, timeout=5).text
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        assert requests.post(metrics.replace("/metrics", "/invocations"), data=body,
                             timeout=5).status_code == 404
    finally:
        code = stop(server)
    assert code == 0
    log = server.log.read_text()
    # Said once (it repeats only every minute), naming the alias.
    assert log.count(f"waiting for {uri}: the alias does not exist yet; polling") == 1


def test_sigterm_while_waiting_exits_0(store: Registry, tmp_path: Path) -> None:
    server = start_waiting(store, tmp_path, "models:/never@champion")
    assert requests.get(server.url + "/health", timeout=5).status_code == 503
    started = time.monotonic()
    assert stop(server) == 0
    assert time.monotonic() - started < 5
