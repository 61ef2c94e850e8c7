"""`mlops schedule`: run a command on a cron schedule, in-process.

On the Docker target there is no CronJob controller, so `RetrainSchedule` runs this scheduler in
a long-lived container. It keeps a Kubernetes CronJob's semantics where they matter: runs never
overlap (``concurrencyPolicy: Forbid``: slots that pass while a run is in progress are skipped
and logged), a slot noticed later than ``starting_deadline`` is skipped
(``startingDeadlineSeconds``), each run is killed after ``timeout``
(``activeDeadlineSeconds``) and retried ``retries`` times (``backoffLimit``). Times are UTC, as
the CronJob's ``timeZone: Etc/UTC``.

Each run gets its slot as ``MLOPS_SCHEDULE_SLOT`` (`SLOT_ENV`, e.g. ``2026-11-24T03:00Z``); the
retries of a slot get the same value. ``mlops retrain`` uses it as its idempotency key, as it uses
the Job's name on Kubernetes.

A run is the process group of its command (started in a session of its own), as a Job's run is
its container: ending a run (timeout, SIGTERM) sends SIGTERM to the whole group, waits
``kill_grace`` for the command to exit, then sends SIGKILL to the group; whatever is left of the
group when the command exits is killed too, as a container's processes are when its first
process exits. Processes that leave the group (``setsid``) are out of reach; on the Docker target
they end with the container. A command that cannot start is a failed run with status 127 (not
found) or 126 (not executable, or any other start error), as a shell reports them, logged in one
line and retried like any failed run; the scheduler goes on to the next slot.

SIGTERM or SIGINT stops the scheduler: the run in progress is ended as above (a second signal
sends SIGKILL to it at once), the heartbeat file is removed and the scheduler exits 0, a requested
stop being a clean one (as for ``mlops serve``). Failed runs never change the scheduler's exit
status: they are logged and kept in `Scheduler.runs`.

The scheduler writes a heartbeat file while it waits and while a run is in progress;
``mlops schedule --check`` (the container's healthcheck) fails when it is stale. While it ends a
run it writes none, for at most twice ``kill_grace``.

It serves its Prometheus metrics on ``GET /metrics`` (`ScheduleOptions.metrics_host` and
``metrics_port``; `DEFAULT_METRICS_PORT`, off with port 0 on the command line), with the names of
`pulumi_mlops.contracts.metrics`: `RETRAIN_RUNS` by `OUTCOME_LABEL` (``succeeded`` or ``failed``,
both exported at 0 from the start), counting a slot once, when its last attempt has ended (a
slot's retries are not runs of their own; a skipped or suspended slot, and a run ended because
the scheduler was stopped, count nothing); `RETRAIN_LAST_SUCCESS`, when the last successful run
ended (0 before one); `RETRAIN_STARTED`, when the scheduler started. The scheduler has no
on-demand trigger: a run started by hand (``docker exec <container> mlops retrain ...``) is a
process of its own that the scheduler neither sees nor counts. A port that cannot be bound
stops the scheduler at start (exit 1), before any run. No Pulumi here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Protocol

from croniter import croniter
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pulumi_mlops.contracts import metrics as names
from pulumi_mlops.contracts.retrain import SLOT_ENV

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_METRICS_PORT",
    "INITIAL_SLOT",
    "SLOT_ENV",
    "Clock",
    "ScheduleOptions",
    "Scheduler",
    "SchedulerMetrics",
    "SystemClock",
    "check_heartbeat",
    "next_slot",
    "parse_cron",
    "slot_id",
    "slots_between",
]

DEFAULT_HEARTBEAT = Path("/tmp/mlops-scheduler.heartbeat")
"""Where the scheduler writes its heartbeat (the container's only writable place is /tmp)."""
DEFAULT_METRICS_PORT = 9102
"""The port of the scheduler's ``/metrics``: in the 91xx range of Prometheus exporters, and
apart from the other workloads' (MLflow 5000, ``mlops serve`` 8080, Prometheus 9090), so that
it is never taken by accident in the scheduler's own container or on a laptop."""


class Clock(Protocol):
    """Wall-clock time and sleeping; injectable so that tests need not wait for real slots."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (a signal handler may interrupt it by raising)."""
        time.sleep(max(seconds, 0.0))


@dataclass(frozen=True)
class ScheduleOptions:
    """What to run, when, and how.

    Attributes:
        cron: Five-field cron expression, in UTC.
        command: The argument vector run at every slot.
        timeout: Seconds one attempt may take before it is killed. Default: none.
        retries: Further attempts after a failed one, within the same slot. Default: 0.
        starting_deadline: Seconds after its slot within which a run may still start; later,
            the slot is skipped. Default: 600.
        suspend: Run nothing (slots are logged as skipped). Default: false.
        run_at_start: Also run the command once when the scheduler starts, before the first
            slot, with the key `INITIAL_SLOT` (so a restarted scheduler's run repeats the same
            run, which registers nothing new). Not while suspended. Default: false.
        heartbeat: The heartbeat file. Default: ``/tmp/mlops-scheduler.heartbeat``.
        heartbeat_interval: Seconds between heartbeats. Default: 30.
        kill_grace: Seconds a run's command has to exit after SIGTERM (timeout or stop) before
            its process group gets SIGKILL; also how long SIGKILL is waited for. Default: 5,
            below Docker's default stop timeout (10 s), so that on ``docker stop`` the scheduler
            ends the run itself and exits 0.
        metrics_port: The TCP port ``GET /metrics`` is served on while `Scheduler.run` runs;
            None serves nothing (the metrics are still kept in `Scheduler.metrics`).
            Default: `DEFAULT_METRICS_PORT`.
        metrics_host: The address the metrics server binds. Default: ``127.0.0.1`` (as
            ``mlops serve``; the container's command line binds ``0.0.0.0``).

    Raises:
        ValueError: ``kill_grace`` is negative, or ``metrics_port`` is not a TCP port.
    """

    cron: str
    command: tuple[str, ...]
    timeout: float | None = None
    retries: int = 0
    starting_deadline: float = 600.0
    suspend: bool = False
    run_at_start: bool = False
    heartbeat: Path = DEFAULT_HEARTBEAT
    heartbeat_interval: float = 30.0
    kill_grace: float = 5.0
    metrics_port: int | None = DEFAULT_METRICS_PORT
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not self.kill_grace >= 0:  # also refuses NaN
            raise ValueError(f"`kill_grace` must be a number of seconds >= 0, got "
                             f"{self.kill_grace!r}; use 0 to send SIGKILL right after SIGTERM")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ValueError(f"`metrics_port` must be a TCP port (1-65535), got "
                             f"{self.metrics_port!r}; use None to serve no metrics")


class SchedulerMetrics:
    """The scheduler's Prometheus series, in a registry of their own.

    Attributes:
        registry: What ``/metrics`` exposes.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._runs = Counter(names.RETRAIN_RUNS, "Finished runs of the scheduled command "
                             "(a slot once, after its retries), by outcome",
                             [names.OUTCOME_LABEL], registry=self.registry)
        # Both outcomes from the start: a rate or an increase over a series that appears only
        # with the first failure would miss that failure.
        for outcome in (names.SUCCEEDED, names.FAILED):
            self._runs.labels(outcome)
        self._last_success = Gauge(names.RETRAIN_LAST_SUCCESS, "When the last successful run "
                                   "ended, Unix seconds; 0 before one", registry=self.registry)
        self._started = Gauge(names.RETRAIN_STARTED, "When the scheduler started, Unix "
                              "seconds", registry=self.registry)

    def started(self, moment: datetime) -> None:
        """The scheduler started at ``moment``."""
        self._started.set(moment.timestamp())

    def finished(self, code: int, moment: datetime) -> None:
        """A slot's last attempt exited ``code`` at ``moment``."""
        self._runs.labels(names.SUCCEEDED if code == 0 else names.FAILED).inc()
        if code == 0:
            self._last_success.set(moment.timestamp())


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def next_slot(cron: str, after: datetime) -> datetime:
    """The first slot of ``cron`` strictly after ``after`` (UTC)."""
    slot = croniter(cron, _utc(after)).get_next(datetime)
    assert isinstance(slot, datetime)
    return _utc(slot)


def slots_between(cron: str, start: datetime, end: datetime, limit: int = 1000) -> Iterator[
        datetime]:
    """Slots strictly after ``start`` and at or before ``end`` (at most ``limit``)."""
    slot = _utc(start)
    for _ in range(limit):
        slot = next_slot(cron, slot)
        if slot > _utc(end):
            return
        yield slot


def check_heartbeat(path: Path = DEFAULT_HEARTBEAT, max_age: float = 120.0,
                    now: datetime | None = None) -> bool:
    """Whether the heartbeat at ``path`` is at most ``max_age`` seconds old."""
    try:
        beat = datetime.fromisoformat(path.read_text().strip())
    except (OSError, ValueError):
        return False
    age = ((now or datetime.now(UTC)) - _utc(beat)).total_seconds()
    return age <= max_age


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived: stop waiting, end the run in progress."""


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Scheduler:
    """Runs `ScheduleOptions.command` at every slot, one run at a time.

    Args:
        options: What to run and when.
        clock: Time source. Default: the system clock.
        log: Where log lines go. Default: stderr, one line per event.
        environ: Base environment of the runs. Default: ``os.environ``.
    """

    def __init__(self, options: ScheduleOptions, clock: Clock | None = None,
                 log: Callable[[str], None] | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.options = options
        self.clock = clock or SystemClock()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.environ = dict(os.environ if environ is None else environ)
        self.runs: list[tuple[datetime, int]] = []
        """(slot, exit status) of every slot that ran."""
        self.metrics = SchedulerMetrics()
        """The series ``/metrics`` serves."""
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False
        # Whether the main thread is in a wait that a stop signal may cut short by raising
        # `_Stopped`. Elsewhere (starting a run, ending one, writing a log line or the heartbeat)
        # the signal is only recorded, so that it can never interrupt the ending of a run.
        self._interruptible = False

    # ----------------------------------------------------------------- heartbeat

    def beat(self) -> None:
        """Write the heartbeat (the current time, ISO 8601)."""
        path = self.options.heartbeat
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.clock.now().isoformat())
        tmp.replace(path)  # atomic: the healthcheck never reads half a time stamp

    def _sleep_until(self, moment: datetime) -> None:
        while True:
            self.beat()
            left = (moment - self.clock.now()).total_seconds()
            if left <= 0:
                return
            with self._interruptible_wait():
                self.clock.sleep(min(left, self.options.heartbeat_interval))

    # ----------------------------------------------------------------- stop signals

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            # A second signal: the operator will not wait for the grace period. Nothing is
            # logged here: a handler writing to stderr may interrupt a write in progress.
            child = self._child
            if child is not None:
                _signal_group(child.pid, signal.SIGKILL)
            return
        self._stopping = True
        if self._interruptible:
            self._interruptible = False
            raise _Stopped

    @contextmanager
    def _interruptible_wait(self) -> Iterator[None]:
        self._interruptible = True  # before the check: a signal in between raises itself
        try:
            if self._stopping:
                raise _Stopped
            yield
        finally:
            self._interruptible = False

    def _install_stop_handlers(self) -> dict[int, _Handler]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, _Handler] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_stop_signal)
        return previous

    # ----------------------------------------------------------------- runs

    def _attempt(self, slot: datetime, key: str) -> int:
        if self._stopping:  # a stop signal arrived between two attempts
            raise _Stopped
        env = {**self.environ, SLOT_ENV: key}
        try:
            child = subprocess.Popen(list(self.options.command), env=env,
                                     start_new_session=True)
        except OSError as err:
            self.log(f"slot {slot.isoformat()}: cannot start {self.options.command[0]!r}: "
                     f"{err.strerror or err}")
            return 127 if isinstance(err, FileNotFoundError) else 126
        self._child = child
        try:
            return self._wait(child, slot)
        except _Stopped:
            self.log(f"slot {slot.isoformat()}: stopping the run: SIGTERM to its process "
                     f"group, SIGKILL after {self.options.kill_grace:g}s or on a second signal")
            raise
        finally:
            self._end(child, slot)
            self._child = None

    def _wait(self, child: subprocess.Popen[bytes], slot: datetime) -> int:
        timeout = self.options.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.options.heartbeat_interval
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            try:
                with self._interruptible_wait():
                    return child.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.beat()
                if deadline is not None and time.monotonic() >= deadline:
                    self.log(f"slot {slot.isoformat()}: run exceeded {timeout:g}s, killing its "
                             "process group")
                    return 124  # as timeout(1) reports it

    def _end(self, child: subprocess.Popen[bytes], slot: datetime) -> None:
        """End what is left of the run: SIGTERM, ``kill_grace``, SIGKILL, to its process group."""
        grace = self.options.kill_grace
        exited_by_itself = child.poll() is not None
        if not exited_by_itself:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.log(f"slot {slot.isoformat()}: the run did not exit within {grace:g}s of "
                         "SIGTERM; SIGKILL to its process group")
        exited = child.poll() is not None
        # The group's leader has exited (or is being killed): the rest goes with it, as the
        # processes of a container go with its first one.
        if _signal_group(child.pid, signal.SIGKILL) and exited_by_itself:
            self.log(f"slot {slot.isoformat()}: killed the processes the run left behind")
        if not exited:
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.log(f"slot {slot.isoformat()}: the run (pid {child.pid}) is still there "
                         f"{grace:g}s after SIGKILL; going on")

    def run_slot(self, slot: datetime, key: str | None = None) -> int:
        """Run the command for ``slot``, retrying a failed attempt; the last exit status.
        ``key`` is the run's `SLOT_ENV` (default: the slot's `slot_id`)."""
        attempts = 1 + self.options.retries
        code = 0
        for attempt in range(1, attempts + 1):
            self.log(f"slot {slot.isoformat()}: attempt {attempt}/{attempts}: "
                     + " ".join(self.options.command))
            code = self._attempt(slot, key or slot_id(slot))
            self.log(f"slot {slot.isoformat()}: attempt {attempt}/{attempts} exited {code}")
            if code == 0:
                break
        self.runs.append((slot, code))
        self.metrics.finished(code, self.clock.now())
        return code

    def run(self, max_slots: int | None = None) -> int:
        """Wait for slots and run them until stopped (or ``max_slots`` slots were handled).

        Returns:
            0, also when stopped by SIGTERM or SIGINT (after ending the run in progress and
            removing the heartbeat, since nothing beats any more); 1 when ``/metrics`` cannot
            be served (the port is taken), before anything runs.
        """
        self.metrics.started(self.clock.now())
        o = self.options
        server = None
        if o.metrics_port is not None:
            try:
                server, _ = start_http_server(o.metrics_port, o.metrics_host,
                                              registry=self.metrics.registry)
            except OSError as err:
                self.log(f"cannot serve /metrics on {o.metrics_host}:{o.metrics_port}: "
                         f"{err.strerror or err}")
                return 1
            self.log(f"serving /metrics on {o.metrics_host}:{server.server_port}")
        previous_handlers = self._install_stop_handlers()
        try:
            return self._loop(max_slots)
        except _Stopped:
            self.options.heartbeat.unlink(missing_ok=True)
            self.log("stopped")
            return 0
        finally:
            _restore(previous_handlers)
            if server is not None:
                server.shutdown()
                server.server_close()

    def _loop(self, max_slots: int | None) -> int:
        o = self.options
        handled = 0
        self.log(f"scheduling {' '.join(o.command)!r} on {o.cron!r} (UTC)"
                 + (", suspended" if o.suspend else ""))
        after = self.clock.now()
        if o.run_at_start and not o.suspend:
            self.log(f"running once at start ({SLOT_ENV}={INITIAL_SLOT})")
            self.run_slot(after, INITIAL_SLOT)
            after = max(after, self.clock.now())
        while max_slots is None or handled < max_slots:
            slot = next_slot(o.cron, after)
            self.log(f"next slot {slot.isoformat()}")
            self._sleep_until(slot)
            handled += 1
            now = self.clock.now()
            late = (now - slot).total_seconds()
            if o.suspend:
                self.log(f"slot {slot.isoformat()}: suspended, not run")
            elif late > o.starting_deadline:
                self.log(f"slot {slot.isoformat()}: noticed {late:.0f}s late, past the starting "
                         f"deadline of {o.starting_deadline:g}s; skipped")
            else:
                self.run_slot(slot)
            # Forbid: slots that passed during the run are skipped, never run late or in
            # parallel.
            end = self.clock.now()
            for missed in slots_between(o.cron, slot, end):
                self.log(f"slot {missed.isoformat()}: skipped, the previous run was still in "
                         "progress")
            after = max(end, slot)
        return 0


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``; whether the group still existed."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _restore(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(options: ScheduleOptions) -> int:
    """Run the scheduler until SIGTERM; what ``mlops schedule`` calls."""
    return Scheduler(options).run()


INITIAL_SLOT = "initial"
"""The key of the run a scheduler makes at start (`ScheduleOptions.run_at_start`)."""


def slot_id(slot: datetime) -> str:
    """How a slot is named to its run (``MLOPS_SCHEDULE_SLOT``), e.g. ``2026-11-24T03:00Z``:
    cron has minute resolution, so the minute identifies the slot."""
    return _utc(slot).strftime("%Y-%m-%dT%H:%MZ")


def parse_cron(cron: str) -> str:
    """``cron`` if it is a valid five-field expression.

    Raises:
        ValueError: naming the rule.
    """
    fields = cron.split()
    if (len(fields) != 5 or not all(_portable(f) for f in fields)
            or not croniter.is_valid(cron)):
        raise ValueError(f"{cron!r} is not a five-field cron expression "
                         "(minute hour day-of-month month day-of-week)")
    return cron


_NAMES = frozenset({"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                    "DEC", "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"})


def _portable(field: str) -> bool:
    # What Kubernetes' CronJob controller accepts too: croniter's extensions (L, W, #) would
    # validate here and be refused by the cluster.
    parts = re.split(r"[,/-]", field)
    return all(p in ("*", "?") or p.isdigit() or p.upper() in _NAMES for p in parts)

