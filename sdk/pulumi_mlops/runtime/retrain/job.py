"""The retrain job: ``mlops retrain --config FILE``.

Stages, each logged as one line with its duration (logger ``mlops.retrain``):

1. ``load_dataset``: read the data (``sklearn:<name>``, a CSV or Parquet path or URL), record
   its URI, content sha256 and row count.
2. ``split``: deterministic train/holdout split (seeded; stratified for classification).
3. ``train``: fit the configured estimator (optionally with a randomized search) or call the
   configured trainer.
4. ``evaluate``: score the holdout with the task's metrics (classification: accuracy, f1,
   roc_auc, log_loss; regression: rmse, mae, r2).
5. ``log_run``: one MLflow run with params, metrics, the model (with a signature) and the
   training-data drift profile at `~pulumi_mlops.runtime.drift.PROFILE_ARTIFACT_PATH`.
6. ``champion``: load the holder of ``promote_alias`` and score it on the same holdout.
7. ``gates``: `apply_gates` (absolute minimums/maximums, least improvement over the champion,
   largest regression).
8. ``register``: a new model version with lineage tags (see `LINEAGE_TAGS`).
9. ``promote``: set ``challenger_alias`` on the new version, and move ``promote_alias`` to it
   only if every gate passed.

No alias is touched before stage 9, so a failure anywhere (data missing or malformed, training
or evaluation raising, the registry unreachable) leaves every alias where it was.

Exit codes
----------
- `EXIT_PROMOTED` (0): registered and promoted (or a retry of a slot that was).
- `EXIT_FAILED` (1): a stage failed; no alias was moved.
- `EXIT_BAD_CONFIG` (2): the config file is missing, not JSON, or invalid.
- `EXIT_NOT_PROMOTED` (10): registered as challenger, but a gate failed (or a retry of a slot
  that was not promoted).

Idempotency
-----------
Each run belongs to a schedule slot: ``MLOPS_SCHEDULE_SLOT`` if set, else the most recent time
of ``schedule`` (cron, UTC) at or before now, else today's date. A version registered for a
slot carries ``mlops.schedule_slot``; a retried run for the same slot finds it, registers
nothing, and exits with the recorded outcome. If the earlier attempt died after registering
but before moving the aliases, the retry finishes the alias moves as long as the champion it
was compared with still holds ``promote_alias``; otherwise it fails without moving anything.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import json
import logging
import math
import os
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import pydantic

from pulumi_mlops.runtime.retrain.config import Gates, RetrainConfig
from pulumi_mlops.runtime.scheduler import latest_slot, parse_cron, slot_id

__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_FAILED",
    "EXIT_NOT_PROMOTED",
    "EXIT_PROMOTED",
    "HIGHER_IS_BETTER",
    "LINEAGE_TAGS",
    "SLOT_TAG",
    "Champion",
    "ConfigFileError",
    "Dataset",
    "DatasetError",
    "GateResult",
    "Split",
    "StageError",
    "alias_version",
    "apply_gates",
    "evaluate",
    "evaluate_champion",
    "find_slot_version",
    "infer_task",
    "load_config",
    "load_dataset",
    "log_run",
    "promote",
    "register",
    "run",
    "schedule_slot",
    "split",
    "train",
]

log = logging.getLogger("mlops.retrain")

EXIT_PROMOTED: Final = 0
"""Registered and promoted."""
EXIT_FAILED: Final = 1
"""A stage failed; no alias moved."""
EXIT_BAD_CONFIG: Final = 2
"""The config file is missing, unreadable or invalid."""
EXIT_NOT_PROMOTED: Final = 10
"""Registered as challenger; a gate failed, so ``promote_alias`` did not move."""

SLOT_TAG: Final = "mlops.schedule_slot"
"""Model-version tag holding the schedule slot (the idempotency key)."""
_OUTCOME_TAG: Final = "mlops.outcome"
_COMPARED_TAG: Final = "mlops.champion_version"
_NO_CHAMPION: Final = "none"

LINEAGE_TAGS: Final = (
    "mlops.dataset.uri", "mlops.dataset.sha256", "mlops.dataset.rows", "mlops.params",
    "mlops.metrics", "mlops.code_version", "mlops.image_digest", SLOT_TAG,
    "mlops.gates_passed", _COMPARED_TAG, "mlops.run_id",
)
"""Tags set on every registered version (``mlops.outcome`` is added once the aliases moved)."""

HIGHER_IS_BETTER: Final[Mapping[str, bool]] = {
    "accuracy": True, "f1": True, "roc_auc": True, "log_loss": False,
    "rmse": False, "mae": False, "r2": True,
}
"""Direction of each metric the job computes."""

Task = Literal["classification", "regression"]
_MODEL_ARTIFACT: Final = "model"
_MAX_CLASSES_FOR_AUTO: Final = 20


class ConfigFileError(ValueError):
    """The config file is missing, not JSON, or breaks a rule; the message names the field."""


class DatasetError(ValueError):
    """The dataset is missing, unreadable or unusable."""


class StageError(RuntimeError):
    """A stage failed.

    Attributes:
        stage: The stage's name.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage `{stage}` failed: {type(cause).__name__}: {cause}")
        self.stage = stage


