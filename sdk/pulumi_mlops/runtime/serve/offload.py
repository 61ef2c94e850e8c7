"""Run predictions on one thread beside the event loop, so that a long prediction never keeps
``/ping``, ``/health`` or ``/metrics`` from answering.

One thread per worker process, taking work in arrival order: predictions of a worker run one at
a time, as they did on the event loop, and only one request body is being decoded at a time.
The thread is a daemon and not an executor's: a prediction that never ends (its client already
got 504) cannot hold up the process's exit. A queue and a loop callback per request cost a few
microseconds; `concurrent.futures` would add a future and a lock per request on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Deferred", "PredictionThread"]

T = TypeVar("T")

@dataclass(frozen=True)
class Deferred(Generic[T]):
    """A call that is to run on the prediction thread, not on the event loop.

    Attributes:
        call: What to run.
    """

    call: Callable[[], T]


_Work = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...], Callable[[], None]]


class PredictionThread:
    """A daemon thread that runs submitted calls in order and hands each result to the event
    loop that submitted it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="predict", daemon=True).start()

    def submit(self, done: Callable[[], None], fn: Callable[..., T],
               *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the thread; ``done()`` is called on the running loop when it has
        returned or raised, also when the future was cancelled meanwhile (a timeout)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((future, fn, args, done))
        return future

    def _run(self) -> None:
        while True:
            self._one(*self._queue.get())

    def _one(self, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
             done: Callable[[], None]) -> None:
        # A method of its own, so that no request's objects outlive it on this thread.
        try:
            result = fn(*args)
        except BaseException as err:  # delivered to the awaiting request
            deliver: tuple[Any, ...] = (_fail, future, err, done)
        else:
            deliver = (_succeed, future, result, done)
        # A closed loop raises RuntimeError: the process is shutting down.
        with contextlib.suppress(RuntimeError):
            future.get_loop().call_soon_threadsafe(*deliver)


def _succeed(future: asyncio.Future[Any], result: Any, done: Callable[[], None]) -> None:
    done()
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], err: BaseException, done: Callable[[], None]) -> None:
    done()
    if not future.done():
        future.set_exception(err)
