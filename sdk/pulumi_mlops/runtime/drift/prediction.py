"""The model's output as one more drift feature, `PREDICTION_FEATURE`: which outputs qualify
(one value or class per row, `prediction_values`) and whether they are classes or values
(`prediction_kind`). The retrain job's profile and the model server's monitor both decide
with these two functions, so a prediction is profiled and monitored as the same kind.

The rule is the one the model server applies to its prediction metrics
(``mlops_predictions_total{class}`` for classes, ``mlops_prediction_value`` for values): a
float output is a value (numeric, PSI), a bool, integer, string or object output is a class
(categorical, Jensen-Shannon distance), any other dtype (complex, datetime...) is neither.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from pulumi_mlops.contracts.metrics import PREDICTION_FEATURE

__all__ = ["PREDICTION_FEATURE", "PredictionKind", "dtype_kind", "prediction_kind",
           "prediction_values"]

PredictionKind = Literal["numeric", "categorical"]
"""How a prediction is profiled: values (numeric) or classes (categorical)."""

_VALUE_KINDS: Final = "f"
_CLASS_KINDS: Final = "iubUSO"


def prediction_values(predictions: Any) -> npt.NDArray[Any] | None:
    """The model's output as a 1-D array, one entry per input row, or None when it is not one
    value or class per row (a 2-D output: probabilities, several targets; a dict of outputs).

    Args:
        predictions: What the model's ``predict`` returned (an ndarray, a pandas Series, a
            list...).
    """
    if type(predictions) is np.ndarray:
        values = predictions
    else:
        # As the prediction metrics read an output (a dict's `values` is a method, which
        # becomes a 0-d array and is left out).
        try:
            values = np.asarray(getattr(predictions, "values", predictions))
        except (TypeError, ValueError):  # ragged lists
            return None
    if values.ndim != 1:
        return None
    return values


def prediction_kind(values: npt.NDArray[Any]) -> PredictionKind | None:
    """Whether 1-D predictions are values (``"numeric"``: float dtypes) or classes
    (``"categorical"``: bool, integer, string and object dtypes); None for any other dtype,
    or no predictions at all."""
    if values.ndim != 1 or values.size == 0:
        return None
    return dtype_kind(values.dtype)


def dtype_kind(dtype: np.dtype[Any]) -> PredictionKind | None:
    """Whether predictions of ``dtype`` are values (``"numeric"``: floats) or classes
    (``"categorical"``: bool, integers, text, objects); None for any other dtype. The one rule,
    which the server's prediction metrics and feedback apply too."""
    if dtype.kind in _VALUE_KINDS:
        return "numeric"
    if dtype.kind in _CLASS_KINDS:
        return "categorical"
    return None
