"""Drift profile format and online drift statistics (pulumi_mlops.runtime.drift)."""

from __future__ import annotations

import copy
import json
import math
import sys
import threading
import warnings
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulumi_mlops.runtime.drift.monitor import DriftMonitor
from pulumi_mlops.runtime.drift.profile import build_profile
from pulumi_mlops.runtime.drift.spec import (
    PREDICTION_FEATURE,
    PROFILE_ARTIFACT_PATH,
    PROFILE_FORMAT,
    PSI_EPSILON,
    CategoricalFeature,
    NumericFeature,
    Profile,
    ProfileError,
    load_profile,
)
from tests.unit.drift_data import missing as _missing
from tests.unit.drift_data import recount as _recount


def _training_frame(rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40.0, 10.0, rows),
            "colour": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
            "income": rng.lognormal(10.0, 1.0, rows),
            "member": rng.random(rows) < 0.3,
        }
    )


def _numeric_profile(rows: int = 20_000, features: int = 3, seed: int = 1) -> Any:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(features)})
    return load_profile(build_profile(frame))


def _naive_psi(p: np.ndarray, q: np.ndarray) -> float:
    k = len(p)
    ps = (p + PSI_EPSILON) / (1 + k * PSI_EPSILON)
    qs = (q + PSI_EPSILON) / (1 + k * PSI_EPSILON)
    return float(np.sum((qs - ps) * np.log(qs / ps)))


# --------------------------------------------------------------------------- profile


def test_profile_round_trips_through_json() -> None:
    built = build_profile(_training_frame())
    text = json.dumps(built)
    profile = load_profile(text)
    assert profile.to_dict() == built
    assert load_profile(text.encode()).to_dict() == built
    assert json.loads(json.dumps(profile.to_dict())) == built
    assert built["format"] == PROFILE_FORMAT == "mlops-drift-profile/v1"
    assert built["rows"] == 5000
    assert PROFILE_ARTIFACT_PATH == "drift/profile.json"


def test_profile_kinds_follow_dtypes_in_column_order() -> None:
    profile = load_profile(build_profile(_training_frame()))
    assert list(profile.features) == ["age", "colour", "income", "member"]
    assert profile.numeric_features == ("age", "income")
    assert profile.categorical_features == ("colour", "member")
    member = profile.features["member"]
    assert isinstance(member, CategoricalFeature)
    assert set(member.frequencies) == {"True", "False"}
    assert member.frequencies["True"] == pytest.approx(0.3, abs=0.03)


def test_numeric_profile_has_quantile_bins() -> None:
    profile = load_profile(build_profile(_training_frame(), bins=4))
    age = profile.features["age"]
    assert isinstance(age, NumericFeature)
    assert len(age.edges) == 3
    assert age.edges[1] == pytest.approx(40.0, abs=1.0)
    assert age.proportions == pytest.approx([0.25] * 4, abs=1e-3)


def test_profile_of_constant_all_nan_and_tied_columns_is_valid() -> None:
    frame = pd.DataFrame(
        {
            "constant": [3.0] * 50,
            "empty": [np.nan] * 50,
            "empty_text": pd.Series([None] * 50, dtype=object),
            "mostly_zero": [0.0] * 45 + [1.0, 2.0, 3.0, 4.0, 5.0],
            "nullable": pd.array([1, None] * 25, dtype="Int64"),
        }
    )
    profile = load_profile(build_profile(frame))
    assert profile.features["constant"] == NumericFeature(edges=(3.0,), proportions=(1.0, 0.0))
    assert profile.features["empty"] == NumericFeature(edges=(), proportions=(1.0,))
    assert profile.features["empty_text"] == CategoricalFeature(frequencies={})
    tied = profile.features["mostly_zero"]
    assert isinstance(tied, NumericFeature)
    assert tied.edges[0] == 0.0 and list(tied.edges) == sorted(set(tied.edges))
    assert tied.proportions[0] == pytest.approx(0.9)
    assert profile.features["nullable"] == NumericFeature(edges=(1.0,), proportions=(1.0, 0.0))


def test_numeric_bins_are_closed_on_the_right() -> None:
    profile = load_profile(
        {
            "format": PROFILE_FORMAT,
            "rows": 1,
            "features": {"x": {"kind": "numeric", "edges": [0.0, 1.0], "proportions": [0, 1, 0]}},
        }
    )
    monitor = DriftMonitor(profile, window=10)
    monitor.observe_matrix(np.array([[-np.inf], [0.0], [0.5], [1.0], [1.0000001], [np.inf]]))
    # (-inf, 0] gets -inf and 0; (0, 1] gets 0.5 and 1; (1, inf) the rest.
    assert monitor.window_counts("x").tolist() == [2, 2, 2]


def test_monitor_bins_training_data_exactly_as_the_profile() -> None:
    frame = _training_frame(rows=3000)
    profile = load_profile(build_profile(frame))
    monitor = DriftMonitor(profile, window=3000)
    monitor.observe_columns(frame)
    for name in profile.numeric_features:
        reference = profile.features[name]
        assert isinstance(reference, NumericFeature)
        counts = monitor.window_counts(name)
        assert (counts / counts.sum()).tolist() == pytest.approx(list(reference.proportions))
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in monitor.scores().values())


def test_monitor_bins_profiles_with_hundreds_of_bins() -> None:
    rng = np.random.default_rng(11)
    profile = load_profile(build_profile(pd.DataFrame({"x": rng.normal(size=20_000)}), bins=400))
    reference = profile.features["x"]
    assert isinstance(reference, NumericFeature)
    assert len(reference.edges) > 255  # beyond what one byte per bin index can count
    values = rng.normal(size=(3000, 1))
    monitor = DriftMonitor(profile, window=3000)
    monitor.observe_matrix(values)
    expected = np.bincount(
        np.searchsorted(reference.edges, values[:, 0], side="left"),
        minlength=len(reference.edges) + 1,
    )
    assert monitor.window_counts("x").tolist() == expected.tolist()


