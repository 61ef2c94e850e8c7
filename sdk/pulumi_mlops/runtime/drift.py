"""Training-data reference profile and the online drift statistics the model server exports.

The retrain job builds a profile of the training frame with `build_profile` and logs it as JSON
on the model's run at `PROFILE_ARTIFACT_PATH`; the model server reads it with `load_profile`,
feeds every request's inputs to a `DriftMonitor` and exports `DriftMonitor.scores()` at scrape
time. The profile format is a public contract between the two.

Profile format ``mlops-drift-profile/v1``
-----------------------------------------
A JSON object with exactly these keys::

    {"format": "mlops-drift-profile/v1",
     "rows": <int>,
     "features": {
       "<numeric column>": {"kind": "numeric",
                            "edges": [e1, ..., ek],
                            "proportions": [p0, ..., pk]},
       "<categorical column>": {"kind": "categorical",
                                "frequencies": {"<category>": p, ...}}
     }}

- ``rows``: the number of rows of the training frame (an integer >= 0, NaNs included).
- ``features``: one entry per input column, in the model's column order; that order is the
  "profile order" used everywhere below (e.g. the column order `DriftMonitor.observe_matrix`
  expects for the numeric features).
- numeric: ``edges`` are the interior bin edges, finite and strictly increasing (quantiles of the
  training values with duplicates from ties removed; possibly empty). They define ``k + 1`` bins
  closed on the right::

      bin 0 = (-inf, e1], bin i = (e_i, e_{i+1}], bin k = (ek, +inf)

  i.e. the bin of ``x`` is the number of edges strictly below ``x``, which is
  ``numpy.searchsorted(edges, x, side="left")``. ``-inf``/``+inf`` fall in the first/last bin.
  ``proportions`` has exactly ``len(edges) + 1`` finite, non-negative entries, the share of the
  non-NaN training values in each bin, summing to 1 within 1e-6.
- categorical: ``frequencies`` maps each category observed in training, as a string (``str(value)``:
  ``True`` is ``"True"``, ``1`` is ``"1"``) to its share of the non-missing training values;
  finite, non-negative, summing to 1 within 1e-6.
- A column with no values at all in training (all NaN/None) is still described: numeric as
  ``"edges": [], "proportions": [1.0]``; categorical as ``"frequencies": {}`` (the one exception to
  the sum rule). Such a feature carries no information and always scores 0 once values arrive.
  A constant numeric column ``c`` gives ``"edges": [c], "proportions": [1.0, 0.0]``, so any value
  above ``c`` at serving time shows up as drift.

No other keys are allowed at any level; a change to the format gets a new ``format`` tag.

Drift statistics
----------------
`DriftMonitor` keeps the most recent ``window`` input rows and scores each feature against the
profile:

- numeric: population stability index, ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)`` over the
  profile's bins, where ``p`` is the profile's proportions and ``q`` the window's. Both are smoothed
  as ``(x + eps) / (1 + n_bins * eps)`` with ``eps = PSI_EPSILON = 1e-4`` so that an empty bin
  gives a large but finite score rather than infinity. Customary reading: < 0.1 stable,
  0.1 to 0.25 moderate shift, > 0.25 significant shift.
- categorical: Jensen-Shannon distance (square root of the JS divergence, base-2 logarithms), in
  [0, 1]: 0 for identical distributions, 1 for disjoint ones. Categories not seen in training go
  to one extra "other" bucket, whose training share is 0.
- Missing values (NaN, None, pandas NA) are excluded from a feature's counts; the row still takes
  its place in the window for the other features. A feature with no value in the window scores
  NaN (the key is always present, so the set of exported series is stable).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "PROFILE_ARTIFACT_PATH",
    "PROFILE_FORMAT",
    "PSI_EPSILON",
    "CategoricalFeature",
    "DriftMonitor",
    "FeatureReference",
    "NumericFeature",
    "Profile",
    "ProfileError",
    "build_profile",
    "load_profile",
]

PROFILE_FORMAT: Final = "mlops-drift-profile/v1"
"""The ``format`` tag of the profile JSON this module writes and reads."""

PROFILE_ARTIFACT_PATH: Final = "drift/profile.json"
"""Where the retrain job logs the profile on the model's run (an MLflow artifact path)."""

