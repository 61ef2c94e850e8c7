"""Metrics observed in batches: nothing is lost or late for a reader of the registry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.metrics_core import Metric

from pulumi_mlops.runtime.serve import metrics


def _requests(code: str) -> float:
    return metrics.REGISTRY.get_sample_value("mlops_requests_total", {"code": code}) or 0.0


def _class(label: str) -> float:
    return metrics.REGISTRY.get_sample_value("mlops_predictions_total", {"class": label}) or 0.0


def _latency_count() -> float:
    return metrics.REGISTRY.get_sample_value("mlops_request_duration_seconds_count") or 0.0


def test_without_an_event_loop_an_observation_is_counted_at_once() -> None:
    before = _requests("418")
    metrics.observe_request(418, 0, 0.001)
    assert metrics._pending_requests == []
    assert _requests("418") == before + 1


def test_pending_observations_are_counted_when_the_registry_is_read() -> None:
    before = (_requests("200"), _class("7"), _latency_count())

    async def serve() -> None:
        for _ in range(3):
            metrics.observe_predictions(np.array([7, 7, 8]))
            metrics.observe_request(200, 3, 0.002)
        assert len(metrics._pending_requests) == 3  # not counted yet
        # Read on the loop, as a scrape is: the registry counts what is pending first.
        assert (_requests("200"), _class("7"), _latency_count()) == (
            before[0] + 3, before[1] + 6, before[2] + 3)

    asyncio.run(serve())


def test_pending_observations_are_counted_within_the_flush_period_without_a_read() -> None:
    before = _requests("201")

    async def serve() -> list[int]:
        metrics.observe_request(201, 1, 0.001)
        seen = [len(metrics._pending_requests)]
        await asyncio.sleep(metrics.FLUSH_SECONDS + 0.2)
        seen.append(len(metrics._pending_requests))
        return seen

    assert asyncio.run(serve()) == [1, 0]
    assert _requests("201") == before + 1


def test_pending_observations_are_bounded() -> None:
    async def serve() -> int:
        most = 0
        for _ in range(metrics._FLUSH_REQUESTS * 2):
            metrics.observe_request(202, 1, 0.001)
            most = max(most, len(metrics._pending_requests))
        big = np.zeros(metrics._FLUSH_ROWS, dtype=np.int64)
        metrics.observe_predictions(big)
        assert metrics._pending_predictions == []  # over the row bound: counted at once
        return most

    assert asyncio.run(serve()) < metrics._FLUSH_REQUESTS


@pytest.mark.parametrize("values", [np.array([0.5, 2.0, np.nan]), np.array(["a", "b", "a"])])
def test_a_batch_counts_as_its_requests_would_one_by_one(values: np.ndarray) -> None:
    # Two requests with the same dtype are concatenated before they are counted.
    def sample() -> tuple[float | None, ...]:
        return (metrics.REGISTRY.get_sample_value("mlops_prediction_value_count"),
                metrics.REGISTRY.get_sample_value("mlops_prediction_value_bucket",
                                                  {"le": "1.0"}),
                _class("a"), _class("b"))

    before = sample()

    async def serve() -> None:
        metrics.observe_predictions(values)
        metrics.observe_predictions(values)

    asyncio.run(serve())
    after = sample()
    if values.dtype.kind == "f":
        assert (after[0] or 0) - (before[0] or 0) == 4  # NaN is not a value
        assert (after[1] or 0) - (before[1] or 0) == 2  # the two 0.5s
    else:
        assert ((after[2] or 0) - (before[2] or 0), (after[3] or 0) - (before[3] or 0)) == (4, 2)


@pytest.mark.parametrize("buckets, values", [
    (metrics._LATENCY_BUCKETS, [0.0001, 0.0005, 0.0007, 0.01, 4.9, 5.0, 7.0]),
    (metrics._ROW_BUCKETS, [1, 1, 2, 3, 100, 101, 10_000, 20_000]),
    (metrics._VALUE_BUCKETS, [-11.0, -10.0, -0.3, 0.0, 0.1, 0.5, 0.95, 1.0, 999.0, 1e6]),
])
def test_counting_a_batch_gives_what_prometheus_clients_own_observe_gives(
        buckets: tuple[float, ...], values: list[float]) -> None:
    # A batch is counted with numpy into counts this module keeps: the histogram it exposes
    # must be the one prometheus_client's own, observing one value at a time, exposes.
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    reference = Histogram("h", "h", buckets=buckets, registry=registry)
    for value in values:
        reference.observe(value)
    ours = metrics._Histogram("h", "h", buckets)
    ours.observe(np.array(values[:3]))
    ours.observe(np.array(values[3:]))

    def samples(families: Iterable[Metric]) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for m in families for s in m.samples
                if not s.name.endswith("_created")]

    assert samples([ours.family(ours.counts.tolist(), ours.sum, merged=False)]) == samples(
        registry.collect())


# --------------------------------------------------------------------------- the page scraped

# Run in fresh interpreters: the metrics are process-wide, and workers are processes. Each
# worker answers a fixed series of requests twice over: through this module, and through
# prometheus_client's own metric objects, observing one value at a time (what the module did
# before it counted batches itself).
_SCENARIO = r"""
import asyncio, math, re, sys
import numpy as np
from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.fetch import ModelInfo

