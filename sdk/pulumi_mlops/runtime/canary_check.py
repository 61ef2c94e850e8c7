"""`mlops canary-check`: should a canary be promoted, kept waiting, or rolled back?

It asks Prometheus (its HTTP API, ``/api/v1/query``) how the ``canary`` and ``stable`` tracks of
one service did over a window, with the PromQL of `pulumi_mlops.contracts.promql` (the
expressions of MonitoringStack's ``mlops:track_error:ratio_rate30m`` and
``mlops:track_latency:p99_rate30m`` rules, over the window asked instead of 30 minutes), and
compares them metric by metric, each with its tolerance:

- requests: each track answered at least ``min_requests`` in the window, otherwise nothing is
  judged and the answer is "keep waiting";
- error ratio (answers 5xx): the canary's may exceed stable's by ``max_error_ratio_increase``
  (absolute: 0.01 is one point);
- latency (a quantile, p99 by default): the canary's may exceed stable's by
  ``max_latency_increase`` (a fraction of stable's) plus ``latency_slack`` seconds (below a few
  milliseconds the latency histogram's buckets are too coarse for a ratio to mean anything);
- live quality, once delayed labels arrived on ``/feedback`` (at least ``min_labels`` matched on
  each track; otherwise not judged): a classifier's accuracy may drop by ``max_accuracy_drop``
  (absolute), a regressor's mean absolute error may grow by ``max_error_increase`` (a fraction).

Exit status: 0 promote (every judged metric within its tolerance), 1 roll back (one is not),
10 keep waiting (too little traffic on either track), 2 usage or connection errors (nothing is
decided). Each query has a timeout and a connection failure is retried twice, a second apart;
then the check gives up with 2.

Runtime side: never imports Pulumi nor the SDK; the queries come from the contracts.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pulumi_mlops.contracts import metrics as m
from pulumi_mlops.contracts import promql
from pulumi_mlops.contracts.scrape import SERVICE_LABEL, TRACK_LABEL

__all__ = ["EXIT_ERROR", "EXIT_PROMOTE", "EXIT_ROLL_BACK", "EXIT_WAIT", "Check", "Decision",
           "PrometheusError", "Tolerances", "TrackStats", "add_parser", "decide", "gather",
           "http_query", "main", "queries", "run", "tolerances_of"]

EXIT_PROMOTE = 0
"""Every judged metric of the canary is within its tolerance of stable's."""
EXIT_ROLL_BACK = 1
"""A metric of the canary is worse than stable's by more than its tolerance."""
EXIT_ERROR = 2
"""Bad arguments, Prometheus unreachable or refusing the query, or no series of the service."""
EXIT_WAIT = 10
"""Too little traffic on either track in the window: ask again later."""

_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
# What a ModelService name can be (a DNS label), so a name is never PromQL of its own.
_SERVICE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ATTEMPTS = 3
_RETRY_PAUSE = 1.0
_BY = (SERVICE_LABEL, TRACK_LABEL)


@dataclass(frozen=True)
class Tolerances:
    """How much worse than stable the canary may do, and how much data a verdict needs.

    Attributes:
        min_requests: Requests each track must have answered in the window. Default: 100.
        max_error_ratio_increase: Absolute: the canary's 5xx ratio may be stable's plus this.
            Default: 0.01 (one point).
        quantile: The latency quantile compared. Default: 0.99.
        max_latency_increase: A fraction of stable's latency the canary's may exceed it by.
            Default: 0.5 (50 %, as ``MlopsCanaryWorseThanStable``).
        latency_slack: Seconds the canary's latency may exceed stable's on top of that.
            Default: 0.005.
        min_labels: Labels matched on ``/feedback`` each track needs before live quality is
            judged. Default: 100.
        max_accuracy_drop: Absolute: the canary's live accuracy may be stable's minus this.
            Default: 0.02.
        max_error_increase: A fraction: the canary's live mean absolute error may exceed
            stable's by this share of it. Default: 0.1.
    """

    min_requests: int = 100
    max_error_ratio_increase: float = 0.01
    quantile: float = 0.99
    max_latency_increase: float = 0.5
    latency_slack: float = 0.005
    min_labels: int = 100
    max_accuracy_drop: float = 0.02
    max_error_increase: float = 0.1