PSI_EPSILON: Final = 1e-4
"""Additive smoothing of bin proportions in the PSI, so that empty bins give finite scores."""

_SUM_TOLERANCE: Final = 1e-6
# Large enough to amortize a flush's fixed cost, small enough that the request that triggers one
# waits well under a millisecond.
_DEFAULT_FLUSH_ROWS: Final = 1024
# Bounds the (features x rows) temporaries of the vectorized binning.
_BINNING_CELLS: Final = 1 << 20


class ProfileError(ValueError):
    """A drift profile that does not follow the ``mlops-drift-profile/v1`` format.

    Attributes:
        feature: The offending feature, or None when the problem is at the top level.
        rule: The rule that was broken.
    """

    def __init__(self, feature: str | None, rule: str, value: Any) -> None:
        self.feature = feature
        self.rule = rule
        where = "drift profile" if feature is None else f"drift profile: feature `{feature}`"
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(
            f"{where}: {rule} (got {shown}). Fix: rebuild the profile with "
            f"pulumi_mlops.runtime.drift.build_profile() from the training frame."
        )


@dataclass(frozen=True)
class NumericFeature:
    """Reference distribution of a numeric feature.

    Attributes:
        edges: Interior bin edges, strictly increasing; bins are closed on the right.
        proportions: Share of the training values in each of the ``len(edges) + 1`` bins.
    """

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """This feature's entry in the profile JSON."""
        return {"kind": "numeric", "edges": list(self.edges), "proportions": list(self.proportions)}


@dataclass(frozen=True)
class CategoricalFeature:
    """Reference distribution of a categorical feature.

    Attributes:
        frequencies: Share of each training category (as a string); empty when the column had no
            values in training.
    """

    frequencies: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """This feature's entry in the profile JSON."""
        return {"kind": "categorical", "frequencies": dict(self.frequencies)}


FeatureReference: TypeAlias = NumericFeature | CategoricalFeature
"""The reference distribution of one feature."""


@dataclass(frozen=True)
class Profile:
    """A validated training-data reference profile (see the module docstring for the format).

    Attributes:
        rows: Number of rows of the training frame.
        features: Reference distribution per feature, in profile order.
    """

    rows: int
    features: Mapping[str, FeatureReference]

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Names of the numeric features, in profile order."""
        return tuple(n for n, f in self.features.items() if isinstance(f, NumericFeature))

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Names of the categorical features, in profile order."""
        return tuple(n for n, f in self.features.items() if isinstance(f, CategoricalFeature))

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-ready object; `load_profile` of it gives back an equal profile."""
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "features": {n: f.to_dict() for n, f in self.features.items()},
        }


# --------------------------------------------------------------------------- building


def build_profile(frame: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """Describe the training frame's feature distributions as a profile JSON object.

    Numeric columns (ints, floats, nullable Int/Float) get ``bins`` quantile bins (fewer when
    ties make quantiles coincide); bool, object, category and string columns get category
    frequencies. Missing values are ignored.

    Args:
        frame: The training features, one column per model input.
        bins: Number of quantile bins for numeric columns. Default: 10 (deciles).

    Returns:
        The profile, ready for ``json.dumps`` (see the module docstring for the format).

    Raises:
        ValueError: ``bins`` is below 1, two columns have the same name, or a column has a
            dtype with no profile kind (datetime, timedelta, complex...).
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be an integer >= 1 (got {bins!r}).")
    names = [str(c) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(
            f"column names must be unique as strings; duplicated: {duplicated}. "
            "Rename the columns before building the profile."
        )
    features: dict[str, Any] = {}
    for name, (_, series) in zip(names, frame.items(), strict=True):
        dtype = series.dtype
        if (
            pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_object_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(dtype)
        ):
            features[name] = _categorical_reference(series)
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            features[name] = _numeric_reference(values, bins)
        else:
            raise ValueError(
                f"column `{name}` has dtype {dtype}, which has no drift profile kind. "
                "Drop it or convert it to a numeric or string column."
            )
    return {"format": PROFILE_FORMAT, "rows": len(frame), "features": features}


def _numeric_reference(values: npt.NDArray[np.float64], bins: int) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    finite = present[np.isfinite(present)]
    if finite.size == 0 or bins == 1:
        edges = np.empty(0, dtype=np.float64)
    else:
        edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins))
    if present.size == 0:
        proportions = np.ones(1, dtype=np.float64)
    else:
        index = np.searchsorted(edges, present, side="left")
        proportions = np.bincount(index, minlength=edges.size + 1) / present.size
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "proportions": [float(p) for p in proportions],
    }


