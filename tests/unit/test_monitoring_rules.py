"""MonitoringStack's rules, checked by Prometheus' own tool: ``promtool check rules`` on the
generated groups, and ``promtool test rules`` with a firing and a quiet case for every alert.

The drift recording rules are checked against the server's own statistics: two replicas'
counters go in, and the score Prometheus computes from their sum must equal what
`DriftMonitor` computes for the merged rows.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pulumi_mlops.errors import ValidationError
from pulumi_mlops.plans.monitoring import DriftAlerts, Quality, Schedule, Slo, rule_groups
from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.drift.spec import load_profile

SERVICE = "fraud"
SLO = Slo(availability=0.999, latency_p99_ms=50)
DRIFT = DriftAlerts(min_rows=100)
QUALITY = Quality(min_accuracy=0.9, max_mean_absolute_error=3, min_labels=100, window="1h")
REGISTRY = "models"
SCHEDULE = Schedule("nightly-retrain", 3600)  # hourly: overdue after 2 h
NAMESPACE = "ml"
MINUTES = 160
SLI = "mlops:sli_error:ratio_rate"


def _groups() -> list[dict[str, Any]]:
    """Docker-style groups (the scheduler's own series) and, last, the Kubernetes retrain
    group (kube-state-metrics' series)."""
    return (rule_groups([SERVICE], SLO, DRIFT, QUALITY, REGISTRY, [SCHEDULE])
            + rule_groups([], SLO, DRIFT, None, None, [SCHEDULE], namespace=NAMESPACE))


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run scripts/system-deps.sh (apt-get install "
                    "prometheus)")
    return found


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yml"
    # The Kubernetes retrain group in a file of its own, as it would be: beside the Docker
    # one, promtool flags the same alerts twice.
    *groups, kubernetes = _groups()
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    path.with_name("kubernetes.yml").write_text(
        yaml.safe_dump({"groups": [kubernetes]}, sort_keys=False))
    return path


def _rule(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alerting rule named ``alert`` whose own labels ``labels`` carry (the Kubernetes
    retrain rule when ``labels`` name a ``cronjob``)."""
    groups = _groups()
    groups = groups[-1:] if "cronjob" in labels else groups[:-1]
    (rule,) = [r for g in groups for r in g["rules"]
               if r.get("alert") == alert
               and r.get("labels", {}).items() <= labels.items()]
    return rule


def _annotations(alert: str, labels: dict[str, str], value: float | None = None
                 ) -> dict[str, str]:
    """The alert's annotations as Prometheus renders them for ``labels``."""
    out = {}
    for key, text in _rule(alert, labels).get("annotations", {}).items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda g: labels.get(g[1], ""), text)
        if value is not None:
            text = text.replace('{{ $value | printf "%.3f" }}', f"{value:.3f}")
            text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:g}%")
        out[key] = text
    return out


def _run_tests(promtool: str, rules_file: Path, tests: list[dict[str, Any]]) -> None:
    spec = rules_file.parent / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [rules_file.name, "kubernetes.yml"],
                                    "evaluation_interval": "1m",
                                    "tests": tests}, sort_keys=False))
    run = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]


def _counter(labels: str, per_minute: float) -> dict[str, str]:
    return {"series": f"{labels}", "values": f"0+{per_minute:g}x{MINUTES}"}


def _requests(per_minute: float, error_share: float, track: str = "stable",
              instance: str = "a") -> list[dict[str, str]]:
    base = f'service="{SERVICE}",track="{track}",instance="{instance}"'
    return [_counter(f'mlops_requests_total{{{base},code="200"}}', per_minute * (1 - error_share)),
            _counter(f'mlops_requests_total{{{base},code="500"}}', per_minute * error_share)]


def _latency(per_minute: float, slow_share: float) -> list[dict[str, str]]:
    base = f'service="{SERVICE}",track="stable",instance="a"'
    fast = per_minute * (1 - slow_share)
    return [_counter(f'mlops_request_duration_seconds_bucket{{{base},le="0.05"}}', fast),
            _counter(f'mlops_request_duration_seconds_bucket{{{base},le="+Inf"}}', per_minute),
            _counter(f'mlops_request_duration_seconds_count{{{base}}}', per_minute)]


def _up(*values: str) -> list[dict[str, str]]:
    return [{"series": f'up{{service="{SERVICE}",instance="{chr(97 + i)}"}}', "values": v}
            for i, v in enumerate(values)]


