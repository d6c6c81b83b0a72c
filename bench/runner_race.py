"""How often the SDK's local runner hits its own "PENDING with nothing pending" race, without us.

The demo sometimes sees the testing library's executor log ``Lambda output validation failure:
Cannot return PENDING status with no pending operations.`` and re-invoke the execution a few
wall seconds later. This script shows the race is the runner's, not the limiter's: it runs the
demo's shape on the bare SDK, with no durable_semaphore imported. Each branch of
``map(items, max_concurrency=5)`` runs one short step (standing in for the acquire's DynamoDB
round trip) and then ``ctx.invoke``s a target that waits 1 s of durable time.

    python bench/runner_race.py --runs 5

Needs the SDK (>= 2.1) and its testing library (>= 1.3), as in the ``demo`` extra.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration, MapConfig
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

# The same text as durable_semaphore.demo.quiet.RUNNER_RACE_MESSAGE, repeated on purpose: importing
# durable_semaphore installs its map hook, and this script must run the bare SDK.
RACE = "Cannot return PENDING status with no pending operations"


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hits = 0

    def emit(self, record: logging.LogRecord) -> None:
        if RACE in record.getMessage():
            self.hits += 1


@durable_execution
def target(event: Any, context: DurableContext) -> Any:
    context.wait(Duration.from_seconds(1))
    return event


def make_handler(items: int, step_seconds: float) -> Any:
    def branch(ctx: DurableContext, item: int, index: int, all_items: Any) -> Any:
        ctx.step(lambda _: time.sleep(step_seconds) or item)
        return ctx.invoke("target", item)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        batch = context.map(list(range(items)), branch, config=MapConfig(max_concurrency=5))
        return len(batch.get_results())

    return handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--step-ms", type=float, default=20.0)
    args = parser.parse_args()

    counter = Counter()
    logging.getLogger("aws_durable_execution_sdk_python_testing").addHandler(counter)
    handler = make_handler(args.items, args.step_ms / 1000)
    walls: dict[bool, list[float]] = {True: [], False: []}
    for run in range(args.runs):
        before = counter.hits
        start = time.perf_counter()
        with DurableFunctionTestRunner(handler=handler, skip_time=True) as runner:
            runner.register_durable_function("target", target)
            result = runner.run(input="{}", execution_timeout=600)
        wall = time.perf_counter() - start
        raced = counter.hits > before
        walls[raced].append(wall)
        print(
            f"run {run}: {result.status.name}, result {result.result}, wall {wall:.1f} s, "
            f"runner re-invocations {counter.hits - before}",
            flush=True,
        )
    hit_runs = len(walls[True])
    print(f"runs with the race: {hit_runs} of {args.runs}")
    for raced, label in ((True, "with the race"), (False, "without")):
        if walls[raced]:
            print(f"median wall {label}: {statistics.median(walls[raced]):.1f} s")


if __name__ == "__main__":
    main()
