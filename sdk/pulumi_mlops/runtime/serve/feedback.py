"""Live model quality from delayed labels: request ids, the window of recent predictions, and
``POST /feedback``.

**Request ids.** Every successful scoring answer carries one: ``/invocations`` in an
``X-Request-Id`` header (its JSON body stays MLflow's), V2 inference in the answer's ``id``
(the request's own ``id`` when it gave one) and in the same header. The id is the client's
``X-Request-Id`` when that is well formed (1 to 128 characters, HTTP token characters only:
letters, digits and ``!#$%&'*+-.^_`|~``), otherwise a new uuid4 in hex; a V2 request's
``id`` takes precedence over the header. A V2 ``id`` that is not well formed is still echoed
in the body, but gets no header and its predictions are not kept (no feedback for it).

**The window** (`PredictionWindow`): each worker keeps, by request id, the predicted rows of
its recent answers: at most ``--feedback-window-ids`` answers (default 100,000) holding at
most ``--feedback-window-rows`` rows together (default 100,000); the oldest answers are
dropped first, and an answer of more rows than the whole window is not kept. Only outputs of
one column (1-D, or a single column) of classes or numbers are kept (see
`pulumi_mlops.runtime.serve.metrics.predicts_classes`); others (probabilities, several
columns, text longer than 256 bytes per row) are not, and their feedback is unmatched. An id
that is answered again replaces its earlier rows. The window is the server's, for the one
model version it serves. Memory at the defaults: about 28 MiB per worker (100,000 one-row
answers; fewer, larger answers take less).

Cost in the request path (``benchmarks/feedback_overhead.py``, µs per request, on a shared
2-core machine, two runs): taking the id 0.4 (the client's header) to 0.6-1.1 (a new one);
keeping the rows in a full window (every answer evicts the oldest) 0.8-1.9 more for a 1-row
answer and 0.8-1.4 for a 100-row one (the rows are kept by reference, not copied). A full
window of 100,000 one-row answers allocates 16 MiB for ids and index plus 11 MiB of arrays
(tracemalloc); of 1,000 100-row answers, about 1 MiB.

**Feedback.** ``POST /feedback`` with a JSON body: one object, or a list of them::

    {"request_id": "<the answer's X-Request-Id>", "labels": [<one label per predicted row>]}
    {"request_id": "<id>", "label": <the label>}    # a one-row answer

Labels are in the order of the answer's predictions. Each label is counted once in
``mlops_feedback_total``: ``outcome="matched"`` when its request id is in the window (then
its prediction is judged), else ``"unmatched"`` (expired from the window, answered by another
worker or replica, never issued, or already given feedback). An id's feedback is taken once:
its rows leave the window, and a second feedback for it is unmatched. The answer is
``{"matched": n, "unmatched": m}`` (rows).

- A classifier's matched label counts in ``mlops_feedback_correct_total`` when it equals its
  predicted class, compared as that class's type: integer classes take ``1``, ``1.0``,
  ``"1"`` and ``true`` as 1; boolean classes take ``true``/``false``, ``1``/``0`` and
  ``"true"``/``"false"`` (any case) or ``"1"``/``"0"``; text classes are compared as text,
  a number or ``true`` written as Python writes it (``1`` as ``"1"``, ``true`` as
  ``"True"``), as the ``class`` label of ``mlops_predictions_total`` writes them. A label
  that cannot be an integer or boolean class is refused (400). Accuracy:
  ``correct / matched``.
- A regression model's matched label (a JSON number) adds ``|label - prediction|`` to
  ``mlops_feedback_absolute_error_total`` and its square to
  ``mlops_feedback_squared_error_total``: the mean absolute error is ``absolute_error /
  matched``. A row predicted as NaN or infinity is counted unmatched (it has no error).

A request is counted whole or not at all: a malformed body, a wrong shape, a label count that
differs from the answer's rows, a label of the wrong type, a body over ``--max-body-bytes``
(413, as the other bodies) gets an error naming the field and the fix, and nothing is counted
or taken from the window.

**Several workers or replicas.** Each worker keeps its own window, so the feedback for an
answer of another worker (or replica) is unmatched, by design: send it anywhere, and read the
matched share as a sample (matching does not depend on correctness). The counters are summed
across workers as the other counters of `pulumi_mlops.runtime.serve.metrics` are (each
worker's counts file, read at scrape time).
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.http import Scope, header
from pulumi_mlops.runtime.serve.payload import PayloadError

__all__ = ["MAX_REQUEST_ID_LENGTH", "REQUEST_ID_HEADER", "FeedbackItem", "PredictionWindow",
           "apply_feedback", "new_request_id", "parse_feedback", "request_id_of",
           "well_formed_id"]

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1," + str(MAX_REQUEST_ID_LENGTH) + "}")
# Text classes longer than this (bytes per row) are not classes: not kept.
_MAX_CLASS_BYTES = 256
_SHAPE = ('send {"request_id": "<the X-Request-Id of the answer>", "labels": [one label per '
          'predicted row]}, or a list of such objects')
# At most 20 digits: a class is no longer than an int64 (and Python refuses to parse over
# 4,300 digits: a longer label answered 500).
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


# --------------------------------------------------------------------------- request ids

# Random bytes for ids, drawn 4 KiB at a time: uuid.uuid4() costs 1.6 µs, this 0.4 µs.
_pool = b""
_taken = 0


def _forget_the_parents_pool() -> None:
    # A forked worker drawing from its parent's bytes would repeat its sibling's ids.
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_the_parents_pool)


def new_request_id() -> str:
    """A new random id, formatted as ``uuid.uuid4().hex`` (version 4, RFC 4122 variant)."""
    global _pool, _taken
    at = _taken
    if at + 16 > len(_pool):
        _pool, at = os.urandom(4096), 0
    _taken = at + 16
    h = _pool[at:at + 16].hex()
    return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


def well_formed_id(value: str) -> bool:
    """Whether ``value`` can be a request id: 1 to `MAX_REQUEST_ID_LENGTH` HTTP token
    characters (safe in a header, bounded in the window)."""
    return _TOKEN.fullmatch(value) is not None


def request_id_of(scope: Scope) -> str:
    """The request's id: its ``X-Request-Id`` header when well formed, else a new one."""
    given = header(scope, REQUEST_ID_HEADER)
    if given is not None and _TOKEN.fullmatch(given) is not None:
        return given
    return new_request_id()