def _fires(alert: str, at: str, labels: dict[str, str], value: float | None = None
           ) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert,
            "exp_alerts": [{"exp_labels": labels,
                            "exp_annotations": _annotations(alert, labels, value)}]}


def _quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_generated_rules_pass_promtool_check(promtool: str, rules_file: Path) -> None:
    run = subprocess.run([promtool, "check", "rules", str(rules_file),
                          str(rules_file.with_name("kubernetes.yml"))], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == 2, run.stdout + run.stderr


def test_availability_burn_pages_and_tickets_and_stays_quiet_within_budget(
        promtool: str, rules_file: Path) -> None:
    page = {"service": SERVICE, "slo": "availability", "severity": "page"}
    ticket = {**page, "severity": "ticket"}
    _run_tests(promtool, rules_file, [
        # 10 % errors: 100 times the budget's rate, so both pages and tickets.
        {"interval": "1m", "input_series": _requests(600, 0.10) + _up("1x130"),
         "alert_rule_test": [_fires("MlopsSloBurnRatePage", "70m", page),
                             _fires("MlopsSloBurnRateTicket", "70m", ticket)]},
        # No 5xx at all: the error ratio is 0, not missing (a dashboard shows 0).
        {"interval": "1m", "input_series": [_requests(600, 0.0)[0]],
         "promql_expr_test": [{
             "expr": f'{SLI}5m{{slo="availability"}}', "eval_time": "10m",
             "exp_samples": [{"labels": f'{SLI}5m{{service="{SERVICE}",slo="availability"}}',
                              "value": 0}]}]},
        # 0.05 %: half the budget's rate, nothing fires.
        {"interval": "1m", "input_series": _requests(2000, 0.0005) + _up("1x130"),
         "alert_rule_test": [_quiet("MlopsSloBurnRatePage", "70m"),
                             _quiet("MlopsSloBurnRateTicket", "120m")]},
        # 0.3 %: three times the budget's rate: a ticket, not a page (page needs 6x over 6h).
        {"interval": "1m", "input_series": _requests(2000, 0.003) + _up("1x130"),
         "alert_rule_test": [_quiet("MlopsSloBurnRatePage", "120m"),
                             _fires("MlopsSloBurnRateTicket", "120m", ticket)]},
    ])


def test_latency_objective_burns_on_slow_requests_only(promtool: str, rules_file: Path) -> None:
    page = {"service": SERVICE, "slo": "latency", "severity": "page"}
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": _latency(600, 0.25) + _up("1x130"),
         "alert_rule_test": [_fires("MlopsSloBurnRatePage", "70m", page)]},
        {"interval": "1m", "input_series": _latency(600, 0.001) + _up("1x130"),
         "alert_rule_test": [_quiet("MlopsSloBurnRatePage", "70m")]},
    ])


def test_service_down_replica_down_and_absent(promtool: str, rules_file: Path) -> None:
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": _up("0x30", "0x30"),
         "alert_rule_test": [
             _fires("MlopsServiceDown", "10m", {"service": SERVICE, "severity": "page"}),
             {"eval_time": "20m", "alertname": "MlopsReplicaDown", "exp_alerts": [
                 {"exp_labels": labels, "exp_annotations": _annotations("MlopsReplicaDown", labels)}
                 for labels in ({"service": SERVICE, "instance": "a", "severity": "ticket"},
                                {"service": SERVICE, "instance": "b", "severity": "ticket"})]},
             _quiet("MlopsServiceAbsent", "20m")]},
        # One replica of two down: a ticket for it, no page.
        {"interval": "1m", "input_series": _up("0x30", "1x30"),
         "alert_rule_test": [_quiet("MlopsServiceDown", "20m")]},
        {"interval": "1m", "input_series": [
            {"series": 'up{service="other",instance="x"}', "values": "1x30"}],
         "alert_rule_test": [_fires("MlopsServiceAbsent", "15m",
                                    {"service": SERVICE, "severity": "ticket"})]},
    ])


def _loaded(*values: str) -> list[dict[str, str]]:
    return [{"series": f'mlops_model_loaded{{service="{SERVICE}",track="stable",'
                       f'instance="{chr(97 + i)}"}}', "values": v}
            for i, v in enumerate(values)]


