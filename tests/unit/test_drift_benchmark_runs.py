"""`benchmarks/drift_overhead.py` still runs against the code it measures (a changed signature
once broke it unnoticed). Its figures are not asserted: benchmarks print, they do not judge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_drift_benchmark_runs_every_path_it_reports() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "drift_overhead.py"),
                           "--rows", "2000"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "general path, features read from the JSON (15 numeric + 5 text columns)" in out
    assert "fallback, observe_columns of the DataFrame MLflow decodes" in out
    assert "request paths" in out.splitlines()[-2]  # the verdict over all 19 paths
