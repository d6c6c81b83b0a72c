"""Reclaiming expired leases on DynamoDB Local: one read of the key per reclaim, then chained
batches of deletes, so the cost grows linearly with the leases reclaimed.

Requests are counted by a botocore ``before-call`` hook (one per API call, retries aside), and
the read capacity is what DynamoDB Local reports with ``ReturnConsumedCapacity``.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore
from tests.conftest import FakeClock, local_dynamodb_client
from tests.store_helpers import meta_rows

BATCH = 99  # deletes per transaction: the counter update takes the 100th item


@dataclass
class Traffic:
    calls: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0


@contextlib.contextmanager
def traffic(client: Any) -> Iterator[Traffic]:
    """Count ``client``'s calls by operation and sum the read capacity its reads consume."""
    seen = Traffic()

    def on_call(model: Any, **_: Any) -> None:
        seen.calls[model.name] += 1

    def want_capacity(params: dict[str, Any], **_: Any) -> None:
        params["ReturnConsumedCapacity"] = "TOTAL"

    def on_result(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in ("GetItem", "Query"):
            seen.read_units += float(parsed.get("ConsumedCapacity", {}).get("CapacityUnits", 0))

    hooks = [
        ("before-call.dynamodb", on_call),
        ("provide-client-params.dynamodb.GetItem", want_capacity),
        ("provide-client-params.dynamodb.Query", want_capacity),
        ("after-call.dynamodb", on_result),
    ]
    for event, handler in hooks:
        client.meta.events.register(event, handler)
    try:
        yield seen
    finally:
        for event, handler in hooks:
            client.meta.events.unregister(event, handler)


def _expired_leases(sem: DynamoDBSemaphore, clock: FakeClock, n: int, limit: int) -> None:
    """``n`` leases on key ``k`` that anyone may reclaim (expired beyond the skew margin)."""
    for i in range(n):
        assert sem.try_acquire("k", f"s{i:04}", limit, ttl_seconds=5) is not None
    clock.advance(6 + sem.clock_skew_seconds)


@pytest.mark.parametrize("n", [99, 198, 999])
def test_reclaim_reads_the_key_once_and_deletes_in_chained_batches(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, n: int
) -> None:
    sem = make_semaphore(clock)
    _expired_leases(sem, clock, n, limit=1000)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(f"\nreclaim of {n}: {dict(seen.calls)}, read units {seen.read_units}")
    assert (result.deleted, result.freed, result.grants) == (n, n, ())
    # One GetItem of the counter and one Query page (the keys-only items fit in one page),
    # not one of each per batch; then ceil(n / 99) transactions, the last deleting the counter.
    assert dict(seen.calls) == {
        "GetItem": 1,
        "Query": 1,
        "TransactWriteItems": math.ceil(n / BATCH),
    }
    assert sem.entries("k") == [] and list(sem.scan_leases()) == []
    assert meta_rows(sem) == []


def test_read_capacity_grows_linearly_with_the_leases_reclaimed(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """Per lease, reclaiming 999 reads no more than reclaiming 198 does (plus rounding)."""
    sem = make_semaphore(clock)
    units = {}
    for n in (198, 999):
        _expired_leases(sem, clock, n, limit=1000)
        with traffic(sem.client) as seen:
            assert sem.reclaim_expired("k") == n
        units[n] = seen.read_units
    print(f"\nread units: {units}")
    assert units[999] / 999 <= units[198] / 198 + 0.01


def test_expired_queue_markers_go_with_their_entries_across_batches(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """120 leases and 40 waiters (a marker and a queue entry each) all expired: 200 deletes
    in 3 chained transactions; ``nwait`` drops to 0 and the counter goes with the last."""
    sem = make_semaphore(clock)
    for i in range(120):
        assert sem.try_acquire("k", f"s{i:03}", 120, ttl_seconds=5) is not None
    for i in range(40):
        assert sem.acquire("k", f"w{i:02}", 120, queue_ttl_seconds=5).queued
    assert sem.slot_count("k").waiters == 40
    clock.advance(6 + sem.clock_skew_seconds)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    assert (result.deleted, result.freed, result.grants) == (120, 120, ())
    assert dict(seen.calls) == {"GetItem": 1, "Query": 1, "TransactWriteItems": 3}
    assert sem.entries("k") == [] and sem.waiters("k") == []
    assert meta_rows(sem) == []


def test_slots_freed_over_several_batches_go_to_the_waiters(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    for i in range(150):
        assert sem.try_acquire("k", f"s{i:03}", 150, ttl_seconds=5) is not None
    for i in range(3):
        assert sem.acquire("k", f"w{i}", 150).queued
    clock.advance(6 + sem.clock_skew_seconds)
    result = sem.reclaim("k")
    assert (result.deleted, result.freed) == (150, 150)
    assert [g.holder for g in result.grants] == ["w0", "w1", "w2"]
    assert sorted(e.holder for e in sem.holders("k")) == ["w0", "w1", "w2"]
    count = sem.slot_count("k")
    assert (count.count, count.waiters) == (3, 0)


def test_a_writer_between_batches_makes_the_reclaim_read_again_and_admits_no_one_extra(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, ddb_endpoint: str
) -> None:
    """Another client acquires right after the first batch: the chained second batch is
    cancelled (its version moved), the reclaim reads the key again and finishes. Newcomers
    get exactly the slots the expired leases free, and the count ends equal to the leases."""
    limit = 200
    sem = make_semaphore(clock)
    _expired_leases(sem, clock, 198, limit)
    for holder in ("live-a", "live-b"):
        assert sem.try_acquire("k", holder, limit, ttl_seconds=3600) is not None
    other = DynamoDBSemaphore(
        table_name=sem.table_name, client=local_dynamodb_client(ddb_endpoint), clock=clock
    )
    admitted: list[str] = []
    counts: list[int] = []

    def between_batches(model: Any, **_: Any) -> None:
        if model.name != "TransactWriteItems" or counts:
            return
        counts.append(other.slot_count("k").count)  # after the first batch
        for i in range(limit + 5):
            if other.try_acquire("k", f"new{i:03}", limit, ttl_seconds=3600) is not None:
                admitted.append(f"new{i:03}")

    sem.client.meta.events.register("after-call.dynamodb", between_batches)
    try:
        with traffic(sem.client) as seen:
            result = sem.reclaim("k")
    finally:
        sem.client.meta.events.unregister("after-call.dynamodb", between_batches)
    assert counts == [2 + 198 - BATCH]  # the first batch subtracted exactly what it deleted
    # The first batch freed 99 slots; the newcomer refused after those reclaimed the rest
    # itself, so the newcomers got all 198 freed slots and no more.
    assert len(admitted) == 198
    assert result.deleted == BATCH
    # The reclaim read twice: once at first, once after its second batch was cancelled.
    assert dict(seen.calls) == {"GetItem": 2, "Query": 2, "TransactWriteItems": 2}
    live = sorted(e.holder for e in sem.holders("k"))
    assert live == sorted(["live-a", "live-b", *admitted])
    assert sem.slot_count("k").count == len(live) == limit
    assert len(list(sem.scan_leases())) == limit  # no expired item left behind


def _item(sk: str, expires_at: float, *, seq: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"sk": {"S": sk}, "expires_at": {"N": str(expires_at)}}
    if seq is not None:
        item["st"] = {"S": "queued"}
        item["seq"] = {"N": str(seq)}
    return item


def test_the_plan_chains_versions_and_keeps_the_count_equal_to_the_leases_left() -> None:
    """The pure planner: 150 expired leases, 60 expired queue markers and 2 live leases."""
    from durable_semaphore.store import _Meta, _plan_reclaim

    now = 1_000.0
    items = [_item(f"h#a{i:03}", 900) for i in range(150)]
    items += [_item(f"h#m{i:03}", 999, seq=i) for i in range(60)]
    items += [_item("h#z1", 2_000), _item("h#z2", 3_000)]
    meta = _Meta(True, 152, 7, 60, 60, None, 10)
    plan = _plan_reclaim("t", "k", meta, items, now=now, cutoff=now - 30)
    assert not plan.settled and plan.hint == 2_000
    # 150 + 2 * 60 = 270 deletes: 99, 99 and 72, each with the counter update first.
    assert [len(b.ops) for b in plan.batches] == [100, 100, 73]
    assert [b.deleted for b in plan.batches] == [99, 51, 0]
    assert [b.markers for b in plan.batches] == [0, 24, 36]
    assert [b.count for b in plan.batches] == [53, 2, 2]  # the leases left after each
    updates = [b.ops[0]["Update"] for b in plan.batches]
    expected = [(str(v), str(v + 1)) for v in (7, 8, 9)]  # each expects the one before's
    assert [
        (u["ExpressionAttributeValues"][":v"]["N"], u["ExpressionAttributeValues"][":nv"]["N"])
        for u in updates
    ] == expected
    # The hint stays at the earliest lease left, expired ones included, until they are gone.
    assert [u["ExpressionAttributeValues"][":xh"]["N"] for u in updates] == ["900", "2000", "2000"]
    assert [u["ExpressionAttributeValues"].get(":dq") for u in updates] == [
        None,
        {"N": "24"},
        {"N": "36"},
    ]


def test_the_plan_deletes_the_counter_with_the_last_item_only() -> None:
    from durable_semaphore.store import _Meta, _plan_reclaim

    items = [_item(f"h#a{i:03}", 900) for i in range(120)]
    plan = _plan_reclaim("t", "k", _Meta(True, 120, 3, 0, 0, 950, 200), items, now=1e3, cutoff=970)
    assert ["Update" in b.ops[0] for b in plan.batches] == [True, False]
    assert plan.batches[1].ops[0]["Delete"]["ExpressionAttributeValues"][":v"] == {"N": "4"}
    # Nothing expired and the count right: no write at all.
    live = [_item("h#b", 2_000)]
    plan = _plan_reclaim("t", "k", _Meta(True, 1, 3, 0, 0, 2_000, 2), live, now=1e3, cutoff=970)
    assert plan.settled and plan.hint == 2_000
