"""The scoring app in-process: protocol, strict inputs (4xx, never 5xx), the fast path."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from pulumi_mlops.runtime.serve.app import ScoringApp
from pulumi_mlops.runtime.serve.limits import Limits
from pulumi_mlops.runtime.serve.loading import load_served_model
from pulumi_mlops.runtime.serve.model import ServedModel
from pulumi_mlops.runtime.serve.payload import ColumnSpec, FastSpec, fast_matrix
from tests.asgi import asgi_request
from tests.unit.serving_data import COLUMNS, general_only, training_frame

JSON = "application/json"


def call(app: ScoringApp, method: str, path: str, body: bytes = b"",
         content_type: str | None = JSON) -> tuple[int, Any]:
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    status, payload, _ = asgi_request(app, method, path, body, headers)
    try:
        return status, orjson.loads(payload)
    except orjson.JSONDecodeError:
        return status, payload


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    return path


@pytest.fixture(scope="module")
def served(model_path: Path) -> ServedModel:
    return load_served_model(str(model_path))


@pytest.fixture(scope="module")
def pyfunc_model(model_path: Path) -> Any:
    """The reference: the same model loaded by MLflow itself."""
    return mlflow.pyfunc.load_model(str(model_path))


@pytest.fixture(scope="module")
def app(served: ServedModel) -> ScoringApp:
    return ScoringApp(served, limits=Limits(max_body_bytes=4096))


def split(rows: Sequence[Sequence[Any]], columns: Sequence[str] = COLUMNS) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": list(columns), "data": rows}})


GOOD_ROW = [0.1, -0.2, 0.3, 1.5, 0.0, 3]


def test_fast_path_applies_to_a_numeric_sklearn_signature(served: ServedModel) -> None:
    assert served.fast_spec is not None and served.fast_spec.names == tuple(COLUMNS)
    assert [c.type for c in served.columns or []] == ["double"] * 5 + ["long"]


@pytest.mark.parametrize("body, content_type", [
    (split([GOOD_ROW]), JSON),
    (orjson.dumps({"dataframe_records": [dict(zip(COLUMNS, GOOD_ROW, strict=True))]}), JSON),
    (orjson.dumps({"instances": [dict(zip(COLUMNS, GOOD_ROW, strict=True))]}), JSON),
    (orjson.dumps({"inputs": {c: [v] for c, v in zip(COLUMNS, GOOD_ROW, strict=True)}}), JSON),
    (orjson.dumps({"inputs": {c: v for c, v in zip(COLUMNS, GOOD_ROW, strict=True)}}), JSON),
    (pd.DataFrame([GOOD_ROW], columns=COLUMNS).to_parquet(), "application/vnd.apache.parquet"),
    ((",".join(COLUMNS) + "\n" + ",".join(map(str, GOOD_ROW)) + "\n").encode(), "text/csv"),
], ids=["dataframe_split", "dataframe_records", "instances", "inputs", "inputs-scalars",
        "parquet", "csv"])
def test_every_format_predicts_what_pyfunc_predicts(
    app: ScoringApp, pyfunc_model: Any, body: bytes, content_type: str
) -> None:
    expected = pyfunc_model.predict(pd.DataFrame([GOOD_ROW], columns=COLUMNS))
    for server in (ScoringApp(app.model), ScoringApp(general_only(app.model))):
        status, answer = call(server, "POST", "/invocations", body, content_type)
        assert status == 200, answer
        assert answer == {"predictions": expected.tolist()}


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
rows_strategy = st.lists(
    st.tuples(*[finite] * 5, st.integers(min_value=-1000, max_value=1000)).map(list),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy)
def test_fast_path_returns_exactly_what_pyfunc_predict_returns(
    served: ServedModel, pyfunc_model: Any, rows: list[list[Any]]
) -> None:
    answer = served.invoke(split(rows), JSON)
    reference = pyfunc_model.predict(pd.DataFrame(rows, columns=COLUMNS))
    assert answer.status == 200
    fast = answer.predictions
    assert type(fast) is type(reference)
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


# Values of every kind a client sends, lossy ones included: the fast path must answer exactly
# what the general path (MLflow's scoring functions) answers for each.
any_value = st.one_of(
    finite, st.integers(min_value=-1000, max_value=1000), st.just(2.5), st.just(3.0),
    st.just(float("nan")), st.just(float("inf")), st.none(), st.booleans(),
    st.sampled_from(["3", "x", ""]), st.integers(min_value=2**63, max_value=2**64),
)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, str]:
    n = draw(st.integers(min_value=1, max_value=4))
    columns = list(COLUMNS)
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 5)) == 0:
        columns = columns[:-1]
    if draw(st.integers(0, 5)) == 0:
        columns = [*columns, "extra"]
    clean = draw(st.booleans())
    cell = st.one_of(finite, st.integers(-1000, 1000)) if clean else any_value
    rows = [[draw(st.integers(-1000, 1000)) if c == "n" and clean else draw(cell)
             for c in columns] for _ in range(n)]
    if draw(st.integers(0, 6)) == 0 and rows[0]:
        rows[0] = rows[0][:-1]  # ragged
    fmt = draw(st.sampled_from(["split", "split-int-names", "split-no-names", "records",
                                "inputs", "instances", "csv"]))
    if fmt == "csv":
        text = ",".join(columns) + "\n" + "".join(
            ",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
        return text.encode(), "text/csv"
    if fmt == "split":
        doc: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": rows}}
    elif fmt == "split-int-names":  # what pd.DataFrame(ndarray).to_dict("split") gives
        doc = {"dataframe_split": {"columns": list(range(len(columns))), "data": rows}}
    elif fmt == "split-no-names":
        doc = {"dataframe_split": {"data": rows}}
    elif fmt == "records":
        doc = {"dataframe_records": [dict(zip(columns, r, strict=False)) for r in rows]}
    elif fmt == "inputs":
        doc = {"inputs": {c: [r[j] for r in rows if j < len(r)] for j, c in enumerate(columns)}}
    else:
        doc = {"instances": [dict(zip(columns, r, strict=False)) for r in rows]}
    if draw(st.integers(0, 8)) == 0:
        doc["params"] = {"threshold": 0.5}
    import json

    return json.dumps(doc).encode(), JSON  # json writes NaN/Infinity tokens, as clients do


def _outcome(model: ServedModel, body: bytes, content_type: str) -> tuple[int, Any]:
    from pulumi_mlops.runtime.serve.payload import PayloadError

    try:
        answer = model.invoke(body, content_type)
    except PayloadError as err:
        return err.status, err.message
    if answer.status != 200:
        return answer.status, orjson.loads(answer.body)["error_code"]
    import json

    return 200, json.loads(answer.body)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads())
def test_the_fast_path_accepts_and_answers_exactly_what_the_general_path_does(
    served: ServedModel, payload: tuple[bytes, str]
) -> None:
    general = general_only(served)
    body, content_type = payload
    assert _outcome(served, body, content_type) == _outcome(general, body, content_type)


MALFORMED = [
    ("no-content-type", split([GOOD_ROW]), None, 415),
    ("text-plain", b"hello", "text/plain", 415),
    ("form-encoded", b"a=1", "application/x-www-form-urlencoded", 415),
    ("not-utf8-charset", split([GOOD_ROW]), "application/json; charset=latin-1", 415),
    ("malformed-json", b'{"dataframe_split": ', JSON, 400),
    ("empty-body", b"", JSON, 400),
    ("json-array", b"[1, 2]", JSON, 400),
    ("unknown-format-key", orjson.dumps({"data": [GOOD_ROW]}), JSON, 400),
    ("two-format-keys", orjson.dumps({"instances": [GOOD_ROW], "inputs": [GOOD_ROW]}), JSON, 400),
    ("split-without-data", orjson.dumps({"dataframe_split": {"columns": COLUMNS}}), JSON, 400),
    ("split-data-not-rows", orjson.dumps({"dataframe_split": {"columns": COLUMNS,
                                                               "data": [1, 2]}}), JSON, 400),
    ("row-width-mismatch", split([GOOD_ROW[:-1]]), JSON, 400),
    ("missing-column", split([GOOD_ROW[1:]], COLUMNS[1:]), JSON, 400),
    ("string-for-double", split([["0.1", *GOOD_ROW[1:]]]), JSON, 400),
    ("bool-for-double", split([[True, *GOOD_ROW[1:]]]), JSON, 400),
    ("null-in-required", split([[None, *GOOD_ROW[1:]]]), JSON, 400),
    ("fraction-for-long", split([[*GOOD_ROW[:-1], 2.9]]), JSON, 400),
    ("string-for-long", split([[*GOOD_ROW[:-1], "3"]]), JSON, 400),
    ("bool-for-long", split([[*GOOD_ROW[:-1], False]]), JSON, 400),
    ("long-out-of-range", split([[*GOOD_ROW[:-1], 777]]).replace(
        b"777", b"1180591620717411303424"), JSON, 400),
    ("object-for-double", split([[{"x": 1}, *GOOD_ROW[1:]]]), JSON, 400),
    ("records-with-different-keys", orjson.dumps({"dataframe_records": [
        dict(zip(COLUMNS, GOOD_ROW, strict=True)), {"f0": 1.0}]}), JSON, 400),
    ("instances-wrong-width", orjson.dumps({"instances": [[1.0, 2.0]]}), JSON, 400),
    ("csv-wrong-field-count", b"f0,f1\n1.0\n", "text/csv", 400),
    ("csv-not-a-number", (",".join(COLUMNS) + "\nabc,1,1,1,1,1\n").encode(), "text/csv", 400),
    ("csv-not-utf8", b"\xff\xfe\x00", "text/csv", 400),
    ("parquet-not-parquet", b"PAR1 nope", "application/vnd.apache.parquet", 400),
    ("body-over-limit", split([GOOD_ROW] * 200), JSON, 413),
    ("no-rows", split([]), JSON, 400),
]


@pytest.mark.parametrize("body, content_type, expected",
                         [pytest.param(b, c, e, id=i) for i, b, c, e in MALFORMED])
def test_malformed_payloads_get_a_client_error_never_a_server_error(
    app: ScoringApp, body: bytes, content_type: str | None, expected: int
) -> None:
    status, answer = call(app, "POST", "/invocations", body, content_type)
    assert status == expected, answer
    if isinstance(answer, dict):
        assert answer["error_code"] and answer["message"]
    else:  # MLflow answers its 415s in plain text
        assert status == 415 and answer


@pytest.mark.parametrize("row, column, why", [
    ([*GOOD_ROW[:-1], 2.9], "'n'", "fraction"),
    ([*GOOD_ROW[:-1], "7"], "'n'", "string"),
    ([True, *GOOD_ROW[1:]], "'f0'", "boolean"),
    ([*GOOD_ROW[:-1], float("inf")], "'n'", "finite"),
])
def test_lossy_values_are_refused_naming_the_column_unless_coerce_is_lossy(
    served: ServedModel, pyfunc_model: Any, row: list[Any], column: str, why: str
) -> None:
    import json

    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [row]}}).encode()
    status, answer = call(ScoringApp(served), "POST", "/invocations", body)
    assert status == 400 and column in answer["message"] and why in answer["message"]
    assert "--coerce lossy" in answer["message"]
    lossy = ServedModel(served.info, served.signature, pyfunc_model=pyfunc_model,
                        coerce="lossy")
    status, answer = call(ScoringApp(lossy), "POST", "/invocations", body)
    # What MLflow's own scoring function answers for it (200 with the converted value, or
    # MLflow's own 400 when it cannot convert either).
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        reference = scoring_server.invocations(body, JSON, pyfunc_model,
                                               pyfunc_model.metadata.get_input_schema())
    except MlflowException as err:
        assert status == err.get_http_status_code()
        assert answer["error_code"] == err.error_code
    else:
        assert status == reference.status
        assert answer == orjson.loads(reference.response)


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/invocations", 405), ("POST", "/ping", 405), ("PUT", "/version", 405),
    ("GET", "/nope", 404), ("GET", "/ping", 200), ("GET", "/health", 200),
])
def test_routes_and_methods(app: ScoringApp, method: str, path: str, expected: int) -> None:
    assert call(app, method, path)[0] == expected


def test_health_is_503_while_draining(served: ServedModel) -> None:
    draining = ScoringApp(served)
    draining.ready = False
    assert call(draining, "GET", "/health")[0] == 503
    assert call(draining, "GET", "/ping")[0] == 503


def test_an_unexpected_error_is_a_500_counted_as_500(served: ServedModel,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The finding: unhandled errors were counted under code="200".
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug of ours")

    failing = ScoringApp(served)
    monkeypatch.setattr(served, "prepare", broken)
    before = _counted(failing, "500")
    status, answer = call(failing, "POST", "/invocations", split([GOOD_ROW]))
    assert status == 500 and answer["error_code"] == "INTERNAL_ERROR"
    assert "a bug of ours" not in orjson.dumps(answer).decode()
    assert _counted(failing, "500") == before + 1


def _counted(app: ScoringApp, code: str) -> float:
    page = call(app, "GET", "/metrics")[1].decode()
    line = next((x for x in page.splitlines()
                 if x.startswith(f'mlops_requests_total{{code="{code}"}}')), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_version_answers_the_mlflow_version_as_mlflow_does(app: ScoringApp) -> None:
    status, answer = call(app, "GET", "/version")
    assert status == 200
    assert answer == mlflow.__version__ or answer == mlflow.__version__.encode()


def test_metrics_count_requests_batches_and_classes(app: ScoringApp) -> None:
    call(app, "POST", "/invocations", split([GOOD_ROW] * 3))
    call(app, "POST", "/invocations", b"{", JSON)
    status, text = call(app, "GET", "/metrics")
    page = text.decode()
    assert status == 200
    assert 'mlops_requests_total{code="200"}' in page
    assert 'mlops_requests_total{code="400"}' in page
    assert "mlops_batch_rows_bucket" in page and "mlops_request_duration_seconds_bucket" in page
    assert "mlops_predictions_total{class=" in page
    assert "mlops_model_info{" in page


class Exploding(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    # No type hints: MLflow would try to derive a signature from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_a_model_that_raises_gets_mlflows_400_logged_in_one_line_the_trace_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame, _ = training_frame(5)
    path = tmp_path / "exploding"
    mlflow.pyfunc.save_model(str(path), python_model=Exploding(),
                             signature=infer_signature(frame, np.zeros(5)))
    exploding = ScoringApp(load_served_model(str(path)))
    with caplog.at_level(logging.WARNING, logger="mlops.serve"):
        status, answer = call(exploding, "POST", "/invocations", split([GOOD_ROW]))
    assert status == 400 and answer["error_code"] == "BAD_REQUEST"  # as MLflow answers it
    # A client error: one line, no stack trace (a client could fill the log with them).
    lines = [r.getMessage() for r in caplog.records if r.name == "mlops.serve"]
    assert len(lines) == 1 and lines[0].startswith("400 /invocations: "), lines
    assert "boom" not in caplog.text and "Traceback" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mlops.serve"):
        status, answer = call(exploding, "POST", "/invocations", split([GOOD_ROW]))
    assert answer["request_id"] in caplog.text
    assert "boom" in caplog.text  # the traceback is there for debugging, never sent
    assert "boom" not in orjson.dumps(answer).decode()


class Tensor(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return np.asarray(model_input).sum(axis=1)


def test_a_tensor_model_rejects_the_wrong_shape_with_400(tmp_path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    path = tmp_path / "tensor"
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))
    mlflow.pyfunc.save_model(str(path), python_model=Tensor(), signature=signature)
    tensor_app = ScoringApp(load_served_model(str(path)))
    status, answer = call(tensor_app, "POST", "/invocations",
                          orjson.dumps({"instances": [[1.0, 2.0, 3.0]]}))
    assert (status, answer) == (200, {"predictions": [6.0]})
    status, _ = call(tensor_app, "POST", "/invocations", orjson.dumps({"instances": [[1.0, 2.0]]}))
    assert status == 400


def test_sampled_prediction_log_writes_one_json_line_per_request(
    served: ServedModel, capfd: pytest.CaptureFixture[str]
) -> None:
    logging_app = ScoringApp(served, prediction_log_rate=1.0)
    call(logging_app, "POST", "/invocations", split([GOOD_ROW, GOOD_ROW]))
    call(logging_app, "POST", "/invocations", b"{", JSON)  # errors are not predictions
    lines = [line for line in capfd.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert record["inputs"] == {"dataframe_split": {"columns": COLUMNS,
                                                    "data": [GOOD_ROW, GOOD_ROW]}}
    assert len(record["outputs"]["predictions"]) == 2
    assert record["latency_ms"] >= 0 and len(record["request_id"]) == 32
    assert set(record) >= {"ts", "model_name", "model_version", "model_uri"}


def test_prediction_log_is_off_by_default(
    app: ScoringApp, capfd: pytest.CaptureFixture[str]
) -> None:
    call(app, "POST", "/invocations", split([GOOD_ROW]))
    assert capfd.readouterr().out == ""


def test_a_model_without_signature_is_served_through_pyfunc(tmp_path: Path) -> None:
    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    path = tmp_path / "unsigned"
    mlflow.sklearn.save_model(model, str(path))
    unsigned = load_served_model(str(path))
    assert unsigned.columns is None and unsigned.fast_predict is None
    status, answer = call(ScoringApp(unsigned), "POST", "/invocations", split([GOOD_ROW]))
    assert status == 200
    assert answer["predictions"] == model.predict(
        pd.DataFrame([GOOD_ROW], columns=COLUMNS)).tolist()


@pytest.fixture(scope="module")
def tensor_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn model logged from numpy arrays: a (-1, 6) float64 tensor signature."""
    frame, target = training_frame()
    matrix = frame.to_numpy(dtype=np.float64)
    model = LogisticRegression(max_iter=1000).fit(matrix, target)
    path = tmp_path_factory.mktemp("tensor") / "model"
    mlflow.sklearn.save_model(model, str(path), pyfunc_predict_fn="predict_proba",
                              signature=infer_signature(matrix, model.predict_proba(matrix)))
    return path


