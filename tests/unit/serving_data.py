"""The small training frame the in-process serving tests fit their models on, and the general
path of a served model on its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pulumi_mlops.runtime.serve.fetch import ModelInfo
from pulumi_mlops.runtime.serve.model import ServedModel

FEATURES = [f"f{i}" for i in range(5)]
COLUMNS = [*FEATURES, "n"]


def training_frame(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """Five double features and one long (``n``), with a binary target."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 5)), columns=FEATURES)
    frame["n"] = rng.integers(0, 10, size=rows)
    target = (frame["f0"] + frame["f1"] * 0.5 + frame["n"] * 0.1 > 0.5).astype(int)
    return frame, target.to_numpy()


def general_only(served: ServedModel, info: ModelInfo | None = None) -> ServedModel:
    """The same model without its fast path: every request takes MLflow's scoring functions
    (its drift monitor too)."""
    return ServedModel(info or served.info, served.signature, pyfunc_model=served.model,
                       drift=served.drift, coerce="strict" if served.strict else "lossy",
                       mlmodel=served.mlmodel)
