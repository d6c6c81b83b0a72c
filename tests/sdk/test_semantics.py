"""Semantics of lease-gated maps and parallels under SDK 3.x, in the local runner against
DynamoDB Local: named limits across executions, failures, retries, early completion,
overlapping invocations, nesting, parallel, and limiter=None leaving the SDK untouched."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import (
    CompletionConfig,
    Duration,
    ParallelBranch,
    StepConfig,
)
from aws_durable_execution_sdk_python.retries import RetryStrategyConfig, create_retry_strategy
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.sdk
from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig, ParallelConfig
from tests.sdk.observe import all_operations, peak_of


def _ok(res: Any) -> Any:
    assert res.status.name == "SUCCEEDED", res.error
    return json.loads(res.result)


def _summary(batch: Any) -> dict[str, Any]:
    """What a user sees of a BatchResult, in comparable form."""
    return {
        "reason": str(batch.completion_reason),
        "items": [
            [
                item.index,
                str(item.status),
                item.result,
                item.error.type if item.error else None,
                item.error.message if item.error else None,
            ]
            for item in batch.all
        ],
    }


def _run(handler: Callable[..., Any], timeout: int = 60, **register: Any) -> Any:
    with DurableFunctionTestRunner(handler=handler) as runner:
        for name, fn in register.items():
            runner.register_durable_function(name, fn)
        return runner.run(input="{}", execution_timeout=timeout)


# -- named limiter ---------------------------------------------------------------------------


def test_named_limiter_caps_three_concurrent_executions(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    limiter = DynamoDBLimiter(
        name="x", limit=4, semaphore=semaphore, initial_delay_seconds=1, max_delay_seconds=2
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x * 10

        config = MapConfig(max_concurrency=20, limiter=limiter)
        return context.map(list(range(20)), item, config=config).get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        arns = [
            runner.run_async(input="{}", execution_timeout=120, execution_name=f"exec-{k}")
            for k in range(3)
        ]
        results = [runner.wait_for_result(arn, timeout=120) for arn in arns]

    for res in results:
        assert _ok(res) == [i * 10 for i in range(20)]
    peak = peak_of(results, "WaitOperation")
    assert 2 <= peak <= 4, peak
    assert leases_left() == []


# -- failures, retries, early completion -----------------------------------------------------


def _failing_handler(limiter: Any) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            if x % 4 == 1:
                raise ValueError(f"bad item {x}")
            return x

        config = MapConfig(
            max_concurrency=3, completion_config=CompletionConfig.all_completed(), limiter=limiter
        )
        return _summary(context.map(list(range(8)), item, config=config))

    return handler


def test_failing_branches_release_and_match_bare_sdk(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    bare = _ok(_run(_failing_handler(None)))
    limited = _ok(_run(_failing_handler("dynamodb")))
    assert limited == bare
    assert [item[3] for item in bare["items"]].count("ValueError") == 2
    assert leases_left() == []


def _retrying_handler(limiter: Any) -> Callable[..., Any]:
    retry = StepConfig(
        retry_strategy=create_retry_strategy(
            RetryStrategyConfig(max_attempts=2, initial_delay=Duration.from_seconds(1))
        )
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            def flaky(_: Any) -> int:
                if x == 2:
                    raise RuntimeError("always fails")
                return x

            return ctx.step(flaky, name="flaky", config=retry)

        config = MapConfig(
            max_concurrency=2, completion_config=CompletionConfig.all_completed(), limiter=limiter
        )
        return _summary(context.map(list(range(5)), item, config=config))

    return handler


def test_retries_exhausted_release_and_match_bare_sdk(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    bare = _ok(_run(_retrying_handler(None)))
    limited = _ok(_run(_retrying_handler("dynamodb")))
    assert limited == bare
    failed = [item for item in bare["items"] if item[3] is not None]
    assert [item[0] for item in failed] == [2]
    assert leases_left() == []


def _early_handler(limiter: Any) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            if x < 3:
                return x
            # Never completed: these branches are abandoned while holding a lease.
            return ctx.create_callback(name=f"never-{x}").result()

        config = MapConfig(
            max_concurrency=5,
            completion_config=CompletionConfig(min_successful=3),
            limiter=limiter,
        )
        return _summary(context.map(list(range(8)), item, config=config))

    return handler


def test_early_completion_sweeps_abandoned_leases(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    bare = _ok(_run(_early_handler(None)))
    limited = _ok(_run(_early_handler("dynamodb")))
    assert limited == bare
    assert sum(1 for item in bare["items"] if "SUCCEEDED" in item[1]) == 3
    assert leases_left() == []


def test_early_completion_control_without_sweep_leaks(
    limiter_env: Any, leases_left: Callable[[], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: with the sweep disabled the abandoned branches' leases stay behind, so the
    previous test really exercises the sweep."""
    monkeypatch.setattr(durable_semaphore.sdk, "sweep", lambda scope: None)
    _ok(_run(_early_handler("dynamodb")))
    # Any leak proves the point. Usually items 3 and 4 were admitted, then abandoned (5 and 6
    # too, if admitted before the coordinator saw min_successful); on a slow machine item 4 may
    # still be waiting for its lease when the map returns. At most 5 were ever admitted.
    assert 1 <= len(leases_left()) <= 5


# -- overlapping invocations -----------------------------------------------------------------


