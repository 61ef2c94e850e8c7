"""An Open Inference Protocol request's inputs as what the model's pyfunc takes.

Inference request → the input pyfunc takes (what MLServer's MLflow runtime does, with its
``content_type`` request parameter; without one, the signature decides):

- a column signature (``pd``): one input per column, named after it, of shape ``[N]`` or
  ``[N, 1]`` → a DataFrame column; or one ``[N, k]`` input for the ``k`` columns in signature
  order (what ``tritonclient``'s ``set_data_from_numpy`` of a feature matrix sends). Values
  are converted to the column's type only when nothing is lost (an integral FP64 into a
  ``long`` column; 2.5 is refused unless the server runs with ``--coerce lossy``);
- a single unnamed tensor (``np``): the one input, as an ndarray of its shape;
- named tensors (``dict``): a dict of ndarrays by input name;
- no signature: one input → ndarray; several → DataFrame columns.

BYTES elements become ``str`` (UTF-8), ``bytes`` for a ``binary`` column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pulumi_mlops.runtime.serve._v2_datatypes import (
    COLUMN_DATATYPES,
    COLUMN_DTYPES,
    in_range,
    integral,
)
from pulumi_mlops.runtime.serve.payload import ColumnSpec, PayloadError, TensorSpec
from pulumi_mlops.runtime.serve.v2_codec import InferRequest, InputTensor

if TYPE_CHECKING:
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["default_content_type", "model_input"]


def model_input(request: InferRequest, model: ServedModel) -> tuple[Any, int]:
    """The request's inputs as what pyfunc takes (DataFrame, ndarray or dict of ndarrays), and
    the number of rows.

    Raises:
        PayloadError: 400 when the inputs do not fit the signature.
    """
    signature = model.signature
    content_type = request.content_type or default_content_type(model)
    if signature.columns is None and signature.tensors is None and not request.content_type:
        content_type = "np" if len(request.inputs) == 1 else "pd"
    strict = bool(getattr(model, "strict", True))
    if content_type == "np":
        if len(request.inputs) != 1:
            raise PayloadError(400, f"the model takes one input tensor; got "
                               f"{len(request.inputs)} ({[t.name for t in request.inputs]})")
        tensor = signature.tensor
        array = _as_tensor(request.inputs[0], tensor)
        return array, _rows(array)
    if content_type == "dict":
        specs = {t.name: t for t in signature.tensors or [] if t.name}
        data = {t.name: _as_tensor(t, specs.get(t.name)) for t in request.inputs}
        return data, max((_rows(a) for a in data.values()), default=0)
    frame = _frame(request.inputs, signature.columns, strict)
    return frame, len(frame)


def _rows(array: np.ndarray[Any, Any]) -> int:
    return int(array.shape[0]) if array.ndim else 1


def _text(tensor: InputTensor, binary: bool = False) -> np.ndarray[Any, Any]:
    """A BYTES tensor's elements as str (UTF-8), or as bytes for a binary column."""
    out = np.empty(tensor.array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(tensor.array.reshape(-1)):
        if binary:
            flat[i] = value if isinstance(value, bytes) else str(value).encode()
        elif isinstance(value, bytes):
            try:
                flat[i] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise PayloadError(400, f"input '{tensor.name}': element {i} is not UTF-8 "
                                   "text") from None
        else:
            flat[i] = value
    return out


def _as_tensor(tensor: InputTensor, spec: TensorSpec | None) -> np.ndarray[Any, Any]:
    if tensor.datatype == "BYTES":
        return _text(tensor)
    array = tensor.array
    if spec is not None:
        target = np.dtype(spec.dtype)
        # Only widening conversions (INT32 → int64, FP32 → float64); anything else is the
        # signature enforcement's to accept or refuse.
        if target != array.dtype and np.can_cast(array.dtype, target, "safe"):
            return array.astype(target)
    return array


def _frame(inputs: list[InputTensor], columns: list[ColumnSpec] | None, strict: bool) -> Any:
    import pandas as pd

    names = [t.name for t in inputs]
    by_name = {c.name: c for c in columns or []}
    if columns is not None:
        if not set(names) <= set(by_name):
            if len(inputs) == 1 and inputs[0].array.ndim == 2 and (
                    inputs[0].array.shape[1] == len(columns)):
                return _matrix_frame(inputs[0], columns, strict)
            unknown = [n for n in names if n not in by_name]
            raise PayloadError(400, f"unknown input(s) {unknown}: send one input per column of "
                               f"{[c.name for c in columns]}, or a single [N, {len(columns)}] "
                               "input with the columns in that order")
        missing = [c.name for c in columns if c.required and c.name not in names]
        if missing:
            raise PayloadError(400, f"missing input(s) for required column(s) {missing}")
    values: dict[str, Any] = {}
    length: int | None = None
    for tensor in inputs:
        array = tensor.array
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise PayloadError(400, f"input '{tensor.name}' is a column: its shape must be [N] "
                               f"or [N, 1], got {list(tensor.array.shape)}")
        if length is not None and len(array) != length:
            raise PayloadError(400, f"input '{tensor.name}' has {len(array)} rows; the inputs "
                               f"before it have {length}")
        length = len(array)
        spec = by_name.get(tensor.name)
        column = InputTensor(tensor.name, tensor.datatype, array)
        values[tensor.name] = _as_column(column, spec, strict)
    order = [c.name for c in columns if c.name in values] if columns is not None else names
    return pd.DataFrame({name: values[name] for name in order}, columns=order)


def _matrix_frame(tensor: InputTensor, columns: list[ColumnSpec], strict: bool) -> Any:
    import pandas as pd

    matrix = tensor.array
    data = {c.name: _as_column(InputTensor(c.name, tensor.datatype, matrix[:, j]), c, strict)
            for j, c in enumerate(columns)}
    return pd.DataFrame(data, columns=[c.name for c in columns])


def _as_column(tensor: InputTensor, spec: ColumnSpec | None,
               strict: bool) -> np.ndarray[Any, Any]:
    """A 1-D tensor as the values of its column: converted to the column's type when nothing
    is lost (the same rule as ``/invocations``' lossy-value check)."""
    array = tensor.array
    kind = spec.type if spec is not None else None
    if tensor.datatype == "BYTES":
        if kind is not None and kind in COLUMN_DATATYPES:
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: send it as "
                               f"{COLUMN_DATATYPES[kind]}, not BYTES")
        return _text(tensor, binary=kind == "binary")
    if kind is None or kind not in COLUMN_DATATYPES:
        if kind is not None and kind in ("string", "binary", "datetime"):
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: send it as BYTES, not "
                               f"{tensor.datatype}")
        return array
    if kind == "boolean":
        if tensor.datatype != "BOOL":
            raise PayloadError(400, f"column '{tensor.name}' is boolean: send it as BOOL, not "
                               f"{tensor.datatype}")
        return array
    if tensor.datatype == "BOOL":
        raise PayloadError(400, f"column '{tensor.name}' is {kind}: send numbers, not BOOL")
    target = COLUMN_DTYPES[kind]
    if target.kind == "i" and array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value is not a finite "
                               "number")
        if strict and not integral(array):
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value would lose its "
                               "fraction. Send integers, or start the server with --coerce "
                               "lossy to convert as MLflow does")
    if target.kind == "i" and not in_range(array, target):
        raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value is out of range")
    return array.astype(target)


def default_content_type(model: ServedModel) -> str:
    """The content type a request's inputs are decoded with when it names none."""
    signature = model.signature
    if signature.columns is not None:
        return "pd"
    if signature.tensors is not None and signature.tensor is None:
        return "dict"
    return "np"
