"""Prometheus metrics of the scoring server (names and labels from
`pulumi_mlops.contracts.metrics`: MonitoringStack builds on them).

| metric | type | labels |
|---|---|---|
| ``mlops_requests_total`` | counter | ``code`` (HTTP status; ``200`` and the 5xx from the start) |
| ``mlops_request_duration_seconds`` | histogram | |
| ``mlops_batch_rows`` | histogram | |
| ``mlops_predictions_total`` | counter | ``class`` (classification outputs, bounded) |
| ``mlops_prediction_value`` | histogram | (numeric outputs) |
| ``mlops_feature_drift`` | gauge | ``feature``, ``statistic`` (``psi`` / ``js_distance``) |
| ``mlops_model_info`` | gauge (1) | ``model_name``, ``model_version``, ``model_alias``, |
| | | ``model_uri`` |
| ``mlops_model_loaded`` | gauge | (1 here; 0 from the stand-in of `waiting`) |
| ``mlops_feedback_total`` | counter | ``outcome`` (``matched`` / ``unmatched``) |
| ``mlops_feedback_correct_total`` | counter | (classification) |
| ``mlops_feedback_absolute_error_total`` | counter | (regression: sum of abs. errors) |
| ``mlops_feedback_squared_error_total`` | counter | (regression: sum of squared errors) |

Every counter is exposed from the start, at 0 (the ``outcome`` label with both values), so
that ``rate()`` sees its first increase. The feedback counters are counted by
`pulumi_mlops.runtime.serve.feedback` (``POST /feedback``); whether a model's predictions are
classes or values is decided once, by `predicts_classes`, for both the prediction metrics and
the feedback.

The ``class`` label takes at most ``--max-class-labels`` values (`Limits`, default 50): a
scikit-learn classifier's own classes first, then other predicted values in the order they
first appear; predictions of any further value count under ``__other__`` (a name no
classifier's class is likely to have), so a model whose output varies with its input cannot
grow the series without bound.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by the server and every
worker's values are summed at scrape time; the drift gauges come from the window the workers
share, as computed by the worker answering the scrape.

Requests and predictions are observed in batches: a request only appends its figures to a
pending list, which is counted at once, with numpy, every ``FLUSH_SECONDS`` (or sooner, after
``_FLUSH_REQUESTS`` requests or ``_FLUSH_ROWS`` predictions), and whenever this process's
registry is read. Counting each request as it ends cost 3 µs of a one-row request and 13 µs of
a 100-row one (prometheus_client takes a lock per value); another worker's requests reach a
scrape up to ``FLUSH_SECONDS`` late.

The counters and histograms are counted here, not by prometheus_client's metric objects
(which observe one value at a time, and whose batch update needs their private fields), and
exposed by a public custom collector (`_Counts`) exactly as those objects expose them: the same
names, help, buckets and ``_created`` series. With several workers, each one writes its counts
to ``<PROMETHEUS_MULTIPROC_DIR>/mlops_serve_counts_<pid>.json`` whenever it counts, and a
scrape sums the files as prometheus_client's multiprocess collector sums its own (which still
carries the gauges); a worker's file outlives it, as a counter must.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import math
import os
import threading
import time
from collections import Counter as _Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.drift.prediction import dtype_kind
from pulumi_mlops.runtime.serve.fetch import ModelInfo
from pulumi_mlops.runtime.serve.waiting import model_loaded_family

__all__ = ["FLUSH_SECONDS", "OTHER_CLASS", "SERVER_ERROR_CODES", "exposition", "flush",
           "limit_class_labels", "model_info", "observe_feedback", "observe_predictions",
           "observe_request", "predicts_classes"]

FLUSH_SECONDS = 0.5
SERVER_ERROR_CODES = ("500", "503", "504")
"""The 5xx statuses the server answers, counted from 0 from the start like ``200``."""
_FLUSH_REQUESTS = 512
_FLUSH_ROWS = 65536
_LATENCY_BUCKETS = names.DURATION_BUCKETS
_ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)
_VALUE_BUCKETS = (-10, -1, -0.5, -0.1, 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1, 2, 5, 10, 100, 1000)
OTHER_CLASS = names.OTHER_CLASS
# Whether counters and histograms carry ``_created`` series: prometheus_client's setting, read
# as it reads it.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true", "1", "t")
_WORKER_FILES = "mlops_serve_counts_"


class _Histogram:
    """A histogram's counts per bucket and its sum, counted a batch at a time."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.array([*buckets, math.inf], dtype=np.float64)
        # The bounds as prometheus_client writes them (le="1.0", le="+Inf").
        self.le = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self.counts = np.zeros(self.bounds.size, dtype=np.int64)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, values: np.ndarray[Any, Any]) -> None:
        """Count ``values`` as prometheus_client's ``observe`` does, one value after another:
        into the first bucket whose bound is at least the value."""
        index = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(index, minlength=self.bounds.size)[:self.bounds.size]
        self.sum += float(values.sum())

    def reset(self) -> None:
        self.counts[:] = 0
        self.sum = 0.0

    def family(self, counts: Iterable[int], total: float, *, merged: bool) -> Metric:
        """The family as prometheus_client exposes a histogram: ``_bucket`` (cumulative),
        ``_count``, ``_sum`` unless a bound is negative, ``_created``; or, ``merged`` from
        several workers, as its multiprocess collector does: ``_sum`` first, no ``_created``."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=())
        cumulative = np.cumsum(np.fromiter(counts, dtype=np.int64)).tolist()
        if merged:
            family.add_sample(self.name + "_sum", {}, total)
        family.add_metric([], [(le, float(n)) for le, n in zip(self.le, cumulative, strict=True)],
                          sum_value=None)
        family.add_sample(self.name + "_count", {}, float(cumulative[-1]))
        if not merged:
            if self.bounds[0] >= 0:
                family.add_sample(self.name + "_sum", {}, total)
            if _CREATED:
                family.add_sample(self.name + "_created", {}, self.created)
        return family


class _LabelledCounter:
    """A counter with one label, by label value (in the order the values first came)."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.counts: dict[str, int] = {}
        self.created: dict[str, float] = {}

    def add(self, value: str, count: int) -> None:
        if value not in self.counts:
            self.child(value)
        self.counts[value] += count

    def child(self, value: str) -> None:
        """Start the series for ``value`` at 0 (exposed from then on)."""
        if value not in self.counts:
            self.counts[value] = 0
            self.created[value] = time.time()

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)

    def family(self, counts: dict[str, int], *, merged: bool) -> Metric:
        """The family as prometheus_client exposes a labelled counter (``_total`` and
        ``_created`` per value; no ``_created`` when ``merged`` from several workers)."""
        family = CounterMetricFamily(self.name, self.documentation, labels=(self.label,))
        for value, count in counts.items():
            created = self.created.get(value) if _CREATED and not merged else None
            family.add_metric([value], float(count), created=created)
        return family