def test_build_profile_rejects_unsupported_dtypes_and_bins() -> None:
    dated = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=3)})
    with pytest.raises(ValueError, match="`when`"):
        build_profile(dated)
    with pytest.raises(ValueError, match="`bins`"):
        build_profile(_training_frame(), bins=0)


def _valid() -> dict[str, Any]:
    return {
        "format": PROFILE_FORMAT,
        "rows": 10,
        "features": {
            "num": {"kind": "numeric", "edges": [0.0, 1.0], "proportions": [0.2, 0.5, 0.3]},
            "cat": {"kind": "categorical", "frequencies": {"a": 0.75, "b": 0.25}},
        },
    }


def _set(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(_valid())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
_NUM = ("features", "num")
_CAT = ("features", "cat")


@pytest.mark.parametrize(
    ("data", "feature", "rule"),
    [
        (_set((*_NUM, "kind"), "ordinal"), "num", "`kind` must be"),
        (_set((*_NUM, "edges"), [1.0, 0.0]), "num", "strictly increasing"),
        (_set((*_NUM, "edges"), [0.0, 0.0]), "num", "strictly increasing"),
        (_set((*_NUM, "edges"), [0.0, math.inf]), "num", "finite numbers"),
        (_set((*_NUM, "edges"), [0.0, "1"]), "num", "finite numbers"),
        (_set((*_NUM, "edges"), "0,1"), "num", "must be a list"),
        (_set((*_NUM, "proportions"), [0.5, 0.5]), "num", "len(edges) + 1"),
        (_set((*_NUM, "proportions"), [0.2, 0.5, 0.4]), "num", "sum to 1"),
        (_set((*_NUM, "proportions"), [-0.2, 0.9, 0.3]), "num", "non-negative"),
        (_set((*_NUM, "proportions"), [0.2, math.nan, 0.3]), "num", "finite numbers"),
        (_set((*_NUM, "proportions"), _DELETE), "num", "missing key"),
        (_set((*_NUM, "extra"), 1), "num", "unknown key"),
        (_set((*_CAT, "frequencies"), {"a": 0.5, "b": 0.4}), "cat", "sum to 1"),
        (_set((*_CAT, "frequencies"), {"a": 1.5, "b": -0.5}), "cat", "non-negative"),
        (_set((*_CAT, "frequencies"), [0.5, 0.5]), "cat", "must be an object"),
        (_set((*_CAT, "frequencies"), {"a": True}), "cat", "finite numbers"),
        (_set(_CAT, [1, 2]), "cat", "must be an object"),
    ],
)
def test_load_profile_rejects_malformed_feature(data: Any, feature: str, rule: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(data)
    assert caught.value.feature == feature
    assert f"feature `{feature}`" in str(caught.value)
    assert rule in str(caught.value)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (_set(("format",), "mlops-drift-profile/v2"), "`format` must be"),
        (_set(("rows",), -1), "`rows` must be"),
        (_set(("rows",), True), "`rows` must be"),
        (_set(("features",), []), "`features` must be an object"),
        (_set(("extra",), 1), "unknown key"),
        (_set(("format",), _DELETE), "missing key"),
        ("{not json", "valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_load_profile_rejects_malformed_document(data: Any, rule: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(data)
    assert caught.value.feature is None
    assert rule in str(caught.value)


def test_load_profile_accepts_the_valid_variant() -> None:
    profile = load_profile(_valid())
    assert profile.numeric_features == ("num",)
    assert profile.categorical_features == ("cat",)
    assert isinstance(ProfileError(None, "r", 1), ValueError)


# --------------------------------------------------------------------------- scores


def test_psi_is_small_for_the_training_distribution_and_large_for_a_shift() -> None:
    profile = _numeric_profile()
    rng = np.random.default_rng(7)
    same = DriftMonitor(profile, window=2000)
    same.observe_matrix(rng.normal(size=(2000, 3)))
    assert all(score < 0.05 for score in same.scores().values())

    shifted = DriftMonitor(profile, window=2000)
    shifted.observe_matrix(rng.normal(loc=1.0, size=(2000, 3)))
    assert all(score > 0.25 for score in shifted.scores().values())


def test_psi_of_an_empty_bin_is_finite() -> None:
    profile = _numeric_profile(features=1)
    monitor = DriftMonitor(profile, window=100)
    monitor.observe_matrix(np.full((100, 1), 50.0))
    score = monitor.scores()["x0"]
    assert math.isfinite(score) and score > 5.0


def _categorical_profile(frequencies: dict[str, float]) -> Any:
    return load_profile(
        {
            "format": PROFILE_FORMAT,
            "rows": 100,
            "features": {"c": {"kind": "categorical", "frequencies": frequencies}},
        }
    )


def test_js_distance_is_zero_for_identical_and_one_for_disjoint_distributions() -> None:
    profile = _categorical_profile({"a": 0.5, "b": 0.25, "c": 0.25})
    identical = DriftMonitor(profile, window=4)
    identical.observe_columns({"c": ["a", "b", "a", "c"]})
    assert identical.scores()["c"] == pytest.approx(0.0, abs=1e-7)

    disjoint = DriftMonitor(profile, window=4)
    disjoint.observe_columns({"c": ["x", "y", "z", "x"]})
    assert disjoint.scores()["c"] == pytest.approx(1.0)
    assert disjoint.window_counts("c").tolist() == [0, 0, 0, 4]  # all in "other"


def test_js_distance_matches_the_definition_for_a_partial_overlap() -> None:
    profile = _categorical_profile({"a": 0.5, "b": 0.5})
    monitor = DriftMonitor(profile, window=4)
    monitor.observe_columns({"c": ["a", "a", "a", "new"]})
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.75, 0.0, 0.25])
    m = (p + q) / 2
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)  # noqa: E731
    assert monitor.scores()["c"] == pytest.approx(math.sqrt(0.5 * kl(p) + 0.5 * kl(q)))


