"""The Open Inference Protocol (V2 REST) in-process: routes, metadata, datatypes, shapes, the
binary tensor extension, errors."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from sklearn.linear_model import LogisticRegression

import pulumi_mlops
from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.app import ScoringApp
from pulumi_mlops.runtime.serve.fetch import ModelInfo
from pulumi_mlops.runtime.serve.limits import Limits
from pulumi_mlops.runtime.serve.loading import load_served_model
from pulumi_mlops.runtime.serve.model import ServedModel
from pulumi_mlops.runtime.serve.payload import PayloadError
from pulumi_mlops.runtime.serve.v2_codec import decode_request
from tests.asgi import asgi_request
from tests.unit.serving_data import COLUMNS, FEATURES, general_only, training_frame

ROWS = [[0.1, -0.2, 0.3, 1.5, 0.0, 3], [1.0, 2.0, -1.0, 0.5, 0.25, 7],
        [-0.5, 0.0, 0.0, 0.0, 1.0, 0]]


def call(app: ScoringApp, method: str, path: str, body: bytes | dict[str, Any] = b"",
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[bytes, bytes]]:
    """Status, decoded body (JSON when it is), response headers."""
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    status, payload, response_headers = asgi_request(
        app, method, path, raw,
        [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()])
    if b"inference-header-content-length" in response_headers:
        return status, payload, response_headers
    try:
        return status, orjson.loads(payload), response_headers
    except orjson.JSONDecodeError:
        return status, payload, response_headers


def tensor(name: str, values: Any, datatype: str = "FP64",
           shape: list[int] | None = None) -> dict[str, Any]:
    array = np.asarray(values)
    return {"name": name, "datatype": datatype,
            "shape": shape if shape is not None else list(array.shape),
            "data": array.reshape(-1).tolist()}


def infer_body(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **extra}


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def churn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn model with a column signature (5 doubles and a long), in `…/churn`."""
    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    path = tmp_path_factory.mktemp("models") / "churn"
    with pytest.warns(UserWarning, match="integer column"):
        signature = infer_signature(frame, model.predict(frame))
    mlflow.sklearn.save_model(model, str(path), signature=signature)
    return path


@pytest.fixture(scope="module")
def churn(churn_path: Path) -> ServedModel:
    return load_served_model(str(churn_path))


@pytest.fixture(scope="module")
def app(churn: ServedModel) -> ScoringApp:
    return ScoringApp(churn, limits=Limits(max_body_bytes=64 * 1024))


