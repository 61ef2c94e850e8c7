"""Wait, alive and unready, for the alias a ``models:/name@alias`` URI names to exist.

A fresh stack's model service can start before its retrain has registered and promoted a
model. Exiting then would only restart-loop the container; instead the server listens at once
with a small stand-in (`WaitingServer`): ``/ping`` and ``/v2/health/live`` answer 200 (the
process is alive), ``/health`` and ``/v2/health/ready`` 503 naming the alias, ``/metrics`` 200
with ``mlops_model_loaded 0`` (so that an alert tells a server waiting for its model from one
that is down: the scoring server answers the same gauge with 1), and every other route
(``/invocations``, ``/v2`` inference, ``/feedback``) 503 with ``Retry-After``. The registry is
polled every ``alias_poll_seconds``; once the alias exists, the model is fetched and loaded as usual
(the stand-in answers meanwhile) and the scoring server takes its listening socket over,
so no connection is refused in between (several workers then share that one socket).

Only a missing registered model or alias is waited for, and only against an HTTP(S) tracking
server (`pulumi_mlops.runtime.mlflow_rest`): any other answer (credentials refused, a version
number that does not exist, an unreachable registry) goes to the usual fetch, which fails as
it always has.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import TYPE_CHECKING, Any

from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.contracts.model_uri import ModelRef, parse_model_uri
from pulumi_mlops.runtime._text import one_line
from pulumi_mlops.runtime.mlflow_rest import RegistryError, RestRegistry
from pulumi_mlops.runtime.serve.http import error_body

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["DEFAULT_ALIAS_POLL_SECONDS", "STOPPED", "WaitingServer", "alias_missing",
           "model_loaded_family", "wait_for_alias"]

log = logging.getLogger("mlops.serve")

# Often enough that a promoted model is served within seconds, rarely enough that many
# waiting replicas do not load the registry (one small GET each).
DEFAULT_ALIAS_POLL_SECONDS = 10.0
# How often the wait is logged again after its first line.
_LOG_EVERY_SECONDS = 60.0
_LIVE = ("/ping", "/v2/health/live")
_READY = ("/health", "/v2/health/ready")
# A request body read (and dropped) before answering, so closing the connection does not reset
# it under a client still sending; larger bodies are not read.
_MAX_DRAINED_BYTES = 16 * 2**20
STOPPED = "stopped"
_METRICS = "/metrics"


def model_loaded_family(value: int) -> Metric:
    """The `names.MODEL_LOADED` gauge at ``value`` (1 loaded, 0 waiting), as the stand-in and
    the scoring server both expose it.

    prometheus_client is imported here, not with this module: ``mlops serve`` imports this
    module before it sets ``PROMETHEUS_MULTIPROC_DIR``, which prometheus_client reads when it
    is first imported.
    """
    from prometheus_client.metrics_core import GaugeMetricFamily

    return GaugeMetricFamily(names.MODEL_LOADED, "Whether the server serves its model (1) or "
                             "waits for it (0)", value=value)


def _waiting_metrics() -> tuple[bytes, str]:
    """The stand-in's metrics page: only ``mlops_model_loaded 0``."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class Waiting(Collector):
        def collect(self) -> list[Metric]:
            return [model_loaded_family(0)]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Waiting())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def alias_missing(rest: RestRegistry, name: str, alias: str) -> bool:
    """Whether the registered model ``name`` or its alias ``alias`` does not exist (yet).

    False for an alias that exists and for any other failure (credentials refused, registry
    unreachable): those are for the fetch to report.
    """
    try:
        rest.model_version(name, alias=alias)
    except RegistryError as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":  # no registered model of that name
            return True
        if err.status == 400 and err.error_code == "INVALID_PARAMETER_VALUE":
            # MLflow answers a missing alias of an existing model so, as it does a malformed
            # request: the model's own list of aliases tells them apart.
            return _alias_not_listed(rest, name, alias)
        return False
    except Exception:  # unreachable, a deadline: the fetch retries and reports it
        return False
    return False


def _alias_not_listed(rest: RestRegistry, name: str, alias: str) -> bool:
    try:
        aliases = rest.registered_model(name).get("aliases") or []
    except Exception:
        return False
    return all(entry.get("alias") != alias for entry in aliases if isinstance(entry, dict))


