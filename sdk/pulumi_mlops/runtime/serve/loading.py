"""Load the served model (with bounded retries) and the drift monitor of its run.

Loading: a ``models:/`` URI against an HTTP(S) tracking server that proxies artifacts is
fetched with a small REST client (`fetch`, with `pulumi_mlops.runtime.mlflow_rest`), and a
scikit-learn model that qualifies for the fast path is deserialized directly, exactly as
``mlflow.sklearn`` does it; neither imports mlflow, which keeps the cold start short.
Everything else (other URIs and stores, other flavors) goes through mlflow's client and
``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulumi_mlops.runtime._text import one_line
from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, DriftMonitor, load_profile
from pulumi_mlops.runtime.mlflow_rest import RestRegistry
from pulumi_mlops.runtime.serve.fetch import (
    DEFAULT_FETCH_DEADLINE_SECONDS,
    DEFAULT_MAX_MODEL_BYTES,
    FetchBudget,
    FetchLimitError,
    ModelInfo,
    ModelLoadError,
    fetch_model,
    read_mlmodel,
    scratch_dir,
)
from pulumi_mlops.runtime.serve.model import ServedModel, Signature
from pulumi_mlops.runtime.sklearn_model import (
    ModelRefused,
    load_sklearn_estimator,
    pickle_allowed,
)

__all__ = ["load_drift_monitor", "load_served_model", "open_model"]

log = logging.getLogger("mlops.serve")


def load_drift_monitor(run_id: str | None, window: int, *,
                       max_profile_bytes: int = 64 * 2**20,
                       profile_deadline_seconds: float = 60.0) -> DriftMonitor | None:
    """The drift monitor for the run's training-data profile, if the run logged one.

    Drift gauges are not worth an outage: a profile that cannot be fetched, or is corrupt
    (not JSON, another format, too large), disables them with one log line and serving goes on.

    Args:
        run_id: The run that logged the model.
        window: Recent input rows the drift gauges describe.
        max_profile_bytes: Largest profile read (profiles are kilobytes). Default: 64 MiB.
        profile_deadline_seconds: Seconds fetching the profile may take. Default: 60.
    """
    if run_id is None:
        return None
    budget = FetchBudget(max_profile_bytes, profile_deadline_seconds,
                         options=("`max_profile_bytes`", "`profile_deadline_seconds`"))
    try:
        with budget:
            rest = RestRegistry.from_env(budget=budget)
            path = (rest.download_run_file(run_id, PROFILE_ARTIFACT_PATH, scratch_dir())
                    if rest is not None else None)
        if path is None:
            import mlflow.artifacts

            path = Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PROFILE_ARTIFACT_PATH))
    except FetchLimitError as err:
        log.warning("drift profile of run %s not loaded, drift gauges disabled: %s", run_id,
                    err)
        return None
    except Exception as err:  # no profile means no drift gauges, not a failure
        log.info("no drift profile on run %s (%s): drift gauges disabled", run_id,
                 type(err).__name__)
        return None
    try:
        if path.stat().st_size > max_profile_bytes:  # mlflow's download is not capped
            raise ValueError(f"larger than `max_profile_bytes` ({max_profile_bytes})")
        profile = load_profile(path.read_bytes())
    except Exception as err:
        log.warning("drift profile of run %s is unusable, drift gauges disabled: %s: %s",
                    run_id, type(err).__name__, one_line(err, 500))
        return None
    return DriftMonitor(profile, window=window)


# --------------------------------------------------------------------------- loading


_OPT_IN = ("set `allow_pickle=True` on the ModelService (MLFLOW_ALLOW_PICKLE_DESERIALIZATION="
           "true) only if everyone who can register versions of this model is trusted")


def _sklearn_estimator(path: Path, mlmodel: dict[str, Any]) -> Any | None:
    """`load_sklearn_estimator`, failing as a load error."""
    try:
        return load_sklearn_estimator(path, mlmodel, _OPT_IN)
    except ModelRefused as err:
        raise ModelLoadError(str(err)) from None


def _sklearn_pyfunc(path: Path, estimator: Any) -> Any:
    """What ``mlflow.pyfunc.load_model`` makes of a scikit-learn model, around an estimator
    `_sklearn_estimator` loaded: MLflow's own loader refuses every format, skops included,
    while ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false."""
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel
    from mlflow.sklearn import _SklearnModelWrapper

    meta = Model.load(str(path / "MLmodel"))
    return PyFuncModel(model_meta=meta, model_impl=_SklearnModelWrapper(estimator),
                       predict_fn=meta.flavors["python_function"].get("predict_fn", "predict"),
                       model_id=meta.model_id)


def _refuse_model_code(mlmodel: dict[str, Any]) -> None:
    """Refuse a model that brings code to run as it loads, while
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false: MLflow gates deserializing behind that
    variable, yet imports whatever loader module, code paths and models-from-code file the
    MLmodel names.

    Raises:
        ModelLoadError: the model brings code.
    """
    flavors = mlmodel.get("flavors") or {}
    pyfunc_conf = flavors.get("python_function")
    loader = str(pyfunc_conf.get("loader_module", "")) if isinstance(pyfunc_conf, dict) else ""
    if isinstance(pyfunc_conf, dict) and not loader.startswith("mlflow."):
        raise ModelLoadError(f"refusing to load a model whose loader module {loader[:120]!r} is "
                             f"not MLflow's: importing it runs the model's choice of code; "
                             f"{_OPT_IN}")
    if any(isinstance(conf, dict) and (conf.get("code") or conf.get("model_code_path"))
           for conf in flavors.values()):
        raise ModelLoadError("refusing to load a model that brings code (code paths or a "
                             f"models-from-code file), which runs as it loads; {_OPT_IN}")


def open_model(path: Path, info: ModelInfo, drift_window: int,
               coerce: str = "strict") -> ServedModel:
    """Load a fetched model directory: the fast path when it applies, pyfunc always (in the
    background when there is a fast path).

    Raises:
        ModelLoadError: the model cannot be deserialized or loaded.
    """
    try:
        return _open(path, info, drift_window, coerce)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"cannot load the model in {path} ({info.uri}): {err}") from err


def _needs_a_frame(estimator: Any) -> bool:
    """Whether the estimator (or a step inside it) selects or transforms columns by name, so
    that a matrix is not the same input as the frame pyfunc passes."""
    seen = [estimator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            seen += list(estimator.get_params(deep=True).values())
        except Exception:
            return True
    return any(type(obj).__name__ in ("ColumnTransformer", "FunctionTransformer")
               or getattr(obj, "_sklearn_output_config", None) for obj in seen)


def _pyfunc_loader(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        import mlflow.pyfunc

        if not pickle_allowed():
            mlmodel = read_mlmodel(path)
            _refuse_model_code(mlmodel)
            estimator = _sklearn_estimator(path, mlmodel)
            if estimator is not None:
                return _sklearn_pyfunc(path, estimator)
        return mlflow.pyfunc.load_model(str(path))

    return load


def _open(path: Path, info: ModelInfo, drift_window: int, coerce: str) -> ServedModel:
    mlmodel = read_mlmodel(path)
    if info.run_id is None:
        info = ModelInfo(info.uri, info.name, info.version, info.alias, mlmodel.get("run_id"))
    signature = Signature.from_mlmodel(mlmodel)
    drift = load_drift_monitor(info.run_id, drift_window)
    spec = signature.fast_spec()
    if spec is not None:
        estimator = _sklearn_estimator(path, mlmodel)
        names = getattr(estimator, "feature_names_in_", None)
        if estimator is not None and not _needs_a_frame(estimator) and (
                names is None or spec.names is None or tuple(names) == spec.names):
            predict_fn = mlmodel["flavors"]["python_function"].get("predict_fn", "predict")
            return ServedModel(info, signature, fast_predict=getattr(estimator, predict_fn),
                               pyfunc_loader=_pyfunc_loader(path), drift=drift,
                               coerce=coerce, mlmodel=mlmodel)
    return ServedModel(info, signature, pyfunc_model=_pyfunc_loader(path)(), drift=drift,
                       coerce=coerce, mlmodel=mlmodel)


def load_served_model(uri: str, *, attempts: int = 6, first_delay: float = 1.0,
                      max_delay: float = 30.0, drift_window: int = 1000,
                      coerce: str = "strict", max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                      fetch_deadline_seconds: float = DEFAULT_FETCH_DEADLINE_SECONDS,
                      ) -> ServedModel:
    """Fetch (with retries and bounds, see `fetch_model` for ``attempts`` to
    ``fetch_deadline_seconds``) and open the model.

    Raises:
        ModelLoadError: the model could not be fetched or opened.
    """
    path, info = fetch_model(uri, attempts=attempts, first_delay=first_delay,
                             max_delay=max_delay, max_model_bytes=max_model_bytes,
                             fetch_deadline_seconds=fetch_deadline_seconds)
    return open_model(path, info, drift_window, coerce)
