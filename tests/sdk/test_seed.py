"""The seed scenario: ``MapConfig(max_concurrency=5, limiter="dynamodb")`` over 100 items keeps
at most 5 downstream operations in flight, judged from the execution history."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python.lambda_service import OperationStatus
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, MapConfig
from tests.sdk.observe import peak_of

N = 100
LIMIT = 5


@durable_execution
def waiter(event: Any, context: DurableContext) -> Any:
    """The invoked target: waits 1 s, then doubles its input."""
    context.wait(Duration.from_seconds(1))
    return event * 2


def _results(res: Any) -> list[Any]:
    assert res.status.name == "SUCCEEDED", res.error
    return list(json.loads(res.result))


def test_seed_invokes_peak_at_most_limit(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        batch = context.map(
            list(range(N)),
            lambda ctx, item, i, items: ctx.invoke("waiter", item),
            config=MapConfig(max_concurrency=LIMIT, limiter="dynamodb"),
        )
        return batch.get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        runner.register_durable_function("waiter", waiter)
        res = runner.run(input="{}", execution_timeout=120)

    assert _results(res) == [i * 2 for i in range(N)]
    peak = peak_of(res, "InvokeOperation")
    assert 2 <= peak <= LIMIT, peak
    assert leases_left() == []


def test_seed_waits_peak_at_most_limit(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x + 1

        batch = context.map(
            list(range(N)), item, config=MapConfig(max_concurrency=LIMIT, limiter="dynamodb")
        )
        return batch.get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=120)

    assert _results(res) == [i + 1 for i in range(N)]
    peak = peak_of(res, "WaitOperation")
    assert 2 <= peak <= LIMIT, peak
    assert leases_left() == []


def test_seed_callbacks_peak_at_most_limit(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    """Callbacks completed by a test thread: a branch suspended on a callback keeps its slot.

    12 items, not 100: testing 1.4.0's runner stops resuming after a few dozen callbacks even
    with the bare SDK (a callback landing while an invocation runs is never delivered).
    """
    n = 12

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            callback = ctx.create_callback(name=f"cb-{i}")
            return callback.result()

        batch = context.map(
            list(range(n)), item, config=MapConfig(max_concurrency=LIMIT, limiter="dynamodb")
        )
        return batch.get_results()

    errors: list[BaseException] = []
    with DurableFunctionTestRunner(handler=handler) as runner:
        arn = runner.run_async(input="{}", execution_timeout=120)

        def complete_callbacks() -> None:
            try:
                # The SDK admits branches in index order, so callbacks appear in order.
                for i in range(n):
                    callback_id = runner.wait_for_callback(arn, name=f"cb-{i}", timeout=60)
                    runner.send_callback_success(callback_id, json.dumps(i * 3).encode())
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=complete_callbacks, daemon=True)
        sender.start()
        res = runner.wait_for_result(arn, timeout=60)
        sender.join(timeout=10)

    assert not errors, errors
    # The runner hands callback payloads back as the raw JSON text.
    assert _results(res) == [str(i * 3) for i in range(n)]
    peak = peak_of(res, "CallbackOperation")
    assert 2 <= peak <= LIMIT, peak
    assert leases_left() == []


def test_observer_catches_a_violation_control(limiter_env: Any) -> None:
    """Control: without a concurrency bound the same observer reports far more than LIMIT."""
    n = 20

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        return context.map(list(range(n)), item, config=MapConfig()).get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert _results(res) == list(range(n))
    assert peak_of(res, "WaitOperation") > LIMIT


@pytest.mark.parametrize("nesting", ["NESTED", "FLAT"])
def test_extra_durable_operations_per_branch(limiter_env: Any, nesting: str) -> None:
    """When the lease is free at once, the limiter records nothing in a NESTED map: the gate
    acquires straight from the store, and the release waits for the branch's own SUCCEED
    checkpoint. A FLAT branch has no checkpoint of its own, so it records one step
    (``durable-semaphore-release``) before it releases. Both histories are compared with the
    bare SDK's, operation for operation."""
    from aws_durable_execution_sdk_python.config import NestingType

    n = 8
    limiter = DynamoDBLimiter()
    nesting_type = NestingType[nesting]

    def make(limited: bool) -> Callable[..., Any]:
        @durable_execution
        def handler(event: Any, context: DurableContext) -> Any:
            def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
                ctx.wait(Duration.from_seconds(1))
                return x

            config = MapConfig(
                max_concurrency=n,
                limiter=limiter if limited else None,
                nesting_type=nesting_type,
            )
            return context.map(list(range(n)), item, config=config).get_results()

        return handler

    counts = {}
    ours: list[Any] = []
    for limited in (False, True):
        with DurableFunctionTestRunner(handler=make(limited)) as runner:
            res = runner.run(input="{}", execution_timeout=60)
        assert _results(res) == list(range(n))
        from tests.sdk.observe import all_operations

        ops = all_operations(res)
        counts[limited] = len(ops)
        if limited:
            ours = [op for op in ops if (op.name or "").startswith("durable-semaphore-")]
    per_branch = 1 if nesting == "FLAT" else 0
    assert counts[True] - counts[False] == per_branch * n
    assert len(ours) == per_branch * n
    assert all(op.name == "durable-semaphore-release" for op in ours)
    assert all(op.status is OperationStatus.SUCCEEDED for op in ours)
