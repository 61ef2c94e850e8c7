"""`mlops demo` runs the dev stack's registry, retrain job and model service from their rendered
commands: the retrain registers and promotes a version, the service serves it and answers
predictions."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulumi_mlops.demo import run_demo
from tests.e2e.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


# The registry's metrics exporter (the dev stack's default, 9101, may be taken here).
METRICS_PORT = free_port()


def _project(tmp_path: Path, edit: Any = None) -> tuple[Path, int, int, int]:
    """A copy of the repository's project with the dev stack on free ports (so parallel runs
    coexist); returns it with the registry's, the service's and Prometheus' port."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    # The dev stack builds its runtime image from the repository's Dockerfile.
    (project / "Dockerfile").write_text((REPO / "Dockerfile").read_text())
    (project / "stacks" / "__main__.py").write_text(
        (REPO / "stacks" / "__main__.py").read_text())
    config = yaml.safe_load((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    registry_port, service_port, prometheus_port = free_port(), free_port(), free_port()
    service_metrics_port = free_port()
    config["config"]["mlops:registry"]["port"] = registry_port
    config["config"]["mlops:registry"]["metricsPort"] = METRICS_PORT
    config["config"]["mlops:services"]["cancer"]["port"] = service_port
    config["config"]["mlops:services"]["cancer"]["metricsPort"] = service_metrics_port
    config["config"]["mlops:monitoring"]["prometheus"]["port"] = prometheus_port
    if edit is not None:
        edit(config["config"])
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))
    return project, registry_port, service_port, prometheus_port


def _predictions(out: str) -> list[int]:
    match = re.search(r"predictions for 5 rows of breast_cancer: (\[.*\])", out)
    assert match, out
    predictions: list[int] = ast.literal_eval(match[1])
    return predictions


RETRAINED = ("retrain cancer: version 1 registered as `challenger`; PROMOTED to `champion` "
             "(previous: none)")


def _metrics_port(project: Path) -> int:
    """The service's metrics port in the project's dev stack (what Prometheus scrapes)."""
    config = yaml.safe_load((project / "stacks" / "Pulumi.dev.yaml").read_text())
    return int(config["config"]["mlops:services"]["cancer"]["metricsPort"])


def test_demo_check_retrains_then_serves_the_promoted_version_and_predicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project, registry_port, service_port, prometheus_port = _project(tmp_path)

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 0
    out = capsys.readouterr().out
    assert f"MLflow registry up at http://127.0.0.1:{registry_port} (healthy, API 200)" in out
    assert (tmp_path / "run" / "registry" / "data" / "mlflow.db").is_file()
    # Each client's own registry user, reconciled from the grant's rendered command first.
    for user in ("cancer-service", "cancer-nightly-retrain"):
        assert re.search(rf"^registry: user {user} reconciled as rendered \({user}: \d+ changed",
                         out, re.M), out
    # The schedule's job ran once, from its rendered command, before any server started.
    assert ("cancer-nightly: ran the retrain job once, as its schedule (0 3 * * *, UTC) would\n"
            "  command, as rendered: mlops retrain --config /etc/mlops/retrain.json\n"
            f"  {RETRAINED}\n") in out
    assert re.search(r"^    roc_auc +0\.9\d+ +- *$", out, re.M), out
    assert re.search(r"^    min +roc_auc +pass ", out, re.M), out
    assert "  exit code 0 (promoted)\n" in out
    # Progress: each step says when it starts, the job's stages show as they finish.
    steps = ["==> starting the MLflow registry `registry` (SQLite) ...\n",
             "==> running the retrain job of `cancer-nightly` once",
             "==> rendering stack 'dev' again against",
             "==> starting the model server `cancer` (models:/cancer@champion) ...\n"]
    assert [out.index(step) for step in steps] == sorted(out.index(step) for step in steps)
    assert re.search(r"^  train: ok \(\d+\.\d+s\)$", out, re.M), out
    assert out.index("  promote: ok (") < out.index(RETRAINED)
    assert "registered cancer version" not in out  # the demo trained nothing itself
    server_up = f"cancer: model server up at http://127.0.0.1:{service_port} (healthy)"
    assert out.index(RETRAINED) < out.index(server_up)
    # Rendered again against the running registry, so the alias is pinned in the command.
    assert (f"mlops serve --model-uri models:/cancer/1 --host 0.0.0.0 --port {service_port}"
            in out)
    assert "model: cancer version 1 (models:/cancer@champion, pinned at render)" in out
    predictions = _predictions(out)
    assert len(predictions) == 5 and set(predictions) <= {0, 1}
    assert "check failed" not in out and "smoke test failed" not in out
    # Prometheus last, from its rendered workload, scraping what runs here.
    assert (f"monitoring-prometheus: up at http://127.0.0.1:{prometheus_port}, scraping "
            f"registry-mlflow-metrics:{METRICS_PORT}, cancer:{_metrics_port(project)} "
            "(not running here: "
            "cancer-nightly-retrain:") in out
    assert out.index(server_up) < out.index("monitoring-prometheus: up at")
    assert "/graph?g0.expr=mlops%3Afeature_drift%3Ascore" in out


def test_demo_trains_the_model_itself_when_no_schedule_retrains_it_and_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_retrain(config: dict[str, Any]) -> None:
        del config["mlops:retrain"]

    project, _, service_port, _ = _project(tmp_path, no_retrain)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))

    assert run_demo(project, "dev", check=True) == 0  # in a temporary folder
    out = capsys.readouterr().out
    assert list(temp.glob("mlops-demo-*")) == []
    assert "==> training cancer (no retrain schedule registers it) ...\n" in out
    assert "retrain job" not in out
    assert "registered cancer version 1, alias champion" in out
    assert "model: cancer version 1 (models:/cancer@champion, pinned at render)" in out
    assert f"cancer: model server up at http://127.0.0.1:{service_port} (healthy)" in out
    assert "check failed" not in out and "smoke test failed" not in out


def test_demo_serves_a_pinned_version_it_did_not_register_only_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def pin_version_7(config: dict[str, Any]) -> None:
        config["mlops:services"]["cancer"]["modelUri"] = "models:/cancer/7"

    project, _, service_port, _ = _project(tmp_path, pin_version_7)

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 0
    out = capsys.readouterr().out
    assert RETRAINED in out
    assert ("cancer: skipped, it pins models:/cancer/7 and the demo registered version 1 only"
            in out)
    assert f"model server up at http://127.0.0.1:{service_port}" not in out


def test_demo_check_fails_when_the_retrain_does_not_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable_gate(config: dict[str, Any]) -> None:
        config["mlops:retrain"]["cancer-nightly"]["gates"]["min"] = {"roc_auc": 0.9999}

    project, _, service_port, _ = _project(tmp_path, unreachable_gate)

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 1
    out = capsys.readouterr().out
    assert ("retrain cancer: version 1 registered as `challenger`; NOT promoted: gate(s) "
            "failed: min:roc_auc; `champion` stays none") in out
    assert "  exit code 10 (registered, not promoted: a gate failed)\n" in out
    # Nothing holds `champion`, so the service is not started, and the check says why.
    assert "cancer: skipped, retrain cancer-nightly did not point `champion` at version 1" in out
    assert f"model server up at http://127.0.0.1:{service_port}" not in out
    assert ("retrain check failed: cancer-nightly: the retrain job exited with 10 (registered, "
            "not promoted: a gate failed); 0 (promoted) is required") in out
