"""How `~pulumi_mlops.runtime.drift.monitor.DriftMonitor.observe_columns` reads a DataFrame:
all its values in one `pandas.DataFrame.to_numpy` call, instead of a Series per feature.

The frame MLflow's scoring server decodes a request into holds every column in a block of its
own (it casts them one by one), and pandas' first read of a frame walks its blocks in Python,
working out (and caching on the frame) what a second read would find ready. On a 2-CPU
machine under load, the one `to_numpy` call of a 1-row frame of 20 such numeric columns costs
some 30 µs, about 1.5 µs a column, and 20 to 30 µs more for each column of pyarrow-backed
text, which becomes objects value by value; a Series per column costs some 8 to 10 µs each.
No public way of reading or snapshotting the frame costs less (a shallow copy walks the
blocks too), so this is the floor of the DataFrame path, above the 10 µs per row the request
path aims at for 1-row requests of 20 columns: the server reads a JSON request's features from
its decoded document instead (`pulumi_mlops.runtime.serve.drift_input`), and comes here only
where that cannot stand for the frame.

The layout of a frame's columns (`FrameLayout`), worked out once per set of column labels,
says which columns are which features, and whether one call is cheaper than a Series per
feature. The array is a copy, so the caller changing the frame afterwards does not change what
was counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["FrameLayout", "frame_layout", "read_frame"]

# Rough costs in µs of a 1-row frame just decoded, to choose between one `to_numpy` call and a
# Series per feature: a numpy column in `to_numpy`, a column of another dtype there (text as
# pyarrow holds it, nullable numbers, categories: converted value by value), and a Series.
_NUMPY_COLUMN_COST: Final = 1.0
_OTHER_COLUMN_COST: Final = 20.0
_SERIES_COST: Final = 8.0
_NUMBER_KINDS: Final = "biuf"


@dataclass(frozen=True)
class FrameLayout:
    """Where the profile's input features are among the columns of frames with ``columns``.

    Attributes:
        columns: The column labels this layout is for.
        flat: Whether the labels are unique and of one level, so that a feature is one column
            or none (else the per-feature path reads the frame, and reports a feature that is
            several columns).
        present: How many input features are among them (flat labels).
        bulk: Whether to read the frame in one `to_numpy` call: flat labels, and cheaper than a
            Series per feature present (the columns that are not features are what it costs
            more: the features' values are converted either way).
        objects: Whether categorical features are present: the frame is then read as objects,
            each value keeping its type (a category is compared as ``str(value)``).
        numbers: Whether every column held numbers (bool, integer or float dtypes, nullable
            ones too): the frame is then read as floats, no value becoming an object.
        numeric_positions: The column of each numeric input feature present.
        numeric_features: Its index among the numeric input features.
        leading: Whether the numeric input features are the first columns, all of them and in
            order (their rows need no gathering).
        categorical_positions: The column of each categorical input feature, or None when
            absent.
    """

    columns: pd.Index
    flat: bool
    present: int
    bulk: bool
    objects: bool
    numbers: bool
    numeric_positions: npt.NDArray[np.intp]
    numeric_features: npt.NDArray[np.intp]
    leading: bool
    categorical_positions: tuple[int | None, ...]


def frame_layout(frame: pd.DataFrame, numeric_inputs: tuple[str, ...],
                 categorical_inputs: tuple[str, ...]) -> FrameLayout:
    """The layout of ``frame``'s columns for a profile with these input features."""
    columns = frame.columns
    labels = columns.tolist()
    position: dict[Any, int] = {}
    for i, label in enumerate(labels):
        position.setdefault(label, i)
    numeric = [(position[n], i) for i, n in enumerate(numeric_inputs) if n in position]
    categorical = tuple(position.get(n) for n in categorical_inputs)
    present = len(numeric) + sum(p is not None for p in categorical)
    flat = not isinstance(columns, pd.MultiIndex) and len(position) == len(labels)
    features = set(numeric_inputs + categorical_inputs)
    dtypes = frame.dtypes.tolist()
    extra = sum(_NUMPY_COLUMN_COST if isinstance(d, np.dtype) else _OTHER_COLUMN_COST
                for label, d in zip(labels, dtypes, strict=True) if label not in features)
    bulk = flat and present > 0 and extra <= _SERIES_COST * present
    positions = np.array([p for p, _ in numeric], dtype=np.intp)
    return FrameLayout(
        columns=columns, flat=flat, present=present, bulk=bulk,
        objects=any(p is not None for p in categorical),
        numbers=all(getattr(d, "kind", "O") in _NUMBER_KINDS for d in dtypes),
        numeric_positions=positions,
        numeric_features=np.array([i for _, i in numeric], dtype=np.intp),
        leading=positions.tolist() == list(range(len(numeric_inputs))),
        categorical_positions=categorical,
    )


def read_frame(frame: pd.DataFrame, layout: FrameLayout, n_numeric: int
               ) -> tuple[npt.NDArray[Any], tuple[Any, ...] | None] | None:
    """``frame``'s rows of the numeric input features (NaN where absent), and its categorical
    input features (per feature: 1-D objects, or None when absent; None for all when none is
    present), read in one `to_numpy` call into arrays of their own.

    Returns:
        None when the frame holds values this cannot read as the per-feature path would
        (numeric features holding something else than numbers, dtypes such as datetimes): the
        caller reads it feature by feature, which converts them or raises its error.
    """
    values = None
    if layout.numbers and not layout.objects:
        values = _to_numpy(frame, np.float64)
    if values is None:  # or a column does not hold numbers any more
        values = _to_numpy(frame, object)
        if values is None:
            return None
    try:
        if layout.leading:
            x = _as_float(values[:, :n_numeric])
        else:
            x = np.full((values.shape[0], n_numeric), np.nan)
            if layout.numeric_positions.size:
                x[:, layout.numeric_features] = _as_float(values[:, layout.numeric_positions])
    except (TypeError, ValueError):
        return None
    if not layout.objects:
        return x, None
    categorical = tuple(None if p is None else values[:, p] for p in layout.categorical_positions)
    return x, categorical


def _to_numpy(frame: pd.DataFrame, dtype: Any) -> npt.NDArray[Any] | None:
    """``frame`` as one array of ``dtype`` of its own (a view of the frame's data would change
    with the frame), or None when a value does not convert."""
    try:
        values: npt.NDArray[Any] = frame.to_numpy(dtype=dtype, copy=True)
    except (TypeError, ValueError):
        return None
    return values


def _as_float(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``values`` (of the frame's array) as numbers, NaN for None, NaN and pandas NA: the
    per-feature path's conversion, ``Series.to_numpy(dtype=float, na_value=nan)``, value by
    value. Changes ``values`` in place.

    Raises:
        TypeError, ValueError: a value is not a number, or the dtype is neither numbers nor
            objects.
    """
    kind = values.dtype.kind
    if kind in _NUMBER_KINDS:
        return values
    if kind != "O":
        raise TypeError(f"not numbers: {values.dtype}")
    missing = pd.isna(values)
    if missing.any():
        values[missing] = np.nan
    return values.astype(np.float64)
