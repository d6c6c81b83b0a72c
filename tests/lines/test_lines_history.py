"""``limiter=None`` leaves the execution history identical to the bare SDK's, on every SDK line.

Three runs of one handler: the SDK's own unwrapped ``map``/``parallel`` (``__wrapped__``), our
wrapped methods with the SDK's configs, and our configs with ``limiter=None``. Their outputs
and their operations (id, parent, type, sub type, name, status) must be the same. Where the
testing library can register invoke targets (1.3+), each branch also invokes a function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration, ParallelBranch
from aws_durable_execution_sdk_python.config import MapConfig as SdkMapConfig
from aws_durable_execution_sdk_python.config import ParallelConfig as SdkParallelConfig
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.sdk as sdk
from durable_semaphore import MapConfig, ParallelConfig
from tests.lines.conftest import CAN_INVOKE, RunScenario, digest, ok, run_timeout

ITEMS = 4
DEADLINE = 20.0


@durable_execution
def doubler(event: Any, context: DurableContext) -> Any:
    return event * 2


def _handler(variant: str) -> Callable[..., Any]:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            ctx.wait(Duration.from_seconds(1), name=f"w{x}")
            if CAN_INVOKE:
                return ctx.invoke("doubler", x, name=f"inv{x}")
            return ctx.step(lambda _: x * 2, name=f"s{x}")

        def branch(ctx: DurableContext) -> str:
            ctx.wait(Duration.from_seconds(1))
            return "p"

        items = list(range(ITEMS))
        functions = [branch, ParallelBranch(func=branch, name="named-branch")]
        if variant == "original":
            # Bypass the hook entirely: the SDK's own, unwrapped methods.
            mapped = DurableContext.map.__wrapped__(  # type: ignore[attr-defined]
                context, items, item, config=SdkMapConfig(max_concurrency=2)
            )
            par = DurableContext.parallel.__wrapped__(  # type: ignore[attr-defined]
                context, functions, config=SdkParallelConfig(max_concurrency=1)
            )
        elif variant == "sdk-config":
            mapped = context.map(items, item, config=SdkMapConfig(max_concurrency=2))
            par = context.parallel(functions, config=SdkParallelConfig(max_concurrency=1))
        else:
            mapped = context.map(items, item, config=MapConfig(max_concurrency=2, limiter=None))
            par = context.parallel(
                functions, config=ParallelConfig(max_concurrency=1, limiter=None)
            )
        return [mapped.get_results(), par.get_results()]

    return handler


def _run(variant: str, run_scenario: RunScenario) -> dict[str, Any]:
    def scenario() -> Any:
        with DurableFunctionTestRunner(handler=_handler(variant)) as runner:
            if CAN_INVOKE:
                runner.register_durable_function("doubler", doubler)
            return digest(runner.run(input="{}", **run_timeout(60)))

    result: dict[str, Any] = run_scenario(scenario, DEADLINE)
    return result


def test_limiter_none_history_identical_to_bare_sdk(
    limiter_env: Any, run_scenario: RunScenario
) -> None:
    assert sdk.is_installed()
    original = _run("original", run_scenario)
    assert ok(original) == [[i * 2 for i in range(ITEMS)], ["p", "p"]]
    for variant in ("sdk-config", "limiter-none"):
        ours = _run(variant, run_scenario)
        assert ok(ours) == ok(original), variant
        assert ours["signature"] == original["signature"], variant
        assert not any(name == sdk.ACQUIRE_OPERATION_NAME for *_, name in ours["operations"])
