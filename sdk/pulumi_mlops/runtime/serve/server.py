"""Run the scoring server: load once, then fork workers that listen on one port.

Loading before forking means one model load however many workers (a faster cold start, and
copy-on-write sharing of the model's memory). The drift window is shared by the workers, so
the drift gauges describe the recent inputs of all of them. uvicorn with uvloop and httptools
carries HTTP.

SIGTERM: ``/ping`` and ``/health`` turn 503, requests keep being served for
``drain_seconds`` (time for the load balancer to notice), then the listener closes, in-flight
requests finish, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import importlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulumi_mlops.runtime.drift import DriftMonitor
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["ServeOptions", "serve"]

log = logging.getLogger("mlops.serve")

EXIT_LOAD_FAILED = 3
_DRIFT_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class ServeOptions:
    """Options of ``mlops serve``.

    Attributes:
        model_uri: ``models:/name/version``, ``models:/name@alias``, ``runs:/…`` or a path.
        host: Bind address. Default: 127.0.0.1.
        port: TCP port. Default: 8080.
        workers: Worker processes. Default: 1.
        max_body_bytes: Larger request bodies get 413. Default: 16 MiB.
        drain_seconds: After SIGTERM, keep serving this long while health reports 503.
        load_attempts: Model load attempts before giving up (registry unreachable).
        drift_window: Recent input rows the drift gauges are computed over.
        prediction_log_rate: Share of requests logged as JSON lines on stdout (0 to 1).
        model_alias: For a pinned ``models:/name/version``, the alias it was resolved from
            (reported by the model metadata and ``mlops_model_info``). Default: none.
        coerce: ``strict`` answers 400 for a value MLflow would change in converting it to its
            column's type (2.9 into an integer, "7" into a number, true into a double);
            ``lossy`` converts it as MLflow does. Default: strict.
    """

    model_uri: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 16 * 2**20
    drain_seconds: float = 0.0
    load_attempts: int = 6
    drift_window: int = 1000
    prediction_log_rate: float = 0.0
    model_alias: str | None = None
    coerce: str = "strict"


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_listeners(host: str, port: int) -> socket.socket | Callable[[], socket.socket]:
    """What each worker calls for its listening socket when it is about to accept (or the
    socket they share).

    With SO_REUSEPORT every worker binds its own socket on the port, and the kernel spreads new
    connections over the workers by a hash of the connection. With one shared socket, whichever
    worker wakes first accepts a whole burst of connections, and keep-alive clients stay where
    they landed: 16 connections opened at once split 16/0, 13/3 or 8/8 from one run to the
    next, so two workers served anywhere between one and two workers' worth. Each worker binds
    when its app is built, so no connection waits in the queue of a worker still starting.
    Where SO_REUSEPORT is missing, the workers share one socket bound here.
    """
    # Bound without SO_REUSEPORT, the probe fails as a single socket would when another process
    # holds the port, instead of quietly sharing its connections with it.
    probe = _listen(host, port)
    if not hasattr(socket, "SO_REUSEPORT"):
        return probe
    port = probe.getsockname()[1]  # the same port for all, also when asked for port 0
    probe.close()
    return functools.partial(_listen, host, port, reuse_port=True)


def _flush_periodically(drift: DriftMonitor, seconds: float) -> None:
    """Bin this worker's pending drift rows into the shared window every ``seconds``: the
    request path then flushes only at the monitor's usual threshold (a 100-row request no
    longer pays the cross-process lock), and a scrape still sees every worker's recent rows."""

    def loop() -> None:
        while True:
            time.sleep(seconds)
            drift.flush()

    threading.Thread(target=loop, name="drift-flush", daemon=True).start()


def _run_worker(listen: socket.socket | Callable[[], socket.socket], options: ServeOptions,
                model: ServedModel) -> None:
    import uvicorn

    from pulumi_mlops.runtime.serve.app import ScoringApp

    # The general path (MLflow's scoring functions) of a fast-path model loads in this worker
    # after the fork, while the fast path already serves.
    model.load_in_background()
    if options.workers > 1 and model.drift is not None:
        _flush_periodically(model.drift, _DRIFT_FLUSH_SECONDS)
    app = ScoringApp(model, max_body_bytes=options.max_body_bytes,
                     prediction_log_rate=options.prediction_log_rate)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off",
                            access_log=False, log_level="warning", timeout_graceful_shutdown=60,
                            backlog=2048)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not app.ready or options.drain_seconds <= 0:
                app.ready = False
                super().handle_exit(sig, frame)
                return
            app.ready = False
            log.info("draining for %.1fs before shutdown", options.drain_seconds)
            signal.signal(signal.SIGALRM, lambda *_: super(DrainingServer, self).handle_exit(
                sig, frame))
            signal.setitimer(signal.ITIMER_REAL, options.drain_seconds)

    DrainingServer(config).run(
        sockets=[listen if isinstance(listen, socket.socket) else listen()])


def serve(options: ServeOptions) -> int:
    """Load the model and serve it until SIGTERM/SIGINT; the process exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before prometheus_client is imported (by the app).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlops-metrics-")
    # What MLflow's scoring server sets: type-hinted models parse request values for serving.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    from pulumi_mlops.runtime.serve.fetch import ModelLoadError, fetch_model, read_mlmodel

    # Start-up allocates much and frees little: collections would only cost cold-start time.
    gc.disable()
    try:
        path, info = fetch_model(options.model_uri, attempts=options.load_attempts)
        if options.model_alias and info.alias is None:
            info = dataclasses.replace(info, alias=options.model_alias)
        # Most of a cold start is importing what deserializes the model (skops imports all of
        # scikit-learn); a thread starts on it while this one imports the serving code.
        flavors = read_mlmodel(path).get("flavors") or {}
        if (flavors.get("sklearn") or {}).get("serialization_format") == "skops":
            threading.Thread(target=importlib.import_module, args=("skops.io",),
                             daemon=True).start()
        from pulumi_mlops.runtime.serve.model import open_model

        model = open_model(path, info, options.drift_window, options.coerce)
    except ModelLoadError as err:
        log.error("%s", err)
        return EXIT_LOAD_FAILED
    finally:
        gc.enable()
    # The loaded objects go to a permanent generation, so forked workers keep sharing their
    # memory pages instead of dirtying them when a collection walks them.
    gc.freeze()
    if options.workers > 1 and model.drift is not None:
        model.drift.share_across_processes()
    listen = (_listen(options.host, options.port) if options.workers == 1
              else _worker_listeners(options.host, options.port))
    log.info("serving %s (version %s, fast path %s) on http://%s:%d with %d worker(s)",
             options.model_uri, model.info.version, model.fast_predict is not None,
             options.host, options.port, options.workers)
    if options.workers == 1:
        _run_worker(listen, options, model)
        return 0
    children: list[int] = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                _run_worker(listen, options, model)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    if isinstance(listen, socket.socket):
        listen.close()  # the workers have it

    def forward(sig: int, _frame: FrameType | None) -> None:
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
