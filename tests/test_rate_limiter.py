"""DynamoDBRateLimiter from blocking code, and its configuration, on DynamoDB Local."""

from __future__ import annotations

import pytest

from durable_semaphore import (
    AcquireTimeoutError,
    DynamoDBRateLimiter,
    DynamoDBSemaphore,
    InvalidArgumentError,
    MapConfig,
)
from durable_semaphore.store.rates import DynamoDBRateStore
from tests.conftest import FakeClock
from tests.store_helpers import count_requests


def _limiter(semaphore: DynamoDBSemaphore, clock: FakeClock, **kw: float) -> DynamoDBRateLimiter:
    store = DynamoDBRateStore(table_name=semaphore.table_name, client=semaphore.client, clock=clock)
    args = {"rate": 2.0, "per": 1.0, "burst": 1} | kw
    return DynamoDBRateLimiter("partner", store=store, **args)  # type: ignore[arg-type]


def test_wait_turn_sleeps_until_each_callers_start(
    semaphore: DynamoDBSemaphore, clock: FakeClock
) -> None:
    """Four callers at one instant, 2 per second, burst 1: they start 0.5 s apart, each
    told by one write, and the sleeps are exactly the gaps."""
    limiter = _limiter(semaphore, clock)
    slept: list[float] = []
    with count_requests(semaphore.client) as sent:
        starts = [limiter.wait_turn(sleep=slept.append).start - clock.now for _ in range(4)]
    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert slept == pytest.approx([0.5, 1.0, 1.5])
    assert sum(sent.values()) <= 5  # one write each, at most one refused first variant


def test_the_same_holder_gets_the_same_start(
    semaphore: DynamoDBSemaphore, clock: FakeClock
) -> None:
    limiter = _limiter(semaphore, clock)
    first = limiter.wait_turn("job-1", sleep=lambda _: None)
    limiter.wait_turn("job-2", sleep=lambda _: None)
    again = limiter.wait_turn("job-1", sleep=lambda _: None)
    assert again.start == first.start and not again.fresh


def test_a_start_beyond_the_timeout_raises_at_once(
    semaphore: DynamoDBSemaphore, clock: FakeClock
) -> None:
    limiter = _limiter(semaphore, clock, rate=1.0)
    limiter.wait_turn(sleep=lambda _: None)
    limiter.wait_turn(sleep=lambda _: None)
    slept: list[float] = []
    with pytest.raises(AcquireTimeoutError) as exc:
        limiter.wait_turn(timeout=1.5, sleep=slept.append)
    assert slept == [] and "2.0 s away" in str(exc.value)
    assert limiter.wait_turn(timeout=5, sleep=slept.append).start > clock.now


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"per": -1}, "per"),
        ({"burst": 0}, "burst"),
        ({"burst": 1.5}, "burst"),
    ],
)
def test_bad_arguments_get_our_error_naming_the_value(kwargs: dict[str, float], name: str) -> None:
    args = {"rate": 5.0, "per": 1.0, "burst": 1} | kwargs
    with pytest.raises(InvalidArgumentError) as exc:
        DynamoDBRateLimiter("api", **args)  # type: ignore[arg-type]
    assert exc.value.name == name


def test_a_rate_limiter_is_a_valid_map_limiter_without_max_concurrency() -> None:
    limiter = DynamoDBRateLimiter("api", 5)
    assert MapConfig(limiter=limiter).limiter is limiter
    with pytest.raises(InvalidArgumentError):
        MapConfig(limiter="rate")  # type: ignore[arg-type]
