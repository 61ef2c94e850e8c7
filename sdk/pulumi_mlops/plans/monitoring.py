"""MonitoringStack's rules, built from the metric contract: PromQL per service, service level
objectives as multiwindow, multi-burn-rate alerts, drift of all replicas' traffic, and the alerts
on top. Pure: the rule groups are plain data (Prometheus' rule-file format), which a
``PrometheusRule``, a Prometheus config file and ``promtool`` all take as they are.

Every series of a model service carries the target labels of `pulumi_mlops.contracts.scrape`
(``service``, ``track``, ``version``), which the scrape configuration sets; the rules select by
``service`` and aggregate over replicas.

Service level objectives follow the Site Reliability Workbook's "Alerting on SLOs" (the
recommended parameters for a 30-day budget), with recording rules named as sloth names them:
``mlops:sli_error:ratio_rate<window>`` per service and objective (``slo`` label), and two alerts
per objective, ``page`` (2 % of the budget in 1 h, 5 % in 6 h: burn rates 14.4 and 6, each also
over a short window of 1/12 the long one) and ``ticket`` (10 % in 3 days: burn rate 1, short
window 6 h).

Drift across replicas: each server counts input values per bin of the training profile
(`~pulumi_mlops.contracts.metrics.DRIFT_OBSERVATIONS`); the rules sum them over replicas and a
window, and score that distribution against the profile's shares
(`~pulumi_mlops.contracts.metrics.DRIFT_REFERENCE`) with the server's own statistics
(`pulumi_mlops.runtime.drift.spec`): the PSI with the same additive smoothing, the
Jensen-Shannon distance in base 2. A per-replica score cannot be averaged into that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator

from pulumi_mlops._validation import DNS_LABEL, ArgsModel
from pulumi_mlops.contracts import metrics as m
from pulumi_mlops.contracts.promql import (
    SERVER_ERROR,
    SERVING_TRACKS,
    error_ratio,
    latency_quantile,
)
from pulumi_mlops.contracts.promql import select as _select
from pulumi_mlops.contracts.scrape import (
    REGISTRY_LABEL,
    SCHEDULE_LABEL,
    SERVICE_LABEL,
    TRACK_LABEL,
    VERSION_LABEL,
)
from pulumi_mlops.errors import InputError
from pulumi_mlops.plans.workload import ConfigFile, HttpCheck, Mount, Workload

__all__ = [
    "BURN_WINDOWS",
    "CANARY_MIN_REQUESTS",
    "PROMETHEUS_CONFIG",
    "PROMETHEUS_DATA",
    "PROMETHEUS_RULES",
    "REGISTRY_MAX_ERROR_RATIO",
    "DriftAlerts",
    "Prometheus",
    "Quality",
    "Schedule",
    "Scraped",
    "Slo",
    "availability_rules",
    "canary_rules",
    "drift_rules",
    "error_ratio",
    "feature_drift",
    "latency_quantile",
    "live_accuracy",
    "live_mean_absolute_error",
    "prometheus_config",
    "prometheus_workload",
    "quality_rules",
    "registry_rules",
    "request_rate",
    "retrain_rules",
    "rule_groups",
    "service_rules",
    "slo_rules",
]

_DURATION = r"^[0-9]+(ms|s|m|h|d)$"
_LN2 = 0.6931471805599453
_SERVING = {TRACK_LABEL: SERVING_TRACKS}
"""The tracks whose answers reach clients (a shadow's are discarded, a preview is not routed)."""

BURN_WINDOWS: tuple[tuple[str, str, str, float], ...] = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "3d", "6h", 1.0),
)
"""(severity, long window, short window, burn rate): an alert fires when the error ratio over
both windows is above ``burn rate x (1 - objective)``."""
_SLI_WINDOWS = ("5m", "30m", "1h", "6h", "3d")
CANARY_MIN_REQUESTS = 100
"""Requests the canary must have answered in 30 minutes before it can be judged worse."""
REGISTRY_MAX_ERROR_RATIO = 0.05
"""The registry alerts when more than this share of its requests get a 5xx over 10 minutes."""


class Slo(ArgsModel):
    """Service level objectives of every model service a MonitoringStack watches.

    Attributes:
        availability: Share of scoring requests answered without a 5xx, over 30 days.
            Default: 0.999.
        latency_p99_ms: 99 % of scoring requests answered within this many milliseconds;
            must be a bound of the server's latency histogram
            (`~pulumi_mlops.contracts.metrics.DURATION_BUCKETS`: 0.5, 1, 2.5, 5, 10, 25, 50,
            100, 250, 500, 1000, 2500, 5000). Default: None (no latency objective).
    """

    availability: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    latency_p99_ms: float | None = None

    @field_validator("latency_p99_ms")
    @classmethod
    def _on_a_bucket(cls, value: float | None) -> float | None:
        if value is not None and value / 1000 not in m.DURATION_BUCKETS:
            bounds = ", ".join(f"{b * 1000:g}" for b in m.DURATION_BUCKETS)
            raise InputError(
                f"must be one of the latency histogram's bounds ({bounds} ms)",
                "pick the nearest bound; a latency objective between two bounds cannot be "
                "measured exactly from the histogram")
        return value