@dataclass(frozen=True)
class TrackStats:
    """One track's numbers over the window (None: Prometheus had none).

    Attributes:
        seen: Whether Prometheus has request series of this track at all.
        requests: Scoring requests answered, any status.
        error_ratio: Share answered 5xx.
        latency: The latency quantile, seconds.
        labels: Labels matched to its predictions on ``/feedback``.
        accuracy: Live accuracy (a classifier).
        mean_absolute_error: Live mean absolute error (a regressor).
    """

    seen: bool = False
    requests: float = 0.0
    error_ratio: float | None = None
    latency: float | None = None
    labels: float = 0.0
    accuracy: float | None = None
    mean_absolute_error: float | None = None


Outcome = Literal["ok", "worse", "wait", "not judged"]


@dataclass(frozen=True)
class Check:
    """One metric's comparison.

    Attributes:
        metric: Its name (``requests``, ``error_ratio``, ``latency_p99``, ``live_accuracy``,
            ``live_mean_absolute_error``).
        outcome: ``ok``, ``worse`` (roll back), ``wait`` (too little data to decide), or
            ``not judged`` (no verdict from this metric).
        canary: The canary's value, as printed.
        stable: Stable's value, as printed.
        reason: Why, with the tolerance.
    """

    metric: str
    outcome: Outcome
    canary: str
    stable: str
    reason: str

    def line(self) -> str:
        """The line printed for it."""
        return (f"{self.metric}: {self.outcome.upper()}: canary {self.canary}, "
                f"stable {self.stable}: {self.reason}")


@dataclass(frozen=True)
class Decision:
    """The verdict and the checks it rests on.

    Attributes:
        exit_code: `EXIT_PROMOTE`, `EXIT_ROLL_BACK` or `EXIT_WAIT`.
        checks: One per metric, in the order printed.
    """

    exit_code: int
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> str:
        """``promote``, ``roll back`` or ``keep waiting``."""
        return {EXIT_PROMOTE: "promote", EXIT_ROLL_BACK: "roll back",
                EXIT_WAIT: "keep waiting"}[self.exit_code]

    def lines(self) -> list[str]:
        """What is printed: a line per metric, then the decision."""
        return [c.line() for c in self.checks] + [
            f"decision: {self.verdict} (exit {self.exit_code})"]


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "none"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    return f"{value:.4f}" if unit != "count" else f"{value:.0f}"


