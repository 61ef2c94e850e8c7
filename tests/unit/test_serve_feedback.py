"""Delayed labels in-process: request ids on both protocols, the bounded window of predictions,
and ``POST /feedback`` (what it counts, and that a rejected request counts nothing)."""

from __future__ import annotations

import math
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression, LogisticRegression

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.app import ScoringApp
from pulumi_mlops.runtime.serve.feedback import (
    PredictionWindow,
    apply_feedback,
    new_request_id,
    parse_feedback,
    well_formed_id,
)
from pulumi_mlops.runtime.serve.limits import Limits
from pulumi_mlops.runtime.serve.loading import load_served_model
from pulumi_mlops.runtime.serve.payload import PayloadError
from tests.asgi import asgi_request
from tests.unit.serving_data import COLUMNS, general_only, training_frame

JSON = "application/json"
ROWS = [[0.1, -0.2, 0.3, 1.5, 0.0, 3], [1.0, 2.0, -1.0, 0.5, 0.25, 7],
        [-0.5, 0.0, 0.0, 0.0, 1.0, 0]]


def call(app: ScoringApp, method: str, path: str, body: bytes | Any = b"",
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[bytes, bytes]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = [(b"content-type", JSON.encode()),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    status, payload, response_headers = asgi_request(app, method, path, raw, sent)
    try:
        return status, orjson.loads(payload), response_headers
    except orjson.JSONDecodeError:
        return status, payload, response_headers


def split(rows: list[list[Any]]) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})


def counters() -> dict[str, float]:
    """The feedback counters now."""
    get = metrics.REGISTRY.get_sample_value
    return {"matched": get("mlops_feedback_total", {"outcome": "matched"}) or 0.0,
            "unmatched": get("mlops_feedback_total", {"outcome": "unmatched"}) or 0.0,
            "correct": get("mlops_feedback_correct_total") or 0.0,
            "absolute": get("mlops_feedback_absolute_error_total") or 0.0,
            "squared": get("mlops_feedback_squared_error_total") or 0.0}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in counters().items()}


NOTHING = {"matched": 0.0, "unmatched": 0.0, "correct": 0.0, "absolute": 0.0, "squared": 0.0}


def _save(tmp: Path, model: Any, frame: pd.DataFrame, *, fast: bool = True) -> ScoringApp:
    path = tmp / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    served = load_served_model(str(path))
    return ScoringApp(served if fast else general_only(served),
                      limits=Limits(max_body_bytes=64 * 1024))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ScoringApp:
    frame, target = training_frame()
    return _save(tmp_path_factory.mktemp("classifier"),
                 LogisticRegression(max_iter=1000).fit(frame, target), frame)


@pytest.fixture(scope="module")
def text_classifier(tmp_path_factory: pytest.TempPathFactory) -> ScoringApp:
    frame, target = training_frame()
    names = np.array(["no", "yes"])[target]
    return _save(tmp_path_factory.mktemp("text"),
                 LogisticRegression(max_iter=1000).fit(frame, names), frame)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> ScoringApp:
    frame, _ = training_frame()
    target = frame["f0"] * 3 + frame["n"]
    return _save(tmp_path_factory.mktemp("regressor"), LinearRegression().fit(frame, target),
                 frame)


def score(app: ScoringApp, rows: list[list[Any]] = ROWS,
          headers: dict[str, str] | None = None) -> tuple[str, list[Any]]:
    """The request id and predictions of a scoring answer."""
    status, answer, response_headers = call(app, "POST", "/invocations", split(rows), headers)
    assert status == 200, answer
    return response_headers[b"x-request-id"].decode(), answer["predictions"]


# --------------------------------------------------------------------------- request ids


