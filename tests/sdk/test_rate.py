"""A rate limit on map branches, judged from the execution histories on the real clock.

Three executions share 4 starts per second with a burst of 2. Each branch books its start (a
step), waits durably for the whole seconds and in-process for the rest, then runs a step
named ``work``. The observer reads the histories (what each booking step recorded) and the
clock inside the work itself (when it really ran), never the limiter's item.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBRateLimiter, DynamoDBSemaphore, MapConfig
from durable_semaphore.demo.rate import most_in_window, plain_result
from durable_semaphore.pacing import BOOK_OPERATION_NAME
from durable_semaphore.store.rates import DynamoDBRateStore
from tests.sdk.observe import all_operations

RATE, PER, BURST = 4.0, 1.0, 2
EXECUTIONS, ITEMS = 3, 8
WINDOW = PER

#: When each ``work`` step really ran, by (execution, item): read in the work itself, because
#: the local runner timestamps operations when their checkpoints are flushed.
_RAN: dict[tuple[int, int], float] = {}
_RAN_LOCK = threading.Lock()


def _handler(limiter: DynamoDBRateLimiter | None) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        run = int(event["run"])

        def work(x: int) -> int:
            with _RAN_LOCK:
                _RAN.setdefault((run, x), time.time())
            return x

        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            return ctx.step(lambda _: work(x), name="work")

        config = MapConfig(max_concurrency=ITEMS, limiter=limiter)
        return context.map(list(range(ITEMS)), item, config=config).get_results()

    return handler


def _run_all(limiter: DynamoDBRateLimiter | None) -> list[Any]:
    _RAN.clear()
    with DurableFunctionTestRunner(handler=_handler(limiter), skip_time=False) as runner:
        arns = [
            runner.run_async(
                input=json.dumps({"run": k}), execution_timeout=120, execution_name=f"exec-{k}"
            )
            for k in range(EXECUTIONS)
        ]
        results = [runner.wait_for_result(arn, timeout=120) for arn in arns]
    for res in results:
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == list(range(ITEMS))
    return results


def _booked_pairs(results: list[Any]) -> list[tuple[float, float]]:
    """(start, booked at) of every booking step's record."""
    return [
        (float(record["start"]), float(record["booked_at"]))
        for res in results
        for op in all_operations(res)
        if type(op).__name__ == "StepOperation" and op.name == BOOK_OPERATION_NAME
        for record in [plain_result(json.loads(op.result))]
    ]


def _branches(results: list[Any]) -> list[tuple[float, float]]:
    """(booked start, actual start) of every branch: the booking step's record and the clock
    in its work, matched through the branch's context (operation ids repeat across runs)."""
    out = []
    for run, res in enumerate(results):
        steps = [op for op in all_operations(res) if type(op).__name__ == "StepOperation"]
        booked = {
            op.parent_id: float(plain_result(json.loads(op.result))["start"])
            for op in steps
            if op.name == BOOK_OPERATION_NAME
        }
        for op in steps:
            if op.name == "work":
                x = int(plain_result(json.loads(op.result)))
                out.append((booked[op.parent_id], _RAN[(run, x)]))
    return out


@pytest.mark.timeout(180)
def test_a_shared_rate_bounds_starts_across_executions(semaphore: DynamoDBSemaphore) -> None:
    store = DynamoDBRateStore(table_name=semaphore.table_name, client=semaphore.client)
    limiter = DynamoDBRateLimiter("api", RATE, PER, BURST, store=store)
    results = _run_all(limiter)
    branches = _branches(results)
    assert len(branches) == EXECUTIONS * ITEMS  # one booking step per branch
    booked = [b for b, _ in branches]
    interval = PER / RATE
    exact = math.floor(WINDOW / interval) + BURST
    # GCRA's bound on the starts the histories record, exactly.
    assert most_in_window(booked, WINDOW) <= exact
    # No branch ran before its start; each ran late only by how late the runtime resumed it.
    lateness = [ran - start for start, ran in branches]
    assert min(lateness) >= 0
    late = max(lateness)
    ran = [r for _, r in branches]
    widened = math.floor((WINDOW + late) / interval) + BURST
    assert most_in_window(ran, WINDOW) <= widened
    # Backlogged, the booked starts keep the rate: the starts booked ahead (queued behind
    # others) follow one another exactly one interval apart, however slowly the branches
    # arrived to book (a loaded machine spreads the bookings themselves out).
    queued = sorted(start for start, booked_at in _booked_pairs(results) if start > booked_at)
    span = queued[-1] - queued[0]
    achieved = (len(queued) - 1) / span
    print(
        f"\nbooked: {len(booked)} starts, {len(queued)} queued at {achieved:.2f}/s for "
        f"{RATE:g}/s, most in {WINDOW:g} s {most_in_window(booked, WINDOW)} (bound {exact}); "
        f"ran: late by {late:.2f} s at most (median {sorted(lateness)[len(lateness) // 2]:.2f} "
        f"s), most in {WINDOW:g} s {most_in_window(ran, WINDOW)} (bound with lateness {widened})"
    )
    assert achieved >= 0.95 * RATE / PER
    # Exactly one booking per branch: no replay or re-run step booked twice.
    assert len(store.state(limiter.key).bookings) == EXECUTIONS * ITEMS
    # At most two durable operations added per branch: the booking, and a wait when ahead.
    ops = [op for res in results for op in all_operations(res)]
    assert sum(1 for op in ops if type(op).__name__ == "WaitOperation") <= EXECUTIONS * ITEMS