def test_a_service_waiting_for_its_model_is_down_though_its_replicas_answer(
        promtool: str, rules_file: Path) -> None:
    # A waiting server answers /metrics: up is 1, the model is not loaded.
    waiting = {"service": SERVICE, "track": "stable", "instance": "a", "severity": "ticket"}
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": _up("1x40", "1x40") + _loaded("0x40", "0x40"),
         "alert_rule_test": [
             _fires("MlopsServiceDown", "10m", {"service": SERVICE, "severity": "page"}),
             _quiet("MlopsReplicaDown", "20m"),
             {"eval_time": "20m", "alertname": "MlopsModelNotLoaded", "exp_alerts": [
                 {"exp_labels": labels, "exp_annotations": _annotations("MlopsModelNotLoaded",
                                                                        labels)}
                 for labels in (waiting, {**waiting, "instance": "b"})]}]},
        # One replica serves: no page; the other waits: a ticket after 15 minutes only.
        {"interval": "1m", "input_series": _up("1x40", "1x40") + _loaded("1x40", "0x40"),
         "alert_rule_test": [
             _quiet("MlopsServiceDown", "20m"),
             _quiet("MlopsModelNotLoaded", "10m"),
             _fires("MlopsModelNotLoaded", "20m", {**waiting, "instance": "b"})]},
    ])


def _feedback(version: str, matched: float, correct: float = 0.0, abs_error: float = 0.0,
              classes: bool = True, served: str = f"1x{MINUTES}") -> list[dict[str, str]]:
    base = f'service="{SERVICE}",track="stable",version="{version}",instance="a"'
    series = [{"series": f"mlops_model_loaded{{{base}}}", "values": served},
              _counter(f'mlops_feedback_total{{{base},outcome="matched"}}', matched),
              _counter(f'mlops_feedback_total{{{base},outcome="unmatched"}}', matched),
              _counter(f'mlops_feedback_correct_total{{{base}}}', correct),
              _counter(f'mlops_feedback_absolute_error_total{{{base}}}', abs_error)]
    if classes:
        series.append(_counter(f'mlops_predictions_total{{{base},class="1"}}', 50))
    return series


def test_live_quality_alerts_below_the_floor_with_enough_labels(promtool: str,
                                                                rules_file: Path) -> None:
    labels = {"service": SERVICE, "track": "stable", "severity": "ticket"}
    _run_tests(promtool, rules_file, [
        # Classifier "3": 80 % of 10 labels a minute are right; regressor "4": MAE 5.
        {"interval": "1m",
         "input_series": _feedback("3", 10, correct=8)
         + _feedback("4", 10, abs_error=50, classes=False),
         "alert_rule_test": [
             _fires("MlopsModelAccuracyLow", "100m", {**labels, "version": "3"}, 0.8),
             _fires("MlopsModelErrorHigh", "100m", {**labels, "version": "4"}, 5.0)],
         "promql_expr_test": [
             {"expr": f'mlops:live_accuracy:ratio{{service="{SERVICE}"}}', "eval_time": "100m",
              "exp_samples": [{"labels": 'mlops:live_accuracy:ratio{service="fraud",'
                                         'track="stable",version="3"}', "value": 0.8}]},
             {"expr": f'mlops:live_mean_absolute_error:ratio{{service="{SERVICE}"}}',
              "eval_time": "100m",
              "exp_samples": [{"labels": 'mlops:live_mean_absolute_error:ratio{service="fraud",'
                                         'track="stable",version="4"}', "value": 5.0}]}]},
        # Replaced by another version at 30m: its last hour of labels is not a verdict on
        # what is served.
        {"interval": "1m",
         "input_series": _feedback("3", 10, correct=8, served="1x30")
         + _feedback("4", 10, abs_error=50, classes=False, served="1x30"),
         "alert_rule_test": [_quiet("MlopsModelAccuracyLow", "70m"),
                             _quiet("MlopsModelErrorHigh", "70m")]},
        # Above the floor, or 60 labels in the window (fewer than min_labels): quiet.
        {"interval": "1m",
         "input_series": _feedback("3", 10, correct=9.5)
         + _feedback("4", 10, abs_error=20, classes=False)
         + _feedback("5", 1, correct=0),
         "alert_rule_test": [_quiet("MlopsModelAccuracyLow", "100m"),
                             _quiet("MlopsModelErrorHigh", "100m")]},
    ])


