"""Fair sharing (``fair_by=``) and priorities (``priority=``) in real durable executions (SDK
3.x local runner, real clock, DynamoDB Local, waiters woken through callbacks as deployed).

A first execution queues a backlog; a second one, started later, brings items of another
tenant (or of a higher priority). Everything is judged from the execution histories: when each
branch's work started (its ``work-<tenant>`` wait), and when each waiting branch was handed its
slot (its ``durable-semaphore-wait`` callback completed).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from durable_semaphore.demo.observer import jain_fairness
from durable_semaphore.sdk import WAIT_OPERATION_NAME
from tests.sdk.observe import all_operations

LIMIT = 5


def _run_staggered(
    limiter_of: Any, batches: list[list[dict[str, Any]]], delay: float, timeout: int = 240
) -> list[dict[str, Any]]:
    """Start one execution per batch, ``delay`` seconds apart; return one record per branch:
    its tenant, priority, work start and (when it waited) the instant its slot came."""
    port = free_port()
    limiter = limiter_of(local_waker(f"http://127.0.0.1:{port}"))

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: dict[str, Any], i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1), name=f"work-{x['tenant']}")
            return int(x["n"])

        config = MapConfig(max_concurrency=len(event["items"]), limiter=limiter)
        return context.map(event["items"], item, config=config).get_results()

    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(DurableFunctionTestRunner(handler=handler, skip_time=False))
        stack.enter_context(local_lambda_endpoint(runner, port))
        arns = []
        for k, batch in enumerate(batches):
            if k:
                time.sleep(delay)
            arns.append(
                runner.run_async(input=json.dumps({"items": batch}), execution_timeout=timeout)
            )
        results = [runner.wait_for_result(arn, timeout=timeout) for arn in arns]
    records = []
    for batch, res in zip(batches, results, strict=True):
        assert res.status.name == "SUCCEEDED", res.error
        records.extend(_branches(batch, res))
    return records


def _branches(batch: list[dict[str, Any]], res: Any) -> list[dict[str, Any]]:
    """Per branch (by its position in the map): its work's start and its wait's end."""
    ops = all_operations(res)
    by_id = {op.operation_id: op for op in ops}

    def branch_of(op: Any) -> int | None:
        """The map index of the iteration ``op`` belongs to (its ``map-item-<i>`` ancestor)."""
        while op is not None:
            name = op.name or ""
            if name.startswith("map-item-"):
                return int(name.removeprefix("map-item-"))
            op = by_id.get(op.parent_id) if op.parent_id else None
        return None

    out: dict[int, dict[str, Any]] = {}
    for op in ops:
        index = branch_of(op)
        if index is None:
            continue
        record = out.setdefault(index, dict(batch[index], granted=None))
        if (op.name or "").startswith("work-"):
            record["start"] = op.start_timestamp.timestamp()
        if op.name == WAIT_OPERATION_NAME and op.end_timestamp is not None:
            record["granted"] = op.end_timestamp.timestamp()
            record["queued"] = op.start_timestamp.timestamp()
    return list(out.values())


def _limiter(semaphore: DynamoDBSemaphore, name: str, **options: Any) -> Any:
    def build(waker: Any) -> DynamoDBLimiter:
        return DynamoDBLimiter(name, LIMIT, semaphore=semaphore, waker=waker, **options)

    return build


def _tenant(x: dict[str, Any]) -> str:
    return str(x["tenant"])


def _fairness(records: list[dict[str, Any]]) -> tuple[int, float]:
    """(A's starts between B's first queueing and B's first start, Jain's index over the two
    tenants' starts while both had a backlog: from B's first start to the earlier of their
    last starts)."""
    b = sorted(r["start"] for r in records if r["tenant"] == "B")
    a = sorted(r["start"] for r in records if r["tenant"] == "A")
    b_queued = min(r.get("queued", r["start"]) for r in records if r["tenant"] == "B")
    passed = sum(1 for t in a if b_queued < t < b[0])
    end = min(a[-1], b[-1])
    counts = [sum(1 for t in starts if b[0] <= t <= end) for starts in (a, b)]
    # No window where both had a backlog (B ran only after A): 0, not jain_fairness's 1.0.
    return passed, jain_fairness([float(c) for c in counts]) if any(counts) else 0.0


def _tenant_batches() -> list[list[dict[str, Any]]]:
    return [
        [{"tenant": "A", "n": i} for i in range(40)],
        [{"tenant": "B", "n": 100 + i} for i in range(10)],
    ]


@pytest.mark.timeout(300)
def test_fair_by_serves_a_later_tenant_beside_a_backlog(semaphore: DynamoDBSemaphore) -> None:
    limiter = _limiter(semaphore, "fair", fair_by=_tenant)
    records = _run_staggered(limiter, _tenant_batches(), delay=1.5)
    passed, jain = _fairness(records)
    print(f"fair: {passed} of A's started after B queued, before B's first; Jain {jain:.3f}")
    # B's first item waits at most for the slots already handed out (one task's worth).
    assert passed <= LIMIT, passed
    assert jain >= 0.95, jain
    b_first = min(r["start"] for r in records if r["tenant"] == "B")
    b_queued = min(r["queued"] for r in records if r["tenant"] == "B" and "queued" in r)
    print(f"fair: B's first started {b_first - b_queued:.2f} s after it queued (tasks of 1 s)")
    # Within one task of 1 s, plus the local runner's latency, which grows on a loaded
    # machine (4.1 s once with three such runs side by side); the order (above) is the claim.
    assert b_first - b_queued <= 1.0 + 4.0, (b_first, b_queued)


@pytest.mark.timeout(300)
def test_control_plain_fifo_makes_the_later_tenant_wait_for_the_backlog(
    semaphore: DynamoDBSemaphore,
) -> None:
    records = _run_staggered(_limiter(semaphore, "fifo"), _tenant_batches(), delay=1.5)
    passed, jain = _fairness(records)
    print(f"fifo: {passed} of A's started after B queued, before B's first; Jain {jain:.3f}")
    assert passed >= 25, passed  # most of A's 35 waiting items go first


def _priority_batches() -> list[list[dict[str, Any]]]:
    return [
        [{"tenant": "low", "prio": 0, "n": i} for i in range(50)],
        [{"tenant": "high", "prio": 1, "n": 100 + i} for i in range(5)],
    ]


def _priority_violations(records: list[dict[str, Any]]) -> int:
    """Low items still waiting when the last high one joined the queue that were handed a
    slot before some high one was."""
    highs = [r for r in records if r["tenant"] == "high"]
    arrived = max(r.get("queued", r["start"]) for r in highs)
    last_high = max(r["granted"] or r["start"] for r in highs)
    waiting_lows = [
        r for r in records if r["tenant"] == "low" and r["granted"] and r["granted"] > arrived
    ]
    return sum(1 for r in waiting_lows if r["granted"] < last_high)


@pytest.mark.timeout(300)
def test_higher_priority_items_queued_later_go_first(semaphore: DynamoDBSemaphore) -> None:
    limiter = _limiter(semaphore, "prio", priority=lambda x: int(x["prio"]))
    records = _run_staggered(limiter, _priority_batches(), delay=2.0)
    assert sum(1 for r in records if r["tenant"] == "high" and r["granted"]) >= 1
    print("priority: violations", _priority_violations(records))
    assert _priority_violations(records) == 0


@pytest.mark.timeout(300)
def test_control_without_priority_the_later_items_wait_their_turn(
    semaphore: DynamoDBSemaphore,
) -> None:
    records = _run_staggered(_limiter(semaphore, "noprio"), _priority_batches(), delay=2.0)
    print("no priority: violations", _priority_violations(records))
    assert _priority_violations(records) >= 20


# -- several limits: no head-of-line blocking across keys -----------------------------------


def _tenant_key(x: dict[str, Any]) -> str:
    return f"hol-tenant-{x['tenant']}"


def _hol(semaphore: DynamoDBSemaphore) -> float:
    """Seconds from the first start of tenant A (20 items queued on its limit of 2) to the
    last start of tenant B's 2 items, queued 1.5 s later; the total limit of 6 has room."""

    def limits(waker: Any) -> list[DynamoDBLimiter]:
        options: dict[str, Any] = {"semaphore": semaphore, "waker": waker}
        return [
            DynamoDBLimiter("hol-total", 6, **options),
            DynamoDBLimiter(_tenant_key, 2, **options),
        ]

    batches = [
        [{"tenant": "A", "n": i} for i in range(20)],
        [{"tenant": "B", "n": 100 + i} for i in range(2)],
    ]
    records = _run_staggered(limits, batches, delay=1.5)
    a_first = min(r["start"] for r in records if r["tenant"] == "A")
    return max(r["start"] for r in records if r["tenant"] == "B") - a_first


@pytest.mark.timeout(300)
def test_a_tenants_backlog_does_not_hold_up_another_tenant(semaphore: DynamoDBSemaphore) -> None:
    """A's backlog waits on A's key holding nothing, so B's items find the total's room."""
    waited = _hol(semaphore)
    print(f"B's last start {waited:.2f} s after A's first (B queued at about 1.5 s)")
    assert waited <= 1.5 + 1.5, waited


@pytest.mark.timeout(300)
def test_control_the_total_taken_first_makes_b_wait_behind_a(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: in list order (the total first), A's waiters hold total slots while they wait
    for A's key, and B queues for the total behind A's backlog."""
    import durable_semaphore.branch as branch

    monkeypatch.setattr(branch, "_CANONICAL_ORDER", False)
    waited = _hol(semaphore)
    print(f"control: B's last start {waited:.2f} s after A's first")
    assert waited >= 1.5 + 3.0, waited