INFO = ModelInfo("models:/fraud@champion", "fraud", "3", "champion", "r1")
KNOWN, MAX_CLASSES = ["a", "b"], 3


def requests(worker):
    # (status, rows, seconds, predictions): every class first seen in sorted order in the first
    # request (a batch takes a flush's new classes in sorted order, by type), figures that are
    # dyadic (sums exact in any order).
    out = []
    for i in range(14 + worker):
        rows = (i + 4) % 5 + 1
        status = (200, 200, 400, 200, 503, 200, 200)[i % 7]
        seconds = (i * 37 % 64 + worker) / 256
        kind = i % 4
        predictions = None
        if status == 200:
            if kind == 0:
                predictions = np.array(list("abcde")[:rows])
            elif kind == 1:
                predictions = np.array([(i - 9) / 4, 1024.5, -16.0, math.nan, 0.75][:rows])
            elif kind == 2:
                predictions = np.array([7, 7, 300, 1, 2][:rows])
            else:
                predictions = np.array([True, False, True, True, False][:rows])
        out.append((status, rows, seconds, predictions))
    return out


def feedback(worker):
    # (matched, unmatched, correct, absolute error, squared error) of /feedback requests:
    # dyadic figures, exact in any order.
    return [(3 + worker, 1, 2, 0.75 * worker, 0.5625), (0, 2, 0, 0.0, 0.0), (5, 0, 5, 1.5, 4.25)]


def ours(worker):
    metrics.model_info(INFO)
    metrics.limit_class_labels(MAX_CLASSES, KNOWN)

    async def serve():
        for status, rows, seconds, predictions in requests(worker):
            if predictions is not None:
                metrics.observe_predictions(predictions)
            metrics.observe_request(status, rows, seconds)
        for figures in feedback(worker):
            metrics.observe_feedback(*figures)

    asyncio.run(serve())
    metrics.flush()  # as a worker does when it stops
    return metrics.exposition


