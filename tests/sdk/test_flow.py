"""Per-item keys and several limits on one map, in real durable executions (SDK 3.x local
runner, DynamoDB Local), judged from the execution histories: each branch's downstream wait is
named after its tenant, and the overlap of those waits is what ran at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.branch as branch
import durable_semaphore.waiting as waiting
from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, InvalidArgumentError, MapConfig
from tests.sdk.observe import all_operations, peak_overlap

TENANTS = ["A", "B", "C"]
PER_TENANT = 2
TOTAL = 4


def _items(run: int) -> list[dict[str, Any]]:
    """Tenant A's items come first in every execution (a skewed backlog), then a mix."""
    tenants = ["A", "A", "A", "A", "B", "C", "B", "C", "A"]
    return [{"tenant": tenant, "n": run * 100 + i} for i, tenant in enumerate(tenants)]


def per_tenant(item: dict[str, Any]) -> str:
    return f"tenant:{item['tenant']}"


def _spans(results: list[Any]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of each branch's work, by tenant, from the histories."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for res in results:
        for op in all_operations(res):
            name = op.name or ""
            if type(op).__name__ == "WaitOperation" and name.startswith("work-"):
                span = (op.start_timestamp.timestamp(), op.end_timestamp.timestamp())
                spans.setdefault(name.removeprefix("work-"), []).append(span)
    return spans


def _run(limiter: Any, *, executions: int = 3, timeout: int = 120) -> list[Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: dict[str, Any], i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(2), name=f"work-{x['tenant']}")
            return int(x["n"])

        config = MapConfig(max_concurrency=9, limiter=limiter)
        return context.map(_items(int(event["run"])), item, config=config).get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        arns = [
            runner.run_async(
                input=json.dumps({"run": k}), execution_timeout=timeout, execution_name=f"e{k}"
            )
            for k in range(executions)
        ]
        results = [runner.wait_for_result(arn, timeout=timeout) for arn in arns]
    for k, res in enumerate(results):
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == [x["n"] for x in _items(k)]
    return results


def _limiter(semaphore: DynamoDBSemaphore, name: Any, limit: int) -> DynamoDBLimiter:
    return DynamoDBLimiter(
        name, limit, semaphore=semaphore, initial_delay_seconds=1, max_delay_seconds=2
    )


def _peaks(results: list[Any]) -> tuple[dict[str, int], int]:
    spans = _spans(results)
    every = [span for tenant in spans.values() for span in tenant]
    return {t: peak_overlap(s) for t, s in spans.items()}, peak_overlap(every)


def test_a_per_item_key_limits_each_tenant_across_executions(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    peaks, _ = _peaks(_run(_limiter(semaphore, per_tenant, PER_TENANT)))
    assert set(peaks) == set(TENANTS)
    assert all(1 <= peak <= PER_TENANT for peak in peaks.values()), peaks
    assert max(peaks.values()) == PER_TENANT, peaks  # the limit was reached, not just kept
    assert leases_left() == []


def test_control_without_per_item_keys_a_tenant_runs_above_its_limit() -> None:
    peaks, _ = _peaks(_run(None))
    assert max(peaks.values()) > PER_TENANT, peaks


def test_several_limits_hold_together(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    """At most 2 per tenant and 4 in total: each bound is reached and none is exceeded."""
    limits = [
        _limiter(semaphore, "total", TOTAL),
        _limiter(semaphore, per_tenant, PER_TENANT),
    ]
    peaks, total = _peaks(_run(limits))
    assert all(peak <= PER_TENANT for peak in peaks.values()), peaks
    assert total <= TOTAL, total
    assert total == TOTAL or max(peaks.values()) == PER_TENANT, (peaks, total)
    assert leases_left() == []


def test_control_each_limit_alone_is_exceeded_by_the_other_measure(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Only the total: some tenant runs more than 2; only per tenant: more than 4 in total."""
    peaks, _ = _peaks(_run(_limiter(semaphore, "total", TOTAL)))
    assert max(peaks.values()) > PER_TENANT, peaks
    _, total = _peaks(_run(_limiter(semaphore, per_tenant, PER_TENANT)))
    assert total > TOTAL, total


def test_a_bad_per_item_key_is_our_error_and_writes_nothing(
    semaphore: DynamoDBSemaphore, leases_left: Callable[[], list[Any]]
) -> None:
    seen: list[str] = []

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: str, i: int, items: Any) -> str:
            seen.append(x)
            return x

        limiter = _limiter(semaphore, lambda x: f" {x}" if x == "b" else x, 1)
        config = MapConfig(max_concurrency=2, limiter=limiter)
        try:
            context.map(["a", "b"], item, config=config)
        except InvalidArgumentError as exc:
            return {"field": exc.name, "value": exc.value}
        return "no error"

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert json.loads(res.result) == {"field": "name", "value": " b"}
    assert seen == [] and leases_left() == []
    assert semaphore.client.scan(TableName=semaphore.table_name)["Count"] == 0


def test_two_limits_of_a_branch_may_not_share_a_key(semaphore: DynamoDBSemaphore) -> None:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        limits = [_limiter(semaphore, "tenant:A", 3), _limiter(semaphore, per_tenant, 2)]
        config = MapConfig(max_concurrency=2, limiter=limits)
        try:
            context.map([{"tenant": "A"}], lambda c, x, i, xs: 1, config=config)
        except InvalidArgumentError as exc:
            return str(exc)
        return "no error"

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert "same key 'tenant:A'" in json.loads(res.result)


# -- no deadlock: one order for every branch ------------------------------------------------


def _crossed(semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Two executions list the same two limits of 1 in opposite orders; each branch pauses
    between its gates, so the first gates of both pass before either second gate is tried."""
    x, y = _limiter(semaphore, "x", 1), _limiter(semaphore, "y", 1)
    original = waiting.gate
    barrier = threading.Barrier(2, timeout=5)

    def gate_then_pause(scope: Any, ctx: Any, holder: str) -> Any:
        held = original(scope, ctx, holder)
        if scope.names == waiting.GateNames.of(0) and held is not None and not held.replayed:
            # Both first gates passed (or, in the canonical order, one waits: time out).
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return held

    monkeypatch.setattr(branch, "gate", gate_then_pause)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        limits = [x, y] if event["run"] == 0 else [y, x]
        config = MapConfig(max_concurrency=1, limiter=limits)
        work = lambda c, item, i, xs: c.wait(Duration.from_seconds(1), name="work") or item  # noqa: E731
        return context.map([event["run"]], work, config=config).get_results()

    results = []
    with DurableFunctionTestRunner(handler=handler) as runner:
        arns = [
            runner.run_async(input=json.dumps({"run": k}), execution_timeout=15) for k in range(2)
        ]
        deadline = time.monotonic() + 15
        for arn in arns:
            try:
                left = max(1.0, deadline - time.monotonic())
                results.append(runner.wait_for_result(arn, timeout=int(left)))
            except TimeoutError:
                results.append(None)
    return results


def test_limits_listed_in_opposite_orders_do_not_deadlock(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _crossed(semaphore, monkeypatch)
    assert [r.status.name if r else None for r in results] == ["SUCCEEDED", "SUCCEEDED"]
    spans = [
        (op.start_timestamp.timestamp(), op.end_timestamp.timestamp())
        for r in results
        for op in all_operations(r)
        if op.name == "work"
    ]
    assert peak_overlap(spans) == 1


def test_control_taken_in_list_order_they_deadlock(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(branch, "_CANONICAL_ORDER", False)
    results = _crossed(semaphore, monkeypatch)
    assert not any(r is not None and r.status.name == "SUCCEEDED" for r in results), results


# -- cost: two limits cost two single limits' requests and no durable operation -------------


def _uncontended(limiter: Any, semaphore: DynamoDBSemaphore) -> tuple[dict[str, int], int]:
    """Requests by operation (the map's end included) and the history's operation count of
    one execution mapping 6 items of distinct tenants, nothing else running.

    Each branch's work is a step, so the map ends in its first invocation: a branch suspended
    on a wait may be replayed by the same invocation (the map driven again for a completion it
    saw as it suspended), and a replay repeats its idempotent acquire and release, which would
    make the count depend on timing."""

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: dict[str, Any], i: int, items: Any) -> int:
            return int(ctx.step(lambda _: x["n"], name=f"work-{x['tenant']}"))

        items = [{"tenant": f"T{i}", "n": i} for i in range(6)]
        config = MapConfig(max_concurrency=6, limiter=limiter)
        return context.map(items, item, config=config).get_results()

    calls: dict[str, int] = {}
    lock = threading.Lock()
    table = f'"TableName": "{semaphore.table_name}"'.encode()

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        # One per request the library makes on this test's table: botocore's retries of a
        # slow answer are not counted (a loaded machine adds them at random), nor requests
        # of earlier tests' runners that share the session's client.
        if table in (params.get("body") or b""):
            with lock:
                calls[model.name] = calls.get(model.name, 0) + 1

    semaphore.client.meta.events.register("before-call.dynamodb", count)
    try:
        with DurableFunctionTestRunner(handler=handler) as runner:
            res = runner.run(input="{}", execution_timeout=60)
    finally:
        semaphore.client.meta.events.unregister("before-call.dynamodb", count)
    assert res.status.name == "SUCCEEDED", res.error
    return calls, len(all_operations(res))


def test_an_uncontended_branch_under_two_limits_costs_two_single_limits(
    make_semaphore: Callable[..., DynamoDBSemaphore],
) -> None:
    # One clock reading for the whole test. A counter write carries the lease's expiry and the
    # item's TTL in whole seconds, and only moves the TTL forward: when a loaded machine lets a
    # write computed in the next second land before one computed in this one, the older is
    # refused and sent again (1 to 4 extra UpdateItem at random in CI, a timing cost, not one
    # of two limits). The requests are otherwise the library's own, unchanged.
    started = time.time()
    semaphore = make_semaphore(clock=lambda: started)
    total = _limiter(semaphore, "total-cost", 10)
    tenants = _limiter(semaphore, per_tenant, 10)
    one_total, ops_total = _uncontended(total, semaphore)
    one_tenant, ops_tenant = _uncontended(tenants, semaphore)
    both, ops_both = _uncontended([total, tenants], semaphore)
    bare, ops_bare = _uncontended(None, semaphore)
    assert bare == {} and ops_total == ops_tenant == ops_both == ops_bare  # no operation of ours
    writes = {"UpdateItem": 12}  # per limit: 6 acquires and 6 releases
    assert {k: v for k, v in one_total.items() if k == "UpdateItem"} == writes
    assert {k: v for k, v in one_tenant.items() if k == "UpdateItem"} == writes
    assert sum(both.values()) <= sum(one_total.values()) + sum(one_tenant.values()), (
        both,
        one_total,
        one_tenant,
    )
    assert both["UpdateItem"] == 24


def test_per_item_keys_refuse_item_batching(semaphore: DynamoDBSemaphore) -> None:
    """SDK 1.x's item_batcher gives a branch a batch of items: no one key per item."""
    from types import SimpleNamespace

    from durable_semaphore import sdk

    batcher = SimpleNamespace(max_items_per_batch=10, max_item_bytes_per_batch=0)
    config = SimpleNamespace(
        limiter=_limiter(semaphore, per_tenant, 2), max_concurrency=2, item_batcher=batcher
    )
    with pytest.raises(InvalidArgumentError, match="item_batcher"):
        sdk._open_scopes(None, config, [{"tenant": "A"}])  # type: ignore[arg-type]
    # Control: without batching the same config is taken (up to the context it needs).
    config.item_batcher = SimpleNamespace(max_items_per_batch=0, max_item_bytes_per_batch=0)
    with pytest.raises(AttributeError):
        sdk._open_scopes(None, config, [{"tenant": "A"}])  # type: ignore[arg-type]
