"""A named limit changed at run time (5 -> 2 -> 8, what ``durable-semaphore set-limit`` does)
while three durable executions share it (SDK 3.x local runner, real clock, DynamoDB Local,
callbacks). Judged from the execution histories: the overlap of the branches' work waits."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig
from durable_semaphore._store_access import StoreAccess
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from durable_semaphore.demo.observer import overlap_steps
from tests.sdk.observe import all_operations

CODE_LIMIT = 5
TASK = 2.0
#: (seconds after the executions start, the limit set then).
CHANGES = [(3.0, 2), (9.0, 8)]


def _run(semaphore: DynamoDBSemaphore) -> tuple[list[tuple[float, float]], list[float]]:
    """Work spans (seconds since the executions started) and the instants of the changes."""
    port = free_port()
    limiter = DynamoDBLimiter(
        "runtime-limit",
        CODE_LIMIT,
        semaphore=semaphore,
        waker=local_waker(f"http://127.0.0.1:{port}"),
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(int(TASK)), name="work")
            return x

        config = MapConfig(max_concurrency=12, limiter=limiter)
        return context.map(list(range(12)), item, config=config).get_results()

    changed: list[float] = []

    def change(started: float) -> None:
        """Each change takes effect during its call: a lowering is dated by the call's end
        (in force by then), a raise by its start (room may be handed out from then on)."""
        for after, limit in CHANGES:
            time.sleep(max(0.0, started + after - time.time()))
            called = time.time()
            limiter.set_limit("runtime-limit", limit, code_limit=CODE_LIMIT)
            changed.append(time.time() if limit < CODE_LIMIT else called)

    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(DurableFunctionTestRunner(handler=handler, skip_time=False))
        stack.enter_context(local_lambda_endpoint(runner, port))
        started = time.time()
        arns = [runner.run_async(input=json.dumps({}), execution_timeout=240) for _ in range(3)]
        thread = threading.Thread(target=change, args=(started,), daemon=True)
        thread.start()
        results = [runner.wait_for_result(arn, timeout=240) for arn in arns]
        thread.join(timeout=30)
    spans = []
    for res in results:
        assert res.status.name == "SUCCEEDED", res.error
        for op in all_operations(res):
            if op.name == "work":
                spans.append(
                    (
                        op.start_timestamp.timestamp() - started,
                        op.end_timestamp.timestamp() - started,
                    )
                )
    assert len(spans) == 36
    return spans, [t - started for t in changed]


def _peak_between(spans: list[tuple[float, float]], start: float, end: float) -> int:
    steps = overlap_steps(spans)
    before = [n for t, n in steps if t < start]
    inside = [n for t, n in steps if start <= t < end]
    return max(inside + before[-1:], default=0)


@pytest.mark.timeout(300)
def test_the_peak_follows_each_change_within_one_task(semaphore: DynamoDBSemaphore) -> None:
    spans, changed = _run(semaphore)
    assert len(changed) == 2
    lowered, raised = changed
    assert _peak_between(spans, 0.0, lowered) <= CODE_LIMIT
    # Lowered to 2: nobody is revoked, and within one task the peak is down to 2.
    assert _peak_between(spans, lowered + TASK + 0.5, raised) <= 2
    # Raised to 8: the new room is handed to waiters at once; never above 8.
    assert _peak_between(spans, raised, raised + TASK + 1.0) >= 6
    assert _peak_between(spans, raised, 1e9) <= 8
    # Each start counted against the limit in force when it was admitted (at most a second
    # before its work started, by the runner's latency).
    for start, _ in spans:
        in_flight = sum(1 for s, e in spans if s <= start < e)
        allowed = max(_limit_at(start, changed), _limit_at(start - 1.0, changed))
        assert in_flight <= allowed, (start, in_flight, allowed)


def _limit_at(t: float, changed: list[float]) -> int:
    limit = CODE_LIMIT
    for (_, new), at in zip(CHANGES, changed, strict=True):
        if t >= at:
            limit = new
    return limit


@pytest.mark.timeout(300)
def test_control_a_set_limit_ignored_keeps_the_old_peak(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StoreAccess, "set_limit", lambda self, *a, **k: ())
    spans, changed = _run(semaphore)
    lowered, raised = changed
    assert _peak_between(spans, lowered + TASK + 0.5, raised) > 2
    assert _peak_between(spans, raised, 1e9) <= CODE_LIMIT
