"""Weighted permits on DynamoDB Local: a holder takes ``weight`` units of the limit.

Judged by an observer outside the store: each worker reports when it held its units (after
``acquire`` returned a lease, until before ``release`` was sent) and how many; the test sums
the units open at every instant. The control ignores the weight (takes one unit for a
four-unit task) and must be caught over the limit.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from durable_semaphore import AcquireTimeoutError, DynamoDBSemaphore, InvalidArgumentError
from tests.store_helpers import count_requests

LIMIT = 5
HOLD = (0.4, 0.6)


def _peak_units(spans: list[tuple[float, float, int]]) -> int:
    events = [(a, w) for a, _, w in spans] + [(b, -w) for _, b, w in spans]
    events.sort(key=lambda e: (e[0], e[1]))  # a release before an acquire at one instant
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _run(
    make: Callable[[], DynamoDBSemaphore],
    weights: list[int],
    *,
    honest: bool = True,
    workers: int = 8,
) -> list[tuple[float, float, int]]:
    """``workers`` threads take the tasks in order (a backlog, as a pool of workers would
    have), each waiting in the key's queue, polling its place every 50 ms."""
    spans: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    todo = list(enumerate(weights))

    def worker() -> None:
        sem = make()
        while True:
            with lock:
                if not todo:
                    return
                n, weight = todo.pop(0)
            holder = f"task-{n}"
            taken = weight if honest else 1
            try:
                position = None
                while True:
                    result = sem.acquire("w", holder, LIMIT, 30, position=position, weight=taken)
                    if result.lease is not None:
                        break
                    position = result.position
                    time.sleep(0.02)
                began = time.monotonic()
                time.sleep(random.uniform(*HOLD))
                ended = time.monotonic()
                with lock:
                    spans.append((began, ended, weight))
                sem.release_slot("w", holder, waiters_likely=True, weight=taken)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    return spans


@pytest.fixture
def make(semaphore: DynamoDBSemaphore) -> Callable[[], DynamoDBSemaphore]:
    return lambda: DynamoDBSemaphore(table_name=semaphore.table_name, client=semaphore.client)


def test_the_units_in_flight_never_exceed_the_limit(
    make: Callable[[], DynamoDBSemaphore],
) -> None:
    """A mixed backlog of weights 1 and 4 at limit 5, 8 workers: never more than 5 units
    held, and every task ran. (How much of the limit stays in use is a number for
    bench/weights_bench.py, not a timed test.)"""
    rng = random.Random(7)
    weights = [rng.choice((1, 4)) for _ in range(30)]
    spans = _run(make, weights)
    assert len(spans) == len(weights)
    print(f"\npeak units {_peak_units(spans)} of {LIMIT}")
    assert _peak_units(spans) <= LIMIT
    assert _peak_units(spans) >= LIMIT - 1  # the limit was reached: the check meant something


def test_control_a_weight_ignored_is_caught_over_the_limit(
    make: Callable[[], DynamoDBSemaphore],
) -> None:
    spans = _run(make, [4] * 6, honest=False)
    assert _peak_units(spans) > LIMIT


def test_a_heavy_head_is_served_before_lighter_ones_behind_it(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Strict FIFO by units: a 4-unit waiter at the head is not passed by 1-unit waiters that
    would fit; it gets the units as they free up, and they follow."""
    for holder in ("a", "b", "c"):
        assert semaphore.acquire("h", holder, LIMIT, weight=1).held  # 3 of 5 units
    heavy = semaphore.acquire("h", "heavy", LIMIT, weight=4)
    light = semaphore.acquire("h", "light", LIMIT, weight=1)
    assert heavy.queued and light.queued  # light fits, but waits behind heavy
    first = semaphore.release_slot("h", "a", waiters_likely=True)
    assert first.grants == ()  # 3 units free: not enough for heavy, and light may not pass
    second = semaphore.release_slot("h", "b", waiters_likely=True)
    assert [g.holder for g in second.grants] == ["heavy"]  # 4 free: heavy takes them all
    assert semaphore.slot_count("h").count == 5  # c (1) + heavy (4)
    third = semaphore.release_slot("h", "c", waiters_likely=True)
    assert [g.holder for g in third.grants] == ["light"]
    assert [(lease.holder, lease.weight) for lease in semaphore.holders("h")] == [
        ("heavy", 4),
        ("light", 1),
    ]


def test_a_weight_above_the_limit_is_refused_and_writes_nothing(
    semaphore: DynamoDBSemaphore,
) -> None:
    with count_requests(semaphore.client) as sent, pytest.raises(InvalidArgumentError) as exc:
        semaphore.acquire("k", "h", 3, weight=4)
    assert exc.value.name == "weight" and exc.value.value == 4
    assert sum(sent.values()) == 0


def test_weights_in_the_limiter_come_from_the_item() -> None:
    from durable_semaphore import DynamoDBLimiter

    limiter = DynamoDBLimiter("w", 10, weight=lambda item: item["units"], waker=None)
    assert limiter.weight_of({"units": 3}, 10) == 3
    with pytest.raises(InvalidArgumentError):
        limiter.weight_of({"units": 11}, 10)
    with pytest.raises(InvalidArgumentError):
        DynamoDBLimiter("w", 2, weight=3, waker=None)


def test_a_hold_takes_its_weight_and_hands_it_on(semaphore: DynamoDBSemaphore) -> None:
    from durable_semaphore import DynamoDBLimiter

    limiter = DynamoDBLimiter("hw", LIMIT, semaphore=semaphore, waker=None)
    with limiter.hold(timeout=5, weight=4) as held:
        assert semaphore.slot_count("hw").count == 4
        assert held.lease is not None and held.lease.weight == 4
        with limiter.hold(timeout=5, weight=1):
            assert semaphore.slot_count("hw").count == 5
        with pytest.raises(AcquireTimeoutError), limiter.hold(timeout=0.5, weight=2):
            pass
    assert semaphore.slot_count("hw").count == 0
    with pytest.raises(InvalidArgumentError):
        limiter.hold(weight=6)
