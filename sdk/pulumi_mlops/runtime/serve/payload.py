"""Parse and strictly validate scoring requests (MLflow's scoring-server protocol).

Accepted bodies: JSON with ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (+ optional ``params``), and CSV (``text/csv``). Every client error raises
`PayloadError` with the HTTP status to answer (400, 413, 415) and a message naming the column.

Strictness against a column signature: missing or unknown columns, wrong types and lossy
coercions (float → integer, string → number, bool → number, null in a required column, ±Inf)
are refused instead of being silently converted.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

__all__ = ["ColumnSpec", "Parsed", "PayloadError", "TensorSpec", "parse_body", "tensor_matrix",
           "validate_columns"]

_JSON_TYPES = ("application/json",)
_CSV_TYPES = ("text/csv",)
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


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
        type: MLflow data type name (``double``, ``long``, ``string`` …).
        required: Whether the column must be present (and non-null).
    """

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    """The input tensor of a tensor signature.

    Attributes:
        dtype: numpy dtype name (``float64`` …).
        shape: Shape, -1 for a free dimension.
    """

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Parsed:
    """A parsed request.

    Attributes:
        columns: Column names, in the order of ``rows`` (None for tensor-style input).
        rows: Row-major values.
        params: Inference params.
        raw: The decoded JSON input, for the general pyfunc path.
        format: Which payload format it came in.
    """

    columns: list[str] | None
    rows: list[list[Any]]
    params: dict[str, Any] | None
    raw: Any
    format: str


def _media_type(content_type: str | None) -> str:
    if not content_type:
        raise PayloadError(415, "Content-Type is required: use application/json or text/csv")
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> Parsed:
    """Decode a request body into columns and rows."""
    media = _media_type(content_type)
    if media in _CSV_TYPES:
        return _parse_csv(body)
    if media not in _JSON_TYPES:
        raise PayloadError(
            415, f"unsupported Content-Type {media!r}: use application/json or text/csv"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise PayloadError(400, f"malformed JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PayloadError(400, f"the JSON body must be an object with one of {list(_FORMATS)}")
    keys = [k for k in _FORMATS if k in doc]
    unknown = sorted(set(doc) - set(_FORMATS) - {"params"})
    if len(keys) != 1 or unknown:
        raise PayloadError(
            400, f"the JSON body must have exactly one of {list(_FORMATS)} (and optionally "
            f"'params'); got keys {sorted(doc)}"
        )
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise PayloadError(400, "'params' must be an object")
    fmt = keys[0]
    value = doc[fmt]
    columns, rows = _tabular(fmt, value)
    return Parsed(columns, rows, params, value, fmt)


def _tabular(fmt: str, value: Any) -> tuple[list[str] | None, list[list[Any]]]:
    if fmt == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise PayloadError(400, "'dataframe_split' must be an object with 'columns' and 'data'")
        columns, data = value.get("columns"), value["data"]
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise PayloadError(400, "'dataframe_split.data' must be a list of rows (lists)")
        if columns is None:
            return None, data
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise PayloadError(400, "'dataframe_split.columns' must be a list of strings")
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise PayloadError(400, f"row {i} has {len(row)} values for {len(columns)} "
                                   "columns")
        return columns, data
    if fmt == "dataframe_records" or (isinstance(value, list) and value
                                      and all(isinstance(r, dict) for r in value)):
        return _records(fmt, value)
    if isinstance(value, dict):
        # Column-oriented {"col": [values]} (inputs / instances).
        columns = list(value)
        lists = [value[c] if isinstance(value[c], list) else [value[c]] for c in columns]
        lengths = {len(v) for v in lists}
        if len(lengths) > 1:
            raise PayloadError(400, f"'{fmt}' columns have different lengths")
        return columns, [list(r) for r in zip(*lists, strict=True)]
    if isinstance(value, list):
        rows = [r if isinstance(r, list) else [r] for r in value]
        return None, rows
    raise PayloadError(400, f"'{fmt}' must be a list or an object")


def _records(fmt: str, value: Any) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise PayloadError(400, f"'{fmt}' must be a list of objects (records)")
    if not value:
        return [], []
    columns = list(value[0])
    for i, record in enumerate(value):
        if record.keys() != value[0].keys():
            missing = sorted(set(columns) - set(record))
            extra = sorted(set(record) - set(columns))
            raise PayloadError(400, f"record {i} has different columns (missing {missing}, "
                               f"extra {extra})")
    return columns, [[r[c] for c in columns] for r in value]


def _parse_csv(body: bytes) -> Parsed:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "CSV body must be UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    rows = [r for r in reader if r]
    if not rows:
        raise PayloadError(400, "CSV body needs a header row")
    header, data = rows[0], rows[1:]
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise PayloadError(400, f"CSV row {i + 1} has {len(row)} fields for {len(header)} "
                               "columns")
    return Parsed(header, data, None, None, "csv")


def _check_value(spec: ColumnSpec, value: Any, from_csv: bool) -> Any:
    """The value as the column's type, or a PayloadError for a lossy or wrong value."""
    kind = spec.type
    if from_csv:
        value = _from_csv_text(spec, value)
    if value is None:
        if spec.required:
            raise PayloadError(400, f"column '{spec.name}' is required but has a null value")
        return None
    t = type(value)
    if kind in ("double", "float"):
        if t is float:
            if not math.isfinite(value):
                raise PayloadError(400, f"column '{spec.name}' has a non-finite number")
            return value
        if t is int:
            return float(value)
    elif kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if t is float and value.is_integer():
            value, t = int(value), int
        elif t is float:
            raise PayloadError(400, f"column '{spec.name}' is {kind}: {value!r} would lose its "
                               "fraction")
        if t is int:
            if not low <= value <= high:
                raise PayloadError(400, f"column '{spec.name}' is {kind}: {value} is out of "
                                   "range")
            return value
    elif (kind == "boolean" and t is bool) or (kind in ("string", "binary", "datetime")
                                                and t is str):
        return value
    raise PayloadError(400, f"column '{spec.name}' expects {kind}, got {_json_type(value)} "
                       f"{value!r}"[:300])


def _from_csv_text(spec: ColumnSpec, text: str) -> Any:
    if text == "":
        return None
    if spec.type in ("double", "float"):
        try:
            return float(text)
        except ValueError:
            raise PayloadError(400, f"column '{spec.name}' expects {spec.type}, got "
                               f"{text!r}") from None
    if spec.type in _INT_RANGES:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)  # reported as lossy by the caller
            except ValueError:
                raise PayloadError(400, f"column '{spec.name}' expects {spec.type}, got "
                                   f"{text!r}") from None
    if spec.type == "boolean":
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return text


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)


