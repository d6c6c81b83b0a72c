"""The seed scenario as a deployable durable function.

A map over the input items in which every branch invokes the target function, under one named
limit of ``MAX_CONCURRENCY`` target invokes in flight, shared by every execution of this
function and counted by leases in ``$DURABLE_SEMAPHORE_TABLE`` (SDK 1.x would otherwise run
every suspended branch at once).

Event: ``{"items": [1, 2, 3]}`` or ``{"count": 100}`` (items 0..count-1); default 20 items.
"""

from __future__ import annotations

import os
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution

from durable_semaphore import DynamoDBLimiter, MapConfig

LIMIT = int(os.environ.get("MAX_CONCURRENCY", "5"))

# A *named* limiter, because only a named one hands a freed slot straight to its oldest waiter:
# the waiting branch suspends on a durable callback and the releasing branch (of this or any
# other execution) completes it, so the waiter resumes at once instead of at its next poll.
# The waker is left to $DURABLE_SEMAPHORE_WAKER: template.yaml sets "lambda" (and grants
# lambda:SendDurableExecutionCallbackSuccess on this function's executions); without it, as in
# the local test runner, waiters poll with bounded backoff, which is slower but also correct.
# Created once per sandbox so every invocation reuses its boto3 clients.
LIMITER = DynamoDBLimiter(name="example-target", limit=LIMIT)


def _items(event: Any) -> list[Any]:
    if isinstance(event, dict):
        if isinstance(event.get("items"), list):
            return list(event["items"])
        return list(range(int(event.get("count", 20))))
    return list(range(20))


@durable_execution
def handler(event: Any, context: DurableContext) -> Any:
    target = os.environ["TARGET_FUNCTION"]
    batch = context.map(
        _items(event),
        lambda ctx, item, index, items: ctx.invoke(target, item),
        config=MapConfig(max_concurrency=LIMIT, limiter=LIMITER),
    )
    return batch.get_results()
