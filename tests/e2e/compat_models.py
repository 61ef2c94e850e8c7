"""The models the MLflow-compatibility suite serves with both `mlflow models serve` and
`mlops serve` (tests/e2e/test_mlflow_compat.py, scripts/mlflow_compat_report.py).

Most custom models are *echo* models: their prediction describes exactly which Python objects
the server handed to `predict` (types, dtypes, index, every value's type and repr, params), so a
difference in parsing or schema enforcement shows up as a different response body even where
a real model would hide it.

The module is pickled by value into the saved models (cloudpickle), so the servers load them
without this repository on their path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_REPR = 200


def describe(obj: Any) -> Any:
    """A JSON-safe description of `obj`: container structure, dtypes, and every leaf's type and
    repr, so equal descriptions mean the model received equal objects."""
    if isinstance(obj, pd.DataFrame):
        return {
            "type": "DataFrame",
            "columns": [describe(c) for c in obj.columns],
            "dtypes": [str(t) for t in obj.dtypes],
            "index": [describe(i) for i in obj.index],
            "rows": [[describe(v) for v in row] for row in obj.itertuples(index=False)],
        }
    if isinstance(obj, pd.Series):
        return {"type": "Series", "name": describe(obj.name), "dtype": str(obj.dtype),
                "values": [describe(v) for v in obj]}
    if isinstance(obj, np.ndarray):
        return {"type": "ndarray", "dtype": str(obj.dtype), "shape": list(obj.shape),
                "values": [describe(v) for v in obj.ravel(order="C")]}
    if isinstance(obj, dict):
        return {"type": type(obj).__name__,
                "items": [[describe(k), describe(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"type": type(obj).__name__, "items": [describe(v) for v in obj]}
    if hasattr(obj, "model_dump"):  # pydantic objects (chat requests)
        return {"type": type(obj).__name__, "dump": describe(obj.model_dump())}
    text = repr(obj)
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + "..."
    return f"{type(obj).__module__}.{type(obj).__name__}:{text}"


# ---------------------------------------------------------------------------------------------
# Custom pyfunc models. Imports of mlflow stay inside functions: the module is imported by the
# report script and the tests before they decide what to build.


def _python_models() -> dict[str, Any]:
    import mlflow.pyfunc
    from mlflow.types.llm import (
        ChatChoice,
        ChatCompletionResponse,
        ChatMessage,
    )

    class Echo(mlflow.pyfunc.PythonModel):
        """Answers what it received (input and params)."""

        def predict(self, context, model_input, params=None):
            if isinstance(model_input, pd.DataFrame) and "a" in model_input.columns and (
                    (model_input["a"] == -1).any()):
                raise ValueError("a == -1 makes this model fail on purpose")
            return {"input": describe(model_input), "params": describe(params)}

    class EchoNoParams(mlflow.pyfunc.PythonModel):
        """Answers what it received; its predict takes no params."""

        def predict(self, context, model_input):
            return {"input": describe(model_input)}

    class TypeHinted(mlflow.pyfunc.PythonModel):
        """A type-hint signature: a list of strings in, a list of strings out."""

        def predict(self, model_input: list[str], params: dict[str, Any] | None = None,
                    ) -> list[str]:
            return [f"{type(x).__name__}:{x!r}" for x in model_input]

    class EchoChat(mlflow.pyfunc.ChatModel):
        """Answers a description of the messages and params it received."""

        def predict(self, context: Any, messages: list[ChatMessage], params: Any,
                    ) -> ChatCompletionResponse:
            text = repr({"messages": [m.to_dict() for m in messages],
                         "params": params.to_dict()})
            return ChatCompletionResponse(
                id="chat-1", model="echo", created=1700000000, object="chat.completion",
                choices=[ChatChoice(index=0, message=ChatMessage(role="assistant", content=text),
                                    finish_reason="stop")])

    class EchoAgent(mlflow.pyfunc.ChatAgent):
        """A ChatAgent answering a description of what it received."""

        def predict(self, messages: Any, context: Any = None, custom_inputs: Any = None) -> Any:
            from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse

            text = repr({"messages": [m.model_dump(exclude_none=True) for m in messages],
                         "context": context.model_dump(exclude_none=True) if context else None,
                         "custom_inputs": custom_inputs})
            return ChatAgentResponse(
                messages=[ChatAgentMessage(role="assistant", content=text, id="msg-1")],
                custom_outputs={"seen": custom_inputs})

    class EchoResponses(mlflow.pyfunc.ResponsesAgent):
        """A ResponsesAgent answering a description of what it received."""

        def predict(self, request: Any) -> Any:
            from mlflow.types.responses import ResponsesAgentResponse

            text = repr(request.model_dump(exclude_none=True))
            return ResponsesAgentResponse(
                output=[self.create_text_output_item(text=text, id="out-1")],
                custom_outputs=request.custom_inputs)

    return {"Echo": Echo, "EchoNoParams": EchoNoParams, "TypeHinted": TypeHinted,
            "EchoChat": EchoChat, "EchoAgent": EchoAgent, "EchoResponses": EchoResponses}


# ---------------------------------------------------------------------------------------------
# The models.


@dataclass(frozen=True)
class ModelSpec:
    """One served model: `name` (case ids use it), `save(path)` writes it with MLflow, and
    `coerce_lossy` also starts an `mlops serve --coerce lossy` for it."""

    name: str
    save: Callable[[Path], None]
    description: str
    coerce_lossy: bool = False


IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _iris() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = IRIS_COLUMNS
    return x.astype("float64"), np.asarray(y)


def _sk_save(model: Any, path: str, signature: Any = None) -> None:
    import mlflow.sklearn

    # Explicit requirements: inferring them takes seconds per model.
    mlflow.sklearn.save_model(model, path, signature=signature,
                              pip_requirements=["mlflow", "scikit-learn"])


def _save_sk_logreg_cols(path: Path) -> None:
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    _sk_save(model, str(path), signature=infer_signature(x, model.predict(x)))


def _save_sk_ridge_cols(path: Path) -> None:
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    x, _ = _iris()
    target = x["petal_width"] * 1.7 - x["sepal_length"] / 3.0
    features = x.drop(columns="petal_width")
    model = Ridge(alpha=0.3).fit(features, target)
    _sk_save(model, str(path),
                              signature=infer_signature(features, model.predict(features)))


def _save_sk_ridge_tensor(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from sklearn.linear_model import Ridge

    x, y = _iris()
    model = Ridge(alpha=0.5).fit(x.to_numpy(), y.astype("float64"))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 4))]),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]))
    _sk_save(model, str(path), signature=signature)


def _save_sk_pipeline_i32_f32(path: Path) -> None:
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _iris()
    frame = pd.DataFrame({
        "count": (x["sepal_length"] * 10).round().astype("int32"),
        "width": x["sepal_width"].astype("float32"),
        "petal": x["petal_length"].astype("float32"),
    })
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame, y)
    _sk_save(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))


def _save_sk_nosig(path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    model = LogisticRegression(max_iter=1000).fit(x.to_numpy(), y)
    _sk_save(model, str(path))


def _save_pyfunc(path: Path, cls: str, signature: Any = None, **kwargs: Any) -> None:
    import cloudpickle
    import mlflow.pyfunc

    cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["describe"]))
    model = _python_models()[cls]()
    # Explicit requirements: inferring them would load every model in a subprocess.
    mlflow.pyfunc.save_model(str(path), python_model=model, signature=signature,
                             pip_requirements=["mlflow"], **kwargs)


def _save_echo_scalars(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    columns = [("boolean", DataType.boolean), ("integer", DataType.integer),
               ("long", DataType.long), ("float", DataType.float), ("double", DataType.double),
               ("string", DataType.string), ("binary", DataType.binary),
               ("datetime", DataType.datetime)]
    schema = Schema([ColSpec(t, n) for n, t in columns])
    _save_pyfunc(path, "EchoNoParams", ModelSignature(inputs=schema))


def _save_echo_optional_params(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(DataType.long, "a"),
                     ColSpec(DataType.string, "b", required=False),
                     ColSpec(DataType.double, "c", required=False)])
    params = ParamSchema([
        ParamSpec("temperature", DataType.double, 0.5),
        ParamSpec("max_tokens", DataType.long, 10),
        ParamSpec("stop", DataType.string, ["\n"], (-1,)),
        ParamSpec("verbose", DataType.boolean, False),
        ParamSpec("when", DataType.datetime, dt.datetime(2024, 1, 1)),
    ])
    _save_pyfunc(path, "Echo", ModelSignature(inputs=inputs, params=params))


def _save_echo_complex(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import AnyType, Array, Map, Object, Property

    inputs = Schema([
        ColSpec(Array(DataType.long), "tags"),
        ColSpec(Object([Property("x", DataType.double),
                        Property("label", DataType.string, required=False)]), "point"),
        ColSpec(Map(DataType.long), "counts"),
        ColSpec(AnyType(), "anything", required=False),
    ])
    _save_pyfunc(path, "Echo", ModelSignature(inputs=inputs))


def _save_echo_tensor_1d(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    _save_pyfunc(path, "Echo", ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1,))])))


def _save_echo_tensor_3d(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    _save_pyfunc(path, "Echo", ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 2, 3))])))


def _save_echo_tensor_multi(path: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    _save_pyfunc(path, "Echo", ModelSignature(inputs=Schema([
        TensorSpec(np.dtype("float64"), (-1, 2), "a"),
        TensorSpec(np.dtype("int64"), (-1, 3), "b"),
    ])))


def _save_echo_nosig(path: Path) -> None:
    _save_pyfunc(path, "Echo")


def _save_typehint(path: Path) -> None:
    _save_pyfunc(path, "TypeHinted")


def _save_chat_model(path: Path) -> None:
    _save_pyfunc(path, "EchoChat")


def _save_chat_agent(path: Path) -> None:
    _save_pyfunc(path, "EchoAgent")


def _save_responses_agent(path: Path) -> None:
    _save_pyfunc(path, "EchoResponses")


MODELS: list[ModelSpec] = [
    ModelSpec("sk_logreg_cols", _save_sk_logreg_cols,
              "LogisticRegression, 4 double columns (fast path)"),
    ModelSpec("sk_ridge_cols", _save_sk_ridge_cols,
              "Ridge regressor, 3 double columns, float predictions (fast path)"),
    ModelSpec("sk_ridge_tensor", _save_sk_ridge_tensor,
              "Ridge regressor, float64 tensor (-1, 4) (fast path)", coerce_lossy=True),
    ModelSpec("sk_pipeline_i32_f32", _save_sk_pipeline_i32_f32,
              "StandardScaler+LogisticRegression pipeline on int32 and float32 columns",
              coerce_lossy=True),
    ModelSpec("sk_nosig", _save_sk_nosig, "LogisticRegression saved without a signature"),
    ModelSpec("echo_scalars", _save_echo_scalars,
              "echo: boolean, integer, long, float, double, string, binary, datetime columns",
              coerce_lossy=True),
    ModelSpec("echo_optional_params", _save_echo_optional_params,
              "echo: long `a`, optional string `b`/double `c`, params schema; raises on a == -1"),
    ModelSpec("echo_complex", _save_echo_complex,
              "echo: Array(long), Object, Map(long), optional Any columns"),
    ModelSpec("echo_tensor_1d", _save_echo_tensor_1d, "echo: float64 tensor (-1,)"),
    ModelSpec("echo_tensor_3d", _save_echo_tensor_3d, "echo: float32 tensor (-1, 2, 3)"),
    ModelSpec("echo_tensor_multi", _save_echo_tensor_multi,
              "echo: named tensors a float64 (-1, 2), b int64 (-1, 3)", coerce_lossy=True),
    ModelSpec("echo_nosig", _save_echo_nosig, "echo: no signature"),
    ModelSpec("typehint", _save_typehint, "type-hint signature: list[str] -> list[str]"),
    ModelSpec("chat_model", _save_chat_model, "mlflow.pyfunc.ChatModel (echo)"),
    ModelSpec("chat_agent", _save_chat_agent, "mlflow.pyfunc.ChatAgent (echo)"),
    ModelSpec("responses_agent", _save_responses_agent, "mlflow.pyfunc.ResponsesAgent (echo)"),
]


def save_models(root: Path) -> dict[str, Path]:
    """Save every model in MODELS under `root`; returns name -> model directory."""
    paths = {}
    for spec in MODELS:
        path = root / spec.name
        spec.save(path)
        paths[spec.name] = path
    return paths

