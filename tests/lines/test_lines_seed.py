"""The seed scenario on every SDK line: ``MapConfig(max_concurrency=5, limiter="dynamodb")``
keeps at most 5 downstream operations in flight, judged from the execution history.

Where the testing library can register invoke targets (1.3+: SDK 2.1 and 3.x) the downstream
operation is the seed issue's own: 100 invokes of a function that waits 1 s. testing 1.2.1 (SDK
1.7 and 2.0) cannot invoke, waits in real time and breaks at about 100 branches, so there each
branch waits 1 s itself, over 10 items. The bare run is the control: below SDK 2.0 it puts every
branch in flight (the seed bug); from 2.0 the SDK bounds one map itself, so there the control
that can fail is the cross-execution one in test_lines_named.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import MapConfig
from tests.lines.conftest import (
    CAN_INVOKE,
    SDK_LIMITS_ONE_MAP,
    RunScenario,
    digest,
    ok,
    run_timeout,
)

LIMIT = 5
N = 100 if CAN_INVOKE else 10
# From SDK 2.0 the bare run is no control (the SDK bounds one map itself); 20 items show that.
N_BARE = 20 if SDK_LIMITS_ONE_MAP and CAN_INVOKE else N
KIND = "InvokeOperation" if CAN_INVOKE else "WaitOperation"
DEADLINE = 20.0  # testing 1.2.1: a healthy run takes 2 to 7 s; a hung one never finishes


@durable_execution
def waiter(event: Any, context: DurableContext) -> Any:
    """The invoked target: waits 1 s, then doubles its input."""
    context.wait(Duration.from_seconds(1))
    return event * 2


def _handler(limiter: Any, n: int) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            if CAN_INVOKE:
                return ctx.invoke("waiter", x)
            ctx.wait(Duration.from_seconds(1))
            return x * 2

        config = MapConfig(max_concurrency=LIMIT, limiter=limiter)
        return context.map(list(range(n)), item, config=config).get_results()

    return handler


def _run(limiter: Any, n: int, run_scenario: RunScenario) -> dict[str, Any]:
    def scenario() -> Any:
        with DurableFunctionTestRunner(handler=_handler(limiter, n)) as runner:
            if CAN_INVOKE:
                runner.register_durable_function("waiter", waiter)
            return digest(runner.run(input="{}", **run_timeout(120)), peaks=(KIND,))

    result: dict[str, Any] = run_scenario(scenario, DEADLINE)
    return result


def test_seed_per_operation_limit(
    limiter_env: Any, leases_left: Callable[[], list[Any]], run_scenario: RunScenario
) -> None:
    limited = _run("dynamodb", N, run_scenario)
    assert ok(limited) == [i * 2 for i in range(N)]
    peak = limited["peaks"][KIND]
    assert 2 <= peak <= LIMIT, peak
    assert leases_left() == []

    bare = _run(None, N_BARE, run_scenario)
    assert ok(bare) == [i * 2 for i in range(N_BARE)]
    if SDK_LIMITS_ONE_MAP:
        assert bare["peaks"][KIND] <= LIMIT  # the SDK's own in-process bound
    else:
        assert bare["peaks"][KIND] == N_BARE  # the seed bug: every branch in flight