# --------------------------------------------------------------------------- config


def load_config(path: str | os.PathLike[str]) -> RetrainConfig:
    """Read and validate a ``mlops-retrain/v1`` config file.

    Raises:
        ConfigFileError: the file cannot be read, is not JSON, or is invalid; the message names
            each offending field (``gates.min.roc_auc``) and the rule.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigFileError(f"cannot read config file {str(path)!r}: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigFileError(f"config file {str(path)!r} is not JSON: {err}") from err
    try:
        config = RetrainConfig.model_validate(data)
    except pydantic.ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(document)"
            lines.append(f"`{field}`: {e['msg']} (got {e.get('input')!r})"
                         if e["loc"] else f"{e['msg']}")
        raise ConfigFileError(f"invalid config file {str(path)!r}:\n  " + "\n  ".join(lines)
                              ) from err
    if config.schedule is not None:
        try:
            parse_cron(config.schedule)
        except ValueError as err:
            raise ConfigFileError(f"invalid config file {str(path)!r}:\n  `schedule`: {err}"
                                  ) from None
    return config


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset and its lineage.

    Attributes:
        uri: Where it came from, as configured.
        sha256: Hex sha256 of its content (file bytes; for ``sklearn:`` the frame as CSV).
        rows: Number of rows.
        x: Features.
        y: Label(s).
    """

    uri: str
    sha256: str
    rows: int
    x: pd.DataFrame
    y: pd.Series | pd.DataFrame


