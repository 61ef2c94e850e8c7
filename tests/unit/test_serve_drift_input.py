"""The general path's JSON requests feed the drift monitor from their decoded document
(`pulumi_mlops.runtime.serve.drift_input`), not from the DataFrame MLflow builds of them. The
reference is what the model itself received: a model that keeps every frame MLflow's scoring
function and schema enforcement hand it, read value by value and recounted by hand. Payloads
in every named shape, the profile's columns in every MLflow column type it reads from JSON
(float32 included, with values on its bin edges), absent and null values, columns it does not
monitor, and values MLflow refuses."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from pulumi_mlops.runtime.drift import DriftMonitor, build_profile, load_profile
from pulumi_mlops.runtime.drift.spec import (
    PREDICTION_FEATURE,
    CategoricalFeature,
    NumericFeature,
    Profile,
)
from pulumi_mlops.runtime.serve.drift_input import drift_reader
from pulumi_mlops.runtime.serve.loading import load_served_model
from pulumi_mlops.runtime.serve.model import ServedModel
from pulumi_mlops.runtime.serve.payload import ColumnSpec, PayloadError
from tests.unit.drift_data import missing, recount

JSON = "application/json"
# The profile's features with their signature types; `note` is a column it does not monitor.
_TYPES = {"x": "double", "f32": "float", "n": "long", "i": "integer", "city": "string",
          "flag": "boolean", "note": "string"}
_REQUIRED = {"x", "n"}
_FEATURES = ("x", "f32", "n", "i", "city", "flag")
_CITIES = [f"c{i}" for i in range(8)]


class Keeping(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Keeps every frame it is given; predicts a number per row."""

    # No type hints: MLflow would try to derive a signature from them.
    def __init__(self):  # type: ignore[no-untyped-def]
        self.seen = []

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        predictions = model_input["x"].fillna(0.0).to_numpy(dtype=np.float64) * 2.0
        self.seen.append(model_input.copy())
        return predictions


def _training() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = 2000
    return pd.DataFrame({
        "x": rng.normal(size=rows),
        "f32": rng.normal(size=rows).astype(np.float32),
        "n": rng.integers(0, 20, size=rows),
        "i": rng.integers(0, 5, size=rows).astype(np.int32),
        "city": rng.choice(_CITIES[:6], size=rows),
        "flag": rng.random(rows) < 0.3,
    })


@pytest.fixture(scope="module")
def profile() -> Profile:
    frame = _training()
    return load_profile(build_profile(frame, predictions=frame["x"].to_numpy() * 2.0))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model, with the column signature of `_TYPES`."""
    path = tmp_path_factory.mktemp("keeping") / "model"
    schema = Schema([ColSpec(t, n, required=n in _REQUIRED) for n, t in _TYPES.items()])
    mlflow.pyfunc.save_model(str(path), python_model=Keeping(),
                             signature=ModelSignature(inputs=schema))
    return path


@pytest.fixture(scope="module")
def unsigned_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model without a signature: pandas infers its frames' dtypes."""
    path = tmp_path_factory.mktemp("unsigned") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to log a signature
        mlflow.pyfunc.save_model(str(path), python_model=Keeping())
    return path


def _served(path: Path, monitor: DriftMonitor, coerce: str = "strict") -> ServedModel:
    loaded = load_served_model(str(path))
    return ServedModel(loaded.info, loaded.signature, pyfunc_model=loaded.model, drift=monitor,
                       coerce=coerce, mlmodel=loaded.mlmodel)


def _edges(profile: Profile, name: str) -> list[float]:
    feature = profile.features[name]
    assert isinstance(feature, NumericFeature)
    return [float(e) for e in feature.edges]


def _row(profile: Profile) -> st.SearchStrategy[dict[str, Any]]:
    # Values on the bins' edges (float32 ones too: the cast decides their bin), nulls, absent
    # optional columns (`...`), and values MLflow converts or refuses (text or a boolean for
    # a number, a fraction for an integer).
    f32 = _edges(profile, "f32")
    return st.fixed_dictionaries({
        "x": st.sampled_from([*_edges(profile, "x")[:4], -2.5, 0.0, 7, None, "1.5", True]),
        "f32": st.sampled_from([*f32[:4], *(float(np.float32(e)) for e in f32[:4]),
                                float(np.nextafter(f32[0], 0.0)), 0.25, None, ...]),
        "n": st.sampled_from([0, 3, 19, 25, -1]),
        "i": st.sampled_from([0, 2, 4, 9, 2.5, 3.0, ...]),
        "city": st.sampled_from([*_CITIES, "", None, ...]),
        "flag": st.sampled_from([True, False, ...]),
        "note": st.sampled_from(["a", "b", ...]),
    })


