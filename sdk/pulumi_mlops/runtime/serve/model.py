"""Load the served model (with bounded retries) and predict, with a scikit-learn fast path.

The fast path applies to a scikit-learn pyfunc model whose signature has only numeric,
required columns: validated rows go straight into a float64 matrix and the estimator's predict
function, skipping pandas and pyfunc's per-request schema enforcement. It calls the very
function pyfunc would call, on the same values, so it returns exactly what
``pyfunc.predict`` returns (property-tested).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, DriftMonitor, load_profile
from pulumi_mlops.runtime.serve.payload import (
    ColumnSpec,
    Parsed,
    PayloadError,
    numeric_matrix,
    validate_columns,
)

__all__ = ["ModelInfo", "ModelLoadError", "ServedModel", "load_served_model"]

log = logging.getLogger("mlops.serve")

_NUMERIC = frozenset({"double", "float", "long", "integer"})
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
# Errors that retrying cannot fix.
_PERMANENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED",
              "UNAUTHENTICATED")


class ModelLoadError(RuntimeError):
    """The model could not be loaded (after retries, or for a reason retries cannot fix)."""


@dataclass(frozen=True)
class ModelInfo:
    """What is being served.

    Attributes:
        uri: The model URI as given.
        name: Registered model name (None for runs:/ and local paths).
        version: Resolved registered version.
        alias: The alias the URI named, if any.
        run_id: The run that logged the model.
    """

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None


class ServedModel:
    """A loaded pyfunc model with its signature, the fast path when possible, and drift."""

    def __init__(self, pyfunc_model: Any, info: ModelInfo,
                 drift: DriftMonitor | None = None) -> None:
        self.model = pyfunc_model
        self.info = info
        self.drift = drift
        schema = pyfunc_model.metadata.get_input_schema()
        self.columns: list[ColumnSpec] | None = None
        if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
            self.columns = [
                ColumnSpec(c.name, c.type.name, c.required) for c in schema.inputs
            ]
        self.fast_predict = self._fast_predict_fn()
        # Columns of the validated rows that feed the drift monitor's numeric matrix.
        self._drift_index: list[int] | None = None
        if drift is not None and self.columns is not None and not drift.categorical_features:
            names = [c.name for c in self.columns]
            if set(drift.numeric_features) <= set(names):
                self._drift_index = [names.index(f) for f in drift.numeric_features]

    def _fast_predict_fn(self) -> Callable[[Any], Any] | None:
        impl = getattr(self.model, "_model_impl", None)
        estimator = getattr(impl, "sklearn_model", None)
        if estimator is None or self.columns is None:
            return None
        if not all(c.type in _NUMERIC and c.required for c in self.columns):
            return None
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None and list(names) != [c.name for c in self.columns]:
            return None
        conf = self.model.metadata.flavors.get("python_function", {})
        fn: Callable[[Any], Any] = getattr(impl, conf.get("predict_fn", "predict"))
        return fn

    def predict(self, parsed: Parsed) -> Any:
        """Predictions for a parsed request (validated against the signature when there is one)."""
        if not parsed.rows:
            raise PayloadError(400, "the request has no rows")
        if self.columns is None:
            return self._pyfunc_predict(_general_input(parsed), parsed.params)
        names, rows = validate_columns(parsed, self.columns)
        if self.fast_predict is not None and not parsed.params:
            matrix = numeric_matrix(rows)
            if self._drift_index is not None and self.drift is not None:
                self.drift.observe_matrix(matrix[:, self._drift_index])
            with warnings.catch_warnings():
                # Fitted on a DataFrame, the estimator notes that a matrix has no feature
                # names; the columns were just checked to be the fitted ones, in order.
                warnings.simplefilter("ignore", UserWarning)
                return self.fast_predict(matrix)
        import pandas as pd

        frame = pd.DataFrame(rows, columns=names)
        if self.drift is not None:
            self.drift.observe_columns(frame)
        return self._pyfunc_predict(frame, parsed.params)

    def _pyfunc_predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        try:
            return self.model.predict(data, params=params)
        except Exception as err:
            # pyfunc's own input enforcement (e.g. a tensor signature) rejects client input.
            if getattr(err, "error_code", None) == "INVALID_PARAMETER_VALUE":
                raise PayloadError(400, str(err)) from None
            raise


def _general_input(parsed: Parsed) -> Any:
    import pandas as pd

    if parsed.columns is not None:
        return pd.DataFrame(parsed.rows, columns=parsed.columns)
    return np.asarray(parsed.rows)


def resolve_model_uri(uri: str) -> tuple[str, ModelInfo]:
    """Pin ``models:/name@alias`` to its current version; other URIs load as given."""
    match = _MODELS_URI.match(uri)
    if match is None:
        return uri, ModelInfo(uri, None, None, None, None)
    from mlflow.tracking import MlflowClient

    name, version, alias = match["name"], match["version"], match["alias"]
    client = MlflowClient()
    mv = (client.get_model_version_by_alias(name, alias) if alias
          else client.get_model_version(name, version))
    return f"models:/{name}/{mv.version}", ModelInfo(uri, name, str(mv.version), alias,
                                                     mv.run_id)


def _permanent(err: BaseException) -> bool:
    code = getattr(err, "error_code", "")
    return any(p in str(code) for p in _PERMANENT)


def load_drift_monitor(run_id: str | None, window: int) -> DriftMonitor | None:
    """The drift monitor for the run's training-data profile, if the run logged one."""
    if run_id is None:
        return None
    import mlflow.artifacts

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=PROFILE_ARTIFACT_PATH)
    except Exception as err:  # no profile means no drift gauges, not a failure
        log.info("no drift profile on run %s (%s): drift gauges disabled", run_id,
                 type(err).__name__)
        return None
    with open(path, "rb") as f:
        return DriftMonitor(load_profile(f.read()), window=window)


def load_served_model(
    uri: str, *, attempts: int = 6, first_delay: float = 1.0, max_delay: float = 30.0,
    drift_window: int = 1000,
) -> ServedModel:
    """Load the model, retrying connection failures with exponential backoff.

    Raises:
        ModelLoadError: after ``attempts`` failures, or at once for errors retries cannot fix
            (model or version missing, bad credentials).
    """
    import mlflow.pyfunc

    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            pinned, info = resolve_model_uri(uri)
            model = mlflow.pyfunc.load_model(pinned)
            if info.run_id is None:
                info = ModelInfo(info.uri, info.name, info.version, info.alias,
                                 model.metadata.run_id)
            return ServedModel(model, info, load_drift_monitor(info.run_id, drift_window))
        except Exception as err:
            if _permanent(err) or attempt == attempts:
                raise ModelLoadError(
                    f"cannot load {uri!r} (attempt {attempt}/{attempts}): {err}") from err
            log.warning("loading %s failed (attempt %d/%d): %s; retrying in %.1fs",
                        uri, attempt, attempts, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