def test_a_sklearn_tensor_signature_takes_the_fast_path(tensor_model_path: Path) -> None:
    served = load_served_model(str(tensor_model_path))
    assert served.signature.tensor is not None and served.signature.tensor.shape == (-1, 6)
    assert served.fast_spec is not None and served.fast_spec.width == 6
    app = ScoringApp(served)
    status, answer = call(app, "POST", "/invocations", orjson.dumps({"inputs": [GOOD_ROW]}))
    reference = mlflow.pyfunc.load_model(str(tensor_model_path)).predict(
        np.asarray([GOOD_ROW], dtype=np.float64))
    assert status == 200 and answer == {"predictions": reference.tolist()}
    for bad in ([GOOD_ROW[:5]], [[*GOOD_ROW[:5], True]], [[*GOOD_ROW[:5], None]],
                [[*GOOD_ROW[:5], "3"]]):
        status, answer = call(app, "POST", "/invocations", orjson.dumps({"inputs": bad}))
        assert status == 400, (bad, answer)


def test_a_fast_path_model_silences_only_the_feature_names_warning(served: ServedModel) -> None:
    # The fast path gives the estimator a matrix for its checked columns; scikit-learn would
    # warn on every request that the matrix has no feature names.
    with warnings.catch_warnings():
        warnings.resetwarnings()
        ServedModel(served.info, served.signature, fast_predict=served.fast_predict,
                    pyfunc_model=served.model, mlmodel=served.mlmodel)
        assert [(f[0], f[1].pattern if f[1] else None, f[2]) for f in warnings.filters] == [
            ("ignore", "X does not have valid feature names", UserWarning)]


