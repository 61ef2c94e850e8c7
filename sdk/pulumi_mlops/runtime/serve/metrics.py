"""Prometheus metrics of the scoring server (names and labels from
`pulumi_mlops.contracts.metrics`: MonitoringStack builds on them).

| metric | type | labels |
|---|---|---|
| ``mlops_requests_total`` | counter | ``code`` (HTTP status) |
| ``mlops_request_duration_seconds`` | histogram | |
| ``mlops_batch_rows`` | histogram | |
| ``mlops_predictions_total`` | counter | ``class`` (classification outputs, bounded) |
| ``mlops_prediction_value`` | histogram | (numeric outputs) |
| ``mlops_feature_drift`` | gauge | ``feature``, ``statistic`` (``psi`` / ``js_distance``) |
| ``mlops_model_info`` | gauge (1) | ``model_name``, ``model_version``, ``model_alias``, |
| | | ``model_uri`` |

The ``class`` label takes at most ``--max-class-labels`` values (`Limits`, default 50): a
scikit-learn classifier's own classes first, then other predicted values in the order they
first appear; predictions of any further value count under ``__other__`` (a name no
classifier's class is likely to have), so a model whose output varies with its input cannot
grow the series without bound.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by the server and every
worker's values are summed at scrape time; the drift gauges come from the window the workers
share, as computed by the worker answering the scrape.

Requests and predictions are observed in batches: a request only appends its figures to a
pending list, which is counted into the metrics at once, with numpy, every ``FLUSH_SECONDS``
(or sooner, after ``_FLUSH_REQUESTS`` requests or ``_FLUSH_ROWS`` predictions), and whenever
this process's registry is read. Counting each request as it ends cost 3 µs of a one-row
request and 13 µs of a 100-row one (prometheus_client takes a lock per value); another
worker's requests reach a scrape up to ``FLUSH_SECONDS`` late.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter as _Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.serve.fetch import ModelInfo

__all__ = ["FLUSH_SECONDS", "OTHER_CLASS", "exposition", "flush", "limit_class_labels",
           "model_info", "observe_predictions", "observe_request"]

FLUSH_SECONDS = 0.5
_FLUSH_REQUESTS = 512
_FLUSH_ROWS = 65536


class _Flush(Collector):
    """Counts the pending observations whenever the registry is read (registered first, so
    that the metrics collected after it include them)."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        flush()
        return iter(())


REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(_Flush())
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5)
_ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)
_VALUE_BUCKETS = (-10, -1, -0.5, -0.1, 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1, 2, 5, 10, 100, 1000)
OTHER_CLASS = names.OTHER_CLASS

REQUESTS = Counter(names.REQUESTS, "Scoring requests by HTTP status code", [names.CODE_LABEL],
                   registry=REGISTRY)
