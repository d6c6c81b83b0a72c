"""Arrival order is the order of first tries, and a retried enqueue keeps that place.

The rule (docs/store.md): a waiter's queue number is stamped once per ``acquire`` call, before
its first attempt to join, and every retry of that call joins under it. Here waiter A's first
attempt to join is refused because a slot freed at that moment; by A's retry, B has taken the
slot and C has queued. A tried first, so A must be ahead of C. Stamping a fresh number per
attempt (the behaviour before) put A behind C.
"""

from __future__ import annotations

from typing import Any

import boto3

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import default_client_config


def _is_enqueue(params: dict[str, Any]) -> bool:
    puts = [op["Put"]["Item"]["sk"]["S"] for op in params["TransactItems"] if "Put" in op]
    return any(sk.startswith("w#") for sk in puts)


def test_a_refused_then_retried_enqueue_keeps_its_first_try_place(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str
) -> None:
    key = "arrival"
    holder = semaphore.try_acquire(key, "H", 1)
    assert holder is not None
    # A gets its own client, so that hooks on it see only A's requests.
    client_a = boto3.client(
        "dynamodb", endpoint_url=ddb_endpoint, region_name="us-east-1",
        config=default_client_config(),
    )  # fmt: skip
    a = DynamoDBSemaphore(table_name=semaphore.table_name, client=client_a)
    seen = {"enqueues": 0, "acted": 0}

    def before_build(params: Any = None, **_: Any) -> None:
        if _is_enqueue(params):
            seen["enqueues"] += 1
            if seen["enqueues"] == 1:
                # A's first try to join: the slot frees just before it lands (A is refused).
                assert semaphore.release(key, "H", token=holder.token)

    def after_call(**_: Any) -> None:
        if seen["enqueues"] == 1 and not seen["acted"]:
            seen["acted"] = 1
            # Between A's refused try and its retry, B takes the free slot and C queues.
            assert semaphore.try_acquire(key, "B", 1) is not None
            assert semaphore.acquire(key, "C", 1).queued

    client_a.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems", before_build
    )
    client_a.meta.events.register("after-call.dynamodb.TransactWriteItems", after_call)
    result = a.acquire(key, "A", 1)
    assert result.queued
    assert seen == {"enqueues": 2, "acted": 1}, seen  # the scenario happened as described
    order = [waiter.holder for waiter in semaphore.waiters(key)]
    assert order == ["A", "C"], order
