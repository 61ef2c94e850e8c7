"""The drift profile's format and the statistics scored against it: the public contract between
the retrain job, which writes the profile (`~pulumi_mlops.runtime.drift.profile.build_profile`),
and the model server, which reads it with `load_profile` and exports the scores of a
`~pulumi_mlops.runtime.drift.monitor.DriftMonitor`.

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
  expects for the numeric input features). Optionally one more entry, last, under the reserved
  name ``"__prediction__"`` (`PREDICTION_FEATURE`): the distribution of the model's own
  predictions (on the retrain job's holdout rows), numeric for values and categorical for
  classes (`~pulumi_mlops.runtime.drift.prediction.prediction_kind`). No input column may have
  that name (`build_profile` refuses one); a profile without the entry (every profile written
  before it existed) is valid and means no prediction drift.
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
  finite, non-negative, summing to 1 within 1e-6 with the optional ``other``: the share of the
  training categories left out of ``frequencies`` (`build_profile` keeps the
  ``MAX_CATEGORIES`` most frequent, so the exported series stay bounded); 0 when absent.
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
  [0, 1]: 0 for identical distributions, 1 for disjoint ones. Categories not in
  ``frequencies`` go to one extra "other" bucket, whose training share is ``other``.
- Missing values (NaN, None, pandas NA) are excluded from a feature's counts; the row still takes
  its place in the window for the other features. The prediction is one more feature of the
  same row: a row observed without its prediction (the model failed, or its output is not one
  value per row) counts the prediction as missing. A feature with no value in the window scores
  NaN (the key is always present, so the set of exported series is stable).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from pulumi_mlops.contracts.metrics import PREDICTION_FEATURE, PSI_EPSILON

__all__ = [
    "PREDICTION_FEATURE",
    "PROFILE_ARTIFACT_PATH",
    "PROFILE_FORMAT",
    "PSI_EPSILON",
    "CategoricalFeature",
    "FeatureReference",
    "NumericFeature",
    "Profile",
    "ProfileError",
    "load_profile",
]

PROFILE_FORMAT: Final = "mlops-drift-profile/v1"
"""The ``format`` tag of the profile JSON this package writes and reads."""

PROFILE_ARTIFACT_PATH: Final = "drift/profile.json"
"""Where the retrain job logs the profile on the model's run (an MLflow artifact path)."""


_SUM_TOLERANCE: Final = 1e-6


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
        other: Share of the training values in categories left out of ``frequencies``.
    """

    frequencies: Mapping[str, float]
    other: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """This feature's entry in the profile JSON."""
        entry: dict[str, Any] = {"kind": "categorical", "frequencies": dict(self.frequencies)}
        if self.other:
            entry["other"] = self.other
        return entry


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
        """Names of the numeric features, in profile order (`PREDICTION_FEATURE` included when
        the prediction is numeric)."""
        return tuple(n for n, f in self.features.items() if isinstance(f, NumericFeature))

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Names of the categorical features, in profile order (`PREDICTION_FEATURE` included
        when the prediction is categorical)."""
        return tuple(n for n, f in self.features.items() if isinstance(f, CategoricalFeature))

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        """Names of the numeric input features (the prediction left out), in profile order."""
        return tuple(n for n in self.numeric_features if n != PREDICTION_FEATURE)

    @property
    def categorical_inputs(self) -> tuple[str, ...]:
        """Names of the categorical input features (the prediction left out), in profile
        order."""
        return tuple(n for n in self.categorical_features if n != PREDICTION_FEATURE)

    @property
    def prediction(self) -> FeatureReference | None:
        """The reference distribution of the model's predictions, or None when the profile
        has none (a profile written before predictions were profiled, or a model whose
        output is not one value or class per row)."""
        return self.features.get(PREDICTION_FEATURE)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-ready object; `load_profile` of it gives back an equal profile."""
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "features": {n: f.to_dict() for n, f in self.features.items()},
        }


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
        _check_keys(name, {"other": 0.0, **spec}, {"kind", "frequencies", "other"})
        frequencies = spec["frequencies"]
        if not isinstance(frequencies, Mapping):
            raise ProfileError(name, "`frequencies` must be an object", frequencies)
        if not all(isinstance(k, str) for k in frequencies):
            raise ProfileError(name, "`frequencies` keys must be strings", list(frequencies))
        other = spec.get("other", 0.0)
        shares = list(frequencies.values())
        _check_shares(name, "frequencies", [*shares, other] if other else shares,
                      allow_empty=True)
        return CategoricalFeature(
            frequencies=MappingProxyType({k: float(v) for k, v in frequencies.items()}),
            other=float(other),
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
