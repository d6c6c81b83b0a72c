"""Why SDK 1.7 maps hang in testing 1.2.1's local runner, without durable_semaphore.

The limiter's shape on the bare SDK: each of ``--items`` branches of ``map(max_concurrency=5)``
polls with ``wait_for_condition`` (the check sleeps ``--check-ms``, standing in for a DynamoDB
round trip, and succeeds on attempt ``--attempts``; 1 s between attempts), then waits 1 s. The
branches suspend at staggered times, so timed resumes come due while other branches still run:
testing 1.2.1 cannot complete them during an invocation, and the map spins or a checkpoint is
refused (docs/benchmarks.md, "SDK 1.7 / testing 1.2.1"). ``--workaround`` applies the demo's
fix (:func:`durable_semaphore.demo.local_runner.complete_timers_like_the_service`); without it no
durable_semaphore module is imported, so the runs are the bare SDK's.

    .venv-sdk1/bin/python bench/runner_timers.py --runs 3
    .venv-sdk1/bin/python bench/runner_timers.py --runs 3 --workaround

Each run is a forked child with a deadline; it prints completed, refused (the runner's "Invalid
checkpoint token") or hung, and the wall time of completed runs.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration, MapConfig
from aws_durable_execution_sdk_python.waits import (
    WaitForConditionConfig,
    WaitForConditionDecision,
)
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner


class Refusals(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if "Invalid checkpoint token" in f"{record.getMessage()} {error}":
            self.seen = True


def make_handler(items: int, check_seconds: float, attempts: int) -> Any:
    def branch(ctx: DurableContext, item: int, index: int, all_items: Any) -> Any:
        def check(state: int, _check_ctx: Any) -> int:
            time.sleep(check_seconds)
            return state + 1

        def strategy(state: int, attempts_made: int) -> WaitForConditionDecision:
            if attempts_made >= attempts:
                return WaitForConditionDecision.stop_polling()
            return WaitForConditionDecision.continue_waiting(Duration.from_seconds(1))

        config = WaitForConditionConfig(wait_strategy=strategy, initial_state=0)
        ctx.wait_for_condition(check, config=config, name="poll")
        ctx.wait(Duration.from_seconds(1), name="task")
        return item

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        batch = context.map(list(range(items)), branch, config=MapConfig(max_concurrency=5))
        return len(batch.get_results())

    return handler


def one_run(args: argparse.Namespace, report: Any) -> None:
    refusals = Refusals()
    sdk_logger = logging.getLogger("aws_durable_execution_sdk_python")
    sdk_logger.addHandler(refusals)
    sdk_logger.setLevel(logging.ERROR)
    sdk_logger.propagate = False  # count refusals; keep the tracebacks that follow off
    logging.getLogger("concurrent.futures").setLevel(logging.CRITICAL + 1)
    start = time.perf_counter()
    with DurableFunctionTestRunner(
        handler=make_handler(args.items, args.check_ms / 1000, args.attempts)
    ) as runner:
        if args.workaround:
            from durable_semaphore.demo.local_runner import complete_timers_like_the_service

            complete_timers_like_the_service(runner)
        arn = runner.run_async(input="{}", timeout=int(args.deadline))
        while time.perf_counter() - start < args.deadline:
            if refusals.seen:
                report.send(("refused", time.perf_counter() - start))
                os._exit(0)
            if runner._executor.get_execution(arn).is_complete:
                report.send(("completed", time.perf_counter() - start))
                os._exit(0)
            time.sleep(0.2)
        # Report before leaving the runner: closing it joins a loop the hung invocation blocks.
        report.send(("hung", time.perf_counter() - start))
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--check-ms", type=float, default=100.0)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=40.0)
    parser.add_argument("--workaround", action="store_true")
    args = parser.parse_args()

    context = multiprocessing.get_context("fork")
    outcomes: list[tuple[str, float]] = []
    for run in range(args.runs):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=one_run, args=(args, sender), daemon=True)
        child.start()
        outcome = receiver.recv() if receiver.poll(args.deadline + 30) else ("hung", -1.0)
        child.kill()
        child.join()
        outcomes.append(outcome)
        print(f"run {run + 1}: {outcome[0]} after {outcome[1]:.1f} s", flush=True)
    done = sum(1 for kind, _ in outcomes if kind == "completed")
    label = "with the workaround" if args.workaround else "bare SDK"
    print(f"{label}: {done} of {args.runs} completed, {args.items} items")


if __name__ == "__main__":
    main()