def test_a_new_request_id_is_a_uuid4_in_hex_and_never_repeats() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for rid in ids[:50]:
        parsed = uuid.UUID(hex=rid)
        assert parsed.hex == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("value, ok", [
    ("0f8e2a41c9d54b7e8a1c2d3e4f5a6b7c", True), ("order-17.retry_2", True), ("x" * 128, True),
    ("", False), ("x" * 129, False), ("has space", False), ("a\r\nSet-Cookie:x", False),
    ("é", False), ('quote"d', False),
])
def test_a_client_request_id_must_be_a_bounded_token(value: str, ok: bool) -> None:
    assert well_formed_id(value) is ok


def test_invocations_answers_carry_a_request_id_and_mlflows_body_unchanged(
        classifier: ScoringApp) -> None:
    _, body, headers = call(classifier, "POST", "/invocations", split(ROWS))
    generated = headers[b"x-request-id"].decode()
    assert uuid.UUID(hex=generated).version == 4
    # Exactly MLflow's body: {"predictions": [...]}, nothing added.
    assert list(body) == ["predictions"]
    _, again, headers = call(classifier, "POST", "/invocations", split(ROWS),
                             {"X-Request-Id": "order-17"})
    assert headers[b"x-request-id"] == b"order-17" and again == body
    _, _, headers = call(classifier, "POST", "/invocations", split(ROWS),
                         {"X-Request-Id": "not a token"})
    assert headers[b"x-request-id"] != b"not a token"
    assert uuid.UUID(hex=headers[b"x-request-id"].decode()).version == 4


def test_an_error_answer_keeps_nothing_for_feedback(classifier: ScoringApp) -> None:
    kept = len(classifier.window)
    status, _, headers = call(classifier, "POST", "/invocations", b"{", {"X-Request-Id": "bad"})
    assert status == 400 and b"x-request-id" not in headers
    assert len(classifier.window) == kept and "bad" not in classifier.window


def _v2(rows: list[list[Any]], **extra: Any) -> dict[str, Any]:
    frame = np.asarray(rows, dtype=float)
    inputs = [{"name": c, "datatype": "INT64" if c == "n" else "FP64", "shape": [len(rows)],
               "data": (frame[:, i].astype(int) if c == "n" else frame[:, i]).tolist()}
              for i, c in enumerate(COLUMNS)]
    return {"inputs": inputs, **extra}


@pytest.mark.parametrize("body_id, header_id, expected", [
    (None, None, "generated"),
    ("client-7", None, "client-7"),
    (None, "from-header", "from-header"),
    ("client-7", "from-header", "client-7"),  # the protocol's own id first
])
def test_v2_answers_carry_the_id_in_the_body_and_the_header(
        classifier: ScoringApp, body_id: str | None, header_id: str | None,
        expected: str) -> None:
    extra = {} if body_id is None else {"id": body_id}
    status, answer, headers = call(classifier, "POST", "/v2/models/model/infer",
                                   _v2(ROWS, **extra),
                                   None if header_id is None else {"X-Request-Id": header_id})
    assert status == 200, answer
    rid = answer["id"]
    if expected == "generated":
        assert uuid.UUID(hex=rid).version == 4
    else:
        assert rid == expected
    assert headers[b"x-request-id"] == rid.encode()
    assert rid in classifier.window


def test_a_v2_id_that_is_not_a_token_is_echoed_but_not_kept(classifier: ScoringApp) -> None:
    status, answer, headers = call(classifier, "POST", "/v2/models/model/infer",
                                   _v2(ROWS, id="line\nbreak"))
    assert status == 200 and answer["id"] == "line\nbreak"
    assert b"x-request-id" not in headers and "line\nbreak" not in classifier.window


# --------------------------------------------------------------------------- the window


def test_the_window_drops_the_oldest_answers_over_its_id_bound() -> None:
    window = PredictionWindow(max_ids=3, max_rows=100)
    for i in range(5):
        window.remember(f"r{i}", np.array([i]))
    assert [f"r{i}" in window for i in range(5)] == [False, False, True, True, True]
    assert (len(window), window.rows) == (3, 3)


