"""The drift tests' reference: counts per bucket recounted row by row and value by value, as
the profile's format defines them, not as the monitor computes them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pulumi_mlops.runtime.drift.spec import CategoricalFeature, NumericFeature, Profile


def missing(value: Any) -> bool:
    """Whether a value counts as missing: None, NaN or pandas NA."""
    return value is None or value is pd.NA or (
        isinstance(value, float | np.floating) and math.isnan(value))


def recount(profile: Profile, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Every feature's counts per bucket of ``rows`` (feature name to value, None where
    absent), laid out as `DriftMonitor.totals` and `window_counts` are."""
    counts: dict[str, list[int]] = {}
    for name, reference in profile.features.items():
        present = [r[name] for r in rows if not missing(r[name])]
        if isinstance(reference, NumericFeature):
            buckets = [int(np.searchsorted(reference.edges, float(v), side="left"))
                       for v in present]
            counts[name] = [buckets.count(i) for i in range(len(reference.proportions))]
        else:
            assert isinstance(reference, CategoricalFeature)
            known = list(reference.frequencies)
            keys = [str(v) for v in present]
            counts[name] = [keys.count(k) for k in known] + [sum(k not in known for k in keys)]
    return counts
