"""The seed scenario as a deployable durable function.

A map over the input items in which every branch invokes the target function, with
``MapConfig(max_concurrency=5, limiter="dynamodb")``: at most ``MAX_CONCURRENCY`` invokes are in
flight at once, counted by leases in ``$DURABLE_SEMAPHORE_TABLE`` (SDK 1.x would otherwise run
every suspended branch at once).

Event: ``{"items": [1, 2, 3]}`` or ``{"count": 100}`` (items 0..count-1); default 20 items.
"""

from __future__ import annotations

import os
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution

from durable_semaphore import MapConfig


def _items(event: Any) -> list[Any]:
    if isinstance(event, dict):
        if isinstance(event.get("items"), list):
            return list(event["items"])
        return list(range(int(event.get("count", 20))))
    return list(range(20))


@durable_execution
def handler(event: Any, context: DurableContext) -> Any:
    target = os.environ["TARGET_FUNCTION"]
    limit = int(os.environ.get("MAX_CONCURRENCY", "5"))
    batch = context.map(
        _items(event),
        lambda ctx, item, index, items: ctx.invoke(target, item),
        config=MapConfig(max_concurrency=limit, limiter="dynamodb"),
    )
    return batch.get_results()