def test_the_window_drops_the_oldest_answers_over_its_row_bound() -> None:
    window = PredictionWindow(max_ids=100, max_rows=10)
    window.remember("a", np.arange(4))
    window.remember("b", np.arange(4))
    window.remember("c", np.arange(4))  # 12 rows: "a" goes
    assert ("a" in window, "b" in window, "c" in window) == (False, True, True)
    assert window.rows == 8
    window.remember("huge", np.arange(11))  # more than the whole window: not kept
    assert "huge" not in window and window.rows == 8 and len(window) == 2


def test_an_id_answered_again_replaces_its_rows() -> None:
    window = PredictionWindow(max_ids=10, max_rows=10)
    window.remember("a", np.arange(4))
    window.remember("b", np.arange(1))
    window.remember("a", np.arange(2))
    assert window.rows == 3 and window.get("a") is not None
    window.remember("c", np.arange(8))  # 11 rows: the oldest is "b" now, not "a"
    assert "b" not in window and "a" in window and window.rows == 10


@pytest.mark.parametrize("predictions, kept", [
    (np.array([1, 0, 1]), True),
    (np.array([0.5, 2.0]), True),
    (np.array(["no", "yes"]), True),
    (np.array([True]), True),
    (pd.Series([1.5, 2.5]), True),
    (pd.DataFrame({"y": [1, 2]}), True),  # one column
    (np.array([[1.0], [2.0]]), True),
    (np.array([[0.2, 0.8], [0.6, 0.4]]), False),  # probabilities: not one column
    (pd.DataFrame({"a": [1], "b": [2]}), False),
    (np.array([], dtype=float), False),
    (np.array([1 + 2j]), False),  # neither a class nor a value
    (np.array(["x" * 100]), False),  # a "class" of 400 bytes
    (np.array(["no", "x" * 20_000], dtype=object), False),  # the same, as pandas holds text
    (np.array(["no", "yes"], dtype=object), True),
    ({"predictions": [1]}, False),
])
def test_only_one_column_of_classes_or_values_is_kept(predictions: Any, kept: bool) -> None:
    window = PredictionWindow(max_ids=10, max_rows=10)
    window.remember("r", predictions)
    assert ("r" in window) is kept


def test_a_window_of_zero_keeps_nothing() -> None:
    for window in (PredictionWindow(0, 10), PredictionWindow(10, 0)):
        window.remember("r", np.array([1]))
        assert len(window) == 0


def test_a_full_window_holds_its_bound_of_memory() -> None:
    # 20,000 one-row answers past a 10,000-id window: what stays allocated is the window's
    # bound (ids, index, arrays), about 280 bytes an answer, not what passed through it.
    window = PredictionWindow(max_ids=10_000, max_rows=10_000)
    tracemalloc.start()
    try:
        for i in range(30_000):
            window.remember(new_request_id(), np.array([float(i)]))
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(window), window.rows) == (10_000, 10_000)
    assert current < 10_000 * 400, current


# --------------------------------------------------------------------------- /feedback


def test_classification_counts_correct_and_matched_labels(classifier: ScoringApp) -> None:
    rid, predicted = score(classifier)
    labels = [predicted[0], 1 - predicted[1], predicted[2]]
    before = counters()
    status, answer, _ = call(classifier, "POST", "/feedback",
                             {"request_id": rid, "labels": labels})
    assert (status, answer) == (200, {"matched": 3, "unmatched": 0})
    assert counted_since(before) == {**NOTHING, "matched": 3, "correct": 2}
    # Taken once: the same id again is unmatched.
    status, answer, _ = call(classifier, "POST", "/feedback",
                             {"request_id": rid, "labels": labels})
    assert (status, answer) == (200, {"matched": 0, "unmatched": 3})


def test_integer_classes_take_labels_as_integers(classifier: ScoringApp) -> None:
    rid, predicted = score(classifier)
    labels = [str(predicted[0]), float(predicted[1]), bool(predicted[2])]
    before = counters()
    assert call(classifier, "POST", "/feedback", {"request_id": rid, "labels": labels})[0] == 200
    assert counted_since(before) == {**NOTHING, "matched": 3, "correct": 3}


