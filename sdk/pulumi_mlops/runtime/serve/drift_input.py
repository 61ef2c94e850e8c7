"""The drift monitor's input features read from a JSON request's decoded document, for the
requests the general path answers (MLflow's scoring server builds a DataFrame of them).

Why not read that DataFrame: MLflow casts its columns one by one, so each is a block of its
own, and pandas' first read of a fresh frame walks the blocks in Python: some 35 µs for a
1-row frame of 20 numeric columns and 80 µs with 5 text ones (see
`~pulumi_mlops.runtime.drift._frames`), over the 10 µs per row the request path aims at. The
document the frame is built from is at hand, and a feature's values are in it as plain
Python lists: picking them out costs a few µs.

This reads them only where the values are, beyond doubt, the ones the frame holds after
MLflow's schema enforcement (`drift_reader` decides once per model, `DriftReader.rows` per
request), and answers None anywhere else, where the caller reads the frame as before:

- no value MLflow would change in converting it to its column's type (`find_lossy` finds none:
  with ``strict`` coercion such a request is refused anyway; with ``lossy`` the caller checks),
  and a column signature naming every input feature of the profile, or no signature at all
  (pandas then infers the frame's dtypes from the same JSON values: numbers as float64 or
  int64, text as text);
- numeric features of a numeric type (``float`` values pass through float32, as the frame's
  column holds them); categorical features of type ``string`` holding strings or nulls, or
  ``boolean`` holding booleans (compared as ``str(value)``, as the frame's are);
- the named payload shapes: ``dataframe_split`` with ``columns``, ``dataframe_records``, and
  ``instances``/``inputs`` as records or as columns (lists of equal length) without nulls
  (MLflow's arrays of those turn a null into a value of the column's type).

A differential test (``tests/unit/test_serve_drift_input.py``) sends payloads through MLflow's
own scoring function and checks the counts equal a value-by-value recount of the frames the
model received, with a signature and without, under strict and lossy coercion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.serve.payload import FORMATS, ColumnSpec

__all__ = ["DriftReader", "drift_reader"]

_NUMERIC_TYPES: Final = frozenset({"double", "float", "long", "integer"})
_CATEGORY_TYPES: Final = {"string": str, "boolean": bool}
_JSON_NUMBERS: Final = frozenset({int, float, type(None)})
_TEXT: Final = frozenset({str, type(None)})

Rows = tuple[npt.NDArray[np.float64], tuple[npt.NDArray[Any] | None, ...]]
"""A request's rows as `DriftMonitor.observe_matrix` takes them: the numeric features'
matrix, and the categorical features' arrays (None for one not sent)."""


def drift_reader(columns: list[ColumnSpec] | None, drift: DriftMonitor, *,
                 tensors: bool = False) -> DriftReader | None:
    """How a model's JSON requests feed ``drift``, or None when they cannot (see the module's
    docstring): then the frame MLflow builds is read instead.

    Args:
        columns: The model's column signature; None for none (or a tensor signature).
        drift: The monitor.
        tensors: Whether the signature is a tensor signature (MLflow builds arrays, not a
            frame, of its requests).
    """
    numeric, categorical = drift.numeric_inputs, drift.categorical_inputs
    if tensors or not (numeric or categorical):
        return None
    types = ({c.name: c.type for c in columns} if columns is not None
             else {**{n: "double" for n in numeric}, **{n: "string" for n in categorical}})
    if any(types.get(name) not in _NUMERIC_TYPES for name in numeric):
        return None
    if any(types.get(name) not in _CATEGORY_TYPES for name in categorical):
        return None
    return DriftReader(
        numeric=numeric,
        float32=tuple(i for i, name in enumerate(numeric) if types[name] == "float"),
        categorical=categorical,
        category_types=tuple(_CATEGORY_TYPES[types[name]] for name in categorical),
    )


_Found = tuple[int, Sequence[Sequence[Any]], Sequence[Sequence[Any]], tuple[bool, ...]]
"""A document's rows: how many, each row's numeric features (null where not sent), each row's
categorical features that were sent, and which categorical features were sent."""


@dataclass(frozen=True)
class _Header:
    """Where the features are among a ``dataframe_split`` payload's columns."""

    columns: list[str]
    numeric: Callable[[list[Any]], Sequence[Any]]  # a row's numeric features, in order
    categorical: Callable[[list[Any]], Sequence[Any]]  # its categorical features sent
    sent: tuple[bool, ...]  # which categorical features are among the columns


