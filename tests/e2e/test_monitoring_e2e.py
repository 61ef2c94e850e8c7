"""MonitoringStack's Prometheus for real: started from the workload the plan renders (Debian's
``prometheus`` binary), scraping two real ``mlops serve`` replicas of one service (each started
from the command ModelService renders) that get different traffic, with the generated rules.

Checked: both targets up; every rule evaluates without error; the drift recording rules score
the merged traffic of both replicas as the server's own statistics score the merged rows (not
as the mean of the replicas' scores), within what Prometheus' extrapolation of ``increase()``
at the window's edges allows (each replica is scraped at its own instants).
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

from pulumi_mlops.local import run_workload
from pulumi_mlops.plans.dashboards import dashboards, panel_queries
from pulumi_mlops.plans.monitoring import (
    DriftAlerts,
    Prometheus,
    Quality,
    Scraped,
    Slo,
    prometheus_workload,
    rule_groups,
)
from pulumi_mlops.runtime.drift import DriftMonitor, load_profile
from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH
from tests.e2e.ports import free_port
from tests.e2e.prometheus_api import query as _query
from tests.e2e.prometheus_api import wait as _wait
from tests.e2e.registry import Registry, registry_client
from tests.e2e.test_service_e2e import (
    ALIAS,
    MODEL,
    _features,
    _register,
    predict,
    render,
    resolver_for,
    serving,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

DRIFT = DriftAlerts(window="5m", min_rows=10)
QUALITY = Quality(min_accuracy=0.5, window="5m", min_labels=10)
# Dashboard series with no data here, and where they are checked.
NOT_HERE = {
    "mlops:live_mean_absolute_error:ratio": "a regressor's (tests/e2e/test_serve_feedback_e2e.py "
                                            "for the counters, promtool for the rule)",
    "mlops_retrain_": "a retrain scheduler's (tests/e2e/test_docker_engine_e2e.py)",
    "kube_cronjob_": "kube-state-metrics' (Kubernetes; promtool tests)",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        mlflow.set_experiment("monitoring-e2e")
        assert _register(c=1.0) == "1"
        MlflowClient().set_registered_model_alias(MODEL, ALIAS, "1")
        yield registry


def _predict_and_label(url: str, rows: Any, labels: Any) -> tuple[list[int], int]:
    """Score ``rows``, then post their true ``labels`` to /feedback with the answer's request
    id; (the predictions, how many are right)."""
    body = '{"dataframe_split": ' + rows.to_json(orient="split", index=False) + "}"
    answer = requests.post(url + "/invocations", data=body, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    feedback = requests.post(url + "/feedback", timeout=30, json={
        "request_id": answer.headers["X-Request-Id"], "labels": [int(v) for v in labels]})
    assert feedback.status_code == 200, feedback.text
    assert feedback.json() == {"matched": len(rows), "unmatched": 0}
    return predictions, sum(int(p == y) for p, y in zip(predictions, labels, strict=True))


def _rules(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=10) as response:
        body = json.load(response)
    return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def test_prometheus_scores_drift_of_two_replicas_merged_traffic(
        store: Registry, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    metrics = [free_port(), free_port()]  # each replica's metrics port, what Prometheus scrapes
    x = _features()
    _, y = load_breast_cancer(return_X_y=True, as_frame=True)
    calm = x.sample(300, random_state=1)
    shifted = x.sample(200, random_state=2) * 1.5  # the other replica's traffic drifted
    with serving(render("docker", store, port=ports[0], metrics_port=metrics[0],
                        resolver=resolver_for(store)), store, tmp_path / "a") as a, \
            serving(render("docker", store, port=ports[1], metrics_port=metrics[1],
                           resolver=resolver_for(store)), store, tmp_path / "b") as b:
        targets = [Scraped("mlops-service", f"{MODEL}-{name}:{port}",
                           {"service": MODEL, "track": "stable", "version": "1"})
                   for name, port in zip("ab", metrics, strict=True)]
        # The registry, run from the command its plan renders, scraped at its metrics
        # exporter (run beside it from the sidecar its plan renders), without credentials.
        exporter_port = int(urllib.parse.urlsplit(store.metrics_url).port or 0)
        targets.append(Scraped("mlops-registry", f"registry-mlflow-metrics:{exporter_port}",
                               {"registry": "registry"}))
        # Scraped every 100 ms: increase() extrapolates each replica's counters to the
        # window's end by up to one interval, at each replica's own phase; over a 25 s history
        # that skews the two replicas' weights by under 0.5 %.
        prometheus = Prometheus.standalone(port=free_port(), scrape_interval="100ms")
        workload = prometheus_workload("mon", prometheus, targets, rule_groups(
            [MODEL], Slo(latency_p99_ms=250), DRIFT, QUALITY, "registry"))
        hosts = {f"{MODEL}-{n}:{p}": f"127.0.0.1:{p}"
                 for n, p in zip("ab", metrics, strict=True)}
        hosts[f"0.0.0.0:{prometheus.port}"] = f"127.0.0.1:{prometheus.port}"
        hosts[f"registry-mlflow-metrics:{exporter_port}"] = f"127.0.0.1:{exporter_port}"
        with run_workload(workload, {}, tmp_path / "prometheus",
                          hosts=hosts, timeout=60) as running:
            url = running.url
            started = time.monotonic()
            _wait("both replicas up", lambda: len(_query(url, 'up{service="cancer"} == 1')) == 2)
            up_at = time.time()
            time.sleep(1)  # scrapes of the counters at zero: the window starts there
            answers = {"calm": [predict(a.url, calm.iloc[i:i + 50])
                                for i in range(0, len(calm), 50)],
                       "shifted": [predict(b.url, shifted.iloc[i:i + 50])
                                   for i in range(0, len(shifted), 50)]}
            # Delayed labels for 120 more rows, to both replicas.
            right = judged = 0
            labelled = x.sample(120, random_state=3)
            answers["labelled"] = []
            for i, start in enumerate(range(0, len(labelled), 20)):
                rows = labelled.iloc[start:start + 20]
                predicted, r = _predict_and_label((a, b)[i % 2].url, rows, y.loc[rows.index])
                answers["labelled"].append(predicted)
                right, judged = right + r, judged + len(rows)

            def scores() -> dict[str, float]:
                found = _query(url, 'mlops:feature_drift:score{service="cancer"}')
                rows = _query(url, 'mlops:drift_rows:increase{service="cancer"}')
                complete = rows and all(float(r["value"][1]) >= 619 for r in rows)
                return {r["metric"]["feature"]: float(r["value"][1])
                        for r in found} if complete else {}

            time.sleep(max(0.0, 25 - (time.monotonic() - started)))
            prom = _wait("drift scores of all the traffic", scores, timeout=60)
            # The profile the registered version logged: the inputs, and its predictions.
            run = MlflowClient().get_model_version(MODEL, "1").run_id
            profile = load_profile(mlflow.artifacts.load_dict(
                f"runs:/{run}/{PROFILE_ARTIFACT_PATH}"))
            merged, alone = DriftMonitor(profile, window=10_000), DriftMonitor(profile)
            for name, frame in (("calm", calm), ("shifted", shifted), ("labelled", labelled)):
                merged.observe_columns(frame, predictions=np.concatenate(answers[name]))
            alone.observe_columns(shifted, predictions=np.concatenate(answers["shifted"]))
            assert "__prediction__" in merged.scores()
            expected = merged.scores()
            assert set(prom) == set(expected)
            for feature, value in expected.items():
                assert prom[feature] == pytest.approx(value, rel=0.01, abs=1e-3), feature
            # Not what one replica sees.
            assert any(abs(prom[f] - v) > 0.05 for f, v in alone.scores().items())

            # Every generated rule evaluates without error against the real server, and the
            # recording rules of the traffic sent return data.
            rules = _rules(url)
            assert rules and all(r["health"] == "ok" for r in rules), [
                (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
            # (The Jensen-Shannon rules have no categorical feature to score here.)
            for record in ("mlops:sli_error:ratio_rate5m", "mlops:drift_bin:increase",
                           "mlops:drift_observed:ratio_smoothed"):
                assert _query(url, record), record
            assert _query(url, 'mlops:sli_error:ratio_rate5m{slo="latency"}')
            # (That it is 0, not missing, without 5xx: tests/unit/test_monitoring_rules.py.)
            assert _query(url, 'mlops:sli_error:ratio_rate5m{slo="availability"}')

            # Live quality: the accuracy of the labelled rows over both replicas.
            accuracy = _query(url, 'mlops:live_accuracy:ratio{service="cancer"}')
            assert [float(r["value"][1]) for r in accuracy] == [
                pytest.approx(right / judged, rel=0.02)]
            labels = _query(url, 'mlops:feedback_matched:increase{service="cancer"}')
            assert float(labels[0]["value"][1]) == pytest.approx(judged, rel=0.02)
            # The registry, scraped as its admin: up, its requests counted by status.
            assert _query(url, 'up{registry="registry"} == 1')
            assert _query(url, 'mlflow_http_request_total{registry="registry",status="200"}')

            # Every dashboard query evaluates and returns data, finite numbers but for the
            # predicted values' quantiles, NaN for a classifier, which predicts classes, not
            # values. The rate window covers the whole run: the traffic was sent at its start,
            # and a window that ends after the last request divides 0 by 0 (a slow CI run saw
            # NaN with 1m). The version annotation marks the version's first 2 minutes: it is
            # asked at a time within them.
            for document in dashboards().values():
                for expr in panel_queries(document):
                    at = up_at + 5 if "offset 2m" in expr else None
                    found = _query(url, expr.replace("$__rate_interval", "10m")
                                   .replace("$service", MODEL), at)
                    if any(series in expr for series in NOT_HERE):
                        continue  # evaluated without error; no data to expect
                    assert found, expr
                    values = [float(r["value"][1]) for r in found]
                    if "mlops_prediction_value" not in expr:
                        assert all(math.isfinite(v) for v in values), (expr, values)
