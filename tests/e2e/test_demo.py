"""`mlops demo` runs the dev stack's registry from its rendered command and smoke-tests it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pulumi_mlops.demo import run_demo
from tests.e2e.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_check_starts_the_registry_and_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The dev stack publishes port 5000; run the demo on a free port so parallel runs coexist.
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    (project / "stacks" / "__main__.py").write_text(
        (REPO / "stacks" / "__main__.py").read_text())
    config = yaml.safe_load((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    port = free_port()
    config["config"]["mlops:registry"]["port"] = port
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))

    assert run_demo(project, "dev", workdir=tmp_path / "run", check=True) == 0
    out = capsys.readouterr().out
    assert f"MLflow registry up at http://127.0.0.1:{port} (healthy, API 200)" in out
    assert (tmp_path / "run" / "registry" / "data" / "mlflow.db").is_file()