class DriftAlerts(ArgsModel):
    """When input drift across all replicas of a service alerts.

    Attributes:
        psi: Alert when a numeric feature's PSI is above this. Default: 0.2 (0.1 to 0.25 is
            customarily a moderate shift).
        js_distance: Alert when a categorical feature's Jensen-Shannon distance is above this.
            Default: 0.2.
        min_rows: Score only with at least this many values of the feature in the window, so
            quiet services never page. Default: 500.
        window: The traffic scored, a Prometheus duration. Default: ``1h``.
        for_duration: How long the score must stay above before the alert fires. Default:
            ``15m``.
        keep_firing_for: How long the alert keeps firing once the score is back below, so a
            score that hovers at the threshold does not flap. Default: ``30m``.
    """

    psi: Annotated[float, Field(gt=0.0)] = 0.2
    js_distance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    min_rows: Annotated[int, Field(ge=1)] = 500
    window: Annotated[str, Field(pattern=_DURATION)] = "1h"
    for_duration: Annotated[str, Field(pattern=_DURATION)] = "15m"
    keep_firing_for: Annotated[str, Field(pattern=_DURATION)] = "30m"


class Quality(ArgsModel):
    """Floors on every service's live model quality, measured from the delayed labels clients
    post to ``mlops serve``'s ``/feedback`` (matched to the predictions by request id).

    Attributes:
        min_accuracy: A classifier alerts when the share of labels equal to its predictions is
            below this. Default: None (no floor; the accuracy is still recorded).
        max_mean_absolute_error: A regressor alerts when the mean absolute error of its
            predictions is above this, in the target's unit. Default: None.
        min_labels: Judge only with at least this many matched labels in the window.
            Default: 100.
        window: The feedback judged, a Prometheus duration. Default: ``1d`` (labels arrive
            late and sparse).
        for_duration: How long quality must stay past the floor before the alert fires.
            Default: ``30m``.
    """

    min_accuracy: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_mean_absolute_error: Annotated[float, Field(gt=0.0)] | None = None
    min_labels: Annotated[int, Field(ge=1)] = 100
    window: Annotated[str, Field(pattern=_DURATION)] = "1d"
    for_duration: Annotated[str, Field(pattern=_DURATION)] = "30m"


# --- PromQL over the metric contract (what the components' metric verbs return) ----------------


def request_rate(service: str, window: str = "5m") -> str:
    """Scoring requests per second to ``service``, all replicas."""
    return f"sum by ({SERVICE_LABEL}) (rate({m.REQUESTS}_total{_select(service)}[{window}]))"


def feature_drift(service: str, feature: str | None = None) -> str:
    """The drift of ``service``'s input (one feature, or every feature) over all its replicas'
    traffic: PSI for numeric features, Jensen-Shannon distance for categorical ones, per model
    version (the `drift_rules` recording rule)."""
    matchers = {} if feature is None else {m.FEATURE_LABEL: f'="{feature}"'}
    return f"{_DRIFT_SCORE}{_select(service, **matchers)}"


def live_accuracy(service: str) -> str:
    """``service``'s live accuracy (a classifier's share of labels equal to its predictions,
    per track and model version, over the `Quality` window: the `quality_rules` recording
    rule)."""
    return f"{_ACCURACY}{_select(service)}"


def live_mean_absolute_error(service: str) -> str:
    """``service``'s live mean absolute error (a regressor's), as `live_accuracy`."""
    return f"{_MAE}{_select(service)}"


# --- rules -------------------------------------------------------------------------------------

_SLI = "mlops:sli_error:ratio_rate"
_TRACK_ERRORS = "mlops:track_error:ratio_rate30m"
_TRACK_P99 = "mlops:track_latency:p99_rate30m"
_DRIFT_BIN = "mlops:drift_bin:increase"
_DRIFT_ROWS = "mlops:drift_rows:increase"
_DRIFT_BINS = "mlops:drift_bins:count"
_DRIFT_OBSERVED = "mlops:drift_observed:ratio"
_DRIFT_REFERENCE = "mlops:drift_reference:ratio"
_DRIFT_OBSERVED_S = "mlops:drift_observed:ratio_smoothed"
_DRIFT_REFERENCE_S = "mlops:drift_reference:ratio_smoothed"
_DRIFT_MEAN = "mlops:drift_mean:ratio"
_DRIFT_SCORE = "mlops:feature_drift:score"
_LABELS = "mlops:feedback_matched:increase"
_ACCURACY = "mlops:live_accuracy:ratio"
_MAE = "mlops:live_mean_absolute_error:ratio"
_BY_VERSION = f"{SERVICE_LABEL}, {TRACK_LABEL}, {VERSION_LABEL}"
# Per track too: two tracks serving unresolved aliases share a version label, not a profile.
_BY_FEATURE = (f"{SERVICE_LABEL}, {TRACK_LABEL}, {VERSION_LABEL}, {m.FEATURE_LABEL}, "
               f"{m.STATISTIC_LABEL}")