def reference(worker):
    from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                                   generate_latest)
    from prometheus_client import multiprocess

    registry = CollectorRegistry(auto_describe=True)
    requests_total = Counter(names.REQUESTS, "Scoring requests by HTTP status code",
                             [names.CODE_LABEL], registry=registry)
    latency = Histogram(names.REQUEST_DURATION, "Time to answer /invocations",
                        buckets=metrics._LATENCY_BUCKETS, registry=registry)
    batch = Histogram(names.BATCH_ROWS, "Rows per scoring request",
                      buckets=metrics._ROW_BUCKETS, registry=registry)
    classes = Counter(names.PREDICTIONS, "Predicted classes (classification models)",
                      [names.CLASS_LABEL], registry=registry)
    values = Histogram(names.PREDICTION_VALUE, "Predicted values (regression models)",
                       buckets=metrics._VALUE_BUCKETS, registry=registry)
    outcomes = Counter(names.FEEDBACK, "Delayed labels received on /feedback, one per "
                       "predicted row, by whether their prediction was found",
                       [names.OUTCOME_LABEL], registry=registry)
    correct = Counter(names.FEEDBACK_CORRECT, "Matched labels equal to the predicted class "
                      "(classification)", registry=registry)
    absolute = Counter(names.FEEDBACK_ABSOLUTE_ERROR, "Sum of |label - prediction| over "
                       "matched labels (regression)", registry=registry)
    squared = Counter(names.FEEDBACK_SQUARED_ERROR, "Sum of (label - prediction)^2 over "
                      "matched labels (regression)", registry=registry)
    outcomes.labels(names.MATCHED)
    outcomes.labels(names.UNMATCHED)
    for code in ("200", *metrics.SERVER_ERROR_CODES):  # at 0 from the start
        requests_total.labels(code)
    Gauge(names.FEATURE_DRIFT,
          "Drift of an input feature: PSI (numeric) or Jensen-Shannon distance (categorical)",
          [names.FEATURE_LABEL, names.STATISTIC_LABEL], registry=registry,
          multiprocess_mode="mostrecent")
    info = Gauge(names.MODEL_INFO, "The model being served (value 1)",
                 list(names.MODEL_INFO_LABELS), registry=registry, multiprocess_mode="max")
    info.labels(INFO.name, INFO.version, INFO.alias, INFO.uri).set(1)
    Gauge(names.MODEL_LOADED, "Whether the server serves its model (1) or waits for it (0)",
          registry=registry, multiprocess_mode="max").set(1)
    seen = []
    for cls in KNOWN:
        classes.labels(cls)
        seen.append(cls)
    for status, rows, seconds, predictions in requests(worker):
        if predictions is not None and predictions.dtype.kind == "f":
            for value in predictions:
                if math.isfinite(value):
                    values.observe(value)
        elif predictions is not None:
            for value in predictions.tolist():
                label = str(value)
                if label not in seen and len(seen) >= MAX_CLASSES:
                    label = names.OTHER_CLASS
                if label not in seen:
                    seen.append(label)
                classes.labels(label).inc()
        requests_total.labels(str(status)).inc()
        latency.observe(seconds)
        if status == 200:
            batch.observe(rows)
    for matched, unmatched, right, absolute_error, squared_error in feedback(worker):
        outcomes.labels(names.MATCHED).inc(matched)
        outcomes.labels(names.UNMATCHED).inc(unmatched)
        correct.inc(right)
        absolute.inc(absolute_error)
        squared.inc(squared_error)

    def exposition():
        if "PROMETHEUS_MULTIPROC_DIR" not in __import__("os").environ:
            return generate_latest(registry), ""
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged), ""

    return exposition


side, worker, show = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "show"
exposition = (ours if side == "ours" else reference)(worker)
if show:
    page = exposition()[0].decode()
    # When a series was created is the one figure that differs from run to run.
    sys.stdout.write(re.sub(r"^(\w+_created(\{[^}]*\})?) \S+$", r"\1 T", page, flags=re.M))
"""


def _page(side: str, worker: int, *, show: bool = True,
          environ: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run([sys.executable, "-c", _SCENARIO, side, str(worker),
                             "show" if show else "-"], env={**env, **(environ or {})},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _families(page: str, *, order_counters: bool) -> dict[str, list[str]]:
    """The page's lines by family (from its HELP line on); with ``order_counters``, a
    counter's samples sorted (the order the multiprocess collector reads worker files in)."""
    families: dict[str, list[str]] = {}
    for line in page.splitlines():
        if line.startswith("# HELP "):
            lines = families.setdefault(line.split()[2], [])
        lines.append(line)
    if order_counters:
        for lines in families.values():
            if lines[1].endswith(" counter"):
                lines[2:] = sorted(lines[2:])
    return families


def test_the_page_is_the_one_prometheus_clients_own_metrics_give() -> None:
    ours, reference = _page("ours", 0), _page("reference", 0)

    assert ours == reference
    # What the comparison covers: every family, created series, bounded and known classes,
    # values past the last bucket and below the first.
    assert 'mlops_predictions_total{class="__other__"}' in ours
    assert 'mlops_predictions_created{class="a"} T' in ours
    assert "# TYPE mlops_predictions_created gauge" in ours
    assert "mlops_prediction_value_sum" not in ours  # a bound is negative
    assert 'mlops_prediction_value_bucket{le="-10.0"} 2.0' in ours
    assert 'mlops_prediction_value_bucket{le="1000.0"} 6.0' in ours
    assert 'mlops_prediction_value_bucket{le="+Inf"} 8.0' in ours
    assert "mlops_model_info{" in ours


