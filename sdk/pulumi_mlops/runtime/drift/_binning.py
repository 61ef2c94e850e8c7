"""How `~pulumi_mlops.runtime.drift.monitor.DriftMonitor` bins rows against a profile, and
scores the window's counts against it (the statistics are defined in
`~pulumi_mlops.runtime.drift.spec`). Pure: a `Binning` holds only what the profile fixes; the
monitor owns the window, the pending rows and the locks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from pulumi_mlops.runtime.drift.spec import (
    PREDICTION_FEATURE,
    PSI_EPSILON,
    CategoricalFeature,
    NumericFeature,
    Profile,
)

__all__ = ["Binning", "ColumnsBatch", "MatrixBatch", "numeric_column"]

# Bounds the (features x rows) temporaries of the vectorized binning.
_BINNING_CELLS: Final = 1 << 20


MatrixBatch: TypeAlias = tuple[npt.NDArray[Any], npt.NDArray[Any] | None]
"""A pending `observe_matrix` batch: the rows of the numeric inputs, and the rows' predictions
(1-D; numeric when the profile's prediction is) or None."""


class ColumnsBatch(NamedTuple):
    """A pending `observe_columns` batch: an `observe_matrix` batch (its first two fields),
    so that the numeric features of all pending batches are binned together, with the
    categorical input features, which are converted only when flushed."""

    x: npt.NDArray[Any]  # the rows of the numeric inputs (NaN where absent), as in MatrixBatch
    predictions: npt.NDArray[Any] | None  # as in MatrixBatch
    categorical: tuple[Any, ...]  # per categorical input feature: 1-D array-like, or None


class Binning:
    """A profile laid out for counting: every (feature, bucket) pair's slot in one flat count
    vector, the binning of rows into those slots, and the scores of counts over them.

    Args:
        profile: The training-data reference profile.
    """

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        # The prediction, if any, comes last among the features of its kind: the input
        # columns of a row keep their profile order, and a matrix of the numeric inputs is
        # the first columns of the numeric block.
        prediction = profile.prediction
        self._numeric_prediction = isinstance(prediction, NumericFeature)
        self._categorical_prediction = isinstance(prediction, CategoricalFeature)
        self._numeric = profile.numeric_inputs + (
            (PREDICTION_FEATURE,) if self._numeric_prediction else ())
        self._categorical = profile.categorical_inputs + (
            (PREDICTION_FEATURE,) if self._categorical_prediction else ())
        self._n_numeric = len(self._numeric)
        self._n_numeric_inputs = len(profile.numeric_inputs)
        self._n_categorical_inputs = len(profile.categorical_inputs)

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
            reference[n] = ref.other
            if n == 0 and not ref.other:  # no training values: every value is "other"
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
        self._n_features = self._n_numeric + len(self._categorical)

    @property
    def n_slots(self) -> int:
        """Length of the count vector: every feature's buckets, its "missing" slot, and one
        slot that stays 0."""
        return self._n_slots

    @property
    def n_features(self) -> int:
        """Number of features: the slots of one row (numeric features first)."""
        return self._n_features

    def scores(self, counts: npt.NDArray[np.int64]) -> dict[str, float]:
        """Drift score of every feature given the window's ``counts``, in profile order.

        Returns:
            Feature name to PSI (numeric) or Jensen-Shannon distance (categorical); NaN for a
            feature with no value in the window yet.
        """
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

    def references(self) -> dict[str, npt.NDArray[np.float64]]:
        """Every feature's training share per bucket, in profile order, laid out as
        `feature_counts` returns its counts (categorical: the training categories, then "other",
        whose share is 0 unless training saw no value at all)."""
        result: dict[str, npt.NDArray[np.float64]] = {}
        for i, name in enumerate(self._numeric):
            result[name] = self._num_reference[i, : int(self._num_bins[i])].copy()
        for j, name in enumerate(self._categorical):
            result[name] = self._cat_reference[j].copy()
        return {name: result[name] for name in self._profile.features}

    def feature_counts(self, counts: npt.NDArray[np.int64], feature: str
                       ) -> npt.NDArray[np.int64]:
        """The entries of ``counts`` that hold ``feature``'s non-missing values, per bucket.

        Raises:
            KeyError: ``feature`` is not in the profile.
        """
        selected: npt.NDArray[np.int64]
        if feature in self._numeric:
            i = self._numeric.index(feature)
            selected = counts[self._num_gather[i, : int(self._num_bins[i])]]
            return selected
        if feature in self._categorical:
            selected = counts[self._cat_slices[self._categorical.index(feature)]]
            return selected
        raise KeyError(f"drift: `{feature}` is not a feature of the profile.")

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

    def matrix_slots(self, batches: Sequence[MatrixBatch | ColumnsBatch]
                     ) -> npt.NDArray[np.int32]:
        """The slots of the rows of ``batches`` (in order), one row per input row, from their
        numeric inputs and predictions; the categorical input features count as missing, and so
        does the prediction of a batch without one."""
        x = batches[0][0] if len(batches) == 1 else np.concatenate([b[0] for b in batches])
        rows = x.shape[0]
        predictions = None
        if self._numeric_prediction or self._categorical_prediction:
            predictions = [b[1] for b in batches]
            if all(p is None for p in predictions):
                predictions = None
        out = np.empty((rows, self._n_features), dtype=np.int32)
        if self._numeric_prediction:
            full = np.empty((rows, self._n_numeric))
            full[:, : self._n_numeric_inputs] = x
            if predictions is None:
                full[:, -1] = np.nan
            else:
                full[:, -1] = _concatenate(predictions, batches, np.nan)
            self._numeric_slots(full, out)
        else:
            self._numeric_slots(x.astype(np.float64, copy=False), out)
        out[:, self._n_numeric :] = self._cat_missing_row
        if self._categorical_prediction and predictions is not None:
            j = len(self._categorical) - 1
            out[:, self._n_numeric + j] = self._category_slots(
                j, _concatenate(predictions, batches, None))
        return out

    def batch_slots(self, batches: Sequence[MatrixBatch | ColumnsBatch]
                    ) -> npt.NDArray[np.int32]:
        """The slots of the rows of ``batches`` (in order), one row per input row, as
        `matrix_slots` with the categorical input features of the `observe_columns` batches; an
        absent feature counts as missing."""
        out = self.matrix_slots(batches)
        absent = (None,) * self._n_categorical_inputs
        by_feature = zip(*(b.categorical if isinstance(b, ColumnsBatch) else absent
                           for b in batches), strict=True)
        for j, parts in enumerate(by_feature):
            if any(p is not None for p in parts):  # else counted missing already
                out[:, self._n_numeric + j] = self._category_slots(
                    j, _concatenate(list(parts), batches, None))
        return out

    def _category_slots(self, j: int, values: npt.NDArray[Any]) -> npt.NDArray[np.int32]:
        """The slots of categorical feature ``j``'s ``values`` (1-D): each training category's
        own, "other" for the rest, "missing" for NaN, None and pandas NA."""
        index = self._cat_index[j]
        other = self._cat_slices[j].stop - 1
        if values.dtype.kind in _NEVER_MISSING:
            # Each distinct value is looked up once (str of a numpy scalar is str of its
            # Python value: "1", "True", "a").
            distinct, inverse = np.unique(values, return_inverse=True)
            lookup = np.fromiter((index.get(str(v), other) for v in distinct.tolist()),
                                 dtype=np.int32, count=distinct.size)
            slots: npt.NDArray[np.int32] = lookup[inverse.reshape(-1)]
            return slots
        objects = _as_objects(values)
        keep = ~pd.isna(objects)
        slots = np.full(objects.shape[0], self._cat_missing[j], dtype=np.int32)
        slots[keep] = [index.get(str(v), other) for v in objects[keep]]
        return slots


# Dtype kinds that hold no missing value (no NaN, None or NA): bool, integers, strings, bytes.
_NEVER_MISSING: Final = "biuUS"


def _concatenate(parts: list[Any], batches: Sequence[MatrixBatch | ColumnsBatch],
                 fill: float | None) -> npt.NDArray[Any]:
    """One 1-D array of the ``parts`` of consecutive batches (a part per batch, None where
    the batch has none: ``fill`` values). Of their own dtype when they all share one, as
    objects when they do not (numpy would turn numbers and strings into strings)."""
    rows = [b[0].shape[0] for b in batches]
    if fill is not None:  # numeric: parts are 1-D numeric arrays
        filled = [np.full(n, fill) if p is None else p
                  for p, n in zip(parts, rows, strict=True)]
        return filled[0] if len(filled) == 1 else np.concatenate(filled)
    if all(type(p) is np.ndarray for p in parts):
        kinds = {p.dtype.kind for p in parts}
        # One dtype that holds no missing value, or objects (what a DataFrame's are read as).
        if len(kinds) == 1 and kinds <= set(_NEVER_MISSING + "O"):
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.concatenate([np.full(n, None, dtype=object) if p is None else _as_objects(p)
                           for p, n in zip(parts, rows, strict=True)])


def numeric_column(name: str, values: Any) -> npt.NDArray[np.float64]:
    """The values of numeric feature ``name`` as a 1-D float array (NaN where missing).

    Raises:
        ValueError: the values are not numbers, or not 1-D.
    """
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