@pytest.mark.parametrize("hidden", [True, False])
def test_a_boolean_among_many_numbers_leaves_the_fast_path(hidden: bool) -> None:
    # numpy reads a boolean as 1 or 0, so the recognizer checks exact types wherever those
    # numbers appear: one boolean in the middle of a 100-row batch must not pass as a number.
    spec = FastSpec.for_columns([ColumnSpec("a", "double"), ColumnSpec("b", "long")])
    assert spec is not None
    rows: list[list[Any]] = [[i + 0.5, i] for i in range(100)]
    assert fast_matrix({"dataframe_split": {"columns": ["a", "b"], "data": rows}},
                       spec) is not None
    rows[50] = [1.0, hidden]
    assert fast_matrix({"dataframe_split": {"columns": ["a", "b"], "data": rows}}, spec) is None
    rows[50] = [hidden, 1]
    assert fast_matrix({"dataframe_split": {"columns": ["a", "b"], "data": rows}}, spec) is None


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy)
def test_tensor_fast_path_returns_exactly_what_pyfunc_predict_returns(
    tensor_served: ServedModel, tensor_pyfunc: Any, rows: list[list[Any]]
) -> None:
    answer = tensor_served.invoke(orjson.dumps({"instances": rows}), JSON)
    assert answer.status == 200
    fast = answer.predictions
    reference = tensor_pyfunc.predict(np.asarray(rows, dtype=np.float64))
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """A regressor: float outputs show any difference in the estimator's input, to the bit."""
    from sklearn.linear_model import Ridge

    frame, _ = training_frame()
    model = Ridge().fit(frame, frame["f0"] * 0.3 + frame["n"] * 0.01)
    path = tmp_path_factory.mktemp("ridge") / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    return load_served_model(str(path))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads())
