"""`mlops canary-check`'s decision (pure), its queries (the rules' own PromQL), its Prometheus
client against a stub HTTP server on loopback, and its command line. The whole check against a
real Prometheus scraping real servers: tests/e2e/test_canary_check_e2e.py."""

from __future__ import annotations

import argparse
import http.server
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulumi_mlops.contracts import promql
from pulumi_mlops.plans import monitoring
from pulumi_mlops.runtime import canary_check
from pulumi_mlops.runtime.canary_check import (
    EXIT_ERROR,
    EXIT_PROMOTE,
    EXIT_ROLL_BACK,
    EXIT_WAIT,
    PrometheusError,
    Tolerances,
    TrackStats,
    add_parser,
    decide,
    gather,
    http_query,
    main,
    queries,
)
from tests.e2e.ports import free_port
from tests.loopback import reply

T = Tolerances()
HEALTHY = TrackStats(seen=True, requests=1000, error_ratio=0.001, latency=0.020)


def _outcomes(code_and_checks: Any) -> dict[str, str]:
    return {c.metric: c.outcome for c in code_and_checks.checks}


# --- the decision --------------------------------------------------------------------------


def test_a_canary_like_stable_is_promoted() -> None:
    decision = decide(HEALTHY, HEALTHY, T)
    assert decision.exit_code == EXIT_PROMOTE
    assert _outcomes(decision) == {"requests": "ok", "error_ratio": "ok", "latency_p99": "ok",
                                   "live_quality": "not judged"}
    assert decision.lines()[-1] == "decision: promote (exit 0)"


def test_too_few_requests_on_either_track_means_keep_waiting_whatever_else() -> None:
    failing = TrackStats(seen=True, requests=99, error_ratio=1.0, latency=5.0)
    decision = decide(failing, HEALTHY, T)
    assert decision.exit_code == EXIT_WAIT
    assert decision.checks[0].line() == (
        "requests: WAIT: canary 99, stable 1000: fewer than 100 on canary")
    assert _outcomes(decision)["error_ratio"] == "not judged"
    assert decide(HEALTHY, TrackStats(seen=True, requests=3), T).exit_code == EXIT_WAIT


def test_a_canary_not_scraped_yet_is_waited_for_and_said_so() -> None:
    decision = decide(TrackStats(), HEALTHY, T)
    assert decision.exit_code == EXIT_WAIT
    assert "no canary series yet" in decision.checks[0].reason


def test_an_error_ratio_past_stables_plus_the_tolerance_rolls_back() -> None:
    canary = TrackStats(seen=True, requests=1000, error_ratio=0.0115, latency=0.020)
    decision = decide(canary, HEALTHY, T)
    assert decision.exit_code == EXIT_ROLL_BACK
    (line,) = [x for x in decision.lines() if x.startswith("error_ratio")]
    assert line == ("error_ratio: WORSE: canary 0.0115, stable 0.0010: 5xx ratio above "
                    "stable's + 0.01 (0.0110)")
    within = TrackStats(seen=True, requests=1000, error_ratio=0.011, latency=0.020)
    assert decide(within, HEALTHY, T).exit_code == EXIT_PROMOTE


def test_latency_may_exceed_stables_by_the_percent_plus_the_slack() -> None:
    bound = 0.020 * 1.5 + 0.005
    at = TrackStats(seen=True, requests=1000, error_ratio=0.001, latency=bound)
    past = TrackStats(seen=True, requests=1000, error_ratio=0.001, latency=bound + 0.001)
    assert decide(at, HEALTHY, T).exit_code == EXIT_PROMOTE
    decision = decide(past, HEALTHY, T)
    assert decision.exit_code == EXIT_ROLL_BACK
    assert _outcomes(decision)["latency_p99"] == "worse"
    assert "above stable's + 50 % + 5 ms (35.0 ms)" in decision.checks[2].reason
    median = decide(past, HEALTHY, Tolerances(quantile=0.5))
    assert decision.checks[2].metric == "latency_p99"
    assert median.checks[2].metric == "latency_p50"


def test_live_accuracy_is_judged_once_both_tracks_have_enough_labels() -> None:
    stable = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=500,
                        accuracy=0.95)
    worse = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=500,
                       accuracy=0.92)
    decision = decide(worse, stable, T)
    assert decision.exit_code == EXIT_ROLL_BACK
    assert _outcomes(decision)["live_accuracy"] == "worse"
    few = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=99,
                     accuracy=0.5)
    decision = decide(few, stable, T)
    assert decision.exit_code == EXIT_PROMOTE
    assert decision.checks[3].line() == (
        "live_accuracy: NOT JUDGED: canary 0.5000, stable 0.9500: fewer than 100 labels "
        "matched (canary 99, stable 500)")


