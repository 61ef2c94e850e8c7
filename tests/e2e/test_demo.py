"""`mlops demo` runs the dev stack's registry and model service from their rendered commands:
it trains and registers a model, serves it and sends predictions."""

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


def _project(tmp_path: Path, edit: Any = None) -> tuple[Path, int, int]:
    """A copy of the repository's project with the dev stack on free ports (so parallel runs
    coexist); returns it with the registry's and the service's port."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    (project / "stacks" / "__main__.py").write_text(
        (REPO / "stacks" / "__main__.py").read_text())
    config = yaml.safe_load((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    registry_port, service_port = free_port(), free_port()
    config["config"]["mlops:registry"]["port"] = registry_port
    config["config"]["mlops:services"]["cancer"]["port"] = service_port
    if edit is not None:
        edit(config["config"])
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))
    return project, registry_port, service_port


def _predictions(out: str) -> list[int]:
    match = re.search(r"predictions for 5 rows of breast_cancer: (\[.*\])", out)
    assert match, out
    predictions: list[int] = ast.literal_eval(match[1])
    return predictions


def test_demo_check_registers_serves_and_predicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project, registry_port, service_port = _project(tmp_path)

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 0
    out = capsys.readouterr().out
    assert f"MLflow registry up at http://127.0.0.1:{registry_port} (healthy, API 200)" in out
    assert (tmp_path / "run" / "registry" / "data" / "mlflow.db").is_file()
    assert "registered cancer version 1, alias champion" in out
    # Rendered again against the running registry, so the alias is pinned in the command.
    assert f"cancer: model server up at http://127.0.0.1:{service_port} (healthy)" in out
    assert (f"mlops serve --model-uri models:/cancer/1 --host 0.0.0.0 --port {service_port}"
            in out)
    assert "model: cancer version 1 (models:/cancer@champion, pinned at render)" in out
    predictions = _predictions(out)
    assert len(predictions) == 5 and set(predictions) <= {0, 1}
    assert "smoke test failed" not in out


def test_demo_serves_a_pinned_version_it_did_not_register_only_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def pin_version_7(config: dict[str, Any]) -> None:
        config["mlops:services"]["cancer"]["modelUri"] = "models:/cancer/7"

    project, _, service_port = _project(tmp_path, pin_version_7)

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 0
    out = capsys.readouterr().out
    assert "registered cancer version 1\n" in out
    assert ("cancer: skipped, it pins models:/cancer/7 and the demo registered version 1 only"
            in out)
    assert f"model server up at http://127.0.0.1:{service_port}" not in out