def test_an_integer_label_too_long_for_a_class_gets_400_not_500(classifier: ScoringApp) -> None:
    rid, predicted = score(classifier)
    before = counters()
    status, body, _ = call(classifier, "POST", "/feedback",
                           {"request_id": rid, "labels": ["9" * 5000, *predicted[1:]]})
    assert status == 400 and "`labels[0]`" in body["message"], body
    assert counted_since(before) == NOTHING


def test_text_classes_compare_labels_as_text(text_classifier: ScoringApp) -> None:
    rid, predicted = score(text_classifier)
    assert set(predicted) <= {"no", "yes"}
    flipped = {"no": "yes", "yes": "no"}
    before = counters()
    status, _, _ = call(text_classifier, "POST", "/feedback",
                        [{"request_id": rid, "labels": [predicted[0], flipped[predicted[1]], 1]}])
    assert status == 200
    assert counted_since(before) == {**NOTHING, "matched": 3, "correct": 1}


@pytest.mark.parametrize("predicted, labels, correct", [
    (np.array([1, 2, 3]), [1, "2", 3.0], 3),
    (np.array([1, 2, 1]), ["01", 2.0, True], 3),  # "01" is 1, true is 1
    (np.array([True, False, True]), [True, "false", 0], 2),
    (np.array([True, False]), ["TRUE", 1], 1),
    (np.array(["1", "2"]), [1, "2"], 2),  # text classes: 1 is "1"
    (np.array(["True", "a"]), [True, "A"], 1),  # true is "True"; case matters for text
    (np.array([1.0, 2.0]), [1, 2.5], 0),  # floats are values, not classes
])
def test_labels_compare_as_the_predicted_class_type(predicted: np.ndarray, labels: list[Any],
                                                    correct: int) -> None:
    window = PredictionWindow(10, 10)
    window.remember("r", predicted)
    before = counters()
    assert apply_feedback(window, parse_feedback(orjson.dumps(
        {"request_id": "r", "labels": labels}))) == {"matched": len(labels), "unmatched": 0}
    counted = counted_since(before)
    if predicted.dtype.kind == "f":
        assert counted["absolute"] == pytest.approx(0.5) and counted["correct"] == 0
    else:
        assert counted["correct"] == correct


def test_regression_adds_absolute_and_squared_errors(regressor: ScoringApp) -> None:
    rid, predicted = score(regressor)
    labels = [predicted[0] + 1.5, predicted[1] - 2, 7]
    before = counters()
    status, answer, _ = call(regressor, "POST", "/feedback",
                             {"request_id": rid, "labels": labels})
    assert (status, answer) == (200, {"matched": 3, "unmatched": 0})
    errors = np.array(labels) - np.array(predicted)
    counted = counted_since(before)
    assert counted["matched"] == 3 and counted["correct"] == 0
    assert counted["absolute"] == pytest.approx(np.abs(errors).sum())
    assert counted["squared"] == pytest.approx(np.square(errors).sum())


def test_a_one_row_answer_takes_a_single_label(regressor: ScoringApp) -> None:
    rid, predicted = score(regressor, ROWS[:1])
    before = counters()
    assert call(regressor, "POST", "/feedback", {"request_id": rid, "label": predicted[0] - 1}
                )[1] == {"matched": 1, "unmatched": 0}
    assert counted_since(before)["absolute"] == pytest.approx(1.0)


def test_a_nan_prediction_counts_its_label_unmatched() -> None:
    window = PredictionWindow(10, 10)
    window.remember("r", np.array([1.0, math.nan]))
    before = counters()
    assert apply_feedback(window, parse_feedback(b'{"request_id":"r","labels":[2,2]}')) == {
        "matched": 1, "unmatched": 1}
    assert counted_since(before)["absolute"] == 1.0


