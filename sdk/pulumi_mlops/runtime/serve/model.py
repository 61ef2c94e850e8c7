"""Load the served model (with bounded retries) and predict, with a scikit-learn fast path.

Loading: a ``models:/`` URI against an HTTP(S) tracking server that proxies artifacts is
fetched with a small REST client (`fetch`), and a scikit-learn model that qualifies for the fast
path is deserialized directly, exactly as ``mlflow.sklearn`` does it; neither imports mlflow,
which keeps the cold start short. Everything else (other URIs and stores, other flavors) goes
through mlflow's client and ``mlflow.pyfunc.load_model``.

The fast path applies to a scikit-learn model whose signature is numeric, required columns or a
float ``(-1, n)`` tensor, and has no params schema: validated rows go straight into a matrix
and the estimator's predict function, skipping pandas and pyfunc's per-request schema
enforcement. It calls the very function pyfunc would call, on the same values, so it returns
exactly what ``pyfunc.predict`` returns (property-tested).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, DriftMonitor, load_profile
from pulumi_mlops.runtime.serve.fetch import (
    ModelInfo,
    ModelLoadError,
    RestRegistry,
    fetch_model,
    read_mlmodel,
    scratch_dir,
)
from pulumi_mlops.runtime.serve.payload import (
    ColumnSpec,
    Parsed,
    PayloadError,
    TensorSpec,
    numeric_matrix,
    tensor_matrix,
    validate_columns,
)

__all__ = ["ServedModel", "Signature", "load_served_model", "open_model"]

log = logging.getLogger("mlops.serve")

_NUMERIC = frozenset({"double", "float", "long", "integer"})
_FLOAT_TENSORS = frozenset({"float64", "float32"})


@dataclass(frozen=True)
class Signature:
    """The model's input signature, read from its MLmodel file.

    Attributes:
        columns: Named input columns (None for a tensor signature or no signature).
        tensor: The single input tensor of a tensor signature.
        has_params: Whether the signature defines a params schema.
    """

    columns: list[ColumnSpec] | None = None
    tensor: TensorSpec | None = None
    has_params: bool = False

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> Signature:
        """Parse the ``signature`` section of an MLmodel document."""
        signature = mlmodel.get("signature") or {}
        has_params = bool(signature.get("params") and json.loads(signature["params"]))
        inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
        if len(inputs) == 1 and inputs[0].get("type") == "tensor" and "name" not in inputs[0]:
            spec = inputs[0]["tensor-spec"]
            return cls(tensor=TensorSpec(spec["dtype"], tuple(spec["shape"])),
                       has_params=has_params)
        if inputs and all("name" in c and c.get("type") != "tensor" for c in inputs):
            return cls(columns=[ColumnSpec(c["name"], c["type"], c.get("required", True))
                                for c in inputs], has_params=has_params)
        return cls(has_params=has_params)

    def fast_path_applies(self) -> bool:
        """Whether rows can go straight into a float matrix (and params need no schema)."""
        if self.has_params:
            return False
        if self.columns is not None:
            return all(c.type in _NUMERIC and c.required for c in self.columns)
        return (self.tensor is not None and self.tensor.dtype in _FLOAT_TENSORS
                and len(self.tensor.shape) == 2 and self.tensor.shape[0] == -1
                and self.tensor.shape[1] > 0)


class ServedModel:
    """The model being served: its signature, the fast path or the pyfunc model, and drift.

    Args:
        info: What is served.
        signature: The input signature.
        fast_predict: The estimator's predict function, for the fast path.
        pyfunc_model: The pyfunc model, for everything else.
        drift: The drift monitor, when the model's run has a training-data profile.
    """

    def __init__(self, info: ModelInfo, signature: Signature, *,
                 fast_predict: Callable[[Any], Any] | None = None, pyfunc_model: Any = None,
                 drift: DriftMonitor | None = None) -> None:
        if (fast_predict is None) == (pyfunc_model is None):
            raise ValueError("Only one of `fast_predict` or `pyfunc_model` can be provided.")
        self.info = info
        self.signature = signature
        self.columns = signature.columns
        self.fast_predict = fast_predict
        self.model = pyfunc_model
        self.drift = drift
        self._params_warned = False
        # Columns of the validated rows that feed the drift monitor's numeric matrix.
        self._drift_index: list[int] | None = None
        if drift is not None and self.columns is not None and not drift.categorical_features:
            names = [c.name for c in self.columns]
            if set(drift.numeric_features) <= set(names):
                self._drift_index = [names.index(f) for f in drift.numeric_features]

    def predict(self, parsed: Parsed) -> Any:
        """Predictions for a parsed request (validated against the signature when there is one)."""
        if not parsed.rows:
            raise PayloadError(400, "the request has no rows")
        if self.fast_predict is not None:
            return self._fast(parsed)
        if self.columns is None:
            return self._pyfunc_predict(_general_input(parsed), parsed.params)
        import pandas as pd

        names, rows = validate_columns(parsed, self.columns)
        frame = pd.DataFrame(rows, columns=names)
        if self.drift is not None:
            self.drift.observe_columns(frame)
        return self._pyfunc_predict(frame, parsed.params)

    def _fast(self, parsed: Parsed) -> Any:
        assert self.fast_predict is not None
        if parsed.params and not self._params_warned:
            # What pyfunc does for a signature without a params schema.
            log.warning("ignoring request params %s: the model's signature defines no params "
                        "schema", sorted(parsed.params))
            self._params_warned = True
        if self.columns is not None:
            matrix = numeric_matrix(validate_columns(parsed, self.columns)[1])
            if self._drift_index is not None and self.drift is not None:
                self.drift.observe_matrix(matrix[:, self._drift_index])
        else:
            assert self.signature.tensor is not None
            matrix = tensor_matrix(parsed, self.signature.tensor)
        with warnings.catch_warnings():
            # Fitted on a DataFrame, the estimator notes that a matrix has no feature names;
            # the columns were just checked to be the fitted ones, in order.
            warnings.simplefilter("ignore", UserWarning)
            return self.fast_predict(matrix)

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


def load_drift_monitor(run_id: str | None, window: int) -> DriftMonitor | None:
    """The drift monitor for the run's training-data profile, if the run logged one."""
    if run_id is None:
        return None
    try:
        rest = RestRegistry.from_env()
        path = (rest.download_run_file(run_id, PROFILE_ARTIFACT_PATH, scratch_dir())
                if rest is not None else None)
        if path is None:
            import mlflow.artifacts

            path = Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PROFILE_ARTIFACT_PATH))
    except Exception as err:  # no profile means no drift gauges, not a failure
        log.info("no drift profile on run %s (%s): drift gauges disabled", run_id,
                 type(err).__name__)
        return None
    return DriftMonitor(load_profile(path.read_bytes()), window=window)


