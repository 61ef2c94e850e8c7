"""The drift monitor of the model server: the most recent input rows scored against the
training profile (statistics: `~pulumi_mlops.runtime.drift.spec`). It holds the state: the
pending rows of the request path, the window (in shared memory across worker processes), and
the locks; the binning and scoring it delegates to a pure `Binning`."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from pulumi_mlops.runtime.drift._binning import (
    Binning,
    ColumnsBatch,
    MatrixBatch,
    numeric_column,
)
from pulumi_mlops.runtime.drift._frames import FrameLayout, frame_layout, read_frame
from pulumi_mlops.runtime.drift.prediction import PREDICTION_FEATURE, prediction_values
from pulumi_mlops.runtime.drift.spec import NumericFeature, Profile

__all__ = ["DriftMonitor"]

# Large enough to amortize a flush's fixed cost, small enough that the request that triggers one
# waits well under a millisecond.
_DEFAULT_FLUSH_ROWS: Final = 1024

_Pending: TypeAlias = MatrixBatch | ColumnsBatch


class DriftMonitor:
    """Per-feature drift of the most recent input rows, and of the model's predictions of
    them, against a training profile.

    When the profile has a prediction (`PREDICTION_FEATURE`), it is one more feature of each
    row: the callers pass a batch's predictions with its rows (``predictions`` of
    `observe_matrix` and `observe_columns`), and it is binned, counted and scored like the
    input features. Predictions that are not one value or class per row of the batch count as
    missing.

    The request path only appends the batch to a pending buffer (`observe_columns` first
    stacks its numeric columns into one array, or reads a DataFrame in one call); binning and
    counting happen vectorized, for all features at once, when `scores`, `window_rows` or
    `window_counts` is called (the server calls `scores` at scrape time) or when the pending
    rows reach ``flush_rows`` or ``window``, whichever is fewer, so the pending buffer holds at
    most that many rows plus one batch.
    Every row is binned: the per-bin `totals` count all the traffic, and the window keeps the
    newest ``window`` rows. A ring buffer keeps each window row's bin per feature, so evicting
    the oldest rows decrements the counts exactly. All methods are thread-safe.

    Cost (20 numeric features, 10 bins, see ``benchmarks/drift_overhead.py``): about 1 µs per
    row for 1-row `observe_matrix` requests (up to 2 µs with their predictions, 2.5 µs with 5
    categorical features), binning amortized in (a request that triggers a flush waits under a
    millisecond); about 5 µs per row for 1-row `observe_columns` requests of 20 arrays by name.
    A 1-row DataFrame as MLflow's scoring server decodes a request costs 35 to 65 µs (20
    numeric columns; 80 to 125 µs with 5 of them text), most of it pandas' own first read of a
    frame, one block per column (see `~pulumi_mlops.runtime.drift._frames`; the server reads
    the request's JSON instead where it can), and under 1 µs per row in 100-row frames (2 µs
    with text). `scores` takes tens of µs, under a millisecond with a full pending buffer.

    Args:
        profile: The training-data reference profile.
        window: Number of most recent rows the scores describe. Default: 1000.
        flush_rows: Pending rows that trigger binning in the request path (``window`` rows do
            too). Default: 1024.

    Raises:
        ValueError: ``window`` or ``flush_rows`` is below 1.
    """

    def __init__(
        self, profile: Profile, window: int = 1000, *, flush_rows: int = _DEFAULT_FLUSH_ROWS
    ) -> None:
        for label, value in (("window", window), ("flush_rows", flush_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{label}` must be an integer >= 1 (got {value!r}).")
        self._profile = profile
        self._window = window
        self._flush_rows = flush_rows
        self._numeric = profile.numeric_features
        self._categorical = profile.categorical_features
        self._numeric_inputs = profile.numeric_inputs
        self._categorical_inputs = profile.categorical_inputs
        self._n_numeric = len(self._numeric_inputs)
        # How predictions are kept: None (no prediction in the profile), True (numeric: a 1-D
        # numeric array), False (categorical: any 1-D array).
        self._numeric_prediction: bool | None = (
            None if profile.prediction is None
            else isinstance(profile.prediction, NumericFeature))
        self._binning = Binning(profile)
        self._n_slots = self._binning.n_slots

        self._lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_rows = 0
        self._pending_batches = 0  # how many pending items are observe_columns batches
        # The window: ring, counts and (next ring row to write, valid ring rows ending just
        # before it). `share_across_processes` moves them to shared memory.
        self._ring = np.zeros((window, self._binning.n_features), dtype=np.int32)
        self._counts = np.zeros(self._n_slots, dtype=np.int64)
        self._cursor = np.zeros(2, dtype=np.int64)
        # Every binned row ever, per slot: the monotonic counters Prometheus sums across
        # replicas (`totals`).
        self._totals = np.zeros(self._n_slots, dtype=np.int64)
        self._window_lock: AbstractContextManager[Any] = contextlib.nullcontext()
        # Where the features are in the last DataFrame's columns (the server's frames share
        # their labels from request to request).
        self._frame_layout: FrameLayout | None = None

    def share_across_processes(self, flush_rows: int | None = None) -> None:
        """Keep the window in shared memory, for worker processes forked after this call.

        Every worker observes its own requests, and binned rows land in one window that all
        of them update under a process-shared lock, so any worker's `scores` describe the most
        recent rows of all workers. A worker's rows join the window when it flushes: when
        ``flush_rows`` rows are pending, or when it calls `flush` (the server does every
        second, so a scrape misses at most about a second of another worker's rows). Call it
        before forking.

        Args:
            flush_rows: Pending rows that trigger binning. Default: unchanged.
        """
        import mmap
        import multiprocessing

        ring_bytes = -(-self._ring.nbytes // 8) * 8  # keep the counts 8-byte aligned
        counts_bytes = self._counts.nbytes
        buffer = mmap.mmap(-1, ring_bytes + 2 * counts_bytes + self._cursor.nbytes)
        ring = np.frombuffer(buffer, np.int32, self._ring.size).reshape(self._ring.shape)
        counts = np.frombuffer(buffer, np.int64, self._n_slots, ring_bytes)
        totals = np.frombuffer(buffer, np.int64, self._n_slots, ring_bytes + counts_bytes)
        cursor = np.frombuffer(buffer, np.int64, 2, ring_bytes + 2 * counts_bytes)
        with self._lock:
            ring[:], counts[:], totals[:], cursor[:] = (self._ring, self._counts, self._totals,
                                                         self._cursor)
            self._ring, self._counts, self._totals, self._cursor = ring, counts, totals, cursor
            self._window_lock = multiprocessing.get_context("fork").Lock()
            if flush_rows is not None:
                self._flush_rows = flush_rows

    def flush(self) -> None:
        """Bin the pending rows into the window now (a worker's periodic flush)."""
        with self._lock:
            self._flush()

    @property
    def profile(self) -> Profile:
        """The reference profile."""
        return self._profile

    @property
    def window(self) -> int:
        """Number of most recent rows the scores describe."""
        return self._window

    @property
    def flush_rows(self) -> int:
        """Pending rows that trigger binning in the request path."""
        return self._flush_rows

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Numeric features in profile order, `PREDICTION_FEATURE` included when the
        prediction is numeric (the features scored with PSI)."""
        return self._numeric

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Categorical features in profile order, `PREDICTION_FEATURE` included when the
        prediction is categorical (the features scored with the Jensen-Shannon distance)."""
        return self._categorical

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        """Numeric input features in profile order: the column order `observe_matrix`
        expects."""
        return self._numeric_inputs

    @property
    def categorical_inputs(self) -> tuple[str, ...]:
        """Categorical input features in profile order."""
        return self._categorical_inputs

    @property
    def monitors_predictions(self) -> bool:
        """Whether the profile has the model's predictions, so that observing them counts."""
        return self._numeric_prediction is not None

    # ----------------------------------------------------------------- request path

    def observe_matrix(self, x: npt.NDArray[Any], predictions: Any = None, *,
                       categorical: tuple[npt.NDArray[Any] | None, ...] | None = None) -> None:
        """Record a batch of rows of the numeric input features (the fast path, and the
        decoded JSON of the general path), with the model's predictions of them.

        Only references to ``x``, ``predictions`` and ``categorical`` are kept until the next
        flush, so the caller must not modify them afterwards.

        Args:
            x: Array of shape ``(rows, len(numeric_inputs))``, columns in `numeric_inputs`
                order, of a bool, integer or float dtype; NaN marks a missing value.
            predictions: The model's output for these rows; counted when the profile has a
                prediction and it is one value or class per row. Default: none (the
                prediction counts as missing).
            categorical: The rows' categorical input features, in `categorical_inputs` order:
                a 1-D array of ``rows`` values each (compared as ``str(value)``; None, NaN and
                pandas NA are missing), or None for an absent feature. Default: all absent
                (missing).

        Raises:
            ValueError: ``x`` has the wrong shape, or ``categorical`` the wrong length.
            TypeError: ``x`` is not a numeric array.
        """
        if x.ndim != 2 or x.shape[1] != self._n_numeric:
            raise ValueError(
                f"drift: observe_matrix expects shape (rows, {self._n_numeric}) with columns "
                f"{list(self._numeric_inputs)}; got {x.shape}."
            )
        if x.dtype.kind not in "biuf":
            raise TypeError(f"drift: observe_matrix expects a numeric array; got dtype {x.dtype}.")
        if categorical is not None:
            # A loop, not `any()`/`all()` generators: this runs on every request.
            shape, given, fits = (x.shape[0],), False, True
            for column in categorical:
                if column is not None:
                    given = True
                    fits = fits and column.shape == shape
            if not fits or len(categorical) != len(self._categorical_inputs):
                raise ValueError(
                    f"drift: observe_matrix expects `categorical` of {x.shape[0]} rows for each "
                    f"of {list(self._categorical_inputs)} (None where absent).")
            if not given:
                categorical = None
        self._enqueue_rows(x, categorical, predictions)

    def observe_columns(self, columns: Mapping[str, Any] | pd.DataFrame,
                        predictions: Any = None) -> None:
        """Record a batch of rows given column by column (mixed numeric and categorical data),
        with the model's predictions of them.

        Profile features absent from ``columns`` count as missing for these rows; columns that
        are not in the profile (`PREDICTION_FEATURE` among them: an input column of that name
        is not the prediction) are ignored, and a batch with none of the profile's input
        features and no counted predictions is ignored altogether. Categorical values are
        compared with the profile as ``str(value)``. The numeric columns are copied here, into one
        array (one step when they are all 1-D numeric arrays of the same length); the
        categorical ones are only referenced until the next flush, so the caller must not
        modify them afterwards. A DataFrame is read in one `pandas.DataFrame.to_numpy` call,
        into an array of its own, when that costs less than a Series per feature (the columns
        MLflow's scoring server decodes), so the caller may change the frame afterwards; else
        feature by feature, as a mapping, its Series unchanged by the frame's changes under
        pandas' copy-on-write. Either way a frame counts and fails the same. For numeric-only
        data, `observe_matrix` is several times cheaper.

        Args:
            columns: Feature name to a 1-D sequence of values (a DataFrame works too); all the
                profile's features present must have the same length. Empty, to record
                predictions only (input features missing).
            predictions: The model's output for these rows; counted when the profile has a
                prediction and it is one value or class per row. Default: none.

        Raises:
            ValueError: Columns of different lengths, or a numeric feature whose values are not
                numbers.
        """
        if isinstance(columns, pd.DataFrame):
            layout = self._layout(columns)
            if layout.bulk:
                read = read_frame(columns, layout, self._n_numeric)
                if read is not None:  # else feature by feature, below
                    self._enqueue_rows(*read, predictions)
                    return
            elif layout.flat and not layout.present:
                columns = {}  # as below, without looking each feature up
        numeric: list[Any] = [columns.get(n) for n in self._numeric_inputs]
        categorical = [columns.get(n) for n in self._categorical_inputs]
        stacked = _stacked(numeric)
        if stacked is None:
            for i, values in enumerate(numeric):
                if values is not None and not (
                    type(values) is np.ndarray and values.ndim == 1
                    and values.dtype.kind in "biuf"
                ):
                    numeric[i] = numeric_column(self._numeric_inputs[i], values)
            lengths = [len(v) for v in numeric if v is not None]
        else:
            lengths = [stacked.shape[1]]
        lengths += [len(v) for v in categorical if v is not None]
        if lengths and lengths.count(lengths[0]) != len(lengths):
            given = {
                n: len(v)
                for n, v in zip(
                    self._numeric_inputs + self._categorical_inputs, numeric + categorical,
                    strict=True,
                )
                if v is not None
            }
            raise ValueError(f"drift: observe_columns needs columns of equal length; got {given}.")
        predicted = None
        if self._numeric_prediction is not None and predictions is not None:
            predicted = self._predictions(predictions, lengths[0] if lengths else None)
            if predicted is not None and not lengths:
                lengths = [len(predicted)]
        if not lengths or lengths[0] == 0:
            return
        rows = lengths[0]
        if stacked is None:
            stacked = np.full((self._n_numeric, rows), np.nan)  # absent: missing
            for i, values in enumerate(numeric):
                if values is not None:
                    stacked[i] = values
        self._enqueue(ColumnsBatch(stacked.T, predicted, tuple(categorical)), rows)

    # ----------------------------------------------------------------- scrape path

    def scores(self) -> dict[str, float]:
        """Drift score of every feature over the current window, in profile order.

        Returns:
            Feature name to PSI (numeric) or Jensen-Shannon distance (categorical); NaN for a
            feature with no value in the window yet.
        """
        return self._binning.scores(self._window_counts())

    def window_rows(self) -> int:
        """Number of rows currently in the window (at most ``window``)."""
        with self._lock:
            self._flush()
        with self._window_lock:
            return int(self._cursor[1])

    def totals(self) -> dict[str, npt.NDArray[np.int64]]:
        """Every feature's non-missing values binned since the start, per bucket (laid out as
        `window_counts`), across all workers once `share_across_processes` was called.

        Monotonic: summed across replicas and differenced over a time range they give the
        distribution of all the traffic in that range (every observed row is binned).
        """
        with self._lock:
            self._flush()
        with self._window_lock:
            totals = self._totals.copy()
        return {name: self._binning.feature_counts(totals, name)
                for name in self._profile.features}

    def references(self) -> dict[str, npt.NDArray[np.float64]]:
        """Every feature's training share per bucket, laid out as `totals`."""
        return self._binning.references()

    def window_counts(self, feature: str) -> npt.NDArray[np.int64]:
        """Non-missing values of a feature in the window, per bucket.

        Args:
            feature: A feature of the profile.

        Returns:
            Numeric: counts per profile bin (``len(edges) + 1`` entries). Categorical: counts per
            training category in profile order, then the "other" bucket.

        Raises:
            KeyError: ``feature`` is not in the profile.
        """
        return self._binning.feature_counts(self._window_counts(), feature)

    # ----------------------------------------------------------------- internals

    def _predictions(self, predictions: Any, rows: int | None) -> npt.NDArray[Any] | None:
        """``predictions`` as the binning takes them (1-D, numeric for a numeric prediction),
        or None when they are not one value per row or not numbers for a numeric prediction
        (then the prediction of these rows counts as missing, and the request is not failed
        for it)."""
        values = prediction_values(predictions)
        if values is None or (rows is not None and values.shape[0] != rows):
            return None
        if self._numeric_prediction and values.dtype.kind not in "biuf":
            try:
                values = numeric_column(PREDICTION_FEATURE, values)
            except ValueError:
                return None
        return values

    def _layout(self, frame: pd.DataFrame) -> FrameLayout:
        """Where the input features are among ``frame``'s columns: the last frame's layout when
        it has the same labels (an equality test of some 2 µs for 20 labels), else a new one."""
        layout = self._frame_layout
        labels = frame.columns
        if layout is None or not (labels is layout.columns or labels.equals(layout.columns)):
            layout = frame_layout(frame, self._numeric_inputs, self._categorical_inputs)
            self._frame_layout = layout  # one reference replaced: safe across threads
        return layout

    def _enqueue_rows(self, x: npt.NDArray[Any], categorical: tuple[Any, ...] | None,
                      predictions: Any) -> None:
        """Enqueue rows: ``x`` their numeric inputs (NaN where absent), ``categorical`` their
        categorical inputs (None for all when none is present)."""
        rows = x.shape[0]
        if rows == 0:
            return
        predicted = None
        if self._numeric_prediction is not None and predictions is not None:
            predicted = self._predictions(predictions, rows)
        if categorical is None:
            self._enqueue((x, predicted), rows)
        else:
            self._enqueue(ColumnsBatch(x, predicted, categorical), rows)

    def _window_counts(self) -> npt.NDArray[np.int64]:
        with self._lock:
            self._flush()
        with self._window_lock:
            return self._counts.copy()

    def _enqueue(self, item: _Pending, rows: int) -> None:
        with self._lock:
            pending = self._pending
            pending.append(item)
            self._pending_rows += rows
            if isinstance(item, ColumnsBatch):
                self._pending_batches += 1
            # Every row is binned (the per-bin totals count all the traffic), at the latest once
            # `window` rows are pending, so the pending rows stay under `window` plus one batch.
            if self._pending_rows >= min(self._flush_rows, self._window):
                self._flush()

    # The methods below run with self._lock held.

    def _flush(self) -> None:
        pending = list(self._pending)
        if not pending:
            return
        self._pending.clear()
        self._pending_rows = 0
        columns = self._pending_batches > 0
        self._pending_batches = 0
        # Every pending row is binned: the totals count them all, the window keeps the last.
        binning = self._binning
        self._apply(binning.batch_slots(pending) if columns else binning.matrix_slots(pending))

    def _apply(self, slots: npt.NDArray[np.int32]) -> None:
        with self._window_lock:
            rows, window = slots.shape[0], self._window
            head, filled = int(self._cursor[0]), int(self._cursor[1])
            binned = np.bincount(slots.ravel(), minlength=self._n_slots)
            self._totals += binned
            if rows >= window:
                self._ring[:] = slots[rows - window :]
                self._counts[:] = np.bincount(self._ring.ravel(), minlength=self._n_slots)
                self._cursor[:] = (0, window)
                return
            positions = (head + np.arange(rows)) % window
            empty = window - filled
            if rows > empty:
                # The ring fills from its start, so after the empty rows come the oldest ones.
                evicted = self._ring[positions[empty:]]
                self._counts -= np.bincount(evicted.ravel(), minlength=self._n_slots)
            self._ring[positions] = slots
            self._counts += binned
            self._cursor[:] = ((head + rows) % window, min(window, filled + rows))


def _stacked(numeric: list[Any]) -> npt.NDArray[Any] | None:
    """The values of the numeric input features, features along rows, when each is a 1-D
    numeric array and all have the same length: the common case, stacked and checked in one
    step (numpy makes a 2-D array of numbers of them only then). None otherwise."""
    if not numeric or set(map(type, numeric)) != {np.ndarray}:
        return None
    try:
        stacked = np.array(numeric)
    except (TypeError, ValueError):  # lengths that differ, dtypes with no common one
        return None
    return stacked if stacked.ndim == 2 and stacked.dtype.kind in "biuf" else None