_BY_BIN = f"{_BY_FEATURE}, {m.BIN_LABEL}"


def _sli_expr(service: str, slo: str, window: str, threshold_s: float | None) -> str:
    if slo == "availability":
        return error_ratio(service, window, serving_only=True)
    # Requests slower than the threshold: all of them but those in the buckets up to it.
    # The bound as the server writes it (Go's float formatting: 1.0, 0.05).
    fast = _select(service, le=f'="{threshold_s!r}"', **_SERVING)
    return (f"1 - (\n  sum by ({SERVICE_LABEL}) (rate({m.REQUEST_DURATION}_bucket{fast}"
            f"[{window}]))\n  /\n  sum by ({SERVICE_LABEL}) (rate({m.REQUEST_DURATION}_count"
            f"{_select(service, **_SERVING)}[{window}]))\n)")


def slo_rules(service: str, slo: Slo) -> list[dict[str, Any]]:
    """Recording rules (the error ratio per window and objective) and burn-rate alerts of one
    service."""
    objectives: list[tuple[str, float, float | None]] = [("availability", slo.availability, None)]
    if slo.latency_p99_ms is not None:
        objectives.append(("latency", 0.99, slo.latency_p99_ms / 1000))
    rules: list[dict[str, Any]] = []
    for name, objective, threshold in objectives:
        for window in _SLI_WINDOWS:
            rules.append({"record": f"{_SLI}{window}",
                          "expr": _sli_expr(service, name, window, threshold),
                          "labels": {"slo": name}})
        budget = round(1 - objective, 12)
        bad = ("requests answered with a 5xx" if threshold is None
               else f"requests slower than {threshold * 1000:g} ms")
        for severity in ("page", "ticket"):
            sel = _select(service, slo=f'="{name}"')
            terms = [f"(\n  {_SLI}{short}{sel} > ({rate:g} * {budget:g})\n  and\n  "
                     f"{_SLI}{long}{sel} > ({rate:g} * {budget:g})\n)"
                     for level, long, short, rate in BURN_WINDOWS if level == severity]
            rules.append({
                "alert": f"MlopsSloBurnRate{severity.title()}",
                "expr": "\nor\n".join(terms),
                "labels": {"severity": severity, "slo": name},
                "annotations": {
                    "summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: the {name} objective's "
                               "error budget is burning too fast",
                    "description": f"The share of {bad} uses up the error budget of "
                                   f"{objective:g} over 30 days "
                                   + ("within days: act now." if severity == "page" else
                                      "before the 30 days are over."),
                },
            })
    return rules


