"""`mlops canary-check` against a real Prometheus fed by real servers.

A real MLflow registry holds three versions of `cancer`: two sound classifiers and `Flaky`, which
fails (500) on batches with an out-of-range row. Three `mlops serve` processes, each started from
the command ModelService renders for its pinned version, and a Prometheus started from the
workload MonitoringStack renders (Debian's binary, the generated rules loaded) scraping them
with the target labels MonitoringStack gives them: service `fraud-ok` is stable v1 + canary v2,
service `fraud-bad` is the same stable v1 + canary `Flaky` (one server scraped twice, under
each service's labels). Each canary gets the traffic its stable gets, and delayed labels go to
`fraud-ok`'s tracks.

Checked, running the check as a process: before any traffic, exit 10 (keep waiting); then the
sound canary, exit 0 with every metric judged OK, live accuracy included; the degraded one,
exit 1 with the error ratio named as the reason; an unreachable Prometheus, exit 2. And the
check's error ratio for a 30-minute window is what the ``mlops:track_error:ratio_rate30m``
recording rule records.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from sklearn.datasets import load_breast_cancer

from pulumi_mlops.local import run_workload
from pulumi_mlops.plans.monitoring import (
    DriftAlerts,
    Prometheus,
    Quality,
    Scraped,
    Slo,
    prometheus_workload,
    rule_groups,
)
from tests.e2e.canary_models import (
    MODEL,
    grant_service_user,
    poisoned,
    register,
    serving_version,
)
from tests.e2e.ports import free_port
from tests.e2e.prometheus_api import query as _query
from tests.e2e.prometheus_api import wait as _wait
from tests.e2e.registry import Registry, registry_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

BATCHES = 30
BATCH_ROWS = 5
# Small numbers for a short test; the tolerances are the defaults but for latency, whose p99
# over 30 requests on a shared machine is one request's hiccup.
CHECK = ("--window", "2m", "--min-requests", "20", "--min-labels", "20",
         "--latency-slack-ms", "250", "--timeout", "5")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str]]:
    """The registry with the three versions, and the password of the service's own user."""
    root = tmp_path_factory.mktemp("registry")
    with registry_client(root) as registry:
        mlflow.set_experiment("canary-check-e2e")
        assert register(c=1.0) == "1"
        assert register(c=0.5) == "2"
        assert register(c=1.0, flaky=True) == "3"
        yield registry, grant_service_user(registry, root / "grant")


def canary_check(prometheus: str, service: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulumi_mlops.runtime.canary_check", "--prometheus", prometheus,
         "--service", service, *CHECK, *extra],
        capture_output=True, text=True, timeout=60, check=False)


def _score(url: str, rows: Any) -> requests.Response:
    """Score ``rows`` with the Open Inference Protocol: a model that raises answers 500 there
    (``/invocations`` answers 400, as MLflow's scoring server does)."""
    inputs = [{"name": column, "shape": [len(rows)], "datatype": "FP64",
               "data": [float(v) for v in rows[column]]} for column in rows.columns]
    return requests.post(f"{url}/v2/models/{MODEL}/infer", timeout=30,
                         json={"inputs": inputs, "parameters": {"content_type": "pd"}})