def test_registry_down_absent_and_answering_5xx(promtool: str, rules_file: Path) -> None:
    registry = {"registry": REGISTRY}

    def requests(errors: float) -> list[dict[str, str]]:
        base = f'registry="{REGISTRY}",instance="r",method="GET",mlflow_version="3"'
        return [_counter(f'mlflow_http_request_total{{{base},status="200"}}', 100 - errors),
                _counter(f'mlflow_http_request_total{{{base},status="503"}}', errors)]

    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": [
            {"series": f'up{{registry="{REGISTRY}",instance="r"}}', "values": "0x30"}],
         "alert_rule_test": [_fires("MlopsRegistryDown", "10m",
                                    {**registry, "severity": "page"}),
                             _quiet("MlopsRegistryAbsent", "20m")]},
        {"interval": "1m", "input_series": [
            {"series": 'up{registry="other",instance="r"}', "values": "1x30"}],
         "alert_rule_test": [_fires("MlopsRegistryAbsent", "15m",
                                    {**registry, "severity": "ticket"})]},
        {"interval": "1m", "input_series": requests(10),
         "alert_rule_test": [_fires("MlopsRegistryErrors", "30m",
                                    {**registry, "severity": "ticket"}, 0.1)]},
        {"interval": "1m", "input_series": requests(2),
         "alert_rule_test": [_quiet("MlopsRegistryErrors", "30m")]},
    ])


def test_retrain_failed_overdue_and_scheduler_down_on_docker(promtool: str,
                                                             rules_file: Path) -> None:
    base = f'schedule="{SCHEDULE.name}",instance="s"'
    labels = {"schedule": SCHEDULE.name, "severity": "ticket"}
    started = {"series": f"mlops_retrain_scheduler_start_timestamp_seconds{{{base}}}",
               "values": "0x200"}

    def runs(failed: str, last_success: str) -> list[dict[str, str]]:
        return [{"series": f'mlops_retrain_runs_total{{{base},outcome="failed"}}',
                 "values": failed},
                {"series": f'mlops_retrain_runs_total{{{base},outcome="succeeded"}}',
                 "values": "0x200"},
                {"series": f"mlops_retrain_last_success_timestamp_seconds{{{base}}}",
                 "values": last_success},
                {"series": f"up{{{base}}}", "values": "1x200"}, started]

    _run_tests(promtool, rules_file, [
        # A run fails at minute 30 (counted once, after its retries); none ever succeeds.
        {"interval": "1m", "input_series": runs("0x30 1x170", "0x200"),
         "alert_rule_test": [
             _quiet("MlopsRetrainFailed", "20m"),
             _fires("MlopsRetrainFailed", "40m", labels),
             _quiet("MlopsRetrainFailed", "100m"),  # one interval later
             _quiet("MlopsRetrainOverdue", "110m"),  # two intervals since its start
             _fires("MlopsRetrainOverdue", "130m", labels),
             _quiet("MlopsRetrainSchedulerDown", "60m")]},
        # A success at 1:40 (6000 s): not overdue two hours after its start.
        {"interval": "1m", "input_series": runs("0x200", "0x100 6000x100"),
         "alert_rule_test": [_quiet("MlopsRetrainOverdue", "150m")]},
        {"interval": "1m", "input_series": [
            {"series": f"up{{{base}}}", "values": "0x30"}, started],
         "alert_rule_test": [_fires("MlopsRetrainSchedulerDown", "15m",
                                    {**labels, "instance": "s"})]},
    ])


