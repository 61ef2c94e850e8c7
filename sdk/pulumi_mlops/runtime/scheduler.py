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

The scheduler writes a heartbeat file while it waits and while a run is in progress;
``mlops schedule --check`` (the container's healthcheck) fails when it is stale. No Pulumi here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Protocol

from croniter import croniter

__all__ = [
    "DEFAULT_HEARTBEAT",
    "SLOT_ENV",
    "Clock",
    "ScheduleOptions",
    "Scheduler",
    "SystemClock",
    "check_heartbeat",
    "next_slot",
    "parse_cron",
    "slot_id",
    "slots_between",
]

DEFAULT_HEARTBEAT = Path("/tmp/mlops-scheduler.heartbeat")
"""Where the scheduler writes its heartbeat (the container's only writable place is /tmp)."""
SLOT_ENV = "MLOPS_SCHEDULE_SLOT"
"""The variable through which a run learns its slot (`slot_id`): the same for every attempt of
one slot, different for every slot."""
_KILL_GRACE_SECONDS = 10.0


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
        heartbeat: The heartbeat file. Default: ``/tmp/mlops-scheduler.heartbeat``.
        heartbeat_interval: Seconds between heartbeats. Default: 30.
    """

    cron: str
    command: tuple[str, ...]
    timeout: float | None = None
    retries: int = 0
    starting_deadline: float = 600.0
    suspend: bool = False
    heartbeat: Path = DEFAULT_HEARTBEAT
    heartbeat_interval: float = 30.0


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
        self._child: subprocess.Popen[bytes] | None = None

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
            self.clock.sleep(min(left, self.options.heartbeat_interval))

    # ----------------------------------------------------------------- runs

    def _attempt(self, slot: datetime) -> int:
        env = {**self.environ, SLOT_ENV: slot_id(slot)}
        timeout = self.options.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self._child = child = subprocess.Popen(list(self.options.command), env=env)
        try:
            while True:
                wait = self.options.heartbeat_interval
                if deadline is not None:
                    wait = min(wait, max(deadline - time.monotonic(), 0.0))
                try:
                    return child.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    self.beat()
                    if deadline is not None and time.monotonic() >= deadline:
                        self.log(f"slot {slot.isoformat()}: run exceeded {timeout:g}s, killed")
                        _end(child)
                        return 124  # as timeout(1) reports it
        finally:
            if child.poll() is None:
                _end(child)
            self._child = None

    def run_slot(self, slot: datetime) -> int:
        """Run the command for ``slot``, retrying a failed attempt; the last exit status."""
        attempts = 1 + self.options.retries
        code = 0
        for attempt in range(1, attempts + 1):
            self.log(f"slot {slot.isoformat()}: attempt {attempt}/{attempts}: "
                     + " ".join(self.options.command))
            code = self._attempt(slot)
            self.log(f"slot {slot.isoformat()}: attempt {attempt}/{attempts} exited {code}")
            if code == 0:
                break
        self.runs.append((slot, code))
        return code

    def run(self, max_slots: int | None = None) -> int:
        """Wait for slots and run them until stopped (or ``max_slots`` slots were handled)."""
        previous_handlers = _install_stop_handlers()
        try:
            return self._loop(max_slots)
        except _Stopped:
            self.log("stopping")
            return 0
        finally:
            _restore(previous_handlers)

    def _loop(self, max_slots: int | None) -> int:
        o = self.options
        handled = 0
        self.log(f"scheduling {' '.join(o.command)!r} on {o.cron!r} (UTC)"
                 + (", suspended" if o.suspend else ""))
        after = self.clock.now()
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


def _end(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(timeout=_KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _install_stop_handlers() -> dict[int, _Handler]:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    previous: dict[int, _Handler] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, stop)
    return previous


def _restore(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(options: ScheduleOptions) -> int:
    """Run the scheduler until SIGTERM; what ``mlops schedule`` calls."""
    return Scheduler(options).run()


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