class _Sum:
    """A counter without labels, of a count or of a sum of figures (exposed as a float)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0.0
        self.created = time.time()

    def reset(self) -> None:
        self.value = 0.0

    def family(self, value: float, *, merged: bool) -> Metric:
        """The family as prometheus_client exposes a counter without labels (``_total``, and
        ``_created`` unless ``merged``)."""
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], float(value),
                          created=self.created if _CREATED and not merged else None)
        return family


REQUESTS = _LabelledCounter(names.REQUESTS, "Scoring requests by HTTP status code",
                            names.CODE_LABEL)
# Exposed at 0 from the start: a series that first appears at its first scrape with the
# requests already counted never increases in `rate()`, and a service whose first requests fit
# between two scrapes would have no traffic, and its SLIs 0 / 0. The same for the 5xx the
# server answers (a model that fails, unready, a prediction past its deadline): else the first
# errors of a service are lost to its error ratio, its canary check and its burn-rate alerts.
for _code in ("200", *SERVER_ERROR_CODES):
    REQUESTS.child(_code)
LATENCY = _Histogram(names.REQUEST_DURATION, "Time to answer /invocations", _LATENCY_BUCKETS)
BATCH = _Histogram(names.BATCH_ROWS, "Rows per scoring request", _ROW_BUCKETS)
CLASSES = _LabelledCounter(names.PREDICTIONS, "Predicted classes (classification models)",
                           names.CLASS_LABEL)
VALUES = _Histogram(names.PREDICTION_VALUE, "Predicted values (regression models)",
                    _VALUE_BUCKETS)
_HISTOGRAMS = (LATENCY, BATCH, VALUES)
FEEDBACK = _LabelledCounter(names.FEEDBACK, "Delayed labels received on /feedback, one per "
                            "predicted row, by whether their prediction was found",
                            names.OUTCOME_LABEL)
FEEDBACK.child(names.MATCHED)
FEEDBACK.child(names.UNMATCHED)
CORRECT = _Sum(names.FEEDBACK_CORRECT, "Matched labels equal to the predicted class "
               "(classification)")
ABSOLUTE_ERROR = _Sum(names.FEEDBACK_ABSOLUTE_ERROR, "Sum of |label - prediction| over "
                      "matched labels (regression)")
SQUARED_ERROR = _Sum(names.FEEDBACK_SQUARED_ERROR, "Sum of (label - prediction)^2 over "
                     "matched labels (regression)")
_SUMS = (CORRECT, ABSOLUTE_ERROR, SQUARED_ERROR)
# Guards the counts: the event loop counts, a scrape (or a test) may read from another thread.
_lock = threading.Lock()


class _Counts(Collector):
    """This process's counters and histograms, with the pending observations counted first."""

    def describe(self) -> list[Metric]:
        empty = {"requests": {}, "classes": {}, "feedback": {},
                 "histograms": {h.name: [[0] * h.bounds.size, 0.0] for h in _HISTOGRAMS},
                 "sums": {s.name: 0.0 for s in _SUMS}}
        return _families(empty, merged=False)

    def collect(self) -> Iterator[Metric]:
        flush()
        with _lock:
            return iter(_families(_snapshot(), merged=False))