def test_retrain_failed_overdue_and_unobserved_on_kubernetes(promtool: str,
                                                             rules_file: Path) -> None:
    cron = f'namespace="{NAMESPACE}",cronjob="{SCHEDULE.name}"'
    job = f'namespace="{NAMESPACE}",job_name="{SCHEDULE.name}-2946"'
    labels = {"cronjob": SCHEDULE.name, "severity": "ticket"}
    owner = {"series": f'kube_job_owner{{{job},owner_kind="CronJob",'
                       f'owner_name="{SCHEDULE.name}",owner_is_controller="true"}}',
             "values": "1x200"}
    other = {"series": f'kube_job_failed{{namespace="{NAMESPACE}",job_name="other-1",'
                       'condition="true"}', "values": "1x200"}
    started = {"series": f"kube_job_status_start_time{{{job}}}", "values": "1500x200"}
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": [
            {"series": f"kube_cronjob_created{{{cron}}}", "values": "0x200"},
            {"series": f'kube_job_failed{{{job},condition="true"}}', "values": "0x30 1x170"},
            owner, other, started],
         "alert_rule_test": [_quiet("MlopsRetrainFailed", "20m"),
                             _fires("MlopsRetrainFailed", "40m", labels),
                             _fires("MlopsRetrainOverdue", "130m", labels),
                             _quiet("MlopsRetrainNotObserved", "60m")]},
        # A later run succeeds (at 1:40, 6000 s): the failed Job is still kept, the alert is
        # over.
        {"interval": "1m", "input_series": [
            {"series": f"kube_cronjob_created{{{cron}}}", "values": "0x200"},
            {"series": f"kube_cronjob_status_last_successful_time{{{cron}}}",
             "values": "0x110 6000x90"},
            {"series": f'kube_job_failed{{{job},condition="true"}}', "values": "0x30 1x170"},
            owner, started],
         "alert_rule_test": [_fires("MlopsRetrainFailed", "100m", labels),
                             _quiet("MlopsRetrainFailed", "120m")]},
        {"interval": "1m", "input_series": [
            {"series": f"kube_cronjob_created{{{cron}}}", "values": "0x200"},
            {"series": f"kube_cronjob_status_last_successful_time{{{cron}}}",
             "values": "0x100 6000x100"}, other],
         "alert_rule_test": [_quiet("MlopsRetrainOverdue", "150m"),
                             _quiet("MlopsRetrainFailed", "40m")]},
        # The Job run at creation fails: not owned by the CronJob, named after it.
        {"interval": "1m", "input_series": [
            {"series": f"kube_cronjob_created{{{cron}}}", "values": "0x200"},
            {"series": f'kube_job_failed{{namespace="{NAMESPACE}",'
                       f'job_name="{SCHEDULE.name}-initial",condition="true"}}',
             "values": "1x200"},
            {"series": f'kube_job_status_start_time{{namespace="{NAMESPACE}",'
                       f'job_name="{SCHEDULE.name}-initial"}}', "values": "60x200"}],
         "alert_rule_test": [_fires("MlopsRetrainFailed", "10m", labels)]},
        {"interval": "1m", "input_series": [other],
         "alert_rule_test": [_fires("MlopsRetrainNotObserved", "20m",
                                    {**labels, "namespace": NAMESPACE})]},
    ])


def test_canary_worse_than_stable(promtool: str, rules_file: Path) -> None:
    labels = {"service": SERVICE, "track": "canary", "severity": "ticket"}
    _run_tests(promtool, rules_file, [
        {"interval": "1m",
         "input_series": _requests(600, 0.01) + _requests(100, 0.10, "canary", "c"),
         "alert_rule_test": [_fires("MlopsCanaryWorseThanStable", "50m", labels)]},
        {"interval": "1m",
         "input_series": _requests(600, 0.01) + _requests(100, 0.015, "canary", "c"),
         "alert_rule_test": [_quiet("MlopsCanaryWorseThanStable", "50m")]},
        # Half the canary's requests fail, but it answered 60 in 30 minutes: too few to judge.
        {"interval": "1m",
         "input_series": _requests(600, 0.01) + _requests(2, 0.5, "canary", "c"),
         "alert_rule_test": [_quiet("MlopsCanaryWorseThanStable", "50m")]},
    ])


def test_a_shadows_errors_do_not_burn_the_budget(promtool: str, rules_file: Path) -> None:
    # Mirrored requests' answers are discarded: clients saw no error.
    _run_tests(promtool, rules_file, [
        {"interval": "1m",
         "input_series": _requests(600, 0.0) + _requests(600, 0.5, "shadow", "s") + _up("1x130"),
         "alert_rule_test": [_quiet("MlopsSloBurnRatePage", "70m")]},
    ])


@pytest.mark.parametrize(("latency_ms", "le"), [(50, "0.05"), (1000, "1.0"), (5000, "5.0")])
def test_a_latency_objective_selects_the_bucket_as_the_server_writes_it(
        latency_ms: float, le: str) -> None:
    from pulumi_mlops.plans.monitoring import slo_rules

    (sli, *_) = [r for r in slo_rules(SERVICE, Slo(latency_p99_ms=latency_ms))
                 if r.get("labels") == {"slo": "latency"}]
    assert f'le="{le}"' in sli["expr"]


# --- drift across replicas --------------------------------------------------------------------

