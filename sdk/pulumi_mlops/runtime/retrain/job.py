"""The retrain job: ``mlops retrain --config FILE``.

``FILE`` is a ``mlops-retrain/v1`` config (`RetrainConfig`), JSON or YAML. Stages, each logged as
one line with its duration (logger ``mlops.retrain``):

0. ``idempotency``: when the run has a key (see below), look for the version that key
   registered.
1. ``load_dataset``: read the data (``sklearn:<name>``, a CSV or Parquet path or URL), record
   its URI, content sha256 and row count. Bounded (`DatasetLimits`): at most
   ``dataset_max_bytes`` read or downloaded and again decompressed, a ``.gz`` growing at most
   ``dataset_max_ratio`` times, a download taking at most ``dataset_timeout`` seconds; a URL's
   credentials come as headers from the variable ``dataset_headers_env`` names.
2. ``split``: deterministic train/holdout split (seeded; stratified for classification).
3. ``train``: fit the configured estimator (optionally with a randomized search) or call the
   configured trainer. An estimator given data with non-numeric feature columns is fitted
   behind a preprocessing step (`feature_pipeline`: numeric columns scaled, the others one-hot
   encoded), so that the logged model takes the raw columns.
4. ``evaluate``: score the holdout with the task's metrics (classification: accuracy, f1,
   roc_auc, log_loss; regression: rmse, mae, r2).
5. ``log_run``: one MLflow run with params, metrics, the model (with a signature) and the
   training-data drift profile at `~pulumi_mlops.runtime.drift.PROFILE_ARTIFACT_PATH`. The
   model is saved with skops and records, as ``skops_trusted_types`` in its MLmodel file,
   exactly the types skops does not trust by default that this model is made of
   (`trusted_types`: e.g. ``sklearn.tree._tree.Tree`` for tree ensembles), so that
   ``mlflow.sklearn.load_model``, pyfunc and ``mlops serve`` load it, and nothing else.
6. ``champion``: load the holder of ``promote_alias`` (`load_model`: skops, trusting only
   scikit-learn's own types; a pickle only with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``)
   and score it on the same holdout.
7. ``gates``: `apply_gates` (absolute minimums/maximums, least improvement over the champion,
   largest regression).
8. ``register``: a new model version with lineage tags (see `LINEAGE_TAGS`).
9. ``promote``: set ``challenger_alias`` on the new version, and move ``promote_alias`` to it
   only if every gate passed and ``promote_alias`` still points at the champion compared with
   (`promote`: a concurrent run that promoted first wins; this one is not promoted).

No alias is touched before stage 9, so a failure anywhere (data missing or malformed, training
or evaluation raising, the registry unreachable) leaves every alias where it was.

Exit codes
----------
- `EXIT_PROMOTED` (0): registered and promoted (or a retry of a slot that was).
- `EXIT_FAILED` (1): a stage failed; no alias was moved.
- `EXIT_BAD_CONFIG` (2): the config file is missing, not JSON or YAML, or invalid; or the run
  key is not a valid key.
- `EXIT_CONFIG_CHANGED` (3): the run's key already registered a version, from another config.
- `EXIT_NOT_PROMOTED` (10): registered as challenger, but a gate failed, or ``promote_alias``
  moved while the run ran (a concurrent run promoted first); or a retry of a slot that was not
  promoted.

Idempotency
-----------
The idempotency key is the identity of the run, given by whoever started it, never the clock:
``MLOPS_SCHEDULE_SLOT`` (`run_key`). On Kubernetes it is the Job's name (the CronJob names each
Job after its scheduled time; a retried pod of the same Job has the same name; a Job created by
hand with ``kubectl create job --from=cronjob/...`` has a new name, so it runs); on Docker it is
the scheduler's slot (``mlops schedule`` sets it for every attempt). Without a key (a run by
hand) the job always runs.

A version registered under a key carries it as ``mlops.schedule_slot``, and the sha256 of the
config it was trained from as ``mlops.config_sha256`` (`config_digest`). A run whose key already
registered a version registers nothing: with the same config it exits with the recorded
outcome; with another config it exits `EXIT_CONFIG_CHANGED`, saying that the config changed
since that key ran. If the earlier attempt died after registering but before moving the
aliases, the retry finishes the alias moves as long as the champion it was compared with still
holds ``promote_alias``; otherwise it fails without moving anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import logging
import math
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import pydantic
import yaml

from pulumi_mlops.runtime.retrain.config import (
    Gates,
    RetrainConfig,
    check_estimator,
    check_trainer,
    redact_url,
)
from pulumi_mlops.runtime.scheduler import SLOT_ENV, parse_cron
from pulumi_mlops.runtime.sklearn_model import ModelRefused, load_sklearn_estimator

__all__ = [
    "CONFIG_TAG",
    "EXIT_BAD_CONFIG",
    "EXIT_CONFIG_CHANGED",
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
    "DatasetLimits",
    "GateResult",
    "ModelLoadError",
    "Promotion",
    "Split",
    "StageError",
    "alias_version",
    "apply_gates",
    "config_digest",
    "evaluate",
    "evaluate_champion",
    "feature_pipeline",
    "find_slot_version",
    "infer_task",
    "load_config",
    "load_dataset",
    "load_model",
    "load_sklearn_model",
    "log_run",
    "promote",
    "register",
    "run",
    "run_key",
    "split",
    "train",
    "trusted_types",
]

log = logging.getLogger("mlops.retrain")

EXIT_PROMOTED: Final = 0
"""Registered and promoted."""
EXIT_FAILED: Final = 1
"""A stage failed; no alias moved."""
EXIT_BAD_CONFIG: Final = 2
"""The config file is missing, unreadable or invalid (or the run key is not a valid key)."""
EXIT_CONFIG_CHANGED: Final = 3
"""The run's key already registered a version, trained from another config: nothing done."""
EXIT_NOT_PROMOTED: Final = 10
"""Registered as challenger; a gate failed, or ``promote_alias`` moved while the run ran (a
concurrent run promoted first), so ``promote_alias`` did not move to it."""