def drift_rules(service: str, drift: DriftAlerts) -> list[dict[str, Any]]:
    """Recording rules that score all replicas' input against the training profile, and the
    drift alert (with the minimum-rows guard and hysteresis)."""
    sel = _select(service)
    psi = _select(service, **{m.STATISTIC_LABEL: f'="{m.PSI}"'})
    js = _select(service, **{m.STATISTIC_LABEL: f'="{m.JS_DISTANCE}"'})
    eps = f"{m.PSI_EPSILON:g}"

    def kl(share: str) -> str:
        # 0 * log(0) is 0: a comparison drops the bins with no share from the sum.
        return (f"sum without ({m.BIN_LABEL}) (\n    ({share}{js} > 0)\n    * "
                f"ln(({share}{js} > 0) / {_DRIFT_MEAN}{js})\n  )")

    def smoothed(share: str) -> str:
        return (f"({share}{psi} + {eps})\n/ ignoring ({m.BIN_LABEL}) group_left ()\n"
                f"(1 + {eps} * {_DRIFT_BINS}{psi})")

    def above(statistic: str, threshold: float) -> str:
        score = _DRIFT_SCORE + _select(service, **{m.STATISTIC_LABEL: f'="{statistic}"'})
        return (f"(\n  {score} > {threshold:g}\n  and on ({_BY_FEATURE})\n  "
                f"{_DRIFT_ROWS}{sel} >= {drift.min_rows}\n  and on ({_BY_VERSION})\n  "
                f"{_served(service)}\n)")

    return [
        {"record": _DRIFT_BIN, "expr": f"sum by ({_BY_BIN}) (increase("
                                       f"{m.DRIFT_OBSERVATIONS}_total{sel}[{drift.window}]))"},
        {"record": _DRIFT_ROWS, "expr": f"sum without ({m.BIN_LABEL}) ({_DRIFT_BIN}{sel})"},
        {"record": _DRIFT_BINS, "expr": f"count without ({m.BIN_LABEL}) ({_DRIFT_BIN}{sel})"},
        {"record": _DRIFT_OBSERVED,
         "expr": f"{_DRIFT_BIN}{sel}\n/ ignoring ({m.BIN_LABEL}) group_left\n{_DRIFT_ROWS}{sel}"},
        {"record": _DRIFT_REFERENCE,
         "expr": f"max by ({_BY_BIN}) ({m.DRIFT_REFERENCE}{sel})"},
        # PSI: both shares smoothed as the server smooths them, (x + eps) / (1 + bins * eps).
        {"record": _DRIFT_OBSERVED_S, "expr": smoothed(_DRIFT_OBSERVED)},
        {"record": _DRIFT_REFERENCE_S, "expr": smoothed(_DRIFT_REFERENCE)},
        {"record": _DRIFT_SCORE,
         "expr": (f"sum without ({m.BIN_LABEL}) (\n  ({_DRIFT_OBSERVED_S}{sel} - "
                  f"{_DRIFT_REFERENCE_S}{sel})\n  * ln({_DRIFT_OBSERVED_S}{sel} / "
                  f"{_DRIFT_REFERENCE_S}{sel})\n)"),
         "labels": {m.STATISTIC_LABEL: m.PSI}},
        # Jensen-Shannon distance, base 2, as the server computes it.
        {"record": _DRIFT_MEAN,
         "expr": f"({_DRIFT_OBSERVED}{js} + {_DRIFT_REFERENCE}{js}) / 2"},
        {"record": _DRIFT_SCORE,
         "expr": (f"sqrt(clamp(\n  (0.5 * {kl(_DRIFT_OBSERVED)}\n  + 0.5 * "
                  f"{kl(_DRIFT_REFERENCE)}) / {_LN2},\n  0, 1))"),
         "labels": {m.STATISTIC_LABEL: m.JS_DISTANCE}},
        {"alert": "MlopsFeatureDrift",
         "expr": f"{above(m.PSI, drift.psi)}\nor\n{above(m.JS_DISTANCE, drift.js_distance)}",
         "for": drift.for_duration,
         "keep_firing_for": drift.keep_firing_for,
         "labels": {"severity": "ticket"},
         "annotations": {
             "summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: input feature "
                        f"{{{{ $labels.{m.FEATURE_LABEL} }}}} drifted from the training data",
             "description": f"Over the last {drift.window} of all replicas' traffic to model "
                            f"version {{{{ $labels.{VERSION_LABEL} }}}}, the "
                            f"{{{{ $labels.{m.STATISTIC_LABEL} }}}} of this feature is "
                            "{{ $value | printf \"%.3f\" }} (PSI alert above "
                            f"{drift.psi:g}, Jensen-Shannon distance above "
                            f"{drift.js_distance:g}, with at least {drift.min_rows} values).",
         }},
    ]


def availability_rules(service: str) -> list[dict[str, Any]]:
    """Alerts on the service's replicas being down or gone from the scrape."""
    up = f"up{_select(service)}"
    serving = _select(service, **_SERVING)
    return [
        # A replica waiting for its model answers /metrics (up is 1) with the model not loaded.
        {"alert": "MlopsServiceDown",
         "expr": (f"sum by ({SERVICE_LABEL}) ({m.MODEL_LOADED}{serving}) == 0\nor\n"
                  f"sum by ({SERVICE_LABEL}) (up{serving}) == 0"),
         "for": "5m", "labels": {"severity": "page"},
         "annotations": {"summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: no replica serves "
                                    "its model",
                         "description": "Every replica clients reach is down, restarting or "
                                        "still waiting for its model."}},
        {"alert": "MlopsModelNotLoaded", "expr": f"{m.MODEL_LOADED}{_select(service)} == 0",
         "for": "15m", "labels": {"severity": "ticket"},
         "annotations": {"summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: replica "
                                    "{{ $labels.instance }} has not loaded its model",
                         "description": "It is alive but waits: the alias it serves names no "
                                        "version yet, or fetching or loading the model fails "
                                        "(see its log)."}},
        {"alert": "MlopsReplicaDown", "expr": f"{up} == 0", "for": "10m",
         "labels": {"severity": "ticket"},
         "annotations": {"summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: replica "
                                    "{{ $labels.instance }} is down"}},
        {"alert": "MlopsServiceAbsent", "expr": f"absent({up})", "for": "10m",
         "labels": {"severity": "ticket", SERVICE_LABEL: service},
         "annotations": {"summary": f"{service}: no target is scraped",
                         "description": "The scrape configuration finds no replica of the "
                                        "service: it was removed, renamed or never came up."}},
    ]