class WaitingServer(ThreadingHTTPServer):
    """The stand-in that answers while no model is loaded (see the module docstring).

    Args:
        listen: The listening socket, bound; handed over to the scoring server later, so that
            no connection is refused between the two.
        message: What ``/health`` and the 503 answers say.
        retry_after: Seconds a client is told to wait (``Retry-After``).
        metrics_listen: The metrics port's listening socket (``mlops serve --metrics-port``),
            answering ``/metrics`` only (which ``listen`` then does not), handed over too.
            Default: none, ``/metrics`` on ``listen``.

    Attributes:
        message: What ``/health`` and the 503 answers say (may be changed while serving).
    """

    daemon_threads = True
    routes: str = "all"
    """``all``, ``no-metrics`` (beside a metrics port) or ``metrics`` (the metrics port)."""

    def __init__(self, listen: socket.socket, message: str, retry_after: float,
                 metrics_listen: socket.socket | None = None) -> None:
        self.message = message
        self.retry_after = str(max(1, round(retry_after)))
        self.address_family = listen.family
        super().__init__(listen.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listen
        self.server_address = listen.getsockname()
        self.metrics: WaitingServer | None = None
        if metrics_listen is not None:
            self.routes = "no-metrics"
            self.metrics = WaitingServer(metrics_listen, message, retry_after)
            self.metrics.routes = "metrics"
        self._thread = threading.Thread(target=self.serve_forever, name="waiting-server",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    def hand_over(self) -> socket.socket:
        """Stop accepting and return the listening socket, still open: connections that
        arrive from now on wait in its queue for the scoring server (get the metrics port's
        with `hand_over_metrics`)."""
        self.shutdown()
        self._thread.join()
        return self.socket

    def hand_over_metrics(self) -> socket.socket | None:
        """As `hand_over`, for the metrics port's socket; None without one."""
        return None if self.metrics is None else self.metrics.hand_over()

    def close(self) -> None:
        """Stop answering and close the listening sockets."""
        self.hand_over().close()
        metrics = self.hand_over_metrics()
        if metrics is not None:
            metrics.close()


class _Handler(BaseHTTPRequestHandler):
    server: WaitingServer
    timeout = 5  # a client that sends nothing does not hold a thread

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = self.server.routes
        if routes != "all" and (routes == "metrics") != (path == _METRICS):
            self._answer(404, error_body(404, f"no route {path} on this port"),
                         "application/json")
        elif path in _LIVE:
            self._answer(200, b"\n", "text/plain; charset=utf-8")
        elif path in _READY:
            self._answer(503, f"{self.server.message}\n".encode(), "text/plain; charset=utf-8")
        elif path == _METRICS:
            self._answer(200, *_waiting_metrics())
        else:
            self._unavailable()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        if self.server.routes == "metrics":
            self._answer(404, error_body(404, "this port answers GET /metrics only"),
                         "application/json")
            return
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) <= _MAX_DRAINED_BYTES:
            left = int(length)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
        self._unavailable()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _unavailable(self) -> None:
        self._answer(503, error_body(503, self.server.message), "application/json",
                     retry_after=True)

    def _answer(self, status: int, body: bytes, content_type: str, *,
                retry_after: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if retry_after:
            self.send_header("Retry-After", self.server.retry_after)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: not worth a line each


def _alias_ref(uri: str) -> ModelRef | None:
    try:
        ref = parse_model_uri(uri)
    except ValueError:
        return None
    return ref if ref.alias else None


def wait_for_alias(uri: str, listen: Callable[[], socket.socket],
                   poll_seconds: float = DEFAULT_ALIAS_POLL_SECONDS,
                   metrics_listen: Callable[[], socket.socket] | None = None,
                   ) -> WaitingServer | str | None:
    """If ``uri`` names an alias (or a registered model) that does not exist yet, answer
    unready on the socket ``listen()`` binds (and metrics on ``metrics_listen()``'s, when
    given) and poll the registry every ``poll_seconds`` until it does.

    Returns:
        None when there was nothing to wait for; the `WaitingServer`, still answering (the
        caller closes it when the model is ready to be served), once the alias exists;
        `STOPPED` when SIGTERM or SIGINT came while waiting.
    """
    ref = _alias_ref(uri)
    if ref is None or ref.alias is None:
        return None
    try:
        rest = RestRegistry.from_env()
    except ValueError:  # bad TLS settings: the fetch reports them
        return None
    if rest is None or not alias_missing(rest, ref.name, ref.alias):
        return None
    waiting = f"waiting for {uri}: the alias does not exist yet"
    server = WaitingServer(listen(), waiting, poll_seconds,
                           None if metrics_listen is None else metrics_listen())
    log.warning("%s; polling the registry every %g s (mlops serve --alias-poll-seconds), "
                "unready on port %d", waiting, poll_seconds, server.port)
    stop = threading.Event()

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = last_log = time.monotonic()
    try:
        while not stop.wait(poll_seconds):
            if not alias_missing(rest, ref.name, ref.alias):
                break
            if time.monotonic() - last_log >= _LOG_EVERY_SECONDS:
                last_log = time.monotonic()
                log.warning("%s (for %.0f s)", waiting, last_log - started)
    except BaseException as err:
        server.close()
        log.error("waiting for %s failed: %s", uri, one_line(err))
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        server.close()
        log.info("stopped while waiting for %s", uri)
        return STOPPED
    server.message = f"loading {uri}: the alias exists now"
    log.info("%s exists now: loading it", uri)
    return server