def test_with_several_workers_the_page_sums_them_as_prometheus_client_did(
        tmp_path: Path) -> None:
    pages = {}
    for side in ("ours", "reference"):
        directory = tmp_path / side
        directory.mkdir()
        environ = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
        for worker in (1, 2):  # workers that have stopped: their counts stay
            _page(side, worker, show=False, environ=environ)
        pages[side] = _page(side, 0, environ=environ)

    ours = _families(pages["ours"], order_counters=True)
    assert ours == _families(pages["reference"], order_counters=True)
    assert 'mlops_requests_total{code="200"} ' + str(float(
        sum(1 for w in (0, 1, 2) for i in range(14 + w) if i % 7 not in (2, 4)))) in ours[
        "mlops_requests_total"]
    # The multiprocess collector also sums a histogram with negative bounds.
    assert any(line.startswith("mlops_prediction_value_sum ")
               for line in ours["mlops_prediction_value"])


def test_a_forked_worker_counts_its_own_requests_not_its_parents_again(tmp_path: Path) -> None:
    # With several workers the parent's counts are in the parent's file: a worker forked
    # from it starts from zero, as prometheus_client's multiprocess values did.
    code = """
import os, sys
from pulumi_mlops.runtime.serve import metrics
for _ in range(3):
    metrics.observe_request(200, 1, 0.25)  # counted at once: no event loop
pid = os.fork()
if pid == 0:
    metrics.observe_request(200, 1, 0.25)
    metrics.observe_request(200, 1, 0.25)
    page = metrics.exposition()[0].decode()
    sys.stdout.write(page)
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=True)

    page = result.stdout
    assert 'mlops_requests_total{code="200"} 5.0' in page, page  # not 3 + (3 + 2)
    assert "mlops_request_duration_seconds_count 5.0" in page


def test_a_fresh_server_exposes_its_successful_requests_at_zero() -> None:
    # Before any request, so that the first requests are an increase for rate(), whenever
    # they come between two scrapes.
    code = ("from pulumi_mlops.runtime.serve import metrics\n"
            "print(metrics.exposition()[0].decode())")
    page = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items()
                                          if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    lines = page.splitlines()
    assert 'mlops_requests_total{code="200"} 0.0' in lines
    # And its errors: the first ones count in rate() (the 5xx ratio, canary check, burn rate).
    for code in ("500", "503", "504"):
        assert f'mlops_requests_total{{code="{code}"}} 0.0' in lines


def test_a_fresh_server_exposes_its_feedback_counters_at_zero() -> None:
    code = ("from pulumi_mlops.runtime.serve import metrics\n"
            "print(metrics.exposition()[0].decode())")
    page = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items()
                                          if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    lines = page.splitlines()
    for series in ('mlops_feedback_total{outcome="matched"}',
                   'mlops_feedback_total{outcome="unmatched"}', "mlops_feedback_correct_total",
                   "mlops_feedback_absolute_error_total", "mlops_feedback_squared_error_total"):
        assert f"{series} 0.0" in lines, series
    # Not loaded until the model is published (the scoring app does it when it starts).
    assert "mlops_model_loaded 0.0" in lines


def test_the_feedback_counters_of_every_worker_are_summed(tmp_path: Path) -> None:
    code = """
import os, sys
from pulumi_mlops.runtime.serve import metrics
pids = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        metrics.observe_feedback(3, 1, 2, 0.5, 0.25)
        os._exit(0)
    os.waitpid(pid, 0)
metrics.observe_feedback(1, 0, 1, 0.25, 0.0625)
sys.stdout.write(metrics.exposition()[0].decode())
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    page = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True).stdout.splitlines()
    assert 'mlops_feedback_total{outcome="matched"} 7.0' in page
    assert 'mlops_feedback_total{outcome="unmatched"} 2.0' in page
    assert "mlops_feedback_correct_total 5.0" in page
    assert "mlops_feedback_absolute_error_total 1.25" in page
    assert "mlops_feedback_squared_error_total 0.5625" in page
