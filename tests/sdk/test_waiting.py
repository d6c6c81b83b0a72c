"""Waiting for a slot in real durable executions (SDK 3.x local runner, DynamoDB Local).

Each claim is judged from the execution histories (operation start and end times, operations
per branch), never from the limiter's bookkeeping, and each has a control that is caught:

* a wake-up that lands while the waiter's own invocation is still running is acted on at once,
  with a callback timeout (300 s) far too long to explain a prompt start;
* a branch records the same few operations however long it waits;
* a replay whose first run was uncontended records nothing new, even when it finds its slot
  taken meanwhile (the lease loss is reported instead).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.waiting as waiting
from durable_semaphore import (
    DynamoDBLimiter,
    DynamoDBSemaphore,
    MapConfig,
    _sdk_compat,
    observability,
)
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from tests.sdk.observe import all_operations

STEP = "work"


@contextmanager
def _runner(handler: Any) -> Iterator[tuple[DurableFunctionTestRunner, Any]]:
    """A runner (real clock) with the durable-execution Lambda API served for its callbacks,
    and a waker that completes them through it."""
    port = free_port()
    with (
        DurableFunctionTestRunner(handler=handler, skip_time=False) as runner,
        local_lambda_endpoint(runner, port),
    ):
        yield runner, local_waker(f"http://127.0.0.1:{port}")


def _work_spans(result: Any) -> dict[int, tuple[float, float]]:
    """Each branch's work, (first step's start, last step's end), keyed by its item."""
    spans: dict[int, tuple[float, float]] = {}
    for op in all_operations(result):
        if op.name and op.name.startswith(STEP + "-"):
            x = int(op.name.split("-")[1])
            start, end = op.start_timestamp.timestamp(), op.end_timestamp.timestamp()
            old = spans.get(x, (start, end))
            spans[x] = (min(old[0], start), max(old[1], end))
    return spans


def _mid_invocation_run(
    semaphore: DynamoDBSemaphore, waker_factory: Any
) -> dict[str, tuple[float, float]]:
    """Limit 2, three items in one execution, one work step each. The first branch to get a
    slot works 0.2 s, the second 3 s (its invocation stays alive), the third waits. The first
    one's release hands the waiter its slot while that invocation runs. Returns the work
    spans keyed "first", "second" and "waiter" (by the order the work started)."""
    order = iter([0.2, 3.0, 0.2])
    lock = threading.Lock()
    holder: dict[str, Any] = {}

    def work(_step: Any) -> None:
        with lock:
            seconds = next(order)
        time.sleep(seconds)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.step(work, name=f"{STEP}-{x}-0")
            return x

        config = MapConfig(max_concurrency=3, limiter=holder["limiter"])
        return context.map([0, 1, 2], item, config=config).get_results()

    with _runner(handler) as (runner, waker):
        holder["limiter"] = DynamoDBLimiter(
            "mid", 2, semaphore=semaphore, waker=waker_factory(waker), wake_timeout_seconds=300
        )
        arn = runner.run_async(input="{}", execution_timeout=120)
        result = runner.wait_for_result(arn, timeout=120)
    assert result.status.name == "SUCCEEDED", result.error
    assert json.loads(result.result) == [0, 1, 2]
    spans = sorted(_work_spans(result).values())
    durations = [end - start for start, end in spans]
    assert durations[1] > 2.5, spans  # the long one started second
    return dict(zip(("first", "second", "waiter"), spans, strict=True))


def test_a_wake_up_delivered_mid_invocation_starts_the_waiter_at_once(
    semaphore: DynamoDBSemaphore,
) -> None:
    spans = _mid_invocation_run(semaphore, lambda waker: waker)
    gap = spans["waiter"][0] - spans["first"][1]
    # The waiter starts within a fraction of a second of the first one's end, while the
    # second still works: nothing but an in-process wake-up explains that (its callback
    # times out after 300 s).
    assert gap < 1.5, spans
    assert spans["waiter"][0] < spans["second"][1], spans