def canary_rules(service: str) -> list[dict[str, Any]]:
    """Per-track error ratio and p99 latency, and an alert when the canary does worse than
    stable (at least twice stable's error ratio plus one point, or 1.5 times its p99)."""
    by = f"{SERVICE_LABEL}, {TRACK_LABEL}"
    canary = _select(service, **{TRACK_LABEL: '="canary"'})
    stable = _select(service, **{TRACK_LABEL: '="stable"'})
    return [
        {"record": _TRACK_ERRORS,
         "expr": error_ratio(service, "30m", by=(SERVICE_LABEL, TRACK_LABEL))},
        {"record": _TRACK_P99,
         "expr": (f"histogram_quantile(0.99, sum by ({by}, le) "
                  f"(rate({m.REQUEST_DURATION}_bucket{_select(service)}[30m])))")},
        {"alert": "MlopsCanaryWorseThanStable",
         "expr": (f"(\n  (\n  {_TRACK_ERRORS}{canary}\n  > ignoring ({TRACK_LABEL})\n  "
                  f"2 * {_TRACK_ERRORS}{stable} + 0.01\n  )\n  or\n  (\n  "
                  f"{_TRACK_P99}{canary}\n  > ignoring ({TRACK_LABEL})\n  "
                  f"1.5 * {_TRACK_P99}{stable}\n  )\n)\n"
                  # Enough canary traffic that one failure is not a verdict.
                  f"and on ({SERVICE_LABEL})\nsum by ({SERVICE_LABEL}) (increase("
                  f"{m.REQUESTS}_total{canary}[30m])) >= {CANARY_MIN_REQUESTS}"),
         "for": "10m", "labels": {"severity": "ticket", TRACK_LABEL: "canary"},
         "annotations": {"summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: the canary answers "
                                    "worse than stable",
                         "description": "Over 30 minutes the canary's 5xx ratio is above "
                                        "twice stable's plus one point, or its p99 latency "
                                        "1.5 times stable's: consider rolling it back."}},
    ]


def _served(service: str) -> str:
    """The versions ``service``'s replicas serve now: a window's score of a version replaced
    since (kept by `increase()` for the window) must not alert."""
    return (f"max by ({_BY_VERSION}) ({m.MODEL_LOADED}{_select(service)}) == 1")


def quality_rules(service: str, quality: Quality) -> list[dict[str, Any]]:
    """Live quality from the delayed labels matched on ``/feedback``, per track and model
    version: the accuracy of a classifier (a service exporting predicted classes), the mean
    absolute error of a regressor, and the alerts on the `Quality` floors."""
    sel = _select(service)
    matched = _select(service, **{m.OUTCOME_LABEL: f'="{m.MATCHED}"'})
    classifier = f"sum by ({_BY_VERSION}) ({m.PREDICTIONS}_total{sel})"

    def increase(counter: str, selector: str = sel) -> str:
        return f"sum by ({_BY_VERSION}) (increase({counter}_total{selector}[{quality.window}]))"

    def judged(expr: str) -> str:
        return (f"{expr}\nand on ({_BY_VERSION})\n{_LABELS}{sel} >= {quality.min_labels}"
                f"\nand on ({_BY_VERSION})\n{_served(service)}")

    rules: list[dict[str, Any]] = [
        {"record": _LABELS, "expr": increase(m.FEEDBACK, matched)},
        {"record": _ACCURACY,
         "expr": (f"{increase(m.FEEDBACK_CORRECT)}\n/\n{_LABELS}{sel}\n"
                  f"and on ({_BY_VERSION})\n{classifier}")},
        {"record": _MAE,
         "expr": (f"{increase(m.FEEDBACK_ABSOLUTE_ERROR)}\n/\n{_LABELS}{sel}\n"
                  f"unless on ({_BY_VERSION})\n{classifier}")},
    ]
    described = (f"over the last {quality.window} of labels matched to model version "
                 f"{{{{ $labels.{VERSION_LABEL} }}}} (at least {quality.min_labels})")
    floors = (("MlopsModelAccuracyLow", _ACCURACY, "<", quality.min_accuracy, "accuracy",
               "below"),
              ("MlopsModelErrorHigh", _MAE, ">", quality.max_mean_absolute_error,
               "mean absolute error", "above"))
    for alert, record, past, floor, measure, side in floors:
        if floor is None:
            continue
        rules.append({
            "alert": alert,
            "expr": judged(f"{record}{sel} {past} {floor:g}"),
            "for": quality.for_duration, "labels": {"severity": "ticket"},
            "annotations": {
                "summary": f"{{{{ $labels.{SERVICE_LABEL} }}}}: live {measure} {side} "
                           f"{floor:g}",
                "description": f"The {measure} is {{{{ $value | printf \"%.3f\" }}}} "
                               f"{described}: retrain, or roll back to the last version."}})
    return rules


def service_rules(service: str, slo: Slo, drift: DriftAlerts,
                  quality: Quality | None = None) -> dict[str, Any]:
    """The rule group of one model service."""
    return {"name": f"mlops-service-{service}",
            "rules": [*availability_rules(service), *slo_rules(service, slo),
                      *drift_rules(service, drift), *canary_rules(service),
                      *quality_rules(service, quality or Quality())]}


