"""Prediction drift: the model's output profiled by the retrain job and monitored by the model
server as one more drift feature, ``__prediction__`` (pulumi_mlops.runtime.drift)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.models import infer_signature
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge

from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.runtime.drift import (
    PREDICTION_FEATURE,
    DriftMonitor,
    build_profile,
    load_profile,
    prediction_kind,
)
from pulumi_mlops.runtime.drift.spec import (
    PROFILE_FORMAT,
    CategoricalFeature,
    NumericFeature,
    Profile,
)
from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.loading import load_served_model
from pulumi_mlops.runtime.serve.model import ServedModel
from tests.unit.serving_data import general_only, training_frame


def _frame(bunch: Any) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    return pd.DataFrame(bunch.data, columns=bunch.feature_names), bunch.target


def _expected_counts(reference: Any, values: list[Any]) -> list[int]:
    """A plain recount of ``values`` (predictions) in the bins of ``reference``."""
    if isinstance(reference, NumericFeature):
        array = np.asarray(values, dtype=np.float64)
        array = array[~np.isnan(array)]
        bins = np.searchsorted(np.asarray(reference.edges), array, side="left")
        return np.bincount(bins, minlength=len(reference.edges) + 1).tolist()
    known = list(reference.frequencies)
    present = [str(v) for v in values if v is not None]
    return [present.count(c) for c in known] + [sum(v not in known for v in present)]


# --------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("values", [
    np.array([0.5, 1.5]), np.array([1.0, 2.0], dtype=np.float32), np.array([0, 1]),
    np.array([3, 4], dtype=np.uint8), np.array([True, False]), np.array(["a", "b"]),
    np.array([b"a", b"b"]), np.array(["yes", None], dtype=object), np.array([1 + 2j]),
    np.array(["2024-01-01"], dtype="datetime64[D]"), np.array([1, 2], dtype="timedelta64[s]"),
], ids=lambda v: str(v.dtype))
def test_classes_or_values_is_the_prediction_metrics_decision(values: Any) -> None:
    # One rule for the profile, the monitor and the server's prediction metrics.
    expected = {None: None, True: "categorical", False: "numeric"}[
        metrics.predicts_classes(values)]
    assert prediction_kind(values) == expected


# --------------------------------------------------------------------------- profile


def test_a_classifiers_predictions_are_profiled_as_classes() -> None:
    x, y = _frame(load_breast_cancer())
    model = LogisticRegression(max_iter=5000).fit(x[:400], y[:400])
    predicted = model.predict(x[400:])
    profile = load_profile(build_profile(x[:400], predictions=predicted))
    assert list(profile.features)[:-1] == list(x.columns)
    assert list(profile.features)[-1] == PREDICTION_FEATURE
    reference = profile.prediction
    assert isinstance(reference, CategoricalFeature)
    shares = {str(c): float(np.mean(predicted == c)) for c in np.unique(predicted)}
    assert dict(reference.frequencies) == pytest.approx(shares)
    assert profile.categorical_features == (PREDICTION_FEATURE,)
    assert profile.categorical_inputs == ()
    assert profile.numeric_inputs == tuple(x.columns) == profile.numeric_features


def test_a_regressors_predictions_are_profiled_as_values() -> None:
    x, y = _frame(load_diabetes())
    model = Ridge().fit(x[:350], y[:350])
    predicted = model.predict(x[350:])
    built = build_profile(x[:350], predictions=predicted)
    reference = load_profile(built).prediction
    assert isinstance(reference, NumericFeature)
    edges = np.unique(np.quantile(predicted, np.arange(1, 10) / 10))
    assert reference.edges == pytest.approx(edges.tolist())
    expected = np.bincount(np.searchsorted(edges, predicted, side="left"),
                           minlength=edges.size + 1) / predicted.size
    assert reference.proportions == pytest.approx(expected.tolist())
    # The inputs' profile is the one built without predictions.
    without = build_profile(x[:350])
    assert {k: v for k, v in built["features"].items() if k != PREDICTION_FEATURE} == (
        without["features"])


@pytest.mark.parametrize("predictions, kind", [
    (np.array(["no", "yes", "yes"]), "categorical"),
    (np.array(["no", None, "yes"], dtype=object), "categorical"),
    (pd.Series([1.5, 2.5, 3.5]), "numeric"),
    ([True, False, True], "categorical"),
    (np.zeros((3, 2)), None),  # probabilities, several targets: not one value per row
    (np.zeros((3, 1)), None),
    (np.array([1 + 1j, 2j, 0j]), None),
    (np.array([], dtype=np.float64), None),
])
def test_only_one_value_or_class_per_row_is_profiled(predictions: Any, kind: str | None
                                                     ) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    profile = load_profile(build_profile(frame, predictions=predictions))
    reference = profile.prediction
    if kind is None:
        assert reference is None and list(profile.features) == ["x"]
    else:
        assert isinstance(reference, NumericFeature if kind == "numeric" else CategoricalFeature)


def test_an_input_column_named_like_the_prediction_is_refused() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], PREDICTION_FEATURE: [0, 1]})
    for predictions in (None, np.array([0, 1])):
        with pytest.raises(ValueError, match="`__prediction__` has the name the drift profile "
                                             "reserves for the model's predictions; rename"):
            build_profile(frame, predictions=predictions)


def test_an_input_column_named_like_the_prediction_is_not_taken_for_it() -> None:
    # At serving time, an input column of that name is ignored: only the model's own
    # predictions count under the name.
    profile = load_profile(build_profile(pd.DataFrame({"x": [1.0, 2.0]}),
                                         predictions=np.array([0, 1])))
    monitor = DriftMonitor(profile, window=10)
    monitor.observe_columns({"x": [1.0], PREDICTION_FEATURE: ["1"]})
    assert monitor.totals()[PREDICTION_FEATURE].tolist() == [0, 0, 0]
    monitor.observe_columns({"x": [1.0]}, np.array([1]))
    assert monitor.totals()[PREDICTION_FEATURE].tolist() == [0, 1, 0]


def test_an_old_profile_without_predictions_still_loads_and_monitors_the_inputs() -> None:
    old = {"format": PROFILE_FORMAT, "rows": 4, "features": {
        "a": {"kind": "numeric", "edges": [0.0], "proportions": [0.5, 0.5]},
        "c": {"kind": "categorical", "frequencies": {"x": 1.0}}}}
    profile = load_profile(old)
    assert profile.prediction is None
    assert profile.to_dict() == old
    monitor = DriftMonitor(profile, window=10)
    assert not monitor.monitors_predictions
    monitor.observe_matrix(np.array([[1.0], [-1.0]]), np.array([0, 1]))
    monitor.observe_columns({"a": [1.0], "c": ["x"]}, np.array([0.5]))
    monitor.observe_columns({}, np.array([1, 2]))  # predictions alone: nothing to count
    assert monitor.window_rows() == 3
    assert set(monitor.scores()) == set(monitor.totals()) == {"a", "c"}
    assert monitor.totals()["a"].tolist() == [1, 2]


# --------------------------------------------------------------------------- monitor


def _profile(kind: str) -> Profile:
    prediction: dict[str, Any] = (
        {"kind": "numeric", "edges": [0.0, 1.0, 2.5], "proportions": [0.1, 0.2, 0.3, 0.4]}
        if kind == "numeric" else
        {"kind": "categorical", "frequencies": {"0": 0.5, "1": 0.3, "yes": 0.2}})
    return load_profile({"format": PROFILE_FORMAT, "rows": 10, "features": {
        "a": {"kind": "numeric", "edges": [0.0], "proportions": [0.5, 0.5]},
        "k": {"kind": "categorical", "frequencies": {"x": 1.0}},
        "b": {"kind": "numeric", "edges": [], "proportions": [1.0]},
        PREDICTION_FEATURE: prediction}})


_numbers = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.5, 3.0, np.inf, -np.inf, np.nan])
_classes = st.sampled_from([0, 1, 2, 7])
_texts = st.sampled_from(["0", "1", "yes", "no", None])
_ways = st.sampled_from(["matrix", "matrix-without", "frame", "columns", "alone", "2-d",
                         "short", "scrape"])


@st.composite
def _batches(draw: st.DrawFn, kind: str) -> list[tuple[str, list[Any]]]:
    if kind == "numeric":
        values = _numbers
    else:
        values = draw(st.sampled_from([_classes, _texts, st.booleans()]))
    return draw(st.lists(st.tuples(_ways, st.lists(values, min_size=1, max_size=10)),
                         max_size=20))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["numeric", "categorical"]),
       window=st.integers(1, 40), flush_rows=st.integers(1, 30))
def test_the_prediction_bins_equal_a_numpy_recount(data: st.DataObject, kind: str,
                                                   window: int, flush_rows: int) -> None:
    profile = _profile(kind)
    reference = profile.prediction
    monitor = DriftMonitor(profile, window=window, flush_rows=flush_rows)
    history: list[Any] = []  # each observed row's counted prediction (None: missing)
    inputs = 0  # rows observed with their input "a"
    for way, values in data.draw(_batches(kind)):
        n = len(values)
        as_array = np.array(values, dtype=np.float64 if kind == "numeric" else None)
        if as_array.dtype.kind == "U" and None in values:
            as_array = np.array(values, dtype=object)
        x = np.zeros((n, 2))
        if way == "scrape":
            monitor.scores()
            continue
        if way == "matrix":
            monitor.observe_matrix(x, as_array)
        elif way == "matrix-without":
            monitor.observe_matrix(x)
        elif way == "frame":
            monitor.observe_columns(pd.DataFrame({"a": x[:, 0], "k": ["x"] * n}),
                                    pd.Series(values))
        elif way == "columns":
            monitor.observe_columns({"a": list(x[:, 0]), "b": x[:, 1]}, list(values))
        elif way == "alone":
            monitor.observe_columns({}, as_array)
        elif way == "2-d":  # not one value per row: the prediction counts as missing
            monitor.observe_matrix(x, np.stack([as_array, as_array], axis=1))
        else:  # fewer predictions than rows: missing too
            monitor.observe_matrix(np.zeros((n + 1, 2)), as_array)
            history.append(None)
        counted = way in ("matrix", "frame", "columns", "alone")
        inputs += 0 if way == "alone" else n + (way == "short")
        history += [v if counted else None for v in values]
    if kind == "numeric":
        history = [math.nan if v is None else v for v in history]
    assert monitor.totals()[PREDICTION_FEATURE].tolist() == _expected_counts(reference, history)
    recent = history[-window:]
    assert monitor.window_rows() == len(recent)
    assert monitor.window_counts(PREDICTION_FEATURE).tolist() == (
        _expected_counts(reference, recent))
    # The inputs of the same rows are still counted, and the scores have every feature.
    assert sum(monitor.totals()["a"].tolist()) == inputs
    assert list(monitor.scores()) == ["a", "k", "b", PREDICTION_FEATURE]


def test_the_gauge_and_the_counters_include_the_prediction() -> None:
    monitor = DriftMonitor(_profile("numeric"), window=100)
    monitor.observe_matrix(np.zeros((4, 2)), np.array([-1.0, 0.5, 0.7, 9.0]))
    previous = metrics.DRIFT_SERIES.monitor
    try:
        metrics.publish_drift(monitor)
        page, _ = metrics.exposition()
    finally:
        metrics.DRIFT_SERIES.monitor = previous
    samples = [s for f in text_string_to_metric_families(page.decode()) for s in f.samples
               if s.labels.get(names.FEATURE_LABEL) == PREDICTION_FEATURE]
    gauge = [s for s in samples if s.name == names.FEATURE_DRIFT]
    assert [s.labels[names.STATISTIC_LABEL] for s in gauge] == [names.PSI]
    assert gauge[0].value == pytest.approx(monitor.scores()[PREDICTION_FEATURE])
    counts = {s.labels[names.BIN_LABEL]: s.value for s in samples
              if s.name == names.DRIFT_OBSERVATIONS + "_total"}
    assert counts == {"0": 1, "1": 2, "2": 0, "3": 1}
    shares = {s.labels[names.BIN_LABEL]: s.value for s in samples
              if s.name == names.DRIFT_REFERENCE}
    assert shares == pytest.approx({"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4})


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module", params=["classifier", "regressor"])
def model_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, Any]]:
    frame, target = training_frame()
    if request.param == "classifier":
        model: Any = LogisticRegression(max_iter=1000).fit(frame, target)
    else:
        model = Ridge().fit(frame, target + frame["f2"].to_numpy())
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    return path, build_profile(frame[:200], predictions=model.predict(frame[200:]))


def test_every_scoring_path_feeds_the_predictions_it_answers(
        model_path: tuple[Path, dict[str, Any]]) -> None:
    path, built = model_path
    profile = load_profile(built)
    served = load_served_model(str(path))
    monitor = DriftMonitor(profile, window=10_000)
    fast = ServedModel(served.info, served.signature, fast_predict=served.fast_predict,
                       pyfunc_model=served.model, drift=monitor)
    general = general_only(fast)
    assert fast.fast_spec is not None and general.fast_spec is None
    frame, _ = training_frame(rows=60)
    answered: list[Any] = []
    body = frame[:20].to_json(orient="split", index=False)
    doc = ('{"dataframe_split": ' + body + "}").encode()
    for model in (fast, general):  # /invocations: the fast path and MLflow's
        answer = model.invoke(doc, "application/json")
        assert answer.status == 200
        answered += list(np.asarray(answer.predictions))
    # What an Open Inference Protocol request gives the model: decoded input.
    answered += list(fast.predict_data(frame[20:40]))
    answered += list(general.predict_data(frame[40:60]))
    expected = list(mlflow.pyfunc.load_model(str(path)).predict(
        pd.concat([frame[:20], frame[:20], frame[20:60]])))
    assert np.asarray(answered).tolist() == pytest.approx(np.asarray(expected).tolist())
    assert monitor.totals()[PREDICTION_FEATURE].tolist() == (
        _expected_counts(profile.prediction, expected))
    assert monitor.window_rows() == 80
    # The inputs of the same rows, on both paths.
    assert sum(monitor.totals()["f0"].tolist()) == 80