LATENCY = Histogram(names.REQUEST_DURATION, "Time to answer /invocations",
                    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BATCH = Histogram(names.BATCH_ROWS, "Rows per scoring request", buckets=_ROW_BUCKETS,
                  registry=REGISTRY)
CLASSES = Counter(names.PREDICTIONS, "Predicted classes (classification models)",
                  [names.CLASS_LABEL], registry=REGISTRY)
VALUES = Histogram(names.PREDICTION_VALUE, "Predicted values (regression models)",
                   buckets=_VALUE_BUCKETS, registry=REGISTRY)
DRIFT = Gauge(names.FEATURE_DRIFT,
              "Drift of an input feature: PSI (numeric) or Jensen-Shannon distance (categorical)",
              [names.FEATURE_LABEL, names.STATISTIC_LABEL], registry=REGISTRY,
              multiprocess_mode="mostrecent")
INFO = Gauge(names.MODEL_INFO, "The model being served (value 1)", list(names.MODEL_INFO_LABELS),
             registry=REGISTRY, multiprocess_mode="max")


def model_info(info: ModelInfo) -> None:
    """Publish which model is served."""
    INFO.labels(info.name or "", info.version or "", info.alias or "", info.uri).set(1)


# Label children by label value: `labels()` takes a lock and builds a key on every call, and the
# request path asks for the same few children on every request. Both maps are bounded (HTTP
# statuses; _max_class_labels classes plus OTHER_CLASS).
_REQUEST_CHILDREN: dict[int, Any] = {}
_CLASS_CHILDREN: dict[str, Any] = {}
_max_class_labels = 50
# Class ids up to this bound are counted with one bincount instead of a sort (np.unique).
_BINCOUNT_MAX = 4096
# Up to this many predictions, classes are counted in Python.
_SMALL_BATCH = 16


def limit_class_labels(max_labels: int, known: Iterable[Any] = ()) -> None:
    """Bound the ``class`` label to ``max_labels`` values, taking ``known`` classes (a
    classifier's ``classes_``) first; further values count under `OTHER_CLASS`."""
    global _max_class_labels
    _max_class_labels = max_labels
    for cls in list(known)[:max_labels]:
        _class_child(str(cls))


# Observations not counted yet (appended on the event loop, counted by `flush`).
_pending_requests: list[tuple[int, int, float]] = []
_pending_predictions: list[np.ndarray[Any, Any]] = []
_pending_rows = 0
_flush_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def observe_request(status: int, rows: int, seconds: float) -> None:
    """Count one /invocations request (pending until the next `flush`)."""
    _pending_requests.append((status, rows, seconds))
    _pending()


def observe_predictions(predictions: Any) -> None:
    """Record the prediction distribution: class counts, or a value histogram (pending until
    the next `flush`)."""
    global _pending_rows
    values = np.asarray(getattr(predictions, "values", predictions))
    if values.ndim != 1 or values.size == 0:
        return
    _pending_predictions.append(values)
    _pending_rows += values.size
    _pending()


def _pending() -> None:
    global _flush_timer
    if len(_pending_requests) >= _FLUSH_REQUESTS or _pending_rows >= _FLUSH_ROWS:
        flush()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop to flush later: count now
        flush()
        return
    # A timer left on another (closed) loop would never fire.
    if _flush_timer is None or _flush_timer[0] is not loop:
        _flush_timer = loop, loop.call_later(FLUSH_SECONDS, flush)


def flush() -> None:
    """Count the pending observations into the metrics."""
    global _pending_requests, _pending_predictions, _pending_rows, _flush_timer
    if _flush_timer is not None:
        _flush_timer[1].cancel()
        _flush_timer = None
    requests, predictions = _pending_requests, _pending_predictions
    _pending_requests, _pending_predictions, _pending_rows = [], [], 0
    if requests:
        statuses, rows, seconds = zip(*requests, strict=True)
        for status, count in _Counter(statuses).items():
            child = _REQUEST_CHILDREN.get(status)
            if child is None:
                child = _REQUEST_CHILDREN[status] = REQUESTS.labels(str(status))
            child.inc(count)
        _observe_many(LATENCY, np.array(seconds))
        answered = np.array(rows)[np.array(statuses) == 200]
        if answered.size:
            _observe_many(BATCH, answered)
    by_dtype: dict[np.dtype[Any], list[np.ndarray[Any, Any]]] = {}
    for values in predictions:
        by_dtype.setdefault(values.dtype, []).append(values)
    for arrays in by_dtype.values():
        _observe_values(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])


def _observe_many(histogram: Histogram, values: np.ndarray[Any, Any]) -> None:
    # prometheus_client observes one value at a time; a 100-row batch would pay 100 calls.
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts, strict=False):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(values.sum()))


def _observe_values(values: np.ndarray[Any, Any]) -> None:
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        if finite.size:
            _observe_many(VALUES, finite)
        return
    if values.size <= _SMALL_BATCH and values.dtype.kind in "iub":
        # A few rows: counting Python values beats numpy's per-call overhead (str of an int or
        # bool equals numpy's astype(str) text).
        _count(_Counter(values.tolist()).items())
        return
    if values.dtype.kind in "iu":
        # Integer classes: count the ids, and turn only the distinct ones into label strings
        # (str of a numpy integer equals its astype(str) text).
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= _BINCOUNT_MAX:
            tally = np.bincount(values.astype(np.intp, copy=False))
            ids = np.flatnonzero(tally)
            _count(zip(ids.tolist(), tally[ids].tolist(), strict=True))
        else:
            unique, counts = np.unique(values, return_counts=True)
            _count(zip(unique.tolist(), counts.tolist(), strict=True))
        return
    if values.dtype.kind in "bUSO":
        classes, counts = np.unique(values.astype(str), return_counts=True)
        _count(zip(classes.tolist(), counts.tolist(), strict=True))


def _count(tally: Iterable[tuple[Any, int]]) -> None:
    for cls, count in tally:
        _class_child(str(cls)).inc(count)


def _class_child(cls: str) -> Any:
    child = _CLASS_CHILDREN.get(cls)
    if child is None:
        if len(_CLASS_CHILDREN) >= _max_class_labels:
            cls = OTHER_CLASS
            child = _CLASS_CHILDREN.get(cls)
        if child is None:
            child = _CLASS_CHILDREN[cls] = CLASSES.labels(cls)
    return child


def publish_drift(monitor: DriftMonitor) -> None:
    """Set the drift gauges from the monitor's current window (called at scrape time)."""
    numeric = set(monitor.numeric_features)
    for feature, value in monitor.scores().items():
        DRIFT.labels(feature, "psi" if feature in numeric else "js_distance").set(value)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type (all worker processes when there are several)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        flush()  # this worker's own; the others' follow within FLUSH_SECONDS
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