def registry_rules(registry: str) -> dict[str, Any]:
    """The rule group of a model registry (the MLflow server run with ``--expose-prometheus``,
    its series labelled `REGISTRY_LABEL`): down, gone from the scrape, answering 5xx."""
    sel = _select(None, **{REGISTRY_LABEL: f'="{registry}"'})
    errors = _select(None, **{REGISTRY_LABEL: f'="{registry}"',
                              m.REGISTRY_STATUS_LABEL: SERVER_ERROR})
    every = f"{m.REGISTRY_REQUESTS}_total{sel}"
    return {"name": f"mlops-registry-{registry}", "rules": [
        {"alert": "MlopsRegistryDown", "expr": f"sum by ({REGISTRY_LABEL}) (up{sel}) == 0",
         "for": "5m", "labels": {"severity": "page"},
         "annotations": {"summary": f"{{{{ $labels.{REGISTRY_LABEL} }}}}: no registry server "
                                    "answers",
                         "description": "Services cannot fetch models at start-up and "
                                        "retrains cannot register versions."}},
        {"alert": "MlopsRegistryAbsent", "expr": f"absent(up{sel})", "for": "10m",
         "labels": {"severity": "ticket", REGISTRY_LABEL: registry},
         "annotations": {"summary": f"{registry}: the registry is not scraped"}},
        {"alert": "MlopsRegistryErrors",
         "expr": (f"sum by ({REGISTRY_LABEL}) (rate({m.REGISTRY_REQUESTS}_total{errors}[10m]))"
                  f"\n/\nsum by ({REGISTRY_LABEL}) (rate({every}[10m]))\n> "
                  f"{REGISTRY_MAX_ERROR_RATIO:g}"),
         "for": "10m", "labels": {"severity": "ticket"},
         "annotations": {"summary": f"{{{{ $labels.{REGISTRY_LABEL} }}}}: the registry answers "
                                    "5xx",
                         "description": "{{ $value | humanizePercentage }} of its requests "
                                        "over 10 minutes failed on the server's side (its "
                                        "database or artifact store?)."}},
    ]}


@dataclass(frozen=True)
class Schedule:
    """A retrain schedule, as its alerts need it.

    Attributes:
        name: The schedule's object name (the CronJob's, or the scheduler container's).
        interval_seconds: The longest time between two of its slots.
        suspended: Whether it runs nothing (then it is never overdue).
    """

    name: str
    interval_seconds: int
    suspended: bool = False


def retrain_rules(schedule: Schedule, namespace: str | None = None) -> dict[str, Any]:
    """The rule group of a retrain schedule: its last run failed, or no run succeeded within
    two intervals. On Docker (``namespace`` None) from the scheduler's own series
    (`~pulumi_mlops.contracts.metrics.RETRAIN_RUNS`, labelled `SCHEDULE_LABEL`); on
    Kubernetes from kube-state-metrics' CronJob and Job series."""
    interval, overdue = schedule.interval_seconds, 2 * schedule.interval_seconds
    by = SCHEDULE_LABEL
    if namespace is None:
        sel = _select(None, **{SCHEDULE_LABEL: f'="{schedule.name}"'})
        failed = _select(None, **{SCHEDULE_LABEL: f'="{schedule.name}"',
                                  m.OUTCOME_LABEL: f'="{m.FAILED}"'})
        failed_expr = f"sum by ({by}) (increase({m.RETRAIN_RUNS}_total{failed}[{interval}s])) > 0"
        last = (f"max by ({by}) ({m.RETRAIN_LAST_SUCCESS}{sel}) > 0\nor\n"
                f"max by ({by}) ({m.RETRAIN_STARTED}{sel})")
        seen = [{"alert": "MlopsRetrainSchedulerDown", "expr": f"up{sel} == 0 or absent(up{sel})",
                 "for": "10m", "labels": {"severity": "ticket", SCHEDULE_LABEL: schedule.name},
                 "annotations": {"summary": f"{schedule.name}: the retrain scheduler is not "
                                            "running"}}]
    else:
        by = "cronjob"
        job = f'namespace="{namespace}"'
        cron = f'{{{job},cronjob="{schedule.name}"}}'
        owned = f'{{{job},owner_kind="CronJob",owner_name="{schedule.name}"}}'
        # The latest failed Job of the CronJob started after its last success (a failed Job
        # is kept for days: without the comparison the alert would outlive the next success).
        # The Job run at creation (`-initial`) is not the CronJob's: named, not owned.
        initial = f'{job},job_name="{schedule.name}-initial"'
        failed_started = (
            f"max by ({by}) (\n  label_replace(\n  (kube_job_status_start_time{{{job}}}\n"
            f'  and on (namespace, job_name) kube_job_failed{{{job},condition="true"}} == 1)\n'
            f"  * on (namespace, job_name) group_left (owner_name) kube_job_owner{owned},\n"
            f'  "{by}", "$1", "owner_name", "(.+)")\n  or\n  label_replace(\n'
            f"  kube_job_status_start_time{{{initial}}}\n  and on (namespace, job_name) "
            f'kube_job_failed{{{initial},condition="true"}} == 1,\n'
            f'  "{by}", "{schedule.name}", "", "")\n)')
        succeeded = (f"max by ({by}) (kube_cronjob_status_last_successful_time{cron})\nor\n"
                     f"0 * max by ({by}) (kube_cronjob_created{cron})")
        failed_expr = f"{failed_started}\n> on ({by})\n(\n{succeeded}\n)"
        last = (f"max by ({by}) (kube_cronjob_status_last_successful_time{cron})\nor\n"
                f"max by ({by}) (kube_cronjob_created{cron})")
        seen = [{"alert": "MlopsRetrainNotObserved", "expr": f"absent(kube_cronjob_created{cron})",
                 "for": "15m", "labels": {"severity": "ticket", by: schedule.name},
                 "annotations": {"summary": f"{schedule.name}: kube-state-metrics reports no "
                                            "such CronJob",
                                 "description": "The retrain alerts read kube-state-metrics' "
                                                "CronJob and Job series: is it scraped?"}}]
    rules: list[dict[str, Any]] = [
        {"alert": "MlopsRetrainFailed", "expr": failed_expr, "labels": {"severity": "ticket"},
         "annotations": {"summary": f"{{{{ $labels.{by} }}}}: a retrain run failed",
                         "description": "It failed after its retries; the champion is "
                                        "unchanged (see the run's log)."}},
        *seen,
    ]
    if not schedule.suspended:
        rules.append({
            "alert": "MlopsRetrainOverdue", "expr": f"time() - (\n{last}\n) > {overdue}",
            "labels": {"severity": "ticket"},
            "annotations": {"summary": f"{{{{ $labels.{by} }}}}: no retrain succeeded in two "
                                       "intervals",
                            "description": f"Its schedule runs at least every {interval} s; "
                                           f"the last success (or its start) is over {overdue} "
                                           "s ago."}})
    return {"name": f"mlops-retrain-{schedule.name}", "rules": rules}