def test_the_fast_path_gives_a_regressor_the_bits_the_general_path_gives(
    regressor: ServedModel, payload: tuple[bytes, str]
) -> None:
    assert regressor.fast_spec is not None
    body, content_type = payload
    assert _outcome(regressor, body, content_type) == _outcome(
        general_only(regressor), body, content_type)


@st.composite
def tensor_payloads(draw: st.DrawFn) -> bytes:
    clean = draw(st.booleans())
    width = draw(st.sampled_from([6, 6, 6, 5, 7]))
    cell = finite if clean else any_value
    rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1,
                         max_size=4))
    key = draw(st.sampled_from(["inputs", "instances", "dataframe_split"]))
    value: Any = {"data": rows} if key == "dataframe_split" else rows
    if draw(st.integers(0, 8)) == 0:
        value = [rows]  # one more dimension
    import json

    return json.dumps({key: value}).encode()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=tensor_payloads())
def test_the_tensor_fast_path_answers_exactly_what_the_general_path_does(
    tensor_served: ServedModel, body: bytes
) -> None:
    general = general_only(tensor_served)
    assert _outcome(tensor_served, body, JSON) == _outcome(general, body, JSON)


@pytest.fixture(scope="module")
def tensor_served(tensor_model_path: Path) -> ServedModel:
    return load_served_model(str(tensor_model_path))