@pytest.fixture(scope="module")
def tensor_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn model logged from numpy: a (-1, 6) float64 tensor signature, and
    predict_proba, so the output is (-1, 2)."""
    frame, target = training_frame()
    matrix = frame.to_numpy(dtype=np.float64)
    model = LogisticRegression(max_iter=1000).fit(matrix, target)
    path = tmp_path_factory.mktemp("models") / "scores"
    mlflow.sklearn.save_model(model, str(path), pyfunc_predict_fn="predict_proba",
                              signature=infer_signature(matrix, model.predict_proba(matrix)))
    return path


@pytest.fixture(scope="module")
def tensor_app(tensor_path: Path) -> ScoringApp:
    return ScoringApp(load_served_model(str(tensor_path)))


class CityModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    # No type hints: MLflow would derive a signature from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        scale = (params or {}).get("scale", 1.0)
        return pd.DataFrame({
            "label": [f"{c}!" for c in model_input["city"]],
            "score": (model_input["city"].str.len() + model_input["x"]) * scale,
        })


@pytest.fixture(scope="module")
def city_app(tmp_path_factory: pytest.TempPathFactory) -> ScoringApp:
    """A string-column model with a params schema, answering a two-column DataFrame."""
    path = tmp_path_factory.mktemp("models") / "city"
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "city"), ColSpec("double", "x")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0)]))
    mlflow.pyfunc.save_model(str(path), python_model=CityModel(), signature=signature)
    return ScoringApp(load_served_model(str(path)))


class TwoTensors(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input["a"].sum(axis=1) + model_input["b"]


@pytest.fixture(scope="module")
def two_tensors_app(tmp_path_factory: pytest.TempPathFactory) -> ScoringApp:
    path = tmp_path_factory.mktemp("models") / "pair"
    signature = ModelSignature(inputs=Schema([
        TensorSpec(np.dtype("float64"), (-1, 2), "a"), TensorSpec(np.dtype("int64"), (-1,), "b")]))
    mlflow.pyfunc.save_model(str(path), python_model=TwoTensors(), signature=signature)
    return ScoringApp(load_served_model(str(path)))


# --------------------------------------------------------------------------- server routes


def test_server_metadata_names_the_server_and_its_extensions(app: ScoringApp) -> None:
    status, answer, _ = call(app, "GET", "/v2")
    assert status == 200
    assert answer == {"name": "pulumi-mlops", "version": pulumi_mlops.__version__,
                      "extensions": ["binary_tensor_data"]}
    assert call(app, "GET", "/v2/")[1] == answer


def test_health_live_and_ready(app: ScoringApp) -> None:
    assert call(app, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert call(app, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert call(app, "GET", "/v2/models/churn/ready")[:2] == (200, {"name": "churn",
                                                                     "ready": True})


def test_draining_turns_ready_503_but_keeps_live_and_inference(churn: ServedModel) -> None:
    draining = ScoringApp(churn)
    draining.ready = False
    status, answer, headers = call(draining, "GET", "/v2/health/ready")
    assert (status, answer) == (503, {"ready": False})
    assert headers[b"connection"] == b"close"
    assert call(draining, "GET", "/v2/models/churn/ready")[:2] == (
        503, {"name": "churn", "ready": False})
    assert call(draining, "GET", "/v2/health/live")[0] == 200
    status, _, _ = call(draining, "POST", "/v2/models/churn/infer",
                        infer_body(tensor("x", ROWS)))
    assert status == 200


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/v2/nope", 404), ("GET", "/v2/health", 404), ("GET", "/v2/health/alive", 404),
    ("GET", "/v2/models", 404), ("GET", "/v2/models/churn/config", 404),
    ("GET", "/v2/models/churn/versions", 404), ("GET", "/v2/models/other", 404),
    ("GET", "/v2/models/other/ready", 404), ("POST", "/v2/models/other/infer", 404),
    ("GET", "/v2/models/churn/versions/1", 404),
    ("POST", "/v2/models/churn/versions/1/infer", 404),
    ("GET", "/v2/models/churn/infer", 405), ("POST", "/v2/health/live", 405),
    ("POST", "/v2", 405), ("PUT", "/v2/models/churn", 405),
    ("HEAD", "/v2/health/ready", 200),
])
def test_routes_methods_and_unknown_models(app: ScoringApp, method: str, path: str,
                                           expected: int) -> None:
    status, answer, headers = call(app, method, path)
    assert status == expected
    if expected >= 400:
        assert isinstance(answer["error"], str) and answer["error"]
        assert set(answer) == {"error"}
    if expected == 405:
        assert headers[b"allow"] in (b"GET", b"POST")


def test_an_unknown_model_name_says_which_model_is_served(app: ScoringApp) -> None:
    _, answer, _ = call(app, "GET", "/v2/models/fraud")
    assert "'fraud'" in answer["error"] and "'churn'" in answer["error"]


# --------------------------------------------------------------------------- model metadata


def test_column_model_metadata_comes_from_the_signature(app: ScoringApp,
                                                        churn_path: Path) -> None:
    status, answer, _ = call(app, "GET", "/v2/models/churn")
    assert status == 200
    assert answer["name"] == "churn" and "versions" not in answer  # a local path: no versions
    assert answer["platform"] == "mlflow_sklearn"
    assert answer["inputs"] == [{"name": f, "datatype": "FP64", "shape": [-1]}
                                for f in FEATURES] + [
        {"name": "n", "datatype": "INT64", "shape": [-1]}]
    assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert answer["parameters"] == {"model_uri": str(churn_path), "fast_path": True,
                                    "content_type": "pd"}


def test_tensor_model_metadata(tensor_app: ScoringApp) -> None:
    status, answer, _ = call(tensor_app, "GET", "/v2/models/scores")
    assert status == 200
    assert answer["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 6]}]
    assert answer["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1, 2]}]
    assert answer["parameters"]["content_type"] == "np"


def test_named_outputs_and_string_columns_in_metadata(city_app: ScoringApp) -> None:
    _, answer, _ = call(city_app, "GET", "/v2/models/city")
    assert answer["platform"] == "mlflow_pyfunc"
    assert answer["inputs"] == [{"name": "city", "datatype": "BYTES", "shape": [-1]},
                                {"name": "x", "datatype": "FP64", "shape": [-1]}]
    assert answer["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                                 {"name": "score", "datatype": "FP64", "shape": [-1]}]
    assert answer["parameters"]["fast_path"] is False


def test_a_registered_model_has_its_version_and_what_version_reported(
    churn: ServedModel
) -> None:
    info = ModelInfo("models:/fraud@champion", "fraud", "3", "champion", "0123abcd")
    registered = ScoringApp(general_only(churn, info))
    for path in ("/v2/models/fraud", "/v2/models/fraud/versions/3"):
        status, answer, _ = call(registered, "GET", path)
        assert status == 200
        assert answer["name"] == "fraud" and answer["versions"] == ["3"]
        assert answer["parameters"] == {
            "model_uri": "models:/fraud@champion", "model_name": "fraud", "model_version": "3",
            "model_alias": "champion", "run_id": "0123abcd", "fast_path": False,
            "content_type": "pd"}
    assert call(registered, "GET", "/v2/models/fraud/versions/3/ready")[0] == 200
    status, answer, _ = call(registered, "GET", "/v2/models/fraud/versions/4")
    assert status == 404 and "version 3 only" in answer["error"]
    assert call(registered, "GET", "/v2/models/churn")[0] == 404
    status, answer, _ = call(registered, "POST", "/v2/models/fraud/versions/3/infer",
                             infer_body(tensor("x", ROWS), id="req-7"))
    assert status == 200
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "fraud", "3", "req-7")


# --------------------------------------------------------------------------- inference


def expected_churn_rows(churn: ServedModel, rows: list[list[Any]]) -> list[Any]:
    """What MLflow's pyfunc model predicts for these rows."""
    return list(churn.model.predict(pd.DataFrame(rows, columns=COLUMNS)).tolist())


