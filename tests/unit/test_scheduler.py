"""`mlops schedule`: slots, Forbid semantics, starting deadline, retries, timeouts, heartbeat,
and the Prometheus series of the runs' outcomes."""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pulumi_mlops.cli import main
from pulumi_mlops.contracts.metrics import (
    FAILED,
    OUTCOME_LABEL,
    RETRAIN_LAST_SUCCESS,
    RETRAIN_RUNS,
    RETRAIN_STARTED,
    SUCCEEDED,
)
from pulumi_mlops.runtime.scheduler import (
    SLOT_ENV,
    ScheduleOptions,
    Scheduler,
    check_heartbeat,
    next_slot,
    parse_cron,
    slot_id,
    slots_between,
)

T0 = datetime(2026, 11, 24, 2, 59, 58, tzinfo=UTC)


class FakeClock:
    """Time moves only when the scheduler sleeps, or when a run advances it."""

    def __init__(self, start: datetime) -> None:
        self.moment = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.moment

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.moment += timedelta(seconds=seconds)


def options(tmp_path: Path, command: list[str], **kwargs: object) -> ScheduleOptions:
    """The scheduler's options; no metrics server unless ``metrics_port`` is given."""
    kwargs.setdefault("metrics_port", None)
    return ScheduleOptions(cron="0 3 * * *", command=tuple(command),
                           heartbeat=tmp_path / "heartbeat", **kwargs)  # type: ignore[arg-type]


def series(scheduler: Scheduler) -> dict[tuple[str, str | None], float]:
    """What ``/metrics`` would serve: sample name and outcome label → value."""
    text = generate_latest(scheduler.metrics.registry).decode()
    return {(sample.name, sample.labels.get(OUTCOME_LABEL)): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


RUNS = RETRAIN_RUNS + "_total"


def record_slot(tmp_path: Path) -> list[str]:
    """A command writing the slot it was given to a file, and exiting 0."""
    out = tmp_path / "slot"
    code = (f"import os, pathlib; pathlib.Path({str(out)!r}).open('a').write("
            "os.environ['MLOPS_SCHEDULE_SLOT'] + '\\n')")
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * *", "0 3 * JAN-MAR MON-FRI",
                                  "0 3 ? * *", "5,35 1-5 1 */2 0"])
def test_kubernetes_cron_expressions_are_accepted(cron: str) -> None:
    assert parse_cron(cron) == cron


def test_the_next_slot_is_strictly_after_now_in_utc() -> None:
    assert next_slot("0 3 * * *", T0) == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    at_slot = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert next_slot("0 3 * * *", at_slot) == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert next_slot("*/15 * * * *", at_slot) == datetime(2026, 11, 24, 3, 15, tzinfo=UTC)
    assert list(slots_between("0 * * * *", at_slot, at_slot + timedelta(hours=3))) == [
        at_slot + timedelta(hours=h) for h in (1, 2, 3)]


@pytest.mark.parametrize("cron", ["0 3 * *", "0 0 3 * * *", "61 3 * * *", "nightly", "",
                                  "@daily", "0 3 L * *", "0 3 * * 5#2", "H 3 * * *"])
def test_only_five_field_expressions_are_accepted(cron: str) -> None:
    with pytest.raises(ValueError, match="five-field"):
        parse_cron(cron)


def test_a_near_slot_runs_the_command_with_the_slot_in_its_environment(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, record_slot(tmp_path)), clock, lines.append)

    assert scheduler.run(max_slots=1) == 0

    slot = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert (tmp_path / "slot").read_text() == slot_id(slot) + "\n"
    assert scheduler.runs == [(slot, 0)]
    assert sum(clock.slept) == pytest.approx(2.0)
    assert any("exited 0" in line for line in lines)


def test_the_wait_beats_the_heart_between_sleeps(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 2, 58, tzinfo=UTC))
    scheduler = Scheduler(options(tmp_path, ["true"], heartbeat_interval=30), clock,
                          lambda _: None)

    scheduler.run(max_slots=1)

    assert max(clock.slept) <= 30
    assert len(clock.slept) == 4  # 120 s in steps of 30 s
    beat = datetime.fromisoformat((tmp_path / "heartbeat").read_text())
    assert check_heartbeat(tmp_path / "heartbeat", 120, now=beat + timedelta(seconds=60))
    assert not check_heartbeat(tmp_path / "heartbeat", 120, now=beat + timedelta(seconds=121))


def test_a_missing_or_garbled_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    assert not check_heartbeat(tmp_path / "none")
    (tmp_path / "bad").write_text("not a time")
    assert not check_heartbeat(tmp_path / "bad")


