"""Building the training-data reference profile: what the retrain job logs at
`~pulumi_mlops.runtime.drift.spec.PROFILE_ARTIFACT_PATH` on the model's run (format:
`~pulumi_mlops.runtime.drift.spec`). Pure."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pulumi_mlops.runtime.drift.prediction import (
    PREDICTION_FEATURE,
    prediction_kind,
    prediction_values,
)
from pulumi_mlops.runtime.drift.spec import PROFILE_FORMAT

__all__ = ["MAX_CATEGORIES", "build_profile"]

MAX_CATEGORIES = 50
"""The most frequent training categories a categorical feature (or a classifier's prediction)
keeps, each a bin of its own with two exported series per replica; the rest share the
``other`` bin with unseen categories. Bounds the series a high-cardinality column makes."""


def build_profile(frame: pd.DataFrame, bins: int = 10, *, predictions: Any = None
                  ) -> dict[str, Any]:
    """Describe the training frame's feature distributions, and optionally the model's
    predictions, as a profile JSON object.

    Numeric columns (ints, floats, nullable Int/Float) get ``bins`` quantile bins (fewer when
    ties make quantiles coincide); bool, object, category and string columns get category
    frequencies. Missing values are ignored.

    Args:
        frame: The training features, one column per model input.
        bins: Number of quantile bins for numeric columns (and numeric predictions).
            Default: 10 (deciles).
        predictions: The model's predictions on reference rows, profiled under
            `PREDICTION_FEATURE` as the model server will monitor them: float values as a
            numeric feature, classes (bool, integer, string) as a categorical one
            (`~pulumi_mlops.runtime.drift.prediction.prediction_kind`). Left out of the
            profile when they are not one value or class per row (a 2-D output) or of no
            profile kind, as the server then monitors no prediction either. Default: no
            prediction in the profile.

    Returns:
        The profile, ready for ``json.dumps`` (see `~pulumi_mlops.runtime.drift.spec` for the
        format).

    Raises:
        ValueError: ``bins`` is below 1, two columns have the same name, a column is named
            `PREDICTION_FEATURE` (reserved for the predictions), or a column has a dtype with
            no profile kind (datetime, timedelta, complex...).
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be an integer >= 1 (got {bins!r}).")
    names = [str(c) for c in frame.columns]
    if PREDICTION_FEATURE in names:
        raise ValueError(
            f"column `{PREDICTION_FEATURE}` has the name the drift profile reserves for the "
            "model's predictions; rename the column (in the dataset, or in the trainer's "
            "frame) before building the profile."
        )
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
    if predictions is not None:
        reference = _prediction_reference(predictions, bins)
        if reference is not None:
            features[PREDICTION_FEATURE] = reference
    return {"format": PROFILE_FORMAT, "rows": len(frame), "features": features}


def _prediction_reference(predictions: Any, bins: int) -> dict[str, Any] | None:
    values = prediction_values(predictions)
    kind = None if values is None else prediction_kind(values)
    if values is None or kind is None:
        return None
    if kind == "numeric":
        return _numeric_reference(values.astype(np.float64), bins)
    return _categorical_reference(pd.Series(values, dtype=object))


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
    kept, rest = ordered[:MAX_CATEGORIES], ordered[MAX_CATEGORIES:]
    reference: dict[str, Any] = {"kind": "categorical",
                                 "frequencies": {k: c / total for k, c in kept}}
    if rest:
        reference["other"] = sum(c for _, c in rest) / total
    return reference
