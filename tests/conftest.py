"""Suite-wide settings: no telemetry, no network."""

from __future__ import annotations

import os

# Tests must never phone home; the machine has no network beyond package registries anyway.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