def rule_groups(services: list[str], slo: Slo, drift: DriftAlerts,
                quality: Quality | None = None, registry: str | None = None,
                schedules: Sequence[Schedule] = (),
                namespace: str | None = None) -> list[dict[str, Any]]:
    """Every rule group: one per service, the registry's, one per retrain schedule (its
    series from kube-state-metrics in ``namespace`` on Kubernetes)."""
    groups = [service_rules(s, slo, drift, quality) for s in services]
    if registry is not None:
        groups.append(registry_rules(registry))
    return groups + [retrain_rules(s, namespace) for s in schedules]


# --- Prometheus -------------------------------------------------------------------------------

# Not the image's own /etc/prometheus: the official image's is owned by `nobody`, and Docker
# copies that into a new volume mounted there, where the init container (root without
# DAC_OVERRIDE) could not write.
PROMETHEUS_CONFIG = "/etc/mlops-prometheus/prometheus.yml"
PROMETHEUS_RULES = "/etc/mlops-prometheus-rules"
"""The directory of the rule files, one per group (a file each: a rule file reaches the
Docker container through one environment variable, at most 128 KiB, some 16 KB a service),
beside the config's (a volume nested in a read-only one could not be mounted)."""
PROMETHEUS_DATA = "/var/lib/mlops-prometheus"
"""Also not the image's own /prometheus: Docker copies an image directory's owner into an empty
volume mounted over it at every container start, undoing the init container's chown."""


class Prometheus(ArgsModel):
    """Which Prometheus evaluates the rules; build it with a factory method.

    Attributes:
        mode: ``standalone`` (MonitoringStack runs one) or ``operator`` (the cluster's
            Prometheus Operator, e.g. kube-prometheus-stack, selects what it declares).
        release: operator: the Helm release whose Prometheus selects the ServiceMonitors and
            PrometheusRules (kube-prometheus-stack selects by its ``release: <name>`` label).
        namespace: operator: the namespace its Prometheus runs in; NetworkPolicies admit it to
            every scraped pod's metrics port. Default: ``monitoring``.
        image: standalone: the Prometheus image, pinned.
        port: standalone: the port it serves on. Default: 9090.
        retention: standalone: how long samples are kept. Default: ``15d`` (the burn-rate
            alerts read up to 3 days back).
        scrape_interval: How often every target is scraped. Default: ``15s``.
        storage_size: standalone: the data volume's size. Default: ``10Gi``.
        kube_state_metrics: standalone on Kubernetes: ``<service>.<namespace>[.svc]:<port>``
            of the cluster's kube-state-metrics, which the retrain schedules' alerts read
            CronJob and Job outcomes from (needed when it watches retrain schedules).
            Default: None.
    """

    mode: str = "standalone"
    release: str | None = None
    namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = "monitoring"
    image: str = "prom/prometheus:v2.53.4"
    port: Annotated[int, Field(ge=1, le=65535)] = 9090
    retention: Annotated[str, Field(pattern=_DURATION)] = "15d"
    scrape_interval: Annotated[str, Field(pattern=_DURATION)] = "15s"
    storage_size: str = "10Gi"
    kube_state_metrics: Annotated[str, Field(
        pattern=r"^[a-z0-9-]+\.[a-z0-9-]+(\.[a-z0-9.-]+)?:[0-9]{1,5}$")] | None = None

    @classmethod
    def standalone(cls, **kwargs: Any) -> Prometheus:
        """Run a Prometheus of MonitoringStack's own, configured with the targets and rules."""
        return cls(mode="standalone", **kwargs)

    @classmethod
    def operator(cls, release: str = "kube-prometheus-stack",
                 namespace: str = "monitoring") -> Prometheus:
        """Declare PodMonitors and PrometheusRules for the cluster's Prometheus Operator,
        labelled ``release: <release>`` so its Prometheus selects them, and admit its
        ``namespace`` to the scraped pods."""
        return cls(mode="operator", release=release, namespace=namespace)

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in ("standalone", "operator"):
            raise InputError("must be `standalone` or `operator`",
                             "build it with Prometheus.standalone() or Prometheus.operator().")
        return value