def _read_bytes(uri: str) -> bytes:
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=120) as response:
                return bytes(response.read())
        except OSError as err:
            raise DatasetError(f"cannot download dataset {uri!r}: {err}") from err
    path = Path(uri.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read dataset {uri!r}: {err.strerror or err}") from err


def load_dataset(uri: str, target_column: str | None = None) -> Dataset:
    """Load ``sklearn:<name>`` or a CSV/Parquet path or URL into features and labels.

    Raises:
        DatasetError: missing, unreadable or malformed data, no rows, a missing target column,
            or missing labels.
    """
    if uri.startswith("sklearn:"):
        from sklearn import datasets

        name = uri.removeprefix("sklearn:")
        loader = getattr(datasets, f"load_{name}", None)
        if loader is None:
            raise DatasetError(f"unknown scikit-learn dataset {name!r}")
        x, y = loader(return_X_y=True, as_frame=True)
        whole = pd.concat([x, y], axis=1)
        digest = hashlib.sha256(whole.to_csv(index=False).encode()).hexdigest()
        return Dataset(uri, digest, len(x), x, y)
    raw = _read_bytes(uri)
    digest = hashlib.sha256(raw).hexdigest()
    name = uri.split("?", 1)[0].lower()
    data = raw
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DatasetError(f"dataset {uri!r} is not valid gzip: {err}") from err
        name = name.removesuffix(".gz")
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as err:
        raise DatasetError(f"dataset {uri!r} is malformed: {type(err).__name__}: {err}"
                           ) from err
    if target_column is None or target_column not in frame.columns:
        raise DatasetError(f"dataset {uri!r} has no target column {target_column!r} "
                           f"(columns: {[str(c) for c in frame.columns]})")
    if frame.empty:
        raise DatasetError(f"dataset {uri!r} has no rows")
    y = frame[target_column]
    missing = int(y.isna().sum())
    if missing:
        raise DatasetError(f"dataset {uri!r}: target column {target_column!r} has {missing} "
                           "missing values")
    x = frame.drop(columns=[target_column])
    if x.shape[1] == 0:
        raise DatasetError(f"dataset {uri!r} has no feature columns")
    return Dataset(uri, digest, len(frame), x, y)


def infer_task(y: pd.Series | pd.DataFrame) -> Task:
    """``classification`` for bool, string or categorical labels, or integers with at most 20
    distinct values; ``regression`` otherwise."""
    if isinstance(y, pd.DataFrame):
        return "regression"
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification"
    if pd.api.types.is_integer_dtype(y) and y.nunique() <= _MAX_CLASSES_FOR_AUTO:
        return "classification"
    return "regression"


@dataclass(frozen=True)
class Split:
    """The train/holdout split."""

    x_train: pd.DataFrame
    x_holdout: pd.DataFrame
    y_train: Any
    y_holdout: Any


def split(dataset: Dataset, holdout_fraction: float, seed: int, task: Task) -> Split:
    """Seeded train/holdout split, stratified for classification when every class has at
    least two rows. The same data, fraction and seed always give the same split."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if task == "classification" and isinstance(dataset.y, pd.Series):
        counts = dataset.y.value_counts()
        if len(counts) > 1 and int(counts.min()) >= 2:
            stratify = dataset.y
    x_train, x_holdout, y_train, y_holdout = train_test_split(
        dataset.x, dataset.y, test_size=holdout_fraction, random_state=seed, stratify=stratify)
    if len(x_train) == 0 or len(x_holdout) == 0:
        raise DatasetError(f"{dataset.rows} rows are too few to split")
    return Split(x_train, x_holdout, y_train, y_holdout)


# --------------------------------------------------------------------------- train/evaluate


def _import(path: str) -> Any:
    module, _, attr = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), attr)


def train(config: RetrainConfig, x_train: pd.DataFrame, y_train: Any) -> tuple[Any, dict[str, Any]]:
    """Fit the configured estimator (with the search, if any) or call the trainer.

    Returns:
        The fitted model and the parameters it was trained with (the search's best merged in).
    """
    params = dict(config.params)
    if config.trainer is not None:
        model = _import(config.trainer)(x_train, y_train, params)
        return model, params
    assert config.estimator is not None
    cls = _import(config.estimator)
    init = dict(params)
    with contextlib.suppress(Exception):
        if "random_state" in cls().get_params() and "random_state" not in init:
            init["random_state"] = config.seed
    estimator = cls(**init)
    if not config.search:
        return estimator.fit(x_train, y_train), params
    from sklearn.model_selection import RandomizedSearchCV

    candidates = math.prod(len(v) for v in config.search.values())
    search = RandomizedSearchCV(estimator, config.search,
                                n_iter=min(config.search_iterations, candidates),
                                random_state=config.seed)
    search.fit(x_train, y_train)
    return search.best_estimator_, {**params, **search.best_params_}


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


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class GateResult:
    """One gate on one metric.

    Attributes:
        gate: ``min``, ``max``, ``min_improvement`` or ``max_regression``.
        metric: The metric.
        threshold: The configured value.
        value: The new version's metric (None when not computed).
        champion: The champion's metric (None when there is no champion or it lacks it).
        passed: Whether the gate passed.
        reason: One line: what was compared.
    """

    gate: str
    metric: str
    threshold: float
    value: float | None
    champion: float | None
    passed: bool
    reason: str


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def apply_gates(new_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None,
                gates: Gates) -> list[GateResult]:
    """Check the new version's metrics against every gate.

    A missing or non-finite metric fails its gate. Improvement and regression gates pass when
    there is no champion (``champion_metrics`` None); with a champion that lacks the metric they
    fail. For ``log_loss``, ``rmse`` and ``mae`` (lower is better) an improvement is a decrease.

    Returns:
        One result per configured (gate, metric), in the order min, max, min_improvement,
        max_regression and metric name.
    """
    results: list[GateResult] = []

    def add(gate: str, metric: str, threshold: float, check: Any) -> None:
        value = new_metrics.get(metric)
        champ = None if champion_metrics is None else champion_metrics.get(metric)
        if not _finite(value):
            results.append(GateResult(gate, metric, threshold, value, champ, False,
                                      f"{metric} was not computed (or is not finite)"))
            return
        assert value is not None
        passed, reason = check(value, champ)
        results.append(GateResult(gate, metric, threshold, value, champ, passed, reason))

    for metric, t in sorted(gates.min.items()):
        add("min", metric, t, lambda v, _c, t=t: (v >= t, f"{v:.4f} >= {t:g}"))
    for metric, t in sorted(gates.max.items()):
        add("max", metric, t, lambda v, _c, t=t: (v <= t, f"{v:.4f} <= {t:g}"))

    def relative(kind: str, metric: str, t: float) -> Any:
        sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0

        def check(v: float, c: float | None) -> tuple[bool, str]:
            if champion_metrics is None:
                return True, "no champion to compare with"
            if not _finite(c):
                return False, f"the champion's {metric} was not computed"
            assert c is not None
            improvement = sign * (v - c)
            if kind == "min_improvement":
                return improvement >= t, f"improvement {improvement:+.4f} >= {t:g}"
            return -improvement <= t, f"regression {-improvement:+.4f} <= {t:g}"

        return check

    for metric, t in sorted(gates.min_improvement.items()):
        add("min_improvement", metric, t, relative("min_improvement", metric, t))
    for metric, t in sorted(gates.max_regression.items()):
        add("max_regression", metric, t, relative("max_regression", metric, t))
    return results


# --------------------------------------------------------------------------- registry


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


def evaluate_champion(config: RetrainConfig, data: Split, task: Task) -> Champion | None:
    """Score the holder of ``promote_alias`` on the holdout; None when there is none."""
    import mlflow

    version = alias_version(config.model_name, config.promote_alias)
    if version is None:
        return None
    model = mlflow.sklearn.load_model(f"models:/{config.model_name}/{version}")
    return Champion(version, evaluate(model, data.x_holdout, data.y_holdout, task))


def log_run(config: RetrainConfig, dataset: Dataset, data: Split, model: Any,
            params: Mapping[str, Any], metrics: Mapping[str, float], slot: str,
            task: Task) -> tuple[str, str]:
    """Log params, metrics, the model (signature, input example) and the drift profile in one
    MLflow run. Returns the run id and the logged model's URI."""
    import mlflow
    from mlflow.models import infer_signature

    from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, build_profile

    mlflow.set_experiment(config.experiment_name())
    example = data.x_train.head(5)
    signature = infer_signature(example, model.predict(example))
    with mlflow.start_run(run_name=f"{config.model_name}-{slot}") as active:
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        mlflow.log_params({"mlops.task": task, "mlops.seed": config.seed,
                           "mlops.holdout_fraction": config.holdout_fraction})
        mlflow.set_tags({"mlops.dataset.uri": dataset.uri, "mlops.dataset.sha256": dataset.sha256,
                         "mlops.dataset.rows": str(dataset.rows), SLOT_TAG: slot})
        mlflow.log_metrics(dict(metrics))
        info = mlflow.sklearn.log_model(
            model, name=_MODEL_ARTIFACT, signature=signature, input_example=example,
            registered_model_name=None,
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
        mlflow.log_dict(build_profile(data.x_train), PROFILE_ARTIFACT_PATH)
        return str(active.info.run_id), str(info.model_uri)


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def register(config: RetrainConfig, model_uri: str, tags: Mapping[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``model_name`` with ``tags``; its number."""
    import mlflow

    version = mlflow.register_model(model_uri, config.model_name, tags=dict(tags))
    return str(version.version)


def promote(config: RetrainConfig, version: str, promoted: bool) -> None:
    """Set ``challenger_alias`` on ``version``, and ``promote_alias`` when ``promoted``; then
    record the outcome tag (what a retry of the slot reports)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(config.model_name, config.challenger_alias, version)
    if promoted:
        client.set_registered_model_alias(config.model_name, config.promote_alias, version)
    client.set_model_version_tag(config.model_name, version, _OUTCOME_TAG,
                                 "promoted" if promoted else "not_promoted")


# --------------------------------------------------------------------------- orchestration


def schedule_slot(schedule: str | None, now: datetime,
                  environ: Mapping[str, str] | None = None) -> str:
    """The run's schedule slot: ``MLOPS_SCHEDULE_SLOT``, else the latest cron time of
    ``schedule`` at or before ``now`` (UTC, ISO 8601), else ``now``'s date."""
    env = os.environ if environ is None else environ
    if env.get("MLOPS_SCHEDULE_SLOT"):
        return env["MLOPS_SCHEDULE_SLOT"]
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    if schedule:
        return slot_id(latest_slot(schedule, now))
    return now.date().isoformat()


@contextlib.contextmanager
def _stage(name: str, details: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    info: dict[str, Any] = {} if details is None else details
    started = time.perf_counter()
    try:
        yield info
    except Exception as err:
        took = time.perf_counter() - started
        log.error("stage=%s status=failed duration=%.2fs error=%s: %s", name, took,
                  type(err).__name__, err)
        raise StageError(name, err) from err
    took = time.perf_counter() - started
    extra = "".join(f" {k}={v}" for k, v in info.items())
    log.info("stage=%s status=ok duration=%.2fs%s", name, took, extra)


def _summary(config: RetrainConfig, version: str, champion: Champion | None,
             results: Sequence[GateResult], promoted: bool,
             metrics: Mapping[str, float]) -> str:
    head = (f"retrain {config.model_name}: version {version} registered as "
            f"`{config.challenger_alias}`; ")
    was = f"version {champion.version}" if champion else "none"
    if promoted:
        head += f"PROMOTED to `{config.promote_alias}` (previous: {was})"
    else:
        failed = [f"{r.gate}:{r.metric}" for r in results if not r.passed]
        head += (f"NOT promoted: gate(s) failed: {', '.join(failed)}; "
                 f"`{config.promote_alias}` stays {was}")
    lines = [head, f"  {'metric':<10} {'new':>9} {'champion':>9}"]
    for metric, value in sorted(metrics.items()):
        c = champion.metrics.get(metric) if champion else None
        lines.append(f"  {metric:<10} {value:>9.4f} {'-' if c is None else f'{c:.4f}':>9}")
    if results:
        lines.append(f"  {'gate':<16} {'metric':<10} {'result':<6} why")
        for r in results:
            lines.append(f"  {r.gate:<16} {r.metric:<10} {'pass' if r.passed else 'FAIL':<6} "
                         f"{r.reason}")
    else:
        lines.append("  no gates configured")
    return "\n".join(lines)


def _resume(config: RetrainConfig, existing: Any, slot: str) -> int:
    """A retry of a slot that already registered ``existing``: register nothing."""
    tags = dict(existing.tags or {})
    version = str(existing.version)
    outcome = tags.get(_OUTCOME_TAG)
    if outcome is not None:
        promoted = outcome == "promoted"
        print(f"retrain {config.model_name}: slot {slot} already ran: version {version} "
              f"was {'promoted' if promoted else 'not promoted'}; nothing registered")
        return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED
    # The earlier attempt registered but died before the aliases moved. Finish only when the
    # comparison it made still holds (the same champion).
    compared = tags.get(_COMPARED_TAG, _NO_CHAMPION)
    with _stage("resume", {"version": version}):
        current = alias_version(config.model_name, config.promote_alias) or _NO_CHAMPION
    if compared != current:
        log.error("slot %s registered version %s but did not finish, and `%s` moved since "
                  "(compared with %r, now %r); not moving any alias", slot, version,
                  config.promote_alias, compared, current)
        return EXIT_FAILED
    promoted = tags.get("mlops.gates_passed") == "true"
    with _stage("promote", {"version": version, "promoted": promoted}):
        promote(config, version, promoted)
    print(f"retrain {config.model_name}: slot {slot}: finished the alias moves for version "
          f"{version} ({'promoted' if promoted else 'not promoted'}); nothing registered")
    return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED


def run(config: RetrainConfig, *, now: datetime | None = None) -> int:
    """Run the job end to end; returns the exit code (see the module docstring).

    The registry comes from ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``; lineage from ``MLOPS_CODE_VERSION`` (or ``GIT_SHA``) and
    ``MLOPS_IMAGE_DIGEST``.
    """
    try:
        slot = schedule_slot(config.schedule, now or datetime.now(UTC))
        with _stage("idempotency", {"slot": slot}) as info:
            existing = find_slot_version(config.model_name, slot)
            info["existing_version"] = None if existing is None else existing.version
        if existing is not None:
            return _resume(config, existing, slot)
        with _stage("load_dataset") as info:
            dataset = load_dataset(config.dataset, config.target_column)
            info.update(uri=dataset.uri, rows=dataset.rows, sha256=dataset.sha256[:12])
        with _stage("split") as info:
            task: Task = infer_task(dataset.y) if config.task == "auto" else config.task
            data = split(dataset, config.holdout_fraction, config.seed, task)
            info.update(task=task, train=len(data.x_train), holdout=len(data.x_holdout))
        with _stage("train"):
            model, params = train(config, data.x_train, data.y_train)
        with _stage("evaluate") as info:
            metrics = evaluate(model, data.x_holdout, data.y_holdout, task)
            info.update({k: f"{v:.4f}" for k, v in metrics.items()})
        with _stage("log_run") as info:
            run_id, model_uri = log_run(config, dataset, data, model, params, metrics, slot,
                                        task)
            info["run_id"] = run_id
        with _stage("champion") as info:
            champion = evaluate_champion(config, data, task)
            info["version"] = champion.version if champion else None
        with _stage("gates") as info:
            results = apply_gates(metrics, champion.metrics if champion else None, config.gates)
            passed = all(r.passed for r in results)
            info.update(passed=passed, failed=sum(not r.passed for r in results))
        tags = {
            "mlops.dataset.uri": dataset.uri, "mlops.dataset.sha256": dataset.sha256,
            "mlops.dataset.rows": str(dataset.rows),
            "mlops.params": json.dumps(params, default=str, sort_keys=True),
            "mlops.metrics": json.dumps(metrics, sort_keys=True),
            "mlops.code_version": os.environ.get("MLOPS_CODE_VERSION")
            or os.environ.get("GIT_SHA") or "unknown",
            "mlops.image_digest": os.environ.get("MLOPS_IMAGE_DIGEST") or "unknown",
            SLOT_TAG: slot, "mlops.gates_passed": str(passed).lower(),
            _COMPARED_TAG: champion.version if champion else _NO_CHAMPION, "mlops.run_id": run_id,
            **{f"mlops.metric.{k}": repr(v) for k, v in metrics.items()},
        }
        with _stage("register") as info:
            version = register(config, model_uri, tags)
            info["version"] = version
        with _stage("promote", {"version": version, "promoted": passed}):
            promote(config, version, passed)
    except Exception as err:
        if isinstance(err, StageError):
            stage, cause = err.stage, err.__cause__ or err
        else:
            log.exception("unexpected error")
            stage, cause = "(outside a stage)", err
        moved = "some aliases may have moved" if stage == "promote" else "no alias was moved"
        print(f"retrain {config.model_name}: FAILED at stage `{stage}` "
              f"({type(cause).__name__}: {cause}); {moved}", flush=True)
        return EXIT_FAILED
    print(_summary(config, version, champion, results, passed, metrics), flush=True)
    return EXIT_PROMOTED if passed else EXIT_NOT_PROMOTED
