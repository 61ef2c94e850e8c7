"""The scoring server: a plain ASGI app (no framework between the socket and the model).

Routes, as MLflow's scoring server answers them: ``POST /invocations``, ``GET /ping``,
``GET /health``, ``GET /version`` (the MLflow version, as text); the Open Inference Protocol
under ``/v2`` (`pulumi_mlops.runtime.serve.v2`); ``GET /metrics``; and ``POST /feedback``
(delayed labels, `pulumi_mlops.runtime.serve.feedback`). Errors answer MLflow's JSON
``{"error_code", "message"}``; a stack trace is logged with a request id, never sent.

A successful ``/invocations`` answer carries its request id in an ``X-Request-Id`` header
(the client's own, when well formed), its body unchanged; ``/feedback`` takes the labels of
its rows by that id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from pulumi_mlops.contracts.version import __version__
from pulumi_mlops.runtime._text import one_line
from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.deadlines import Deadlines, deadlines
from pulumi_mlops.runtime.serve.feedback import (
    FeedbackItem,
    PredictionWindow,
    apply_feedback,
    parse_feedback,
    request_id_of,
)
from pulumi_mlops.runtime.serve.http import (
    CLIENT_GONE,
    JSON,
    TEXT,
    BodyTooLarge,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    error_body,
    error_headers,
    header,
    read_body,
    respond,
)
from pulumi_mlops.runtime.serve.limits import Limits
from pulumi_mlops.runtime.serve.model import Answer, ServedModel, mlflow_version
from pulumi_mlops.runtime.serve.offload import Deferred, PredictionThread
from pulumi_mlops.runtime.serve.payload import PayloadError

__all__ = ["ScoringApp"]

log = logging.getLogger("mlops.serve")

T = TypeVar("T")
_ROUTES = {"/invocations": "POST", "/ping": "GET", "/health": "GET", "/version": "GET",
           "/metrics": "GET", "/feedback": "POST"}
_REQUEST_ID = b"x-request-id"
# Feedback bodies up to this size are parsed on the event loop, larger ones on the prediction
# thread (a 256 KiB body parses in about a millisecond).
_INLINE_FEEDBACK_BYTES = 256 * 1024


class ScoringApp:
    """ASGI application serving one model.

    Args:
        model: The model.
        limits: The request bounds. Default: `Limits()`.
        prediction_log_rate: Share of requests logged as JSON lines on stdout (0 to 1).
        metrics_port: The port that serves ``/metrics`` alone (``mlops serve
            --metrics-port``): requests to it get ``/metrics`` only, and requests to any
            other port everything but ``/metrics``. Default: none, ``/metrics`` beside the
            rest.

    Attributes:
        ready: False while loading or draining; ``/ping`` and ``/health`` answer 503 then.
        workers_alive: Whether all the server's workers run (set by the supervisor); when
            not, ``/health`` and ``/v2/health/ready`` answer 503 while ``/ping`` stays 200.
        server_version: This package's version (the Open Inference Protocol's server metadata).
        window: Recent answers' predictions by request id, for ``/feedback``.
    """

    def __init__(self, model: ServedModel, *, limits: Limits | None = None,
                 prediction_log_rate: float = 0.0, metrics_port: int | None = None) -> None:
        self.model = model
        self.metrics_port = metrics_port
        self.limits = limits or Limits()
        self.prediction_log_rate = prediction_log_rate
        self.server_version = str(__version__)
        self.ready = True
        self.workers_alive: Callable[[], bool] = _always
        self._mlflow_version = mlflow_version().encode()
        self._in_flight = 0
        # Requests whose body came too late (cancelled by their deadline).
        self._late: set[asyncio.Task[Any]] = set()
        self._deadlines: Deadlines | None = None
        self._deadlines_loop: asyncio.AbstractEventLoop | None = None
        self._predictor: PredictionThread | None = None
        self._client_errors = _ClientErrorLog()
        self.window = PredictionWindow(self.limits.feedback_window_ids,
                                       self.limits.feedback_window_rows)
        metrics.model_info(model.info)
        estimator = getattr(model.fast_predict, "__self__", None)
        metrics.limit_class_labels(self.limits.max_class_labels,
                                   getattr(estimator, "classes_", ()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self.ready:
            # Draining: answer, then close the connection, so no idle keep-alive connection is
            # left for the shutdown to cut while a client is about to reuse it.
            send = _closing(send)
        path, method = scope["path"], scope["method"]
        if self.metrics_port is not None and (
                (scope.get("server") or (None, None))[1] == self.metrics_port) != (
                path == "/metrics"):
            # The metrics port answers metrics only, so a peer admitted to it (Prometheus)
            # cannot score; the serving port does not answer them.
            await respond(send, 404, error_body(404, f"no route {path} on this port"))
            return
        if path == "/v2" or path.startswith("/v2/"):
            from pulumi_mlops.runtime.serve import v2

            await v2.handle(self, scope, receive, send)
            return
        expected = _ROUTES.get(path)
        if expected is None:
            await respond(send, 404, error_body(404, f"no route {path}"))
        elif method != expected and not (method == "HEAD" and expected == "GET"):
            await respond(send, 405, error_body(405, f"{path} accepts {expected} only"),
                          [(b"allow", expected.encode())])
        elif path == "/invocations":
            await self._invocations(scope, receive, send)
        elif path == "/feedback":
            await self._feedback(scope, receive, send)
        elif path == "/ping" or (path == "/health" and self.workers_alive()):
            status = 200 if self.ready else 503
            await respond(send, status, b"\n" if self.ready else b"draining\n", TEXT)
        elif path == "/health":
            await respond(send, 503, b"fewer workers than configured are running\n", TEXT)
        elif path == "/version":
            await respond(send, 200, self._mlflow_version)
        else:
            if self.model.drift is not None:
                metrics.publish_drift(self.model.drift)
            body, content_type = metrics.exposition()
            await respond(send, 200, body, [(b"content-type", content_type.encode())])

    async def score(self, scope: Scope, receive: Receive,
                    work: Callable[[bytes], T | Deferred[T]]) -> T:
        """Read the request body within the limits and call ``work(body)``, which answers at
        once (a quick prediction, on the event loop) or returns the `Deferred` call that
        answers, which then runs on the prediction thread within the prediction timeout. All of
        it within the concurrency bound.

        Raises:
            PayloadError: 503 over the concurrency bound, 413 over the body limit, 408 for a
                body slower than the body timeout, 504 past the prediction timeout; and what
                ``work`` raises.
            ClientGone: the client left before its body was complete.
        """
        limits = self.limits
        if self._in_flight >= limits.max_concurrency:
            raise PayloadError(503, f"this worker holds its {limits.max_concurrency} concurrent "
                               "requests (mlops serve --max-concurrency); retry shortly")
        self._in_flight += 1
        submitted = False
        try:
            task = asyncio.current_task()
            assert task is not None
            due = self._deadlines
            if due is None or task.get_loop() is not self._deadlines_loop:
                self._deadlines_loop = task.get_loop()
                due = self._deadlines = deadlines(self._deadlines_loop)
            due.add(task, limits.body_timeout, functools.partial(self._body_late, task))
            try:
                body = await read_body(scope, receive, limits.max_body_bytes)
            except asyncio.CancelledError:
                if task not in self._late:
                    raise
                self._late.discard(task)
                task.uncancel()
                raise PayloadError(408, f"the request body did not arrive within "
                                   f"{limits.body_timeout:g} s (mlops serve --body-timeout)"
                                   ) from None
            except BodyTooLarge as err:
                raise PayloadError(413, f"{err} (mlops serve --max-body-bytes)") from None
            finally:
                due.remove(task)
            answer = work(body)
            if not isinstance(answer, Deferred):
                return answer
            if self._predictor is None:
                self._predictor = PredictionThread()
            # The slot is freed when the work has finished, also after a 504: a prediction
            # that outlives its request still occupies the thread.
            call: Callable[[], T] = answer.call
            future = self._predictor.submit(self._release, call)
            submitted = True
            try:
                async with asyncio.timeout(limits.prediction_timeout):
                    return await future
            except TimeoutError:
                raise PayloadError(504, f"the prediction took longer than "
                                   f"{limits.prediction_timeout:g} s (mlops serve "
                                   "--prediction-timeout)") from None
        finally:
            if not submitted:
                self._in_flight -= 1

    def _release(self) -> None:
        self._in_flight -= 1

    def _body_late(self, task: asyncio.Task[Any]) -> None:
        self._late.add(task)
        task.cancel()

    def client_error(self, status: int, path: str, message: str) -> None:
        """Log a 4xx answer in one line (rate-limited; no stack trace)."""
        self._client_errors.log(status, path, message)

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        answer: Answer | None = None
        status = 500
        try:
            content_type = header(scope, b"content-type")
            max_rows = self.limits.max_rows
            request_body = b""

            def work(body: bytes) -> Answer | Deferred[Answer]:
                nonlocal request_body
                request_body = body
                if not content_type:
                    raise PayloadError(415, "Content-Type is required: application/json, "
                                       "text/csv or application/vnd.apache.parquet")
                answer = self.model.prepare(body, content_type, max_rows)
                return answer if isinstance(answer, Answer) else Deferred(answer)

            try:
                answer = await self.score(scope, receive, work)
            except (PayloadError, ClientGone):
                raise
            except Exception:
                request_id = uuid.uuid4().hex
                log.exception("request %s: unexpected error", request_id)
                answer = Answer(500, error_body(
                    500, f"unexpected server error (request id {request_id})",
                    request_id=request_id))
            status = answer.status
            if status == 200:
                # Kept before the answer leaves: its feedback may come at once.
                rid = request_id_of(scope)
                self.window.remember(rid, answer.predictions)
                await respond(send, status, answer.body,
                              [(b"content-type", answer.media_type.encode()),
                               (_REQUEST_ID, rid.encode())])
                metrics.observe_predictions(answer.predictions)
                if self.prediction_log_rate and random.random() < self.prediction_log_rate:
                    self._log_prediction(request_body, answer, time.perf_counter() - started,
                                         rid)
                return
            await respond(send, status, answer.body,
                          [(b"content-type", answer.media_type.encode())])
            if status < 500:
                self.client_error(status, "/invocations", _message(answer.body))
        except PayloadError as err:
            status = err.status
            await respond(send, status, error_body(status, err.message),
                          [*JSON, *error_headers(status)])
            self.client_error(status, "/invocations", err.message)
        except ClientGone:
            status = CLIENT_GONE
        finally:
            metrics.observe_request(status, answer.rows if answer else 0,
                                    time.perf_counter() - started)

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        def work(body: bytes) -> list[FeedbackItem] | Deferred[list[FeedbackItem]]:
            if len(body) > _INLINE_FEEDBACK_BYTES:
                return Deferred(functools.partial(parse_feedback, body))
            return parse_feedback(body)

        try:
            items = await self.score(scope, receive, work)
            # On the event loop, as the window is kept.
            summary = apply_feedback(self.window, items)
            await respond(send, 200, orjson.dumps(summary))
        except PayloadError as err:
            await respond(send, err.status, error_body(err.status, err.message),
                          [*JSON, *error_headers(err.status)])
            self.client_error(err.status, "/feedback", err.message)
        except ClientGone:
            pass
        except Exception:
            rid = uuid.uuid4().hex
            log.exception("request %s: unexpected error in /feedback", rid)
            await respond(send, 500, error_body(
                500, f"unexpected server error (request id {rid})", request_id=rid))

    def _log_prediction(self, body: bytes, answer: Answer, seconds: float,
                        rid: str) -> None:
        # One JSON line per sampled request on stdout, for any log shipper.
        info = self.model.info
        try:
            orjson.loads(body)
            inputs: object = orjson.Fragment(body)
        except orjson.JSONDecodeError:
            inputs = body.decode("utf-8", "replace")
        try:
            orjson.loads(answer.body)
            outputs: object = orjson.Fragment(answer.body)
        except orjson.JSONDecodeError:
            outputs = answer.body.decode("utf-8", "replace")
        sys.stdout.buffer.write(orjson.dumps({
            "ts": time.time(), "request_id": rid, "model_name": info.name,
            "model_version": info.version, "model_uri": info.uri, "inputs": inputs,
            "outputs": outputs, "latency_ms": round(seconds * 1000, 3),
        }) + b"\n")
        sys.stdout.buffer.flush()


def _always() -> bool:
    return True


class _ClientErrorLog:
    """One log line per client error, at most ``per_second`` a second; the rest are counted
    and reported with the next line, so a client sending bad requests in a loop cannot flood
    the log."""

    def __init__(self, per_second: int = 5) -> None:
        self._per_second = per_second
        self._second = 0
        self._lines = 0
        self._suppressed = 0

    def log(self, status: int, path: str, message: str) -> None:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines >= self._per_second:
            self._suppressed += 1
            return
        self._lines += 1
        more = f" ({self._suppressed} more client errors not logged)" if self._suppressed else ""
        self._suppressed = 0
        log.warning("%d %s: %s%s", status, path, one_line(message), more)


def _message(body: bytes) -> str:
    """The ``message`` of an error JSON body (or the body's start)."""
    try:
        return str(orjson.loads(body).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def _closing(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"connection", b"close")]
        await send(message)

    return wrapped


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
