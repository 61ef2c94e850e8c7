"""The Open Inference Protocol's datatypes and their numpy forms, shared by the V2 codec, the
conversion to the model's input and the model metadata."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COLUMN_DATATYPES", "COLUMN_DTYPES", "DTYPES", "PREDICT", "datatype_of", "in_range",
           "integral"]

PREDICT = "predict"
"""The name of an unnamed output (pyfunc's method)."""

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}
COLUMN_DATATYPES = {"boolean": "BOOL", "integer": "INT32", "long": "INT64", "float": "FP32",
                     "double": "FP64"}
COLUMN_DTYPES: dict[str, np.dtype[Any]] = {
    "integer": np.dtype(np.int32), "long": np.dtype(np.int64), "float": np.dtype(np.float32),
    "double": np.dtype(np.float64)}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype of a numpy dtype (BYTES for strings, objects and datetimes)."""
    name = _BY_DTYPE.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "OUSM":
        return "BYTES"
    raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {dtype}")


def in_range(array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> bool:
    """Whether every value of a numeric array fits the integer dtype."""
    if not array.size:
        return True
    limits = np.iinfo(dtype)
    if array.dtype.kind == "f":
        # As a float the upper bound is exclusive: 2**63 - 1 rounds up to 2**63.
        return bool(array.min() >= limits.min and array.max() < float(limits.max) + 1)
    return bool(array.min() >= limits.min and array.max() <= limits.max)


def integral(array: np.ndarray[Any, Any]) -> bool:
    """Whether every value of a numeric array is a finite integer."""
    return bool(np.isfinite(array).all() and (array == np.floor(array)).all())
