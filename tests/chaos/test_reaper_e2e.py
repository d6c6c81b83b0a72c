"""The reaper end to end: real durable executions, asked about through a real Lambda API.

tests/test_reaper.py pins every decision against a stubbed Lambda client. Here nothing is
stubbed: three executions of a gated map run in the testing library's runner, their branches
hold leases of one named limit while they wait on callbacks nobody completes, and the reaper
asks the library's durable-execution web server (``GetDurableExecution``, the call it makes on
AWS) what became of them. One is stopped through the same API, one times out, one keeps
running: the first two lose their leases at the next reap, the running one keeps them, and the
freed slots can be taken again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_client, local_lambda_endpoint
from durable_semaphore.reaper import Reaper

pytestmark = pytest.mark.chaos

KEY = "reap-e2e"
LIMIT = 8
BRANCHES = 2
#: Long enough for the branches to take their leases first, short enough to wait out.
TIMEOUT_SECONDS = 8


def _until(what: str, done: Callable[[], bool], seconds: float = 60) -> None:
    """Poll ``done``; the deadline only stops a hung test, no claim depends on it."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def test_reaper_frees_stopped_and_timed_out_executions_and_keeps_running_ones(
    semaphore: DynamoDBSemaphore,
) -> None:
    limiter = DynamoDBLimiter(KEY, LIMIT, semaphore=semaphore, waker=None)
    table = DynamoDBLimiter(semaphore=semaphore, waker=None)  # the reaper's: table-wide

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def branch(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            return ctx.create_callback(name=f"never-{x}").result()  # holds its lease, waits

        config: Any = MapConfig(max_concurrency=BRANCHES, limiter=limiter)
        return context.map(list(range(BRANCHES)), branch, config=config).get_results()

    def leases_of(arn: str) -> int:
        return sum(1 for lease in semaphore.holders(KEY) if lease.execution_arn == arn)

    with (
        DurableFunctionTestRunner(handler=handler) as runner,
        local_lambda_endpoint(runner, free_port()) as endpoint,
    ):
        lam = local_lambda_client(endpoint)

        def status(arn: str) -> str:
            return str(lam.get_durable_execution(DurableExecutionArn=arn)["Status"])

        stopped = runner.run_async(input="{}", execution_timeout=600)
        timed_out = runner.run_async(input="{}", execution_timeout=TIMEOUT_SECONDS)
        running = runner.run_async(input="{}", execution_timeout=600)
        arns = (stopped, timed_out, running)
        _until("every branch holds a lease", lambda: all(leases_of(a) == BRANCHES for a in arns))

        # Control: while they run, a reap frees nothing of theirs.
        Reaper(table, lam).reap()
        assert leases_of(stopped) == leases_of(running) == BRANCHES

        lam.stop_durable_execution(DurableExecutionArn=stopped)
        _until("stopped", lambda: status(stopped) == "STOPPED")
        _until("timed out", lambda: status(timed_out) == "TIMED_OUT")
        # Ended underneath their branches: nobody released anything yet.
        assert [leases_of(a) for a in arns] == [BRANCHES] * 3

        report = Reaper(table, lam).reap()
        print(report.as_dict())
        assert report.statuses == {"STOPPED": 1, "TIMED_OUT": 1, "RUNNING": 1}
        assert report.released_terminal == 2 * BRANCHES
        assert report.kept_running == BRANCHES
        assert [leases_of(a) for a in arns] == [0, 0, BRANCHES]
        assert status(running) == "RUNNING"

        # The freed slots are real: exactly LIMIT - BRANCHES newcomers get in, one more not.
        newcomers = [semaphore.try_acquire(KEY, f"new-{i}", LIMIT) for i in range(LIMIT)]
        assert sum(lease is not None for lease in newcomers) == LIMIT - BRANCHES
        lam.stop_durable_execution(DurableExecutionArn=running)