def _line(out: str, metric: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{metric}: "))


def test_canary_check_promotes_a_sound_canary_and_rolls_back_a_failing_one(
        store: tuple[Registry, str], tmp_path: Path) -> None:
    registry, password = store
    ports = {"stable": free_port(), "good": free_port(), "flaky": free_port()}
    # Prometheus scrapes each server's metrics port (which answers nothing else).
    metrics = {name: free_port() for name in ports}
    with serving_version(registry, password, "1", tmp_path / "stable",
                         port=ports["stable"], metrics_port=metrics["stable"]) as stable, \
            serving_version(registry, password, "2", tmp_path / "good",
                            port=ports["good"], metrics_port=metrics["good"]) as good, \
            serving_version(registry, password, "3", tmp_path / "flaky", port=ports["flaky"],
                            metrics_port=metrics["flaky"], allow_pickle=True) as flaky:
        address = {name: f"{MODEL}-{name}:{port}" for name, port in metrics.items()}
        targets = [Scraped("mlops-service", address[server],
                           {"service": service, "track": track, "version": version})
                   for service, track, server, version in (
                       ("fraud-ok", "stable", "stable", "1"),
                       ("fraud-ok", "canary", "good", "2"),
                       ("fraud-bad", "stable", "stable", "1"),
                       ("fraud-bad", "canary", "flaky", "3"))]
        prometheus = Prometheus.standalone(port=free_port(), scrape_interval="250ms")
        workload = prometheus_workload("mon", prometheus, targets, rule_groups(
            ["fraud-ok", "fraud-bad"], Slo(), DriftAlerts(window="5m", min_rows=10),
            Quality(window="5m", min_labels=10)))
        hosts = {address[n]: f"127.0.0.1:{p}" for n, p in metrics.items()}
        hosts[f"0.0.0.0:{prometheus.port}"] = f"127.0.0.1:{prometheus.port}"
        with run_workload(workload, {}, tmp_path / "prometheus", hosts=hosts,
                          timeout=60) as running:
            url = running.url
            _wait("all four targets up", lambda: len(_query(url, "up == 1")) == 4)
            time.sleep(1)  # a few scrapes with the counters at zero

            # No traffic yet: keep waiting.
            idle = canary_check(url, "fraud-ok")
            assert idle.returncode == 10, idle.stdout + idle.stderr
            assert _line(idle.stdout, "requests").startswith("requests: WAIT: canary 0, stable 0")
            assert "decision: keep waiting (exit 10)" in idle.stdout

            # The same traffic to every track; every third batch has a row `Flaky` fails on.
            x, y = load_breast_cancer(return_X_y=True, as_frame=True)
            sample = x.sample(BATCHES * BATCH_ROWS, random_state=7)
            failed = 0
            for i in range(BATCHES):
                rows = sample.iloc[i * BATCH_ROWS:(i + 1) * BATCH_ROWS]
                if i % 3 == 0:
                    rows = poisoned(rows)
                for server in (stable, good):
                    answer = _score(server.url, rows)
                    assert answer.status_code == 200, answer.text
                    labels = [int(v) for v in y.loc[rows.index]]
                    feedback = requests.post(server.url + "/feedback", timeout=30, json={
                        "request_id": answer.headers["X-Request-Id"], "labels": labels})
                    assert feedback.status_code == 200, feedback.text
                answer = _score(flaky.url, rows)
                assert answer.status_code == (500 if i % 3 == 0 else 200), answer.text
                failed += answer.status_code == 500
            assert failed == BATCHES // 3

            total = BATCHES * 4  # fraud-ok's two tracks and fraud-bad's, stable counted twice
            _wait("every request scraped", lambda: sum(
                float(r["value"][1]) for r in _query(url, "mlops_requests_total")) >= total)
            _wait("every label scraped", lambda: sum(
                float(r["value"][1]) for r in _query(
                    url, 'mlops_feedback_total{service="fraud-ok",outcome="matched"}'))
                  >= 2 * BATCHES * BATCH_ROWS)
            time.sleep(1)  # one more scrape after the last change

            sound = canary_check(url, "fraud-ok", "--max-accuracy-drop", "0.05")
            assert sound.returncode == 0, sound.stdout + sound.stderr
            for metric in ("requests", "error_ratio", "latency_p99", "live_accuracy"):
                assert _line(sound.stdout, metric).startswith(f"{metric}: OK: "), sound.stdout
            assert "decision: promote (exit 0)" in sound.stdout

            degraded = canary_check(url, "fraud-bad")
            assert degraded.returncode == 1, degraded.stdout + degraded.stderr
            reason = _line(degraded.stdout, "error_ratio")
            assert reason.startswith("error_ratio: WORSE: canary "), degraded.stdout
            # The share of the canary's answers that were 500s: its first errors count too
            # (the server exposes its 5xx series at 0 from the start).
            shown = float(reason.split("canary ")[1].split(",")[0])
            assert shown == pytest.approx(failed / BATCHES, abs=0.02), degraded.stdout
            assert "stable 0.0000" in reason and "5xx ratio above stable's" in reason
            assert "decision: roll back (exit 1)" in degraded.stdout
            # No labels reached the flaky canary: live quality is not judged.
            assert _line(degraded.stdout, "live_accuracy").startswith(
                "live_accuracy: NOT JUDGED: canary none"), degraded.stdout

            # The check and the recording rule agree on the error ratio over 30 minutes.
            rule = _wait("the track error rule evaluated", lambda: _query(
                url, 'mlops:track_error:ratio_rate30m{service="fraud-bad",track="canary"}'))
            thirty = canary_check(url, "fraud-bad", "--window", "30m")
            shown = _line(thirty.stdout, "error_ratio").split("canary ")[1].split(",")[0]
            assert float(shown) == pytest.approx(float(rule[0]["value"][1]), abs=0.02)

    # Nothing listens there any more: exit 2, and nothing decided.
    gone = canary_check(url, "fraud-ok", "--timeout", "1")
    assert gone.returncode == 2, gone.stdout + gone.stderr
    assert "unreachable" in gone.stderr and gone.stdout == ""