def test_live_mean_absolute_error_may_grow_by_the_percent() -> None:
    stable = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=500,
                        mean_absolute_error=2.0)
    ok = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=500,
                    mean_absolute_error=2.2)
    worse = TrackStats(seen=True, requests=1000, error_ratio=0.0, latency=0.02, labels=500,
                       mean_absolute_error=2.21)
    assert decide(ok, stable, T).exit_code == EXIT_PROMOTE
    decision = decide(worse, stable, T)
    assert decision.exit_code == EXIT_ROLL_BACK
    assert _outcomes(decision)["live_mean_absolute_error"] == "worse"


ratios = st.floats(min_value=0, max_value=1)
seconds = st.floats(min_value=0, max_value=10)


@given(st.integers(min_value=100, max_value=10**6), ratios, seconds,
       st.integers(min_value=0, max_value=10**4), st.one_of(st.none(), ratios))
def test_a_canary_identical_to_stable_is_never_rolled_back(
        requests: int, errors: float, latency: float, labels: int,
        accuracy: float | None) -> None:
    track = TrackStats(seen=True, requests=requests, error_ratio=errors, latency=latency,
                       labels=labels, accuracy=accuracy)
    assert decide(track, track, Tolerances(latency_slack=0, max_latency_increase=0,
                                           max_error_ratio_increase=0,
                                           max_accuracy_drop=0)).exit_code == EXIT_PROMOTE


# --- the queries -------------------------------------------------------------------------------


def test_the_queries_are_the_per_track_rules_expressions_over_the_window_asked() -> None:
    rules = {r["record"]: r["expr"] for r in monitoring.canary_rules("fraud") if "record" in r}
    asked = queries("fraud", "30m", 0.99)
    assert asked["error_ratio"] == rules["mlops:track_error:ratio_rate30m"]
    assert asked["latency"] == rules["mlops:track_latency:p99_rate30m"]
    assert "[10m]" in queries("fraud", "10m", 0.99)["error_ratio"]


@pytest.mark.parametrize("service", ["fraud", None])
@pytest.mark.parametrize("serving_only", [False, True])
def test_the_contracts_promql_is_what_the_plans_spell(service: str | None,
                                                      serving_only: bool) -> None:
    """Until plans/monitoring.py builds its PromQL from `contracts.promql`, the two agree."""
    for by in (("service",), ("service", "track")):
        assert promql.error_ratio(service, "1h", by, serving_only=serving_only) == \
            monitoring.error_ratio(service, "1h", by, serving_only=serving_only)
    if service is not None:
        assert promql.latency_quantile(service, 0.9, "5m") == \
            monitoring.latency_quantile(service, 0.9, "5m")


def _sample(track: str, value: float | str) -> dict[str, Any]:
    return {"metric": {"service": "fraud", "track": track}, "value": [1.0, str(value)]}


def test_gather_reads_each_track_and_derives_live_quality() -> None:
    answers = {
        "requests": [_sample("canary", 120), _sample("stable", 1200), _sample("shadow", 5)],
        "error_ratio": [_sample("canary", 0.25), _sample("stable", 0)],
        "latency": [_sample("canary", "NaN"), _sample("stable", 0.01)],
        "labels": [_sample("canary", 200), _sample("stable", 400)],
        "correct": [_sample("canary", 150), _sample("stable", 380)],
        "absolute_error": [],
        "classifier": [_sample("canary", 2), _sample("stable", 2)],
    }
    expressions = {expr: key for key, expr in queries("fraud", "10m", 0.99).items()}
    stats = gather(lambda expr: answers[expressions[expr]], "fraud", "10m")
    assert stats["canary"] == TrackStats(seen=True, requests=120, error_ratio=0.25,
                                         latency=None, labels=200, accuracy=0.75)
    assert stats["stable"].accuracy == 0.95 and stats["stable"].latency == 0.01


def test_gather_refuses_a_service_prometheus_has_no_series_of() -> None:
    with pytest.raises(PrometheusError, match="no mlops_requests_total series of service "
                                              "'fraud'"):
        gather(lambda expr: [], "fraud", "10m")


# --- the Prometheus client ---------------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict[str, Any]]]] = []
    seen: ClassVar[list[tuple[str, dict[str, list[str]], str | None]]] = []

    def do_POST(self) -> None:
        import urllib.parse

        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).seen.append((self.path, urllib.parse.parse_qs(body),
                                self.headers.get("Authorization")))
        status, answer = type(self).answers.pop(0)
        reply(self, status, answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.answers, _Stub.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _vector(*samples: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(samples)}}