# --------------------------------------------------------------------------- loading


def _sklearn_estimator(path: Path, mlmodel: dict[str, Any]) -> Any | None:
    """The estimator, deserialized as ``mlflow.sklearn`` does it; None when the model is not a
    plain scikit-learn model (custom code, another flavor)."""
    flavors = mlmodel.get("flavors") or {}
    pyfunc_conf, conf = flavors.get("python_function") or {}, flavors.get("sklearn")
    if (conf is None or pyfunc_conf.get("loader_module") != "mlflow.sklearn"
            or conf.get("code") or pyfunc_conf.get("code")):
        return None
    if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").lower() not in (
            "true", "1"):
        raise ModelLoadError("deserializing this model is disallowed because "
                             "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is not 'true'")
    model_file = path / pyfunc_conf.get("model_path", conf.get("pickled_model", "model.pkl"))
    fmt = conf.get("serialization_format", "pickle")
    if fmt == "skops":
        import skops.io

        return skops.io.load(model_file, trusted=conf.get("skops_trusted_types"))
    with open(model_file, "rb") as f:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(f)
        if fmt == "pickle":
            return pickle.load(f)  # what mlflow.sklearn does, behind the same gate
    return None


def open_model(path: Path, info: ModelInfo, drift_window: int) -> ServedModel:
    """Load a fetched model directory: the fast path when it applies, pyfunc otherwise.

    Raises:
        ModelLoadError: the model cannot be deserialized or loaded.
    """
    try:
        return _open(path, info, drift_window)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"cannot load the model in {path} ({info.uri}): {err}") from err


def _open(path: Path, info: ModelInfo, drift_window: int) -> ServedModel:
    mlmodel = read_mlmodel(path)
    if info.run_id is None:
        info = ModelInfo(info.uri, info.name, info.version, info.alias, mlmodel.get("run_id"))
    signature = Signature.from_mlmodel(mlmodel)
    drift = load_drift_monitor(info.run_id, drift_window)
    if signature.fast_path_applies():
        estimator = _sklearn_estimator(path, mlmodel)
        names = getattr(estimator, "feature_names_in_", None)
        if estimator is not None and (
                names is None or signature.columns is None
                or list(names) == [c.name for c in signature.columns]):
            predict_fn = mlmodel["flavors"]["python_function"].get("predict_fn", "predict")
            return ServedModel(info, signature, fast_predict=getattr(estimator, predict_fn),
                               drift=drift)
    import mlflow.pyfunc

    return ServedModel(info, signature, pyfunc_model=mlflow.pyfunc.load_model(str(path)),
                       drift=drift)


def load_served_model(uri: str, *, attempts: int = 6, first_delay: float = 1.0,
                      max_delay: float = 30.0, drift_window: int = 1000) -> ServedModel:
    """Fetch (with retries, see `fetch_model`) and open the model.

    Raises:
        ModelLoadError: the model could not be fetched or opened.
    """
    path, info = fetch_model(uri, attempts=attempts, first_delay=first_delay,
                             max_delay=max_delay)
    return open_model(path, info, drift_window)
