"""Suite-wide settings: no telemetry, no network."""

from __future__ import annotations

import os

# Tests must never phone home; the machine has no network beyond package registries anyway.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

# Nothing a test does may write an ./mlruns store into the working tree.
if "MLFLOW_TRACKING_URI" not in os.environ:
    import tempfile

    os.environ["MLFLOW_TRACKING_URI"] = (
        f"sqlite:///{tempfile.mkdtemp(prefix='mlops-tests-')}/mlflow.db")