def test_categories_compare_as_strings() -> None:
    profile = load_profile(build_profile(pd.DataFrame({"flag": [True, False, True, True]})))
    monitor = DriftMonitor(profile, window=4)
    monitor.observe_columns({"flag": np.array([True, True, False, True])})
    assert monitor.scores()["flag"] == pytest.approx(0.0, abs=1e-7)


def test_sliding_window_forgets_rows_older_than_the_window() -> None:
    profile = _numeric_profile()
    rng = np.random.default_rng(3)
    shifted_rows = rng.normal(loc=2.0, size=(500, 3))
    monitor = DriftMonitor(profile, window=500, flush_rows=64)
    for row in rng.normal(size=(2000, 3)):
        monitor.observe_matrix(row[None, :])
    assert all(score < 0.1 for score in monitor.scores().values())
    for row in shifted_rows:
        monitor.observe_matrix(row[None, :])

    only_shifted = DriftMonitor(profile, window=500)
    only_shifted.observe_matrix(shifted_rows)
    assert monitor.window_rows() == 500
    assert monitor.scores() == only_shifted.scores()
    assert all(score > 0.25 for score in monitor.scores().values())


def test_missing_values_are_excluded_from_counts() -> None:
    frame = _training_frame(rows=2000)
    profile = load_profile(build_profile(frame))
    monitor = DriftMonitor(profile, window=100)
    ages = np.full(10, np.nan)
    ages[:3] = [20.0, 40.0, 60.0]
    monitor.observe_columns(
        {"age": ages, "colour": ["red", None, np.nan, *["blue"] * 7], "member": [True] * 10}
    )
    assert monitor.window_rows() == 10
    assert monitor.window_counts("age").sum() == 3
    assert monitor.window_counts("colour").sum() == 8
    assert monitor.window_counts("income").sum() == 0  # absent column: missing
    scores = monitor.scores()
    assert math.isnan(scores["income"])
    assert not math.isnan(scores["age"])
    assert list(scores) == ["age", "colour", "income", "member"]


def test_features_without_values_score_nan() -> None:
    monitor = DriftMonitor(load_profile(build_profile(_training_frame())), window=10)
    assert monitor.window_rows() == 0
    assert all(math.isnan(v) for v in monitor.scores().values())
    monitor.observe_matrix(np.array([[np.nan, 1e4]]))
    scores = monitor.scores()
    assert math.isnan(scores["age"]) and math.isnan(scores["colour"])
    assert scores["income"] > 0.25


def test_observe_rejects_wrong_shapes_and_types() -> None:
    monitor = DriftMonitor(_numeric_profile(), window=10)
    with pytest.raises(ValueError, match=r"shape \(rows, 3\)"):
        monitor.observe_matrix(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"shape \(rows, 3\)"):
        monitor.observe_matrix(np.zeros(3))
    with pytest.raises(TypeError, match="numeric array"):
        monitor.observe_matrix(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="equal length"):
        monitor.observe_columns({"x0": [1.0], "x1": [1.0, 2.0]})
    with pytest.raises(ValueError, match="`x0` must be numeric"):
        monitor.observe_columns({"x0": ["a"]})
    with pytest.raises(ValueError, match="`window`"):
        DriftMonitor(_numeric_profile(), window=0)
    with pytest.raises(KeyError):
        monitor.window_counts("nope")
    mixed = DriftMonitor(load_profile(build_profile(_training_frame())), window=10)
    row = np.array([[30.0, 1e4]])
    for categorical in ((np.array(["red"]),), (np.array(["red", "blue"]), None),
                        (None, np.array([[True]]))):
        with pytest.raises(ValueError, match=r"`categorical` of 1 rows for each of \['colour'"):
            mixed.observe_matrix(row, categorical=categorical)
    assert monitor.window_rows() == 0 and mixed.window_rows() == 0


def test_monitor_lists_features_in_profile_order() -> None:
    monitor = DriftMonitor(load_profile(build_profile(_training_frame())))
    assert monitor.numeric_features == ("age", "income")
    assert monitor.categorical_features == ("colour", "member")
    assert monitor.window == 1000


# --------------------------------------------------------------------------- property


_EDGES = {"a": [0.0, 1.0, 2.0], "b": [], "c": [-1.5, 0.5]}
_CATEGORIES = {"k": {"x": 0.5, "y": 0.5}}
_PROPERTY_PROFILE = load_profile(
    {
        "format": PROFILE_FORMAT,
        "rows": 1,
        "features": {
            "a": {"kind": "numeric", "edges": _EDGES["a"], "proportions": [0.25] * 4},
            "k": {"kind": "categorical", "frequencies": _CATEGORIES["k"]},
            "b": {"kind": "numeric", "edges": _EDGES["b"], "proportions": [1.0]},
            "c": {"kind": "numeric", "edges": _EDGES["c"], "proportions": [0.2, 0.3, 0.5]},
        },
    }
)
# Edge values themselves, ties and infinities exercise the closed side of the bins.
_values = st.sampled_from([-3.0, -1.5, 0.0, 0.25, 0.5, 1.0, 2.0, 7.0, np.inf, -np.inf, np.nan])
_categories = st.sampled_from(["x", "y", "z", "other", None])
_row = st.tuples(_values, _values, _values, _categories)
_kinds = st.sampled_from(["matrix", "lists", "arrays", "partial", "scrape"])
_batch = st.tuples(_kinds, st.lists(_row, max_size=12))


