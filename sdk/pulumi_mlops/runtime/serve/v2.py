"""The Open Inference Protocol (KServe's V2 REST protocol) for the served model.

Routes (everything under ``/v2``):

| route | answer |
|---|---|
| ``GET /v2`` | server metadata: ``name``, ``version``, ``extensions`` |
| ``GET /v2/health/live`` | 200 ``{"live": true}`` while the process answers |
| ``GET /v2/health/ready`` | 200 ``{"ready": true}``; 503 ``{"ready": false}`` while draining |
| ``GET /v2/models/{name}[/versions/{version}]`` | model metadata |
| ``GET /v2/models/{name}[/versions/{version}]/ready`` | 200, or 503 while draining |
| ``POST /v2/models/{name}[/versions/{version}]/infer`` | inference |

``{name}`` is the registered model name for a ``models:/`` URI, otherwise the last segment of
the URI or path (``/models/churn`` → ``churn``, ``runs:/<id>/model`` → ``model``); the only
version is the registered version (none for other URIs). Another name or version answers 404.
Errors answer ``{"error": "…"}``: 400 for a malformed request or input the model refuses, 404,
405, 413 (body over ``--max-body-bytes``), 500 for a model that raises (with a request id that
is in the log, with the traceback).

Model metadata carries, besides the spec's fields, ``parameters`` as MLServer does: the model
URI, registered name, version, alias, run id, whether the fast path is on, and the
``content_type`` the inputs are decoded with (below).

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

BYTES elements become ``str`` (UTF-8), ``bytes`` for a ``binary`` column. The request's other
``parameters`` are the pyfunc ``params``. Predictions → outputs: an array or a Series is one
output ``predict`` (or the Series' name), a DataFrame or a dict one output per column or key;
the datatype follows the numpy dtype. ``outputs`` in the request selects and orders them.

Binary tensor data (Triton's extension, which ``tritonclient.http`` uses by default): a
request whose ``Inference-Header-Content-Length`` header gives the JSON's length carries
inputs with a ``binary_data_size`` parameter as raw little-endian bytes after the JSON (BYTES
elements each prefixed by a 4-byte length). Outputs are answered that way when the request
asks (``binary_data_output``, or ``binary_data`` on a requested output), JSON otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import orjson

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.http import (
    CLIENT_GONE,
    ClientGone,
    Receive,
    Scope,
    Send,
    error_headers,
    header,
    respond,
)
from pulumi_mlops.runtime.serve.offload import Deferred
from pulumi_mlops.runtime.serve.payload import ColumnSpec, PayloadError, TensorSpec

if TYPE_CHECKING:
    from pulumi_mlops.runtime.serve.limits import Limits
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["EncodeError", "InferRequest", "InputTensor", "ModelMetadata", "RequestedOutput",
           "decode_request", "encode_outputs", "handle", "model_input", "model_metadata",
           "served_name"]

log = logging.getLogger("mlops.serve")

SERVER_NAME = "pulumi-mlops"
EXTENSIONS = ("binary_tensor_data",)
PREDICT = "predict"
"""The name of an unnamed output (pyfunc's method)."""

_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dtype: name for name, dtype in _DTYPES.items() if name != "BYTES"}
_COLUMN_DATATYPES = {"boolean": "BOOL", "integer": "INT32", "long": "INT64", "float": "FP32",
                     "double": "FP64"}
_COLUMN_DTYPES: dict[str, np.dtype[Any]] = {
    "integer": np.dtype(np.int32), "long": np.dtype(np.int64), "float": np.dtype(np.float32),
    "double": np.dtype(np.float64)}
_CONTENT_TYPES = ("pd", "np", "dict")
# Request parameters that steer this server or Triton's (never the model's params).
_RESERVED = frozenset({"content_type", "binary_data_output", "sequence_id", "sequence_start",
                       "sequence_end", "priority", "timeout"})
