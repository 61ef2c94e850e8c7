"""Exit when the server's own health check has failed for too long (``mlops serve
--exit-when-unhealthy-seconds``).

Docker restarts a container when its process exits, never because its health check fails; on
Kubernetes the liveness probe does that, so the service plan arms the watchdog on Docker only.
The watchdog asks ``/health`` over loopback what Docker's health check asks, so a server that
stopped answering (a blocked event loop, workers that hang) counts as unhealthy as well as one
answering 503. It is armed by the first healthy answer: a server still loading, or waiting for
a model, is the start-up deadline's business, not the watchdog's. A server that is draining
after SIGTERM is stopping anyway: `HealthWatchdog.stop` disarms it.

When the health check has failed for ``seconds`` in a row, the watchdog logs why and calls its
``on_unhealthy`` (by default the process exits `EXIT_UNHEALTHY` at once, without the clean-up a
wedged process could not finish); the restart policy then starts the container again.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["EXIT_UNHEALTHY", "HealthWatchdog", "probe_host"]

log = logging.getLogger("mlops.serve")

EXIT_UNHEALTHY = 4
_MAX_INTERVAL_SECONDS = 5.0


def probe_host(bind_host: str) -> str:
    """Where this machine reaches a server bound to ``bind_host`` (loopback for a wildcard)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def _exit_unhealthy() -> None:
    logging.shutdown()
    os._exit(EXIT_UNHEALTHY)


class HealthWatchdog:
    """A daemon thread that probes ``GET /health`` and gives up on a server unhealthy too long.

    Args:
        host: Address the probe connects to (see `probe_host`).
        port: The server's port.
        seconds: How long the health check may fail in a row, once it has passed, before
            ``on_unhealthy`` is called.
        on_unhealthy: What ends the server. Default: exit `EXIT_UNHEALTHY` at once.
    """

    def __init__(self, host: str, port: int, seconds: float,
                 on_unhealthy: Callable[[], None] = _exit_unhealthy) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.host = host
        self.port = port
        self.seconds = seconds
        self.on_unhealthy = on_unhealthy
        # Several probes within the bound, never more often than ten a second, at least one
        # every five seconds; a probe waits no longer than the interval for its answer.
        self.interval = min(_MAX_INTERVAL_SECONDS, max(0.1, seconds / 10))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-watchdog", daemon=True)

    def start(self) -> HealthWatchdog:
        """Start probing; returns itself."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disarm for good (the server is stopping by itself)."""
        self._stopped.set()

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200 within the probe interval."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=max(0.5, self.interval))
        try:
            conn.request("GET", "/health", headers={"connection": "close"})
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _run(self) -> None:
        armed = False
        failing_since: float | None = None
        while not self._stopped.wait(self.interval):
            started = time.monotonic()
            if self.healthy():
                if not armed:
                    log.info("health watchdog armed: exiting %d if /health fails for %gs",
                             EXIT_UNHEALTHY, self.seconds)
                armed, failing_since = True, None
                continue
            if not armed or self._stopped.is_set():
                continue
            if failing_since is None:
                failing_since = started
                log.warning("/health failed; exiting if it keeps failing for %gs",
                            self.seconds)
            if time.monotonic() - failing_since >= self.seconds:
                log.error("/health has failed for %.1fs: exiting %d for the restart policy to "
                          "start the server again", time.monotonic() - failing_since,
                          EXIT_UNHEALTHY)
                self.on_unhealthy()
                return