PROFILE = load_profile({
    "format": "mlops-drift-profile/v1", "rows": 1000,
    "features": {
        "amount": {"kind": "numeric", "edges": [10.0, 50.0, 200.0],
                   "proportions": [0.25, 0.25, 0.25, 0.25]},
        "country": {"kind": "categorical", "frequencies": {"fr": 0.6, "de": 0.4}},
    },
})


def _replica_rows(seed: int, shift: float, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"amount": rng.lognormal(3.5 + shift, 1.2, rows),
            "country": rng.choice(["fr", "de", "us"], rows,
                                  p=[0.5 - shift / 4, 0.4, 0.1 + shift / 4])}


def _monitor(*batches: dict[str, np.ndarray]) -> DriftMonitor:
    monitor = DriftMonitor(PROFILE, window=100_000)
    for batch in batches:
        monitor.observe_columns(batch)
    return monitor


def _drift_series(replica: str, monitor: DriftMonitor, version: str = "3",
                  served: str = f"1x{MINUTES}") -> list[dict[str, str]]:
    series = [{"series": f'mlops_model_loaded{{service="{SERVICE}",version="{version}",'
                         f'instance="{replica}"}}', "values": served}]
    references = monitor.references()
    for feature, counts in monitor.totals().items():
        statistic = "psi" if feature == "amount" else "js_distance"
        bins = [str(i) for i in range(len(counts))]
        if statistic == "js_distance":
            bins[-1] = "other"
        for label, count, share in zip(bins, counts.tolist(), references[feature].tolist(),
                                       strict=True):
            labels = (f'service="{SERVICE}",version="{version}",instance="{replica}",'
                      f'feature="{feature}",bin="{label}",statistic="{statistic}"')
            # Spread over the first hour, then flat (no more traffic): the 1h window at 60m
            # sees them all. Written out, so that the flat part equals the last rising value
            # exactly (a float a hair lower would read as a counter reset).
            rising = [round(count * t / 60, 6) for t in range(61)]
            values = " ".join(f"{v:g}" for v in rising + [rising[-1]] * (MINUTES - 60))
            series.append({"series": f"mlops_drift_observations_total{{{labels}}}",
                           "values": values})
            series.append({"series": f"mlops_drift_reference_ratio{{{labels}}}",
                           "values": f"{share:.12g}x{MINUTES}"})
    return series


def test_drift_of_the_merged_traffic_equals_the_servers_own_statistics(
        promtool: str, rules_file: Path) -> None:
    a, b = _replica_rows(1, 0.0, 700), _replica_rows(2, 1.0, 500)
    merged = _monitor(a, b).scores()
    per_replica = (_monitor(a).scores(), _monitor(b).scores())
    # The point of summing counters: the merged score is not the replicas' average.
    assert abs(merged["amount"] - np.mean([s["amount"] for s in per_replica])) > 1e-3
    series = _drift_series("a", _monitor(a)) + _drift_series("b", _monitor(b))
    checks = []
    for feature, statistic in (("amount", "psi"), ("country", "js_distance")):
        selector = (f'mlops:feature_drift:score{{service="{SERVICE}",feature="{feature}",'
                    f'statistic="{statistic}"}}')
        labels = (f'{{service="{SERVICE}",version="3",feature="{feature}",'
                  f'statistic="{statistic}"}}')
        checks.append({"expr": f"abs({selector} - {merged[feature]!r}) < bool 1e-9",
                       "eval_time": "60m", "exp_samples": [{"labels": labels, "value": 1}]})
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": series, "promql_expr_test": checks}])


