"""Run the scoring server: load once, then fork workers that listen on one port.

Loading before forking means one model load however many workers (a faster cold start, and
copy-on-write sharing of the model's memory). The drift window is shared by the workers, so
the drift gauges describe the recent inputs of all of them. uvicorn with uvloop and httptools
carries HTTP, bounded by `Limits` (`pulumi_mlops.runtime.serve.protocol` adds the bounds on
request heads that uvicorn lacks).

Supervision (``workers`` > 1): the first process stays as the master. A worker that dies is
logged and started again after a back-off (0.5 s, doubling to 30 s for a worker that keeps
dying within 10 s of its start); while fewer workers run than configured, ``/health`` and
``/v2/health/ready`` answer 503 (``/ping`` stays 200: the process is alive). After
``_MAX_QUICK_DEATHS`` quick deaths in a row the master stops the others and exits 1, so the
container restarts instead of limping. With one worker there is no master: the process is the
worker, and the container's restart policy is its supervisor.

SIGTERM: ``/ping`` and ``/health`` turn 503, requests keep being served for
``drain_seconds`` (time for the load balancer to notice), then the listener closes, in-flight
requests finish, and the process exits 0, removing its scratch directories.

Waiting for an alias (``models:/name@alias`` whose model or alias is not registered yet): the
server listens at once, alive and unready, and polls the registry every
``alias_poll_seconds`` until the alias exists, then loads and serves as usual (see
`pulumi_mlops.runtime.serve.waiting`).

Unhealthy (``exit_when_unhealthy_seconds``, for targets whose restart policy acts on exits
only): once ``/health`` has passed, the process (the master, with several workers) probes it
over loopback, and when it has failed that long in a row, exits 4 (`EXIT_UNHEALTHY`), killing
its workers, for the restart policy to start the server again (see
`pulumi_mlops.runtime.serve.watchdog`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from pulumi_mlops.runtime.serve.fetch import (
    DEFAULT_FETCH_DEADLINE_SECONDS,
    DEFAULT_MAX_MODEL_BYTES,
)
from pulumi_mlops.runtime.serve.limits import Limits
from pulumi_mlops.runtime.serve.waiting import DEFAULT_ALIAS_POLL_SECONDS
from pulumi_mlops.runtime.serve.watchdog import EXIT_UNHEALTHY, HealthWatchdog, probe_host

if TYPE_CHECKING:
    from pulumi_mlops.runtime.drift import DriftMonitor
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["ServeOptions", "serve"]

log = logging.getLogger("mlops.serve")

EXIT_LOAD_FAILED = 3
EXIT_WORKERS_FAILED = 1
_DRIFT_FLUSH_SECONDS = 1.0
# A worker that dies sooner than this after its start died quickly; this many quick deaths in a
# row, and the master gives up.
_STABLE_SECONDS = 10.0
_MAX_QUICK_DEATHS = 6
_FIRST_BACKOFF_SECONDS = 0.5
_MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class ServeOptions:
    """Options of ``mlops serve``.

    Attributes:
        model_uri: ``models:/name/version``, ``models:/name@alias``, ``runs:/…`` or a path.
        host: Bind address. Default: 127.0.0.1.
        port: TCP port. Default: 8080.
        workers: Worker processes. Default: 1.
        limits: Per-worker request bounds (body size, concurrency, rows, head size, timeouts,
            class labels). Default: `Limits()`.
        drain_seconds: After SIGTERM, keep serving this long while health reports 503.
        load_attempts: Model load attempts before giving up (registry unreachable).
        max_model_bytes: Largest model download (files and registry answers together); over
            it the server exits 3. Default: 4 GiB.
        fetch_deadline_seconds: Time the whole model fetch may take, retries included; past it
            the server exits 3. Default: 600.
        drift_window: Recent input rows the drift gauges are computed over.
        prediction_log_rate: Share of requests logged as JSON lines on stdout (0 to 1).
        model_alias: For a pinned ``models:/name/version``, the alias it was resolved from
            (reported by the model metadata and ``mlops_model_info``). Default: none.
        coerce: ``strict`` answers 400 for a value MLflow would change in converting it to its
            column's type (2.9 into an integer, "7" into a number, true into a double);
            ``lossy`` converts it as MLflow does. Default: strict.
        exit_when_unhealthy_seconds: Once ``/health`` has passed, exit 4 when it has failed
            this long in a row, for a restart policy that acts on exits only (Docker's) to
            start the server again. 0: never. Default: 0.
        alias_poll_seconds: While the registered model or alias a ``models:/name@alias`` URI
            names does not exist yet, poll the registry this often (listening meanwhile:
            ``/ping`` 200, ``/health`` and scoring 503). Default: 10.
        metrics_port: A second TCP port answering ``GET /metrics`` only, which the serving
            port then does not answer: Prometheus is admitted to it and never reaches
            ``/invocations``. Default: none, ``/metrics`` on ``port``.
    """

    model_uri: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    limits: Limits = dataclasses.field(default_factory=Limits)
    drain_seconds: float = 0.0
    load_attempts: int = 6
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    fetch_deadline_seconds: float = DEFAULT_FETCH_DEADLINE_SECONDS
    drift_window: int = 1000
    prediction_log_rate: float = 0.0
    model_alias: str | None = None
    coerce: str = "strict"
    exit_when_unhealthy_seconds: float = 0.0
    alias_poll_seconds: float = DEFAULT_ALIAS_POLL_SECONDS
    metrics_port: int | None = None


def _watchdog(options: ServeOptions, port: int,
              on_unhealthy: Callable[[], None] | None = None) -> HealthWatchdog | None:
    if options.exit_when_unhealthy_seconds <= 0:
        return None
    if on_unhealthy is None:
        return HealthWatchdog(probe_host(options.host), port,
                              options.exit_when_unhealthy_seconds)
    return HealthWatchdog(probe_host(options.host), port, options.exit_when_unhealthy_seconds,
                          on_unhealthy)


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


Listener = socket.socket | Callable[[], socket.socket]
"""A listening socket, or what a worker calls for its own (`_worker_listeners`)."""


def _run_worker(listens: tuple[Listener, ...], options: ServeOptions,
                model: ServedModel, workers_alive: Callable[[], bool] | None = None,
                watchdog: HealthWatchdog | None = None) -> None:
    """Serve on the serving port's listener and, with ``--metrics-port``, the metrics
    port's (second)."""
    import uvicorn

    from pulumi_mlops.runtime.serve import metrics
    from pulumi_mlops.runtime.serve.app import ScoringApp
    from pulumi_mlops.runtime.serve.protocol import bounded_protocol

    # The general path (MLflow's scoring functions) of a fast-path model loads in this worker
    # after the fork, while the fast path already serves.
    model.load_in_background()
    if options.workers > 1 and model.drift is not None:
        _flush_periodically(model.drift, _DRIFT_FLUSH_SECONDS)
    app = ScoringApp(model, limits=options.limits,
                     prediction_log_rate=options.prediction_log_rate,
                     metrics_port=_bound_port(listens[1]) if len(listens) > 1 else None)
    if workers_alive is not None:
        app.workers_alive = workers_alive
    config = uvicorn.Config(app, loop="uvloop", http=bounded_protocol(options.limits),
                            lifespan="off", access_log=False, log_level="warning",
                            timeout_keep_alive=options.limits.keep_alive_timeout,
                            timeout_graceful_shutdown=60, backlog=2048)

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # As uvicorn's, but without raising the signal again after the graceful shutdown:
            # that would end the process with 143 before its exit handlers (the scratch
            # clean-up) ran.
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if watchdog is not None:
                watchdog.stop()  # stopping: health fails on purpose now
            if not app.ready or options.drain_seconds <= 0:
                app.ready = False
                super().handle_exit(sig, frame)
                return
            app.ready = False
            log.info("draining for %.1fs before shutdown", options.drain_seconds)
            signal.signal(signal.SIGALRM, lambda *_: super(DrainingServer, self).handle_exit(
                sig, frame))
            signal.setitimer(signal.ITIMER_REAL, options.drain_seconds)

    if watchdog is not None:
        watchdog.start()
    try:
        DrainingServer(config).run(
            sockets=[listen if isinstance(listen, socket.socket) else listen()
                     for listen in listens])
    finally:
        metrics.flush()  # the last requests' figures, for a scrape of the remaining workers


def serve(options: ServeOptions) -> int:
    """Load the model and serve it until SIGTERM/SIGINT; the process exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before prometheus_client is imported (by the app).
        metrics_dir = tempfile.mkdtemp(prefix="mlops-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # What MLflow's scoring server sets: type-hinted models parse request values for serving.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    from pulumi_mlops.runtime.serve.fetch import ModelLoadError, fetch_model, read_mlmodel
    from pulumi_mlops.runtime.serve.waiting import STOPPED, WaitingServer, wait_for_alias

    metrics_port = options.metrics_port
    waiting = wait_for_alias(options.model_uri,
                             functools.partial(_listen, options.host, options.port),
                             options.alias_poll_seconds,
                             None if metrics_port is None
                             else functools.partial(_listen, options.host, metrics_port))
    handed_over: tuple[Listener, ...] = ()
    if waiting == STOPPED:
        return 0
    # Start-up allocates much and frees little: collections would only cost cold-start time.
    gc.disable()
    try:
        path, info = fetch_model(options.model_uri, attempts=options.load_attempts,
                                 max_model_bytes=options.max_model_bytes,
                                 fetch_deadline_seconds=options.fetch_deadline_seconds)
        if options.model_alias and info.alias is None:
            info = dataclasses.replace(info, alias=options.model_alias)
        # Most of a cold start is importing what deserializes the model (skops imports all of
        # scikit-learn); a thread starts on it while this one imports the serving code.
        flavors = read_mlmodel(path).get("flavors") or {}
        if (flavors.get("sklearn") or {}).get("serialization_format") == "skops":
            threading.Thread(target=importlib.import_module, args=("skops.io",),
                             daemon=True).start()
        from pulumi_mlops.runtime.serve.loading import open_model

        model = open_model(path, info, options.drift_window, options.coerce)
    except ModelLoadError as err:
        log.error("%s", err)
        return EXIT_LOAD_FAILED
    finally:
        gc.enable()
        if isinstance(waiting, WaitingServer):
            # The scoring server takes the stand-in's socket over: no connection is refused in
            # between (several workers share it, as where SO_REUSEPORT is missing).
            metrics = waiting.hand_over_metrics()
            handed_over = (waiting.hand_over(), *(() if metrics is None else (metrics,)))
    # The loaded objects go to a permanent generation, so forked workers keep sharing their
    # memory pages instead of dirtying them when a collection walks them.
    gc.freeze()
    if options.workers > 1 and model.drift is not None:
        model.drift.share_across_processes()
    ports = (options.port, *(() if metrics_port is None else (metrics_port,)))
    listens: tuple[Listener, ...]
    if handed_over:
        listens = handed_over
    elif options.workers == 1:
        listens = tuple(_listen(options.host, port) for port in ports)
    else:
        listens = tuple(_worker_listeners(options.host, port) for port in ports)
    log.info("serving %s (version %s, fast path %s) on http://%s:%d with %d worker(s)%s",
             options.model_uri, model.info.version, model.fast_predict is not None,
             options.host, _bound_port(listens[0]), options.workers,
             f", metrics on port {_bound_port(listens[1])}" if len(listens) > 1 else "")
    if options.workers == 1:
        _run_worker(listens, options, model,
                    watchdog=_watchdog(options, _bound_port(listens[0])))
        return 0
    return _Supervisor(listens, options, model).run()


class _Supervisor:
    """The master of several workers: starts them, restarts the ones that die, forwards stop
    signals, and reports through shared memory how many run (for readiness)."""

    def __init__(self, listens: tuple[Listener, ...], options: ServeOptions,
                 model: ServedModel) -> None:
        import multiprocessing

        # A shared socket stays open in the master too: a worker started again needs it.
        self._listens = listens
        self._options = options
        self._model = model
        self._alive = multiprocessing.get_context("fork").RawValue("i", 0)
        self._children: dict[int, tuple[int, float]] = {}  # pid: (slot, started)
        self._quick_deaths = 0
        self._stopping = False
        self._watchdog = _watchdog(options, _bound_port(listens[0]), self._unhealthy)

    def run(self) -> int:
        """Serve until a stop signal (exit 0) or until workers keep dying (exit 1)."""
        for slot in range(self._options.workers):
            self._spawn(slot)
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        if self._watchdog is not None:
            self._watchdog.start()
        while self._children:
            pid, status = os.waitpid(-1, 0)
            if pid not in self._children:
                continue
            slot, started = self._children.pop(pid)
            self._alive.value = len(self._children)
            if self._stopping:
                continue
            self._quick_deaths = (self._quick_deaths + 1
                                  if time.monotonic() - started < _STABLE_SECONDS else 1)
            if self._quick_deaths > _MAX_QUICK_DEATHS:
                log.error("worker %d (pid %d) %s; %d workers died within %.0f s of starting "
                          "in a row: stopping", slot, pid, _describe(status),
                          self._quick_deaths - 1, _STABLE_SECONDS)
                self._forward(signal.SIGTERM, None)
                self._wait_all()
                return EXIT_WORKERS_FAILED
            delay = min(_MAX_BACKOFF_SECONDS,
                        _FIRST_BACKOFF_SECONDS * 2 ** (self._quick_deaths - 1))
            log.error("worker %d (pid %d) %s; starting it again in %.1f s", slot, pid,
                      _describe(status), delay)
            time.sleep(delay)
            if not self._stopping:
                self._spawn(slot)
        return 0

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            # Not the master's handlers (they would signal the other workers): until its server
            # handles them, a stop signal simply ends a starting worker.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                _run_worker(self._listens, self._options, self._model, self._all_alive)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        self._children[pid] = (slot, time.monotonic())
        self._alive.value = len(self._children)

    def _all_alive(self) -> bool:
        return bool(self._alive.value >= self._options.workers)

    def _unhealthy(self) -> None:
        """The watchdog's way out: the workers cannot be trusted to stop (they may be what
        hangs), so they are killed, and the master exits at once."""
        self._stopping = True
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        logging.shutdown()
        os._exit(EXIT_UNHEALTHY)

    def _forward(self, sig: int, _frame: FrameType | None) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self._stopping = True
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_all(self) -> None:
        while self._children:
            pid, _ = os.waitpid(-1, 0)
            self._children.pop(pid, None)


def _bound_port(listen: Listener) -> int:
    """The port the server listens on (known also when it was asked for port 0)."""
    if isinstance(listen, socket.socket):
        return int(listen.getsockname()[1])
    assert isinstance(listen, functools.partial)
    return int(listen.args[1])


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