# --------------------------------------------------------------------------- the window


class PredictionWindow:
    """Recent answers' predicted rows by request id, bounded (see the module docstring).

    Used from the event loop only (no lock).

    Args:
        max_ids: Answers kept at most. 0 keeps none.
        max_rows: Rows kept at most, all answers together. 0 keeps none.

    Attributes:
        rows: The rows kept now.
    """

    def __init__(self, max_ids: int, max_rows: int) -> None:
        self.max_ids = max_ids
        self.max_rows = max_rows
        self.rows = 0
        self._kept: OrderedDict[str, np.ndarray[Any, Any]] = OrderedDict()
        self._off = max_ids == 0 or max_rows == 0

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._kept

    def remember(self, request_id: str, predictions: Any) -> None:
        """Keep ``predictions`` (a model's output) under ``request_id`` when they are one
        column of classes or values, dropping the oldest answers over the bounds."""
        if self._off:
            return
        values = predictions if type(predictions) is np.ndarray else np.asarray(
            getattr(predictions, "values", predictions))
        if values.ndim != 1:
            if values.ndim != 2 or values.shape[1] != 1:
                return
            values = values[:, 0]
        size = values.size
        kind = values.dtype.kind
        if (size == 0 or size > self.max_rows or metrics.predicts_classes(values) is None
                or (kind in "US" and values.dtype.itemsize > _MAX_CLASS_BYTES)
                or (kind == "O" and not _short_texts(values))):
            return
        kept = self._kept
        earlier = kept.pop(request_id, None)
        if earlier is not None:
            self.rows -= earlier.size
        kept[request_id] = values
        self.rows += size
        while len(kept) > self.max_ids or self.rows > self.max_rows:
            self.rows -= kept.popitem(last=False)[1].size

    def get(self, request_id: str) -> np.ndarray[Any, Any] | None:
        """The rows kept for ``request_id``, left in the window."""
        return self._kept.get(request_id)

    def take(self, request_id: str) -> np.ndarray[Any, Any] | None:
        """The rows kept for ``request_id``, removed from the window."""
        values = self._kept.pop(request_id, None)
        if values is not None:
            self.rows -= values.size
        return values


