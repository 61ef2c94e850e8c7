"""MonitoringStack's Grafana dashboards, built with grafana-foundation-sdk (not hand-written
JSON) from the same PromQL the rules and the components' metric verbs use
(`pulumi_mlops.plans.monitoring`): an overview of every service, one dashboard per service
with a ``$service`` variable, and one of the registry and the retrain schedules. Pure:
`dashboards` returns each dashboard's JSON document.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import DataSourceRef
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

from pulumi_mlops.contracts import metrics as m
from pulumi_mlops.contracts.scrape import (
    REGISTRY_LABEL,
    SCHEDULE_LABEL,
    SERVICE_LABEL,
    TRACK_LABEL,
    VERSION_LABEL,
)
from pulumi_mlops.plans import monitoring

__all__ = ["dashboards", "panel_queries"]

_V1_DEPRECATED = "Prefer using dashboardv2.Dashboard instead"
_PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
_SERVICE = "$service"
_RATE = "$__rate_interval"


def _panel(title: str, unit: str, *queries: tuple[str, str], description: str = "") -> Panel:
    panel = (Panel().title(title).datasource(_PROMETHEUS).unit(unit).description(description)
             .span(12).height(8))
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(Dataquery().expr(expr).legend_format(legend)
                                  .ref_id(chr(ord("A") + i)))
    return panel


def _base(title: str, uid: str) -> Dashboard:
    """A dashboard with the Prometheus data source as a variable (``$datasource``)."""
    return (Dashboard(title).uid(uid).tags(["mlops", "generated"]).refresh("1m")
            .time("now-6h", "now")
            .with_variable(DatasourceVariable("datasource").label("Data source")
                           .type("prometheus")))


def _overview() -> Dashboard:
    by = f"sum by ({SERVICE_LABEL})"
    return (
        _base("MLOps: model services", "mlops-overview")
        .with_panel(_panel("Requests", "reqps",
                           (f"{by} (rate({m.REQUESTS}_total[{_RATE}]))",
                            f"{{{{{SERVICE_LABEL}}}}}")))
        .with_panel(_panel("5xx ratio", "percentunit",
                           (monitoring.error_ratio(None, _RATE), f"{{{{{SERVICE_LABEL}}}}}")))
        .with_panel(_panel("p99 latency", "s",
                           (f"histogram_quantile(0.99, sum by ({SERVICE_LABEL}, le) "
                            f"(rate({m.REQUEST_DURATION}_bucket[{_RATE}])))",
                            f"{{{{{SERVICE_LABEL}}}}}")))
        .with_panel(_panel("Model version served", "none",
                           (f"max by ({SERVICE_LABEL}, {TRACK_LABEL}, model_version) "
                            f"({m.MODEL_INFO})",
                            f"{{{{{SERVICE_LABEL}}}}} {{{{{TRACK_LABEL}}}}}: "
                            "v{{model_version}}"),
                           description="One line per version a track serves; a new line "
                                       "starts when a rollout moves it."))
    )


def _service() -> Dashboard:
    s = _SERVICE
    sel = f'{SERVICE_LABEL}="{s}"'
    version_started = (f"count by ({SERVICE_LABEL}, model_version) ({m.MODEL_INFO}{{{sel}}})\n"
                       f"unless\ncount by ({SERVICE_LABEL}, model_version) "
                       f"({m.MODEL_INFO}{{{sel}}} offset 2m)")
    return (
        _base("MLOps: model service", "mlops-service")
        .with_variable(QueryVariable(SERVICE_LABEL).label("Service").datasource(_PROMETHEUS)
                       .query(f"label_values({m.REQUESTS}_total, {SERVICE_LABEL})")
                       .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(VariableSort.ALPHABETICAL_ASC))
        .annotation(AnnotationQuery().name("Model version").datasource(_PROMETHEUS)
                    .enable(True).icon_color("blue").expr(version_started))
        .with_row(Row("Traffic"))
        .with_panel(_panel("Requests by status", "reqps",
                           (f"sum by ({m.CODE_LABEL}) (rate({m.REQUESTS}_total{{{sel}}}"
                            f"[{_RATE}]))", f"{{{{{m.CODE_LABEL}}}}}")))
        .with_panel(_panel("Latency", "s", *(
            (monitoring.latency_quantile(s, q, _RATE), f"p{q * 100:g}")
            for q in (0.5, 0.9, 0.99))))
        .with_panel(_panel("Rows per request", "none", *(
            (f"histogram_quantile({q}, sum by (le) (rate({m.BATCH_ROWS}_bucket{{{sel}}}"
             f"[{_RATE}])))", f"p{q * 100:g}") for q in (0.5, 0.99))))
        .with_row(Row("Service level objectives"))
        .with_panel(_panel("Requests failing each objective (1h)", "percentunit",
                           (f"mlops:sli_error:ratio_rate1h{{{sel}}}", "{{slo}}"),
                           description="Share of requests failing each objective over the "
                                       "last hour; the page alert fires above 14.4 times the "
                                       "error budget's share (1 - objective)."))
        .with_row(Row("Predictions and drift"))
        .with_panel(_panel("Predicted classes", "reqps",
                           (f"sum by ({m.CLASS_LABEL}) (rate({m.PREDICTIONS}_total{{{sel}}}"
                            f"[{_RATE}]))", f"{{{{{m.CLASS_LABEL}}}}}")))
        .with_panel(_panel("Predicted values", "none", *(
            (f"histogram_quantile({q}, sum by (le) (rate({m.PREDICTION_VALUE}_bucket{{{sel}}}"
             f"[{_RATE}])))", f"p{q * 100:g}") for q in (0.1, 0.5, 0.9)),
            description="Regression models only."))
        .with_panel(_panel("Input drift, all replicas", "none",
                           (monitoring.feature_drift(s),
                            f"{{{{{m.FEATURE_LABEL}}}}} v{{{{{VERSION_LABEL}}}}}"),
                           description="PSI (numeric) or Jensen-Shannon distance "
                                       "(categorical) of all replicas' traffic against the "
                                       "training profile."))
        .with_panel(_panel("Prediction drift, all replicas", "none",
                           (monitoring.feature_drift(s, m.PREDICTION_FEATURE),
                            f"{{{{{TRACK_LABEL}}}}} v{{{{{VERSION_LABEL}}}}}"),
                           description="The model's output against its output on the "
                                       "training data: PSI of a regressor's values, "
                                       "Jensen-Shannon distance of a classifier's classes."))
        .with_row(Row("Live quality (delayed labels)"))
        .with_panel(_panel("Accuracy", "percentunit",
                           (monitoring.live_accuracy(s),
                            f"{{{{{TRACK_LABEL}}}}} v{{{{{VERSION_LABEL}}}}}"),
                           description="Classifiers: the share of labels posted to /feedback "
                                       "equal to the prediction, over the quality window."))
        .with_panel(_panel("Mean absolute error", "none",
                           (monitoring.live_mean_absolute_error(s),
                            f"{{{{{TRACK_LABEL}}}}} v{{{{{VERSION_LABEL}}}}}"),
                           description="Regressors: over the quality window."))
        .with_panel(_panel("Labels received", "reqps",
                           (f"sum by ({m.OUTCOME_LABEL}) (rate({m.FEEDBACK}_total{{{sel}}}"
                            f"[{_RATE}]))", f"{{{{{m.OUTCOME_LABEL}}}}}"),
                           description="Unmatched: the prediction had left the window, or "
                                       "another replica answered it; quality is estimated "
                                       "from the matched ones."))
        .with_row(Row("Rollout"))
        .with_panel(_panel("5xx ratio by track", "percentunit",
                           (f"mlops:track_error:ratio_rate30m{{{sel}}}",
                            f"{{{{{TRACK_LABEL}}}}}")))
        .with_panel(_panel("p99 latency by track", "s",
                           (f"mlops:track_latency:p99_rate30m{{{sel}}}",
                            f"{{{{{TRACK_LABEL}}}}}")))
    )


def _platform() -> Dashboard:
    registry = f"{{{REGISTRY_LABEL}!=\"\"}}"
    by = f"sum by ({REGISTRY_LABEL}, {m.REGISTRY_STATUS_LABEL})"
    return (
        _base("MLOps: registry and retraining", "mlops-platform")
        .with_row(Row("Model registry"))
        .with_panel(_panel("Registry requests by status", "reqps",
                           (f"{by} (rate({m.REGISTRY_REQUESTS}_total{registry}[{_RATE}]))",
                            f"{{{{{REGISTRY_LABEL}}}}} {{{{{m.REGISTRY_STATUS_LABEL}}}}}")))
        .with_panel(_panel("Registry p99 latency", "s",
                           (f"histogram_quantile(0.99, sum by ({REGISTRY_LABEL}, le) "
                            f"(rate({m.REGISTRY_REQUEST_DURATION}_bucket{registry}[{_RATE}])))",
                            f"{{{{{REGISTRY_LABEL}}}}}")))
        .with_row(Row("Retraining"))
        .with_panel(_panel("Retrain runs (Docker schedulers)", "none",
                           (f"sum by ({SCHEDULE_LABEL}, {m.OUTCOME_LABEL}) "
                            f"(increase({m.RETRAIN_RUNS}_total[1d]))",
                            f"{{{{{SCHEDULE_LABEL}}}}} {{{{{m.OUTCOME_LABEL}}}}}"),
                           description="Finished runs over the last day, by outcome."))
        .with_panel(_panel("Since the last successful retrain", "s",
                           (f"time() - max by ({SCHEDULE_LABEL}) "
                            f"({m.RETRAIN_LAST_SUCCESS} > 0)", f"{{{{{SCHEDULE_LABEL}}}}}"),
                           ("time() - max by (cronjob) "
                            "(kube_cronjob_status_last_successful_time)", "{{cronjob}}"),
                           description="Docker: the scheduler's own series; Kubernetes: "
                                       "kube-state-metrics' CronJob series."))
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON document, by uid.

    In Grafana's classic dashboard schema, which file provisioning and the Grafana sidecar
    load on Grafana 10 to 12; the SDK deprecates its builder in favour of the v2 schema, which
    only Grafana 12's dashboard API takes, so that warning is silenced here.
    """
    encoder = JSONEncoder(sort_keys=True)
    built = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _V1_DEPRECATED, DeprecationWarning)
        for builder in (_overview(), _service(), _platform()):
            document: dict[str, Any] = json.loads(encoder.encode(builder.build()))
            built[document["uid"]] = document
    return built


def panel_queries(document: dict[str, Any]) -> Sequence[str]:
    """Every PromQL expression in a dashboard: panel targets, annotations, variables."""
    found: list[str] = [t["expr"] for p in document.get("panels", [])
                        for t in p.get("targets", []) if "expr" in t]
    found += [a["expr"] for a in document.get("annotations", {}).get("list", []) if "expr" in a]
    return found
