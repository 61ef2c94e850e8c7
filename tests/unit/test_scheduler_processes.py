"""`mlops schedule` and the processes of its runs: timeouts and stops end the whole process
group, a command that cannot start is a failed run, SIGTERM stops the scheduler cleanly, and a
running scheduler serves the outcomes of its runs on /metrics.

The jobs are real shells and Python processes that start a grandchild and write its PID to a
file; "gone" is read from /proc. Every wait is bounded and every process left over by a failing
test is killed by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pulumi_mlops.contracts.metrics import (
    FAILED,
    OUTCOME_LABEL,
    RETRAIN_LAST_SUCCESS,
    RETRAIN_RUNS,
    RETRAIN_STARTED,
    SUCCEEDED,
)
from pulumi_mlops.runtime.scheduler import ScheduleOptions, Scheduler, check_heartbeat
from tests.unit.test_scheduler import T0, FakeClock, options

SLOT = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
BOUND = 10.0
"""Seconds any wait of these tests may take before it fails."""

# The 03:00 slot comes half a second after the scheduler starts: the system clock, shifted.
DRIVER = """
import sys
from datetime import UTC, datetime
from pulumi_mlops import cli
from pulumi_mlops.runtime import scheduler

shift = datetime(2026, 11, 24, 2, 59, 59, 500000, tzinfo=UTC) - datetime.now(UTC)
system_now = scheduler.SystemClock.now
scheduler.SystemClock.now = lambda self: system_now(self) + shift
sys.exit(cli.main(sys.argv[1:]))
"""


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended; only its entry is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pids: list[int], within: float = BOUND) -> list[int]:
    """The PIDs still running after at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