@dataclass(frozen=True)
class Scraped:
    """One endpoint Prometheus scrapes and the target labels its series get.

    Attributes:
        job: The scrape job (one per kind of workload: ``mlops-service`` …).
        address: ``host:port`` as Prometheus reaches it.
        labels: Target labels (for a model service: `SERVICE_LABEL`, `TRACK_LABEL`,
            `VERSION_LABEL`).
        path: The metrics path.
        dns: Whether ``address``'s host is a headless Service whose DNS A records are the pods
            to scrape (Kubernetes, standalone), rather than one endpoint.
        keep: A regular expression: only the metrics whose name matches are stored.
    """

    job: str
    address: str
    labels: Mapping[str, str]
    path: str = "/metrics"
    dns: bool = False
    keep: str | None = None


def _job(name: str, target: Scraped) -> dict[str, Any]:
    config: dict[str, Any] = {"job_name": name, "metrics_path": target.path}
    if target.keep is not None:
        config["metric_relabel_configs"] = [{"source_labels": ["__name__"], "regex": target.keep,
                                             "action": "keep"}]
    return config


def prometheus_config(targets: Sequence[Scraped], scrape_interval: str,
                      rule_files: Sequence[str] = (f"{PROMETHEUS_RULES}/*.yml",),
                      alertmanagers: Sequence[str] = ()) -> dict[str, Any]:
    """A Prometheus configuration scraping ``targets``, loading ``rule_files`` and sending
    alerts to ``alertmanagers`` (``host:port``): static
    addresses (a Docker network's container names) in one job per kind, and a job per headless
    Service found by DNS (Kubernetes, no API access needed), its target labels set by
    relabelling."""
    jobs: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    configs = []
    for target in targets:
        if target.dns:
            host, port = target.address.rsplit(":", 1)
            configs.append(_job(f"{target.job}/{host.split('.')[0]}", target) | {
                "dns_sd_configs": [{"names": [host], "type": "A", "port": int(port)}],
                "relabel_configs": [
                    {"target_label": key, "replacement": value}
                    for key, value in sorted(target.labels.items())]})
            continue
        key = (target.job, target.path, target.keep)
        jobs.setdefault(key, []).append(
            {"targets": [target.address], "labels": dict(target.labels)})
    for (job, path, keep), statics in jobs.items():
        configs.append(_job(job, Scraped(job, "", {}, path, keep=keep))
                       | {"static_configs": statics})
    configs.sort(key=lambda c: str(c["job_name"]))
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": list(rule_files),
        "scrape_configs": configs,
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": list(alertmanagers)}]}]}
    return config


def prometheus_workload(name: str, prometheus: Prometheus, targets: Sequence[Scraped],
                        groups: Sequence[Mapping[str, Any]],
                        alertmanagers: Sequence[str] = ()) -> Workload:
    """The standalone Prometheus: command line, config and rule files, data volume; alerts go
    to ``alertmanagers`` (``host:port``)."""
    config = prometheus_config(targets, prometheus.scrape_interval,
                               alertmanagers=alertmanagers)
    return Workload(
        name=f"{name}-prometheus",
        image=prometheus.image,
        command=("prometheus", f"--config.file={PROMETHEUS_CONFIG}",
                 f"--storage.tsdb.path={PROMETHEUS_DATA}",
                 f"--storage.tsdb.retention.time={prometheus.retention}",
                 f"--web.listen-address=0.0.0.0:{prometheus.port}"),
        env={},
        port=prometheus.port,
        health=HttpCheck.wget("/-/ready", prometheus.port),
        files=(ConfigFile(PROMETHEUS_CONFIG, yaml.safe_dump(config, sort_keys=False)),
               *(ConfigFile(f"{PROMETHEUS_RULES}/{group['name']}.yml",
                            yaml.safe_dump({"groups": [dict(group)]}, sort_keys=False))
                 for group in groups)),
        mounts=(Mount("data", PROMETHEUS_DATA, "data", prometheus.storage_size),),
        startup_seconds=120,
    )
