"""The served model and its predictions: MLflow's own scoring path, with a scikit-learn fast
path. `pulumi_mlops.runtime.serve.loading` fetches and opens it.

Predicting (``/invocations``): the general path is MLflow's scoring server itself
(``mlflow.pyfunc.scoring_server.invocations``: its parsers, schema enforcement, LLM payloads and
JSON encoding), so what MLflow's server answers with 200 this one answers the same way. Before
it, `~pulumi_mlops.runtime.serve.payload.find_lossy` refuses values MLflow would change
(``--coerce lossy`` turns that off). The fast path applies to a scikit-learn model whose
signature is numeric, required columns or a float ``(-1, n)`` tensor, and has no params
schema: a payload that is nothing but those numbers goes straight into the matrix pyfunc would
build and the estimator's predict function, skipping pandas and pyfunc's per-request work. Any
other payload takes the general path, which is loaded in the background for such a model.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import orjson

from pulumi_mlops.runtime.drift import DriftMonitor
from pulumi_mlops.runtime.serve.drift_input import DriftReader, drift_reader
from pulumi_mlops.runtime.serve.fetch import ModelInfo
from pulumi_mlops.runtime.serve.payload import (
    ColumnSpec,
    FastSpec,
    PayloadError,
    TensorSpec,
    decode_json,
    fast_matrix,
    find_lossy,
)

__all__ = ["Answer", "ServedModel", "Signature", "mlflow_version"]

log = logging.getLogger("mlops.serve")

_MAX_ERROR_MESSAGE = 2000


def mlflow_version() -> str:
    """The version of MLflow this server speaks for (what MLflow's ``/version`` answers)."""
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


@dataclass(frozen=True)
class Signature:
    """The model's input signature, read from its MLmodel file.

    Attributes:
        columns: Named input columns (None for a tensor signature or no signature).
        tensors: Input tensors of a tensor signature (one unnamed, or several named).
        has_params: Whether the signature defines a params schema.
    """

    columns: list[ColumnSpec] | None = None
    tensors: list[TensorSpec] | None = None
    has_params: bool = False

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> Signature:
        """Parse the ``signature`` section of an MLmodel document."""
        signature = mlmodel.get("signature") or {}
        has_params = bool(signature.get("params") and json.loads(signature["params"]))
        inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
        if inputs and all(c.get("type") == "tensor" for c in inputs):
            return cls(tensors=[TensorSpec(c["tensor-spec"]["dtype"],
                                           tuple(c["tensor-spec"]["shape"]), c.get("name"))
                                for c in inputs], has_params=has_params)
        if inputs and all("name" in c for c in inputs):
            return cls(columns=[ColumnSpec(str(c["name"]), c["type"], c.get("required", True))
                                for c in inputs], has_params=has_params)
        return cls(has_params=has_params)

    @property
    def tensor(self) -> TensorSpec | None:
        """The single unnamed input tensor, if that is the signature."""
        if self.tensors and len(self.tensors) == 1 and self.tensors[0].name is None:
            return self.tensors[0]
        return None

    def fast_spec(self) -> FastSpec | None:
        """What the fast path needs, when the signature qualifies for it."""
        if self.has_params:
            return None
        if self.columns is not None:
            return FastSpec.for_columns(self.columns)
        tensor = self.tensor
        return FastSpec.for_tensor(tensor) if tensor is not None else None


@dataclass(frozen=True)
class Answer:
    """A scoring answer: status, body, media type, and the raw predictions (for metrics and
    the prediction log) when the status is 200.

    Attributes:
        status: HTTP status.
        body: Response body.
        media_type: Its media type.
        predictions: The model's raw output (200 only).
        rows: Input rows, when known (for metrics).
    """

    status: int
    body: bytes
    media_type: str = "application/json"
    predictions: Any = None
    rows: int = 0


# Fast-path requests answered on the event loop: bodies up to this size (decoding them takes
# well under a millisecond), predictions expected to take up to this long.
_INLINE_BODY_BYTES = 256 * 1024
_INLINE_SECONDS = 0.002
# Requests of this many rows or more measure the per-row cost.
_PER_ROW_SAMPLE_ROWS = 8


class _PredictCost:
    """How long the estimator's predict takes for a number of rows, learnt from the
    predictions served: the least time seen (the fixed cost) plus a running average of the
    time per row above it, from requests of ``_PER_ROW_SAMPLE_ROWS`` rows or more. Until those
    are seen, a row is assumed to cost as much as a whole request: a model starts out judged
    slow, and its first requests run off the event loop, where they are measured."""

    def __init__(self) -> None:
        self.fixed = math.inf
        self.per_row = math.inf

    def quick(self, rows: int) -> bool:
        """Whether ``rows`` rows are expected to take at most ``_INLINE_SECONDS``."""
        per_row = self.fixed if self.per_row == math.inf else self.per_row
        return self.fixed + per_row * rows <= _INLINE_SECONDS

    def observe(self, rows: int, seconds: float) -> None:
        """Learn from one prediction (races between threads lose a sample at worst)."""
        self.fixed = min(self.fixed, seconds)
        if rows >= _PER_ROW_SAMPLE_ROWS:
            sample = (seconds - self.fixed) / rows
            self.per_row = (sample if self.per_row == math.inf
                            else 0.9 * self.per_row + 0.1 * sample)


class _TooManyRows(BaseException):
    """Raised through MLflow's scoring function, which turns every `Exception` a model raises
    into its generic 400: a ``BaseException`` reaches `ServedModel` with the row count."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


def _too_many_rows(rows: int, limit: int) -> PayloadError:
    return PayloadError(413, f"{rows} input rows are over the {limit}-row limit of a request "
                        "(mlops serve --max-rows); send them in smaller batches")


class _Observed:
    """The pyfunc model as MLflow's scoring function sees it: checks lossy values are already
    refused, so this only feeds the drift window (the input rows and their predictions, once
    predicted) and keeps the raw predictions."""

    def __init__(self, model: Any, drift: DriftMonitor | None, max_rows: int | None,
                 drift_json: tuple[Any, DriftReader] | None = None) -> None:
        self.metadata = model.metadata
        self._model = model
        self._drift = drift
        self._max_rows = max_rows
        self._drift_json = drift_json
        self.predictions: Any = None
        self.rows = 0

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        if self._max_rows is not None and _rows(data) > self._max_rows:
            raise _TooManyRows(_rows(data))
        self.predictions = self._model.predict(data, params=params)
        self.rows = _rows(data)
        drift = self._drift
        if drift is not None:
            # Rows the model scored: their inputs read from the request's JSON when it holds
            # them as the frame does (cheaper than reading the frame), else by column, or, for
            # input that is not a frame (a tensor), their predictions alone.
            read = None if self._drift_json is None else self._drift_json[1].rows(
                self._drift_json[0])
            if read is not None and read[0].shape[0] == self.rows:
                drift.observe_matrix(read[0], self.predictions, categorical=read[1])
            elif isinstance(data, pd.DataFrame):
                drift.observe_columns(data, self.predictions)
            elif (columns := _named_columns(data, self.rows)) is not None:
                drift.observe_columns(columns, self.predictions)
            elif drift.monitors_predictions:
                drift.observe_columns({}, self.predictions)
        return self.predictions


def _named_columns(data: Any, rows: int) -> dict[str, Any] | None:
    """Input MLflow's parser made a dict of arrays of (``instances``/``inputs`` payloads), as
    1-D columns of ``rows`` values, when that is what each array is (else a tensor's)."""
    if not isinstance(data, dict):
        return None
    columns = {}
    for name, values in data.items():
        array = np.asarray(values)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.shape != (rows,):
            return None
        columns[name] = array
    return columns


class ServedModel:
    """The model being served: its signature, the fast path and the pyfunc model, and drift.

    Args:
        info: What is served.
        signature: The input signature.
        fast_predict: The estimator's predict function, for the fast path.
        pyfunc_model: The pyfunc model (the general path).
        pyfunc_loader: Or a function that loads it, called once on first use or by
            `load_in_background` (for a model that also has a fast path).
        drift: The drift monitor, when the model's run has a training-data profile.
        coerce: ``strict`` refuses values MLflow would change in converting them; ``lossy``
            converts them as MLflow does.
        mlmodel: The MLmodel document the model was opened from (flavors, signature).
    """

    def __init__(self, info: ModelInfo, signature: Signature, *,
                 fast_predict: Callable[[Any], Any] | None = None,
                 pyfunc_model: Any = None, pyfunc_loader: Callable[[], Any] | None = None,
                 drift: DriftMonitor | None = None, coerce: str = "strict",
                 mlmodel: dict[str, Any] | None = None) -> None:
        if (pyfunc_model is None) == (pyfunc_loader is None):
            raise ValueError("Only one of `pyfunc_model` or `pyfunc_loader` can be provided "
                             "(and one is required).")
        if coerce not in ("strict", "lossy"):
            raise ValueError(f"`coerce` must be 'strict' or 'lossy' (got {coerce!r}).")
        self.info = info
        self.signature = signature
        self.mlmodel = mlmodel or {}
        self.columns = signature.columns
        self.fast_predict = fast_predict
        self.fast_spec = signature.fast_spec() if fast_predict is not None else None
        self.drift = drift
        self.strict = coerce == "strict"
        self._loader = pyfunc_loader
        self._model: Any = pyfunc_model
        self._cost = _PredictCost()
        if fast_predict is not None:
            # Fitted on a DataFrame, the estimator notes on every call that a matrix has no
            # feature names; the fast path checked the columns are the fitted ones, in order.
            # One filter for the process: `catch_warnings` per call is not thread-safe.
            warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                    category=UserWarning)
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._take_lock = threading.Lock()
        if self._loader is None:
            self._loaded.set()
        # How the general path's JSON requests feed the drift monitor without reading the
        # frame MLflow builds of them.
        self._drift_reader = (None if drift is None else drift_reader(
            self.columns, drift, tensors=signature.tensors is not None))
        # Columns of the signature that feed the drift monitor's numeric matrix.
        self._drift_index: list[int] | slice | None = None
        if drift is not None and self.columns is not None and not drift.categorical_inputs:
            names = [c.name for c in self.columns]
            if set(drift.numeric_inputs) <= set(names):
                index = [names.index(f) for f in drift.numeric_inputs]
                # Every column in order: a view of the matrix instead of a copy.
                self._drift_index = slice(None) if index == list(range(len(names))) else index

    # ----------------------------------------------------------------- the pyfunc model

    def load_in_background(self) -> None:
        """Start loading the general path's pyfunc model, if it is not loaded yet."""
        if self._loader is not None and not self._loaded.is_set():
            threading.Thread(target=self._load, name="pyfunc-load", daemon=True).start()

    def _load(self) -> None:
        with self._take_lock:
            loader, self._loader = self._loader, None
        if loader is None:
            return
        started = time.perf_counter()
        try:
            self._model = loader()
            log.info("general path (MLflow's pyfunc model) loaded in %.2f s",
                     time.perf_counter() - started)
            # mlflow and pandas leave a large, long-lived object graph: out of the collector's
            # generations, it is not walked again by every full collection while serving.
            gc.freeze()
        except BaseException as err:
            log.exception("loading the pyfunc model failed")
            self._load_error = err
        finally:
            self._loaded.set()

    @property
    def model(self) -> Any:
        """The pyfunc model (loaded on first use when it is not yet)."""
        if not self._loaded.is_set():
            if self._loader is not None:
                self._load()
            self._loaded.wait()
        if self._model is None:
            raise RuntimeError(f"the pyfunc model could not be loaded: {self._load_error}")
        return self._model

    # ----------------------------------------------------------------- predicting

    def invoke(self, body: bytes, content_type: str, max_rows: int | None = None) -> Answer:
        """Answer one ``/invocations`` request, as MLflow's scoring server would (with the
        lossy-value check and the fast path).

        Args:
            body: The request body.
            content_type: Its ``Content-Type``.
            max_rows: Input rows allowed in one request. Default: no bound.

        Raises:
            PayloadError: a client error found before MLflow's parser runs, or more than
                ``max_rows`` rows (413).
        """
        answer = self.prepare(body, content_type, max_rows)
        return answer if isinstance(answer, Answer) else answer()

    def prepare(self, body: bytes, content_type: str,
                max_rows: int | None = None) -> Answer | Callable[[], Answer]:
        """The answer to an ``/invocations`` request when the fast path gives it within about
        ``_INLINE_SECONDS`` (judged from the predictions served so far), else the call that
        answers it, to be run off the event loop: a small fast-path request costs less than
        handing it to another thread and back, and nothing long blocks the loop.

        Raises:
            PayloadError: as `invoke`, for what is found before the answer is deferred.
        """
        if not _plain_json(content_type):
            return functools.partial(self._general, body, content_type, max_rows)
        if self.fast_spec is None or len(body) > _INLINE_BODY_BYTES:
            return functools.partial(self._answer_json, body, content_type, max_rows)
        return self._route(decode_json(body), body, content_type, max_rows, inline=True)

    def _answer_json(self, body: bytes, content_type: str, max_rows: int | None) -> Answer:
        answer = self._route(decode_json(body), body, content_type, max_rows, inline=False)
        assert isinstance(answer, Answer)
        return answer

    def _route(self, doc: Any, body: bytes, content_type: str, max_rows: int | None, *,
               inline: bool) -> Answer | Callable[[], Answer]:
        """The answer to a decoded JSON request; with ``inline``, the call that answers it
        instead, unless the fast path answers quickly."""
        # A payload the fast path takes holds only exact numbers: nothing lossy.
        matrix = fast_matrix(doc, self.fast_spec, body) if self.fast_spec is not None else None
        if matrix is None:
            general = functools.partial(self._answer_doc, doc, body, content_type, max_rows)
            return general if inline else general()
        if max_rows is not None and len(matrix) > max_rows:
            raise _too_many_rows(len(matrix), max_rows)
        if inline and not self._cost.quick(len(matrix)):
            return functools.partial(self._fast_answer, matrix)
        return self._fast_answer(matrix)

    def _answer_doc(self, doc: Any, body: bytes, content_type: str,
                    max_rows: int | None) -> Answer:
        """The general path's answer to a decoded JSON document."""
        reader = self._drift_reader
        if self.strict or reader is not None:
            why = find_lossy(doc, self.columns, self.signature.tensors)
            if why is not None and self.strict:
                raise PayloadError(400, why)
            if why is not None:
                reader = None  # MLflow converts a value: its frame holds what the JSON does not
        # Anything but an object: MLflow's parser explains what is wrong with it.
        if not isinstance(doc, dict):
            return self._general(body, content_type, max_rows)
        return self._general(doc, content_type, max_rows,
                             None if reader is None else (doc, reader))

    def _fast_answer(self, matrix: np.ndarray[Any, Any]) -> Answer:
        predictions = self._fast(matrix)
        return Answer(200, _predictions_json(predictions), predictions=predictions,
                      rows=len(matrix))

    def predict_data(self, data: Any, params: dict[str, Any] | None = None,
                     max_rows: int | None = None) -> Any:
        """Predictions for input already decoded into what pyfunc accepts (a DataFrame, an
        ndarray, or a dict of ndarrays), e.g. from an Open Inference Protocol request.

        Raises:
            PayloadError: the input does not fit the signature (400), or has more than
                ``max_rows`` rows (413).
        """
        if max_rows is not None and _rows(data) > max_rows:
            raise _too_many_rows(_rows(data), max_rows)
        if self.fast_spec is not None and not params:
            matrix = _fast_matrix_of(data, self.fast_spec)
            if matrix is not None:
                return self._fast(matrix)
        # The model first: importing mlflow while the background thread imports it would
        # deadlock on the import locks; once it has loaded, mlflow is imported.
        observed = _Observed(self.model, self.drift, None)
        from mlflow.exceptions import MlflowException

        try:
            return observed.predict(data, params)
        except MlflowException as err:
            status = err.get_http_status_code()
            if status >= 500:
                raise
            raise PayloadError(status, str(err.message)[:_MAX_ERROR_MESSAGE]) from None

    def _fast(self, matrix: np.ndarray[Any, Any]) -> Any:
        assert self.fast_predict is not None
        from sklearn import config_context

        # The fast path's matrices hold finite numbers only (checked in building them), so
        # scikit-learn need not check again.
        started = time.perf_counter()
        with config_context(assume_finite=True):
            predictions = self.fast_predict(matrix)
        self._cost.observe(len(matrix), time.perf_counter() - started)
        drift = self.drift
        if drift is not None:
            # The rows the estimator scored, with their predictions.
            if self._drift_index is not None:
                drift.observe_matrix(matrix[:, self._drift_index], predictions)
            elif drift.monitors_predictions:
                drift.observe_columns({}, predictions)
        return predictions

    def _general(self, data: Any, content_type: str, max_rows: int | None,
                 drift_json: tuple[Any, DriftReader] | None = None) -> Answer:
        """MLflow's answer; ``drift_json``, the decoded JSON ``data`` with how its rows feed
        the drift monitor."""
        # The model first: see `predict_data`.
        model = self.model
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        observed = _Observed(model, self.drift, max_rows, drift_json)
        try:
            result = scoring_server.invocations(data, content_type, observed,
                                                model.metadata.get_input_schema())
        except MlflowException as err:
            return _mlflow_error(err)
        except _TooManyRows as err:
            assert max_rows is not None
            raise _too_many_rows(err.rows, max_rows) from None
        if result.status != 200:
            return Answer(result.status, result.response.encode(), result.mimetype)
        return Answer(200, result.response.encode(), result.mimetype,
                      predictions=observed.predictions, rows=observed.rows)


def _rows(data: Any) -> int:
    """Input rows of decoded input (a frame, an array, a list, a scalar or a dict of columns)."""
    if isinstance(data, dict):
        data = next(iter(data.values()), None)
    if isinstance(data, str | bytes):
        return 1
    try:
        return len(data)
    except TypeError:  # a scalar, a 0-d array
        return 1


def _plain_json(content_type: str) -> bool:
    """Whether MLflow's scoring server reads the body as JSON: exactly ``application/json``,
    with no parameter but ``charset=utf-8`` (anything else gets its 415)."""
    media, *parameters = (part.strip() for part in content_type.split(";"))
    return media == "application/json" and all(
        p.partition("=")[0] == "charset" and p.partition("=")[2].lower() == "utf-8"
        for p in parameters)


def _mlflow_error(err: Any) -> Answer:
    """MLflow's error answer, without the stack trace: logged here with a request id for a
    server error, and only at debug level for a client error (the app logs those in one line,
    and a client sending bad input in a loop must not fill the log with stack traces)."""
    status = err.get_http_status_code()
    request_id = uuid.uuid4().hex
    trace = (getattr(err, "json_kwargs", None) or {}).get("stack_trace")
    if trace:
        log.log(logging.WARNING if status >= 500 else logging.DEBUG, "request %s: %s\n%s",
                request_id, str(err.message)[:_MAX_ERROR_MESSAGE], trace)
    message = str(err.message)
    if len(message) > _MAX_ERROR_MESSAGE:
        message = message[:_MAX_ERROR_MESSAGE] + "… (truncated)"
    body = json.dumps({"error_code": err.error_code, "message": message,
                       "request_id": request_id})
    return Answer(status, body.encode())


def _predictions_json(predictions: Any) -> bytes:
    # orjson serializes numeric and boolean arrays itself, not text or object ones (a
    # classifier trained on class names predicts those).
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "USOV":
        predictions = predictions.tolist()
    return orjson.dumps({"predictions": predictions},
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _fast_matrix_of(data: Any, spec: FastSpec) -> np.ndarray[Any, Any] | None:
    """The fast path's matrix for decoded input: an ndarray for a tensor signature, a frame
    with exactly the signature's columns for a column signature."""
    if spec.names is None:
        if (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == spec.width
                and data.dtype == np.dtype(spec.dtypes[0]) and np.isfinite(data).all()):
            return data
        return None
    import pandas as pd

    if not isinstance(data, pd.DataFrame) or list(data.columns) != list(spec.names):
        return None
    if [str(d) for d in data.dtypes] != list(spec.dtypes):
        return None
    matrix: np.ndarray[Any, Any] = data.to_numpy()
    if matrix.dtype.kind == "f" and not np.isfinite(matrix).all():
        return None
    return matrix