def test_runs_never_overlap_slots_passed_during_a_run_are_skipped(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 2, 59, 59, tzinfo=UTC))
    lines: list[str] = []
    scheduler = Scheduler(ScheduleOptions(cron="* * * * *", command=("true",),
                                          heartbeat=tmp_path / "hb", metrics_port=None),
                          clock, lines.append)
    real_run_slot = scheduler.run_slot

    def long_run(slot: datetime) -> int:
        code = real_run_slot(slot)
        clock.moment += timedelta(minutes=3, seconds=30)  # the run took 3.5 minutes
        return code

    scheduler.run_slot = long_run  # type: ignore[method-assign]
    scheduler.run(max_slots=2)

    first, second = (slot for slot, _ in scheduler.runs)
    assert first == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    # 03:01, 03:02 and 03:03 passed during the run: skipped, not run late or in parallel.
    assert second == datetime(2026, 11, 24, 3, 4, tzinfo=UTC)
    assert sum("still in progress" in line for line in lines) == 6


def test_a_slot_noticed_past_the_starting_deadline_is_skipped(tmp_path: Path) -> None:
    class Oversleeping(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds + 3600)  # the laptop was suspended

    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, ["true"], starting_deadline=600),
                          Oversleeping(T0), lines.append)

    scheduler.run(max_slots=1)

    assert scheduler.runs == []
    assert any("starting deadline" in line for line in lines)


def test_a_suspended_schedule_runs_nothing(tmp_path: Path) -> None:
    scheduler = Scheduler(options(tmp_path, ["false"], suspend=True), FakeClock(T0),
                          lambda _: None)

    scheduler.run(max_slots=2)

    assert scheduler.runs == []


def test_a_failed_run_is_retried_and_the_last_status_kept(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    code = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); p.open('a').write('x'); "
            "sys.exit(3)")
    scheduler = Scheduler(options(tmp_path, [sys.executable, "-c", code], retries=2),
                          FakeClock(T0), lambda _: None)

    scheduler.run(max_slots=1)

    assert counter.read_text() == "xxx"
    assert scheduler.runs[0][1] == 3


def test_every_attempt_of_a_slot_gets_the_same_key_and_the_next_slot_another(
        tmp_path: Path) -> None:
    out = tmp_path / "keys"
    code = (f"import os, pathlib, sys; pathlib.Path({str(out)!r}).open('a').write("
            f"os.environ[{SLOT_ENV!r}] + '\\n'); sys.exit(1)")
    scheduler = Scheduler(options(tmp_path, [sys.executable, "-c", code], retries=1),
                          FakeClock(T0), lambda _: None)

    scheduler.run(max_slots=2)

    # The retrain job's idempotency key: a retry registers nothing twice, the next night runs.
    assert SLOT_ENV == "MLOPS_SCHEDULE_SLOT"
    assert out.read_text().splitlines() == ["2026-11-24T03:00Z", "2026-11-24T03:00Z",
                                            "2026-11-25T03:00Z", "2026-11-25T03:00Z"]


def test_a_run_past_its_timeout_is_killed(tmp_path: Path) -> None:
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, ["sleep", "30"], timeout=0.5,
                                  heartbeat_interval=0.1), FakeClock(T0), lines.append)

    scheduler.run(max_slots=1)

    assert scheduler.runs[0][1] == 124
    assert any("exceeded 0.5s" in line for line in lines)


