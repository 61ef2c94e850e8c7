"""`mlops serve` as a real process: registry aliases, MLflow's client, SIGTERM under load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from pulumi_mlops.runtime.drift.profile import build_profile
from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.e2e.serving import MLOPS, Server, start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry run from ModelRegistry's rendered command, with model `cancer` v1 under
    alias `champion`, logged through the registry's artifact proxy with a drift profile."""
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        x, y = load_breast_cancer(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=5000).fit(x, y)
        mlflow.set_experiment("serve-e2e")
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", input_example=x.head(3),
                                     registered_model_name="cancer")
            # The training-data profile the server computes drift against (as RetrainSchedule
            # logs it).
            mlflow.log_dict(build_profile(x), PROFILE_ARTIFACT_PATH)
        MlflowClient().set_registered_model_alias("cancer", "champion", "1")
        yield registry


def start(store: Registry, tmp: Path, *extra: str, uri: str = "models:/cancer@champion",
          ) -> Server:
    return start_serve(uri, tmp, *extra, env=store.env())


@pytest.fixture(scope="module")
def server(store: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(store, tmp_path_factory.mktemp("serve"), "--workers", "2")
    yield running
    running.process.terminate()
    running.process.wait(timeout=30)


def test_alias_is_resolved_and_reported(server: Server) -> None:
    # What is served is in the Open Inference Protocol model metadata (``/version`` answers
    # the MLflow version, as MLflow's server does).
    metadata = requests.get(server.url + "/v2/models/cancer", timeout=5).json()
    assert metadata["versions"] == ["1"]
    served = metadata["parameters"]
    assert (served["model_name"], served["model_version"], served["model_alias"]) == (
        "cancer", "1", "champion")
    assert served["fast_path"] is True


def test_mlflow_scoring_client_gets_what_pyfunc_predicts(server: Server, store: Registry) -> None:
    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    batch = x.sample(50, random_state=1)
    port = int(server.url.rsplit(":", 1)[1])
    client = ScoringServerClient("127.0.0.1", port)
    predictions = client.invoke(batch).get_predictions()
    expected = mlflow.pyfunc.load_model("models:/cancer/1").predict(batch)
    np.testing.assert_array_equal(np.asarray(predictions).ravel(), expected)


def test_every_workers_requests_reach_a_scrape_within_the_flush_period(server: Server) -> None:
    # Workers count requests in batches; a scrape answered by one worker sums them all, the
    # other worker's within metrics.FLUSH_SECONDS (0.5 s).
    def answered() -> float:
        page = requests.get(server.url + "/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                   if line.startswith('mlops_requests_total{code="200"}'))

    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    body = '{"dataframe_split": ' + x.head(2).to_json(orient="split", index=False) + "}"
    before = answered()
    sent = 40
    for _ in range(sent):  # a new connection each: the kernel spreads them over the workers
        assert requests.post(server.url + "/invocations", data=body, timeout=10,
                             headers={"Content-Type": "application/json"}).status_code == 200
    # One scrape only: a scrape makes the worker answering it count its own at once.
    time.sleep(1.5)
    assert answered() == before + sent


def test_the_deployed_path_loads_without_importing_mlflow(store: Registry) -> None:
    # models:/ over HTTP with proxied artifacts and a plain scikit-learn model: the REST client
    # and a direct deserialization, which is what keeps the cold start short.
    probe = (
        "import json, sys\n"
        "from pulumi_mlops.runtime.serve.loading import load_served_model\n"
        "m = load_served_model('models:/cancer@champion')\n"
        "print(json.dumps({'version': m.info.version, 'run_id': m.info.run_id,\n"
        "  'fast': m.fast_predict is not None, 'drift': m.drift is not None,\n"
        "  'mlflow': sorted(k for k in sys.modules if k.split('.')[0] == 'mlflow')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **store.env()},
                            capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected_run = MlflowClient().get_model_version("cancer", "1").run_id
    assert loaded == {"version": "1", "run_id": expected_run, "fast": True, "drift": True,
                      "mlflow": []}


def test_wrong_credentials_fail_at_once_without_retrying(store: Registry) -> None:
    env = {**os.environ, **store.env(), "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    result = subprocess.run([MLOPS, "serve", "--model-uri", "models:/cancer@champion"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "UNAUTHENTICATED" in result.stderr and "attempt 1/6" in result.stderr
    assert "not-the-password" not in result.stderr


def test_runs_uri_loads_the_logged_model(store: Registry) -> None:
    from pulumi_mlops.runtime.serve.loading import load_served_model

    run_id = MlflowClient().get_model_version("cancer", "1").run_id
    served = load_served_model(f"runs:/{run_id}/model")
    assert served.info.run_id == run_id and served.info.name is None
    assert served.fast_predict is not None
    assert served.drift is not None  # the profile logged on the same run


def test_drift_gauges_follow_the_inputs(store: Registry, tmp_path: Path) -> None:
    srv = start(store, tmp_path, "--drift-window", "200")
    try:
        x, _ = load_breast_cancer(return_X_y=True, as_frame=True)

        def send(frame: object) -> None:
            body = '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}"  # type: ignore[attr-defined]
            r = requests.post(srv.url + "/invocations", data=body, timeout=10,
                              headers={"Content-Type": "application/json"})
            assert r.status_code == 200

        def psi() -> dict[str, float]:
            page = requests.get(srv.url + "/metrics", timeout=5).text
            return {line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                    for line in page.splitlines()
                    if line.startswith("mlops_feature_drift{") and 'statistic="psi"' in line}

        def observed() -> dict[tuple[str, str], float]:
            page = requests.get(srv.url + "/metrics", timeout=5).text
            found = {}
            for line in page.splitlines():
                if line.startswith("mlops_drift_observations_total{"):
                    labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:
                                                                 line.index("}")].split(","))
                    found[labels["feature"].strip('"'), labels["bin"].strip('"')] = float(
                        line.rsplit(" ", 1)[1])
            return found

        send(x.sample(200, random_state=3))
        calm = psi()
        assert set(calm) == set(x.columns)
        send(x.sample(200, random_state=4) * 3)  # every feature tripled: far out of profile
        shifted = psi()
        assert max(calm.values()) < 0.5
        assert min(shifted.values()) > 1.0
        # The per-bin counters count all 400 rows (the 200-row window only the last 200), one
        # series per bin of the profile.
        counts = observed()
        for feature in x.columns:
            assert sum(v for (f, _), v in counts.items() if f == feature) == 400
        page = requests.get(srv.url + "/metrics", timeout=5).text
        assert page.count("mlops_drift_reference_ratio{") == len(counts)
    finally:
        srv.process.terminate()
        srv.process.wait(timeout=30)


def test_sigterm_under_load_fails_no_in_flight_request(store: Registry, tmp_path: Path) -> None:
    srv = start(store, tmp_path, "--workers", "2", "--drain-seconds", "1.5")
    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    payload = '{"dataframe_split": ' + x.head(10).to_json(orient="split", index=False) + "}"
    # (started, outcome): outcome is the HTTP status or the connection error.
    outcomes: list[tuple[float, int | str]] = []
    stop = time.monotonic() + 20

    def load() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                r = session.post(srv.url + "/invocations", data=payload, timeout=10,
                                 headers={"Content-Type": "application/json"})
            except requests.ConnectionError as err:
                outcomes.append((started, repr(err)))
                return  # the server has stopped listening
            outcomes.append((started, r.status_code))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    sigterm_at = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    health_codes: list[int] = []
    for _ in range(5):
        try:
            health_codes.append(requests.get(srv.url + "/health", timeout=1).status_code)
        except requests.ConnectionError:
            break
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=30)
    assert srv.process.wait(timeout=60) == 0
    in_flight = [o for started, o in outcomes if started < sigterm_at]
    after = [o for started, o in outcomes if started >= sigterm_at]
    assert len(in_flight) > 50
    # Every request already sent when SIGTERM arrived was answered, and answered 200.
    assert [o for o in in_flight if o != 200] == []
    # While draining, health reports 503 and requests are still served.
    assert 503 in health_codes
    assert after.count(200) > 0


def test_unreachable_registry_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [MLOPS, "serve", "--model-uri", "models:/cancer/1", "--load-attempts", "2"],
        env={**os.environ, "MLFLOW_TRACKING_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "cannot load 'models:/cancer/1' (attempt 2/2)" in result.stderr
    assert "retrying in" in result.stderr
    assert time.monotonic() - started < 100
