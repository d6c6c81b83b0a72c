"""SDK 1.7.0 extras: failures and early completion. The seed scenario on this line (the bare
SDK puts every branch in flight, ``limiter="dynamodb"`` keeps ``max_concurrency``) is in
tests/lines/test_lines_seed.py, which runs on every SDK line.

Callbacks are covered on SDK 3.x only: with testing 1.2.1 a map of callbacks completed by a test
thread fails with "Invalid checkpoint token" even with the bare SDK (every local attempt, with
and without a limiter), so such a test could only ever report a runner failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import CompletionConfig, Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import MapConfig
from tests.sdk.observe import peak_of
from tests.sdk1.conftest import RunIsolated, RunnerFailure, is_refused_checkpoint

DEADLINE = 15.0  # a healthy run takes 2 to 7 s; a hung one never finishes


def _digest(res: Any) -> dict[str, Any]:
    """What the parent needs from a run, computed in the child (results do not pickle)."""
    if res.status.name != "SUCCEEDED" and is_refused_checkpoint(str(res.error)):
        raise RunnerFailure(str(res.error))
    return {
        "status": res.status.name,
        "error": str(res.error),
        "result": res.result,
        "peak_waits": peak_of(res, "WaitOperation"),
    }


def _ok(digest: dict[str, Any]) -> Any:
    assert digest["status"] == "SUCCEEDED", digest["error"]
    return json.loads(digest["result"])


def _summary(batch: Any) -> list[Any]:
    return [
        [item.index, str(item.status), item.result, item.error.type if item.error else None]
        for item in batch.all
    ]


def test_failures_release_and_match_bare_sdk(
    limiter_env: Any,
    leases_left: Callable[[], list[Any]],
    run_isolated: RunIsolated,
) -> None:
    def make(limiter: Any) -> Callable[..., Any]:
        @durable_execution
        def handler(event: Any, context: DurableContext) -> Any:
            def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
                ctx.wait(Duration.from_seconds(1))
                if x % 3 == 1:
                    raise ValueError(f"bad {x}")
                return x

            # SDK 1.7's all_completed() still stops at the first failure (no tolerance set),
            # which makes the outcome timing-dependent; tolerate failures explicitly instead.
            config = MapConfig(
                max_concurrency=3,
                completion_config=CompletionConfig(tolerated_failure_count=6),
                limiter=limiter,
            )
            return _summary(context.map(list(range(6)), item, config=config))

        return handler

    def run(limiter: Any) -> Any:
        def scenario() -> Any:
            with DurableFunctionTestRunner(handler=make(limiter)) as runner:
                return _digest(runner.run(input="{}", timeout=int(DEADLINE)))

        return _ok(run_isolated(scenario, DEADLINE))

    bare = run(None)
    assert run("dynamodb") == bare
    assert sum(1 for item in bare if item[3] is not None) == 2
    assert leases_left() == []


def test_early_completion_sweeps_on_sdk17(
    limiter_env: Any,
    leases_left: Callable[[], list[Any]],
    run_isolated: RunIsolated,
) -> None:
    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            if x < 2:
                return x
            return ctx.create_callback(name=f"never-{x}").result()

        config = MapConfig(
            max_concurrency=4,
            completion_config=CompletionConfig(min_successful=2),
            limiter="dynamodb",
        )
        return context.map(list(range(6)), item, config=config).success_count

    def scenario() -> Any:
        with DurableFunctionTestRunner(handler=handler) as runner:
            return _digest(runner.run(input="{}", timeout=int(DEADLINE)))

    assert _ok(run_isolated(scenario, DEADLINE)) == 2
    assert leases_left() == []