def test_the_cli_checks_the_heartbeat_and_rejects_a_bad_cron(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heartbeat = tmp_path / "hb"
    assert main(["schedule", "--check", "--heartbeat", str(heartbeat)]) == 1
    heartbeat.write_text(datetime.now(UTC).isoformat())
    assert main(["schedule", "--check", "--heartbeat", str(heartbeat)]) == 0
    assert main(["schedule", "--cron", "0 3 * *", "--", "true"]) == 2
    assert main(["schedule", "--cron", "0 3 * * *"]) == 2
    assert "five-field" in capsys.readouterr().err


def test_run_at_start_runs_once_keyed_initial_before_the_first_slot(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    lines: list[str] = []
    scheduler = Scheduler(options(tmp_path, record_slot(tmp_path), run_at_start=True), clock,
                          lines.append)

    assert scheduler.run(max_slots=1) == 0

    slot = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert (tmp_path / "slot").read_text().split() == ["initial", slot_id(slot)]
    assert [code for _, code in scheduler.runs] == [0, 0]
    assert scheduler.runs[0][0] == T0  # at start, not at a slot


def test_a_suspended_schedule_does_not_run_at_start(tmp_path: Path) -> None:
    scheduler = Scheduler(options(tmp_path, record_slot(tmp_path), run_at_start=True,
                                  suspend=True), FakeClock(T0), lambda line: None)

    assert scheduler.run(max_slots=1) == 0

    assert not (tmp_path / "slot").exists() and scheduler.runs == []


# ----------------------------------------------------------------- metrics


def test_both_outcomes_are_exported_at_zero_before_any_run(tmp_path: Path) -> None:
    scheduler = Scheduler(options(tmp_path, ["true"]), FakeClock(T0), lambda _: None)

    exported = series(scheduler)

    assert exported[(RUNS, SUCCEEDED)] == 0 and exported[(RUNS, FAILED)] == 0
    assert exported[(RETRAIN_LAST_SUCCESS, None)] == 0


def test_a_successful_slot_counts_once_and_stamps_when_it_ended(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    scheduler = Scheduler(options(tmp_path, ["true"]), clock, lambda _: None)
    real_attempt = scheduler._attempt

    def five_minutes(slot: datetime, key: str) -> int:
        clock.moment += timedelta(minutes=5)  # the run took five minutes
        return real_attempt(slot, key)

    scheduler._attempt = five_minutes  # type: ignore[method-assign]
    scheduler.run(max_slots=1)

    exported = series(scheduler)
    assert exported[(RUNS, SUCCEEDED)] == 1 and exported[(RUNS, FAILED)] == 0
    slot = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert exported[(RETRAIN_LAST_SUCCESS, None)] == (slot + timedelta(minutes=5)).timestamp()
    assert exported[(RETRAIN_STARTED, None)] == T0.timestamp()


def test_a_slot_failed_after_its_retries_counts_once_as_failed(tmp_path: Path) -> None:
    scheduler = Scheduler(options(tmp_path, ["false"], retries=2, heartbeat_interval=3600),
                          FakeClock(T0), lambda _: None)

    scheduler.run(max_slots=2)

    exported = series(scheduler)
    # Two slots of three attempts each: two failed runs, not six.
    assert exported[(RUNS, FAILED)] == 2 and exported[(RUNS, SUCCEEDED)] == 0
    assert exported[(RETRAIN_LAST_SUCCESS, None)] == 0  # no success yet


def test_a_slot_that_succeeds_on_a_retry_counts_as_succeeded_only(tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    code = (f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); "
            "sys.exit(0 if p.exists() else p.touch() or 1)")
    scheduler = Scheduler(options(tmp_path, [sys.executable, "-c", code], retries=1),
                          FakeClock(T0), lambda _: None)

    scheduler.run(max_slots=1)

    exported = series(scheduler)
    assert exported[(RUNS, SUCCEEDED)] == 1 and exported[(RUNS, FAILED)] == 0


def test_the_last_success_stays_when_a_later_slot_fails(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = (f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); "
            "sys.exit(1 if p.exists() else p.touch() or 0)")
    scheduler = Scheduler(options(tmp_path, [sys.executable, "-c", code], run_at_start=True),
                          FakeClock(T0), lambda _: None)

    scheduler.run(max_slots=1)

    exported = series(scheduler)
    assert exported[(RUNS, SUCCEEDED)] == 1 and exported[(RUNS, FAILED)] == 1
    assert exported[(RETRAIN_LAST_SUCCESS, None)] == T0.timestamp()  # the run at start


def test_skipped_and_suspended_slots_count_no_run(tmp_path: Path) -> None:
    class Oversleeping(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds + 3600)

    late = Scheduler(options(tmp_path, ["true"]), Oversleeping(T0), lambda _: None)
    suspended = Scheduler(options(tmp_path, ["true"], suspend=True), FakeClock(T0),
                          lambda _: None)

    late.run(max_slots=1)
    suspended.run(max_slots=1)

    for scheduler in (late, suspended):
        exported = series(scheduler)
        assert exported[(RUNS, SUCCEEDED)] == 0 and exported[(RUNS, FAILED)] == 0


def test_a_taken_metrics_port_stops_the_scheduler_before_any_run(tmp_path: Path) -> None:
    lines: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        scheduler = Scheduler(options(tmp_path, record_slot(tmp_path), run_at_start=True,
                                      metrics_port=port), FakeClock(T0), lines.append)

        assert scheduler.run(max_slots=1) == 1

    assert scheduler.runs == [] and not (tmp_path / "slot").exists()
    assert any(f"cannot serve /metrics on 127.0.0.1:{port}" in line for line in lines)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_a_metrics_port_out_of_range_is_refused_naming_the_option(tmp_path: Path,
                                                                  port: int) -> None:
    with pytest.raises(ValueError, match="`metrics_port` must be a TCP port"):
        options(tmp_path, ["true"], metrics_port=port)


def test_the_cli_refuses_a_metrics_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "--cron", "0 3 * * *", "--metrics-port", "70000", "--",
                 "true"]) == 2
    assert "--metrics-port" in capsys.readouterr().err
