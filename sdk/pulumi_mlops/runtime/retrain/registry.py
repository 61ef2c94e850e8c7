"""The retrain job's registry effects, all through MLflow: find what a run key registered
(`find_slot_version`), read an alias (`alias_version`), load and score the champion
(`evaluate_champion`, loading without running code from the registry: `load_model`), log the
run with its model and drift profile (`log_run`), register a version with its lineage tags
(`register`, `LINEAGE_TAGS`), and move the aliases (`promote`).

MLflow is imported where it is used, so that importing the job (``mlops retrain --help``, a
config error) does not pay for it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from pulumi_mlops.contracts.lineage import GATES_PASSED_TAG
from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.runtime.retrain.data import Dataset, Split, Task
from pulumi_mlops.runtime.retrain.train import evaluate
from pulumi_mlops.runtime.sklearn_model import ModelRefused, load_sklearn_estimator

__all__ = [
    "COMPARED_TAG",
    "CONFIG_TAG",
    "LINEAGE_TAGS",
    "NO_CHAMPION",
    "OUTCOME_TAG",
    "SLOT_TAG",
    "Champion",
    "ModelLoadError",
    "Promotion",
    "alias_version",
    "drift_profile",
    "evaluate_champion",
    "find_slot_version",
    "load_model",
    "load_sklearn_model",
    "log_run",
    "promote",
    "register",
    "trusted_types",
]

log = logging.getLogger("mlops.retrain")

SLOT_TAG: Final = "mlops.schedule_slot"
"""Model-version tag holding the run's idempotency key (set only when the run has one)."""
CONFIG_TAG: Final = "mlops.config_sha256"
"""Model-version tag holding `config_digest` of the config the version was trained from."""
OUTCOME_TAG: Final = "mlops.outcome"
"""Model-version tag holding ``promoted`` or ``not_promoted``, set once the aliases moved (what
a retry of the run's key reports)."""
COMPARED_TAG: Final = "mlops.champion_version"
"""Model-version tag holding the champion version the gates compared with (`NO_CHAMPION` when
there was none)."""
NO_CHAMPION: Final = "none"
"""What `COMPARED_TAG` holds, and `promote` compares with, when there was no champion."""

LINEAGE_TAGS: Final = (
    "mlops.dataset.uri", "mlops.dataset.sha256", "mlops.dataset.rows", "mlops.params",
    "mlops.metrics", "mlops.code_version", "mlops.image_digest", SLOT_TAG, CONFIG_TAG,
    GATES_PASSED_TAG, COMPARED_TAG, "mlops.run_id",
)
"""Tags set on every registered version (``mlops.outcome`` is added once the aliases moved;
``mlops.schedule_slot`` only when the run has a key)."""

_MODEL_ARTIFACT: Final = "model"


class ModelLoadError(ValueError):
    """A registered model cannot be loaded without running code from the registry."""


@dataclass(frozen=True)
class Champion:
    """The current holder of ``promote_alias`` and its holdout metrics."""

    version: str
    metrics: dict[str, float]