def column_inputs(order: list[str] = COLUMNS, n_by_1: bool = False,
                  narrow: bool = False) -> list[dict[str, Any]]:
    """One input per column of ROWS, in ``order``."""
    inputs = []
    for name in order:
        values = [r[COLUMNS.index(name)] for r in ROWS]
        datatype = ("INT32" if narrow else "INT64") if name == "n" else (
            "FP32" if narrow else "FP64")
        inputs.append(tensor(name, [[v] for v in values] if n_by_1 else values, datatype))
    return inputs


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pyfunc"])
@pytest.mark.parametrize("inputs", [
    [tensor("x", ROWS)],
    [{"name": "x", "datatype": "FP64", "shape": [3, 6], "data": ROWS}],  # nested data
    column_inputs(),
    column_inputs(list(reversed(COLUMNS)), n_by_1=True),
    column_inputs(narrow=True),
], ids=["matrix", "matrix-nested", "columns", "columns-n-by-1-any-order", "narrow-columns"])
def test_column_model_predicts_what_pyfunc_predicts(
    churn: ServedModel, fast: bool, inputs: list[dict[str, Any]]
) -> None:
    rows = ROWS
    if inputs[0]["datatype"] == "FP32":
        rows = [[float(np.float32(v)) if j < 5 else v for j, v in enumerate(r)] for r in ROWS]
    served = ScoringApp(churn if fast else general_only(churn))
    status, answer, _ = call(served, "POST", "/v2/models/churn/infer", infer_body(*inputs))
    assert status == 200, answer
    assert answer["model_name"] == "churn" and "model_version" not in answer
    assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [3],
                                  "data": expected_churn_rows(churn, rows)}]