_HEADER_LENGTH = b"inference-header-content-length"
T = TypeVar("T")
_LENGTH = struct.Struct("<I")


class _App(Protocol):
    """What `handle` needs of the scoring app."""

    model: ServedModel
    ready: bool
    limits: Limits
    server_version: str
    workers_alive: Callable[[], bool]

    def score(self, scope: Scope, receive: Receive,
              work: Callable[[bytes], T | Deferred[T]]) -> Awaitable[T]:
        """Read the body within the limits; ``work(body)`` answers or returns the `Deferred`
        call that does, run off the event loop."""

    def client_error(self, status: int, path: str, message: str) -> None:
        """Log a 4xx answer in one line."""


# --------------------------------------------------------------------------- routing


async def handle(app: _App, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request whose path is ``/v2`` or under it."""
    parts = [p for p in scope["path"][len("/v2"):].split("/") if p]
    method = scope["method"]
    if parts == []:
        route, allowed = "server", "GET"
    elif parts in (["health", "live"], ["health", "ready"]):
        route, allowed = parts[1], "GET"
    elif len(parts) >= 2 and parts[0] == "models":
        name, rest = parts[1], parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                await _error(send, 404, f"no route {scope['path']}")
                return
            version, rest = rest[1], rest[2:]
        if rest == []:
            route, allowed = "metadata", "GET"
        elif rest in (["ready"], ["infer"]):
            route, allowed = rest[0], "GET" if rest == ["ready"] else "POST"
        else:
            await _error(send, 404, f"no route {scope['path']}")
            return
    else:
        await _error(send, 404, f"no route {scope['path']}")
        return
    if method != allowed and not (method == "HEAD" and allowed == "GET"):
        await _error(send, 405, f"{scope['path']} accepts {allowed} only",
                     [(b"allow", allowed.encode())])
        return
    if route == "server":
        await respond(send, 200, orjson.dumps(
            {"name": SERVER_NAME, "version": app.server_version, "extensions": EXTENSIONS}))
    elif route == "live":
        await respond(send, 200, b'{"live":true}')
    elif route == "ready":
        if parts[0] == "health":
            ready = app.ready and app.workers_alive()
            await respond(send, 200 if ready else 503, orjson.dumps({"ready": ready}))
        elif await _known(app, send, name, version):
            await respond(send, 200 if app.ready else 503,
                          orjson.dumps({"name": name, "ready": app.ready}))
    elif not await _known(app, send, name, version):
        return
    elif route == "metadata":
        await respond(send, 200, orjson.dumps(model_metadata(app.model).document()))
    else:
        await _infer(app, scope, receive, send)


async def _known(app: _App, send: Send, name: str, version: str | None) -> bool:
    """Whether the path names the served model (answering 404 when it does not)."""
    served, served_version = served_name(app.model), app.model.info.version
    if name != served:
        await _error(send, 404, f"model '{name}' is not served here (this server serves "
                     f"'{served}')")
        return False
    if version is not None and version != served_version:
        have = f"version {served_version} only" if served_version else "no versions"
        await _error(send, 404, f"model '{name}' has no version '{version}' here ({have})")
        return False
    return True


async def _error(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, orjson.dumps({"error": message}),
                  [(b"content-type", b"application/json"), *(headers or [])])


# --------------------------------------------------------------------------- metadata


def served_name(model: ServedModel) -> str:
    """The model's name in V2 paths: the registered name, else the URI's last segment."""
    if model.info.name:
        return model.info.name
    tail = model.info.uri.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail or "model"


@dataclass(frozen=True)
class ModelMetadata:
    """What ``GET /v2/models/{name}`` answers.

    Attributes:
        name: The model's name in paths.
        version: Its registered version, if any.
        platform: ``mlflow_<flavor>``.
        inputs: Input tensors (name, datatype, shape).
        outputs: Output tensors, from the signature (empty without one).
        parameters: The model URI, registered name, version, alias, run id, fast path and
            the request content type.
    """

    name: str
    version: str | None
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, str | bool]

    def document(self) -> dict[str, Any]:
        """The JSON document."""
        doc: dict[str, Any] = {"name": self.name}
        if self.version is not None:
            doc["versions"] = [self.version]
        doc.update(platform=self.platform, inputs=self.inputs, outputs=self.outputs,
                   parameters=self.parameters)
        return doc


def model_metadata(model: ServedModel) -> ModelMetadata:
    """The model's V2 metadata: inputs from its signature, outputs and flavor from MLmodel."""
    mlmodel = model.mlmodel
    signature = model.signature
    if signature.columns is not None:
        inputs = [_tensor_doc(c.name, _column_datatype(c.type), [-1]) for c in signature.columns]
    elif signature.tensors is not None:
        inputs = [_tensor_doc(t.name or f"input-{i}", _dtype_datatype(t.dtype), list(t.shape))
                  for i, t in enumerate(signature.tensors)]
    else:
        inputs = []
    outputs_json = (mlmodel.get("signature") or {}).get("outputs")
    outputs = _output_docs(orjson.loads(outputs_json)) if outputs_json else []
    flavors = mlmodel.get("flavors") or {}
    loader = str((flavors.get("python_function") or {}).get("loader_module", ""))
    flavor = loader.split(".")[1] if loader.startswith("mlflow.") else (
        "sklearn" if model.fast_predict is not None else "pyfunc")
    info = model.info
    parameters: dict[str, str | bool] = {
        key: value for key, value in (
            ("model_uri", info.uri), ("model_name", info.name),
            ("model_version", info.version), ("model_alias", info.alias),
            ("run_id", info.run_id)) if value is not None}
    parameters["fast_path"] = model.fast_predict is not None
    parameters["content_type"] = _default_content_type(model)
    return ModelMetadata(served_name(model), info.version, f"mlflow_{flavor}", inputs, outputs,
                         parameters)


def _tensor_doc(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _column_datatype(kind: str) -> str:
    return _COLUMN_DATATYPES.get(kind, "BYTES")


def _datatype(dtype: np.dtype[Any]) -> str:
    name = _BY_DTYPE.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "OUSM":
        return "BYTES"
    raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {dtype}")


def _dtype_datatype(name: str) -> str:
    """The datatype of a signature's numpy dtype name (BYTES for strings and objects)."""
    try:
        return _datatype(np.dtype(name))
    except (TypeError, ValueError):
        return "BYTES"


def _output_docs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    docs = []
    for i, spec in enumerate(specs):
        unnamed = PREDICT if len(specs) == 1 else f"output-{i}"
        if spec.get("type") == "tensor":
            tensor = spec["tensor-spec"]
            docs.append(_tensor_doc(str(spec.get("name") or unnamed),
                                    _dtype_datatype(str(tensor["dtype"])), list(tensor["shape"])))
        else:
            docs.append(_tensor_doc(str(spec.get("name") or unnamed),
                                    _column_datatype(str(spec.get("type"))), [-1]))
    return docs


def _default_content_type(model: ServedModel) -> str:
    signature = model.signature
    if signature.columns is not None:
        return "pd"
    if signature.tensors is not None and signature.tensor is None:
        return "dict"
    return "np"


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class InputTensor:
    """One decoded input tensor.

    Attributes:
        name: Its name.
        datatype: Its V2 datatype.
        array: Its values, in its shape (BYTES: an object array of str or bytes).
    """

    name: str
    datatype: str
    array: np.ndarray[Any, Any]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request asks for.

    Attributes:
        name: The output's name.
        binary: Whether to answer it as binary data (None: as the request says).
    """

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request.

    Attributes:
        id: The request's id, if it gave one.
        inputs: Its input tensors.
        outputs: The outputs it asks for (None: all).
        params: The parameters meant for the model (pyfunc ``params``).
        content_type: How to decode the inputs (``pd``, ``np``, ``dict``), if it says.
        binary_output: Whether outputs are answered as binary data by default.
    """

    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None
    params: dict[str, Any] | None
    content_type: str | None
    binary_output: bool


def decode_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an inference request: JSON, optionally followed by binary tensor data.

    Args:
        body: The request body.
        header_length: The ``Inference-Header-Content-Length`` header: the JSON's length when
            binary data follows it.

    Raises:
        PayloadError: 400 for anything malformed.
    """
    binary = b""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise PayloadError(400, f"Inference-Header-Content-Length {header_length!r} is not "
                               f"a length within the {len(body)}-byte body")
        size = int(header_length)
        body, binary = body[:size], body[size:]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise PayloadError(400, f"malformed JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PayloadError(400, "the inference request must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise PayloadError(400, "'id' must be a string")
    parameters = _object(doc.get("parameters"), "'parameters'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise PayloadError(400, "'inputs' must be a non-empty list of input tensors")
    view = memoryview(binary)
    offset = 0
    inputs: list[InputTensor] = []
    for i, raw in enumerate(raw_inputs):
        tensor, used = _input(i, raw, view[offset:], header_length is not None)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise PayloadError(400, f"{len(binary) - offset} bytes of binary data follow the JSON "
                           "that no input's binary_data_size accounts for")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise PayloadError(400, f"duplicate input names in {names}")
    outputs = None
    if doc.get("outputs") is not None:
        outputs = _requested_outputs(doc["outputs"])
    content_type = parameters.get("content_type")
    if content_type is not None and content_type not in _CONTENT_TYPES:
        raise PayloadError(400, f"unsupported content_type {content_type!r}: use one of "
                           f"{list(_CONTENT_TYPES)}")
    params = {k: v for k, v in parameters.items() if k not in _RESERVED}
    return InferRequest(request_id, inputs, outputs, params or None, content_type,
                        parameters.get("binary_data_output") is True)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(400, f"{what} must be an object")
    return value


def _requested_outputs(value: Any) -> list[RequestedOutput]:
    if not isinstance(value, list):
        raise PayloadError(400, "'outputs' must be a list of {\"name\": …} objects")
    outputs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise PayloadError(400, "each of 'outputs' must be an object with a 'name'")
        parameters = _object(item.get("parameters"), f"parameters of output '{item['name']}'")
        binary = parameters.get("binary_data")
        outputs.append(RequestedOutput(item["name"], binary if isinstance(binary, bool)
                                       else None))
    return outputs


def _input(index: int, raw: Any, binary: memoryview,
           has_binary: bool) -> tuple[InputTensor, int]:
    """The decoded input and how many bytes of binary data it used."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise PayloadError(400, f"input {index} must be an object with a 'name'")
    name = raw["name"]
    datatype = raw.get("datatype")
    if datatype not in _DTYPES:
        raise PayloadError(400, f"input '{name}': unsupported datatype {datatype!r}; use one "
                           f"of {sorted(_DTYPES)}")
    shape = raw.get("shape")
    if (not isinstance(shape, list)
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise PayloadError(400, f"input '{name}': 'shape' must be a list of non-negative "
                           f"integers, got {shape!r}"[:300])
    count = math.prod(shape)
    parameters = _object(raw.get("parameters"), f"parameters of input '{name}'")
    size = parameters.get("binary_data_size")
    if "shared_memory_region" in parameters:
        raise PayloadError(400, f"input '{name}': shared memory is not supported")
    if size is not None:
        if "data" in raw:
            raise PayloadError(400, f"input '{name}' has both 'data' and binary_data_size")
        if not has_binary:
            raise PayloadError(400, f"input '{name}' has binary_data_size but the request has "
                               "no Inference-Header-Content-Length header")
        if type(size) is not int or size < 0 or size > len(binary):
            raise PayloadError(400, f"input '{name}': binary_data_size {size!r} is beyond the "
                               f"{len(binary)} bytes of binary data left")
        array = _from_binary(name, datatype, bytes(binary[:size]), count)
        used = size
    elif "data" in raw:
        array = _from_json(name, datatype, raw["data"], count)
        used = 0
    else:
        raise PayloadError(400, f"input '{name}' has no 'data'")
    return InputTensor(name, datatype, array.reshape(shape)), used


def _from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise PayloadError(400, f"input '{name}': 'data' must be a list")
    flat, types = _leaves(data)
    if list in types:
        raise PayloadError(400, f"input '{name}': 'data' mixes values and lists")
    if datatype == "BYTES":
        if not types <= {str}:
            raise PayloadError(400, f"input '{name}' is BYTES: elements must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = _numbers(name, datatype, flat, types)
    if array.size != count:
        raise PayloadError(400, f"input '{name}' has {array.size} values; its shape needs "
                           f"{count}")
    return array


def _leaves(data: list[Any]) -> tuple[list[Any], set[type]]:
    """The values of nested lists, row-major, and their types (one level at a time, so a
    large tensor costs a few passes in C rather than a Python call per element)."""
    types = set(map(type, data))
    while types == {list}:
        data = list(chain.from_iterable(data))
        types = set(map(type, data))
    return data, types


def _numbers(name: str, datatype: str, flat: list[Any], types: set[type]) -> np.ndarray[Any, Any]:
    """JSON values as the datatype, refusing any the datatype cannot hold exactly."""
    dtype = _DTYPES[datatype]
    if datatype == "BOOL":
        if not types <= {bool}:
            raise PayloadError(400, f"input '{name}' is BOOL: elements must be true or false")
        return np.array(flat, dtype=dtype)
    if not types <= {int, float}:
        what = "booleans" if bool in types else "null" if type(None) in types else "strings"
        raise PayloadError(400, f"input '{name}' is {datatype}: elements must be numbers, not "
                           f"{what}"[:300])
    if dtype.kind == "f" or types <= {int}:
        try:
            # Integers straight into the integer dtype: exact, and numpy refuses the out of
            # range ones (going through float64 would round 2**64 - 1). A number past FP16's
            # or FP32's range is refused too, not turned into infinity.
            with np.errstate(over="raise"):
                return np.array(flat, dtype=dtype)
        except (OverflowError, FloatingPointError):
            raise PayloadError(400, f"input '{name}' is {datatype}: an element is out of its "
                               "range") from None
    raw = np.array(flat, dtype=np.float64)
    if not _integral(raw):
        raise PayloadError(400, f"input '{name}' is {datatype}: every element must be an "
                           "integer")
    if not _in_range(raw, dtype):
        raise PayloadError(400, f"input '{name}' is {datatype}: an element is out of its "
                           "range")
    return raw.astype(dtype)


def _in_range(array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> bool:
    """Whether every value of a numeric array fits the integer dtype."""
    if not array.size:
        return True
    limits = np.iinfo(dtype)
    if array.dtype.kind == "f":
        # As a float the upper bound is exclusive: 2**63 - 1 rounds up to 2**63.
        return bool(array.min() >= limits.min and array.max() < float(limits.max) + 1)
    return bool(array.min() >= limits.min and array.max() <= limits.max)


def _integral(array: np.ndarray[Any, Any]) -> bool:
    return bool(np.isfinite(array).all() and (array == np.floor(array)).all())


def _from_binary(name: str, datatype: str, data: bytes, count: int) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        values: list[bytes] = []
        offset = 0
        while offset < len(data):
            if offset + 4 > len(data):
                raise PayloadError(400, f"input '{name}': truncated BYTES element length")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += 4
            if offset + length > len(data):
                raise PayloadError(400, f"input '{name}': a BYTES element runs past its data")
            values.append(data[offset:offset + length])
            offset += length
        if len(values) != count:
            raise PayloadError(400, f"input '{name}' has {len(values)} BYTES elements; its "
                               f"shape needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = values
        return array
    dtype = _DTYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise PayloadError(400, f"input '{name}': {len(data)} bytes of binary data for {count} "
                           f"{datatype} elements ({count * dtype.itemsize} bytes)")
    if datatype == "BOOL":
        octets = np.frombuffer(data, dtype=np.uint8)
        if (octets > 1).any():
            raise PayloadError(400, f"input '{name}' is BOOL: bytes must be 0 or 1")
        return octets.astype(np.bool_)
    # The extension's data is little-endian; a copy, so the model may write to it.
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)


# --------------------------------------------------------------------------- to the model


def model_input(request: InferRequest, model: ServedModel) -> tuple[Any, int]:
    """The request's inputs as what pyfunc takes (DataFrame, ndarray or dict of ndarrays), and
    the number of rows.

    Raises:
        PayloadError: 400 when the inputs do not fit the signature.
    """
    signature = model.signature
    content_type = request.content_type or _default_content_type(model)
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
        if kind is not None and kind in _COLUMN_DATATYPES:
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: send it as "
                               f"{_COLUMN_DATATYPES[kind]}, not BYTES")
        return _text(tensor, binary=kind == "binary")
    if kind is None or kind not in _COLUMN_DATATYPES:
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
    target = _COLUMN_DTYPES[kind]
    if target.kind == "i" and array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value is not a finite "
                               "number")
        if strict and not _integral(array):
            raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value would lose its "
                               "fraction. Send integers, or start the server with --coerce "
                               "lossy to convert as MLflow does")
    if target.kind == "i" and not _in_range(array, target):
        raise PayloadError(400, f"column '{tensor.name}' is {kind}: a value is out of range")
    return array.astype(target)


# --------------------------------------------------------------------------- from the model


class EncodeError(Exception):
    """The model's output has no Open Inference Protocol form (a server-side error)."""


def _named_arrays(predictions: Any) -> list[tuple[str, np.ndarray[Any, Any]]]:
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return [(str(name), predictions[name].to_numpy()) for name in predictions.columns]
    if isinstance(predictions, pd.Series):
        name = predictions.name if isinstance(predictions.name, str) else PREDICT
        return [(name, predictions.to_numpy())]
    if isinstance(predictions, Mapping):
        return [(str(k), _array(v)) for k, v in predictions.items()]
    return [(PREDICT, _array(predictions))]


def _array(value: Any) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise EncodeError(f"the model returned {type(value).__name__} that is not an array: "
                          f"{err}") from None


def _tensor_of(array: np.ndarray[Any, Any]) -> tuple[str, np.ndarray[Any, Any]]:
    """The datatype and the array of its values (BYTES: an object array of str/bytes)."""
    if array.dtype.kind == "O":
        flat = array.reshape(-1)
        if all(isinstance(v, (str, bytes)) for v in flat):
            return "BYTES", array
        numbers = np.asarray(flat.tolist())  # e.g. a pandas object column of numbers
        if numbers.dtype.kind in "biuf" and numbers.shape == flat.shape:
            return _datatype(numbers.dtype), numbers.reshape(array.shape)
        raise EncodeError("the model returned values that are neither all numbers nor all "
                          f"strings: {flat[:3].tolist()!r}"[:300])
    if array.dtype.kind in "US":
        return "BYTES", array.astype(object)
    if array.dtype.kind == "M":
        return "BYTES", np.datetime_as_string(array).astype(object)
    try:
        return _datatype(array.dtype), array
    except ValueError as err:
        raise EncodeError(str(err)) from None


def _binary(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    if datatype == "BYTES":
        chunks = []
        for value in array.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode()
            chunks += [_LENGTH.pack(len(raw)), raw]
        return b"".join(chunks)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_data(datatype: str, array: np.ndarray[Any, Any]) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat]
    # orjson writes numpy arrays natively (NaN and ±Inf as null: JSON has no such numbers).
    return np.ascontiguousarray(flat) if datatype != "FP16" else flat.tolist()


def encode_outputs(predictions: Any, request: InferRequest) -> tuple[list[dict[str, Any]],
                                                                      list[bytes]]:
    """The response's outputs (and the binary data that follows the JSON, in their order).

    Raises:
        PayloadError: 400 for a requested output the model does not produce.
        EncodeError: the predictions have no tensor form.
    """
    arrays = dict(_named_arrays(predictions))
    if request.outputs is None:
        wanted = [RequestedOutput(name) for name in arrays]
    else:
        unknown = [o.name for o in request.outputs if o.name not in arrays]
        if unknown:
            raise PayloadError(400, f"unknown output(s) {unknown}; the model produces "
                               f"{list(arrays)}")
        wanted = request.outputs
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for requested in wanted:
        datatype, array = _tensor_of(arrays[requested.name])
        doc: dict[str, Any] = {"name": requested.name, "datatype": datatype,
                               "shape": list(array.shape)}
        binary = request.binary_output if requested.binary is None else requested.binary
        if binary:
            raw = _binary(datatype, array)
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = _json_data(datatype, array)
        outputs.append(doc)
    return outputs, chunks


# --------------------------------------------------------------------------- inference


@dataclass
class _Inferred:
    """A V2 inference answer, built on the prediction thread."""

    document: bytes
    chunks: list[bytes]
    predictions: Any
    rows: int


def _inferred(model: ServedModel, body: bytes, binary_header: str | None,
              max_rows: int) -> _Inferred:
    """Decode, predict and encode one inference request (off the event loop).

    Raises:
        PayloadError: a client error (4xx).
        _ModelFailed: the model raised on a valid request.
    """
    request = decode_request(body, binary_header)
    data, rows = model_input(request, model)
    try:
        predictions = model.predict_data(data, request.params, max_rows)
        outputs, chunks = encode_outputs(predictions, request)
    except PayloadError:
        raise
    except Exception as err:
        raise _ModelFailed from err
    answer: dict[str, Any] = {"model_name": served_name(model)}
    if model.info.version is not None:
        answer["model_version"] = model.info.version
    answer["id"] = request.id if request.id is not None else uuid.uuid4().hex
    answer["outputs"] = outputs
    document = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    return _Inferred(document, chunks, predictions, rows)


class _ModelFailed(Exception):
    """The model raised on a valid inference request (answer 500; the cause is logged)."""


async def _infer(app: _App, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    status, rows = 500, 0
    model = app.model
    binary_header = header(scope, _HEADER_LENGTH)
    try:
        try:
            def work(body: bytes) -> _Inferred | Deferred[_Inferred]:
                # Always off the event loop, decoding included.
                return Deferred(functools.partial(_inferred, model, body, binary_header,
                                                  app.limits.max_rows))

            inferred = await app.score(scope, receive, work)
        except _ModelFailed as err:
            request_id = uuid.uuid4().hex
            log.error("request %s: the model failed on a valid V2 inference request",
                      request_id, exc_info=err.__cause__)
            await _error(send, 500, f"the model failed on this input (request id "
                         f"{request_id})")
            return
        status, rows = 200, inferred.rows
        metrics.observe_predictions(inferred.predictions)
        if inferred.chunks:
            await respond(send, 200, b"".join([inferred.document, *inferred.chunks]), [
                (b"content-type", b"application/octet-stream"),
                (_HEADER_LENGTH, str(len(inferred.document)).encode())])
        else:
            await respond(send, 200, inferred.document)
    except PayloadError as err:
        status = err.status
        await _error(send, status, err.message, error_headers(status))
        app.client_error(status, scope["path"], err.message)
    except ClientGone:
        status = CLIENT_GONE
    finally:
        metrics.observe_request(status, rows, time.perf_counter() - started)