def find_slot_version(name: str, slot: str) -> Any | None:
    """The version of ``name`` registered for ``slot``, if any (the newest)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient().search_model_versions(
            f"name = '{name}' and tags.`{SLOT_TAG}` = '{slot}'")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    found = [v for v in found if (v.tags or {}).get(SLOT_TAG) == slot]
    return max(found, key=lambda v: int(v.version)) if found else None


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        model = MlflowClient().get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    aliases = model.aliases or {}
    version = aliases.get(alias)
    return None if version is None else str(version)


_OPT_IN = ("set `allow_pickle=True` on RetrainSchedule (MLFLOW_ALLOW_PICKLE_DESERIALIZATION="
           "true) only if everyone who can register versions of this model is trusted")


def load_sklearn_model(path: Path) -> Any:
    """Deserialize the scikit-learn model in the MLflow model directory ``path`` without
    running code from the registry (`pulumi_mlops.runtime.sklearn_model`): MLflow's own loader
    refuses every scikit-learn model, skops included, while
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false, as RetrainSchedule renders it.

    Raises:
        ModelLoadError: not a plain scikit-learn model, a pickle without the opt-in, a skops
            file needing a type outside scikit-learn, or a model file outside ``path``.
    """
    mlmodel = yaml.safe_load((path / "MLmodel").read_text()) or {}
    try:
        estimator = load_sklearn_estimator(path, mlmodel, _OPT_IN)
    except ModelRefused as err:
        raise ModelLoadError(str(err)) from None
    if estimator is None:
        raise ModelLoadError("the champion is not a plain scikit-learn model (its MLmodel has "
                             "no scikit-learn flavor in a format MLflow knows)")
    return estimator


def load_model(model_uri: str) -> Any:
    """Download ``model_uri`` (``models:/name/version``) to scratch and `load_sklearn_model`.

    Raises:
        ModelLoadError: see `load_sklearn_model`.
    """
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="mlops-champion-") as scratch:
        return load_sklearn_model(Path(download_artifacts(artifact_uri=model_uri,
                                                          dst_path=scratch)))


def evaluate_champion(config: RetrainConfig, data: Split, task: Task) -> Champion | None:
    """Score the holder of ``promote_alias`` on the holdout; None when there is none.

    The version read here is the one `promote` compares ``promote_alias`` with before moving it.
    """
    version = alias_version(config.model_name, config.promote_alias)
    if version is None:
        return None
    model = load_model(f"models:/{config.model_name}/{version}")
    return Champion(version, evaluate(model, data.x_holdout, data.y_holdout, task))


def trusted_types(model: Any) -> list[str]:
    """The types ``model`` is made of that skops does not trust by default (sorted), e.g.
    ``sklearn.tree._tree.Tree`` for tree ensembles: what loading it needs to trust, and no more.

    The job trusts them because it made them: they come from serializing the model it has just
    trained, never from a file someone else wrote.
    """
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_run(config: RetrainConfig, dataset: Dataset, data: Split, model: Any,
            params: Mapping[str, Any], metrics: Mapping[str, float], key: str | None,
            task: Task, digest: str) -> tuple[str, str]:
    """Log params, metrics, the model (signature, input example) and the drift profile in one
    MLflow run. Returns the run id and the logged model's URI.

    The drift profile describes the training rows' features and, under
    ``__prediction__``, the model's predictions of the holdout rows (`drift_profile`).

    The model is saved with skops (never pickle), recording `trusted_types` in its MLmodel
    file (``skops_trusted_types`` of the ``sklearn`` flavor), which every loader reads.
    """
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH

    # Before the run: a dataset the profile refuses (a column named `__prediction__`) leaves
    # no half-logged run behind.
    profile = drift_profile(model, data)
    mlflow.set_experiment(config.experiment_name())
    example = data.x_train.head(5)
    signature = infer_signature(example, model.predict(example))
    tags = {"mlops.dataset.uri": dataset.uri, "mlops.dataset.sha256": dataset.sha256,
            "mlops.dataset.rows": str(dataset.rows), CONFIG_TAG: digest}
    if key is not None:
        tags[SLOT_TAG] = key
    all_params = {**{k: _param(v) for k, v in params.items()}, "mlops.task": task,
                  "mlops.seed": str(config.seed),
                  "mlops.holdout_fraction": str(config.holdout_fraction)}
    with mlflow.start_run(run_name=f"{config.model_name}-{key or 'manual'}",
                          tags=tags) as active:
        run_id = str(active.info.run_id)
        info = mlflow.sklearn.log_model(
            model, name=_MODEL_ARTIFACT, signature=signature, input_example=example,
            registered_model_name=None, serialization_format="skops",
            skops_trusted_types=trusted_types(model),
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
        # Every registry request costs an authentication: params and metrics go in one batch,
        # after the model (logged before it, each metric's history is fetched to link it).
        stamp = int(time.time() * 1000)
        MlflowClient().log_batch(
            run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in all_params.items()])
        mlflow.log_dict(profile, PROFILE_ARTIFACT_PATH)
        return run_id, str(info.model_uri)


def drift_profile(model: Any, data: Split) -> dict[str, Any]:
    """The drift profile the model server monitors ``model`` against: the distributions of
    the training rows' features, and of the model's predictions of the holdout rows.

    The holdout rather than the training rows for the predictions: the model was fitted to
    the training rows, so its predictions of them are better than of any other (a deep tree or
    a nearest-neighbours model reproduces their labels), while the holdout rows are rows it
    has not seen, as are the rows it will serve; it is also the sample the gates judged the
    model on. Predictions that are not one value or class per row are left out of the profile
    (`~pulumi_mlops.runtime.drift.profile.build_profile`), as the server monitors none then.

    Raises:
        ValueError: The training frame cannot be profiled (see `build_profile`), e.g. it has a
            column named ``__prediction__``.
    """
    from pulumi_mlops.runtime.drift.prediction import PREDICTION_FEATURE
    from pulumi_mlops.runtime.drift.profile import build_profile

    profile = build_profile(data.x_train, predictions=model.predict(data.x_holdout))
    if PREDICTION_FEATURE not in profile["features"]:
        log.info("stage=log_run the model's predictions are not one value or class per row: "
                 "the drift profile has no `%s`", PREDICTION_FEATURE)
    return profile


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def register(config: RetrainConfig, model_uri: str, tags: Mapping[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``model_name`` with ``tags``; its number."""
    import mlflow

    version = mlflow.register_model(model_uri, config.model_name, tags=dict(tags))
    return str(version.version)