def test_a_fraction_in_an_integer_column_is_refused_naming_it(app: ScoringApp) -> None:
    rows = [[*ROWS[0][:5], 2.5]]
    status, answer, _ = call(app, "POST", "/v2/models/churn/infer",
                             infer_body(tensor("x", rows)))
    assert status == 400 and "'n'" in answer["error"] and "fraction" in answer["error"]


@pytest.mark.parametrize("inputs, words", [
    ([tensor("x", [r[:5] for r in ROWS])], "unknown input"),
    ([tensor(c, [r[j] for r in ROWS]) for j, c in enumerate(COLUMNS[:-1])], "missing"),
    ([tensor(c, [r[j] for r in ROWS]) for j, c in enumerate(COLUMNS)]
     + [tensor("extra", [1.0, 2.0, 3.0])], "unknown input"),
    ([tensor(c, [r[j] for r in ROWS] if c != "f0" else [1.0], "INT64" if c == "n" else "FP64")
      for j, c in enumerate(COLUMNS)], "rows"),
    ([tensor(c, [[r[j]] * 2 for r in ROWS], "INT64" if c == "n" else "FP64")
      for j, c in enumerate(COLUMNS)], "[N] or [N, 1]"),
    ([tensor("f0", [True, False, True], "BOOL"), *column_inputs()[1:]], "BOOL"),
    ([tensor("f0", ["0.1", "1.0", "-0.5"], "BYTES"), *column_inputs()[1:]], "BYTES"),
], ids=["matrix-too-narrow", "missing-column", "extra-input", "different-lengths",
        "2-wide-column", "bool-for-double", "bytes-for-double"])
def test_inputs_that_do_not_fit_the_columns_get_400(
    app: ScoringApp, inputs: list[dict[str, Any]], words: str
) -> None:
    status, answer, _ = call(app, "POST", "/v2/models/churn/infer", infer_body(*inputs))
    assert status == 400, answer
    assert words in answer["error"]


def test_tensor_model_predicts_what_pyfunc_predicts(tensor_app: ScoringApp,
                                                    tensor_path: Path) -> None:
    reference = mlflow.pyfunc.load_model(str(tensor_path))
    matrix = np.asarray(ROWS, dtype=np.float64)
    status, answer, _ = call(tensor_app, "POST", "/v2/models/scores/infer",
                             infer_body(tensor("input-0", matrix)))
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP64", [3, 2])
    np.testing.assert_array_equal(np.asarray(output["data"]).reshape(3, 2),
                                  reference.predict(matrix))
    # FP32 widens to the signature's float64, exactly.
    narrow = matrix.astype(np.float32)
    status, answer, _ = call(tensor_app, "POST", "/v2/models/scores/infer",
                             infer_body(tensor("whatever", narrow, "FP32")))
    assert status == 200
    np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"]).reshape(3, 2),
                                  reference.predict(narrow.astype(np.float64)))
    status, answer, _ = call(tensor_app, "POST", "/v2/models/scores/infer",
                             infer_body(tensor("input-0", matrix[:, :5])))
    assert status == 400 and answer["error"]
    status, answer, _ = call(tensor_app, "POST", "/v2/models/scores/infer",
                             infer_body(tensor("a", matrix), tensor("b", matrix)))
    assert status == 400 and "one input" in answer["error"]


def test_bytes_go_to_a_string_column_and_outputs_can_be_chosen(city_app: ScoringApp) -> None:
    body = infer_body(tensor("city", ["Oslo", "Lima"], "BYTES"), tensor("x", [1.0, 2.5]))
    status, answer, _ = call(city_app, "POST", "/v2/models/city/infer", body)
    assert status == 200, answer
    assert answer["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["Oslo!", "Lima!"]},
        {"name": "score", "datatype": "FP64", "shape": [2], "data": [5.0, 6.5]}]
    status, answer, _ = call(city_app, "POST", "/v2/models/city/infer",
                             {**body, "outputs": [{"name": "score"}]})
    assert [o["name"] for o in answer["outputs"]] == ["score"]
    status, answer, _ = call(city_app, "POST", "/v2/models/city/infer",
                             {**body, "outputs": [{"name": "nope"}]})
    assert status == 400 and "nope" in answer["error"] and "label" in answer["error"]