class RecordingSemaphore(DynamoDBSemaphore):
    """Records every acquire outcome, so a test can see whether a branch ever had to wait."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[tuple[str, bool]] = []
        self._outcomes_lock = threading.Lock()

    def acquire(self, key: str, holder: str, limit: int, *args: Any, **kwargs: Any) -> Any:
        result = super().acquire(key, holder, limit, *args, **kwargs)
        with self._outcomes_lock:
            self.outcomes.append((holder, result.held))
        return result


def test_overlapping_invocations_take_no_extra_slot(
    semaphore: DynamoDBSemaphore,
    leases_left: Callable[[], list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs of the same execution (same ARN, same operation ids) at once, as when a
    superseded invocation still runs: each branch's holder id is the same in both, so the
    second run re-enters the first run's leases instead of competing for slots."""
    monkeypatch.setattr(
        durable_semaphore.sdk, "_execution_arn", lambda ctx: "arn:aws:lambda:test:overlap"
    )
    recording = RecordingSemaphore(table_name=semaphore.table_name, client=semaphore.client)
    limiter = DynamoDBLimiter(semaphore=recording)  # per-operation scope, limit 5
    n = 5

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=n, limiter=limiter)
        return context.map(list(range(n)), item, config=config).get_results()

    counts: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            counts.append(len(leases_left()))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with (
            DurableFunctionTestRunner(handler=handler) as first,
            DurableFunctionTestRunner(handler=handler) as second,
        ):
            arns = [r.run_async(input="{}", execution_timeout=60) for r in (first, second)]
            results = [
                r.wait_for_result(a, timeout=60) for r, a in zip((first, second), arns, strict=True)
            ]
    finally:
        stop.set()
        sampler.join()

    for res in results:
        assert _ok(res) == list(range(n))
    holders = {holder for holder, _ in recording.outcomes}
    assert len(holders) == n  # one holder id per branch, shared by both runs
    assert all(ok for _, ok in recording.outcomes), "a branch had to wait for its own twin"
    assert max(counts) <= n
    assert leases_left() == []


# -- limiter=None is the bare SDK: tests/lines/test_lines_history.py, on every SDK line --------


# -- parallel --------------------------------------------------------------------------------


def test_parallel_with_limiter(limiter_env: Any, leases_left: Callable[[], list[Any]]) -> None:
    def make(tag: str) -> Callable[[DurableContext], str]:
        def branch(ctx: DurableContext) -> str:
            ctx.wait(Duration.from_seconds(1))
            return tag

        return branch

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        functions: list[Any] = [
            make("a"),
            ParallelBranch(func=make("b"), name="fetch-b"),
            make("c"),
            ParallelBranch(func=make("d"), name="fetch-d"),
            make("e"),
        ]
        config = ParallelConfig(max_concurrency=2, limiter="dynamodb")
        return context.parallel(functions, config=config).get_results()

    res = _run(handler)
    assert _ok(res) == ["a", "b", "c", "d", "e"]
    assert peak_of(res, "WaitOperation") <= 2
    names = {op.name for op in all_operations(res)}
    assert {"fetch-b", "fetch-d"} <= names
    assert leases_left() == []


# -- nesting ---------------------------------------------------------------------------------


def test_map_in_map_with_per_operation_scopes(
    limiter_env: Any, leases_left: Callable[[], list[Any]]
) -> None:
    """limiter="dynamodb" keys are per operation, so an inner map never competes with its
    parent's slot: no deadlock, and each level keeps its own bound."""

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def inner(ctx: DurableContext, y: int, j: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return y

        def outer(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            config = MapConfig(max_concurrency=2, limiter="dynamodb")
            return ctx.map([x * 10 + k for k in range(3)], inner, config=config).get_results()

        config = MapConfig(max_concurrency=2, limiter="dynamodb")
        return context.map(list(range(3)), outer, config=config).get_results()

    res = _run(handler)
    assert _ok(res) == [[x * 10 + k for k in range(3)] for x in range(3)]
    assert peak_of(res, "WaitOperation") <= 4
    assert leases_left() == []


def test_nested_same_named_limiter_is_refused(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    """A branch holding key "n" that maps again under "n" could deadlock (every slot held by a
    parent waiting for its children), so the inner map raises NestedLimiterError at once."""
    limiter = DynamoDBLimiter(name="n", limit=2, semaphore=semaphore)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def inner(ctx: DurableContext, y: int, j: int, items: Any) -> int:
            return y

        def outer(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            config = MapConfig(max_concurrency=2, limiter=limiter)
            return ctx.map([1, 2], inner, config=config).get_results()

        config = MapConfig(
            max_concurrency=2, completion_config=CompletionConfig.all_completed(), limiter=limiter
        )
        return _summary(context.map(list(range(3)), outer, config=config))

    out = _ok(_run(handler))
    assert [item[3].rsplit(".", 1)[-1] for item in out["items"]] == ["NestedLimiterError"] * 3
    assert "already holds" in out["items"][0][4]
    assert leases_left() == []


def test_nested_different_named_limiters_work(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    outer_limiter = DynamoDBLimiter(name="outer", limit=2, semaphore=semaphore)
    inner_limiter = DynamoDBLimiter(name="inner", limit=2, semaphore=semaphore, max_delay_seconds=2)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def inner(ctx: DurableContext, y: int, j: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return y

        def outer(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            config = MapConfig(max_concurrency=3, limiter=inner_limiter)
            return ctx.map([x, x + 1], inner, config=config).get_results()

        config = MapConfig(max_concurrency=3, limiter=outer_limiter)
        return context.map([0, 10, 20], outer, config=config).get_results()

    res = _run(handler)
    assert _ok(res) == [[x, x + 1] for x in (0, 10, 20)]
    assert peak_of(res, "WaitOperation") <= 2  # the inner named limit is global
    assert leases_left() == []