def validate_columns(
    parsed: Parsed, schema: Sequence[ColumnSpec]
) -> tuple[list[str], list[list[Any]]]:
    """Check columns and every value against the signature; return them in schema order."""
    by_name = {c.name: c for c in schema}
    if parsed.columns is None:
        if not parsed.rows or len(parsed.rows[0]) != len(schema):
            raise PayloadError(400, f"input without column names must have {len(schema)} values "
                               f"per row in signature order {[c.name for c in schema]}")
        columns = [c.name for c in schema]
    else:
        columns = parsed.columns
        unknown = [c for c in columns if c not in by_name]
        if unknown:
            raise PayloadError(400, f"unknown column(s) {unknown}; the model expects "
                               f"{[c.name for c in schema]}")
        if len(set(columns)) != len(columns):
            raise PayloadError(400, "duplicate column names")
        missing = [c.name for c in schema if c.required and c.name not in columns]
        if missing:
            raise PayloadError(400, f"missing required column(s) {missing}")
    specs = [by_name[c] for c in columns]
    from_csv = parsed.format == "csv"
    out = [[_check_value(s, v, from_csv) for s, v in zip(specs, row, strict=True)]
           for row in parsed.rows]
    order = [columns.index(c.name) for c in schema if c.name in columns]
    names = [columns[i] for i in order]
    return names, [[row[i] for i in order] for row in out]


def numeric_matrix(rows: list[list[Any]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Validated numeric rows as a float64 matrix."""
    return np.asarray(rows, dtype=np.float64)


def tensor_matrix(parsed: Parsed, spec: TensorSpec) -> np.ndarray[Any, np.dtype[Any]]:
    """Rows checked against a ``(-1, n)`` float tensor signature, as a matrix of its dtype.

    Values follow the column rules for ``double``: numbers only, finite, no nulls; CSV text
    must parse as a number.
    """
    width = spec.shape[1]
    from_csv = parsed.format == "csv"
    cells = [ColumnSpec(f"input[{j}]", "double") for j in range(width)]
    for i, row in enumerate(parsed.rows):
        if len(row) != width:
            raise PayloadError(400, f"row {i} has {len(row)} values; the model expects "
                               f"{width} per row (tensor of shape {list(spec.shape)})")
    rows = [[_check_value(c, v, from_csv) for c, v in zip(cells, row, strict=True)]
            for row in parsed.rows]
    return np.asarray(rows, dtype=spec.dtype)
