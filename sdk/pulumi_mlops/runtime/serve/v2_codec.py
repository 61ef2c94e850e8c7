"""Open Inference Protocol requests decoded and answers encoded (pure: a body in, arrays out;
predictions in, a document and binary data out).

A request's ``parameters`` that steer this server or Triton's (``content_type``,
``binary_data_output``, …) are not the model's; the others are the pyfunc ``params``.
Predictions → outputs: an array or a Series is one output ``predict`` (or the Series' name), a
DataFrame or a dict one output per column or key; the datatype follows the numpy dtype.
``outputs`` in the request selects and orders them.

Binary tensor data (Triton's extension, which ``tritonclient.http`` uses by default): a
request whose ``Inference-Header-Content-Length`` header gives the JSON's length carries
inputs with a ``binary_data_size`` parameter as raw little-endian bytes after the JSON (BYTES
elements each prefixed by a 4-byte length). Outputs are answered that way when the request
asks (``binary_data_output``, or ``binary_data`` on a requested output), JSON otherwise.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from pulumi_mlops.runtime.serve._v2_datatypes import (
    DTYPES,
    PREDICT,
    datatype_of,
    in_range,
    integral,
)
from pulumi_mlops.runtime.serve.payload import PayloadError

__all__ = ["EncodeError", "InferRequest", "InputTensor", "RequestedOutput", "decode_request",
           "encode_outputs"]

_CONTENT_TYPES = ("pd", "np", "dict")
# Request parameters that steer this server or Triton's (never the model's params).
_RESERVED = frozenset({"content_type", "binary_data_output", "sequence_id", "sequence_start",
                       "sequence_end", "priority", "timeout"})
_LENGTH = struct.Struct("<I")


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
    if datatype not in DTYPES:
        raise PayloadError(400, f"input '{name}': unsupported datatype {datatype!r}; use one "
                           f"of {sorted(DTYPES)}")
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
    dtype = DTYPES[datatype]
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
    if not integral(raw):
        raise PayloadError(400, f"input '{name}' is {datatype}: every element must be an "
                           "integer")
    if not in_range(raw, dtype):
        raise PayloadError(400, f"input '{name}' is {datatype}: an element is out of its "
                           "range")
    return raw.astype(dtype)


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
    dtype = DTYPES[datatype]
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
            return datatype_of(numbers.dtype), numbers.reshape(array.shape)
        raise EncodeError("the model returned values that are neither all numbers nor all "
                          f"strings: {flat[:3].tolist()!r}"[:300])
    if array.dtype.kind in "US":
        return "BYTES", array.astype(object)
    if array.dtype.kind == "M":
        return "BYTES", np.datetime_as_string(array).astype(object)
    try:
        return datatype_of(array.dtype), array
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
