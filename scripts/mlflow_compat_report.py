"""Run the MLflow-compatibility cases against `mlflow models serve` and `mlops serve` and print
the figures: requests compared, identical, deliberate differences by class, and every other
difference. Exit status 1 when there is any difference that is not deliberate.

Run from the project root:  .venv/bin/python scripts/mlflow_compat_report.py [-k SUBSTRING]
The cases and models are those of tests/e2e/test_mlflow_compat.py (tests/e2e/compat_cases.py,
tests/e2e/compat_models.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tests.e2e.compat_cases import (
    DELIBERATE_CLASSES,
    DIFFERENT,
    IDENTICAL,
    build_cases,
    run_case,
    running_servers,
)
from tests.e2e.compat_models import MODELS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose id contains this")
    parser.add_argument("--json", help="also write every outcome to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory "
                        "(models and server logs)")
    args = parser.parse_args()
    cases = [c for c in build_cases() if args.k in c.id]
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mlflow-compat-"))
    with running_servers(root) as servers:
        ready = time.monotonic() - started
        outcomes = [run_case(case, servers) for case in cases]
        down = {f"{m}/{k}: {s.error}" for (m, k), s in servers.items() if s.error}
    counts = collections.Counter(o.kind for o in outcomes)
    print(f"models: {len(MODELS)}; servers ready after {ready:.0f} s; "
          f"total {time.monotonic() - started:.0f} s")
    for line in sorted(down):
        print(f"SERVER NOT SERVING: {line}")
    print(f"requests compared:      {len(outcomes)}")
    print(f"identical:              {counts[IDENTICAL]}")
    for kind, label in DELIBERATE_CLASSES.items():
        print(f"deliberate {label}: {counts[kind]}")
    print(f"other differences:      {counts[DIFFERENT]}")
    by_model = collections.Counter(o.case.model for o in outcomes if o.kind == DIFFERENT)
    if by_model:
        print("other differences by model: " + ", ".join(
            f"{m} {n}" for m, n in sorted(by_model.items())))
    for outcome in outcomes:
        if outcome.kind == DIFFERENT:
            print("- " + outcome.line())
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"id": o.case.id, "kind": o.kind, "why": o.why,
             "mlflow": o.mlflow.excerpt(6000) if o.mlflow else None,
             "mlops": o.mlops.excerpt(6000) if o.mlops else None} for o in outcomes], indent=1))
    if args.keep:
        print(f"models and logs kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if counts[DIFFERENT] else 0


if __name__ == "__main__":
    sys.exit(main())