def test_http_query_posts_at_one_instant_with_a_timeout_and_basic_auth(stub: str) -> None:
    _Stub.answers = [(200, _vector(_sample("canary", 1)))]
    ask = http_query(stub.replace("http://", "http://ci:s%40cret@") + "/prom/", at=1700000000,
                     timeout=3)
    assert ask("up") == [_sample("canary", 1)]
    ((path, form, auth),) = _Stub.seen
    assert path == "/prom/api/v1/query"
    assert form == {"query": ["up"], "time": ["1700000000.000"], "timeout": ["3s"]}
    assert auth == "Basic Y2k6c0BjcmV0"  # ci:s@cret


def test_a_refused_query_is_not_retried_and_a_failing_server_is_retried_twice(stub: str) -> None:
    pauses: list[float] = []
    _Stub.answers = [(400, {"status": "error", "error": "parse error at char 3"})]
    ask = http_query(stub, at=0, timeout=3, sleep=pauses.append)
    with pytest.raises(PrometheusError, match="answered 400: parse error at char 3"):
        ask("up{")
    assert pauses == []
    _Stub.answers = [(503, {"status": "error", "error": "busy"})] * 3
    with pytest.raises(PrometheusError, match=r"answered 503: busy \(3 attempts"):
        ask("up")
    assert pauses == [1.0, 1.0]
    _Stub.answers = [(503, {"status": "error", "error": "busy"}), (200, _vector())]
    assert ask("up") == []


def test_an_unreachable_prometheus_exits_2_after_three_attempts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(canary_check, "_RETRY_PAUSE", 0.0)
    code = main(["--prometheus", f"http://127.0.0.1:{free_port()}", "--service", "fraud",
                 "--timeout", "1"])
    assert code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unreachable" in captured.err and "(3 attempts, 1 s each)" in captured.err


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--service", "fraud"], "--prometheus"),
    (["--prometheus", "http://p:9090", "--service", 'fraud"} or vector(1)'], "service name"),
    (["--prometheus", "http://p:9090", "--service", "fraud", "--window", "ten"],
     "Prometheus duration"),
    (["--prometheus", "http://p:9090", "--service", "fraud", "--quantile", "0"], "above 0"),
    (["--prometheus", "http://p:9090", "--service", "fraud", "--min-requests", "-1"],
     "at least 0"),
    (["--prometheus", "http://p:9090", "--service", "fraud", "--max-error-ratio-increase",
      "nan"], "at least 0"),
])
def test_usage_errors_exit_2(argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    assert message in capsys.readouterr().err


def test_a_url_that_is_not_http_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--prometheus", "prometheus:9090", "--service", "fraud"]) == EXIT_ERROR
    assert "must be an http(s) URL" in capsys.readouterr().err


def test_add_parser_wires_the_subcommand_with_the_documented_defaults() -> None:
    parser = argparse.ArgumentParser(prog="mlops")
    add_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["canary-check", "--prometheus", "http://p:9090",
                            "--service", "fraud", "--max-latency-increase", "20"])
    assert ns.func is canary_check.run
    assert canary_check.tolerances_of(ns) == Tolerances(max_latency_increase=0.2)
    assert ns.window == "10m" and ns.timeout == 10.0


def test_main_prints_a_line_per_metric_and_exits_with_the_decision(
        stub: str, capsys: pytest.CaptureFixture[str]) -> None:
    per_query = {
        "requests": _vector(_sample("canary", 500), _sample("stable", 5000)),
        "error_ratio": _vector(_sample("canary", 0.2), _sample("stable", 0.001)),
        "latency": _vector(_sample("canary", 0.01), _sample("stable", 0.01)),
    }
    _Stub.answers = [(200, per_query.get(key, _vector()))
                     for key in queries("fraud", "10m", 0.99)]
    assert main(["--prometheus", stub, "--service", "fraud"]) == EXIT_ROLL_BACK
    assert capsys.readouterr().out.splitlines() == [
        "canary-check: service fraud, last 10m",
        "requests: OK: canary 500, stable 5000: at least 100 each",
        "error_ratio: WORSE: canary 0.2000, stable 0.0010: 5xx ratio above stable's + 0.01 "
        "(0.0110)",
        "latency_p99: OK: canary 10.0 ms, stable 10.0 ms: within stable's + 50 % + 5 ms "
        "(20.0 ms)",
        "live_quality: NOT JUDGED: canary none, stable none: no labels posted to /feedback in "
        "the window",
        "decision: roll back (exit 1)",
    ]