def test_request_parameters_are_the_model_params(city_app: ScoringApp) -> None:
    body = infer_body(tensor("city", ["Oslo"], "BYTES"), tensor("x", [1.0]),
                      parameters={"scale": 2.0, "binary_data_output": False})
    status, answer, _ = call(city_app, "POST", "/v2/models/city/infer", body)
    assert status == 200, answer
    assert answer["outputs"][1]["data"] == [10.0]


def test_named_tensors_go_to_the_model_as_a_dict(two_tensors_app: ScoringApp) -> None:
    body = infer_body(tensor("a", [[1.0, 2.0], [3.0, 4.0]]), tensor("b", [10, 20], "INT64"))
    status, answer, _ = call(two_tensors_app, "POST", "/v2/models/pair/infer", body)
    assert status == 200, answer
    assert answer["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [2],
                                  "data": [13.0, 27.0]}]
    _, meta, _ = call(two_tensors_app, "GET", "/v2/models/pair")
    assert meta["inputs"] == [{"name": "a", "datatype": "FP64", "shape": [-1, 2]},
                              {"name": "b", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["content_type"] == "dict"


class RowSums(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if isinstance(model_input, pd.DataFrame):
            return model_input.sum(axis=1).to_numpy() * 10  # tells a frame from an array
        return np.asarray(model_input).sum(axis=1)


def test_a_model_without_signature_takes_one_tensor_or_named_columns(
    tmp_path: Path
) -> None:
    path = tmp_path / "bare"
    mlflow.pyfunc.save_model(str(path), python_model=RowSums())
    bare = ScoringApp(load_served_model(str(path)))
    sums = np.asarray(ROWS, dtype=np.float64).sum(axis=1)
    status, answer, _ = call(bare, "POST", "/v2/models/bare/infer",
                             infer_body(tensor("x", ROWS)))
    assert status == 200 and answer["outputs"][0]["data"] == sums.tolist()
    _, meta, _ = call(bare, "GET", "/v2/models/bare")
    assert meta["inputs"] == [] and meta["outputs"] == []
    status, answer, _ = call(bare, "POST", "/v2/models/bare/infer", infer_body(*column_inputs()))
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == (sums * 10).tolist()
    status, answer, _ = call(bare, "POST", "/v2/models/bare/infer", infer_body(
        tensor("x", ROWS), parameters={"content_type": "pd"}))
    assert status == 400 and "[N] or [N, 1]" in answer["error"]


class Exploding(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_a_model_that_raises_gets_500_with_a_logged_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "exploding"
    mlflow.pyfunc.save_model(str(path), python_model=Exploding(), signature=ModelSignature(
        inputs=Schema([ColSpec("double", "x")])))
    exploding = ScoringApp(load_served_model(str(path)))
    with caplog.at_level(logging.ERROR, logger="mlops.serve"):
        status, answer, _ = call(exploding, "POST", "/v2/models/exploding/infer",
                                 infer_body(tensor("x", [1.0])))
    assert status == 500
    request_id = answer["error"].rsplit(" ", 1)[-1].rstrip(")")
    assert len(request_id) == 32 and request_id in caplog.text
    assert "boom" in caplog.text and "boom" not in answer["error"]


def test_inference_is_counted_in_the_request_metrics(app: ScoringApp) -> None:
    def count(code: str) -> float:
        return metrics.REGISTRY.get_sample_value("mlops_requests_total", {"code": code}) or 0.0

    ok, bad = count("200"), count("400")
    call(app, "POST", "/v2/models/churn/infer", infer_body(tensor("x", ROWS)))
    call(app, "POST", "/v2/models/churn/infer", b"{")
    assert (count("200"), count("400")) == (ok + 1, bad + 1)


# --------------------------------------------------------------------------- datatypes


@pytest.mark.parametrize("datatype, values, dtype", [
    ("BOOL", [True, False], np.bool_), ("UINT8", [0, 255], np.uint8),
    ("UINT16", [0, 65535], np.uint16), ("UINT32", [0, 2**32 - 1], np.uint32),
    ("UINT64", [0, 2**64 - 1], np.uint64), ("INT8", [-128, 127], np.int8),
    ("INT16", [-(2**15), 2**15 - 1], np.int16), ("INT32", [-(2**31), 2**31 - 1], np.int32),
    ("INT64", [-(2**63), 2**63 - 1], np.int64), ("FP16", [0.5, -2.0], np.float16),
    ("FP32", [0.25, 1e30], np.float32), ("FP64", [0.1, -1e300], np.float64),
    ("INT64", [3.0, -4.0], np.int64),  # integral numbers written as floats
    ("FP64", [1, 2], np.float64),
])
def test_every_datatype_decodes_from_json_and_binary(datatype: str, values: list[Any],
                                                     dtype: Any) -> None:
    expected = np.array(values, dtype=dtype).reshape(1, 2)
    doc = infer_body({"name": "t", "datatype": datatype, "shape": [1, 2], "data": values})
    (decoded,) = decode_request(orjson.dumps(doc)).inputs
    assert decoded.array.dtype == np.dtype(dtype) and decoded.array.shape == (1, 2)
    np.testing.assert_array_equal(decoded.array, expected)
    raw = expected.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    header = orjson.dumps({"inputs": [{"name": "t", "datatype": datatype, "shape": [1, 2],
                                       "parameters": {"binary_data_size": len(raw)}}]})
    (decoded,) = decode_request(header + raw, str(len(header))).inputs
    assert decoded.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.array, expected)


def test_bytes_decode_from_json_and_from_length_prefixed_binary() -> None:
    (decoded,) = decode_request(orjson.dumps(infer_body(
        tensor("s", ["a", "bé"], "BYTES")))).inputs
    assert decoded.array.tolist() == ["a", "bé"]
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", "bé".encode(), b""))
    header = orjson.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3],
                                       "parameters": {"binary_data_size": len(raw)}}]})
    (decoded,) = decode_request(header + raw, str(len(header))).inputs
    assert decoded.array.tolist() == [b"a", "bé".encode(), b""]


