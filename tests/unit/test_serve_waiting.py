"""Waiting for an alias that does not exist yet: what counts as missing, what the stand-in
answers, and that other load failures still exit as before."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from pulumi_mlops.runtime.mlflow_rest import RestRegistry
from pulumi_mlops.runtime.serve.server import EXIT_LOAD_FAILED, _listen
from pulumi_mlops.runtime.serve.waiting import WaitingServer, alias_missing
from tests.e2e.ports import free_port
from tests.e2e.serving import MLOPS
from tests.loopback import reply

# path -> (status, JSON body)
Routes = dict[str, tuple[int, dict[str, Any]]]

_NO_MODEL = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                   "message": "Registered Model with name=x not found"})
_NO_ALIAS = (400, {"error_code": "INVALID_PARAMETER_VALUE",
                   "message": "Registered model alias champion not found."})
_DENIED = (401, {"error_code": "UNAUTHENTICATED", "message": "bad credentials"})


@contextlib.contextmanager
def fake_registry(routes: Routes) -> Iterator[str]:
    """An HTTP server answering MLflow REST paths (query ignored) from ``routes``; 404
    otherwise. Yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path.split("?", 1)[0],
                                      (404, {"error_code": "ENDPOINT_NOT_FOUND"}))
            reply(self, status, body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ALIAS = "/api/2.0/mlflow/registered-models/alias"
MODEL = "/api/2.0/mlflow/registered-models/get"
VERSION = "/api/2.0/mlflow/model-versions/get"


@pytest.mark.parametrize(("routes", "missing"), [
    ({ALIAS: _NO_MODEL}, True),
    ({ALIAS: _NO_ALIAS, MODEL: (200, {"registered_model": {"name": "x"}})}, True),
    ({ALIAS: _NO_ALIAS, MODEL: (200, {"registered_model": {
        "name": "x", "aliases": [{"alias": "other", "version": "1"}]}})}, True),
    # A 400 for another reason: the alias is listed, so it is not what is missing.
    ({ALIAS: _NO_ALIAS, MODEL: (200, {"registered_model": {
        "name": "x", "aliases": [{"alias": "champion", "version": "1"}]}})}, False),
    ({ALIAS: _DENIED}, False),
    ({ALIAS: (200, {"model_version": {"name": "x", "version": "1"}})}, False),
    ({ALIAS: (500, {"error_code": "INTERNAL_ERROR"})}, False),
], ids=["no-model", "no-aliases", "other-alias", "alias-listed", "denied", "exists",
        "server-error"])
def test_only_a_missing_model_or_alias_counts_as_missing(routes: Routes, missing: bool) -> None:
    with fake_registry(routes) as url:
        rest = RestRegistry.from_env({"MLFLOW_TRACKING_URI": url})
        assert rest is not None
        assert alias_missing(rest, "x", "champion") is missing


def test_an_unreachable_registry_is_not_missing_it_is_for_the_fetch() -> None:
    rest = RestRegistry.from_env({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert rest is not None
    assert alias_missing(rest, "x", "champion") is False


def test_the_stand_in_is_alive_unready_and_refuses_scoring_with_retry_after() -> None:
    server = WaitingServer(_listen("127.0.0.1", 0), "waiting for models:/x@champion: the "
                           "alias does not exist yet", retry_after=10)
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert requests.get(url + "/ping", timeout=5).status_code == 200
        assert requests.get(url + "/v2/health/live", timeout=5).status_code == 200
        for path in ("/health", "/v2/health/ready"):
            answer = requests.get(url + path, timeout=5)
            assert answer.status_code == 503
            assert "models:/x@champion" in answer.text
        for path in ("/invocations", "/v2/models/x/infer"):
            answer = requests.post(url + path, data=b"x" * 100_000, timeout=5,
                                   headers={"Content-Type": "application/json"})
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "10"
            assert answer.json() == {
                "error_code": "SERVICE_UNAVAILABLE",
                "message": "waiting for models:/x@champion: the alias does not exist yet"}
        listen = server.hand_over()
        # Handed over, the socket still listens: a connection waits for the next server.
        assert listen.fileno() >= 0 and listen.getsockname()[1] == server.port
        listen.close()
    finally:
        server.server_close()


def test_with_a_metrics_port_the_stand_in_answers_metrics_there_alone() -> None:
    server = WaitingServer(_listen("127.0.0.1", 0), "waiting", retry_after=10,
                           metrics_listen=_listen("127.0.0.1", 0))
    assert server.metrics is not None
    url, metrics = f"http://127.0.0.1:{server.port}", f"http://127.0.0.1:{server.metrics.port}"
    try:
        page = requests.get(metrics + "/metrics", timeout=5)
        assert page.status_code == 200 and "mlops_model_loaded 0.0" in page.text
        for path in ("/ping", "/health", "/v2/health/live"):
            assert requests.get(metrics + path, timeout=5).status_code == 404, path
        assert requests.post(metrics + "/invocations", data=b"{}", timeout=5).status_code == 404
        assert requests.get(url + "/metrics", timeout=5).status_code == 404
        assert requests.get(url + "/ping", timeout=5).status_code == 200
        assert requests.post(url + "/invocations", data=b"{}", timeout=5).status_code == 503
        # Both sockets are handed over, still listening.
        handed = server.hand_over_metrics()
        assert handed is not None and handed.getsockname()[1] == server.metrics.port
        handed.close()
        server.hand_over().close()
    finally:
        server.server_close()
        server.metrics.server_close()


def serve(url: str, uri: str, *extra: str, timeout: float = 60,
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "u",
           "MLFLOW_TRACKING_PASSWORD": "p"}
    return subprocess.run([MLOPS, "serve", "--model-uri", uri, "--port", str(free_port()),
                           *extra], env=env, capture_output=True, text=True, timeout=timeout)


def test_refused_credentials_still_exit_at_once() -> None:
    with fake_registry({ALIAS: _DENIED, VERSION: _DENIED}) as url:
        result = serve(url, "models:/x@champion")
    assert result.returncode == EXIT_LOAD_FAILED
    assert "UNAUTHENTICATED" in result.stderr and "attempt 1/6" in result.stderr
    assert "waiting for" not in result.stderr


def test_a_version_that_does_not_exist_still_exits_at_once() -> None:
    missing = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                     "message": "Model Version (name=x, version=99) not found"})
    with fake_registry({VERSION: missing, ALIAS: _NO_MODEL}) as url:
        result = serve(url, "models:/x/99")
    assert result.returncode == EXIT_LOAD_FAILED
    assert "RESOURCE_DOES_NOT_EXIST" in result.stderr and "attempt 1/6" in result.stderr
    assert "waiting for" not in result.stderr


def test_a_missing_alias_keeps_the_server_up_until_sigterm() -> None:
    with fake_registry({ALIAS: _NO_MODEL}) as url:
        port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        process = subprocess.Popen(
            [MLOPS, "serve", "--model-uri", "models:/x@champion", "--port", str(port),
             "--alias-poll-seconds", "0.5"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None and time.monotonic() < deadline
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                        break
                time.sleep(0.1)
            health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert health.status_code == 503 and "models:/x@champion" in health.text
            time.sleep(1.5)  # a few polls, still waiting
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0
    assert stderr.count("waiting for models:/x@champion: the alias does not exist yet") == 1


def test_the_stand_in_answers_metrics_with_the_model_not_loaded() -> None:
    # So that an alert tells a server waiting for its model from one that is down.
    from prometheus_client.parser import text_string_to_metric_families

    server = WaitingServer(_listen("127.0.0.1", 0), "waiting", retry_after=10)
    try:
        answer = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        assert "mlops_model_loaded 0.0" in answer.text.splitlines()
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        assert families["mlops_model_loaded"].type == "gauge"
        assert [s.value for s in families["mlops_model_loaded"].samples] == [0.0]
        # /feedback is a scoring-side route: 503 like the others.
        feedback = requests.post(f"http://127.0.0.1:{server.port}/feedback", timeout=5,
                                 json={"request_id": "r", "label": 1})
        assert feedback.status_code == 503 and feedback.headers["Retry-After"] == "10"
    finally:
        server.server_close()
