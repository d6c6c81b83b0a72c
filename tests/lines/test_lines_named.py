"""A named limit shared by two executions, on every SDK line.

Two executions run at once, each in its own thread with its own ``DurableFunctionTestRunner``,
and each maps 6 items with ``max_concurrency=6`` under one ``DynamoDBLimiter(name=..., limit=3)``.
Each branch calls a shared, slow target in a step; the target counts the calls inside it at once,
across both executions, and that count is the judge. The control runs the same executions
without the limiter: every SDK line lets them exceed 3 together (SDK 2.0+ bounds each map on its
own, never the two together), so the judge can fail.

The target is called from a step, not held across a durable wait: on testing 1.2.1 every timer
that fires while an invocation checkpoints makes the runner refuse its own token, so a scenario
with dozens of timers rarely completes there. Holding a slot across suspension is what the
seed scenario (test_lines_seed.py) checks on every line.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, MapConfig
from tests.lines.conftest import RunScenario, digest, ok, run_timeout

SHARED_LIMIT = 3
ITEMS = 6
EXECUTIONS = 2
CALL_SECONDS = 0.3
DEADLINE = 30.0  # testing 1.2.1 runs backoff in real time: a healthy run takes 5 to 10 s


class Target:
    """The rate-limited downstream service: counts the calls inside it, across executions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self.peak = 0
        self.calls = 0

    def call(self, x: int) -> int:
        with self._lock:
            self._inside += 1
            self.calls += 1
            self.peak = max(self.peak, self._inside)
        try:
            time.sleep(CALL_SECONDS)
        finally:
            with self._lock:
                self._inside -= 1
        return x


def _handler(limiter: Any, target: Target) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            return int(ctx.step(lambda _: target.call(x), name="call"))

        config = MapConfig(max_concurrency=ITEMS, limiter=limiter)
        return context.map(list(range(ITEMS)), item, config=config).get_results()

    return handler


def _run_two(limited: bool, table_name: str, run_scenario: RunScenario) -> dict[str, Any]:
    def scenario() -> Any:
        target = Target()
        # A fresh name per attempt: a killed attempt (testing 1.2.1) leaves dead waiters in its
        # key's queue, which only expiry or the reaper clears; that is tested elsewhere.
        limiter = (
            DynamoDBLimiter(
                name=f"shared-api-{uuid.uuid4().hex[:8]}",
                limit=SHARED_LIMIT,
                table_name=table_name,
                waker=None,
                initial_delay_seconds=1,
                max_delay_seconds=2,
            )
            if limited
            else None
        )
        results: list[Any] = [None] * EXECUTIONS
        errors: list[BaseException] = []

        def run_one(k: int) -> None:
            try:
                with DurableFunctionTestRunner(handler=_handler(limiter, target)) as runner:
                    results[k] = runner.run(input="{}", **run_timeout(90))
            except BaseException as exc:  # re-raised below, in the scenario's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=run_one, args=(k,), daemon=True) for k in range(EXECUTIONS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return {
            "runs": [digest(res) for res in results],
            "target_peak": target.peak,
            "calls": target.calls,
        }

    outcome: dict[str, Any] = run_scenario(scenario, DEADLINE)
    return outcome


def test_named_limit_across_two_executions(
    limiter_env: Any, leases_left: Callable[[], list[Any]], run_scenario: RunScenario
) -> None:
    table = limiter_env.table_name
    bare = _run_two(False, table, run_scenario)
    for run in bare["runs"]:
        assert ok(run) == list(range(ITEMS))
    assert bare["target_peak"] > SHARED_LIMIT, bare  # the control: the judge can fail

    limited = _run_two(True, table, run_scenario)
    for run in limited["runs"]:
        assert ok(run) == list(range(ITEMS))
    assert limited["calls"] >= EXECUTIONS * ITEMS
    assert 2 <= limited["target_peak"] <= SHARED_LIMIT, limited
    assert leases_left() == []
