"""The retrain job's model: fit the configured estimator (behind `feature_pipeline`, with the
search if any) or call the configured trainer (`train`), and score a model on the holdout with
the task's metrics (`evaluate`). Pure: nothing here talks to the registry."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Final

import numpy as np
import pandas as pd

from pulumi_mlops.runtime.retrain.config import RetrainConfig, check_estimator, check_trainer
from pulumi_mlops.runtime.retrain.data import Task

__all__ = ["evaluate", "feature_pipeline", "train"]

# The estimator's step in the pipeline `feature_pipeline` builds (search parameters are
# addressed as ``model__<name>``).
_ESTIMATOR_STEP: Final = "model"


def feature_pipeline(estimator: Any, x: pd.DataFrame) -> Any:
    """``estimator`` as it is when every column of ``x`` is numeric (or boolean); otherwise a
    ``Pipeline`` that first scales the numeric columns and one-hot encodes the others (strings,
    categories), so that the fitted model takes the raw columns as they are in the data.

    Categories not seen in training are encoded as all zeros (``handle_unknown="ignore"``)
    rather than failing a prediction. The encoding is dense: not every estimator takes sparse
    input (naive Bayes, histogram gradient boosting).
    """
    text = [str(c) for c in x.columns
            if not (pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c]))]
    if not text:
        return estimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [str(c) for c in x.columns if str(c) not in text]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("numeric", StandardScaler(), numeric))
    parts.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                  text))
    return Pipeline([("features", ColumnTransformer(parts)), (_ESTIMATOR_STEP, estimator)])


def train(config: RetrainConfig, x_train: pd.DataFrame, y_train: Any) -> tuple[Any, dict[str, Any]]:
    """Fit the configured estimator (with the search, if any) or call the trainer.

    An estimator is fitted behind `feature_pipeline` (a no-op on all-numeric data); the
    search's parameters still name the estimator's own parameters. A trainer gets the raw
    columns and does its own preprocessing.

    Returns:
        The fitted model and the parameters it was trained with (the search's best merged in).
    """
    params = dict(config.params)
    if config.trainer is not None:
        model = check_trainer(config.trainer)(x_train, y_train, params)
        return model, params
    assert config.estimator is not None
    cls = check_estimator(config.estimator)
    init = dict(params)
    with contextlib.suppress(Exception):
        if "random_state" in cls().get_params() and "random_state" not in init:
            init["random_state"] = config.seed
    bare = cls(**init)
    estimator = feature_pipeline(bare, x_train)
    if not config.search:
        return estimator.fit(x_train, y_train), params
    from sklearn.model_selection import RandomizedSearchCV

    prefix = "" if estimator is bare else f"{_ESTIMATOR_STEP}__"
    candidates = math.prod(len(v) for v in config.search.values())
    search = RandomizedSearchCV(estimator, {prefix + k: v for k, v in config.search.items()},
                                n_iter=min(config.search_iterations, candidates),
                                random_state=config.seed)
    search.fit(x_train, y_train)
    best = {k.removeprefix(prefix): v for k, v in search.best_params_.items()}
    return search.best_estimator_, {**params, **best}


def evaluate(model: Any, x: pd.DataFrame, y: Any, task: Task) -> dict[str, float]:
    """The task's metrics of ``model`` on ``(x, y)``.

    Classification: accuracy, f1 (binary, or macro-averaged), and, when the model has
    ``predict_proba``, roc_auc (one-vs-rest for several classes) and log_loss. Regression:
    rmse, mae, r2.
    """
    from sklearn import metrics

    predicted = np.asarray(model.predict(x))
    if task == "regression":
        return {
            "rmse": float(math.sqrt(metrics.mean_squared_error(y, predicted))),
            "mae": float(metrics.mean_absolute_error(y, predicted)),
            "r2": float(metrics.r2_score(y, predicted)),
        }
    classes = getattr(model, "classes_", None)
    labels = list(classes) if classes is not None else sorted(pd.unique(np.asarray(y)))
    binary = len(labels) == 2
    out = {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "f1": float(metrics.f1_score(y, predicted, labels=labels,
                                     pos_label=labels[-1] if binary else 1,
                                     average="binary" if binary else "macro")),
    }
    if hasattr(model, "predict_proba") and classes is not None:
        proba = np.asarray(model.predict_proba(x))
        out["log_loss"] = float(metrics.log_loss(y, proba, labels=labels))
        if binary:
            out["roc_auc"] = float(metrics.roc_auc_score(np.asarray(y) == labels[1],
                                                         proba[:, 1]))
        else:
            out["roc_auc"] = float(metrics.roc_auc_score(y, proba, labels=labels,
                                                         multi_class="ovr"))
    return out