def test_unknown_and_repeated_ids_are_unmatched(classifier: ScoringApp) -> None:
    rid, predicted = score(classifier)
    before = counters()
    status, answer, _ = call(classifier, "POST", "/feedback", [
        {"request_id": "never-issued", "labels": [1, 0]},
        {"request_id": rid, "labels": predicted},
        {"request_id": rid, "labels": predicted},  # the second time in one request too
    ])
    assert (status, answer) == (200, {"matched": 3, "unmatched": 5})
    assert counted_since(before) == {**NOTHING, "matched": 3, "unmatched": 5, "correct": 3}


def test_feedback_for_a_v2_answer_is_matched_by_its_id(regressor: ScoringApp) -> None:
    status, answer, _ = call(regressor, "POST", "/v2/models/model/infer", _v2(ROWS, id="v2-1"))
    assert status == 200
    predicted = answer["outputs"][0]["data"]
    assert call(regressor, "POST", "/feedback", {"request_id": "v2-1", "labels": predicted}
                )[1] == {"matched": 3, "unmatched": 0}


@pytest.mark.parametrize("body, field", [
    (b"{", "not JSON"),
    (b"17", "JSON number"),
    (b'"r"', "JSON string"),
    (b"[1]", "`[0]`"),
    (b'{"labels": [1, 0, 1]}', "`request_id`"),
    (b'{"request_id": 7, "labels": [1, 0, 1]}', "`request_id`"),
    (b'{"request_id": "", "labels": [1, 0, 1]}', "`request_id`"),
    (b'{"request_id": "ID"}', "`labels` is required"),
    (b'{"request_id": "ID", "labels": 1}', "`labels` must be a list"),
    (b'{"request_id": "ID", "labels": []}', "`labels` must be a list"),
    (b'{"request_id": "ID", "labels": [1, 0, 1], "label": 1}', "Only one of `labels`"),
    (b'{"request_id": "ID", "labels": [1, null, 1]}', "`labels[1]` is null"),
    (b'{"request_id": "ID", "labels": [1, [0], 1]}', "`labels[1]` is a JSON array"),
    (b'{"request_id": "ID", "lables": [1, 0, 1]}', "`lables` is not a feedback field"),
    (b'{"request_id": "ID", "labels": [1, 0]}', "`labels` has 2 label(s)"),
    (b'{"request_id": "ID", "labels": [1, 0, 1, 1]}', "`labels` has 4 label(s)"),
    (b'{"request_id": "ID", "label": 1}', "`label` has 1 label(s)"),
    (b'{"request_id": "ID", "labels": [1, "cat", 1]}', "`labels[1]` is \"cat\""),
    (b'{"request_id": "ID", "labels": [1, 1.5, 1]}', "`labels[1]` is 1.5"),
    # A valid first item does not count when the second is refused.
    (b'[{"request_id": "ID", "labels": [1, 0, 1]}, {"request_id": "x", "labels": {}}]',
     "`[1].labels`"),
])
def test_bad_feedback_gets_400_naming_the_field_and_counts_nothing(
        classifier: ScoringApp, body: bytes, field: str) -> None:
    rid, _ = score(classifier)
    body = body.replace(b'"ID"', orjson.dumps(rid))
    before, kept = counters(), len(classifier.window)
    status, answer, _ = call(classifier, "POST", "/feedback", body)
    assert status == 400, answer
    assert answer["error_code"] == "BAD_REQUEST" and field in answer["message"], answer
    assert counted_since(before) == NOTHING
    assert rid in classifier.window and len(classifier.window) == kept


@pytest.mark.parametrize("labels, field", [
    ([1.0, "2.5", 3.0], "`labels[1]` is \"2.5\""),
    ([1.0, True, 3.0], "`labels[1]` is true"),
    ([1.0, 1e308, -1e308], "too large to count"),
])
def test_a_regression_label_must_be_a_number(regressor: ScoringApp, labels: list[Any],
                                             field: str) -> None:
    rid, _ = score(regressor)
    before = counters()
    status, answer, _ = call(regressor, "POST", "/feedback", {"request_id": rid,
                                                               "labels": labels})
    assert status == 400 and field in answer["message"], answer
    assert "JSON numbers" in answer["message"] or "units" in answer["message"]
    assert counted_since(before) == NOTHING and rid in regressor.window