class Pids:
    """PID files written by the jobs; whatever they name is killed at teardown if still there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: list[int] = []

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pid"

    def read(self, *names: str, scheduler: subprocess.Popen[bytes] | None = None) -> list[int]:
        """The PIDs in the files ``names``, waiting (bounded) until every one is written."""
        deadline = time.monotonic() + 3 * BOUND  # includes the scheduler's start-up
        pids: list[int] = []
        while time.monotonic() < deadline:
            texts = [self.path(n).read_text() if self.path(n).exists() else "" for n in names]
            if all(t.endswith("\n") for t in texts):
                pids = [int(t) for t in texts]
                self.seen += pids
                return pids
            assert scheduler is None or scheduler.poll() is None, "the scheduler exited early"
            time.sleep(0.05)
        raise AssertionError(f"the job wrote no PID to {names} within {3 * BOUND:g}s")

    def kill_leftovers(self) -> None:
        for pid in self.seen:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Pids]:
    files = Pids(tmp_path)
    yield files
    files.kill_leftovers()


def sh_job(pids: Pids, *, ignore_term: bool = False, then: str = "wait") -> list[str]:
    """A shell that starts a grandchild (``gc``), writes its own PID (``leader``), then ``then``."""
    script = (("trap '' TERM; " if ignore_term else "")
              + f"sleep 60 & echo $! > {pids.path('gc')}; echo $$ > {pids.path('leader')}; "
              + then)
    return ["sh", "-c", script]


def python_job(pids: Pids) -> list[str]:
    """A Python job that starts a worker (``gc``) and waits for it, as a trainer with workers."""
    code = ("import os, pathlib, subprocess\n"
            "worker = subprocess.Popen(['sleep', '60'])\n"
            f"pathlib.Path({str(pids.path('gc'))!r}).write_text(f'{{worker.pid}}\\n')\n"
            f"pathlib.Path({str(pids.path('leader'))!r}).write_text(f'{{os.getpid()}}\\n')\n"
            "worker.wait()\n")
    return [sys.executable, "-c", code]


# ----------------------------------------------------------------- timeouts (in-process)


@pytest.mark.parametrize("job", [sh_job, python_job], ids=["shell", "python"])
def test_a_timeout_kills_the_grandchildren_of_the_run_too(
        tmp_path: Path, pids: Pids, job: Callable[[Pids], list[str]]) -> None:
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, job(pids), timeout=1.0, heartbeat_interval=0.1),
                          FakeClock(T0), lines.append)

    scheduler.run(max_slots=1)

    assert scheduler.runs == [(SLOT, 124)]
    leader, grandchild = pids.read("leader", "gc")
    assert wait_gone([leader, grandchild]) == []
    assert any("exceeded 1s" in line for line in lines)


def test_a_run_ignoring_sigterm_gets_sigkill_after_the_grace_period(
        tmp_path: Path, pids: Pids) -> None:
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, sh_job(pids, ignore_term=True), timeout=0.5,
                                  kill_grace=0.5, heartbeat_interval=0.1),
                          FakeClock(T0), lines.append)

    started = time.monotonic()
    scheduler.run(max_slots=1)
    took = time.monotonic() - started

    assert scheduler.runs == [(SLOT, 124)]
    assert wait_gone(pids.read("leader", "gc")) == []
    assert any("did not exit within 0.5s of SIGTERM" in line for line in lines)
    assert 1.0 <= took < BOUND  # timeout + grace, then SIGKILL: never the job's own 60 s


def test_processes_a_run_leaves_behind_are_killed_when_it_exits(
        tmp_path: Path, pids: Pids) -> None:
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, sh_job(pids, then="exit 0")), FakeClock(T0),
                          lines.append)

    scheduler.run(max_slots=1)

    assert scheduler.runs == [(SLOT, 0)]
    assert wait_gone(pids.read("gc")) == []
    assert any("left behind" in line for line in lines)


def test_a_negative_kill_grace_is_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`kill_grace` must be a number of seconds >= 0"):
        options(tmp_path, ["true"], kill_grace=-1.0)


# ----------------------------------------------------------------- commands that cannot start


def not_executable(tmp_path: Path) -> list[str]:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # no execute bit: refused even for root
    return [str(script)]


@pytest.mark.parametrize(("command", "status", "reason"), [
    (lambda tmp: [str(tmp / "no-such-command")], 127, "No such file or directory"),
    (not_executable, 126, "Permission denied"),
], ids=["missing", "not-executable"])
def test_a_command_that_cannot_start_is_a_failed_run_and_the_schedule_goes_on(
        tmp_path: Path, command: Callable[[Path], list[str]], status: int, reason: str
) -> None:
    clock = FakeClock(T0)
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, command(tmp_path), retries=1,
                                  heartbeat_interval=3600), clock, lines.append)

    assert scheduler.run(max_slots=2) == 0

    assert scheduler.runs == [(SLOT, status), (SLOT.replace(day=25), status)]
    cannot_start = [line for line in lines if "cannot start" in line]
    assert len(cannot_start) == 4  # two attempts of two slots, one line each
    assert all(reason in line and "\n" not in line for line in cannot_start)
    assert sum(f"exited {status}" in line for line in lines) == 4
    assert check_heartbeat(tmp_path / "heartbeat", 120, now=clock.now())


# ----------------------------------------------------------------- SIGTERM (a real process)


def start_scheduler(tmp_path: Path, job: list[str], *options: str) -> subprocess.Popen[bytes]:
    """``mlops schedule`` as the container runs it, its slot due half a second after start
    (``options`` added; no /metrics unless they give a ``--metrics-port``)."""
    command = [sys.executable, "-c", DRIVER, "schedule", "--cron", "0 3 * * *",
               "--heartbeat", str(tmp_path / "heartbeat"), "--heartbeat-interval", "0.2",
               "--metrics-port", "0", *options, "--", *job]
    with (tmp_path / "scheduler.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def stop_scheduler() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=BOUND)


def test_sigterm_ends_the_run_and_the_scheduler_exits_0(
        tmp_path: Path, pids: Pids, stop_scheduler: list[subprocess.Popen[bytes]]) -> None:
    scheduler = start_scheduler(tmp_path, sh_job(pids))
    stop_scheduler.append(scheduler)
    job = pids.read("leader", "gc", scheduler=scheduler)
    assert (tmp_path / "heartbeat").exists()

    scheduler.send_signal(signal.SIGTERM)

    assert scheduler.wait(timeout=BOUND) == 0
    assert wait_gone(job) == []
    log = (tmp_path / "scheduler.log").read_text()
    assert "stopped" in log and "Traceback" not in log
    # Nothing beats any more: the healthcheck says so at once, not max-age later.
    assert not (tmp_path / "heartbeat").exists()


def test_a_second_sigterm_kills_the_run_at_once_and_the_scheduler_exits_0(
        tmp_path: Path, pids: Pids, stop_scheduler: list[subprocess.Popen[bytes]]) -> None:
    scheduler = start_scheduler(tmp_path, sh_job(pids, ignore_term=True))
    stop_scheduler.append(scheduler)
    job = pids.read("leader", "gc", scheduler=scheduler)

    first = time.monotonic()
    scheduler.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the first signal is handled: two pending SIGTERMs would be one
    assert scheduler.poll() is None  # the job ignores SIGTERM: the grace period runs
    scheduler.send_signal(signal.SIGTERM)

    assert scheduler.wait(timeout=BOUND) == 0
    took = time.monotonic() - first
    assert wait_gone(job) == []
    assert took < ScheduleOptions("* * * * *", ("true",)).kill_grace  # not the whole grace
    assert "Traceback" not in (tmp_path / "scheduler.log").read_text()


# ----------------------------------------------------------------- /metrics (a real process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, str | None], float] | None:
    """The scheduler's /metrics (sample name and outcome → value); None while it does not
    answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {(sample.name, sample.labels.get(OUTCOME_LABEL)): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_running_scheduler_serves_a_success_then_a_failure_on_metrics(
        tmp_path: Path, stop_scheduler: list[subprocess.Popen[bytes]]) -> None:
    port, ran = free_port(), tmp_path / "ran"
    # Succeeds at start, fails at the 03:00 slot (and at its retry).
    job = ["sh", "-c", f"if [ -e {ran} ]; then exit 3; fi; touch {ran}"]
    shifted_start = datetime(2026, 11, 24, 2, 59, 59, 500000, tzinfo=UTC).timestamp()
    scheduler = start_scheduler(tmp_path, job, "--run-at-start", "--retries", "1",
                                "--metrics-port", str(port))
    stop_scheduler.append(scheduler)

    runs = RETRAIN_RUNS + "_total"
    deadline = time.monotonic() + 3 * BOUND
    while (exported := scrape(port)) is None or exported[(runs, FAILED)] < 1:
        assert scheduler.poll() is None, "the scheduler exited early"
        assert time.monotonic() < deadline, f"no failed run on /metrics: {exported}"
        time.sleep(0.1)

    assert exported[(runs, SUCCEEDED)] == 1 and exported[(runs, FAILED)] == 1
    started = exported[(RETRAIN_STARTED, None)]
    assert shifted_start <= started < shifted_start + BOUND  # the scheduler's own clock
    assert started <= exported[(RETRAIN_LAST_SUCCESS, None)] < started + BOUND

    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=BOUND) == 0
    assert scrape(port) is None  # the metrics server stopped with it
    log = (tmp_path / "scheduler.log").read_text()
    assert f"serving /metrics on 127.0.0.1:{port}" in log and "Traceback" not in log
