"""The scoring server: a plain ASGI app (no framework between the socket and the model).

Routes: ``POST /invocations``, ``GET /ping``, ``GET /health``, ``GET /version``,
``GET /metrics``. Client errors answer 4xx with a JSON body ``{"error_code", "message"}``; a
model that raises answers 500 with a request id that is also in the log, with the traceback.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.model import ServedModel
from pulumi_mlops.runtime.serve.payload import Parsed, PayloadError, parse_body

__all__ = ["ScoringApp", "to_json_predictions"]

log = logging.getLogger("mlops.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_ROUTES = {"/invocations": "POST", "/ping": "GET", "/health": "GET", "/version": "GET",
           "/metrics": "GET"}
_STATUS_CODES = {400: "BAD_REQUEST", 404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL_ERROR",
                 503: "SERVICE_UNAVAILABLE"}


def to_json_predictions(predictions: Any) -> bytes:
    """``{"predictions": …}`` as MLflow's scoring server shapes it."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        value: Any = predictions.to_dict(orient="records")
    elif isinstance(predictions, pd.Series):
        value = predictions.tolist()
    else:
        value = predictions
    return orjson.dumps({"predictions": value},
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class ScoringApp:
    """ASGI application serving one model.

    Attributes:
        ready: False while loading or draining; ``/ping`` and ``/health`` answer 503 then.
    """

    def __init__(self, model: ServedModel, *, max_body_bytes: int = 16 * 2**20,
                 server_version: str = "", prediction_log_rate: float = 0.0) -> None:
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.prediction_log_rate = prediction_log_rate
        self.ready = True
        info = model.info
        self._version = orjson.dumps({
            "server": "pulumi-mlops", "server_version": server_version,
            "model_uri": info.uri, "model_name": info.name, "model_version": info.version,
            "model_alias": info.alias, "run_id": info.run_id,
            "fast_path": model.fast_predict is not None,
        })
        metrics.model_info(info)

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
        expected = _ROUTES.get(path)
        if expected is None:
            await _respond(send, 404, _error(404, f"no route {path}"))
        elif method != expected and not (method == "HEAD" and expected == "GET"):
            await _respond(send, 405, _error(405, f"{path} accepts {expected} only"),
                           [(b"allow", expected.encode())])
        elif path == "/invocations":
            await self._invocations(scope, receive, send)
        elif path in ("/ping", "/health"):
            status = 200 if self.ready else 503
            await _respond(send, status, b"\n" if self.ready else b"draining\n", _TEXT)
        elif path == "/version":
            await _respond(send, 200, self._version)
        else:
            if self.model.drift is not None:
                metrics.publish_drift(self.model.drift)
            body, content_type = metrics.exposition()
            await _respond(send, 200, body, [(b"content-type", content_type.encode())])

    def _log_prediction(self, parsed: Parsed, payload: bytes, seconds: float) -> None:
        # One JSON line per sampled request on stdout, for any log shipper.
        sys.stdout.buffer.write(_prediction_record(self, parsed, payload, seconds))
        sys.stdout.buffer.flush()

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status, rows = 200, 0
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
            parsed = parse_body(body, _header(scope, b"content-type"))
            rows = len(parsed.rows)
            try:
                predictions = self.model.predict(parsed)
            except PayloadError:
                raise
            except Exception:
                request_id = uuid.uuid4().hex
                log.exception("request %s: the model raised on a valid payload", request_id)
                status = 500
                await _respond(send, 500, _error(
                    500, f"the model failed on this input (request id {request_id})",
                    request_id=request_id))
                return
            payload = to_json_predictions(predictions)
            metrics.observe_predictions(predictions)
            await _respond(send, 200, payload)
            if self.prediction_log_rate and random.random() < self.prediction_log_rate:
                self._log_prediction(parsed, payload, time.perf_counter() - started)
        except PayloadError as err:
            status = err.status
            await _respond(send, err.status, _error(err.status, err.message))
        finally:
            metrics.observe_request(status, rows, time.perf_counter() - started)


def _closing(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"connection", b"close")]
        await send(message)

    return wrapped


def _prediction_record(app: ScoringApp, parsed: Parsed, payload: bytes,
                       seconds: float) -> bytes:
    info = app.model.info
    return orjson.dumps({
        "ts": time.time(), "request_id": uuid.uuid4().hex, "model_name": info.name,
        "model_version": info.version, "model_uri": info.uri,
        "inputs": {"columns": parsed.columns, "data": parsed.rows},
        "outputs": orjson.Fragment(payload), "latency_ms": round(seconds * 1000, 3),
    }) + b"\n"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(413, f"body over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, f"body over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(status: int, message: str, **extra: str) -> bytes:
    return orjson.dumps({"error_code": _STATUS_CODES.get(status, "ERROR"), "message": message,
                         **extra})


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*(headers or _JSON), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

