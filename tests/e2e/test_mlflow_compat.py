"""`mlops serve` as a drop-in for `mlflow models serve`: every case in tests/e2e/compat_cases.py
is sent unchanged to both servers, serving the same saved model (tests/e2e/compat_models.py),
and the answers must be identical or differ only in one of the deliberate ways listed there.

The figures over the whole table: `.venv/bin/python scripts/mlflow_compat_report.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from tests.e2e.compat_cases import (
    DETAIL,
    DIFFERENT,
    HTTP,
    IDENTICAL,
    LOSSY,
    MLFLOW,
    MLOPS,
    Case,
    Outcome,
    Reply,
    Server,
    build_cases,
    judge,
    run_case,
    running_servers,
    same,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CASES = build_cases()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Server]]:
    """Every model saved once, both servers (and `--coerce lossy` where asked) running."""
    with running_servers(tmp_path_factory.mktemp("mlflow-compat")) as running:
        yield running


def _explain(outcome: Outcome) -> str:
    logs = "\n".join(f"--- {kind} log (tail) ---\n{text}" for kind, text in outcome.logs.items())
    return f"{outcome.line()}\n{logs}"


def test_every_server_started(servers: dict[tuple[str, str], Server]) -> None:
    down = {f"{model}/{kind}": f"{s.error}\n{s.log_tail()}"
            for (model, kind), s in servers.items() if s.error}
    assert down == {}
    assert {kind for _, kind in servers} >= {MLFLOW, MLOPS}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mlops_serve_answers_as_mlflow_does(case: Case,
                                            servers: dict[tuple[str, str], Server]) -> None:
    outcome = run_case(case, servers)
    assert outcome.kind != DIFFERENT, _explain(outcome)
    if case.target != MLOPS:  # `--coerce lossy` must behave exactly as MLflow does
        assert outcome.kind in (IDENTICAL, DETAIL), _explain(outcome)


# The judge itself: what counts as identical and as a deliberate difference.

def _reply(status: int, body: str, content_type: str = "application/json") -> Reply:
    return Reply(status, content_type, body.encode())


def test_json_comparison_is_exact() -> None:
    assert same({"p": [float("nan"), 1.5]}, {"p": [math.nan, 1.5]})
    assert not same([1], [1.0])  # an int answered as a float is a difference
    assert not same([True], [1])
    assert not same([0.30000000000000004], [0.3])
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})  # key order is part of the answer


def test_lossy_refusal_counts_only_when_it_names_the_column() -> None:
    case = Case("m", "c", b"{}", lossy_column="count")
    ok = _reply(200, '{"predictions": [1]}')
    named = _reply(400, '{"error_code": "BAD_REQUEST", "message": "column \'count\' is ..."}')
    unnamed = _reply(400, '{"error_code": "BAD_REQUEST", "message": "bad input"}')
    assert judge(case, ok, named)[0] == LOSSY
    assert judge(case, ok, unnamed)[0] == DIFFERENT
    assert judge(Case("m", "c", b"{}"), ok, named)[0] == DIFFERENT
    tensor = Case("m", "c", b"{}", lossy_column="")  # an unnamed tensor
    assert judge(tensor, ok, _reply(400, '{"message": "the input tensor is float64: ..."}'))[
        0] == LOSSY
    assert judge(tensor, ok, unnamed)[0] == DIFFERENT


def test_errors_must_agree_on_status_and_error_code() -> None:
    case = Case("m", "c", b"{}")
    mlflow = _reply(400, '{"error_code": "BAD_REQUEST", "message": "x", "stack_trace": "..."}')
    assert judge(case, mlflow, _reply(400, '{"error_code": "BAD_REQUEST", "message": "y"}'))[
        0] == DETAIL
    assert judge(case, mlflow, _reply(400, '{"error_code": "INVALID_PARAMETER_VALUE"}'))[
        0] == DIFFERENT
    assert judge(case, mlflow, _reply(500, '{"error_code": "BAD_REQUEST"}'))[0] == DIFFERENT


def test_stricter_http_status_counts_only_where_the_case_allows_it() -> None:
    mlflow = _reply(500, "Internal Server Error", "text/plain")
    mlops = _reply(415, '{"error_code": "UNSUPPORTED_MEDIA_TYPE"}')
    assert judge(Case("m", "c", b"{}", strict_status=415), mlflow, mlops)[0] == HTTP
    assert judge(Case("m", "c", b"{}"), mlflow, mlops)[0] == DIFFERENT
