"""The retrain job's data: load the dataset within its bounds (`load_dataset`, `DatasetLimits`),
tell the task from its labels (`infer_task`), and split it into train and holdout (`split`).

A dataset is ``sklearn:<name>``, or a CSV or Parquet path or URL (optionally ``.gz``). Bounded:
at most ``dataset_max_bytes`` read or downloaded and again decompressed, a ``.gz`` growing at
most ``dataset_max_ratio`` times, a download taking at most ``dataset_timeout`` seconds; a
URL's credentials come as headers from the variable ``dataset_headers_env`` names.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import pandas as pd

from pulumi_mlops.runtime.retrain.config import (
    DEFAULT_DATASET_MAX_BYTES,
    DEFAULT_DATASET_MAX_RATIO,
    DEFAULT_DATASET_TIMEOUT,
    RetrainConfig,
)

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetLimits",
    "Split",
    "Task",
    "infer_task",
    "load_dataset",
    "split",
]

Task = Literal["classification", "regression"]
"""What the model learns: classes or a quantity."""
_MAX_CLASSES_FOR_AUTO: Final = 20


class DatasetError(ValueError):
    """The dataset is missing, unreadable, unusable, or past one of its bounds."""


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

    max_bytes: int = DEFAULT_DATASET_MAX_BYTES
    max_ratio: float = DEFAULT_DATASET_MAX_RATIO
    timeout: float = DEFAULT_DATASET_TIMEOUT
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