def binary_request(inputs: list[tuple[str, str, np.ndarray[Any, Any]]],
                   **extra: Any) -> tuple[bytes, dict[str, str]]:
    """A request as tritonclient.http sends it by default: JSON, then raw tensors."""
    chunks, docs = [], []
    for name, datatype, array in inputs:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(s)) + s for s in
                           (v.encode() for v in array.reshape(-1)))
        else:
            raw = array.tobytes()
        chunks.append(raw)
        docs.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                     "parameters": {"binary_data_size": len(raw)}})
    header = orjson.dumps({"inputs": docs, **extra})
    return header + b"".join(chunks), {"Inference-Header-Content-Length": str(len(header))}


def parse_binary_response(payload: bytes, headers: dict[bytes, bytes]
                          ) -> dict[str, np.ndarray[Any, Any]]:
    size = int(headers[b"inference-header-content-length"])
    doc, rest = orjson.loads(payload[:size]), payload[size:]
    out = {}
    for output in doc["outputs"]:
        n = output["parameters"]["binary_data_size"]
        chunk, rest = rest[:n], rest[n:]
        if output["datatype"] == "BYTES":
            values, offset = [], 0
            while offset < len(chunk):
                (length,) = struct.unpack_from("<I", chunk, offset)
                values.append(chunk[offset + 4:offset + 4 + length].decode())
                offset += 4 + length
            out[output["name"]] = np.asarray(values, dtype=object).reshape(output["shape"])
        else:
            dtype = {"INT64": "<i8", "FP64": "<f8"}[output["datatype"]]
            out[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert rest == b""
    return out


def test_binary_tensors_in_and_out(app: ScoringApp, churn: ServedModel) -> None:
    body, headers = binary_request([("x", "FP64", np.asarray(ROWS, dtype=np.float64))],
                                   parameters={"binary_data_output": True})
    status, payload, response_headers = call(app, "POST", "/v2/models/churn/infer", body,
                                             headers)
    assert status == 200
    assert response_headers[b"content-type"] == b"application/octet-stream"
    outputs = parse_binary_response(payload, response_headers)
    np.testing.assert_array_equal(outputs["predict"], expected_churn_rows(churn, ROWS))
    # Binary in, JSON out (no binary_data_output): no Inference-Header-Content-Length.
    body, headers = binary_request([("x", "FP64", np.asarray(ROWS, dtype=np.float64))])
    status, answer, response_headers = call(app, "POST", "/v2/models/churn/infer", body,
                                            headers)
    assert status == 200 and b"inference-header-content-length" not in response_headers
    assert answer["outputs"][0]["data"] == expected_churn_rows(churn, ROWS)


def test_binary_bytes_input_and_per_output_binary_choice(city_app: ScoringApp) -> None:
    body, headers = binary_request(
        [("city", "BYTES", np.asarray(["Oslo", "Lima"], dtype=object)),
         ("x", "FP64", np.asarray([1.0, 2.5]))],
        outputs=[{"name": "label", "parameters": {"binary_data": True}},
                 {"name": "score", "parameters": {"binary_data": False}}])
    status, payload, response_headers = call(city_app, "POST", "/v2/models/city/infer", body,
                                             headers)
    assert status == 200
    size = int(response_headers[b"inference-header-content-length"])
    doc = orjson.loads(payload[:size])
    assert doc["outputs"][1]["data"] == [5.0, 6.5]
    assert payload[size:] == b"".join(struct.pack("<I", len(s)) + s
                                      for s in (b"Oslo!", b"Lima!"))


# --------------------------------------------------------------------------- malformed


def _good() -> dict[str, Any]:
    return infer_body(tensor("x", ROWS))


def _with_input(**changes: Any) -> bytes:
    doc = _good()
    doc["inputs"][0].update(changes)
    return json.dumps(doc).encode()  # orjson refuses integers past 64 bits


MALFORMED: list[tuple[str, bytes, dict[str, str], int]] = [
    ("not-json", b"{", {}, 400),
    ("json-array", b"[]", {}, 400),
    ("no-inputs", b"{}", {}, 400),
    ("empty-inputs", orjson.dumps({"inputs": []}), {}, 400),
    ("input-not-object", orjson.dumps({"inputs": [1]}), {}, 400),
    ("input-without-name", _with_input(name=""), {}, 400),
    ("unknown-datatype", _with_input(datatype="FLOAT"), {}, 400),
    ("bf16", _with_input(datatype="BF16"), {}, 400),
    ("negative-shape", _with_input(shape=[-1, 6]), {}, 400),
    ("shape-not-list", _with_input(shape=18), {}, 400),
    ("shape-of-bools", _with_input(shape=[True, 6]), {}, 400),
    ("size-mismatch", _with_input(shape=[2, 6]), {}, 400),
    ("no-data", orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64",
                                          "shape": [1]}]}), {}, 400),
    ("data-not-list", _with_input(data=1.0, shape=[]), {}, 400),
    ("ragged-data", _with_input(data=[[1.0, 2.0], [3.0]], shape=[3]), {}, 400),
    ("string-in-fp64", _with_input(data=["0.1"] + [0.0] * 17), {}, 400),
    ("null-in-fp64", _with_input(data=[None] + [0.0] * 17), {}, 400),
    ("bool-in-fp64", _with_input(data=[True] + [0.0] * 17), {}, 400),
    ("fraction-in-int64", _with_input(datatype="INT64", data=[0.5] + [0] * 17), {}, 400),
    ("bool-in-int64", _with_input(datatype="INT64", data=[True] + [0] * 17), {}, 400),
    ("fp32-overflow", _with_input(datatype="FP32", data=[1e39] + [0.0] * 17), {}, 400),
    ("int-beyond-uint64", _with_input(datatype="UINT64", data=[2**64] + [0] * 17), {}, 400),
    ("uint8-overflow", _with_input(datatype="UINT8", data=[256] + [0] * 17), {}, 400),
    ("negative-uint", _with_input(datatype="UINT32", data=[-1] + [0] * 17), {}, 400),
    ("number-in-bool", _with_input(datatype="BOOL", data=[1] + [0] * 17), {}, 400),
    ("number-in-bytes", _with_input(datatype="BYTES", data=[1] * 18), {}, 400),
    ("duplicate-names", orjson.dumps(infer_body(tensor("x", [1.0]), tensor("x", [1.0]))),
     {}, 400),
    ("id-not-string", orjson.dumps({**_good(), "id": 7}), {}, 400),
    ("parameters-not-object", orjson.dumps({**_good(), "parameters": [1]}), {}, 400),
    ("outputs-not-list", orjson.dumps({**_good(), "outputs": {"name": "predict"}}), {}, 400),
    ("output-without-name", orjson.dumps({**_good(), "outputs": [{}]}), {}, 400),
    ("unknown-content-type", orjson.dumps({**_good(), "parameters": {"content_type": "xml"}}),
     {}, 400),
    ("binary-size-without-header", _with_input(data=None, parameters={"binary_data_size": 8}),
     {}, 400),
    ("header-length-beyond-body", orjson.dumps(_good()),
     {"Inference-Header-Content-Length": "99999"}, 400),
    ("header-length-not-a-number", orjson.dumps(_good()),
     {"Inference-Header-Content-Length": "abc"}, 400),
    ("trailing-binary", orjson.dumps(_good()) + b"\x00" * 8,
     {"Inference-Header-Content-Length": str(len(orjson.dumps(_good())))}, 400),
    ("body-over-limit", orjson.dumps(infer_body(tensor("x", [ROWS[0]] * 4000))), {}, 413),
]


