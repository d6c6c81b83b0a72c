"""Weighted branches: a map whose items take 1 or 4 units of a shared limit of 5, judged from
the execution histories (each branch's downstream wait, named after its weight)."""

from __future__ import annotations

import json
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig
from tests.sdk.observe import all_operations

LIMIT = 5
WEIGHTS = [4, 1, 1, 4, 1, 4]


def _peak_units(results: list[Any]) -> int:
    events: list[tuple[float, int]] = []
    for res in results:
        for op in all_operations(res):
            if type(op).__name__ == "WaitOperation" and (op.name or "").startswith("units-"):
                units = int(op.name.removeprefix("units-"))
                events.append((op.start_timestamp.timestamp(), units))
                events.append((op.end_timestamp.timestamp(), -units))
    events.sort(key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _run(limiter: DynamoDBLimiter) -> list[Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, units: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1), name=f"units-{units}")
            return units

        config = MapConfig(max_concurrency=len(WEIGHTS), limiter=limiter)
        return context.map(WEIGHTS, item, config=config).get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        arns = [
            runner.run_async(input="{}", execution_timeout=120, execution_name=f"exec-{k}")
            for k in range(2)
        ]
        results = [runner.wait_for_result(arn, timeout=120) for arn in arns]
    for res in results:
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == WEIGHTS
    return results


def _limiter(semaphore: DynamoDBSemaphore, **kwargs: Any) -> DynamoDBLimiter:
    return DynamoDBLimiter(
        "weighted",
        LIMIT,
        semaphore=semaphore,
        initial_delay_seconds=1,
        max_delay_seconds=2,
        **kwargs,
    )


def test_the_units_in_flight_across_executions_stay_within_the_limit(
    semaphore: DynamoDBSemaphore,
) -> None:
    results = _run(_limiter(semaphore, weight=lambda units: units))
    assert 4 <= _peak_units(results) <= LIMIT


def test_control_a_weight_ignored_is_caught_over_the_limit(semaphore: DynamoDBSemaphore) -> None:
    """Every branch takes one unit whatever it needs: five 4-unit branches run at once."""
    results = _run(_limiter(semaphore))
    assert _peak_units(results) > LIMIT
