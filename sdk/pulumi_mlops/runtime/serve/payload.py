"""What `mlops serve` adds around MLflow's own request parsing: JSON decoding, the lossy-coercion
check, and the fast path's recogniser of plain numeric payloads.

Parsing and schema enforcement are MLflow's (``mlflow.pyfunc.scoring_server``, called by
`pulumi_mlops.runtime.serve.model`), so every payload MLflow's scoring server accepts is
accepted here too. Two things are ours:

- `find_lossy`: MLflow silently converts some values that change them (2.9 into an integer
  column becomes 2, ``"7"`` becomes 7, ``true`` becomes 1.0, ±Inf into an integer). The check
  walks the decoded JSON against the signature's primitive columns and tensors, before MLflow
  parses it, and names the first such value; ``mlops serve --coerce lossy`` turns it off.
  Nested types (Array, Object, Map) follow MLflow's own rules.
- `fast_matrix`: for a scikit-learn model whose signature is numeric columns or a float
  ``(-1, n)`` tensor, a payload that is nothing but those numbers becomes the matrix pyfunc would
  hand the estimator, without pandas. Anything else (extra or missing columns, nulls, strings,
  non-finite numbers, params, other shapes) returns None and takes the general path, so the fast
  path never refuses or accepts differently from MLflow; a property test compares the two.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

import numpy as np
import orjson

__all__ = ["FORMATS", "ColumnSpec", "PayloadError", "TensorSpec", "decode_json",
           "fast_matrix", "find_lossy"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
"""The JSON input fields of MLflow's scoring protocol (exactly one per request)."""

_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOATS = ("double", "float")
_COLUMN_DTYPES = {"double": "float64", "float": "float32", "long": "int64",
                  "integer": "int32"}