def test_control_a_waiter_that_suspends_at_once_waits_for_its_execution_to_idle(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: a waiter that suspends instead of staying in-process (the old behaviour). The
    same observer sees item 2 start only after item 1 is done, seconds after its slot freed."""
    monkeypatch.setattr(_sdk_compat, "can_refresh", lambda ctx: False)
    spans = _mid_invocation_run(semaphore, lambda waker: waker)
    assert spans["waiter"][0] >= spans["second"][1], spans
    assert spans["waiter"][0] - spans["first"][1] > 2.0, spans


def _long_wait_ops(
    semaphore: DynamoDBSemaphore, hold_seconds: float, **limiter_options: Any
) -> Any:
    """Two executions share a limit of 1: the first holds it for ``hold_seconds`` of work; the
    second's branch waits that long. Returns the waiter's history."""
    holder: dict[str, Any] = {}

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.step(lambda _s: time.sleep(event["work"]), name=f"{STEP}-{x}-0")
            return x

        config = MapConfig(max_concurrency=1, limiter=holder["limiter"])
        return context.map([event["item"]], item, config=config).get_results()

    with _runner(handler) as (runner, waker):
        holder["limiter"] = DynamoDBLimiter(
            "long", 1, semaphore=semaphore, waker=waker, **limiter_options
        )
        first = runner.run_async(input=json.dumps({"item": 0, "work": hold_seconds}))
        deadline = time.time() + 30
        while not semaphore.holders("long") and time.time() < deadline:
            time.sleep(0.05)
        second = runner.run_async(input=json.dumps({"item": 1, "work": 0.1}))
        results = [runner.wait_for_result(a, timeout=120) for a in (first, second)]
    for res in results:
        assert res.status.name == "SUCCEEDED", res.error
    return results


def _limiter_ops(result: Any) -> list[str]:
    return [
        op.name
        for op in all_operations(result)
        if op.name and op.name.startswith("durable-semaphore-")
    ]


def test_a_long_wait_records_one_callback(semaphore: DynamoDBSemaphore) -> None:
    """At the library's defaults a waiter records one callback, whatever the wait."""
    first, second = _long_wait_ops(semaphore, 6.0)
    assert _limiter_ops(first) == []
    assert _limiter_ops(second) == [waiting.WAIT_OPERATION_NAME]
    waited = _work_spans(second)[1][0] - _work_spans(first)[0][0]
    assert waited > 5.0, waited  # it really waited behind the first one's work


def test_control_a_short_callback_timeout_records_more_as_the_wait_grows(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Control: a 1 s timeout (the old demo setting) times out while the holder works, and
    each round records more; with a doubling timeout, about log2(wait) rounds."""
    _first, second = _long_wait_ops(semaphore, 6.0, wake_timeout_seconds=1)
    ops = _limiter_ops(second)
    assert ops.count(waiting.WAIT_OPERATION_NAME) >= 2, ops
    assert len(ops) >= 3, ops


def test_a_replay_that_finds_its_uncontended_slot_taken_records_nothing_new(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run took the slot without recording anything and started its body; before
    the replay, an operator released the lease and someone else took the slot. The replay
    must not record a wait where the body's operation already is (the history would no longer
    replay): it goes on, and the release reports the lost lease. The intruder keeps its slot."""
    lost: list[tuple[str, str]] = []
    monkeypatch.setattr(observability, "lease_lost", lambda key, holder: lost.append((key, holder)))
    limiter = DynamoDBLimiter("taken", 1, semaphore=semaphore, waker=None)
    intruder: dict[str, Any] = {}

    def steal(_step: Any) -> None:
        [lease] = semaphore.holders("taken")
        assert semaphore.release("taken", lease.holder)  # an operator's admin release
        intruder["lease"] = semaphore.try_acquire("taken", "intruder", 1)

    def make(interfere: bool) -> Any:
        @durable_execution
        def handler(event: Any, context: DurableContext) -> Any:
            def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
                if interfere:
                    ctx.step(steal, name="interfere")
                else:
                    ctx.step(lambda _s: None, name="interfere")
                ctx.wait(Duration.from_seconds(1))  # suspends: the branch replays after it
                return x

            config = MapConfig(max_concurrency=1, limiter=limiter)
            return context.map([7], item, config=config).get_results()

        return handler

    signatures = []
    for interfere in (False, True):
        with DurableFunctionTestRunner(handler=make(interfere)) as runner:
            res = runner.run(input="{}", execution_timeout=60)
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == [7]
        signatures.append(
            sorted((op.name or "", str(op.operation_type)) for op in all_operations(res))
        )
    assert signatures[0] == signatures[1]  # the same history, nothing of ours in it
    assert not any(name.startswith("durable-semaphore-") for name, _ in signatures[1])
    assert intruder["lease"] is not None
    assert [lease.holder for lease in semaphore.holders("taken")] == ["intruder"]
    assert len(lost) == 1 and lost[0][0] == "taken"
