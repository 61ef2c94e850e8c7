"""Deserialize the scikit-learn model of an MLflow model directory without running code that
came from the registry: what `mlops serve` (its fast path, and its general path while pickle
is off) and `mlops retrain` (the champion it scores) both load.

Why not ``mlflow.sklearn.load_model``: MLflow gates pickle and cloudpickle files behind
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``, and with the variable false it refuses skops files too,
because skops constructs the types the model's own MLmodel lists as trusted, so a crafted model
could trust a function that runs code. The components render the variable false by default;
this loader then still loads skops files, trusting only those listed types that are classes
scikit-learn defines (outside its tests): what a model trained by ``mlops retrain`` is made
of, and nothing that runs code of the model's choosing. With the variable true (the opt-in,
or unset, as MLflow reads it) it loads as MLflow does.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ModelRefused", "is_sklearn_class", "load_sklearn_estimator", "pickle_allowed"]

PICKLE_VARIABLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


class ModelRefused(Exception):
    """The model cannot be loaded without running code from the registry (or is malformed)."""


def pickle_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` as MLflow reads it (unset: true)."""
    return environ.get(PICKLE_VARIABLE, "true").strip().lower() in ("true", "1")


def is_sklearn_class(name: str) -> bool:
    """Whether ``name`` (``module.Class``, as skops names a type) is a class scikit-learn
    defines outside its tests. Only scikit-learn's own modules are imported to find out."""
    module, _, attr = name.rpartition(".")
    parts = module.split(".")
    # Test helpers are no part of a model, and some exist to do odd things when built.
    if parts[0] != "sklearn" or {"tests", "conftest", "_testing"} & set(parts):
        return False
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    # A class defined elsewhere and imported into a scikit-learn module is not one of its own.
    return isinstance(found, type) and found.__module__.split(".")[0] == "sklearn"


def load_sklearn_estimator(path: Path, mlmodel: Mapping[str, Any], opt_in: str) -> Any | None:
    """The estimator of the MLflow model in ``path``, deserialized as ``mlflow.sklearn`` does
    it but within the rules above; None when the model is not a plain scikit-learn model
    (custom code, another flavor, a format MLflow does not know).

    Args:
        path: The model directory.
        mlmodel: Its MLmodel document.
        opt_in: How the user allows pickle for this workload (ends the refusal's message).

    Raises:
        ModelRefused: the model needs ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` true, or its file
            lies outside ``path``.
    """
    flavors = mlmodel.get("flavors") or {}
    pyfunc_conf, conf = flavors.get("python_function") or {}, flavors.get("sklearn")
    if (not isinstance(conf, dict) or pyfunc_conf.get("loader_module") != "mlflow.sklearn"
            or conf.get("code") or pyfunc_conf.get("code")):
        return None
    name = str(pyfunc_conf.get("model_path", conf.get("pickled_model", "model.pkl")))
    model_file = (path / name).resolve()
    if not model_file.is_relative_to(path.resolve()):
        raise ModelRefused(f"the model's file {name[:120]!r} lies outside its directory")
    fmt = conf.get("serialization_format", "pickle")
    if fmt == "skops":
        import skops.io

        recorded = conf.get("skops_trusted_types")
        trusted = recorded if pickle_allowed() else _skops_trusted(model_file, recorded, opt_in)
        return skops.io.load(model_file, trusted=trusted)
    if fmt not in ("pickle", "cloudpickle"):
        return None  # MLflow's loader names the formats it knows
    if not pickle_allowed():
        raise ModelRefused(f"refusing to load a {fmt}-format model: unpickling runs any code "
                           f"the file holds; save it with skops, or {opt_in}")
    with open(model_file, "rb") as f:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(f)
        return pickle.load(f)  # what mlflow.sklearn does, behind the same gate


def _skops_trusted(model_file: Path, recorded: Any, opt_in: str) -> list[str]:
    """The types skops may construct from ``model_file`` beyond its defaults: those the MLmodel
    lists (``recorded``, as MLflow requires) that are scikit-learn classes.

    Raises:
        ModelRefused: the file needs another type.
    """
    import skops.io

    listed = ({t for t in recorded if isinstance(t, str)} if isinstance(recorded, list)
              else set())
    needed: list[str] = list(skops.io.get_untrusted_types(file=model_file))
    refused = [t for t in needed if t not in listed or not is_sklearn_class(t)]
    if refused:
        # The names come from the file: quoted and cut, so that they cannot forge log lines.
        names = ", ".join(repr(t[:120]) for t in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        raise ModelRefused(f"refusing to load a skops-format model that trusts {names}{more}: "
                           f"only scikit-learn classes are trusted; {opt_in}")
    return needed
