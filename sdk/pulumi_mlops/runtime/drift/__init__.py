"""Training-data reference profile and the online drift statistics the model server exports.

The retrain job builds a profile of the training frame with `build_profile` (`profile`) and logs
it as JSON on the model's run at `PROFILE_ARTIFACT_PATH`; the model server reads it with
`load_profile`, feeds every request's inputs to a `DriftMonitor` (`monitor`) and exports
`DriftMonitor.scores()` at scrape time. The profile format and the statistics (`spec`) are a
public contract between the two.

The model's output is profiled and monitored as one more feature, `PREDICTION_FEATURE`
(``"__prediction__"``), whose kind (values or classes) `prediction` decides.

Modules: `spec` (the format, its typed form and strict loading), `profile` (building a profile,
pure), `prediction` (which outputs are monitored, and as which kind), `monitor` (the
monitor's state: pending rows, window, locks, shared memory), and the monitor's pure binning
and scoring in `_binning`, and its reading of DataFrames in `_frames`. This package re-exports
what the retrain job and the model server use.
"""

from pulumi_mlops.runtime.drift.monitor import DriftMonitor
from pulumi_mlops.runtime.drift.prediction import (
    PREDICTION_FEATURE,
    prediction_kind,
    prediction_values,
)
from pulumi_mlops.runtime.drift.profile import build_profile
from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH, load_profile

__all__ = [
    "PREDICTION_FEATURE",
    "PROFILE_ARTIFACT_PATH",
    "DriftMonitor",
    "build_profile",
    "load_profile",
    "prediction_kind",
    "prediction_values",
]