@pytest.mark.timeout(120)
def test_control_without_the_rate_the_window_bound_is_broken(
    semaphore: DynamoDBSemaphore,
) -> None:
    """The same maps with no limiter: the observer sees the bound exceeded."""
    _run_all(None)
    exact = math.floor(WINDOW / (PER / RATE)) + BURST
    assert most_in_window(list(_RAN.values()), WINDOW) > exact


@pytest.mark.timeout(180)
def test_a_rate_and_a_concurrency_limit_together(semaphore: DynamoDBSemaphore) -> None:
    """``limiter=[rate, concurrency]``: a branch holds a slot of the concurrency limit, then
    books its start under the rate; both bounds hold, judged from the histories (the peak of
    the branches' downstream waits, and the booked starts)."""
    from aws_durable_execution_sdk_python.config import Duration

    from durable_semaphore import DynamoDBLimiter
    from tests.sdk.observe import peak_of

    store = DynamoDBRateStore(table_name=semaphore.table_name, client=semaphore.client)
    rate = DynamoDBRateLimiter("api-both", RATE, PER, BURST, store=store)
    slots = DynamoDBLimiter(
        "db-both", 2, semaphore=semaphore, initial_delay_seconds=1, max_delay_seconds=2
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1), name="downstream")
            return x

        config = MapConfig(max_concurrency=4, limiter=[rate, slots])
        return context.map(list(range(4)), item, config=config).get_results()

    with DurableFunctionTestRunner(handler=handler, skip_time=False) as runner:
        arns = [
            runner.run_async(input="{}", execution_timeout=120, execution_name=f"both-{k}")
            for k in range(2)
        ]
        results = [runner.wait_for_result(arn, timeout=120) for arn in arns]
    for res in results:
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == [0, 1, 2, 3]
    assert 1 <= peak_of(results, "WaitOperation") <= 2 + 2  # downstream waits + rate waits
    downstream = [
        (op.start_timestamp.timestamp(), op.end_timestamp.timestamp())
        for res in results
        for op in all_operations(res)
        if type(op).__name__ == "WaitOperation" and op.name == "downstream"
    ]
    from tests.sdk.observe import peak_overlap

    assert len(downstream) == 8 and peak_overlap(downstream) <= 2
    booked = [
        float(plain_result(json.loads(op.result))["start"])
        for res in results
        for op in all_operations(res)
        if type(op).__name__ == "StepOperation" and op.name == BOOK_OPERATION_NAME
    ]
    assert len(booked) == 8
    assert most_in_window(booked, WINDOW) <= math.floor(WINDOW / (PER / RATE)) + BURST


def test_a_limiter_list_takes_one_rate_and_distinct_concurrency_limits() -> None:
    from durable_semaphore import DynamoDBLimiter, InvalidArgumentError

    rate = DynamoDBRateLimiter("r", 1)
    with pytest.raises(InvalidArgumentError):
        MapConfig(max_concurrency=2, limiter=[rate, rate])
    x = DynamoDBLimiter("x", 2, waker=None)
    with pytest.raises(InvalidArgumentError):
        MapConfig(max_concurrency=2, limiter=[x, DynamoDBLimiter("x", 2, waker=None)])
    with pytest.raises(InvalidArgumentError):
        MapConfig(max_concurrency=2, limiter=["dynamodb", DynamoDBLimiter(waker=None)])
    several = MapConfig(max_concurrency=2, limiter=["dynamodb", x, rate])
    assert several.limiter == ["dynamodb", x, rate]
    with pytest.raises(InvalidArgumentError):
        MapConfig(max_concurrency=2, limiter=[])
    assert MapConfig(max_concurrency=2, limiter=["dynamodb", rate]).limiter == ["dynamodb", rate]
