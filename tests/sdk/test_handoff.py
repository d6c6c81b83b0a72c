"""The FIFO hand-off in real durable executions (SDK 3.x local runner, DynamoDB Local).

Executions that share a named limit wait on durable callbacks; a releaser hands its slot to
the oldest waiter in the store and completes the waiter's callback through the testing
library's durable-execution Lambda API (the same API call as on AWS). Every claim is judged
from the execution histories (the overlap of the invokes), never from the limiter.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import CompletionConfig, Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.branch as branch
import durable_semaphore.sdk
from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from durable_semaphore.demo.observer import all_operations
from durable_semaphore.demo.running import run_demo
from durable_semaphore.demo.scenario import DemoConfig
from durable_semaphore.sdk import WAIT_OPERATION_NAME
from durable_semaphore.wake import WakeOutcome

LIMIT = 3


def _wait_callbacks(result: Any) -> list[str]:
    """Statuses of the limiter's wait callbacks in one history."""
    return [
        str(getattr(op.status, "name", op.status))
        for op in all_operations(result)
        if type(op).__name__ == "CallbackOperation" and op.name == WAIT_OPERATION_NAME
    ]


def _run_shared(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[Any, list[Any]]:
    """run_demo with several executions sharing a named limit; returns (result, histories)."""
    histories: list[Any] = []
    runner_cls = DurableFunctionTestRunner
    original = runner_cls.wait_for_result

    def keep(self: Any, arn: str, timeout: int = 60) -> Any:
        res = original(self, arn, timeout=timeout)
        histories.append(res)
        return res

    monkeypatch.setattr(runner_cls, "wait_for_result", keep)
    wrap = options.pop("wrap_waker", None)
    config = DemoConfig(max_concurrency=LIMIT, execution_timeout=300, **options)
    return run_demo(config, semaphore, wrap_waker=wrap), histories


def test_executions_sharing_a_limit_hand_off_through_callbacks(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: list[str | None] = []
    original_release = branch._release_quietly

    def spy(scope: Any, holder: str, *, token: str | None = None, **options: Any) -> None:
        tokens.append(token)
        original_release(scope, holder, token=token, **options)

    monkeypatch.setattr(branch, "_release_quietly", spy)
    result, histories = _run_shared(semaphore, monkeypatch, items=6, executions=4)
    assert result.succeeded
    # Every branch releases by its lease's fencing token, woken ones included (the releaser
    # sent it with the wake-up).
    assert len(tokens) == 24 and all(tokens), tokens
    assert result.wake_mode == "callback"
    assert 2 <= result.peak_in_flight <= LIMIT, result.peak_in_flight
    # At the library's defaults: no invocation returned PENDING with nothing pending, and a
    # branch recorded at most one operation of ours (the native map records 2 per branch).
    assert result.invalid_pending_outputs == 0
    assert result.durable_operations_per_branch <= 3.1, result.durable_operations_per_branch
    assert result.leases_left == 0 and result.waiters_left == 0
    statuses = [s for res in histories for s in _wait_callbacks(res)]
    # Branches were handed a slot while their execution was suspended on the callback, and
    # the replay that followed ran the body once, holding that slot (peak above).
    assert statuses.count("SUCCEEDED") >= 1, statuses
    assert len(result.executions_detail) == 4


def test_control_without_the_limiter_overshoots(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the same observer sees each execution's own max_concurrency add up."""
    result, _ = _run_shared(semaphore, monkeypatch, items=6, executions=4, use_limiter=False)
    assert result.peak_in_flight > LIMIT


class _LosingWaker:
    """Claims to deliver every wake-up but sends none: every wake-up is lost."""

    def __init__(self) -> None:
        self.lost = 0
        self._lock = threading.Lock()

    def wake(self, callback_id: str, payload: bytes = b"") -> WakeOutcome:
        with self._lock:
            self.lost += 1
        return WakeOutcome.DELIVERED


def test_lost_wake_ups_are_recovered_by_the_callback_timeout(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    losing = _LosingWaker()
    result, histories = _run_shared(
        semaphore,
        monkeypatch,
        items=4,
        executions=3,
        wake_timeout_seconds=1,
        wrap_waker=lambda _real: losing,
    )
    assert result.succeeded and result.ok
    assert result.peak_in_flight <= LIMIT
    statuses = [s for res in histories for s in _wait_callbacks(res)]
    assert losing.lost >= 1
    assert "SUCCEEDED" not in statuses  # nothing was ever delivered...
    assert statuses.count("TIMED_OUT") >= 1  # ...so the timeouts did the work


class _FakeWaker:
    def __init__(self, gone: set[str], running: dict[str, bool]) -> None:
        self.gone = gone
        self.running = running
        self.woken: list[str] = []

    def wake(self, callback_id: str, payload: bytes = b"") -> WakeOutcome:
        self.woken.append(callback_id)
        return WakeOutcome.GONE if callback_id in self.gone else WakeOutcome.DELIVERED

    def execution_running(self, execution_arn: str) -> bool | None:
        return self.running.get(execution_arn)


def _queue(sem: DynamoDBSemaphore, holder: str, arn: str, callback_id: str) -> None:
    position = sem.acquire("k", holder, 1, execution_arn=arn).position
    assert position is not None
    assert sem.acquire("k", holder, 1, position=position, callback_id=callback_id).queued


def test_hand_off_to_a_dead_waiter_passes_the_slot_on(semaphore: DynamoDBSemaphore) -> None:
    waker = _FakeWaker(gone={"cb-dead"}, running={"arn:dead": False})
    limiter = DynamoDBLimiter("k", 1, semaphore=semaphore, waker=waker)
    assert semaphore.acquire("k", "a", 1, execution_arn="arn:a").held
    _queue(semaphore, "dead", "arn:dead", "cb-dead")
    _queue(semaphore, "next", "arn:next", "cb-next")
    limiter.release("k", "a", execution_arn="arn:a")
    assert waker.woken == ["cb-dead", "cb-next"]
    assert [lease.holder for lease in semaphore.holders("k")] == ["next"]
    assert semaphore.waiters("k") == []
    assert semaphore.slot_count("k").count == 1


def test_gone_callback_of_a_live_waiter_keeps_the_slot_for_a_grace_period(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Its callback timed out a moment ago; it will check again and claim the slot."""
    waker = _FakeWaker(gone={"cb-late"}, running={"arn:late": True})
    limiter = DynamoDBLimiter("k", 1, semaphore=semaphore, waker=waker, wake_timeout_seconds=5)
    semaphore.acquire("k", "a", 1)
    _queue(semaphore, "late", "arn:late", "cb-late")
    limiter.release("k", "a")
    [lease] = semaphore.holders("k")
    assert lease.holder == "late" and lease.state == "granted"
    assert lease.expires_at <= semaphore.now() + limiter.grant_grace_seconds + 1
    claimed = limiter.acquire("k", "late", 1, position=1)
    assert claimed.held and claimed.lease is not None
    assert claimed.lease.expires_at > semaphore.now() + limiter.ttl_seconds / 2


def test_waiters_of_a_map_that_returned_early_are_swept(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Branches still queued when min_successful ends the map leave the queue at once."""
    port = free_port()
    limiter = DynamoDBLimiter(
        "early", 1, semaphore=semaphore, waker=local_waker(f"http://127.0.0.1:{port}")
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(
            max_concurrency=4, completion_config=CompletionConfig(min_successful=1), limiter=limiter
        )
        return len(context.map(list(range(4)), item, config=config).succeeded())

    with DurableFunctionTestRunner(handler=handler) as runner, local_lambda_endpoint(runner, port):
        res = runner.run(input="{}", execution_timeout=60)
    assert res.status.name == "SUCCEEDED", res.error
    assert semaphore.waiters("early") == []
    assert semaphore.entries("early") == []
    assert semaphore.slot_count("early").count == 0


def test_overlapping_invocations_enqueue_each_branch_once(
    semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one execution at once (a superseded invocation still running): branch
    holder ids are shared, so the queue holds each waiting branch once and the slots are
    shared by twins, never doubled."""
    monkeypatch.setattr(
        durable_semaphore.sdk, "_execution_arn", lambda ctx: "arn:aws:lambda:test:twin"
    )
    n, limit = 6, 2
    # A named limit below max_concurrency, so that branches of both runs really queue.
    limiter = DynamoDBLimiter("twin", limit, semaphore=semaphore, max_delay_seconds=1.0)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=n, limiter=limiter)
        return context.map(list(range(n)), item, config=config).get_results()

    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            items = list(semaphore.scan_leases())
            slots = sum(1 for lease in items if lease.holds_slot and lease.is_live(time.time()))
            queued = {lease.holder for lease in items if not lease.holds_slot}
            samples.append((slots, len(queued)))
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
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == list(range(n))
    assert max(slots for slots, _ in samples) <= limit
    assert max(queued for _, queued in samples) <= n - 1
    assert any(queued for _, queued in samples), "no branch ever waited: the test proves nothing"
    assert list(semaphore.scan_leases()) == [] and list(semaphore.scan_waiters()) == []
