"""EMF dimensions of a real per-operation map stay constant: no execution ARN, no key.

Each distinct dimension value is a billed CloudWatch metric, so the ARN and key of a
``limiter="dynamodb"`` map must travel as EMF properties, never as dimensions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from durable_semaphore import MapConfig, observability

NAMESPACE = "DurableSemaphoreDimensionsTest"


@pytest.fixture
def metrics_on() -> Iterator[None]:
    previous = observability.get_observer()  # enable() returns the new observer, not this
    observability.enable(NAMESPACE, logs=False)
    try:
        yield
    finally:
        observability.set_observer(previous)


def _emf_docs(out: str) -> list[dict[str, Any]]:
    """Every EMF document of our namespace printed to stdout."""
    docs = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            if doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE:
                docs.append(doc)
    return docs


def _dimension_values(doc: dict[str, Any]) -> list[str]:
    return [
        doc[name]
        for directive in doc["_aws"]["CloudWatchMetrics"]
        for dimension_set in directive["Dimensions"]
        for name in dimension_set
    ]


def test_per_operation_map_emits_no_arn_in_any_dimension(
    limiter_env: Any, metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    arns: set[str] = set()

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        arns.add(context.state.durable_execution_arn)

        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=2, limiter="dynamodb")
        return context.map(list(range(6)), item, config=config).get_results()

    capsys.readouterr()
    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert res.status.name == "SUCCEEDED", res.error
    docs = _emf_docs(capsys.readouterr().out)

    (arn,) = arns
    names = [m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "LeaseAcquired" in names
    for doc in docs:
        values = _dimension_values(doc)
        assert not any("arn:" in v or arn in v or doc["key"] in v for v in values), doc
        assert doc["scope"] == "per-operation"
        assert doc["execution_arn"] == arn  # searchable in the logs, not a metric
        assert doc["key"] == f"{arn}#{doc['operation_id']}"


def test_per_item_keys_are_properties_under_one_limiter_dimension(
    semaphore: Any, metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six tenants, one dimension value (the limiter's label); the tenant keys are properties.
    The queue's depth is reported as each waiter joins (WaitersQueued)."""
    from durable_semaphore import DynamoDBLimiter

    def per_tenant(x: int) -> str:
        return f"tenant-{x % 6}"

    limiter = DynamoDBLimiter(
        per_tenant, 1, semaphore=semaphore, initial_delay_seconds=1, max_delay_seconds=1
    )

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            ctx.wait(Duration.from_seconds(1))
            return x

        config = MapConfig(max_concurrency=12, limiter=limiter)
        return context.map(list(range(12)), item, config=config).get_results()

    capsys.readouterr()
    with DurableFunctionTestRunner(handler=handler) as runner:
        res = runner.run(input="{}", execution_timeout=60)
    assert res.status.name == "SUCCEEDED", res.error
    docs = _emf_docs(capsys.readouterr().out)
    names = [m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names.count("LeaseAcquired") == 12
    assert "WaitersQueued" in names  # two items per tenant, a limit of one: six waited
    assert {doc["key"] for doc in docs} == {f"tenant-{t}" for t in range(6)}
    for doc in docs:
        assert doc["scope"] == "per-item"
        assert _dimension_values(doc).count("per_tenant") == 1, doc
        assert not any(v.startswith("tenant-") for v in _dimension_values(doc)), doc
