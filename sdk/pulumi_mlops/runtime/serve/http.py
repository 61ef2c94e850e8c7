"""Small ASGI plumbing shared by the scoring routes (MLflow's and the Open Inference Protocol's):
reading a bounded body, answering with a body and headers, and the JSON error shape
``{"error_code", "message"}`` MLflow's scoring server answers with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["CLIENT_GONE", "JSON", "TEXT", "BodyTooLarge", "ClientGone", "Message", "Receive",
           "Scope", "Send", "error_body", "error_headers", "header", "read_body", "respond"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]

_ERROR_CODES = {400: "BAD_REQUEST", 404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                408: "REQUEST_TIMEOUT", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
                431: "REQUEST_HEADER_FIELDS_TOO_LARGE", 500: "INTERNAL_ERROR",
                503: "SERVICE_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# The status a request is counted under when its client left before its body was complete
# (nginx's convention; nothing is sent).
CLIENT_GONE = 499
# Where the server is busy (503), a client may try again in a second; a client too slow to
# send its body (408) is disconnected.
_EXTRA_HEADERS = {503: [(b"retry-after", b"1")], 408: [(b"connection", b"close")]}


class BodyTooLarge(Exception):
    """The request body is over the limit (answer 413)."""


class ClientGone(Exception):
    """The client closed the connection before its request body was complete (no answer)."""


def header(scope: Scope, name: bytes) -> str | None:
    """The value of request header ``name`` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body.

    Raises:
        BodyTooLarge: the declared or received length is over ``limit`` bytes.
        ClientGone: the client disconnected first.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def error_body(status: int, message: str, **extra: str) -> bytes:
    """MLflow's error JSON: ``{"error_code": …, "message": …}``."""
    return orjson.dumps({"error_code": _ERROR_CODES.get(status, "ERROR"), "message": message,
                         **extra})


def error_headers(status: int) -> list[tuple[bytes, bytes]]:
    """Headers an error answer adds to its content type: ``Retry-After`` when the server is
    busy (503), ``Connection: close`` for a client too slow to send its body (408)."""
    return _EXTRA_HEADERS.get(status, [])


async def respond(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with ``body`` (JSON unless ``headers`` say otherwise)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*(headers or JSON), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
