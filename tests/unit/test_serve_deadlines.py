"""One timer per event loop for every request deadline of the scoring server."""

from __future__ import annotations

import asyncio

import pytest

from pulumi_mlops.runtime.serve.deadlines import SWEEP_SECONDS, deadlines


def test_calls_what_is_past_due_once_and_forgets_what_was_removed(
        caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    def failing() -> None:
        called.append("failing")
        raise RuntimeError("a broken handler")

    async def scenario() -> None:
        due = deadlines(asyncio.get_running_loop())
        assert due is deadlines(asyncio.get_running_loop())  # one per loop
        due.add("late", 0.0, lambda: called.append("late"))
        due.add("failing", 0.0, failing)
        due.add("removed", 0.0, lambda: called.append("removed"))
        due.add("later", 10 * SWEEP_SECONDS, lambda: called.append("later"))
        due.remove("removed")
        due.remove("never added")
        await asyncio.sleep(2 * SWEEP_SECONDS)
        due.remove("later")
        await asyncio.sleep(2 * SWEEP_SECONDS)

    asyncio.run(scenario())
    assert sorted(called) == ["failing", "late"]
    assert "a broken handler" in caplog.text  # logged, and the others still ran


def test_the_timer_stops_when_nothing_is_pending() -> None:
    async def scenario() -> bool:
        due = deadlines(asyncio.get_running_loop())
        due.add("x", 0.0, lambda: None)
        await asyncio.sleep(2 * SWEEP_SECONDS)
        return due._timer is None

    assert asyncio.run(scenario())
