"""Cost of the feedback window in the model server's request path, and its memory.

Times what a successful scoring answer does for ``/feedback``: take its request id (a new one,
or the client's ``X-Request-Id``), keep its predictions in the window
(`PredictionWindow.remember`) and encode the id for the header, with the window at the
server's defaults (full: every answer evicts the oldest) and with the window off
(``--feedback-window-rows 0``: the id alone), for 1-row and 100-row answers of a classifier
(int64 classes) and a regressor (float64 values). Then the memory of a full window, by
tracemalloc.

Run: .venv/bin/python benchmarks/feedback_overhead.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

import numpy as np

from pulumi_mlops.runtime.serve.feedback import PredictionWindow, request_id_of
from pulumi_mlops.runtime.serve.limits import Limits


def _answers(count: int, rows: int, kind: str) -> list[np.ndarray[Any, Any]]:
    """Predictions as the server has them: one fresh array per answer."""
    rng = np.random.default_rng(0)
    if kind == "classes":
        return [rng.integers(0, 2, rows) for _ in range(count)]
    return [rng.normal(150.0, 50.0, rows) for _ in range(count)]


def _per_request_us(window: PredictionWindow, answers: list[np.ndarray[Any, Any]],
                    scope: dict[str, Any]) -> float:
    remember = window.remember
    start = time.perf_counter()
    for predictions in answers:
        rid = request_id_of(scope)
        remember(rid, predictions)
        rid.encode()
    return (time.perf_counter() - start) / len(answers) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    limits = Limits()
    ids, rows = limits.feedback_window_ids, limits.feedback_window_rows
    print(f"window: {ids:,} ids, {rows:,} rows (the defaults); {args.requests:,} answers "
          "per figure, best of 3")
    plain = {"headers": [(b"content-type", b"application/json")]}
    print(f"\n{'answer':<20}{'id only':>12}{'id + window':>14}{'window':>10}"
          "   (µs per request; id only = window off)")
    for kind in ("classes", "values"):
        for size in (1, 100):
            answers = _answers(args.requests, size, kind)
            off = min(_per_request_us(PredictionWindow(0, 0), answers, plain)
                      for _ in range(3))
            on = []
            for _ in range(3):
                window = PredictionWindow(ids, rows)
                _per_request_us(window, answers[: ids], plain)  # full: steady state
                on.append(_per_request_us(window, answers, plain))
            best = min(on)
            print(f"{f'{size:>3}-row {kind}':<20}{off:>12.2f}{best:>14.2f}{best - off:>10.2f}")
    given = {"headers": [(b"content-type", b"application/json"),
                         (b"x-request-id", b"0f8e2a41c9d54b7e8a1c2d3e4f5a6b7c")]}
    clock = time.perf_counter
    for label, scope in (("a new id", plain), ("the client's X-Request-Id", given)):
        best = float("inf")
        for _ in range(3):
            start = clock()
            for _ in range(args.requests):
                request_id_of(scope)
            best = min(best, (clock() - start) / args.requests * 1e6)
        print(f"taking {label}: {best:.2f} µs")

    print("\nmemory of a full window (tracemalloc):")
    for size in (1, 100):
        answers = _answers(max(ids, rows // size) + 10, size, "values")
        gc.collect()
        tracemalloc.start()
        window = PredictionWindow(ids, rows)
        for i, predictions in enumerate(answers):
            window.remember(f"{i:032x}", predictions)
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # The arrays are the answers' own (kept by reference): count only what the window
        # holds alive beyond the arrays it keeps, plus those arrays.
        held = sum(a.nbytes + 112 for a in answers[-len(window):])
        print(f"  {size:>3}-row answers: {len(window):,} ids, {window.rows:,} rows: "
              f"{current / 2**20:.1f} MiB allocated by filling it (ids, index), "
              f"{held / 2**20:.1f} MiB of kept arrays")
        del window, answers


if __name__ == "__main__":
    main()