def decide(canary: TrackStats, stable: TrackStats, tolerances: Tolerances) -> Decision:
    """Compare the canary's numbers with stable's (pure).

    Too little traffic on either track means keep waiting, whatever the rest says (a handful of
    requests is no verdict); otherwise any metric worse than its tolerance means roll back.
    Live quality is judged only once both tracks have ``min_labels`` labels.
    """
    t = tolerances
    checks: list[Check] = []
    short = [name for name, s in (("canary", canary), ("stable", stable))
             if s.requests < t.min_requests]
    enough = not short
    checks.append(Check(
        "requests", "ok" if enough else "wait", _num(canary.requests, "count"),
        _num(stable.requests, "count"),
        f"at least {t.min_requests} each" if enough
        else f"fewer than {t.min_requests} on {' and '.join(short)}"
             + ("" if canary.seen else " (no canary series yet: is it deployed and scraped?)")))

    def judged(metric: str, c: str, s: str, worse: bool | None, reason: str) -> Check:
        if worse is None:
            return Check(metric, "not judged", c, s, reason)
        if not enough:
            return Check(metric, "not judged", c, s, "too few requests to judge")
        return Check(metric, "worse" if worse else "ok", c, s, reason)

    # Error ratio.
    ce, se = canary.error_ratio, stable.error_ratio
    limit = None if se is None else se + t.max_error_ratio_increase
    if ce is None or se is None or limit is None:
        checks.append(judged("error_ratio", _num(ce), _num(se), None, "no requests to divide by"))
    else:
        worse = ce > limit + 1e-12
        checks.append(judged(
            "error_ratio", _num(ce), _num(se), worse,
            (f"5xx ratio above stable's + {t.max_error_ratio_increase:g} ({limit:.4f})" if worse
             else f"within stable's + {t.max_error_ratio_increase:g} ({limit:.4f})")))

    # Latency.
    name = f"latency_p{t.quantile * 100:g}".replace(".", "_")
    cl, sl = canary.latency, stable.latency
    if cl is None or sl is None:
        checks.append(judged(name, _num(cl, "ms"), _num(sl, "ms"), None,
                             "no latency observed on a track"))
    else:
        bound = sl * (1 + t.max_latency_increase) + t.latency_slack
        worse = cl > bound
        allowed = (f"stable's + {t.max_latency_increase * 100:g} % + "
                   f"{t.latency_slack * 1000:g} ms ({bound * 1000:.1f} ms)")
        checks.append(judged(name, _num(cl, "ms"), _num(sl, "ms"), worse,
                             f"above {allowed}" if worse else f"within {allowed}"))

    # Live quality, once labels arrived on both tracks.
    labelled = canary.labels >= t.min_labels and stable.labels >= t.min_labels
    few = (f"fewer than {t.min_labels} labels matched (canary {canary.labels:.0f}, stable "
           f"{stable.labels:.0f})")
    if canary.accuracy is not None or stable.accuracy is not None:
        ca, sa = canary.accuracy, stable.accuracy
        if not labelled or ca is None or sa is None:
            checks.append(Check("live_accuracy", "not judged", _num(ca), _num(sa), few))
        else:
            floor = sa - t.max_accuracy_drop
            worse = ca < floor - 1e-12
            checks.append(judged(
                "live_accuracy", _num(ca), _num(sa), worse,
                (f"below stable's - {t.max_accuracy_drop:g} ({floor:.4f})" if worse
                 else f"within stable's - {t.max_accuracy_drop:g} ({floor:.4f})")))
    elif canary.mean_absolute_error is not None or stable.mean_absolute_error is not None:
        cm, sm = canary.mean_absolute_error, stable.mean_absolute_error
        if not labelled or cm is None or sm is None:
            checks.append(Check("live_mean_absolute_error", "not judged", _num(cm), _num(sm),
                                few))
        else:
            ceiling = sm * (1 + t.max_error_increase)
            worse = cm > ceiling + 1e-12
            checks.append(judged(
                "live_mean_absolute_error", _num(cm), _num(sm), worse,
                (f"above stable's + {t.max_error_increase * 100:g} % ({ceiling:.4f})" if worse
                 else f"within stable's + {t.max_error_increase * 100:g} % ({ceiling:.4f})")))
    else:
        checks.append(Check("live_quality", "not judged", "none", "none",
                            "no labels posted to /feedback in the window"))

    if not enough:
        code = EXIT_WAIT
    elif any(c.outcome == "worse" for c in checks):
        code = EXIT_ROLL_BACK
    else:
        code = EXIT_PROMOTE
    return Decision(code, tuple(checks))


# --- Prometheus --------------------------------------------------------------------------------


class PrometheusError(Exception):
    """Prometheus could not be reached, or refused or failed a query."""


def queries(service: str, window: str, quantile: float) -> dict[str, str]:
    """The instant queries asked, by what they measure; each answers per ``service`` and
    ``track``."""
    matched = {m.OUTCOME_LABEL: f'="{m.MATCHED}"'}
    return {
        "requests": promql.request_increase(service, window, _BY),
        "error_ratio": promql.error_ratio(service, window, _BY),
        "latency": promql.latency_quantile(service, quantile, window, _BY),
        "labels": promql.feedback_increase(m.FEEDBACK, service, window, _BY, **matched),
        "correct": promql.feedback_increase(m.FEEDBACK_CORRECT, service, window, _BY),
        "absolute_error": promql.feedback_increase(m.FEEDBACK_ABSOLUTE_ERROR, service, window,
                                                   _BY),
        # A classifier exports predicted classes; a regressor does not.
        "classifier": (f"count by ({', '.join(_BY)}) "
                       f"({m.PREDICTIONS}_total{promql.select(service)})"),
    }


Query = Callable[[str], list[dict[str, Any]]]


