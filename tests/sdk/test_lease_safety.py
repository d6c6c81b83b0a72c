"""Lease safety through the SDK integration (SDK 3.x, local runner, DynamoDB Local): finished
maps leave no counter rows, and a branch whose lease was taken away while it ran is reported
(WARNING and a LeaseLost metric) instead of passing silently."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, MapConfig, observability

NAMESPACE = "DurableSemaphoreLeaseLostTest"


def _rows(sem: DynamoDBSemaphore, sort_key_prefix: str) -> list[dict[str, Any]]:
    out = sem.client.scan(
        TableName=sem.table_name,
        FilterExpression="begins_with(sk, :p)",
        ExpressionAttributeValues={":p": {"S": sort_key_prefix}},
        ConsistentRead=True,
    )
    return list(out["Items"])


def test_finished_per_operation_maps_leave_no_rows(limiter_env: DynamoDBSemaphore) -> None:
    """Issue 9 counted 162 counter rows after 42 small maps; a finished map leaves none."""

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=2, limiter="dynamodb")
        return [context.map(list(range(4)), item, config=config).get_results() for _ in range(3)]

    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert res.status.name == "SUCCEEDED", res.error
    assert json.loads(res.result) == [[0, 1, 2, 3]] * 3
    assert _rows(limiter_env, "h#") == []
    assert _rows(limiter_env, "#meta") == []


class _Recorder:
    def __init__(self) -> None:
        self.lost_leases: list[tuple[str, str]] = []

    def acquired(self, key: str, holder: str) -> None: ...
    def released(self, key: str, holder: str) -> None: ...
    def reclaimed(self, key: str, count: int) -> None: ...
    def waited(self, key: str, holder: str, seconds: float) -> None: ...
    def in_flight(self, key: str, count: int) -> None: ...

    def lost(self, key: str, holder: str) -> None:
        self.lost_leases.append((key, holder))


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    previous = observability.set_observer(rec)
    try:
        yield rec
    finally:
        observability.set_observer(previous)


@pytest.mark.parametrize("operator_releases", [True, False])
def test_a_branch_whose_lease_was_released_by_an_operator_is_reported(
    semaphore: DynamoDBSemaphore,
    recorder: _Recorder,
    caplog: pytest.LogCaptureFixture,
    operator_releases: bool,
) -> None:
    """The operator's ``durable-semaphore release`` (no token) frees the branch's slot while
    it is suspended; the branch ends without it. Control: untouched, nothing is reported."""
    limiter = DynamoDBLimiter(name="payments", limit=1, semaphore=semaphore, waker=None)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            if operator_releases:
                holders = ctx.step(
                    lambda _: [h.holder for h in semaphore.holders("payments")], name="who"
                )
                ctx.step(lambda _: [semaphore.release("payments", h) for h in holders], name="op")
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=1, limiter=limiter)
        return context.map([7], item, config=config).get_results()

    caplog.set_level(logging.WARNING, logger="durable_semaphore")
    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert res.status.name == "SUCCEEDED", res.error
    warnings = [r.getMessage() for r in caplog.records if "no longer held" in r.getMessage()]
    if operator_releases:
        assert len(recorder.lost_leases) == 1 and recorder.lost_leases[0][0] == "payments"
        assert len(warnings) == 1 and "payments" in warnings[0]
    else:
        assert recorder.lost_leases == [] and warnings == []
    assert semaphore.holders("payments") == []


def test_lease_lost_is_an_emf_metric(capsys: pytest.CaptureFixture[str]) -> None:
    previous = observability.get_observer()
    observability.enable(NAMESPACE, logs=False)
    try:
        observability.lease_lost("payments", "exec#map#branch")
    finally:
        observability.set_observer(previous)
    docs = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and NAMESPACE in line
    ]
    names = [m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == ["LeaseLost"]
    assert docs[0]["holder"] == "exec#map#branch"
