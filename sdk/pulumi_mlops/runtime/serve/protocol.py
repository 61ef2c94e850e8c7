"""uvicorn's httptools HTTP/1.1 protocol with bounds on the request head.

uvicorn bounds neither the size of a request's headers nor the time a client may take to send
them: a client that opens a connection and sends nothing, or sends its headers a byte at a
time, holds a file descriptor forever, and a huge header is parsed (slowly) to its end. This
subclass adds the two bounds of `Limits`: ``max_header_bytes`` (431, then close; counted per
received chunk, so exact to within one socket read) and ``header_timeout`` (408, then close;
checked by `deadlines`, so up to ``SWEEP_SECONDS`` late), and leaves everything else to
uvicorn. It relies on
uvicorn's ``HttpToolsProtocol`` hooks (``connection_made``, ``data_received``,
``on_message_begin``, ``on_headers_complete``, ``connection_lost``), which
``tests/e2e/test_serve_limits_e2e.py`` exercises against the pinned uvicorn.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pulumi_mlops.runtime.serve.deadlines import deadlines
from pulumi_mlops.runtime.serve.http import error_body
from pulumi_mlops.runtime.serve.limits import Limits

__all__ = ["bounded_protocol"]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def bounded_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class, bounded by ``limits`` (pass it as ``http=``)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        # Bytes received since the current request began, while its head is incomplete
        # (counting the whole read the request began in), and the size of the latest read.
        _head_bytes = 0
        _read_bytes = 0
        _in_head = False
        # Answered 431 or 408 and closing: the rest of the data is not parsed.
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._deadlines = deadlines(self.loop)
            self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            self._read_bytes = len(data)
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            # A head still arriving: bounded before the parser accumulates it all.
            if self._in_head and self._head_bytes > limits.max_header_bytes:
                self._too_large()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:  # a later request on a keep-alive connection
                self._start_head()

        def on_headers_complete(self) -> None:
            self._stop_head()
            # A head that arrived in one piece with its request (only then can the bytes
            # received exceed the bound while the head itself stays under it).
            if self._head_bytes > limits.max_header_bytes and len(self.url) + sum(
                    len(k) + len(v) + 4 for k, v in self.headers) > limits.max_header_bytes:
                self._too_large()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def _start_head(self) -> None:
            self._in_head = True
            self._head_bytes = self._read_bytes
            self._deadlines.add(self, limits.header_timeout, self._head_late)

        def _stop_head(self) -> None:
            if self._in_head:
                self._in_head = False
                self._deadlines.remove(self)

        def _too_large(self) -> None:
            self._refuse(431, f"request headers over the {limits.max_header_bytes}-byte limit "
                              "(mlops serve --max-header-bytes)")

        def _head_late(self) -> None:
            self._refuse(408, f"request headers did not arrive within {limits.header_timeout:g}"
                              " s (mlops serve --header-timeout)")

        def _refuse(self, status: int, message: str) -> None:
            self._stop_head()
            self._refused = True
            if self.transport.is_closing():
                return
            body = error_body(status, message)
            self.transport.write(b"".join([
                b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n", body]))
            self.transport.close()

    return BoundedHttpToolsProtocol