def _categorical_reference(series: pd.Series[Any]) -> dict[str, Any]:
    present = series.dropna()
    counts: dict[str, int] = {}
    for value, count in present.value_counts(sort=False).items():
        if count > 0:  # a category dtype also lists its unused categories
            key = str(value)
            counts[key] = counts.get(key, 0) + int(count)
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"kind": "categorical", "frequencies": {k: c / total for k, c in ordered}}


# --------------------------------------------------------------------------- loading


def load_profile(data: Mapping[str, Any] | str | bytes) -> Profile:
    """Parse and strictly validate a profile.

    Args:
        data: The profile as a decoded JSON object, or its JSON text.

    Returns:
        The validated profile.

    Raises:
        ProfileError: The data is not valid JSON or breaks a rule of the format; the message
            names the feature and the rule.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(None, f"must be valid JSON ({exc})", data) from None
    if not isinstance(data, Mapping):
        raise ProfileError(None, "must be a JSON object", data)
    _check_keys(None, data, {"format", "rows", "features"})
    if data["format"] != PROFILE_FORMAT:
        raise ProfileError(None, f"`format` must be {PROFILE_FORMAT!r}", data["format"])
    rows = data["rows"]
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ProfileError(None, "`rows` must be an integer >= 0", rows)
    raw_features = data["features"]
    if not isinstance(raw_features, Mapping):
        raise ProfileError(None, "`features` must be an object", raw_features)
    features: dict[str, FeatureReference] = {}
    for name, spec in raw_features.items():
        if not isinstance(name, str):
            raise ProfileError(None, "feature names must be strings", name)
        features[name] = _load_feature(name, spec)
    return Profile(rows=rows, features=MappingProxyType(features))


def _check_keys(feature: str | None, obj: Mapping[str, Any], expected: set[str]) -> None:
    missing = sorted(expected - set(obj))
    if missing:
        raise ProfileError(feature, f"missing key(s) {missing}", sorted(obj))
    extra = sorted(str(k) for k in set(obj) - expected)
    if extra:
        raise ProfileError(feature, f"unknown key(s) {extra}; allowed: {sorted(expected)}", extra)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _load_feature(name: str, spec: Any) -> FeatureReference:
    if not isinstance(spec, Mapping):
        raise ProfileError(name, "must be an object", spec)
    kind = spec.get("kind")
    if kind == "numeric":
        _check_keys(name, spec, {"kind", "edges", "proportions"})
        edges, proportions = spec["edges"], spec["proportions"]
        if not isinstance(edges, Sequence) or isinstance(edges, str | bytes):
            raise ProfileError(name, "`edges` must be a list", edges)
        if not all(_is_number(e) for e in edges):
            raise ProfileError(name, "`edges` must be finite numbers", edges)
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ProfileError(name, "`edges` must be strictly increasing", edges)
        if not isinstance(proportions, Sequence) or isinstance(proportions, str | bytes):
            raise ProfileError(name, "`proportions` must be a list", proportions)
        if len(proportions) != len(edges) + 1:
            raise ProfileError(
                name,
                f"`proportions` must have len(edges) + 1 = {len(edges) + 1} entries",
                proportions,
            )
        _check_shares(name, "proportions", proportions, allow_empty=False)
        return NumericFeature(
            edges=tuple(float(e) for e in edges),
            proportions=tuple(float(p) for p in proportions),
        )
    if kind == "categorical":
        _check_keys(name, spec, {"kind", "frequencies"})
        frequencies = spec["frequencies"]
        if not isinstance(frequencies, Mapping):
            raise ProfileError(name, "`frequencies` must be an object", frequencies)
        if not all(isinstance(k, str) for k in frequencies):
            raise ProfileError(name, "`frequencies` keys must be strings", list(frequencies))
        _check_shares(name, "frequencies", list(frequencies.values()), allow_empty=True)
        return CategoricalFeature(
            frequencies=MappingProxyType({k: float(v) for k, v in frequencies.items()})
        )
    raise ProfileError(name, "`kind` must be 'numeric' or 'categorical'", kind)


def _check_shares(name: str, key: str, shares: Sequence[Any], *, allow_empty: bool) -> None:
    if not all(_is_number(s) for s in shares):
        raise ProfileError(name, f"`{key}` must be finite numbers", shares)
    if any(s < 0 for s in shares):
        raise ProfileError(name, f"`{key}` must be non-negative", shares)
    if allow_empty and not shares:
        return
    total = math.fsum(shares)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ProfileError(name, f"`{key}` must sum to 1 (within {_SUM_TOLERANCE})", total)


# --------------------------------------------------------------------------- monitoring


@dataclass(frozen=True)
class _ColumnsBatch:
    """A pending `observe_columns` batch, converted only when flushed."""

    rows: int
    numeric: list[npt.NDArray[Any] | None]  # per numeric feature: 1-D numeric array, or absent
    categorical: list[Any]  # per categorical feature: 1-D array-like, or None if absent
    complete: bool  # every numeric feature present

    def tail(self, skip: int) -> _ColumnsBatch:
        return _ColumnsBatch(
            rows=self.rows - skip,
            numeric=[None if c is None else c[skip:] for c in self.numeric],
            categorical=[None if c is None else _as_objects(c)[skip:] for c in self.categorical],
            complete=self.complete,
        )


_Pending: TypeAlias = npt.NDArray[Any] | _ColumnsBatch


def _rows_of(item: _Pending) -> int:
    return item.shape[0] if isinstance(item, np.ndarray) else item.rows


class DriftMonitor:
    """Per-feature drift of the most recent input rows against a training profile.

    The request path only appends a reference to the batch to a pending buffer; binning and
    counting happen vectorized, for all features at once, when `scores`, `window_rows` or
    `window_counts` is called (the server calls `scores` at scrape time) or when the pending
    rows reach ``flush_rows``. Pending rows older than the newest ``window`` are dropped
    unbinned (they would leave the window in the flush that bins them), so binning costs per
    window of rows rather than per row served, and the pending buffer holds at most ``window``
    rows plus one batch. A ring buffer keeps each window row's bin per feature, so evicting
    the oldest rows decrements the counts exactly. All methods are thread-safe.

    Cost (20 numeric features, 10 bins, see ``benchmarks/drift_overhead.py``): about 1 µs per
    row for 1-row `observe_matrix` requests, binning amortized in (a request that triggers a
    flush waits under a millisecond); 10 to 15 µs per row for 1-row `observe_columns` requests
    with 20 columns; `scores` takes tens of µs, under a millisecond with a full pending buffer.

    Args:
        profile: The training-data reference profile.
        window: Number of most recent rows the scores describe. Default: 1000.
        flush_rows: Pending rows that trigger binning in the request path (with the default,
            above the default window, binning happens at scrape time). Default: 1024.

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
        self._n_numeric = len(self._numeric)

        # Every (feature, bucket) pair, plus one "missing" slot per feature, gets a slot in one
        # flat count vector, so one bincount updates every feature. The last slot stays 0 and
        # pads the numeric gather below.
        slot = 0
        num_offsets, num_missing, num_bins = [], [], []
        for name in self._numeric:
            ref = profile.features[name]
            assert isinstance(ref, NumericFeature)
            num_offsets.append(slot)
            num_bins.append(len(ref.proportions))
            num_missing.append(slot + len(ref.proportions))
            slot += len(ref.proportions) + 1
        self._cat_index: list[dict[str, int]] = []
        self._cat_slices: list[slice] = []  # training categories then "other"
        self._cat_missing: list[int] = []
        self._cat_reference: list[npt.NDArray[np.float64]] = []
        for name in self._categorical:
            ref = profile.features[name]
            assert isinstance(ref, CategoricalFeature)
            n = len(ref.frequencies)
            self._cat_index.append({c: slot + i for i, c in enumerate(ref.frequencies)})
            self._cat_slices.append(slice(slot, slot + n + 1))
            self._cat_missing.append(slot + n + 1)
            reference = np.zeros(n + 1)
            reference[:n] = list(ref.frequencies.values())
            if n == 0:  # no training values: every observed value is "other", as in training
                reference[n] = 1.0
            self._cat_reference.append(reference)
            slot += n + 2
        self._zero_slot = slot
        self._n_slots = slot + 1

        max_edges = max((b - 1 for b in num_bins), default=0)
        # Edges padded with +inf: counting the edges below x gives the right-closed bin index,
        # i.e. searchsorted(edges, x, side="left"), and the padding is never below x.
        self._edges = np.full((self._n_numeric, max_edges), np.inf)
        self._num_reference = np.zeros((self._n_numeric, max_edges + 1))
        self._num_gather = np.full((self._n_numeric, max_edges + 1), self._zero_slot, np.intp)
        for i, name in enumerate(self._numeric):
            ref = profile.features[name]
            assert isinstance(ref, NumericFeature)
            self._edges[i, : len(ref.edges)] = ref.edges
            self._num_reference[i, : num_bins[i]] = ref.proportions
            self._num_gather[i, : num_bins[i]] = np.arange(num_offsets[i], num_missing[i])
        self._num_offsets = np.asarray(num_offsets, dtype=np.int32)
        self._num_missing = np.asarray(num_missing, dtype=np.int32)
        self._num_bins = np.asarray(num_bins, dtype=np.float64)
        self._cat_missing_row = np.asarray(self._cat_missing, dtype=np.int32)

        n_features = self._n_numeric + len(self._categorical)
        self._lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_rows = 0
        self._pending_batches = 0  # how many pending items are observe_columns batches
        # The window: ring, counts and (next ring row to write, valid ring rows ending just
        # before it). `share_across_processes` moves them to shared memory.
        self._ring = np.zeros((window, n_features), dtype=np.int32)
        self._counts = np.zeros(self._n_slots, dtype=np.int64)
        self._cursor = np.zeros(2, dtype=np.int64)
        self._window_lock: AbstractContextManager[Any] = contextlib.nullcontext()

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
        buffer = mmap.mmap(-1, ring_bytes + self._counts.nbytes + self._cursor.nbytes)
        ring = np.frombuffer(buffer, np.int32, self._ring.size).reshape(self._ring.shape)
        counts = np.frombuffer(buffer, np.int64, self._n_slots, ring_bytes)
        cursor = np.frombuffer(buffer, np.int64, 2, ring_bytes + self._counts.nbytes)
        with self._lock:
            ring[:], counts[:], cursor[:] = self._ring, self._counts, self._cursor
            self._ring, self._counts, self._cursor = ring, counts, cursor
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
        """Numeric features in profile order: the column order `observe_matrix` expects."""
        return self._numeric

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Categorical features in profile order."""
        return self._categorical

    # ----------------------------------------------------------------- request path

    def observe_matrix(self, x: npt.NDArray[Any]) -> None:
        """Record a batch of rows of the numeric features (the fast path).

        Only a reference to ``x`` is kept until the next flush, so the caller must not modify
        it afterwards. Rows recorded this way count as missing for categorical features.

        Args:
            x: Array of shape ``(rows, len(numeric_features))``, columns in `numeric_features`
                order, of a bool, integer or float dtype; NaN marks a missing value.

        Raises:
            ValueError: ``x`` has the wrong shape.
            TypeError: ``x`` is not a numeric array.
        """
        if x.ndim != 2 or x.shape[1] != self._n_numeric:
            raise ValueError(
                f"drift: observe_matrix expects shape (rows, {self._n_numeric}) with columns "
                f"{list(self._numeric)}; got {x.shape}."
            )
        if x.dtype.kind not in "biuf":
            raise TypeError(f"drift: observe_matrix expects a numeric array; got dtype {x.dtype}.")
        rows = x.shape[0]
        if rows == 0:
            return
        self._enqueue(x, rows)

    def observe_columns(self, columns: Mapping[str, Any] | pd.DataFrame) -> None:
        """Record a batch of rows given column by column (mixed numeric and categorical data).

        Profile features absent from ``columns`` count as missing for these rows; columns that
        are not in the profile are ignored, and a batch with none of the profile's features is
        ignored altogether. Categorical values are compared with the profile as ``str(value)``.
        Numeric columns that are not 1-D numeric arrays are converted here; the rest is only
        referenced until the next flush, so the caller must not modify the columns afterwards.
        For numeric-only data, `observe_matrix` is about ten times cheaper.

        Args:
            columns: Feature name to a 1-D sequence of values (a DataFrame works too); all the
                profile's features present must have the same length.

        Raises:
            ValueError: Columns of different lengths, or a numeric feature whose values are not
                numbers.
        """
        numeric: list[npt.NDArray[Any] | None] = [columns.get(n) for n in self._numeric]
        for i, values in enumerate(numeric):
            if values is not None and not (
                type(values) is np.ndarray and values.ndim == 1 and values.dtype.kind in "biuf"
            ):
                numeric[i] = _numeric_column(self._numeric[i], values)
        categorical = [columns.get(n) for n in self._categorical]
        lengths = [len(v) for v in numeric if v is not None]
        complete = len(lengths) == self._n_numeric
        lengths += [len(v) for v in categorical if v is not None]
        if not lengths:
            return
        rows = lengths[0]
        if lengths.count(rows) != len(lengths):
            given = {
                n: len(v)
                for n, v in zip(
                    self._numeric + self._categorical, numeric + categorical, strict=True
                )
                if v is not None
            }
            raise ValueError(f"drift: observe_columns needs columns of equal length; got {given}.")
        if rows == 0:
            return
        self._enqueue(_ColumnsBatch(rows, numeric, categorical, complete), rows)

    # ----------------------------------------------------------------- scrape path

    def scores(self) -> dict[str, float]:
        """Drift score of every feature over the current window, in profile order.

        Returns:
            Feature name to PSI (numeric) or Jensen-Shannon distance (categorical); NaN for a
            feature with no value in the window yet.
        """
        counts = self._window_counts()
        result: dict[str, float] = {}
        if self._n_numeric:
            observed = counts[self._num_gather].astype(np.float64)
            totals = observed.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                q = observed / totals[:, None]
            norm = (1.0 + self._num_bins * PSI_EPSILON)[:, None]
            p_s = (self._num_reference + PSI_EPSILON) / norm
            q_s = (q + PSI_EPSILON) / norm
            # Padding bins have p = q = 0, so they add exactly 0.
            psi = ((q_s - p_s) * np.log(q_s / p_s)).sum(axis=1)
            psi[totals == 0] = np.nan
            for name, value in zip(self._numeric, psi.tolist(), strict=True):
                result[name] = value
        for j, name in enumerate(self._categorical):
            observed = counts[self._cat_slices[j]].astype(np.float64)
            total = observed.sum()
            result[name] = (
                math.nan if total == 0 else _js_distance(self._cat_reference[j], observed / total)
            )
        return {name: result[name] for name in self._profile.features}

    def window_rows(self) -> int:
        """Number of rows currently in the window (at most ``window``)."""
        with self._lock:
            self._flush()
        with self._window_lock:
            return int(self._cursor[1])

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
        counts = self._window_counts()
        selected: npt.NDArray[np.int64]
        if feature in self._numeric:
            i = self._numeric.index(feature)
            selected = counts[self._num_gather[i, : int(self._num_bins[i])]]
            return selected
        if feature in self._categorical:
            selected = counts[self._cat_slices[self._categorical.index(feature)]]
            return selected
        raise KeyError(f"drift: `{feature}` is not a feature of the profile.")

    # ----------------------------------------------------------------- internals

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
            if not isinstance(item, np.ndarray):
                self._pending_batches += 1
            # Rows older than the newest `window` would leave the window in the very flush that
            # bins them: they are dropped unbinned, so that binning costs per window, not per
            # row served, and the pending rows stay under `window` plus one batch.
            while self._pending_rows - _rows_of(pending[0]) >= self._window:
                oldest = pending.popleft()
                self._pending_rows -= _rows_of(oldest)
                if not isinstance(oldest, np.ndarray):
                    self._pending_batches -= 1
            if self._pending_rows >= self._flush_rows:
                self._flush()

    # The methods below run with self._lock held.

    def _flush(self) -> None:
        pending = list(self._pending)
        if not pending:
            return
        self._pending.clear()
        self._pending_rows = 0
        only_matrices = self._pending_batches == 0
        self._pending_batches = 0
        # Only the rows that end up in the window are binned.
        start, covered = len(pending), 0
        while start > 0 and covered < self._window:
            start -= 1
            item = pending[start]
            covered += _rows_of(item)
        tail = pending[start:]
        skip = covered - self._window
        if skip > 0:
            first = tail[0]
            tail[0] = first[skip:] if isinstance(first, np.ndarray) else first.tail(skip)
        if only_matrices:
            self._apply(self._matrix_slots(cast("list[npt.NDArray[Any]]", tail)))
            return
        # Bin runs of consecutive items of the same kind together, keeping arrival order.
        blocks: list[npt.NDArray[np.int32]] = []
        matrices: list[npt.NDArray[Any]] = []
        batches: list[_ColumnsBatch] = []
        for item in tail:
            if isinstance(item, np.ndarray):
                if batches:
                    blocks.append(self._batch_slots(batches))
                    batches = []
                matrices.append(item)
            else:
                if matrices:
                    blocks.append(self._matrix_slots(matrices))
                    matrices = []
                batches.append(item)
        if matrices:
            blocks.append(self._matrix_slots(matrices))
        if batches:
            blocks.append(self._batch_slots(batches))
        self._apply(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))

    def _numeric_slots(self, x: npt.NDArray[np.float64], out: npt.NDArray[np.int32]) -> None:
        """Write the slots of the numeric features of rows ``x`` into ``out[:, :n_numeric]``."""
        n_numeric, n_edges = self._edges.shape
        if n_numeric == 0:
            return
        step = max(1, _BINNING_CELLS // n_numeric)
        for lo in range(0, x.shape[0], step):
            # Features along rows, so that each comparison runs over a contiguous row of values
            # against one edge per feature; counting the edges below x gives the right-closed bin.
            values = np.ascontiguousarray(x[lo : lo + step].T)
            above = np.empty(values.shape, dtype=np.bool_)
            bins: npt.NDArray[np.integer[Any]]
            if n_edges < 256:
                bins = np.zeros(values.shape, dtype=np.uint8)
                above_u8 = above.view(np.uint8)
                for k in range(n_edges):
                    np.greater(values, self._edges[:, k : k + 1], out=above)
                    np.add(bins, above_u8, out=bins)
            else:
                bins = np.zeros(values.shape, dtype=np.int32)
                for k in range(n_edges):
                    np.greater(values, self._edges[:, k : k + 1], out=above)
                    bins += above
            slots = np.where(
                np.isnan(values), self._num_missing[:, None], self._num_offsets[:, None] + bins
            )
            out[lo : lo + step, :n_numeric] = slots.T

    def _matrix_slots(self, matrices: list[npt.NDArray[Any]]) -> npt.NDArray[np.int32]:
        x = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        x = x.astype(np.float64, copy=False)
        out = np.empty((x.shape[0], self._ring.shape[1]), dtype=np.int32)
        self._numeric_slots(x, out)
        out[:, self._n_numeric :] = self._cat_missing_row
        return out

    def _batch_slots(self, batches: list[_ColumnsBatch]) -> npt.NDArray[np.int32]:
        rows = sum(b.rows for b in batches)
        complete = all(b.complete for b in batches)
        x = np.empty((rows, self._n_numeric))
        for i, parts in enumerate(zip(*(b.numeric for b in batches), strict=True)):
            if not complete:
                if all(p is None for p in parts):
                    x[:, i] = np.nan
                    continue
                parts = tuple(
                    np.full(b.rows, np.nan) if p is None else p
                    for p, b in zip(parts, batches, strict=True)
                )
            x[:, i] = np.concatenate(parts)
        out = np.empty((rows, self._ring.shape[1]), dtype=np.int32)
        self._numeric_slots(x, out)
        for j, parts in enumerate(zip(*(b.categorical for b in batches), strict=True)):
            column = out[:, self._n_numeric + j]
            column[:] = self._cat_missing[j]
            if all(p is None for p in parts):
                continue
            objects = np.concatenate(
                [
                    np.full(b.rows, None, dtype=object) if p is None else _as_objects(p)
                    for p, b in zip(parts, batches, strict=True)
                ]
            )
            keep = ~pd.isna(objects)
            other = self._cat_slices[j].stop - 1
            index = self._cat_index[j]
            column[keep] = [index.get(str(v), other) for v in objects[keep]]
        return out

    def _apply(self, slots: npt.NDArray[np.int32]) -> None:
        with self._window_lock:
            rows, window = slots.shape[0], self._window
            head, filled = int(self._cursor[0]), int(self._cursor[1])
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
            self._counts += np.bincount(slots.ravel(), minlength=self._n_slots)
            self._cursor[:] = ((head + rows) % window, min(window, filled + rows))


def _numeric_column(name: str, values: Any) -> npt.NDArray[np.float64]:
    try:
        converted = _as_float(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"drift: feature `{name}` must be numeric ({exc}).") from None
    if converted.ndim != 1:
        raise ValueError(f"drift: feature `{name}` must be 1-D; got shape {converted.shape}.")
    return converted


def _as_float(values: Any) -> npt.NDArray[np.float64]:
    converted: npt.NDArray[np.float64]
    if isinstance(values, pd.Series | pd.api.extensions.ExtensionArray):
        converted = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        converted = np.asarray(values, dtype=np.float64)
    return converted


def _as_objects(values: Any) -> npt.NDArray[np.object_]:
    converted: npt.NDArray[np.object_]
    if isinstance(values, pd.Series | pd.api.extensions.ExtensionArray):
        converted = values.to_numpy(dtype=object)
    else:
        converted = np.asarray(values, dtype=object)
    return converted


def _js_distance(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> float:
    m = (p + q) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    divergence = min(1.0, max(0.0, 0.5 * float(kl_p) + 0.5 * float(kl_q)))
    return math.sqrt(divergence)
