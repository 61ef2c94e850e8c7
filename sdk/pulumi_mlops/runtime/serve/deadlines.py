"""Request deadlines checked by one periodic timer per event loop.

Every request has a head deadline and a body deadline (`Limits`), and nearly every request
meets both. Arming and cancelling a timer of its own costs about 2.5 µs under uvloop, an
``asyncio.timeout`` block about 4 µs: together some 4 % of a one-row prediction. Here a
request only records when it is due (a dictionary entry), and one timer looks every
``SWEEP_SECONDS`` for entries past due, so a deadline is acted on up to that much late.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Hashable

__all__ = ["SWEEP_SECONDS", "Deadlines", "deadlines"]

SWEEP_SECONDS = 0.25

log = logging.getLogger("mlops.serve")

_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary())


def deadlines(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The deadlines of ``loop`` (one set, and one timer, per event loop)."""
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = Deadlines(loop)
    return found


class Deadlines:
    """Calls registered with a deadline, made once the deadline has passed.

    Args:
        loop: The event loop the calls are made on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, seconds: float, on_due: Callable[[], None]) -> None:
        """Call ``on_due()`` about ``seconds`` from now unless ``key`` is removed first."""
        self._due[key] = (self._loop.time() + seconds, on_due)
        if self._timer is None:
            self._timer = self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``'s deadline (no error when there is none)."""
        self._due.pop(key, None)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        late = [key for key, (due, _) in self._due.items() if due <= now]
        for key in late:
            _, on_due = self._due.pop(key)
            try:
                on_due()
            except Exception:  # one failing call must not stop the others, or the timer
                log.exception("a request deadline's handler failed")
        if self._due:
            self._timer = self._loop.call_later(SWEEP_SECONDS, self._sweep)