SLOT_TAG: Final = "mlops.schedule_slot"
"""Model-version tag holding the run's idempotency key (set only when the run has one)."""
CONFIG_TAG: Final = "mlops.config_sha256"
"""Model-version tag holding `config_digest` of the config the version was trained from."""
_OUTCOME_TAG: Final = "mlops.outcome"
_COMPARED_TAG: Final = "mlops.champion_version"
_NO_CHAMPION: Final = "none"

LINEAGE_TAGS: Final = (
    "mlops.dataset.uri", "mlops.dataset.sha256", "mlops.dataset.rows", "mlops.params",
    "mlops.metrics", "mlops.code_version", "mlops.image_digest", SLOT_TAG, CONFIG_TAG,
    "mlops.gates_passed", _COMPARED_TAG, "mlops.run_id",
)
"""Tags set on every registered version (``mlops.outcome`` is added once the aliases moved;
``mlops.schedule_slot`` only when the run has a key)."""

HIGHER_IS_BETTER: Final[Mapping[str, bool]] = {
    "accuracy": True, "f1": True, "roc_auc": True, "log_loss": False,
    "rmse": False, "mae": False, "r2": True,
}
"""Direction of each metric the job computes."""

Task = Literal["classification", "regression"]
_MODEL_ARTIFACT: Final = "model"
_MAX_CLASSES_FOR_AUTO: Final = 20
# The estimator's step in the pipeline `feature_pipeline` builds (search parameters are
# addressed as ``model__<name>``).
_ESTIMATOR_STEP: Final = "model"
# What a key may hold: a Kubernetes Job name or a scheduler slot (``2026-11-24T03:00Z``) fits;
# a quote could not break the registry search the key is looked up with.
_KEY_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,252}$")