@pytest.mark.parametrize("body, headers, expected",
                         [pytest.param(b, h, e, id=i) for i, b, h, e in MALFORMED])
def test_malformed_requests_get_a_client_error_with_an_error_message(
    app: ScoringApp, body: bytes, headers: dict[str, str], expected: int
) -> None:
    status, answer, _ = call(app, "POST", "/v2/models/churn/infer", body, headers)
    assert status == expected, answer
    assert set(answer) == {"error"} and answer["error"]


def test_binary_data_must_match_shape_and_datatype() -> None:
    raw = np.zeros(3, dtype="<f8").tobytes()
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [4],
                                       "parameters": {"binary_data_size": len(raw)}}]})
    with pytest.raises(PayloadError, match="24 bytes of binary data for 4 FP64"):
        decode_request(header + raw, str(len(header)))
    bad = struct.pack("<I", 10) + b"abc"
    header = orjson.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": len(bad)}}]})
    with pytest.raises(PayloadError, match="runs past"):
        decode_request(header + bad, str(len(header)))
    header = orjson.dumps({"inputs": [{"name": "b", "datatype": "BOOL", "shape": [1],
                                       "parameters": {"binary_data_size": 1}}]})
    with pytest.raises(PayloadError, match="0 or 1"):
        decode_request(header + b"\x02", str(len(header)))


def test_an_unexpected_error_is_counted_under_the_500_uvicorn_sends(
        app: ScoringApp, monkeypatch: pytest.MonkeyPatch) -> None:
    # The finding: an error outside the model's call was counted under code="200".
    from pulumi_mlops.runtime.serve import v2

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug of ours")

    def counted() -> float:
        page = call(app, "GET", "/metrics")[1].decode()
        line = next((x for x in page.splitlines()
                     if x.startswith('mlops_requests_total{code="500"}')), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = counted()
    monkeypatch.setattr(v2, "decode_request", broken)
    with pytest.raises(RuntimeError, match="a bug of ours"):  # uvicorn answers 500 for it
        call(app, "POST", "/v2/models/churn/infer", infer_body(tensor("f0", [0.1])))
    assert counted() == before + 1
