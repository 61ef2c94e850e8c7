"""Call an ASGI app in-process, as uvicorn would for one HTTP request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def asgi_request(app: App, method: str, path: str, body: bytes = b"",
                 headers: list[tuple[bytes, bytes]] | None = None,
                 server: tuple[str, int] = ("127.0.0.1", 8080),
                 ) -> tuple[int, bytes, dict[bytes, bytes]]:
    """Status, body and headers of the app's answer to one request (Content-Length is set),
    received at ``server`` (the listening socket's address, as uvicorn sets it)."""
    scope = {"type": "http", "method": method, "path": path, "server": server,
             "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]}
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # A private loop: asyncio.run() would leave the thread without one for later tests.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app(scope, receive, send))
    finally:
        loop.close()
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], payload, dict(sent[0]["headers"])