@settings(max_examples=150, deadline=None)
@given(
    window=st.integers(1, 30),
    flush_rows=st.integers(1, 40),
    batches=st.lists(_batch, max_size=25),
)
def test_window_counts_equal_a_recount_of_the_last_rows(
    window: int, flush_rows: int, batches: list[tuple[str, list[tuple[Any, ...]]]]
) -> None:
    monitor = DriftMonitor(_PROPERTY_PROFILE, window=window, flush_rows=flush_rows)
    history: list[dict[str, Any]] = []
    for kind, rows in batches:
        if kind == "scrape":
            monitor.scores()
            continue
        if not rows:
            continue
        if kind == "matrix":
            monitor.observe_matrix(np.array([r[:3] for r in rows], dtype=np.float64))
            history += [{"a": r[0], "b": r[1], "c": r[2], "k": None} for r in rows]
        elif kind == "lists":
            monitor.observe_columns({n: [r[i] for r in rows] for i, n in enumerate("abck")})
            history += [dict(zip("abck", r, strict=True)) for r in rows]
        elif kind == "arrays":
            columns: dict[str, Any] = {
                n: np.array([r[i] for r in rows], dtype=np.float64) for i, n in enumerate("abc")
            }
            columns["k"] = np.array([r[3] for r in rows], dtype=object)
            monitor.observe_columns(columns)
            history += [dict(zip("abck", r, strict=True)) for r in rows]
        else:  # "b" and "k" absent: missing for these rows
            monitor.observe_columns({"a": [r[0] for r in rows], "c": [r[2] for r in rows]})
            history += [{"a": r[0], "b": math.nan, "c": r[2], "k": None} for r in rows]

    recent = history[-window:]
    assert monitor.window_rows() == len(recent)
    scores = monitor.scores()
    for name, edges in _EDGES.items():
        values = np.array([r[name] for r in recent], dtype=np.float64)
        values = values[~np.isnan(values)]
        bins = np.searchsorted(edges, values, side="left")
        expected = np.bincount(bins, minlength=len(edges) + 1)
        assert monitor.window_counts(name).tolist() == expected.tolist()
        if values.size:
            reference = _PROPERTY_PROFILE.features[name]
            assert isinstance(reference, NumericFeature)
            naive = _naive_psi(np.array(reference.proportions), expected / values.size)
            assert scores[name] == pytest.approx(naive)
        else:
            assert math.isnan(scores[name])
    known = list(_CATEGORIES["k"])
    observed = [r["k"] for r in recent if r["k"] is not None]
    expected_k = [observed.count(c) for c in known] + [sum(c not in known for c in observed)]
    assert monitor.window_counts("k").tolist() == expected_k


# Mixed traffic as the server's general path feeds it: numeric features given as floats, ints
# or bools, categorical ones as bools or one of 80 cities (the profile keeps the 50 most
# frequent, the rest and unseen ones go to "other"), NaN/None/NA, 1-row and multi-row
# requests in every form `observe_columns` takes, between `observe_matrix` requests, with the
# model's predictions or without.
_CITIES = [f"c{i:02d}" for i in range(80)]


def _mixed_profile(prediction: str) -> Profile:
    rng = np.random.default_rng(17)
    rows = 4000
    weights = 1.0 / np.arange(1, len(_CITIES) + 1)
    frame = pd.DataFrame({
        "x": rng.normal(size=rows),
        "city": rng.choice(_CITIES, size=rows, p=weights / weights.sum()),
        "n": rng.integers(0, 20, size=rows),
        "flag": rng.random(rows) < 0.3,
        "member": (rng.random(rows) < 0.6).astype(np.int64),
    })
    predictions = {"none": None, "values": rng.normal(size=rows),
                   "classes": rng.integers(0, 3, size=rows)}[prediction]
    return load_profile(build_profile(frame, predictions=predictions))


_MIXED_PROFILES = {kind: _mixed_profile(kind) for kind in ("none", "values", "classes")}
_X_EDGES = _MIXED_PROFILES["none"].features["x"]
assert isinstance(_X_EDGES, NumericFeature)
_mixed_row = st.fixed_dictionaries({
    # Edge values themselves exercise the closed side of the bins.
    "x": st.sampled_from([*_X_EDGES.edges, -3.0, 0.0, 3.0, np.inf, -np.inf, np.nan, None]),
    "city": st.sampled_from([*_CITIES, "elsewhere", None, np.nan]),
    "n": st.one_of(st.integers(-1, 21), st.none()),
    "flag": st.sampled_from([True, False, None]),
    "member": st.sampled_from([True, False, None]),
    "values": st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.nan]),
    "classes": st.sampled_from([0, 1, 2, 5]),
})
_mixed_request = st.tuples(
    st.sampled_from(["arrays", "lists", "frame", "partial", "partial-frame", "matrix",
                     "matrix-categorical", "alone"]),
    st.one_of(st.lists(_mixed_row, min_size=1, max_size=1),
              st.lists(_mixed_row, min_size=2, max_size=5)),
    st.booleans(),  # with the model's predictions
)
# The features each form of request gives; the others are missing for its rows.
_GIVEN = {"arrays": ("x", "city", "n", "flag", "member"), "lists": ("x", "city", "n", "flag",
          "member"), "frame": ("x", "city", "n", "flag", "member"), "partial": ("x", "city"),
          "partial-frame": ("n", "flag"), "matrix": ("x", "n", "member"),
          "matrix-categorical": ("x", "n", "member", "city"), "alone": ()}


def _array(values: list[Any], dtype: Any) -> np.ndarray[Any, Any]:
    """``values`` as an array of ``dtype`` when they have no missing value, else of objects
    (numbers: floats, NaN for None)."""
    if not any(_missing(v) for v in values):
        return np.array(values, dtype=dtype)
    if np.dtype(dtype).kind in "iuf":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(values, dtype=object)