def test_drift_alert_needs_enough_rows_and_keeps_firing(promtool: str,
                                                        rules_file: Path) -> None:
    a, b = _replica_rows(1, 0.0, 700), _replica_rows(2, 1.5, 500)
    merged = _monitor(a, b).scores()
    assert merged["amount"] > DRIFT.psi
    assert merged["country"] > DRIFT.js_distance
    expected = []
    for feature, statistic in (("amount", "psi"), ("country", "js_distance")):
        labels = {"service": SERVICE, "version": "3", "feature": feature,
                  "statistic": statistic, "severity": "ticket"}
        expected.append({"exp_labels": labels, "exp_annotations": _annotations(
            "MlopsFeatureDrift", labels, merged[feature])})
    quiet_a, quiet_b = _replica_rows(1, 0.0, 40), _replica_rows(2, 1.5, 40)
    _run_tests(promtool, rules_file, [
        {"interval": "1m", "input_series": _drift_series("a", _monitor(a))
         + _drift_series("b", _monitor(b)),
         "alert_rule_test": [
             {"eval_time": "60m", "alertname": "MlopsFeatureDrift", "exp_alerts": expected},
             {"eval_time": "75m", "alertname": "MlopsFeatureDrift", "exp_alerts": expected},
             # No traffic after 60m: from about 115m the window holds fewer than min_rows
             # values; the alert keeps firing for `keep_firing_for` (30m), then stops.
             {"eval_time": "130m", "alertname": "MlopsFeatureDrift", "exp_alerts": expected},
             _quiet("MlopsFeatureDrift", "155m")]},
        # Version 3 replaced at 15m (its replicas gone), before the alert fired: its window
        # still holds the drifted rows, but it is not served, so nothing fires.
        {"interval": "1m", "input_series": _drift_series("a", _monitor(a), served="1x15")
         + _drift_series("b", _monitor(b), served="1x15"),
         "alert_rule_test": [_quiet("MlopsFeatureDrift", "60m"),
                             _quiet("MlopsFeatureDrift", "90m")]},
        # 80 rows in the window: below min_rows, so drift or not, nothing fires.
        {"interval": "1m", "input_series": _drift_series("a", _monitor(quiet_a))
         + _drift_series("b", _monitor(quiet_b)),
         "alert_rule_test": [_quiet("MlopsFeatureDrift", "60m")]},
    ])


@pytest.mark.parametrize("latency", [7, 60, 0.1])
def test_a_latency_objective_off_the_histograms_bounds_is_refused(latency: float) -> None:
    with pytest.raises(ValidationError, match="latency_p99_ms"):
        Slo(latency_p99_ms=latency)


def test_burn_windows_are_the_workbooks() -> None:
    from pulumi_mlops.plans.monitoring import BURN_WINDOWS

    # 2 % of a 30-day budget in 1 h, 5 % in 6 h, 10 % in 3 days.
    for _severity, long, _short, rate in BURN_WINDOWS:
        hours = {"1h": 1, "6h": 6, "3d": 72}[long]
        assert math.isclose(rate * hours / 720, {1: 0.02, 6: 0.05, 72: 0.10}[hours])


def test_model_service_metric_verbs_are_valid_promql_over_the_contract(
        promtool: str, tmp_path: Path) -> None:
    import pulumi_mlops as mlops
    from pulumi_mlops.contracts import metrics as names
    from pulumi_mlops.render import record
    from tests.recording import RUNTIME_IMAGE

    services: list[Any] = []

    def program() -> None:
        target = mlops.DockerTarget()
        registry = mlops.ModelRegistry("reg", target=target)
        services.append(mlops.ModelService(SERVICE, target=target, registry=registry,
                                           image=RUNTIME_IMAGE, model_uri="models:/m@champion"))

    record(program)
    (service,) = services
    verbs = {"rate": service.metric_request_rate(), "errors": service.metric_error_ratio("30m"),
             "p99": service.metric_latency(0.99), "drift": service.metric_drift("amount")}
    assert names.REQUESTS in verbs["rate"] and names.REQUEST_DURATION in verbs["p99"]
    assert all(f'service="{SERVICE}"' in expr for expr in verbs.values())
    path = tmp_path / "verbs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "verbs", "rules": [
        {"record": f"verb:{name}", "expr": expr} for name, expr in verbs.items()]}]}))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_standalone_prometheus_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    from pulumi_mlops.plans.monitoring import (
        PROMETHEUS_CONFIG,
        PROMETHEUS_RULES,
        Prometheus,
        Scraped,
        prometheus_workload,
    )

    targets = [Scraped("mlops-service", f"{SERVICE}:8080",
                       {"service": SERVICE, "track": "stable", "version": "3"}),
               Scraped("mlops-service", f"{SERVICE}-canary:8080",
                       {"service": SERVICE, "track": "canary", "version": "4"})]
    workload = prometheus_workload("mon", Prometheus.standalone(), targets,
                                   rule_groups([SERVICE], SLO, DRIFT))
    files = {f.path: f.content for f in workload.files}
    assert isinstance(files[PROMETHEUS_CONFIG], str)
    # As mounted: the config names the rule files' directory by its container path; a file
    # per group.
    rules = [p for p in files if p.startswith(f"{PROMETHEUS_RULES}/")]
    assert rules == [f"{PROMETHEUS_RULES}/mlops-service-{SERVICE}.yml"]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "service.yml").write_text(str(files[rules[0]]))
    config = str(files[PROMETHEUS_CONFIG]).replace(PROMETHEUS_RULES, str(tmp_path / "rules"))
    (tmp_path / "prometheus.yml").write_text(config)
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout and "1 rule files found" in run.stdout, run.stdout
    scrape = yaml.safe_load(config)["scrape_configs"]
    assert [s["job_name"] for s in scrape] == ["mlops-service"]
    assert [c["labels"]["track"] for c in scrape[0]["static_configs"]] == ["stable", "canary"]
    assert workload.command[0] == "prometheus" and workload.health is not None