class _Workers(Collector):
    """Every worker's counters and histograms, summed: this worker's own counts and the other
    workers' files."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        own = _worker_file(self._directory)
        with _lock:
            total = _snapshot()
        for path in sorted(glob.glob(os.path.join(self._directory, _WORKER_FILES + "*.json"))):
            other = _read_worker_file(path) if path != own else None
            if other is None:
                continue
            for counter in ("requests", "classes", "feedback"):
                # .get: a file written before a counter existed (an older worker) has none.
                for value, count in other.get(counter, {}).items():
                    total[counter][value] = total[counter].get(value, 0) + count
            for name, value in other.get("sums", {}).items():
                total["sums"][name] = total["sums"].get(name, 0.0) + value
            for name, (counts, histogram_sum) in other["histograms"].items():
                mine = total["histograms"][name]
                mine[0] = [a + b for a, b in zip(mine[0], counts, strict=True)]
                mine[1] += histogram_sum
        return iter(_families(total, merged=True))


def _snapshot() -> dict[str, Any]:
    """The counts, as plain values (what a worker's file holds)."""
    return {"requests": dict(REQUESTS.counts), "classes": dict(CLASSES.counts),
            "feedback": dict(FEEDBACK.counts),
            "histograms": {h.name: [h.counts.tolist(), h.sum] for h in _HISTOGRAMS},
            "sums": {s.name: s.value for s in _SUMS}}


def _families(counts: dict[str, Any], *, merged: bool) -> list[Metric]:
    """The exposed families, in the order prometheus_client's metric objects registered in
    this order would come; counters without series are left out when ``merged``, as the
    multiprocess collector leaves them out."""
    histograms = counts["histograms"]
    families = [REQUESTS.family(counts["requests"], merged=merged),
                LATENCY.family(*histograms[LATENCY.name], merged=merged),
                BATCH.family(*histograms[BATCH.name], merged=merged),
                CLASSES.family(counts["classes"], merged=merged),
                VALUES.family(*histograms[VALUES.name], merged=merged),
                FEEDBACK.family(counts["feedback"], merged=merged),
                *(s.family(counts["sums"].get(s.name, 0.0), merged=merged) for s in _SUMS)]
    return [f for f in families if f.samples or not merged]


def _worker_file(directory: str) -> str:
    return os.path.join(directory, f"{_WORKER_FILES}{os.getpid()}.json")


# This worker's file, open while it lives: (pid, descriptor, bytes written).
_shared: tuple[int, int, int] | None = None


def _share() -> None:
    """Write this worker's counts where the other workers' scrapes read them (with several
    workers). Called with the lock held.

    The file is written in place under an exclusive `flock` (a scrape reads it under a shared
    one), and padded to the longest text written so far: creating a file and renaming it over
    the last one on every flush cost 0.4 to 2 ms on ext4, rewriting it 10 to 20 µs.
    """
    global _shared
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    pid = os.getpid()
    if _shared is None or _shared[0] != pid:
        _shared = pid, os.open(_worker_file(directory), os.O_RDWR | os.O_CREAT, 0o600), 0
    _, fd, size = _shared
    text = orjson.dumps(_snapshot())
    text = text.ljust(size)  # JSON may end in blanks: no truncating, no stale tail
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.pwrite(fd, text, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    _shared = pid, fd, len(text)


def _read_worker_file(path: str) -> dict[str, Any] | None:
    """Another worker's counts (None when it has not written any yet)."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            text = f.read()
    except FileNotFoundError:  # the directory is being removed
        return None
    if not text.strip():
        return None
    counts: dict[str, Any] = orjson.loads(text)
    return counts


REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(_Counts())
DRIFT = Gauge(names.FEATURE_DRIFT,
              "Drift of an input feature: PSI (numeric) or Jensen-Shannon distance (categorical)",
              [names.FEATURE_LABEL, names.STATISTIC_LABEL], registry=REGISTRY,
              multiprocess_mode="mostrecent")
INFO = Gauge(names.MODEL_INFO, "The model being served (value 1)", list(names.MODEL_INFO_LABELS),
             registry=REGISTRY, multiprocess_mode="max")


class _DriftSeries(Collector):
    """The drift monitor's per-bin totals and the profile's shares of the same bins.

    The totals live in the monitor (shared memory across workers), so one worker's scrape
    reports every worker's rows once. Series: two per bin of every profile feature.
    """

    def __init__(self) -> None:
        self.monitor: DriftMonitor | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        if monitor is None:
            return iter(())
        labels = (names.FEATURE_LABEL, names.BIN_LABEL, names.STATISTIC_LABEL)
        observed = CounterMetricFamily(
            names.DRIFT_OBSERVATIONS,
            "Input values seen per bin of the training profile (missing values not counted)",
            labels=labels)
        reference = GaugeMetricFamily(
            names.DRIFT_REFERENCE, "Training data's share of each bin of the profile",
            labels=labels)
        numeric = set(monitor.numeric_features)
        references = monitor.references()
        for feature, counts in monitor.totals().items():
            statistic = names.PSI if feature in numeric else names.JS_DISTANCE
            bins = [str(i) for i in range(len(counts))]
            if feature not in numeric:
                bins[-1] = names.OTHER_BIN
            for label, count, share in zip(bins, counts.tolist(), references[feature].tolist(),
                                           strict=True):
                observed.add_metric([feature, label, statistic], count)
                reference.add_metric([feature, label, statistic], share)
        return iter((observed, reference))


DRIFT_SERIES = _DriftSeries()
REGISTRY.register(DRIFT_SERIES)


class _Loaded(Collector):
    """`names.MODEL_LOADED`: 1 once the model is published (`model_info`). A constant of the
    process, not counted: with several workers it is exposed once, not summed."""

    def __init__(self) -> None:
        self.loaded = False

    def collect(self) -> Iterator[Metric]:
        return iter((model_loaded_family(1 if self.loaded else 0),))


LOADED = _Loaded()
REGISTRY.register(LOADED)


def model_info(info: ModelInfo) -> None:
    """Publish which model is served (and that it is loaded)."""
    INFO.labels(info.name or "", info.version or "", info.alias or "", info.uri).set(1)
    LOADED.loaded = True


_max_class_labels = 50
# Class ids up to this bound are counted with one bincount instead of a sort (np.unique).
_BINCOUNT_MAX = 4096
# Up to this many predictions, classes are counted in Python.
_SMALL_BATCH = 16


def limit_class_labels(max_labels: int, known: Iterable[Any] = ()) -> None:
    """Bound the ``class`` label to ``max_labels`` values, taking ``known`` classes (a
    classifier's ``classes_``) first; further values count under `OTHER_CLASS`."""
    global _max_class_labels
    with _lock:
        _max_class_labels = max_labels
        for cls in list(known)[:max_labels]:
            CLASSES.child(_class_label(str(cls)))
        _share()


# Observations not counted yet (appended on the event loop, counted by `flush`).
_pending_requests: list[tuple[int, int, float]] = []
_pending_predictions: list[np.ndarray[Any, Any]] = []
_pending_rows = 0
_flush_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def _forget_the_parents_counts() -> None:
    """In a forked worker: a new lock, and, with several workers, none of the parent's counts
    (they are the parent's to expose), as prometheus_client's multiprocess values start
    again in a new process."""
    global _lock, _pending_requests, _pending_predictions, _pending_rows, _shared
    _lock = threading.Lock()
    if _shared is not None:  # the parent's file, and its lock, are the parent's
        with contextlib.suppress(OSError):
            os.close(_shared[1])
        _shared = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _pending_requests, _pending_predictions, _pending_rows = [], [], 0
        for metric in (REQUESTS, CLASSES, FEEDBACK, *_HISTOGRAMS, *_SUMS):
            metric.reset()


os.register_at_fork(after_in_child=_forget_the_parents_counts)


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
    with _lock:
        if _flush_timer is not None:
            _flush_timer[1].cancel()
            _flush_timer = None
        requests, predictions = _pending_requests, _pending_predictions
        _pending_requests, _pending_predictions, _pending_rows = [], [], 0
        if not requests and not predictions:
            return
        if requests:
            statuses, rows, seconds = zip(*requests, strict=True)
            for status, count in _Counter(statuses).items():
                REQUESTS.add(str(status), count)
            LATENCY.observe(np.array(seconds))
            answered = np.array(rows)[np.array(statuses) == 200]
            if answered.size:
                BATCH.observe(answered)
        by_dtype: dict[np.dtype[Any], list[np.ndarray[Any, Any]]] = {}
        for values in predictions:
            by_dtype.setdefault(values.dtype, []).append(values)
        for arrays in by_dtype.values():
            _observe_values(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
        _share()


def predicts_classes(values: np.ndarray[Any, Any]) -> bool | None:
    """Whether ``values`` (a model's 1-D output) are classes (counted by ``class`` in
    ``mlops_predictions_total``; integers, booleans, text) or values (floats, in the
    ``mlops_prediction_value`` histogram); None for an output that is neither (complex numbers,
    dates), which is not counted. The feedback's accuracy or error follows this decision, and
    it is the drift profile's (`~pulumi_mlops.runtime.drift.prediction.dtype_kind`)."""
    kind = dtype_kind(values.dtype)
    return None if kind is None else kind == "categorical"


def _observe_values(values: np.ndarray[Any, Any]) -> None:
    classes = predicts_classes(values)
    if classes is None:
        return
    if not classes:
        finite = values[np.isfinite(values)]
        if finite.size:
            VALUES.observe(finite)
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
    labels, counts = np.unique(values.astype(str), return_counts=True)  # booleans, text
    _count(zip(labels.tolist(), counts.tolist(), strict=True))


def _count(tally: Iterable[tuple[Any, int]]) -> None:
    for cls, count in tally:
        CLASSES.add(_class_label(str(cls)), count)


def _class_label(cls: str) -> str:
    """``cls``, or `OTHER_CLASS` once the label has ``_max_class_labels`` other values."""
    if cls in CLASSES.counts or len(CLASSES.counts) < _max_class_labels:
        return cls
    return OTHER_CLASS


def observe_feedback(matched: int, unmatched: int, correct: int = 0,
                     absolute_error: float = 0.0, squared_error: float = 0.0) -> None:
    """Count one ``/feedback`` request's labels: ``matched`` and ``unmatched`` rows, the
    matched labels equal to their predicted class (``correct``), and the sums of the matched
    values' absolute and squared errors.

    Counted at once, not batched: feedback comes far less often than predictions, and its
    figures should reach the next scrape of every worker.
    """
    with _lock:
        FEEDBACK.add(names.MATCHED, matched)
        FEEDBACK.add(names.UNMATCHED, unmatched)
        CORRECT.value += correct
        ABSOLUTE_ERROR.value += absolute_error
        SQUARED_ERROR.value += squared_error
        _share()


def publish_drift(monitor: DriftMonitor) -> None:
    """Set the drift gauges from the monitor's current window, and export its per-bin totals
    (called at scrape time)."""
    DRIFT_SERIES.monitor = monitor
    numeric = set(monitor.numeric_features)
    for feature, value in monitor.scores().items():
        DRIFT.labels(feature, names.PSI if feature in numeric else names.JS_DISTANCE).set(value)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type (all worker processes when there are several)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        flush()  # this worker's own; the others' follow within FLUSH_SECONDS
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_Workers(directory))
        registry.register(DRIFT_SERIES)
        registry.register(LOADED)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