def http_query(base_url: str, *, at: float, timeout: float,
               sleep: Callable[[float], None] = time.sleep) -> Query:
    """A function asking Prometheus at ``base_url`` one instant query, evaluated at ``at``
    (Unix seconds, the same for every query), within ``timeout`` seconds; a connection
    failure, a timeout or a 5xx is retried twice, a second apart. Credentials in the URL
    (``https://user:password@host``) are sent as basic auth."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrometheusError(f"--prometheus must be an http(s) URL, not {base_url!r}")
    headers = {"Accept": "application/json"}
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:" \
                f"{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    if ":" in parts.hostname:
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    endpoint = urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/api/v1/query", "", ""))
    shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def ask(expr: str) -> list[dict[str, Any]]:
        data = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}",
                                       "timeout": f"{timeout:g}s"}).encode()
        failure = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                sleep(_RETRY_PAUSE)
            request = urllib.request.Request(endpoint, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    body = json.load(response)
                break
            except urllib.error.HTTPError as err:
                detail = _error_of(err)
                if err.code < 500:
                    raise PrometheusError(
                        f"Prometheus at {shown} answered {err.code}: {detail}") from None
                failure = f"answered {err.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                failure = f"unreachable: {getattr(err, 'reason', err)}"
            except ValueError as err:
                raise PrometheusError(f"Prometheus at {shown} answered no JSON: {err}") from None
        else:
            raise PrometheusError(f"Prometheus at {shown} {failure} "
                                  f"({_ATTEMPTS} attempts, {timeout:g} s each)")
        if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
            raise PrometheusError(f"Prometheus at {shown} failed the query: "
                                  f"{body.get('error', body)}")
        return list(body["data"]["result"])

    return ask


def _error_of(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read()).get("error", err.reason))
    except (ValueError, AttributeError, OSError):
        return str(err.reason)


def _by_track(result: list[dict[str, Any]]) -> dict[str, float]:
    values = {}
    for sample in result:
        value = float(sample["value"][1])
        if math.isfinite(value):
            values[str(sample["metric"].get(TRACK_LABEL, ""))] = value
    return values


def gather(ask: Query, service: str, window: str,
           quantile: float = 0.99) -> dict[str, TrackStats]:
    """Both tracks' numbers over ``window``, from Prometheus (``canary`` and ``stable``).

    Raises:
        PrometheusError: a query failed, or Prometheus has no request series of ``service``.
    """
    answers = {key: ask(expr) for key, expr in queries(service, window, quantile).items()}
    if not answers["requests"]:
        raise PrometheusError(
            f"Prometheus has no {m.REQUESTS}_total series of service {service!r} in the last "
            f"{window}: is --service right, and is the service scraped (`{SERVICE_LABEL}` and "
            f"`{TRACK_LABEL}` target labels)?")
    seen = {str(s["metric"].get(TRACK_LABEL, "")) for s in answers["requests"]}
    values = {key: _by_track(result) for key, result in answers.items()}
    stats = {}
    for track in (promql.CANARY_TRACK, promql.STABLE_TRACK):
        labels = values["labels"].get(track, 0.0)
        accuracy = mae = None
        if labels > 0:
            if track in values["classifier"]:
                accuracy = values["correct"].get(track, 0.0) / labels
            elif track in values["absolute_error"]:
                mae = values["absolute_error"][track] / labels
        stats[track] = TrackStats(
            seen=track in seen, requests=values["requests"].get(track, 0.0),
            error_ratio=values["error_ratio"].get(track),
            latency=values["latency"].get(track), labels=labels, accuracy=accuracy,
            mean_absolute_error=mae)
    return stats


# --- command line ------------------------------------------------------------------------------


def _duration(text: str) -> str:
    if not _DURATION.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Prometheus duration (10m, 1h)")
    return text


def _service(text: str) -> str:
    if not _SERVICE.match(text) or len(text) > 63:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a service name (lowercase letters, digits and '-')")
    return text


def _bounded(low: float, high: float | None = None, *, integer: bool = False,
             open_low: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (open_low and value == low) or (
                high is not None and value > high):
            span = f"{'above' if open_low else 'at least'} {low:g}" + (
                f" and at most {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text} must be {span}")
        return value
    return parse


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = Tolerances()
    parser.add_argument("--prometheus", required=True, metavar="URL",
                        help="Prometheus' base URL (credentials in it are sent as basic auth)")
    parser.add_argument("--service", required=True, type=_service, metavar="NAME",
                        help="the ModelService's name (the `service` label)")
    parser.add_argument("--window", default="10m", type=_duration,
                        help="how far back to look (default: %(default)s)")
    parser.add_argument("--min-requests", type=_bounded(0, integer=True),
                        default=d.min_requests, metavar="N",
                        help="requests each track must have answered in the window, else exit "
                             "10 (default: %(default)s)")
    parser.add_argument("--max-error-ratio-increase", type=_bounded(0, 1),
                        default=d.max_error_ratio_increase, metavar="X",
                        help="the canary's 5xx ratio may exceed stable's by this much "
                             "(absolute; default: %(default)s)")
    parser.add_argument("--quantile", type=_bounded(0, 1, open_low=True), default=d.quantile,
                        help="the latency quantile compared (default: %(default)s)")
    parser.add_argument("--max-latency-increase", type=_bounded(0), metavar="PERCENT",
                        default=d.max_latency_increase * 100,
                        help="the canary's latency may exceed stable's by this many percent "
                             "(default: %(default)g)")
    parser.add_argument("--latency-slack-ms", type=_bounded(0), metavar="MS",
                        default=d.latency_slack * 1000,
                        help="and by this many milliseconds more (default: %(default)g)")
    parser.add_argument("--min-labels", type=_bounded(1, integer=True), default=d.min_labels,
                        metavar="N", help="labels matched on /feedback each track needs before "
                                          "live quality is judged (default: %(default)s)")
    parser.add_argument("--max-accuracy-drop", type=_bounded(0, 1),
                        default=d.max_accuracy_drop, metavar="X",
                        help="the canary's live accuracy may be stable's minus this "
                             "(absolute; default: %(default)s)")
    parser.add_argument("--max-error-increase", type=_bounded(0), metavar="PERCENT",
                        default=d.max_error_increase * 100,
                        help="the canary's live mean absolute error may exceed stable's by "
                             "this many percent (default: %(default)g)")
    parser.add_argument("--timeout", type=_bounded(0, 300, open_low=True), default=10.0,
                        metavar="SECONDS", help="per query (default: %(default)g)")
    parser.set_defaults(func=run)
    return parser


_DESCRIPTION = ("Compare the canary and stable tracks of a service over a window, from "
                "Prometheus: error ratio, latency and live quality, each with a tolerance. "
                "Exit 0: promote; 10: keep waiting (too little traffic); 1: roll back; "
                "2: usage or connection error.")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``canary-check`` to ``mlops``' subcommands (``subparsers``: what
    ``ArgumentParser.add_subparsers()`` returned); it runs `run`."""
    parser = subparsers.add_parser(
        "canary-check", help="promote (0), wait (10) or roll back (1) a canary, from Prometheus",
        description=_DESCRIPTION)
    return _configure(parser)


