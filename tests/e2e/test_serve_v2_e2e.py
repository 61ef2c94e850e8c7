"""`mlops serve` speaks the Open Inference Protocol to a client nobody here wrote: NVIDIA's
`tritonclient.http` (which sends binary tensor data by default), against real server processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from tritonclient.utils import InferenceServerException

from tests.e2e.serving import Server, start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CITIES = ["Oslo", "Lima", "Hanoi", "Quito"]


def start(model_path: Path, tmp: Path) -> Server:
    return start_serve(str(model_path), tmp, ready_path="/v2/health/ready")


def triton_client(server: Server) -> Any:
    """A Triton HTTP client for the server."""
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three saved models: columns (`cancer`), a float tensor (`cancer-matrix`, predict_proba)
    and a pipeline with a string column (`city`)."""
    root = tmp_path_factory.mktemp("v2-models")
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    columns = LogisticRegression(max_iter=5000).fit(x, y)
    mlflow.sklearn.save_model(columns, str(root / "cancer"),
                              signature=infer_signature(x, columns.predict(x)))
    matrix = x.to_numpy(dtype=np.float64)
    tensor = LogisticRegression(max_iter=5000).fit(matrix, y)
    mlflow.sklearn.save_model(tensor, str(root / "cancer-matrix"),
                              pyfunc_predict_fn="predict_proba",
                              signature=infer_signature(matrix, tensor.predict_proba(matrix)))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(CITIES, 200), "x": rng.normal(size=200)})
    target = ((frame["city"] == "Lima") | (frame["x"] > 1)).astype(int)
    city = make_pipeline(
        ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                          remainder="passthrough"),
        LogisticRegression()).fit(frame, target)
    mlflow.sklearn.save_model(city, str(root / "city"),
                              signature=infer_signature(frame, city.predict(frame)))
    return {"cancer": root / "cancer", "cancer-matrix": root / "cancer-matrix",
            "city": root / "city"}


@pytest.fixture(scope="module")
def servers(models: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    tmp = tmp_path_factory.mktemp("v2-serve")
    running: dict[str, Server] = {}
    try:
        for name, path in models.items():
            running[name] = start(path, tmp)
        yield running
    finally:
        for server in running.values():
            server.process.terminate()
        for server in running.values():
            server.process.wait(timeout=30)


def features() -> pd.DataFrame:
    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    return x


def test_health_and_metadata_through_tritonclient(servers: dict[str, Server]) -> None:
    client = triton_client(servers["cancer"])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cancer")
    assert client.get_server_metadata()["name"] == "pulumi-mlops"
    meta = client.get_model_metadata("cancer")
    assert meta["name"] == "cancer" and meta["platform"] == "mlflow_sklearn"
    assert [i["name"] for i in meta["inputs"]] == list(features().columns)
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["model_uri"].endswith("/cancer")


def test_unknown_model_or_version_is_404(servers: dict[str, Server]) -> None:
    client = triton_client(servers["cancer"])
    assert not client.is_model_ready("fraud")
    for call in (lambda: client.get_model_metadata("fraud"),
                 lambda: client.get_model_metadata("cancer", model_version="1"),
                 lambda: client.infer("fraud", [_matrix_input(features().head(2))])):
        with pytest.raises(InferenceServerException) as raised:
            call()
        assert raised.value.status() == "404"
        assert raised.value.message()


def _matrix_input(batch: pd.DataFrame, binary: bool = True) -> Any:
    matrix = batch.to_numpy(dtype=np.float64)
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp64_matrix_to_a_column_model_predicts_what_pyfunc_predicts(
    servers: dict[str, Server], models: dict[str, Path], binary: bool
) -> None:
    batch = features().sample(50, random_state=1)
    outputs = None if binary else [triton.InferRequestedOutput("predict", binary_data=False)]
    result = triton_client(servers["cancer"]).infer("cancer", [_matrix_input(batch, binary)],
                                              outputs=outputs)
    expected = mlflow.pyfunc.load_model(str(models["cancer"])).predict(batch)
    predictions = result.as_numpy("predict")
    assert predictions.dtype == expected.dtype
    np.testing.assert_array_equal(predictions, expected)


def test_one_fp64_input_per_column(servers: dict[str, Server],
                                   models: dict[str, Path]) -> None:
    batch = features().sample(20, random_state=2)
    inputs = []
    for name in batch.columns:
        column = triton.InferInput(name, [len(batch)], "FP64")
        column.set_data_from_numpy(batch[name].to_numpy(dtype=np.float64))
        inputs.append(column)
    result = triton_client(servers["cancer"]).infer("cancer", inputs)
    expected = mlflow.pyfunc.load_model(str(models["cancer"])).predict(batch)
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)


def test_fp64_matrix_to_a_tensor_model_predicts_what_pyfunc_predicts(
    servers: dict[str, Server], models: dict[str, Path]
) -> None:
    matrix = features().sample(40, random_state=3).to_numpy(dtype=np.float64)
    client = triton_client(servers["cancer-matrix"])
    meta = client.get_model_metadata("cancer-matrix")
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 30]}]
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix)
    probabilities = client.infer("cancer-matrix", [tensor]).as_numpy("predict")
    expected = mlflow.pyfunc.load_model(str(models["cancer-matrix"])).predict(matrix)
    assert probabilities.shape == (40, 2)
    np.testing.assert_array_equal(probabilities, expected)


def test_bytes_input_to_a_string_column_model(servers: dict[str, Server],
                                              models: dict[str, Path]) -> None:
    batch = pd.DataFrame({"city": ["Lima", "Oslo", "Quito", "Lima"],
                          "x": [0.0, 2.0, -1.0, 0.5]})
    city = triton.InferInput("city", [len(batch)], "BYTES")
    city.set_data_from_numpy(batch["city"].to_numpy(dtype=object))
    x = triton.InferInput("x", [len(batch)], "FP64")
    x.set_data_from_numpy(batch["x"].to_numpy(dtype=np.float64))
    result = triton_client(servers["city"]).infer("city", [city, x])
    expected = mlflow.pyfunc.load_model(str(models["city"])).predict(batch)
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)
    assert set(expected) == {0, 1}  # the city matters: both classes come out


def test_a_client_error_reaches_tritonclient_as_400(servers: dict[str, Server]) -> None:
    batch = features().head(3).iloc[:, :29]  # one column short
    with pytest.raises(InferenceServerException) as raised:
        triton_client(servers["cancer"]).infer("cancer", [_matrix_input(batch)])
    assert raised.value.status() == "400"
    assert "input" in (raised.value.message() or "")