# --------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class FeedbackItem:
    """One request id's labels, as sent.

    Attributes:
        request_id: The answer's id.
        labels: Its labels, one per predicted row.
        field: Where they were in the body, for messages (``labels`` or ``[2].label``).
    """

    request_id: str
    labels: Sequence[Any]
    field: str


def parse_feedback(body: bytes) -> list[FeedbackItem]:
    """The feedback items of a ``/feedback`` body (its shape checked, not its labels' types).

    Raises:
        PayloadError: 400 naming the field and the fix.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise PayloadError(400, f"the body is not JSON ({err}): {_SHAPE}") from None
    if isinstance(document, dict):
        return [_item(document, "")]
    if isinstance(document, list):
        return [_item(entry, f"[{i}].") for i, entry in enumerate(document)]
    raise PayloadError(400, f"the body is a JSON {_json_type(document)}: {_SHAPE}")


def _item(entry: Any, at: str) -> FeedbackItem:
    if not isinstance(entry, dict):
        raise PayloadError(400, f"`{at[:-1]}` is a JSON {_json_type(entry)}, not an object: "
                           f"{_SHAPE}")
    unknown = sorted(set(entry) - {"request_id", "labels", "label"})
    if unknown:
        raise PayloadError(400, f"`{at}{unknown[0]}` is not a feedback field (the fields are "
                           "`request_id`, and `labels` or `label`)")
    rid = entry.get("request_id")
    if not isinstance(rid, str) or not rid:
        got = "missing" if rid is None else f"a JSON {_json_type(rid)}"
        raise PayloadError(400, f"`{at}request_id` must be the X-Request-Id of a scoring "
                           f"answer, a non-empty string ({got})")
    if "labels" in entry and "label" in entry:
        raise PayloadError(400, f"Only one of `{at}labels` or `{at}label` can be provided.")
    if "label" in entry:
        label = entry["label"]
        _check_scalar(label, f"{at}label")
        return FeedbackItem(rid, [label], f"{at}label")
    if "labels" not in entry:
        raise PayloadError(400, f"`{at}labels` is required: the true labels of the answer's "
                           "predicted rows, in their order (or `label` for a one-row answer)")
    labels = entry["labels"]
    if not isinstance(labels, list) or not labels:
        got = "empty" if isinstance(labels, list) else f"a JSON {_json_type(labels)}"
        raise PayloadError(400, f"`{at}labels` must be a list of one label per predicted row "
                           f"(it is {got}); for a one-row answer `label` takes the label alone")
    for i, label in enumerate(labels):
        _check_scalar(label, f"{at}labels[{i}]")
    return FeedbackItem(rid, labels, f"{at}labels")


def _check_scalar(label: Any, field: str) -> None:
    if label is None or isinstance(label, dict | list):
        raise PayloadError(400, f"`{field}` is {_describe(label)}: a label is a class (string, "
                           "integer, boolean) or a number; leave out the answers whose labels "
                           "are not known yet")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _describe(value: Any) -> str:
    return "null" if value is None else f"a JSON {_json_type(value)}"


@dataclass
class _Tally:
    matched: int = 0
    unmatched: int = 0
    correct: int = 0
    absolute_error: float = 0.0
    squared_error: float = 0.0


def apply_feedback(window: PredictionWindow, items: Sequence[FeedbackItem]) -> dict[str, int]:
    """Judge ``items`` against the window's predictions, count them, and take their ids out
    of the window; ``{"matched": n, "unmatched": m}`` in rows.

    Every item is checked before anything is counted or taken.

    Raises:
        PayloadError: 400 for a label count that differs from its answer's rows, or a label
            the prediction's type cannot take.
    """
    tally = _Tally()
    taken: set[str] = set()
    for item in items:
        predicted = window.get(item.request_id) if item.request_id not in taken else None
        if predicted is None:
            tally.unmatched += len(item.labels)
            continue
        taken.add(item.request_id)
        if len(item.labels) != predicted.size:
            raise PayloadError(400, f"`{item.field}` has {len(item.labels)} label(s), but the "
                               f"answer {item.request_id} predicted {predicted.size} row(s): "
                               "send one label per predicted row, in the order of its "
                               "predictions")
        if metrics.predicts_classes(predicted):
            _judge_classes(item, predicted, tally)
        else:
            _judge_values(item, predicted, tally)
    for rid in taken:
        window.take(rid)
    metrics.observe_feedback(tally.matched, tally.unmatched, tally.correct,
                             tally.absolute_error, tally.squared_error)
    return {"matched": tally.matched, "unmatched": tally.unmatched}


def _judge_classes(item: FeedbackItem, predicted: np.ndarray[Any, Any], tally: _Tally) -> None:
    kind = predicted.dtype.kind
    if kind in "iu":
        labels: list[Any] = [_integer(label, item, i) for i, label in enumerate(item.labels)]
        classes: list[Any] = predicted.tolist()
    elif kind == "b":
        labels = [_boolean(label, item, i) for i, label in enumerate(item.labels)]
        classes = predicted.tolist()
    else:  # text: both sides as text, as the `class` label writes them
        labels = [label if isinstance(label, str) else str(label) for label in item.labels]
        classes = predicted.astype(str).tolist() if kind in "US" else [
            str(value) for value in predicted.tolist()]
    tally.matched += len(labels)
    tally.correct += sum(1 for label, cls in zip(labels, classes, strict=True) if label == cls)


def _short_texts(values: np.ndarray[Any, Any]) -> bool:
    """Whether every value of an object array (text classes from pandas) is a short string or
    not a string: the window's memory bound counts `_MAX_CLASS_BYTES` a row."""
    return all(len(v) <= _MAX_CLASS_BYTES // 4 if isinstance(v, str) else
               len(v) <= _MAX_CLASS_BYTES if isinstance(v, bytes) else True
               for v in values.tolist())