def tolerances_of(ns: argparse.Namespace) -> Tolerances:
    """The tolerances given on the command line."""
    return Tolerances(
        min_requests=int(ns.min_requests), max_error_ratio_increase=ns.max_error_ratio_increase,
        quantile=ns.quantile, max_latency_increase=ns.max_latency_increase / 100,
        latency_slack=ns.latency_slack_ms / 1000, min_labels=int(ns.min_labels),
        max_accuracy_drop=ns.max_accuracy_drop, max_error_increase=ns.max_error_increase / 100)


def run(ns: argparse.Namespace) -> int:
    """Run the check for parsed arguments; prints to stdout, errors to stderr."""
    tolerances = tolerances_of(ns)
    try:
        ask = http_query(ns.prometheus, at=time.time(), timeout=ns.timeout)
        stats = gather(ask, ns.service, ns.window, tolerances.quantile)
    except PrometheusError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    decision = decide(stats[promql.CANARY_TRACK], stats[promql.STABLE_TRACK], tolerances)
    print(f"canary-check: service {ns.service}, last {ns.window}")
    for line in decision.lines():
        print(line)
    sys.stdout.flush()
    return decision.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``mlops canary-check`` on its own: parse ``argv`` and run; usage errors return 2."""
    parser = _configure(argparse.ArgumentParser(prog="mlops canary-check",
                                                description=_DESCRIPTION))
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
