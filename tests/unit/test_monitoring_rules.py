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
from pulumi_mlops.plans.monitoring import DriftAlerts, Slo, rule_groups
from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.drift.spec import load_profile

SERVICE = "fraud"
SLO = Slo(availability=0.999, latency_p99_ms=50)
DRIFT = DriftAlerts(min_rows=100)
MINUTES = 160
SLI = "mlops:sli_error:ratio_rate"


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
    path.write_text(yaml.safe_dump({"groups": rule_groups([SERVICE], SLO, DRIFT)},
                                   sort_keys=False))
    return path


def _rule(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alerting rule named ``alert`` whose own labels ``labels`` carry."""
    (rule,) = [r for g in rule_groups([SERVICE], SLO, DRIFT) for r in g["rules"]
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
        out[key] = text
    return out


def _run_tests(promtool: str, rules_file: Path, tests: list[dict[str, Any]]) -> None:
    spec = rules_file.parent / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m",
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


def _fires(alert: str, at: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert,
            "exp_alerts": [{"exp_labels": labels, "exp_annotations": _annotations(alert, labels)}]}


def _quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_generated_rules_pass_promtool_check(promtool: str, rules_file: Path) -> None:
    run = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


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


def _drift_series(replica: str, monitor: DriftMonitor, version: str = "3") -> list[dict[str, str]]:
    series = []
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
    # As mounted: the config names the rule file by its container path.
    (tmp_path / "rules.yml").write_text(str(files[PROMETHEUS_RULES]))
    config = str(files[PROMETHEUS_CONFIG]).replace(PROMETHEUS_RULES, str(tmp_path / "rules.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    scrape = yaml.safe_load(config)["scrape_configs"]
    assert [s["job_name"] for s in scrape] == ["mlops-service"]
    assert [c["labels"]["track"] for c in scrape[0]["static_configs"]] == ["stable", "canary"]
    assert workload.command[0] == "prometheus" and workload.health is not None


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