@dataclass(frozen=True)
class Promotion:
    """What `promote` did.

    Attributes:
        promoted: Whether ``promote_alias`` moved to the version (and was still there after).
        lost_to: When the gates passed but ``promote_alias`` had moved away from the champion
            the run compared with (a concurrent run promoted first): the version holding it
            now (``none`` if it was removed). None otherwise.
    """

    promoted: bool
    lost_to: str | None = None


def promote(config: RetrainConfig, version: str, promoted: bool,
            compared: str = NO_CHAMPION) -> Promotion:
    """Set ``challenger_alias`` on ``version``, and move ``promote_alias`` to it when
    ``promoted`` and ``promote_alias`` still points at ``compared`` (the champion the gates
    compared with, or ``none``); then record the outcome tag (what a retry of the slot reports).

    The move is a compare-and-set as close as MLflow allows: its registry has no conditional
    update, so the alias is re-read just before it is set, and read again after to check that
    the version set is still there. What is left is the window between that re-read and the
    set (one registry round trip): two runs that both re-read the old champion inside it both
    set the alias, and the later set wins. The earlier one then sees another version on its
    check and reports that it lost, unless its check also ran before the later set; then both
    report promoted and the alias holds the later one, a version that passed its gates against
    the same champion. Runs of one schedule never overlap (``concurrencyPolicy: Forbid``, one
    scheduler), so this takes two schedules of one model or a run by hand.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(config.model_name, config.challenger_alias, version)
    result = Promotion(False)
    if promoted:
        current = alias_version(config.model_name, config.promote_alias) or NO_CHAMPION
        if current == compared:
            client.set_registered_model_alias(config.model_name, config.promote_alias, version)
            current = alias_version(config.model_name, config.promote_alias) or NO_CHAMPION
        result = (Promotion(True) if current == version
                  else Promotion(False, lost_to=current))
    if result.lost_to is not None:
        log.warning("stage=promote lost: `%s` moved from %s to %s while this run ran (a "
                    "concurrent run promoted first); version %s is not promoted",
                    config.promote_alias, compared, result.lost_to, version)
    client.set_model_version_tag(config.model_name, version, OUTCOME_TAG,
                                 "promoted" if result.promoted else "not_promoted")
    return result