class ConfigFileError(ValueError):
    """The config file is missing, not JSON or YAML, or breaks a rule; the message names the
    field."""


class DatasetError(ValueError):
    """The dataset is missing, unreadable, unusable, or past one of its bounds."""


class ModelLoadError(ValueError):
    """A registered model cannot be loaded without running code from the registry."""


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
    """Read and validate a ``mlops-retrain/v1`` config file, JSON or YAML (one schema).

    A ``.json`` file is read as JSON and a ``.yaml``/``.yml`` file as YAML; any other name by
    its content (JSON when it starts with ``{``). A key given twice is refused in both.

    Raises:
        ConfigFileError: the file cannot be read, cannot be parsed, or is invalid; the message
            names each offending field (``gates.min.roc_auc``) and the rule.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigFileError(f"cannot read config file {str(path)!r}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"config file {str(path)!r} is not text (UTF-8): {err}") from err
    data = _parse_config(text, str(path))
    try:
        config = RetrainConfig.model_validate(data)
    except pydantic.ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(document)"
            got = e.get("input")
            if field == "dataset" and isinstance(got, str):
                got = redact_url(got)
            lines.append(f"`{field}`: {e['msg']} (got {got!r})" if e["loc"] else f"{e['msg']}")
        raise ConfigFileError(f"invalid config file {str(path)!r}:\n  " + "\n  ".join(lines)
                              ) from err
    if config.schedule is not None:
        try:
            parse_cron(config.schedule)
        except ValueError as err:
            raise ConfigFileError(f"invalid config file {str(path)!r}:\n  `schedule`: {err}"
                                  ) from None
    return config


def _parse_config(text: str, path: str) -> Any:
    suffix = Path(path).suffix.lower()
    as_yaml = suffix in (".yaml", ".yml") or (
        suffix != ".json" and not text.lstrip().startswith("{"))
    if not as_yaml:
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise ConfigFileError(f"config file {path!r} is not JSON: {err}") from err
        except _DuplicateKeyError as err:
            raise ConfigFileError(f"config file {path!r}: {err}") from err
    try:
        # A SafeLoader subclass: plain data only, no Python objects.
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigFileError(f"config file {path!r} is not valid YAML: {err.problem}{where}"
                              ) from err
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config file {path!r} is not valid YAML: {err}") from err
    except _DuplicateKeyError as err:
        raise ConfigFileError(f"config file {path!r}: {err}") from err
    if data is None:
        raise ConfigFileError(f"config file {path!r} is empty: it must be a mapping with at "
                              "least `model_name`, `dataset` and `estimator` (or `trainer`)")
    return data


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; in a config that hides a mistake.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} is given twice; keep one")
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader's own check reports it
            if key in seen:
                raise _DuplicateKeyError(f"key {key!r} is given twice (line "
                                         f"{key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def config_digest(config: RetrainConfig) -> str:
    """The sha256 (hex) of ``config``'s content, independent of its file's format and layout:
    equal for the same config written as JSON or YAML, different when any value changed."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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


