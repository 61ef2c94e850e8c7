"""The registry's cap on request bodies, run inside MLflow's own image (which does not carry
pulumi-mlops): a file the registry's plan mounts and puts on ``PYTHONPATH``, named to uvicorn by
``mlflow server --uvicorn-opts "--http mlflow_upload_cap:CappedProtocol"``.

Why: MLflow 3.17 has no option bounding a request body, and its artifact proxy streams an upload
of any size into the artifact store (``PUT /api/2.0/mlflow-artifacts/artifacts/...``, natively
in FastAPI; Flask's ``MAX_CONTENT_LENGTH`` does not see it), which any authenticated user may
call. uvicorn has no such bound either; it takes an HTTP protocol class by import path, and this
one is uvicorn's own (the one ``--http auto`` picks) with the server's app wrapped in
`BodyCap` before the first request.

`BodyCap` answers 413 to a request whose ``Content-Length`` is over ``MLOPS_MAX_REQUEST_BYTES``
without calling MLflow, and to a chunked one once what it sent goes over: MLflow's handler then
fails reading the body, so its staged upload is deleted (nothing is kept), and the answer it
would give is replaced by the 413. The process does not start without a valid limit.
"""

from __future__ import annotations

import os
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

LIMIT = int(os.environ["MLOPS_MAX_REQUEST_BYTES"])
if LIMIT < 1:
    raise ValueError(f"MLOPS_MAX_REQUEST_BYTES must be positive, got {LIMIT}")


class BodyTooLargeError(Exception):
    """Raised to the app reading a body past the limit."""


class BodyCap:
    """ASGI middleware: 413 for a request body over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server refuses a malformed length itself
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        over = answered = False

        async def capped_receive() -> Any:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise BodyTooLargeError(f"request body over {self.limit} bytes")
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal answered
            if over:
                return  # the app's answer to a body cut short: the 413 replaces it
            answered = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = (b'{"error_code": "RESOURCE_EXHAUSTED", "message": "The request body is over the '
                b"registry's limit of " + str(self.limit).encode() + b' bytes."}')
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


_Base: Any = import_from_string(HTTP_PROTOCOLS["auto"])


class CappedProtocol(_Base):  # type: ignore[misc]
    """uvicorn's HTTP protocol, serving the app behind `BodyCap`."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if not config.loaded:
            config.load()
        if not isinstance(config.loaded_app, BodyCap):
            config.loaded_app = BodyCap(config.loaded_app, LIMIT)
        super().__init__(config, *args, **kwargs)