class PayloadError(Exception):
    """A client error: the status to answer and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ColumnSpec:
    """One input column of the model's signature.

    Attributes:
        name: Column name.
        type: MLflow type name: a primitive (``double``, ``long``, ``string`` …) or ``array``,
            ``object``, ``map``, ``any`` for the nested types.
        required: Whether the column must be present.
    """

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    """An input tensor of a tensor signature.

    Attributes:
        dtype: numpy dtype name (``float64`` …).
        shape: Shape, -1 for a free dimension.
        name: Its name, for a multi-input signature.
    """

    dtype: str
    shape: tuple[int, ...]
    name: str | None = None


def decode_json(body: bytes) -> Any:
    """The JSON document, accepting the ``NaN``/``Infinity`` tokens Python's ``json`` writes
    (as MLflow's server does).

    Raises:
        PayloadError: 400 for a body that is not JSON (or not UTF-8).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise PayloadError(400, "Ensure that input is a valid JSON formatted string. "
                           f"Error: {str(err)[:200]!r}") from None


# --------------------------------------------------------------------------- lossy values


def _lossy(kind: str, value: Any) -> str | None:
    """Why converting ``value`` to the primitive ``kind`` would change it, or None."""
    t = type(value)
    if value is None or t is list or t is dict:
        return None  # nulls and shapes are MLflow's to judge
    if kind in _INT_RANGES or kind.startswith(("int", "uint")):
        if t is bool:
            return f"{value!r} is a boolean, not a number"
        if t is str:
            return f"{value!r} is a string, not a number"
        if t is float:
            if not math.isfinite(value):
                return f"{value!r} is not a finite integer"
            if not value.is_integer():
                return f"{value!r} would lose its fraction"
        low, high = _INT_RANGES.get(kind, (-(2**63), 2**64 - 1))
        if t in (int, float) and not low <= value <= high:
            return f"{value!r} is out of range"
        return None
    if kind in _FLOATS or kind.startswith("float"):
        if t is bool:
            return f"{value!r} is a boolean, not a number"
        if t is str:
            return f"{value!r} is a string, not a number"
        return None
    if kind in ("boolean", "bool") and t is not bool:
        return f"{value!r} is not a boolean"
    return None


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _first_lossy(kind: str, values: Iterable[Any]) -> str | None:
    for value in values:
        why = _lossy(kind, value)
        if why is not None:
            return why
    return None


def find_lossy(doc: Any, columns: list[ColumnSpec] | None,
               tensors: list[TensorSpec] | None) -> str | None:
    """The first value of ``doc`` that MLflow would change when converting it to its column's
    or tensor's type, as a message naming the column; None when there is none.

    Only primitive columns and tensors are checked; a payload in a shape the signature does not
    explain is left to MLflow's parser, which refuses it or not.
    """
    if not isinstance(doc, dict):
        return None
    keys = [k for k in FORMATS if k in doc]
    if len(keys) != 1:
        return None
    value = doc[keys[0]]
    kinds: dict[str, str] = {}
    if columns is not None:
        kinds = {c.name: c.type for c in columns if c.type not in ("array", "object", "map",
                                                                   "any")}
    elif tensors is not None:
        kinds = {t.name or "": t.dtype for t in tensors}
    if not kinds:
        return None
    for name, values in _column_values(keys[0], value, columns, tensors):
        kind = kinds.get(name)
        if kind is None:
            continue
        why = _first_lossy(kind, _leaves(values) if tensors else values)
        if why is not None:
            what = f"input '{name}'" if tensors and name else (
                "the input tensor" if tensors else f"column '{name}'")
            return (f"{what} is {kind}: {why}. Send a value of that type, or start the server "
                    "with --coerce lossy to convert as MLflow does")
    return None


def _column_values(fmt: str, value: Any, columns: list[ColumnSpec] | None,
                   tensors: list[TensorSpec] | None) -> Iterable[tuple[str, Any]]:
    """(column or tensor name, its values) pairs found in the payload, as far as its shape is
    clear; values of a tensor may be nested lists."""
    if tensors is not None:
        unnamed = len(tensors) == 1 and tensors[0].name is None
        if fmt == "dataframe_split" and isinstance(value, dict) and unnamed:
            yield "", value.get("data")
        elif fmt == "dataframe_records" and isinstance(value, list) and unnamed:
            yield "", [list(r.values()) for r in value if isinstance(r, dict)]
        elif isinstance(value, dict):
            yield from ((str(k), v) for k, v in value.items())
        elif isinstance(value, list) and unnamed:
            yield "", value
        elif isinstance(value, list):  # instances: records of named tensors
            for record in value:
                if isinstance(record, dict):
                    yield from ((str(k), v) for k, v in record.items())
        return
    assert columns is not None
    names = [c.name for c in columns]
    if fmt == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            return
        data = [r for r in value["data"] if isinstance(r, list)]
        header = value.get("columns")
        if header is None:
            header = names  # positional, as MLflow's enforcement maps them
        if not isinstance(header, list):
            return
        for j, name in enumerate(header):
            yield str(name), (r[j] for r in data if j < len(r))
    elif isinstance(value, list) and all(isinstance(r, dict) for r in value):
        for record in value:
            yield from ((str(k), [v]) for k, v in record.items())
    elif isinstance(value, dict):
        for name, values in value.items():
            yield str(name), values if isinstance(values, list) else [values]
    elif isinstance(value, list) and len(names) == 1:
        yield names[0], value


# --------------------------------------------------------------------------- fast path


@dataclass(frozen=True)
class FastSpec:
    """What the fast path needs to know of a signature.

    Attributes:
        names: Column names in signature order (None for a tensor signature).
        dtypes: numpy dtype per column (or the tensor's, once).
        width: Columns per row.
    """

    names: tuple[str, ...] | None
    dtypes: tuple[str, ...]
    width: int

    # Derived once per model, not per request.
    @functools.cached_property
    def matrix_dtype(self) -> Any:
        """The dtype pandas' ``np.asarray(frame)`` gives a frame of these columns."""
        return np.result_type(*self.dtypes)

    @property
    def order(self) -> Literal["F", "C"]:
        """Column-major for columns, as ``np.asarray(frame)`` is (the estimator's sums then run
        in the same order, to the last bit); row-major for a tensor."""
        return "F" if self.names else "C"

    @functools.cached_property
    def name_list(self) -> list[str] | None:
        """`names` as the list a decoded ``dataframe_split`` has."""
        return None if self.names is None else list(self.names)

    @functools.cached_property
    def plain_floats(self) -> bool:
        """Whether every column (or the tensor) is float64."""
        return set(self.dtypes) == {"float64"}

    @functools.cached_property
    def int_columns(self) -> tuple[tuple[int, int, int], ...]:
        """(index, low, high) of every integer column."""
        return tuple((j, *_INT_RANGES["integer" if d == "int32" else "long"])
                     for j, d in enumerate(self.dtypes) if d.startswith("int"))

    @functools.cached_property
    def float32_columns(self) -> list[int]:
        """Indexes of the float32 columns, rounded to float32 in a wider matrix."""
        return [j for j, d in enumerate(self.dtypes) if d == "float32"]

    @classmethod
    def for_columns(cls, columns: list[ColumnSpec]) -> FastSpec | None:
        """The spec for numeric, required columns; None when the signature has others."""
        if not columns or not all(c.type in _COLUMN_DTYPES and c.required for c in columns):
            return None
        return cls(tuple(c.name for c in columns),
                   tuple(_COLUMN_DTYPES[c.type] for c in columns), len(columns))

    @classmethod
    def for_tensor(cls, tensor: TensorSpec) -> FastSpec | None:
        """The spec for a ``(-1, n)`` float tensor; None for any other tensor."""
        if (tensor.name is None and tensor.dtype in ("float64", "float32")
                and len(tensor.shape) == 2 and tensor.shape[0] == -1 and tensor.shape[1] > 0):
            return cls(None, (tensor.dtype,), tensor.shape[1])
        return None


def fast_matrix(doc: Any, spec: FastSpec, body: bytes | None = None
                ) -> np.ndarray[Any, Any] | None:
    """The matrix pyfunc would give the estimator for ``doc``, when ``doc`` is nothing but the
    signature's numbers in one of the plain shapes; None otherwise (take the general path).

    ``body``, the JSON ``doc`` was decoded from, lets a float signature skip numpy's type
    inference: its quotes show whether any string is there besides the keys and names."""
    if not isinstance(doc, dict) or len(doc) != 1:
        return None
    (fmt, value), = doc.items()
    rows: Any = None
    strings = 1  # the strings of a plain payload: its keys and column names
    if spec.names is None:
        if fmt in ("instances", "inputs") and type(value) is list:
            rows = value
    elif fmt == "dataframe_split":
        if (type(value) is dict and value.keys() == {"columns", "data"}
                and value["columns"] == spec.name_list and type(value["data"]) is list):
            rows = value["data"]
            strings = 3 + spec.width
    elif fmt == "dataframe_records" or (fmt in ("instances", "inputs") and type(value) is list):
        rows = _records_rows(value, spec.names)
        strings = 1 + spec.width * len(value)
    elif fmt in ("instances", "inputs") and type(value) is dict:
        rows = _columns_rows(value, spec.names)
        strings = 1 + spec.width
    if not rows or set(map(type, rows)) - {list, tuple}:
        return None
    if len(rows) * spec.width <= _FEW_VALUES:
        return _few_values_matrix(rows, spec)
    if body is not None and spec.plain_floats and _quotes(body) == 2 * strings:
        return _float_matrix(rows, spec)
    return _matrix(rows, spec)


def _quotes(body: bytes) -> int:
    # numpy counts a byte in a large body faster than bytes.count; not in a small one.
    if len(body) < 4096:
        return body.count(b'"')
    return int(np.count_nonzero(np.frombuffer(body, np.uint8) == ord('"')))


def _records_rows(records: Any, names: tuple[str, ...]) -> list[list[Any]] | None:
    if type(records) is not list:
        return None
    width = len(names)
    try:
        if not all(type(r) is dict and len(r) == width for r in records):
            return None
        return [[r[c] for c in names] for r in records]
    except KeyError:
        return None


def _columns_rows(columns: Mapping[str, Any], names: tuple[str, ...]) -> list[Any] | None:
    if columns.keys() != set(names):
        return None
    values = [columns[c] for c in names]
    if not all(type(v) is list for v in values) or len({len(v) for v in values}) != 1:
        return None
    return list(zip(*values, strict=True))


# Up to this many values, a pass over their types costs less than numpy's type inference.
_FEW_VALUES = 128
# Integers from here on are beyond int64: numpy's inference makes them another kind.
_INT64_BOUND = 2.0**63


def _few_values_matrix(rows: list[Any], spec: FastSpec) -> np.ndarray[Any, Any] | None:
    """`_matrix` for a few values that are all floats, in one conversion; `_matrix` decides
    for anything else."""
    values = list(chain.from_iterable(rows))
    # A sum of floats is finite only if every one of them is (or it may overflow: then
    # `_matrix` decides).
    if (spec.int_columns or set(map(type, values)) != {float}
            or not math.isfinite(sum(values))):
        return _matrix(rows, spec)
    try:
        with np.errstate(over="ignore"):  # a float32 overflow is refused below
            matrix = np.array(rows, dtype=spec.matrix_dtype, order=spec.order)
    except ValueError:  # ragged rows
        return None
    if matrix.shape != (len(rows), spec.width) or (
            matrix.dtype != np.float64 and not np.isfinite(matrix).all()):  # narrowed to ±Inf
        return _matrix(rows, spec)
    return _narrow(matrix, spec)


def _float_matrix(rows: list[Any], spec: FastSpec) -> np.ndarray[Any, Any] | None:
    """`_matrix` for a float64 signature and rows that hold no string, in one conversion
    instead of inference and a copy. Wherever the shortcut cannot tell what `_matrix` would
    decide (an odd shape or value, a null, a number past int64), `_matrix` decides."""
    try:
        matrix = np.array(rows, dtype=np.float64, order=spec.order)
    except (ValueError, OverflowError, TypeError):
        return _matrix(rows, spec)
    # NaN fails the comparison too: a null, NaN or ±Inf goes to `_matrix`.
    if matrix.shape != (len(rows), spec.width) or not np.abs(matrix).max() < _INT64_BOUND:
        return _matrix(rows, spec)
    # A boolean reads as 1.0 or 0.0: only where those appear are the exact types checked.
    if ((matrix == 0) | (matrix == 1)).any() and not set(
            map(type, chain.from_iterable(rows))) <= {int, float}:
        return None
    return matrix


def _matrix(rows: list[Any], spec: FastSpec) -> np.ndarray[Any, Any] | None:
    try:
        # Numbers give an int or float array; a string, a null, an object or a value past
        # int64 gives another kind.
        inferred = np.array(rows)
    except (ValueError, OverflowError, TypeError):
        return None  # ragged rows and the like: MLflow's parser says what is wrong
    if inferred.dtype.kind not in "if" or inferred.shape != (len(rows), spec.width):
        return None
    # numpy takes a boolean for the number 1 or 0, so only where one of those appears can a
    # boolean hide; just then are the values' exact types checked (a pass over every value
    # costs as much as building the array).
    if ((inferred == 0) | (inferred == 1)).any() and not set(
            map(type, chain.from_iterable(rows))) <= {int, float}:
        return None
    for j, low, high in spec.int_columns:
        column = [row[j] for row in rows]
        if not all(type(v) is int for v in column) or not low <= min(column) <= max(
                column) <= high:
            return None
    dtype = spec.matrix_dtype
    with np.errstate(over="ignore"):  # a float32 overflow is refused below
        matrix = np.asarray(inferred, dtype=dtype, order=spec.order)
    if dtype.kind == "f" and inferred.dtype.kind == "f" and not np.isfinite(matrix).all():
        return None
    return _narrow(matrix, spec)


def _narrow(matrix: np.ndarray[Any, Any], spec: FastSpec) -> np.ndarray[Any, Any] | None:
    narrow = spec.float32_columns
    if narrow and matrix.dtype == np.float64:
        # A float32 column is float32 in the frame pyfunc builds, then widened.
        with np.errstate(over="ignore"):
            narrowed = matrix[:, narrow].astype(np.float32)
        if not np.isfinite(narrowed).all():
            return None  # past float32's range: MLflow's schema check says what is wrong
        matrix[:, narrow] = narrowed
    return matrix