def _field(item: FeedbackItem, i: int) -> str:
    return item.field if item.field.endswith("label") else f"{item.field}[{i}]"


def _integer(label: Any, item: FeedbackItem, i: int) -> int:
    if isinstance(label, bool | int):
        return int(label)
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, str) and _INTEGER.fullmatch(label):
        return int(label)
    raise PayloadError(400, f"`{_field(item, i)}` is {_shown(label)}, not an integer class: the "
                       "model predicts integer classes (send 1 or \"1\")")


def _boolean(label: Any, item: FeedbackItem, i: int) -> bool:
    if isinstance(label, bool):
        return label
    if isinstance(label, int | float) and label in (0, 1):
        return bool(label)
    if isinstance(label, str) and label.lower() in _TRUE | _FALSE:
        return label.lower() in _TRUE
    raise PayloadError(400, f"`{_field(item, i)}` is {_shown(label)}, not a boolean class: the "
                       "model predicts booleans (send true or false)")


def _judge_values(item: FeedbackItem, predicted: np.ndarray[Any, Any], tally: _Tally) -> None:
    for i, label in enumerate(item.labels):
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise PayloadError(400, f"`{_field(item, i)}` is {_shown(label)}: the model "
                               "predicts numbers, so its labels are JSON numbers (2.5, not "
                               "\"2.5\")")
    labels = np.asarray(item.labels, dtype=np.float64)
    values = predicted.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        errors = labels[finite] - values[finite]
        absolute, squared = float(np.abs(errors).sum()), float(np.square(errors).sum())
    if not (math.isfinite(absolute) and math.isfinite(squared)):
        raise PayloadError(400, f"`{item.field}`: the error of a label against its prediction "
                           "is too large to count (not a finite number); send the labels in "
                           "the model's units")
    matched = int(finite.sum())
    tally.matched += matched
    tally.unmatched += labels.size - matched
    tally.absolute_error += absolute
    tally.squared_error += squared


def _shown(label: Any) -> str:
    text = orjson.dumps(label).decode()
    return text if len(text) <= 40 else text[:37] + "..."