@pytest.fixture(scope="module")
def tensor_pyfunc(tensor_model_path: Path) -> Any:
    return mlflow.pyfunc.load_model(str(tensor_model_path))


def test_params_without_a_params_schema_are_ignored_with_mlflows_warning(
    app: ScoringApp, pyfunc_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": [GOOD_ROW]},
                         "params": {"threshold": 0.9}})
    with caplog.at_level(logging.WARNING):
        status, answer = call(app, "POST", "/invocations", body)
    assert status == 200
    assert answer["predictions"] == pyfunc_model.predict(
        pd.DataFrame([GOOD_ROW], columns=COLUMNS)).tolist()
    assert "Ignoring provided params: ['threshold']" in caplog.text


def test_pickle_deserialization_can_be_disallowed_like_mlflow_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skops models still load then (tests/e2e/test_pickle_escalation_e2e.py).
    from pulumi_mlops.runtime.serve.fetch import ModelLoadError

    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), serialization_format="pickle",
                              signature=infer_signature(frame, model.predict(frame)))
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(ModelLoadError, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        load_served_model(str(tmp_path / "model"), attempts=3, first_delay=0.01)


# Float-only signatures take shortcuts of their own: a few values are checked by type, many
# by the body's quotes and the matrix's values. Large payloads that are clean but for one odd
# value somewhere are where those shortcuts could go wrong.
@pytest.fixture(scope="module", params=["double", "double+float"])
def float_served(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    from sklearn.linear_model import Ridge

    frame, _ = training_frame()
    frame["n"] = frame["n"].astype(np.float64)
    if request.param == "double+float":
        frame[["f1", "n"]] = frame[["f1", "n"]].astype(np.float32)
    model = Ridge().fit(frame, frame["f0"] * 0.3 + frame["n"] * 0.01)
    path = tmp_path_factory.mktemp("floats") / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    served = load_served_model(str(path))
    assert served.fast_spec is not None
    assert served.fast_spec.plain_floats == (request.param == "double")
    return served


@st.composite
def mostly_clean_payloads(draw: st.DrawFn) -> bytes:
    n = draw(st.sampled_from([1, 2, 5, 21, 22, 40, 90]))  # both sides of 128 values
    cell = st.one_of(finite, st.integers(-1000, 1000)) if draw(st.booleans()) else finite
    rows = [[draw(cell) for _ in COLUMNS] for _ in range(n)]
    for _ in range(draw(st.integers(0, 2))):
        rows[draw(st.integers(0, n - 1))][draw(st.integers(0, 5))] = draw(st.one_of(
            any_value, st.just(True), st.just(False), st.just(0), st.just(1.0), st.just([1.0]),
            st.just({}), st.just(2**63 - 1), st.just(-(2**63)), st.just(1e300)))
    columns = list(COLUMNS)
    if draw(st.integers(0, 6)) == 0:
        columns = draw(st.permutations(columns))
    fmt = draw(st.sampled_from(["split", "records", "inputs", "instances"]))
    if fmt == "split":
        doc: dict[str, Any] = {"dataframe_split": {"columns": columns, "data": rows}}
    elif fmt == "records":
        doc = {"dataframe_records": [dict(zip(columns, r, strict=True)) for r in rows]}
    elif fmt == "inputs":
        doc = {"inputs": {c: [r[j] for r in rows] for j, c in enumerate(columns)}}
    else:
        doc = {"instances": [dict(zip(columns, r, strict=True)) for r in rows]}
    import json

    return json.dumps(doc, indent=draw(st.sampled_from([None, 1]))).encode()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mostly_clean_payloads())
def test_a_float_signature_fast_path_answers_exactly_what_the_general_path_does(
    float_served: ServedModel, body: bytes
) -> None:
    assert _outcome(float_served, body, JSON) == _outcome(general_only(float_served), body, JSON)


@pytest.mark.parametrize("odd", [True, "3.5", None, 2**64, 1e300])
@pytest.mark.parametrize("rows", [1, 100])
def test_one_odd_value_among_many_floats_leaves_the_fast_path(odd: Any, rows: int) -> None:
    spec = FastSpec.for_columns([ColumnSpec(c, "double") for c in "abc"])
    assert spec is not None and spec.plain_floats
    data: list[list[Any]] = [[i + 0.5, 2.25, -i - 0.125] for i in range(rows)]

    def matrix() -> Any:
        doc = {"dataframe_split": {"columns": ["a", "b", "c"], "data": data}}
        import json

        return fast_matrix(doc, spec, json.dumps(doc).encode())

    clean = matrix()
    assert clean is not None and clean.flags.f_contiguous
    np.testing.assert_array_equal(clean, np.asarray(data, dtype=np.float64))
    data[rows // 2][1] = odd
    found = matrix()
    assert found is None or (odd == 1e300 and found[rows // 2, 1] == 1e300)


def test_a_classifier_of_class_names_answers_them_on_the_fast_path_as_mlflow_does(
        tmp_path: Path) -> None:
    # A numeric signature takes the fast path; the classes are text (numpy's unicode array,
    # which orjson does not serialize by itself: it answered 500).
    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, np.array(["no", "yes"])[target])
    mlflow.sklearn.save_model(model, str(tmp_path / "model"),
                              signature=infer_signature(frame, model.predict(frame)))
    fast = ScoringApp(load_served_model(str(tmp_path / "model")))
    general = ScoringApp(general_only(load_served_model(str(tmp_path / "model"))))
    body = split([GOOD_ROW, [3.0, 2.0, -1.0, 0.5, 1.0, 1]])
    assert fast.model.fast_spec is not None
    answers = [call(app, "POST", "/invocations", body) for app in (fast, general)]
    assert answers[0] == answers[1]
    assert answers[0][0] == 200 and set(answers[0][1]["predictions"]) <= {"no", "yes"}



def test_with_a_metrics_port_metrics_are_served_there_alone(served: ServedModel) -> None:
    app = ScoringApp(served, metrics_port=9102)
    serving, scraping = ("127.0.0.1", 8080), ("127.0.0.1", 9102)
    body = split([GOOD_ROW])
    assert asgi_request(app, "GET", "/metrics", server=scraping)[0] == 200
    assert asgi_request(app, "HEAD", "/metrics", server=scraping)[0] == 200
    # Nothing but metrics on the metrics port: no scoring, feedback, health or metadata.
    for method, path in (("POST", "/invocations"), ("POST", "/feedback"), ("GET", "/ping"),
                         ("GET", "/health"), ("GET", "/version"), ("GET", "/v2/models/x"),
                         ("POST", "/v2/models/x/infer")):
        status, answer, _ = asgi_request(app, method, path, body,
                                         [(b"content-type", JSON.encode())], server=scraping)
        assert status == 404, (method, path)
        assert b"on this port" in answer
    # And no metrics on the serving port, which serves the rest as before.
    assert asgi_request(app, "GET", "/metrics", server=serving)[0] == 404
    assert asgi_request(app, "GET", "/ping", server=serving)[0] == 200
    status, _, _ = asgi_request(app, "POST", "/invocations", body,
                                [(b"content-type", JSON.encode())], server=serving)
    assert status == 200
    # Without a metrics port: /metrics on the one port, as MLflow-style servers have it.
    assert asgi_request(ScoringApp(served), "GET", "/metrics", server=serving)[0] == 200
