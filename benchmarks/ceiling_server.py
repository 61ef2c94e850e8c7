"""The bare ceiling for `mlops serve`: the least a Python model server can do per request.

A minimal ASGI app on uvicorn (uvloop, httptools) that loads the same estimator (joblib),
parses the ``dataframe_split`` JSON body with orjson, builds ``np.asarray(data, float64)``,
calls ``predict`` and answers ``{"predictions": …}``. No validation, no metrics, no drift, no
routing beyond ``POST /invocations`` and ``GET /ping``. Whatever `mlops serve` does on top of
this is overhead that the benchmark reports as "our share of the ceiling".

With ``--workers N`` the estimator is loaded once and N workers are forked that listen on one
port as `mlops serve --workers N` does: each binds its own SO_REUSEPORT socket once started,
so the kernel spreads connections over them (``--shared-socket`` makes them share one socket
instead, for comparison). Its socket and fork code is written out here rather than imported
from `pulumi_mlops.runtime.serve.server` on purpose: the ceiling must not move when our server
changes.

Usage (the benchmark starts it; it is not meant to be deployed)::

    python benchmarks/ceiling_server.py --model estimator.pkl --port 8090 --workers 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import joblib
import numpy as np
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


def make_app(predict: Callable[[Any], Any]) -> Callable[[Scope, Receive, Send],
                                                         Awaitable[None]]:
    """The ASGI app around ``predict``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/invocations":
            message = await receive()
            body = message.get("body", b"")
            while message.get("more_body", False):
                message = await receive()
                body += message.get("body", b"")
            data = orjson.loads(body)["dataframe_split"]["data"]
            predictions = predict(np.asarray(data, dtype=np.float64))
            out = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
            status = 200
        elif scope["path"] == "/ping":
            out, status = b"\n", 200
        else:
            out, status = b'{"error_code": "ENDPOINT_NOT_FOUND"}', 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


def _listen(host: str, port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run(sock: socket.socket, app: Any) -> None:
    import uvicorn

    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off",
                            access_log=False, log_level="warning", backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="scikit-learn estimator dumped with joblib")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shared-socket", action="store_true",
                        help="workers share one socket instead of one SO_REUSEPORT socket each")
    ns = parser.parse_args(argv)
    with open(ns.model, "rb") as f:
        estimator = joblib.load(f)
    # Fitted on a DataFrame, the estimator would warn on every matrix: no feature names.
    warnings.simplefilter("ignore")
    app = make_app(estimator.predict)
    if ns.workers <= 1:
        _run(_listen(ns.host, ns.port, False), app)
        return 0
    shared = _listen(ns.host, ns.port, False)
    port = shared.getsockname()[1]
    if not ns.shared_socket:
        shared.close()
    children: list[int] = []
    for _ in range(ns.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run(shared if ns.shared_socket else _listen(ns.host, port, True), app)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    shared.close()

    def forward(sig: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


if __name__ == "__main__":
    sys.exit(main())