class DriftReader:
    """Reads the drift monitor's features from decoded ``/invocations`` documents.

    Args:
        numeric: The numeric input features, in the monitor's order.
        float32: The positions among them of ``float`` (float32) columns.
        categorical: The categorical input features, in the monitor's order.
        category_types: The Python type each one's values must have (text may also be null).
    """

    def __init__(self, numeric: tuple[str, ...], float32: tuple[int, ...],
                 categorical: tuple[str, ...], category_types: tuple[type, ...]) -> None:
        self.numeric = numeric
        self.float32 = float32
        self.categorical = categorical
        self.category_types = category_types
        self._text_only = all(kind is str for kind in category_types)
        # The last dataframe_split header's layout: clients send the same columns each time.
        # One reference, replaced whole: safe across threads.
        self._header: _Header | None = None

    def rows(self, doc: Any) -> Rows | None:
        """``doc``'s rows, or None when it is not in a shape, or does not hold values, that
        this reads as MLflow's frame would hold them."""
        found = self._values(doc)
        if found is None:
            return None
        count, numeric, categorical, sent = found
        # Numbers and nulls only: numpy would convert numeric strings and booleans too.
        if not set(map(type, chain.from_iterable(numeric))) <= _JSON_NUMBERS:
            return None
        x = np.array(numeric, dtype=np.float64).reshape(count, len(self.numeric))
        if self.float32:
            x[:, self.float32] = x[:, self.float32].astype(np.float32)
        if count == 0 or not any(sent):
            return x, (None,) * len(sent)
        if self._text_only:  # one check for them all
            if not set(map(type, chain.from_iterable(categorical))) <= _TEXT:
                return None
        else:
            kinds = [k for k, given in zip(self.category_types, sent, strict=True) if given]
            if not all(type(v) is kind or (v is None and kind is str)
                       for row in categorical for kind, v in zip(kinds, row, strict=True)):
                return None
        # One array of objects for all of them, a feature per row of its transpose: cheaper
        # than an array per feature.
        block = np.array(categorical, dtype=object).reshape(count, -1).T
        by_feature = iter(block)
        return x, tuple(next(by_feature) if given else None for given in sent)

    def _values(self, doc: Any) -> _Found | None:
        """The rows of a document in a named shape; None for any other."""
        if type(doc) is not dict:
            return None
        formats = [key for key in FORMATS if key in doc]
        if len(formats) != 1:
            return None
        fmt = formats[0]
        value = doc[fmt]
        if fmt == "dataframe_split":
            return self._split(value)
        if fmt == "dataframe_records":
            return self._records(value) if type(value) is list else None
        found = (self._records(value) if type(value) is list
                 else self._columns(value) if type(value) is dict else None)
        # MLflow makes an array of each column of these: a null becomes "None" in text, False
        # in booleans, NaN in numbers. The frame path counts what it made. (A numeric feature
        # not sent reads as null here too: the frame path takes those as well.)
        if found is None or any(None in row for row in chain(found[1], found[2])):
            return None
        return found

    def _split(self, split: Any) -> _Found | None:
        if type(split) is not dict:
            return None
        header, data = split.get("columns"), split.get("data")
        if type(header) is not list or type(data) is not list:
            return None
        layout = self._header
        if layout is None or layout.columns != header:
            if not all(type(h) is str for h in header) or len(set(header)) != len(header):
                return None
            layout = self._header = self._layout(header)
        width = len(header)
        if any(type(row) is not list or len(row) != width for row in data):
            return None
        return (len(data), list(map(layout.numeric, data)), list(map(layout.categorical, data)),
                layout.sent)

    def _layout(self, header: list[str]) -> _Header:
        position = {name: i for i, name in enumerate(header)}
        categorical = [position.get(name) for name in self.categorical]
        return _Header(
            columns=list(header),
            numeric=_getter([position.get(name) for name in self.numeric], len(header)),
            categorical=_getter([p for p in categorical if p is not None], len(header)),
            sent=tuple(p is not None for p in categorical),
        )

    def _records(self, records: list[Any]) -> _Found | None:
        if not records or any(type(r) is not dict for r in records):
            return None
        sent = tuple(any(name in r for r in records) for name in self.categorical)
        categorical = [name for name, given in zip(self.categorical, sent, strict=True)
                       if given]
        return (len(records), [[r.get(name) for name in self.numeric] for r in records],
                [[r.get(name) for name in categorical] for r in records], sent)

    def _columns(self, columns: dict[str, Any]) -> _Found | None:
        if not all(type(v) is list for v in columns.values()):
            return None
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            return None
        count = lengths.pop()
        nulls = [None] * count
        numeric = [columns.get(name, nulls) for name in self.numeric]
        categorical = [columns[name] for name in self.categorical if name in columns]
        return (count, list(zip(*numeric, strict=True)) if numeric else [()] * count,
                list(zip(*categorical, strict=True)) if categorical else [()] * count,
                tuple(name in columns for name in self.categorical))


def _getter(positions: list[int | None], width: int) -> Callable[[list[Any]], Sequence[Any]]:
    """A function of a row giving the values at ``positions`` (null for None) in order."""
    sent = [p for p in positions if p is not None]
    if len(sent) < len(positions):
        return lambda row: [None if p is None else row[p] for p in positions]
    if sent == list(range(width)):  # every column, in order: the row itself
        return lambda row: row
    if len(sent) == 1:  # (an itemgetter of one index gives the value, not a tuple)
        return lambda row: (row[sent[0]],)
    if not sent:
        return lambda row: ()
    return itemgetter(*sent)
