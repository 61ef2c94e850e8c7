"""Building the training-data reference profile: what the retrain job logs at
`~pulumi_mlops.runtime.drift.spec.PROFILE_ARTIFACT_PATH` on the model's run (format:
`~pulumi_mlops.runtime.drift.spec`). Pure."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pulumi_mlops.runtime.drift.spec import PROFILE_FORMAT

__all__ = ["build_profile"]


def build_profile(frame: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """Describe the training frame's feature distributions as a profile JSON object.

    Numeric columns (ints, floats, nullable Int/Float) get ``bins`` quantile bins (fewer when
    ties make quantiles coincide); bool, object, category and string columns get category
    frequencies. Missing values are ignored.

    Args:
        frame: The training features, one column per model input.
        bins: Number of quantile bins for numeric columns. Default: 10 (deciles).

    Returns:
        The profile, ready for ``json.dumps`` (see `~pulumi_mlops.runtime.drift.spec` for the
        format).

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
