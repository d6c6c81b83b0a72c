"""LeaseWaitSeconds: each branch reports once, when it gets its lease; waiters report > 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, MapConfig, observability


class Recorder:
    def __init__(self) -> None:
        self.waits: list[tuple[str, str, float]] = []

    def acquired(self, key: str, holder: str) -> None: ...
    def released(self, key: str, holder: str) -> None: ...
    def reclaimed(self, key: str, count: int) -> None: ...
    def in_flight(self, key: str, count: int) -> None: ...
    def lost(self, key: str, holder: str) -> None: ...

    def waited(self, key: str, holder: str, seconds: float) -> None:
        self.waits.append((key, holder, seconds))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    previous = observability.set_observer(rec)
    yield rec
    observability.set_observer(previous)


def test_every_branch_reports_its_wait_once(recorder: Recorder, semaphore: Any) -> None:
    # limit 2 under max_concurrency 6: four branches must wait durably for a lease.
    limiter = DynamoDBLimiter(name="wait-metric", limit=2, semaphore=semaphore, max_delay_seconds=2)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        return context.map(
            list(range(6)),
            lambda ctx, item, i, items: ctx.wait(Duration.from_seconds(3)) or item,
            config=MapConfig(max_concurrency=6, limiter=limiter),
        ).get_results()

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=120)
    assert res.status.name == "SUCCEEDED", res.error
    holders = [holder for _, holder, _ in recorder.waits]
    assert len(holders) == 6 and len(set(holders)) == 6
    assert {key for key, _, _ in recorder.waits} == {"wait-metric"}
    assert all(seconds >= 0 for _, _, seconds in recorder.waits)
    waits = sorted(s for _, _, s in recorder.waits)
    # Four branches polled at least twice across re-invocations; they waited longer than the
    # fastest branch that got its slot on the first poll.
    assert waits[-1] > waits[0]
