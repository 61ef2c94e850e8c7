"""The runtime image's Python environment, built as the Dockerfile builds it, without Docker.

A fresh virtualenv gets exactly ``requirements/runtime.txt`` (``--no-deps``, wheels only, then
``pip check``) and the project with ``--no-deps`` from the files the Docker build context
holds. That environment has no Pulumi and only mlflow-skinny; the tests load and score a model
the test environment saved, so "mlflow-skinny suffices" is checked, not assumed.

The packages come from the configured package index, like checkov's own virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class ImageEnv:
    python: Path
    mlops: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        # As the Dockerfile sets them.
        env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONDONTWRITEBYTECODE": "1"})
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd="/", check=False)


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    assert proc.returncode == 0, (
        f"pip {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageEnv]:
    root = tmp_path_factory.mktemp("image-env")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    _pip(python, "install", "--quiet", "--no-deps", "--only-binary=:all:",
         "-r", str(REPO / "requirements" / "runtime.txt"))
    _pip(python, "check")
    # What .dockerignore lets into the build context and the Dockerfile copies.
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "sdk", src / "sdk",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _pip(python, "install", "--quiet", "--no-deps", str(src))
    yield ImageEnv(python, venv / "bin" / "mlops")


SavedModel = tuple[Path, list[list[float]], list[int]]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    """A scikit-learn model saved by the test environment (MLflow's default, skops format)."""
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
    y = [0, 0, 0, 1, 1, 1]
    model = LogisticRegression().fit(x, y)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(x, model.predict(x)))
    rows = [[0.5, 1.0], [4.5, 0.0]]
    expected = [int(v) for v in model.predict(pd.DataFrame(rows, columns=["a", "b"]))]
    return path, rows, expected


def test_the_image_environment_has_no_pulumi_and_no_full_mlflow(image_env: ImageEnv) -> None:
    code = ("import importlib.util as u; "
            "print([m for m in ('pulumi', 'pulumi_docker', 'flask', 'sqlalchemy') "
            "if u.find_spec(m)])")
    proc = image_env.run(str(image_env.python), "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_image_environment_loads_and_scores_a_saved_model(
    image_env: ImageEnv, saved_model: SavedModel,
) -> None:
    path, rows, expected = saved_model
    body = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": rows}})
    csv = "a,b\n" + "".join(f"{x},{y}\n" for x, y in rows)
    # The server's own request paths (the fast path for JSON, MLflow's scoring functions for
    # CSV), then MLflow's pyfunc loader on its own.
    code = (
        "import json, sys\n"
        "import mlflow.pyfunc, pandas as pd\n"
        "from pulumi_mlops.runtime.serve.loading import load_served_model\n"
        "served = load_served_model(sys.argv[1])\n"
        "fast = served.invoke(sys.argv[2].encode(), 'application/json')\n"
        "general = served.invoke(sys.argv[3].encode(), 'text/csv')\n"
        "rows = json.loads(sys.argv[2])['dataframe_split']['data']\n"
        "frame = pd.DataFrame(rows, columns=['a', 'b'])\n"
        "pyfunc_out = [int(v) for v in mlflow.pyfunc.load_model(sys.argv[1]).predict(frame)]\n"
        "print(json.dumps({'fast': json.loads(fast.body)['predictions'],\n"
        "                  'general': json.loads(general.body)['predictions'],\n"
        "                  'pyfunc': pyfunc_out}))\n"
    )
    proc = image_env.run(str(image_env.python), "-c", code, str(path), body, csv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"fast": expected, "general": expected, "pyfunc": expected}


def test_the_image_entrypoint_runs_without_pulumi(image_env: ImageEnv) -> None:
    proc = image_env.run(str(image_env.mlops), "serve", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--model-uri" in proc.stdout
