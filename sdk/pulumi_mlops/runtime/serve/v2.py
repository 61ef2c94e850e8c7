"""The Open Inference Protocol (KServe's V2 REST protocol) for the served model.

Routes (everything under ``/v2``):

| route | answer |
|---|---|
| ``GET /v2`` | server metadata: ``name``, ``version``, ``extensions`` |
| ``GET /v2/health/live`` | 200 ``{"live": true}`` while the process answers |
| ``GET /v2/health/ready`` | 200 ``{"ready": true}``; 503 ``{"ready": false}`` while draining |
| ``GET /v2/models/{name}[/versions/{version}]`` | model metadata |
| ``GET /v2/models/{name}[/versions/{version}]/ready`` | 200, or 503 while draining |
| ``POST /v2/models/{name}[/versions/{version}]/infer`` | inference |

``{name}`` is the registered model name for a ``models:/`` URI, otherwise the last segment of
the URI or path (``/models/churn`` → ``churn``, ``runs:/<id>/model`` → ``model``); the only
version is the registered version (none for other URIs). Another name or version answers 404.
Errors answer ``{"error": "…"}``: 400 for a malformed request or input the model refuses, 404,
405, 413 (body over ``--max-body-bytes``), 500 for a model that raises (with a request id that
is in the log, with the traceback).

Requests are decoded and answers encoded by `pulumi_mlops.runtime.serve.v2_codec`; the inputs
become what pyfunc takes in `pulumi_mlops.runtime.serve.v2_input`; model metadata is
`pulumi_mlops.runtime.serve.v2_metadata`.

Request ids: an inference answer's ``id`` is the request's ``id``, or, when it gave none, its
``X-Request-Id`` header when well formed, else a new one; a well-formed id is also sent in an
``X-Request-Id`` header, and the answer's predictions are kept under it for ``/feedback``
(`pulumi_mlops.runtime.serve.feedback`).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from pulumi_mlops.runtime.serve import metrics
from pulumi_mlops.runtime.serve.feedback import (
    REQUEST_ID_HEADER,
    PredictionWindow,
    request_id_of,
    well_formed_id,
)
from pulumi_mlops.runtime.serve.http import (
    CLIENT_GONE,
    ClientGone,
    Receive,
    Scope,
    Send,
    error_headers,
    header,
    respond,
)
from pulumi_mlops.runtime.serve.offload import Deferred
from pulumi_mlops.runtime.serve.payload import PayloadError
from pulumi_mlops.runtime.serve.v2_codec import decode_request, encode_outputs
from pulumi_mlops.runtime.serve.v2_input import model_input
from pulumi_mlops.runtime.serve.v2_metadata import model_metadata, served_name

if TYPE_CHECKING:
    from pulumi_mlops.runtime.serve.limits import Limits
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["handle"]

log = logging.getLogger("mlops.serve")

SERVER_NAME = "pulumi-mlops"
EXTENSIONS = ("binary_tensor_data",)
_HEADER_LENGTH = b"inference-header-content-length"
T = TypeVar("T")


class _App(Protocol):
    """What `handle` needs of the scoring app."""

    model: ServedModel
    ready: bool
    limits: Limits
    server_version: str
    workers_alive: Callable[[], bool]
    window: PredictionWindow

    def score(self, scope: Scope, receive: Receive,
              work: Callable[[bytes], T | Deferred[T]]) -> Awaitable[T]:
        """Read the body within the limits; ``work(body)`` answers or returns the `Deferred`
        call that does, run off the event loop."""

    def client_error(self, status: int, path: str, message: str) -> None:
        """Log a 4xx answer in one line."""


# --------------------------------------------------------------------------- routing


async def handle(app: _App, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request whose path is ``/v2`` or under it."""
    parts = [p for p in scope["path"][len("/v2"):].split("/") if p]
    method = scope["method"]
    if parts == []:
        route, allowed = "server", "GET"
    elif parts in (["health", "live"], ["health", "ready"]):
        route, allowed = parts[1], "GET"
    elif len(parts) >= 2 and parts[0] == "models":
        name, rest = parts[1], parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                await _error(send, 404, f"no route {scope['path']}")
                return
            version, rest = rest[1], rest[2:]
        if rest == []:
            route, allowed = "metadata", "GET"
        elif rest in (["ready"], ["infer"]):
            route, allowed = rest[0], "GET" if rest == ["ready"] else "POST"
        else:
            await _error(send, 404, f"no route {scope['path']}")
            return
    else:
        await _error(send, 404, f"no route {scope['path']}")
        return
    if method != allowed and not (method == "HEAD" and allowed == "GET"):
        await _error(send, 405, f"{scope['path']} accepts {allowed} only",
                     [(b"allow", allowed.encode())])
        return
    if route == "server":
        await respond(send, 200, orjson.dumps(
            {"name": SERVER_NAME, "version": app.server_version, "extensions": EXTENSIONS}))
    elif route == "live":
        await respond(send, 200, b'{"live":true}')
    elif route == "ready":
        if parts[0] == "health":
            ready = app.ready and app.workers_alive()
            await respond(send, 200 if ready else 503, orjson.dumps({"ready": ready}))
        elif await _known(app, send, name, version):
            await respond(send, 200 if app.ready else 503,
                          orjson.dumps({"name": name, "ready": app.ready}))
    elif not await _known(app, send, name, version):
        return
    elif route == "metadata":
        await respond(send, 200, orjson.dumps(model_metadata(app.model).document()))
    else:
        await _infer(app, scope, receive, send)