def _observe(monitor: DriftMonitor, way: str, rows: list[dict[str, Any]],
             predictions: Any) -> None:
    def column(name: str) -> list[Any]:
        return [r[name] for r in rows]

    arrays = {"x": _array(column("x"), np.float64), "city": _array(column("city"), str),
              "n": _array(column("n"), np.int64), "flag": _array(column("flag"), bool),
              "member": _array(column("member"), bool)}
    if way in ("matrix", "matrix-categorical"):
        categorical = None
        if way == "matrix-categorical":  # as the server reads decoded JSON: flag absent
            categorical = tuple(np.array(column(n), dtype=object) if n in _GIVEN[way] else None
                                for n in monitor.categorical_inputs)
        monitor.observe_matrix(np.array([[np.nan if r[n] is None else r[n]
                                          for n in monitor.numeric_inputs] for r in rows],
                                        dtype=np.float64), predictions, categorical=categorical)
    elif way in ("arrays", "partial"):
        monitor.observe_columns({n: arrays[n] for n in _GIVEN[way]}, predictions)
    elif way == "lists":
        monitor.observe_columns({n: column(n) for n in _GIVEN[way]}, predictions)
    elif way in ("frame", "partial-frame"):
        frame = pd.DataFrame({  # nullable dtypes: missing values are pandas NA
            "x": pd.array(column("x"), dtype="Float64"), "city": column("city"),
            "n": pd.array(column("n"), dtype="Int64"),
            "flag": pd.array(column("flag"), dtype="boolean"),
            "member": pd.array(column("member"), dtype="boolean")})
        monitor.observe_columns(frame[list(_GIVEN[way])], predictions)
    else:
        monitor.observe_columns({}, predictions)


@settings(max_examples=200, deadline=None)
@given(prediction=st.sampled_from(["none", "values", "classes"]), window=st.integers(1, 30),
       flush_rows=st.integers(1, 40), requests=st.lists(_mixed_request, max_size=25))
def test_mixed_traffic_counts_equal_a_row_by_row_recount(
    prediction: str, window: int, flush_rows: int,
    requests: list[tuple[str, list[dict[str, Any]], bool]],
) -> None:
    profile = _MIXED_PROFILES[prediction]
    monitor = DriftMonitor(profile, window=window, flush_rows=flush_rows)
    history: list[dict[str, Any]] = []  # every counted row, its missing features None
    for way, rows, predicted in requests:
        predictions = None
        if predicted and prediction != "none":
            predictions = np.array([r[prediction] for r in rows],
                                   dtype=np.float64 if prediction == "values" else np.int64)
        _observe(monitor, way, rows, predictions)
        if way == "alone" and predictions is None:
            continue  # no input and no prediction: nothing to count
        for r in rows:
            counted = {n: r[n] if n in _GIVEN[way] else None for n in profile.features}
            if prediction != "none":
                counted[PREDICTION_FEATURE] = r[prediction] if predictions is not None else None
            history.append(counted)

    totals = monitor.totals()
    expected_totals = _recount(profile, history)
    assert {n: c.tolist() for n, c in totals.items()} == expected_totals
    recent = history[-window:]
    assert monitor.window_rows() == len(recent)
    assert {n: monitor.window_counts(n).tolist() for n in profile.features} == (
        _recount(profile, recent))


# DataFrames as the server's general path passes them: decoded by MLflow's scoring server from a
# JSON payload (each column cast on its own, so each is a block of its own; without a signature,
# object columns holding None; with one, its casts), with nullable or category dtypes, in one
# block of objects, or with their columns in another order among columns the profile does not
# have. The expected counts read the frame value by value (`DataFrame.iat`), not as the monitor
# reads it.
_FRAME_FORMS = ("split", "records", "signature", "nullable", "category", "one-block", "numeric",
                "numeric-nullable", "numeric-objects", "numeric-reordered", "reordered")
_COLUMNS = ("x", "city", "n", "flag", "member")


def _mlflow_schema() -> Any:
    from mlflow.types.schema import ColSpec, Schema

    # The numbers as doubles, which hold None (a long column cannot: MLflow refuses it).
    return Schema([ColSpec(t, n, required=False) for n, t in zip(
        _COLUMNS, ("double", "string", "double", "boolean", "double"), strict=True)])


def _decoded_frame(form: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    from mlflow.pyfunc import scoring_server

    doc: dict[str, Any] = {"dataframe_split": {
        "columns": list(_COLUMNS), "data": [[r[n] for n in _COLUMNS] for r in rows]}}
    if form == "records":
        doc = {"dataframe_records": [{n: r[n] for n in _COLUMNS} for r in rows]}
    schema = _mlflow_schema() if form == "signature" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own use of pandas 3
        frame: pd.DataFrame = scoring_server.infer_and_parse_data(doc, schema)
    return frame


def _request_frame(form: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    def column(name: str) -> list[Any]:
        return [r[name] for r in rows]

    if form in ("split", "records", "signature"):
        return _decoded_frame(form, rows)
    if form == "nullable":
        return pd.DataFrame({
            "x": pd.array(column("x"), dtype="Float64"), "city": column("city"),
            "n": pd.array(column("n"), dtype="Int64"),
            "flag": pd.array(column("flag"), dtype="boolean"),
            "member": pd.array(column("member"), dtype="Int64")})
    if form == "category":
        return pd.DataFrame({
            "x": pd.array([np.nan if v is None else v for v in column("x")], dtype=np.float64),
            "city": pd.Categorical(column("city")), "n": column("n"),
            "flag": pd.Categorical(column("flag")), "member": column("member")})
    if form == "one-block":
        return pd.DataFrame(np.array([[r[n] for n in _COLUMNS] for r in rows], dtype=object),
                            columns=list(_COLUMNS), dtype=object)
    if form == "numeric":  # the numeric inputs only, first and in order
        return _decoded_frame("signature", rows)[["x", "n", "member"]]
    if form == "numeric-nullable":
        return pd.DataFrame({"x": pd.array(column("x"), dtype="Float64"),
                             "n": pd.array(column("n"), dtype="Int64"),
                             "member": pd.array(column("member"), dtype="boolean")})
    if form == "numeric-objects":  # without a signature: the flags are objects (None among them)
        return _decoded_frame("split", rows)[["x", "n", "member"]]
    if form == "numeric-reordered":  # numbers only, in another order
        return _decoded_frame("signature", rows)[["n", "member", "x"]].assign(extra=1.5)
    # The profile's columns in another order, some absent, among others it does not have (one
    # of them named as the prediction, which an input column is not).
    frame = _decoded_frame("split", rows)
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(rows))], "member": frame["member"],
                         "city": frame["city"], PREDICTION_FEATURE: frame["x"],
                         "x": frame["x"], "extra": 1.5})