@dataclass(frozen=True)
class DatasetLimits:
    """How much a dataset may cost, and the headers its download sends.

    Attributes:
        max_bytes: Most bytes read or downloaded, and again once decompressed.
        max_ratio: Most times a ``.gz`` dataset may grow when decompressed.
        timeout: Seconds the whole download may take. It is checked between reads, and one read
            waits at most ``min(timeout, 30)`` seconds, so a silent server fails within that
            much past the deadline.
        headers: HTTP headers sent with the download (credentials: never logged, never sent
            where the URL redirects).
    """

    max_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100
    timeout: float = 600.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: RetrainConfig,
                    environ: Mapping[str, str] | None = None) -> DatasetLimits:
        """The config's bounds, and the headers from the variable ``dataset_headers_env``.

        Raises:
            DatasetError: the variable is not set, or is not a JSON object of strings (the
                message never shows its value).
        """
        env = os.environ if environ is None else environ
        headers: dict[str, str] = {}
        name = config.dataset_headers_env
        if name is not None:
            if name not in env:
                raise DatasetError(f"`dataset_headers_env` names {name}, which is not set; set "
                                   "it to a JSON object of headers (RetrainSchedule's "
                                   "`dataset_headers` renders it from a secret)")
            try:
                headers = json.loads(env[name])
            except json.JSONDecodeError:
                headers = {}
                valid = False
            else:
                valid = isinstance(headers, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
            if not valid:
                raise DatasetError(f"{name} (`dataset_headers_env`) must hold a JSON object of "
                                   'header names to strings, e.g. {"Authorization": "Bearer '
                                   '..."}')
        return cls(config.dataset_max_bytes, config.dataset_max_ratio, config.dataset_timeout,
                   headers)


_CHUNK: Final = 1 << 16
_READ_TIMEOUT: Final = 30.0


def _too_big(uri: str, limits: DatasetLimits, what: str) -> DatasetError:
    return DatasetError(f"dataset {uri!r} {what} more than dataset_max_bytes "
                        f"({limits.max_bytes} bytes); raise `dataset_max_bytes` if it is "
                        "expected")


def _download(uri: str, limits: DatasetLimits) -> bytes:
    deadline = time.monotonic() + limits.timeout
    request = urllib.request.Request(uri)
    for name, value in limits.headers.items():
        # Unredirected: urllib sends these to this URL only, never to where it redirects.
        request.add_unredirected_header(name, value)
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=min(limits.timeout, _READ_TIMEOUT)
                                    ) as response:
            declared = str(response.headers.get("Content-Length") or "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise _too_big(uri, limits, f"declares {declared} bytes,")
            # read1: whatever has arrived, so that a slow drip still reaches the deadline check.
            while chunk := response.read1(_CHUNK):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_big(uri, limits, "sent")
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunks.append(chunk)
    except (OSError, http.client.HTTPException) as err:
        if isinstance(err, TimeoutError) or time.monotonic() > deadline:
            raise DatasetError(f"downloading dataset {uri!r} took more than dataset_timeout "
                               f"({limits.timeout:g} s; {size} bytes received); raise "
                               "`dataset_timeout` if it is expected") from None
        raise DatasetError(f"cannot download dataset {uri!r}: {err}") from err
    return b"".join(chunks)


def _read_bytes(uri: str, limits: DatasetLimits) -> bytes:
    if uri.startswith(("http://", "https://")):
        return _download(uri, limits)
    path = Path(uri.removeprefix("file://"))
    try:
        if path.stat().st_size > limits.max_bytes:
            raise _too_big(uri, limits, "holds")
        return path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read dataset {uri!r}: {err.strerror or err}") from err


def _gunzip(raw: bytes, uri: str, limits: DatasetLimits) -> bytes:
    by_ratio = int(len(raw) * limits.max_ratio)
    cap = min(limits.max_bytes, by_ratio)
    out: list[bytes] = []
    size = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            # Read in bounded pieces: a small bomb never gets to inflate whole.
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > cap:
                    if cap == by_ratio:
                        raise DatasetError(
                            f"dataset {uri!r} decompresses to more than dataset_max_ratio "
                            f"({limits.max_ratio:g}) times its {len(raw)} bytes; raise "
                            "`dataset_max_ratio` if it is expected")
                    raise _too_big(uri, limits, "decompresses to")
                out.append(chunk)
    except (OSError, EOFError) as err:
        raise DatasetError(f"dataset {uri!r} is not valid gzip: {err}") from err
    return b"".join(out)


def load_dataset(uri: str, target_column: str | None = None,
                 limits: DatasetLimits | None = None) -> Dataset:
    """Load ``sklearn:<name>`` or a CSV/Parquet path or URL into features and labels.

    Args:
        uri: ``sklearn:<name>``, a path, or an http(s) URL.
        target_column: The label column (for a CSV or Parquet dataset).
        limits: Bounds and download headers. Default: `DatasetLimits`'s defaults, no headers.

    Raises:
        DatasetError: missing, unreadable or malformed data, no rows, a missing target column,
            missing labels, or a bound exceeded (the message names the config option).
    """
    limits = DatasetLimits() if limits is None else limits
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
    raw = _read_bytes(uri, limits)
    digest = hashlib.sha256(raw).hexdigest()
    name = uri.split("?", 1)[0].lower()
    data = raw
    if name.endswith(".gz"):
        data = _gunzip(raw, uri, limits)
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

    The model is saved with skops (never pickle), recording `trusted_types` in its MLmodel
    file (``skops_trusted_types`` of the ``sklearn`` flavor), which every loader reads.
    """
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, build_profile

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
        mlflow.log_dict(build_profile(data.x_train), PROFILE_ARTIFACT_PATH)
        return run_id, str(info.model_uri)


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
            compared: str = _NO_CHAMPION) -> Promotion:
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
        current = alias_version(config.model_name, config.promote_alias) or _NO_CHAMPION
        if current == compared:
            client.set_registered_model_alias(config.model_name, config.promote_alias, version)
            current = alias_version(config.model_name, config.promote_alias) or _NO_CHAMPION
        result = (Promotion(True) if current == version
                  else Promotion(False, lost_to=current))
    if result.lost_to is not None:
        log.warning("stage=promote lost: `%s` moved from %s to %s while this run ran (a "
                    "concurrent run promoted first); version %s is not promoted",
                    config.promote_alias, compared, result.lost_to, version)
    client.set_model_version_tag(config.model_name, version, _OUTCOME_TAG,
                                 "promoted" if result.promoted else "not_promoted")
    return result


# --------------------------------------------------------------------------- orchestration


def run_key(slot: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The run's idempotency key: ``slot`` when given, else ``MLOPS_SCHEDULE_SLOT``, else None
    (a run by hand: it always runs). Never derived from the clock.

    On Kubernetes the variable holds the Job's name (from the pod's
    ``batch.kubernetes.io/job-name`` label), on Docker the scheduler's slot.

    Raises:
        ValueError: the key holds characters other than letters, digits and ``._:+-``, or is
            longer than 253 characters; the message names the variable and the fix.
    """
    env = os.environ if environ is None else environ
    key = slot if slot is not None else env.get(SLOT_ENV)
    if not key:
        return None
    if not _KEY_PATTERN.match(key):
        raise ValueError(f"`{SLOT_ENV}` must be letters, digits and `._:+-`, starting with a "
                         f"letter or digit, at most 253 characters (got {key!r}). Fix: use the "
                         "Job's name or the slot, e.g. 2026-11-24T03:00Z, or unset it to run "
                         "without a key.")
    return key


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
             results: Sequence[GateResult], promotion: Promotion,
             metrics: Mapping[str, float]) -> str:
    head = (f"retrain {config.model_name}: version {version} registered as "
            f"`{config.challenger_alias}`; ")
    was = f"version {champion.version}" if champion else "none"
    if promotion.promoted:
        head += f"PROMOTED to `{config.promote_alias}` (previous: {was})"
    elif promotion.lost_to is not None:
        head += (f"NOT promoted: every gate passed, but `{config.promote_alias}` moved from "
                 f"{was} to {promotion.lost_to} while this run ran (a concurrent run promoted "
                 f"first); it stays {promotion.lost_to}. Run again to compare with it")
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