def test_a_config_with_dns_discovery_passes_promtool(promtool: str, tmp_path: Path) -> None:
    from pulumi_mlops.plans.monitoring import (
        PROMETHEUS_CONFIG,
        Prometheus,
        Scraped,
        prometheus_workload,
    )

    targets = [Scraped("mlops-registry", "mon-reg-mlflow.ml.svc.cluster.local:9101",
                       {"registry": "reg"}, dns=True),
               Scraped("mlops-service", "mon-fraud.ml.svc.cluster.local:8080",
                       {"service": SERVICE, "track": "stable", "version": "3"}, dns=True),
               Scraped("kube-state-metrics", "kube-state-metrics.kube-system.svc:8080", {})]
    workload = prometheus_workload("mon", Prometheus.standalone(), targets, [])
    files = {f.path: f.content for f in workload.files}
    # Every target answers without credentials: Prometheus reads no secret.
    assert workload.secret_keys() == frozenset()
    config = str(files[PROMETHEUS_CONFIG])
    (tmp_path / "prometheus.yml").write_text(config.replace("-rules/", "-none/"))
    run = subprocess.run([promtool, "check", "config", "--syntax-only",
                          str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(config)["scrape_configs"]}
    assert set(jobs) == {"kube-state-metrics", "mlops-registry/mon-reg-mlflow",
                         "mlops-service/mon-fraud"}
    service = jobs["mlops-service/mon-fraud"]
    assert service["dns_sd_configs"] == [{"names": ["mon-fraud.ml.svc.cluster.local"],
                                          "type": "A", "port": 8080}]
    assert {"target_label": "track", "replacement": "stable"} in service["relabel_configs"]
    assert jobs["mlops-registry/mon-reg-mlflow"]["dns_sd_configs"][0]["port"] == 9101


def test_prometheus_modes_are_built_by_factories() -> None:
    from pulumi_mlops.plans.monitoring import Prometheus

    assert Prometheus.operator("kps").model_dump(include={"mode", "release"}) == {
        "mode": "operator", "release": "kps"}
    assert Prometheus.standalone(port=9091).mode == "standalone"
    with pytest.raises(ValidationError, match="mode"):
        Prometheus(mode="sidecar")


# --- dashboards -------------------------------------------------------------------------------

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "dashboards"


def _promql_of_dashboards() -> list[str]:
    from pulumi_mlops.plans.dashboards import dashboards, panel_queries

    return [expr.replace("$__rate_interval", "5m").replace("$service", SERVICE)
            for document in dashboards().values() for expr in panel_queries(document)]


def test_dashboards_match_their_reviewed_snapshots() -> None:
    # Regenerate with MLOPS_UPDATE_SNAPSHOTS=1 and review the diff.
    import json
    import os

    from pulumi_mlops.plans.dashboards import dashboards

    for uid, document in dashboards().items():
        path = SNAPSHOTS / f"{uid}.json"
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        if os.environ.get("MLOPS_UPDATE_SNAPSHOTS"):
            path.write_text(text)
        assert path.read_text() == text, f"{uid}: regenerate with MLOPS_UPDATE_SNAPSHOTS=1"


def test_dashboards_round_trip_through_grafana_foundation_sdk() -> None:
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

    from pulumi_mlops.plans.dashboards import dashboards

    register_default_plugins()
    for document in dashboards().values():
        again = json.loads(JSONEncoder(sort_keys=True).encode(DashboardModel.from_json(document)))
        assert again == document


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = _promql_of_dashboards()
    assert len(queries) >= 15
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [
        {"record": f"panel:query{i}", "expr": expr} for i, expr in enumerate(queries)]}]}))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