def _frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows value by value, as its features: None where a column is absent."""
    labels = list(frame.columns)
    return [{n: frame.iat[i, labels.index(n)] if n in labels else None for n in _COLUMNS}
            for i in range(len(frame))]


_frame_request = st.tuples(
    st.sampled_from([*_FRAME_FORMS, "arrays", "matrix"]),
    st.one_of(st.lists(_mixed_row, min_size=1, max_size=1),
              st.lists(_mixed_row, min_size=2, max_size=4)),
    st.booleans(),  # with the model's predictions
)


@settings(max_examples=120, deadline=None)
@given(prediction=st.sampled_from(["none", "values", "classes"]), window=st.integers(1, 30),
       flush_rows=st.integers(1, 40), requests=st.lists(_frame_request, max_size=20))
def test_dataframes_as_mlflow_decodes_them_count_as_a_value_by_value_recount(
    prediction: str, window: int, flush_rows: int,
    requests: list[tuple[str, list[dict[str, Any]], bool]],
) -> None:
    profile = _MIXED_PROFILES[prediction]
    monitor = DriftMonitor(profile, window=window, flush_rows=flush_rows)
    history: list[dict[str, Any]] = []
    for way, rows, predicted in requests:
        predictions = None
        if predicted and prediction != "none":
            predictions = np.array([r[prediction] for r in rows],
                                   dtype=np.float64 if prediction == "values" else np.int64)
        if way in ("arrays", "matrix"):
            _observe(monitor, way, rows, predictions)
            counted = [{n: r[n] if n in _GIVEN[way] else None for n in _COLUMNS} for r in rows]
        else:
            frame = _request_frame(way, rows)
            monitor.observe_columns(frame, predictions)
            counted = _frame_rows(frame)
        for row, r in zip(counted, rows, strict=True):
            if prediction != "none":
                row[PREDICTION_FEATURE] = r[prediction] if predictions is not None else None
            history.append(row)

    assert {n: c.tolist() for n, c in monitor.totals().items()} == _recount(profile, history)
    recent = history[-window:]
    assert monitor.window_rows() == len(recent)
    assert {n: monitor.window_counts(n).tolist() for n in profile.features} == (
        _recount(profile, recent))


@pytest.mark.parametrize("form", ["one-block", "split", "numeric"])
def test_changing_a_frame_after_observing_it_does_not_change_its_counts(form: str) -> None:
    profile = _MIXED_PROFILES["none"]
    rows = [{"x": 0.0, "city": "c01", "n": 3, "flag": True, "member": False}] * 3
    frame = _request_frame(form, rows)
    expected = DriftMonitor(profile, window=10)
    expected.observe_columns(_request_frame(form, rows))
    monitor = DriftMonitor(profile, window=10)
    monitor.observe_columns(frame)  # pending: counted at the next flush
    frame.iloc[0, 0] = 3.0  # in place, as a caller could
    frame.loc[1, "x"] = -3.0
    if "city" in frame:
        frame.loc[1, "city"] = "c02"
    assert {n: c.tolist() for n, c in monitor.totals().items()} == (
        {n: c.tolist() for n, c in expected.totals().items()})


def _odd_frames() -> dict[str, pd.DataFrame]:
    """Frames whose values the one-call read does not take as they are: it leaves them to the
    per-feature path, or must convert them as that path does."""
    return {
        "text of numbers": pd.DataFrame({"x": pd.array(["1.5", None], dtype="str"),
                                         "n": np.array(["2", "3"], dtype=object)}),
        "text": pd.DataFrame({"x": ["a", "b"], "city": ["c01", "c02"]}),
        "objects": pd.DataFrame({"x": [1.5, object()], "city": ["c01", None]}),
        "datetimes": pd.DataFrame({"x": pd.to_datetime(["2020-01-01", None]), "n": [1, 2]}),
        "timedeltas": pd.DataFrame({"x": pd.to_timedelta([1, None]), "city": ["c01", "c02"]}),
        "numeric categories": pd.DataFrame({"x": pd.Categorical([0.5, None]),
                                            "city": pd.Categorical([1, 2])}),
        "decimals": pd.DataFrame({"x": [Decimal("0.1"), None], "member": [True, False]}),
        "complex numbers, not a feature": pd.DataFrame({"x": [0.5, 1.0], "other": [1j, 2.0]}),
        "big integers": pd.DataFrame({"n": np.array([2**62 + 1, -(2**63)], dtype=np.int64),
                                      "member": np.array([2**64 - 1, 0], dtype=np.uint64)}),
        "booleans": pd.DataFrame({"x": [True, False], "n": pd.array([True, None], "boolean"),
                                  "flag": [1, 0]}),
        "repeated label": pd.DataFrame([[1.0, 2.0, "c01"]], columns=["x", "x", "city"]),
        "two-level labels": pd.DataFrame([[1.0, "c01"]], columns=pd.MultiIndex.from_tuples(
            [("x", "a"), ("city", "b")])),
        "no feature": pd.DataFrame({"other": [1.0, 2.0]}),
        "no column": pd.DataFrame(index=range(2)),
        "no row": pd.DataFrame({"x": pd.Series([], dtype=np.float64), "city": []}),
    }


@pytest.mark.parametrize("name", list(_odd_frames()))
def test_a_frame_counts_as_its_columns_one_by_one(name: str) -> None:
    """The frame, and each feature's column of it by name (what `observe_columns` read a frame
    as, one feature at a time: `DataFrame.get`), give the same counts, or the same error."""
    frame = _odd_frames()[name]
    profile = _MIXED_PROFILES["values"]
    names = profile.numeric_inputs + profile.categorical_inputs
    by_name = {n: frame.get(n) for n in names if frame.get(n) is not None}
    outcomes: dict[str, list[str]] = {"frame": [], "by name": []}
    for way, columns in (("frame", frame), ("by name", by_name)):
        for predictions in (None, np.arange(len(frame), dtype=np.float64)):
            monitor = DriftMonitor(profile, window=10)
            try:
                monitor.observe_columns(columns, predictions)
            except ValueError as err:
                outcomes[way].append(str(err))
            else:
                outcomes[way].append(repr((monitor.window_rows(), {
                    n: c.tolist() for n, c in monitor.totals().items()})))
    assert outcomes["frame"] == outcomes["by name"]


def test_a_category_keeps_the_type_of_its_values_beside_columns_of_floats() -> None:
    # Read with the float columns into one array of floats, the class 1 would be "1.0".
    profile = load_profile(build_profile(pd.DataFrame(
        {"a": [0.5, 1.5, 2.5, 3.5], "k": pd.Categorical([1, 2, 1, 2])})))
    monitor = DriftMonitor(profile, window=10)
    monitor.observe_columns(pd.DataFrame({"a": [0.5, 1.5, 2.5], "k": [1, 1, 3]}))
    k = profile.features["k"]
    assert isinstance(k, CategoricalFeature) and list(k.frequencies) == ["1", "2"]
    assert monitor.window_counts("k").tolist() == [2, 0, 1]

def test_a_frame_whose_numeric_feature_is_not_numbers_is_refused_alone() -> None:
    profile = _MIXED_PROFILES["none"]
    monitor = DriftMonitor(profile, window=100, flush_rows=4)
    good = _request_frame("split", [{"x": 0.0, "city": "c01", "n": 3, "flag": True,
                                     "member": False}] * 3)
    monitor.observe_columns(good)
    bad = good.assign(n=["three", "3", None])
    with pytest.raises(ValueError, match="drift: feature `n` must be numeric"):
        monitor.observe_columns(bad)
    monitor.observe_columns(good)
    assert monitor.window_rows() == 6  # the good requests, and nothing of the bad one
    assert monitor.totals()["n"].sum() == 6


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("window", [100_000, 777])
def test_concurrent_observers_lose_no_rows(window: int) -> None:
    profile = load_profile(build_profile(_training_frame()))
    monitor = DriftMonitor(profile, window=window, flush_rows=50)
    threads, per_thread = 8, 2000
    rng = np.random.default_rng(5)
    matrix = np.column_stack([rng.normal(40, 10, per_thread), rng.lognormal(10, 1, per_thread)])
    start = threading.Barrier(threads + 1)

    def observe(index: int) -> None:
        start.wait()
        for i in range(per_thread):
            if index % 2:
                monitor.observe_matrix(matrix[i : i + 1])
            else:
                monitor.observe_columns({"age": matrix[i : i + 1, 0], "colour": ["red"]})
            if i % 100 == 0:
                monitor.scores()

    workers = [threading.Thread(target=observe, args=(n,)) for n in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that races have a chance to show
    try:
        for worker in workers:
            worker.start()
        start.wait()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    expected = min(window, threads * per_thread)
    assert monitor.window_rows() == expected
    assert monitor.window_counts("age").sum() == expected
    if window >= threads * per_thread:
        assert monitor.window_counts("income").sum() == expected // 2
        colour = profile.features["colour"]
        assert isinstance(colour, CategoricalFeature)
        red = list(colour.frequencies).index("red")
        assert monitor.window_counts("colour")[red] == expected // 2
        assert monitor.window_counts("colour").sum() == expected // 2


def test_a_shared_window_holds_the_rows_of_every_forked_worker() -> None:
    import os

    profile = _numeric_profile()
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(120, 3)), rng.normal(loc=2.0, size=(90, 3))]
    shared = DriftMonitor(profile, window=500)
    shared.share_across_processes(flush_rows=16)
    workers = []
    for batch in batches:
        pid = os.fork()
        if pid == 0:  # a worker: observe one row at a time, as 1-row requests do
            code = 1
            try:
                for row in batch:
                    shared.observe_matrix(row[None, :])
                shared.window_rows()  # flush what is pending, as a scrape would
                code = 0
            finally:
                os._exit(code)
        workers.append(pid)
    for pid in workers:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    # The parent saw no request itself, yet its window holds both workers' rows.
    alone = DriftMonitor(profile, window=500)
    alone.observe_matrix(np.concatenate(batches))
    assert shared.window_rows() == 210
    for feature in profile.numeric_features:
        np.testing.assert_array_equal(shared.window_counts(feature), alone.window_counts(feature))
    assert shared.scores() == pytest.approx(alone.scores())


def test_a_worker_flush_makes_its_pending_rows_visible_to_the_others() -> None:
    import os

    profile = _numeric_profile()
    shared = DriftMonitor(profile, window=500)
    shared.share_across_processes()  # the default threshold (1024 rows) is kept
    assert shared.flush_rows == 1024
    pid = os.fork()
    if pid == 0:  # a worker: 40 rows stay pending until its periodic flush
        code = 1
        try:
            shared.observe_matrix(np.ones((40, 3)))
            shared.flush()
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert shared.window_rows() == 40


def test_a_shared_window_still_slides() -> None:
    profile = _numeric_profile()
    monitor = DriftMonitor(profile, window=50)
    monitor.observe_matrix(np.full((30, 3), 5.0))
    monitor.share_across_processes(flush_rows=8)
    assert monitor.window_rows() == 30  # rows observed before sharing are kept
    monitor.observe_matrix(np.zeros((60, 3)))
    reference = DriftMonitor(profile, window=50)
    reference.observe_matrix(np.zeros((50, 3)))
    assert monitor.window_rows() == 50
    assert monitor.scores() == pytest.approx(reference.scores())


def test_the_package_re_exports_what_the_job_and_the_server_import() -> None:
    from pulumi_mlops.runtime import drift
    from pulumi_mlops.runtime.drift import monitor, prediction, profile, spec

    assert drift.__all__ == sorted(drift.__all__, key=lambda n: (not n.isupper(), n))
    assert {name: getattr(drift, name) for name in drift.__all__} == {
        "DriftMonitor": monitor.DriftMonitor,
        "PREDICTION_FEATURE": prediction.PREDICTION_FEATURE,
        "PROFILE_ARTIFACT_PATH": spec.PROFILE_ARTIFACT_PATH,
        "build_profile": profile.build_profile,
        "load_profile": spec.load_profile,
        "prediction_kind": prediction.prediction_kind,
        "prediction_values": prediction.prediction_values,
    }


def test_totals_count_every_binned_row_and_outlive_the_window() -> None:
    profile = _numeric_profile()
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(900, 3))
    monitor = DriftMonitor(profile, window=100, flush_rows=50)
    for start in range(0, 900, 30):
        monitor.observe_matrix(rows[start:start + 30])
    totals = monitor.totals()
    for i, feature in enumerate(profile.numeric_features):
        ref = profile.features[feature]
        # Right-closed bins, counted independently of the monitor's own binning.
        expected = np.bincount(np.searchsorted(ref.edges, rows[:, i], side="left"),
                               minlength=len(ref.proportions))
        np.testing.assert_array_equal(totals[feature], expected)
        assert monitor.window_counts(feature).sum() == 100  # the window only holds the last
    assert {f: r.tolist() for f, r in monitor.references().items()} == {
        f: list(profile.features[f].proportions) for f in profile.numeric_features}


def test_totals_of_a_categorical_feature_end_with_the_other_bucket() -> None:
    frame = pd.DataFrame({"country": ["fr"] * 60 + ["de"] * 40})
    monitor = DriftMonitor(load_profile(build_profile(frame)), window=10)
    monitor.observe_columns({"country": np.array(["de", "fr", "us", "us", None], dtype=object)})
    assert monitor.totals()["country"].tolist() == [1, 1, 2]  # fr, de, other; None is missing
    assert monitor.references()["country"].tolist() == [0.6, 0.4, 0.0]


def test_shared_totals_count_every_workers_rows_once() -> None:
    import os

    profile = _numeric_profile()
    rng = np.random.default_rng(5)
    batches = [rng.normal(size=(300, 3)), rng.normal(loc=1.0, size=(200, 3))]
    shared = DriftMonitor(profile, window=100)
    shared.share_across_processes(flush_rows=16)
    workers = []
    for batch in batches:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for row in batch:
                    shared.observe_matrix(row[None, :])
                shared.flush()
                code = 0
            finally:
                os._exit(code)
        workers.append(pid)
    for pid in workers:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    # Every row binned (each worker flushed every 16 rows, within its window of 100).
    alone = DriftMonitor(profile, window=1000)
    alone.observe_matrix(np.concatenate(batches))
    for feature, counts in shared.totals().items():
        assert counts.sum() == 500
        np.testing.assert_array_equal(counts, alone.totals()[feature])


def test_totals_count_all_the_traffic_between_two_scrapes() -> None:
    # More rows than the window between two reads: the window keeps the newest, the totals
    # count every one (the replicas' weights in the merged drift are their real traffic).
    profile = _numeric_profile()
    rows = np.random.default_rng(3).normal(size=(5000, 3))
    monitor = DriftMonitor(profile, window=100)
    for row in rows:
        monitor.observe_matrix(row[None, :])
    for feature, counts in monitor.totals().items():
        assert counts.sum() == 5000, feature
    assert monitor.window_rows() == 100


def test_a_high_cardinality_column_keeps_its_most_frequent_categories_and_their_rest() -> None:
    # 200 categories, the first ones most frequent: 50 bins of their own, the rest in `other`
    # with its training share, so the series per feature stay bounded and the same traffic
    # still scores no drift.
    from pulumi_mlops.runtime.drift.profile import MAX_CATEGORIES

    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, 201)
    values = rng.choice([f"c{i}" for i in range(200)], size=20_000, p=weights / weights.sum())
    frame = pd.DataFrame({"city": values})
    profile = build_profile(frame)
    city = profile["features"]["city"]
    assert len(city["frequencies"]) == MAX_CATEGORIES == 50
    kept = set(city["frequencies"])
    assert city["other"] == pytest.approx(float(np.mean([v not in kept for v in values])))
    loaded = load_profile(profile)  # the format accepts it, and writes it back the same
    assert loaded.to_dict() == profile
    monitor = DriftMonitor(loaded, window=20_000)
    monitor.observe_columns({"city": rng.choice(values, size=20_000)})
    assert monitor.scores()["city"] < 0.02
    assert monitor.references()["city"][-1] == pytest.approx(city["other"])


def test_a_categorical_profile_whose_shares_and_rest_do_not_sum_to_one_is_refused() -> None:
    profile = {"format": "mlops-drift-profile/v1", "rows": 10, "features": {
        "city": {"kind": "categorical", "frequencies": {"a": 0.5}, "other": 0.2}}}
    with pytest.raises(ProfileError, match="sum to 1"):
        load_profile(profile)