def _resume(config: RetrainConfig, existing: Any, slot: str, digest: str) -> int:
    """A retry of a slot that already registered ``existing``: register nothing."""
    tags = dict(existing.tags or {})
    version = str(existing.version)
    recorded = tags.get(CONFIG_TAG)
    # A version from before the config digest was recorded cannot be compared: treated as the
    # same config, as it was then.
    if recorded is not None and recorded != digest:
        print(f"retrain {config.model_name}: the config changed since slot {slot} ran: version "
              f"{version} was trained from config sha256 {recorded[:12]}, this run's config is "
              f"{digest[:12]}; nothing registered, no alias moved. To train with this config, "
              f"run it under a new key (a new Job, e.g. `kubectl create job --from=cronjob/...`"
              f" with a new name; or another or no {SLOT_ENV})", flush=True)
        return EXIT_CONFIG_CHANGED
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
    # The alias on this very version: the earlier attempt moved it, then died before the tag.
    if current == version:
        compared = version
    if compared != current:
        log.error("slot %s registered version %s but did not finish, and `%s` moved since "
                  "(compared with %r, now %r); not moving any alias", slot, version,
                  config.promote_alias, compared, current)
        return EXIT_FAILED
    passed = tags.get("mlops.gates_passed") == "true"
    with _stage("promote", {"version": version, "promoted": passed}):
        promoted = promote(config, version, passed, compared).promoted
    print(f"retrain {config.model_name}: slot {slot}: finished the alias moves for version "
          f"{version} ({'promoted' if promoted else 'not promoted'}); nothing registered")
    return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED


def run(config: RetrainConfig, *, slot: str | None = None,
        environ: Mapping[str, str] | None = None) -> int:
    """Run the job end to end; returns the exit code (see the module docstring).

    The registry comes from ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``; lineage from ``MLOPS_CODE_VERSION`` (or ``GIT_SHA``) and
    ``MLOPS_IMAGE_DIGEST``.

    Args:
        config: The job's config.
        slot: The run's idempotency key. Default: ``MLOPS_SCHEDULE_SLOT`` (see `run_key`).
        environ: Where the key and the lineage variables are read. Default: ``os.environ``.
    """
    env = os.environ if environ is None else environ
    try:
        key = run_key(slot, env)
    except ValueError as err:
        print(f"retrain {config.model_name}: error: {err}", flush=True)
        return EXIT_BAD_CONFIG
    digest = config_digest(config)
    try:
        with _stage("idempotency", {"key": key, "config_sha256": digest[:12]}) as info:
            existing = None if key is None else find_slot_version(config.model_name, key)
            info["existing_version"] = None if existing is None else existing.version
        if existing is not None:
            assert key is not None
            return _resume(config, existing, key, digest)
        with _stage("load_dataset") as info:
            dataset = load_dataset(config.dataset, config.target_column,
                                   DatasetLimits.from_config(config, env))
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
            run_id, model_uri = log_run(config, dataset, data, model, params, metrics, key,
                                        task, digest)
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
            "mlops.code_version": env.get("MLOPS_CODE_VERSION") or env.get("GIT_SHA")
            or "unknown",
            "mlops.image_digest": env.get("MLOPS_IMAGE_DIGEST") or "unknown",
            CONFIG_TAG: digest, "mlops.gates_passed": str(passed).lower(),
            _COMPARED_TAG: champion.version if champion else _NO_CHAMPION, "mlops.run_id": run_id,
            **{f"mlops.metric.{k}": repr(v) for k, v in metrics.items()},
            **({} if key is None else {SLOT_TAG: key}),
        }
        with _stage("register") as info:
            version = register(config, model_uri, tags)
            info["version"] = version
        compared = champion.version if champion else _NO_CHAMPION
        with _stage("promote", {"version": version, "gates_passed": passed}) as info:
            promotion = promote(config, version, passed, compared)
            info["promoted"] = promotion.promoted
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
    print(_summary(config, version, champion, results, promotion, metrics), flush=True)
    return EXIT_PROMOTED if promotion.promoted else EXIT_NOT_PROMOTED
