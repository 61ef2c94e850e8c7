"""Metrics observed in batches: nothing is lost or late for a reader of the registry."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pulumi_mlops.runtime.serve import metrics


def _requests(code: str) -> float:
    return metrics.REGISTRY.get_sample_value("mlops_requests_total", {"code": code}) or 0.0


def _class(label: str) -> float:
    return metrics.REGISTRY.get_sample_value("mlops_predictions_total", {"class": label}) or 0.0


def _latency_count() -> float:
    return metrics.REGISTRY.get_sample_value("mlops_request_duration_seconds_count") or 0.0


def test_without_an_event_loop_an_observation_is_counted_at_once() -> None:
    before = _requests("418")
    metrics.observe_request(418, 0, 0.001)
    assert metrics._pending_requests == []
    assert _requests("418") == before + 1


def test_pending_observations_are_counted_when_the_registry_is_read() -> None:
    before = (_requests("200"), _class("7"), _latency_count())

    async def serve() -> None:
        for _ in range(3):
            metrics.observe_predictions(np.array([7, 7, 8]))
            metrics.observe_request(200, 3, 0.002)
        assert len(metrics._pending_requests) == 3  # not counted yet
        # Read on the loop, as a scrape is: the registry counts what is pending first.
        assert (_requests("200"), _class("7"), _latency_count()) == (
            before[0] + 3, before[1] + 6, before[2] + 3)

    asyncio.run(serve())


def test_pending_observations_are_counted_within_the_flush_period_without_a_read() -> None:
    before = _requests("201")

    async def serve() -> list[int]:
        metrics.observe_request(201, 1, 0.001)
        seen = [len(metrics._pending_requests)]
        await asyncio.sleep(metrics.FLUSH_SECONDS + 0.2)
        seen.append(len(metrics._pending_requests))
        return seen

    assert asyncio.run(serve()) == [1, 0]
    assert _requests("201") == before + 1


def test_pending_observations_are_bounded() -> None:
    async def serve() -> int:
        most = 0
        for _ in range(metrics._FLUSH_REQUESTS * 2):
            metrics.observe_request(202, 1, 0.001)
            most = max(most, len(metrics._pending_requests))
        big = np.zeros(metrics._FLUSH_ROWS, dtype=np.int64)
        metrics.observe_predictions(big)
        assert metrics._pending_predictions == []  # over the row bound: counted at once
        return most

    assert asyncio.run(serve()) < metrics._FLUSH_REQUESTS


@pytest.mark.parametrize("values", [np.array([0.5, 2.0, np.nan]), np.array(["a", "b", "a"])])
def test_a_batch_counts_as_its_requests_would_one_by_one(values: np.ndarray) -> None:
    # Two requests with the same dtype are concatenated before they are counted.
    def sample() -> tuple[float | None, ...]:
        return (metrics.REGISTRY.get_sample_value("mlops_prediction_value_count"),
                metrics.REGISTRY.get_sample_value("mlops_prediction_value_bucket",
                                                  {"le": "1.0"}),
                _class("a"), _class("b"))

    before = sample()

    async def serve() -> None:
        metrics.observe_predictions(values)
        metrics.observe_predictions(values)

    asyncio.run(serve())
    after = sample()
    if values.dtype.kind == "f":
        assert (after[0] or 0) - (before[0] or 0) == 4  # NaN is not a value
        assert (after[1] or 0) - (before[1] or 0) == 2  # the two 0.5s
    else:
        assert ((after[2] or 0) - (before[2] or 0), (after[3] or 0) - (before[3] or 0)) == (4, 2)


@pytest.mark.parametrize("buckets, values", [
    (metrics._LATENCY_BUCKETS, [0.0001, 0.0005, 0.0007, 0.01, 4.9, 5.0, 7.0]),
    (metrics._ROW_BUCKETS, [1, 1, 2, 3, 100, 101, 10_000, 20_000]),
    (metrics._VALUE_BUCKETS, [-11.0, -10.0, -0.3, 0.0, 0.1, 0.5, 0.95, 1.0, 999.0, 1e6]),
])
def test_counting_a_batch_gives_what_prometheus_clients_own_observe_gives(
        buckets: tuple[float, ...], values: list[float]) -> None:
    # The batch count uses prometheus_client's histogram internals (it has no public bulk
    # observe): this fences them against a release that changes them.
    from prometheus_client import CollectorRegistry, Histogram

    def samples(observe: bool) -> list[tuple[str, dict[str, str], float]]:
        registry = CollectorRegistry()
        histogram = Histogram("h", "h", buckets=buckets, registry=registry)
        if observe:
            for value in values:
                histogram.observe(value)
        else:
            metrics._observe_many(histogram, np.array(values))
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples
                if not s.name.endswith("_created")]

    assert samples(False) == samples(True)
