"""The scoring server: a plain ASGI app (no framework between the socket and the model).

Routes, as MLflow's scoring server answers them: ``POST /invocations``, ``GET /ping``,
``GET /health``, ``GET /version`` (the MLflow version, as text); the Open Inference Protocol
under ``/v2`` (`pulumi_mlops.runtime.serve.v2`); and ``GET /metrics``. Errors answer MLflow's
JSON ``{"error_code", "message"}``; a stack trace is logged with a request id, never sent.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import uuid

import orjson

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.http import (
    TEXT,
    BodyTooLarge,
    Message,
    Receive,
    Scope,
    Send,
    error_body,
    header,
    read_body,
    respond,
)
from pulumi_mlops.runtime.serve.model import Answer, ServedModel, mlflow_version
from pulumi_mlops.runtime.serve.payload import PayloadError

__all__ = ["ScoringApp"]

log = logging.getLogger("mlops.serve")

_ROUTES = {"/invocations": "POST", "/ping": "GET", "/health": "GET", "/version": "GET",
           "/metrics": "GET"}


class ScoringApp:
    """ASGI application serving one model.

    Attributes:
        ready: False while loading or draining; ``/ping`` and ``/health`` answer 503 then.
        server_version: This package's version (the Open Inference Protocol's server metadata).
    """

    def __init__(self, model: ServedModel, *, max_body_bytes: int = 16 * 2**20,
                 prediction_log_rate: float = 0.0) -> None:
        from pulumi_mlops import __version__  # names load lazily: no Pulumi import

        self.model = model
        self.max_body_bytes = max_body_bytes
        self.prediction_log_rate = prediction_log_rate
        self.server_version = str(__version__)
        self.ready = True
        self._mlflow_version = mlflow_version().encode()
        metrics.model_info(model.info)

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
        elif path in ("/ping", "/health"):
            status = 200 if self.ready else 503
            await respond(send, status, b"\n" if self.ready else b"draining\n", TEXT)
        elif path == "/version":
            await respond(send, 200, self._mlflow_version)
        else:
            if self.model.drift is not None:
                metrics.publish_drift(self.model.drift)
            body, content_type = metrics.exposition()
            await respond(send, 200, body, [(b"content-type", content_type.encode())])

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        answer: Answer | None = None
        status = 500
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            content_type = header(scope, b"content-type")
            if not content_type:
                raise PayloadError(415, "Content-Type is required: application/json, "
                                   "text/csv or application/vnd.apache.parquet")
            try:
                answer = self.model.invoke(body, content_type)
            except PayloadError:
                raise
            except Exception:
                request_id = uuid.uuid4().hex
                log.exception("request %s: unexpected error", request_id)
                answer = Answer(500, error_body(
                    500, f"unexpected server error (request id {request_id})",
                    request_id=request_id))
            status = answer.status
            await respond(send, status, answer.body,
                          [(b"content-type", answer.media_type.encode())])
            if status == 200:
                metrics.observe_predictions(answer.predictions)
                if self.prediction_log_rate and random.random() < self.prediction_log_rate:
                    self._log_prediction(body, answer, time.perf_counter() - started)
        except BodyTooLarge as err:
            status = 413
            await respond(send, 413, error_body(413, str(err)))
        except PayloadError as err:
            status = err.status
            await respond(send, err.status, error_body(err.status, err.message))
        finally:
            metrics.observe_request(status, answer.rows if answer else 0,
                                    time.perf_counter() - started)

    def _log_prediction(self, body: bytes, answer: Answer, seconds: float) -> None:
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
            "ts": time.time(), "request_id": uuid.uuid4().hex, "model_name": info.name,
            "model_version": info.version, "model_uri": info.uri, "inputs": inputs,
            "outputs": outputs, "latency_ms": round(seconds * 1000, 3),
        }) + b"\n")
        sys.stdout.buffer.flush()


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