async def _known(app: _App, send: Send, name: str, version: str | None) -> bool:
    """Whether the path names the served model (answering 404 when it does not)."""
    served, served_version = served_name(app.model), app.model.info.version
    if name != served:
        await _error(send, 404, f"model '{name}' is not served here (this server serves "
                     f"'{served}')")
        return False
    if version is not None and version != served_version:
        have = f"version {served_version} only" if served_version else "no versions"
        await _error(send, 404, f"model '{name}' has no version '{version}' here ({have})")
        return False
    return True


async def _error(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, orjson.dumps({"error": message}),
                  [(b"content-type", b"application/json"), *(headers or [])])


# --------------------------------------------------------------------------- inference


@dataclass
class _Inferred:
    """A V2 inference answer, built on the prediction thread."""

    document: bytes
    chunks: list[bytes]
    predictions: Any
    rows: int
    id: str


def _inferred(model: ServedModel, body: bytes, binary_header: str | None,
              max_rows: int, header_id: str) -> _Inferred:
    """Decode, predict and encode one inference request (off the event loop); its id is the
    request's ``id``, or ``header_id`` (the header's, or a new one) when it gave none.

    Raises:
        PayloadError: a client error (4xx).
        _ModelFailed: the model raised on a valid request.
    """
    request = decode_request(body, binary_header)
    data, rows = model_input(request, model)
    try:
        predictions = model.predict_data(data, request.params, max_rows)
        outputs, chunks = encode_outputs(predictions, request)
    except PayloadError:
        raise
    except Exception as err:
        raise _ModelFailed from err
    answer: dict[str, Any] = {"model_name": served_name(model)}
    if model.info.version is not None:
        answer["model_version"] = model.info.version
    answer["id"] = rid = request.id if request.id is not None else header_id
    answer["outputs"] = outputs
    document = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    return _Inferred(document, chunks, predictions, rows, rid)


class _ModelFailed(Exception):
    """The model raised on a valid inference request (answer 500; the cause is logged)."""


async def _infer(app: _App, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    status, rows = 500, 0
    model = app.model
    binary_header = header(scope, _HEADER_LENGTH)
    header_id = request_id_of(scope)
    try:
        try:
            def work(body: bytes) -> _Inferred | Deferred[_Inferred]:
                # Always off the event loop, decoding included.
                return Deferred(functools.partial(_inferred, model, body, binary_header,
                                                  app.limits.max_rows, header_id))

            inferred = await app.score(scope, receive, work)
        except _ModelFailed as err:
            request_id = uuid.uuid4().hex
            log.error("request %s: the model failed on a valid V2 inference request",
                      request_id, exc_info=err.__cause__)
            await _error(send, 500, f"the model failed on this input (request id "
                         f"{request_id})")
            return
        status, rows = 200, inferred.rows
        # A client's own id that cannot be a header (or a bounded key) is only echoed.
        id_header: list[tuple[bytes, bytes]] = []
        if inferred.id is header_id or well_formed_id(inferred.id):
            id_header = [(REQUEST_ID_HEADER, inferred.id.encode())]
            app.window.remember(inferred.id, inferred.predictions)  # before the answer leaves
        if inferred.chunks:
            await respond(send, 200, b"".join([inferred.document, *inferred.chunks]), [
                (b"content-type", b"application/octet-stream"),
                (_HEADER_LENGTH, str(len(inferred.document)).encode()), *id_header])
        else:
            await respond(send, 200, inferred.document,
                          [(b"content-type", b"application/json"), *id_header])
        metrics.observe_predictions(inferred.predictions)
    except PayloadError as err:
        status = err.status
        await _error(send, status, err.message, error_headers(status))
        app.client_error(status, scope["path"], err.message)
    except ClientGone:
        status = CLIENT_GONE
    finally:
        metrics.observe_request(status, rows, time.perf_counter() - started)
