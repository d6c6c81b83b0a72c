"""Every row expires once idle: each carries the TTL attribute, refreshed by the writes that
happen anyway, and the counter's outlives every lease and waiter it covers.

On DynamoDB Local, with an injected clock an hour ahead of the real one (its TTL sweeper runs
on the real clock and must not touch these rows during the test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore
from durable_semaphore.store import META_SK, TTL_ATTRIBUTE
from durable_semaphore.store.schema import IDLE_GRACE_SECONDS, Meta
from tests.conftest import FakeClock
from tests.store_helpers import count_requests

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/e1/r1"


def _rows(sem: DynamoDBSemaphore) -> list[dict[str, Any]]:
    out = sem.client.scan(TableName=sem.table_name, ConsistentRead=True)
    return list(out["Items"])


def _forever(sem: DynamoDBSemaphore) -> list[dict[str, Any]]:
    return [row for row in _rows(sem) if TTL_ATTRIBUTE not in row]


def _counter(sem: DynamoDBSemaphore, key: str) -> Meta:
    return Meta.parse(
        sem.client.get_item(
            TableName=sem.table_name,
            Key={"pk": {"S": key}, "sk": {"S": META_SK}},
            ConsistentRead=True,
        ).get("Item")
    )


@pytest.fixture
def ahead() -> FakeClock:
    clock = FakeClock()
    clock.advance(3600)
    return clock


def test_every_key_kind_leaves_only_rows_that_expire(
    make_semaphore: Callable[..., DynamoDBSemaphore], ahead: FakeClock
) -> None:
    """A map's own key (with waiters and a hand-off), a named limiter's key, a sharded one,
    and a hold: after the last release, every row left has the TTL attribute."""
    sem = make_semaphore(ahead)
    per_op = f"{ARN}#op1"
    for i in range(2):
        assert sem.acquire(per_op, f"{per_op}#{i}", 2, execution_arn=ARN).held
    waiting = sem.acquire(per_op, f"{per_op}#2", 2, execution_arn=ARN)
    assert waiting.queued
    assert sem.release_slot(per_op, f"{per_op}#0", waiters_likely=True).grant is not None
    assert sem.acquire(per_op, f"{per_op}#2", 2, position=waiting.position).held
    for i in (1, 2):
        assert sem.release(per_op, f"{per_op}#{i}")

    named = DynamoDBLimiter("payments", 3, semaphore=sem, waker=None)
    sharded = DynamoDBLimiter("hot", 150, shards=3, semaphore=sem, waker=None)
    for limiter, name, limit in ((named, "payments", 3), (sharded, "hot", 150)):
        for i in range(3):
            assert limiter.acquire(name, f"{ARN}#op2#{i}", limit).held
        for i in range(3):
            assert limiter.release(name, f"{ARN}#op2#{i}").released
    with named.hold(timeout=5):
        pass

    rows = _rows(sem)
    assert {row["pk"]["S"] for row in rows} >= {per_op, "payments"}
    assert any(row["pk"]["S"].startswith("hot#") for row in rows)
    assert _forever(sem) == []
    # Control: the check sees a row written without the attribute.
    sem.client.put_item(
        TableName=sem.table_name, Item={"pk": {"S": "manual"}, "sk": {"S": META_SK}}
    )
    assert len(_forever(sem)) == 1


def test_the_counter_outlives_every_lease_and_never_moves_earlier(
    make_semaphore: Callable[..., DynamoDBSemaphore], ahead: FakeClock
) -> None:
    """A day-long lease, then a 10 s one: the counter keeps the later expiry (plus the idle
    grace); a renewal moves it later in the same write; a release leaves it."""
    sem = make_semaphore(ahead)
    long = sem.acquire("k", "long", 5, ttl_seconds=86_400)
    assert long.lease is not None
    life = _counter(sem, "k").expires_at
    assert life == long.lease.expires_at + IDLE_GRACE_SECONDS
    with count_requests(sem.client) as sent:
        short = sem.acquire("k", "short", 5, ttl_seconds=10)
    assert short.held
    # The first variant raises the TTL and is refused (it would cut it); the second keeps it.
    assert dict(sent) == {"UpdateItem": 2}
    assert _counter(sem, "k").expires_at == life
    ahead.advance(100)
    renewed = sem.renew("k", "long", 86_400)
    assert renewed is not None and renewed.expires_at > long.lease.expires_at
    assert _counter(sem, "k").expires_at == renewed.expires_at + IDLE_GRACE_SECONDS
    assert sem.release("k", "long")
    assert _counter(sem, "k").expires_at == renewed.expires_at + IDLE_GRACE_SECONDS


def test_queue_rows_expire_and_a_check_in_moves_their_expiry_later(
    make_semaphore: Callable[..., DynamoDBSemaphore], ahead: FakeClock
) -> None:
    sem = make_semaphore(ahead)
    assert sem.acquire("q", "holder", 1).held
    queued = sem.acquire("q", "w", 1, queue_ttl_seconds=60)
    assert queued.queued
    before = {row["sk"]["S"]: float(row[TTL_ATTRIBUTE]["N"]) for row in _rows(sem)}
    ahead.advance(30)
    assert sem.acquire("q", "w", 1, position=queued.position, queue_ttl_seconds=60).queued
    after = {row["sk"]["S"]: float(row[TTL_ATTRIBUTE]["N"]) for row in _rows(sem)}
    moved = [sk for sk in after if sk != META_SK and after[sk] > before[sk]]
    assert sorted(moved) == ["h#w", f"w#{queued.position:020d}"]
    # The counter covers the waiter's place too (it was written when the waiter joined).
    assert after[META_SK] >= before["h#w"] + IDLE_GRACE_SECONDS