def test_a_feedback_body_over_the_limit_gets_413_and_counts_nothing(
        classifier: ScoringApp) -> None:
    before = counters()
    body = orjson.dumps({"request_id": "r", "labels": [1] * 40_000})
    status, answer, _ = call(classifier, "POST", "/feedback", body)
    assert status == 413 and "--max-body-bytes" in answer["message"]
    assert counted_since(before) == NOTHING


def test_feedback_accepts_post_only(classifier: ScoringApp) -> None:
    assert call(classifier, "GET", "/feedback")[0] == 405


def test_the_metrics_page_has_the_feedback_counters_and_the_loaded_gauge(
        classifier: ScoringApp) -> None:
    page = call(classifier, "GET", "/metrics")[1].decode()
    for line in ('mlops_feedback_total{outcome="matched"}',
                 'mlops_feedback_total{outcome="unmatched"}', "mlops_feedback_correct_total ",
                 "mlops_feedback_absolute_error_total ", "mlops_feedback_squared_error_total "):
        assert line in page
    assert "mlops_model_loaded 1.0" in page.splitlines()


# --------------------------------------------------------------------------- property


classes = st.lists(st.integers(0, 3), min_size=1, max_size=8)
values = st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=8)


@st.composite
def feedback_cases(draw: st.DrawFn) -> tuple[list[tuple[str, list[Any]]],
                                             list[dict[str, Any]]]:
    """Answers kept (id, predictions) and the feedback items sent for them (some for ids
    never answered, some repeated)."""
    answers: list[tuple[str, list[Any]]] = [
        (f"r{i}", list(draw(classes if draw(st.booleans()) else values)))
        for i in range(draw(st.integers(1, 6)))]
    items = []
    for rid, predicted in answers:
        if draw(st.booleans()):
            strategy = st.integers(0, 3) if isinstance(predicted[0], int) else st.floats(
                -1e6, 1e6, allow_nan=False, width=32)
            labels = draw(st.lists(strategy, min_size=len(predicted),
                                   max_size=len(predicted)))
            items.append({"request_id": rid, "labels": labels})
            if draw(st.booleans()):
                items.append({"request_id": rid, "labels": labels})
    for i in range(draw(st.integers(0, 2))):
        items.append({"request_id": f"unknown{i}", "labels": [0] * draw(st.integers(1, 3))})
    return answers, draw(st.permutations(items))


@given(feedback_cases())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_counters_equal_a_plain_recomputation(
        case: tuple[list[tuple[str, list[Any]]], list[dict[str, Any]]]) -> None:
    answers, items = case
    window = PredictionWindow(100, 1000)
    for rid, predicted in answers:
        window.remember(rid, np.array(predicted))
    expected = dict(NOTHING)
    kept: dict[str, list[Any] | None] = dict(answers)
    for item in items:
        labelled = kept.pop(item["request_id"], None)
        if labelled is None:
            expected["unmatched"] += len(item["labels"])
            continue
        expected["matched"] += len(labelled)
        for label, prediction in zip(item["labels"], labelled, strict=True):
            if isinstance(prediction, int):
                expected["correct"] += label == prediction
            else:
                expected["absolute"] += abs(label - prediction)
                expected["squared"] += (label - prediction) ** 2
    before = counters()
    summary = apply_feedback(window, parse_feedback(orjson.dumps(items)))
    counted = counted_since(before)
    assert summary == {"matched": expected["matched"], "unmatched": expected["unmatched"]}
    for key, value in expected.items():
        # The counters are the process's running sums: a difference of two readings is exact
        # only to the precision of their size (earlier examples add squares up to 1e12).
        tolerance = 1e-6 + abs(before[key]) * 1e-14
        assert counted[key] == pytest.approx(value, rel=1e-9, abs=tolerance), key


def test_a_rejected_parse_raises_a_payload_error() -> None:
    with pytest.raises(PayloadError) as raised:
        parse_feedback(b"[]x")
    assert raised.value.status == 400
