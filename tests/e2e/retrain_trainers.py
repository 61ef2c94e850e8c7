"""Trainers the retrain end-to-end tests name in their configs (``trainer: module:function``)."""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def scaled_logistic(x: Any, y: Any, params: dict[str, Any]) -> Pipeline:
    """A good, quick classifier."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, **params)).fit(x, y)


def mixed_pipeline(x: pd.DataFrame, y: Any, params: dict[str, Any]) -> Pipeline:
    """A team's own preprocessing: numeric columns scaled, string columns one-hot encoded, in
    front of a random forest (a type skops does not trust by default)."""
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    text = [c for c in x.columns if c not in numeric]
    features = ColumnTransformer([
        ("scale", StandardScaler(), numeric),
        ("one_hot", OneHotEncoder(handle_unknown="ignore"), text),
    ])
    forest = RandomForestClassifier(n_estimators=20, random_state=0, **params)
    return Pipeline([("features", features), ("forest", forest)]).fit(x, y)


def raising(x: Any, y: Any, params: dict[str, Any]) -> Pipeline:
    """Training that fails."""
    raise RuntimeError("injected: training failed")


class _PredictRaises(Pipeline):
    def predict(self, x: Any, **params: Any) -> np.ndarray:
        raise RuntimeError("injected: evaluation failed")


def predict_raises(x: Any, y: Any, params: dict[str, Any]) -> Pipeline:
    """A fitted model whose predict fails (so evaluation fails)."""
    steps = [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))]
    return _PredictRaises(steps).fit(x, y)


def freeze_registry_then_train(x: Any, y: Any, params: dict[str, Any]) -> Pipeline:
    """Trains fine, but first stops the registry's process group (``MLOPS_TEST_REGISTRY_PGID``)
    with SIGSTOP, so the registry is unreachable for every later stage."""
    os.killpg(int(os.environ["MLOPS_TEST_REGISTRY_PGID"]), signal.SIGSTOP)
    return scaled_logistic(x, y, params)