def _payload(shape: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``rows`` in one of the named payload shapes (``...`` marks a value not sent)."""
    names = [n for n in _TYPES if all(r[n] is not ... for r in rows)]
    if shape == "split":
        return {"dataframe_split": {"columns": names, "data": [[r[n] for n in names]
                                                                for r in rows]}}
    if shape == "split-reordered":
        names = names[::-1]
        return {"dataframe_split": {"columns": names, "data": [[r[n] for n in names]
                                                                for r in rows]},
                "params": {}}
    records = [{n: v for n, v in r.items() if v is not ...} for r in rows]
    if shape == "records":
        return {"dataframe_records": records}
    if shape == "instances":
        return {"instances": [{n: r[n] for n in names} for r in rows]}
    return {"inputs": {n: [r[n] for r in rows] for n in names}}


_SHAPES = ("split", "split-reordered", "records", "instances", "inputs")


def _seen_rows(frames: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """The frames' rows value by value, as the profile's features (None where absent)."""
    rows = []
    for frame in frames:
        labels = list(frame.columns)
        for i in range(len(frame)):
            row: dict[str, Any] = {
                n: frame.iat[i, labels.index(n)] if n in labels else None for n in _FEATURES}
            row[PREDICTION_FEATURE] = 2.0 * (0.0 if missing(row["x"]) else float(row["x"]))
            rows.append(row)
    return rows


@pytest.mark.parametrize("coerce", ["strict", "lossy"])
@pytest.mark.parametrize("signed", [True, False], ids=["signature", "no-signature"])
def test_every_named_shape_and_column_type_counts_what_the_model_received(
    profile: Profile, model_path: Path, unsigned_path: Path, coerce: str, signed: bool
) -> None:
    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(requests=st.lists(st.tuples(st.sampled_from(_SHAPES),
                                       st.lists(_row(profile), min_size=1, max_size=3)),
                             min_size=1, max_size=6))
    def check(requests: list[tuple[str, list[dict[str, Any]]]]) -> None:
        monitor = DriftMonitor(profile, window=10_000)
        served = _served(model_path if signed else unsigned_path, monitor, coerce)
        keeping = served.model.unwrap_python_model()
        answered = 0
        for shape, rows in requests:
            try:
                answer = served.invoke(orjson.dumps(_payload(shape, rows)), JSON)
            except PayloadError:  # refused before MLflow's parser
                continue
            answered += answer.status == 200
        # Every answered request's rows, as the model received them; nothing of the refused.
        assert len(keeping.seen) == answered
        expected = recount(profile, _seen_rows(keeping.seen))
        assert {n: c.tolist() for n, c in monitor.totals().items()} == expected

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own use of pandas
        check()


def test_the_common_shapes_are_read_from_the_json_and_never_from_the_frame(
    profile: Profile, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = DriftMonitor(profile, window=100)
    served = _served(model_path, monitor)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the frame was read")

    monkeypatch.setattr(monitor, "observe_columns", refuse)
    row = {"x": 0.5, "f32": 0.25, "n": 3, "i": 1, "city": "c1", "flag": True, "note": "a"}
    for shape in _SHAPES:
        answer = served.invoke(orjson.dumps(_payload(shape, [row, row])), JSON)
        assert answer.status == 200, answer.body
    assert monitor.window_rows() == 2 * len(_SHAPES)
    city = profile.features["city"]
    assert isinstance(city, CategoricalFeature)
    assert monitor.window_counts("city")[list(city.frequencies).index("c1")] == 2 * len(_SHAPES)


@pytest.mark.parametrize("doc", [
    {"dataframe_split": {"data": [[0.5, 0.25, 3, 1, "c1", True, "a"]]}},  # positional
    {"dataframe_split": {"columns": [*_TYPES, "x"], "data": [[0] * 8]}},  # a name twice
    {"dataframe_split": {"columns": list(_TYPES), "data": [[0.5, 0.25]]}},  # a short row
    {"dataframe_records": {"x": [0.5]}},
    {"inputs": [[0.5, 0.25, 3, 1, "c1", True, "a"]]},
    {"inputs": {"x": 0.5, "n": 3}},  # scalars, not columns
    {"inputs": {"x": [0.5, 1.0], "n": [3]}},  # columns of two lengths
    {"inputs": {"x": [0.5]}, "instances": [{"x": 0.5}]},  # two shapes
    {"dataframe_records": [{"x": True, "n": 3}]},  # a boolean for a number
    {"dataframe_records": [{"x": "0.5", "n": 3}]},  # text for a number
    {"dataframe_records": [{"x": [0.5], "n": 3}]},  # a list for a number
    {"dataframe_records": [{"x": 0.5, "n": 3, "city": 7}]},  # a number for text
    {"dataframe_records": [{"x": 0.5, "n": 3, "flag": None}]},  # null for a boolean
    {"dataframe_records": [{"x": 0.5, "n": 3}, 7]},
    ["x"],
])
def test_documents_it_cannot_read_as_the_frame_holds_them_are_left_to_the_frame(
    profile: Profile, doc: Any
) -> None:
    columns = [ColumnSpec(n, t, n in _REQUIRED) for n, t in _TYPES.items()]
    reader = drift_reader(columns, DriftMonitor(profile))
    assert reader is not None
    assert reader.rows(doc) is None


def test_a_model_whose_signature_does_not_say_how_a_feature_reads_reads_frames(
    profile: Profile
) -> None:
    monitor = DriftMonitor(profile)
    columns = [ColumnSpec(n, t) for n, t in _TYPES.items()]
    assert drift_reader(columns, monitor) is not None
    assert drift_reader(None, monitor) is not None  # no signature: pandas infers as JSON reads
    assert drift_reader(None, monitor, tensors=True) is None  # MLflow builds arrays
    for name, kind in (("x", "string"), ("city", "long"), ("flag", "double"),
                       ("n", "datetime")):
        other = [ColumnSpec(n, kind if n == name else t) for n, t in _TYPES.items()]
        assert drift_reader(other, monitor) is None, name
    without = [c for c in columns if c.name != "i"]  # a feature the signature lacks
    assert drift_reader(without, monitor) is None


def test_with_lossy_coercion_a_value_mlflow_converts_sends_the_request_to_the_frame(
    profile: Profile, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = DriftMonitor(profile, window=100)
    served = _served(model_path, monitor, coerce="lossy")
    framed: list[Any] = []
    observe_columns = monitor.observe_columns

    def spy(columns: Any, predictions: Any = None) -> None:
        framed.append(columns)
        observe_columns(columns, predictions)

    monkeypatch.setattr(monitor, "observe_columns", spy)
    row = {"x": 0.5, "f32": 0.25, "n": 3, "i": 1, "city": "c1", "flag": True, "note": "a"}
    for i, value in enumerate((1, 2.7)):  # as sent, then converted by MLflow (a fraction)
        answer = served.invoke(json.dumps({"dataframe_records": [{**row, "i": value}]}).encode(),
                               JSON)
        assert answer.status == 200, answer.body
        assert len(framed) == i  # the JSON stood for the frame the first time only
    keeping = served.model.unwrap_python_model()
    assert {n: c.tolist() for n, c in monitor.totals().items()} == (
        recount(profile, _seen_rows(keeping.seen)))


@pytest.mark.parametrize("features", [("city",), ("x",), ("x", "city"), ("n", "x", "city"),
                                      ("x", "f32", "n", "i", "city", "flag")])
def test_a_profile_of_any_few_features_reads_them_in_its_own_order(features: tuple[str, ...]
                                                                    ) -> None:
    frame = _training()[list(features)]
    monitor = DriftMonitor(load_profile(build_profile(frame)))
    columns = [ColumnSpec(n, t) for n, t in _TYPES.items()]
    reader = drift_reader(columns, monitor)
    assert reader is not None
    row = {"x": 0.5, "f32": 0.25, "n": 3, "i": 1, "city": "c1", "flag": True, "note": "a"}
    for shape in _SHAPES:
        read = reader.rows(_payload(shape, [row, row]))
        assert read is not None, shape
        x, categorical = read
        assert x.tolist() == [[row[n] for n in monitor.numeric_inputs]] * 2
        assert [None if c is None else c.tolist() for c in categorical] == [
            [row[n]] * 2 for n in monitor.categorical_inputs]


def test_a_request_of_no_rows_reads_as_no_rows(profile: Profile) -> None:
    columns = [ColumnSpec(n, t) for n, t in _TYPES.items()]
    reader = drift_reader(columns, DriftMonitor(profile))
    assert reader is not None
    for doc in ({"dataframe_split": {"columns": list(_TYPES), "data": []}},
                {"inputs": {"x": [], "city": []}}):
        read = reader.rows(doc)
        assert read is not None
        assert read[0].shape == (0, 4) and read[1] == (None, None)
