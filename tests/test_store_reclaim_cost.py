"""Reclaiming expired leases: one read of the key's counter item, then chained writes (one per
``REMOVES_PER_WRITE`` expired leases, each expecting the version the one before wrote), so the
cost grows linearly with the leases reclaimed.

The store tests run on DynamoDB Local. Requests are counted by a botocore ``before-call`` hook
(one per API call, retries aside), and read and write capacity is what DynamoDB Local reports
with ``ReturnConsumedCapacity``. Some tests make the store plan with a smaller ``per_write``, so
that chaining is exercised with few leases; one keeps the real one. The planner itself
(:func:`durable_semaphore.store.reconcile.plan`) is pure and tested without DynamoDB.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import reconcile, requests
from durable_semaphore.store.model import GRANTED, HELD, Lease
from durable_semaphore.store.reconcile import REMOVES_PER_WRITE
from durable_semaphore.store.schema import (
    COUNT,
    HINT,
    LEASE_PREFIX,
    META_SK,
    NWAIT,
    PK,
    SK,
    VERSION,
    Meta,
    encode_lease,
    slot_name,
)
from tests.conftest import FakeClock, local_dynamodb_client
from tests.store_helpers import meta_rows, traffic

REAL_PLAN = reconcile.plan
#: The smaller batch the chaining tests plan with (the store has no knob for it).
SMALL = 99


@pytest.fixture
def per_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make every store of this test plan with ``n`` removals per write."""

    def use(n: int) -> None:
        monkeypatch.setattr(reconcile, "plan", functools.partial(REAL_PLAN, per_write=n))

    return use


def _expired_leases(sem: DynamoDBSemaphore, clock: FakeClock, n: int, limit: int) -> None:
    """``n`` leases on key ``k`` that anyone may reclaim (expired beyond the skew margin)."""
    for i in range(n):
        assert sem.try_acquire("k", f"s{i:04}", limit, ttl_seconds=5) is not None
    clock.advance(6 + sem.clock_skew_seconds)


def _counter(sem: DynamoDBSemaphore) -> dict[str, Any] | None:
    out = sem.client.get_item(
        TableName=sem.table_name, Key={PK: {"S": "k"}, SK: {"S": META_SK}}, ConsistentRead=True
    )
    item: dict[str, Any] | None = out.get("Item")
    return item


def _lease_attributes(item: dict[str, Any]) -> list[str]:
    return [name for name in item if name.startswith(LEASE_PREFIX)]


# -- the store on DynamoDB Local ---------------------------------------------------------------


@pytest.mark.parametrize("n", [99, 198, 999])
def test_reclaim_reads_the_key_once_and_writes_once_per_400_leases(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, n: int
) -> None:
    """At the real REMOVES_PER_WRITE, with one live lease left so the counter stays: one
    GetItem of the counter, then ceil(n / 400) chained UpdateItems."""
    sem = make_semaphore(clock)
    _expired_leases(sem, clock, n, limit=1000)
    assert sem.try_acquire("k", "live", 1000, ttl_seconds=3600) is not None
    version = sem.slot_count("k").version
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(
        f"\nreclaim of {n} (1 live left): {dict(seen.calls)}, "
        f"read units {seen.read_units}, write units {seen.write_units}"
    )
    assert (result.deleted, result.freed, result.grants) == (n, n, ())
    assert dict(seen.calls) == {"GetItem": 1, "UpdateItem": math.ceil(n / REMOVES_PER_WRITE)}
    item = _counter(sem)
    assert item is not None
    assert _lease_attributes(item) == [slot_name("live")]
    assert item[COUNT] == {"N": "1"}
    # Each write of the chain bumped the version once.
    assert item[VERSION] == {"N": str(version + math.ceil(n / REMOVES_PER_WRITE))}
    # The hint is the one live lease's expiry: refusals stop reconciling.
    assert float(item[HINT]["N"]) == sem.holders("k")[0].expires_at


@pytest.mark.parametrize("n", [99, 198])
def test_reclaim_of_a_key_with_nothing_live_deletes_its_counter_in_one_write(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, n: int
) -> None:
    """Every lease expired and nobody waiting: the only write is a version-checked
    DeleteItem of the whole counter, and the key leaves nothing behind."""
    sem = make_semaphore(clock)
    _expired_leases(sem, clock, n, limit=1000)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(
        f"\nreclaim of {n} (nothing live): {dict(seen.calls)}, "
        f"read units {seen.read_units}, write units {seen.write_units}"
    )
    assert (result.deleted, result.freed, result.grants) == (n, n, ())
    assert dict(seen.calls) == {"GetItem": 1, "DeleteItem": 1}
    assert sem.entries("k") == [] and list(sem.scan_leases()) == []
    assert meta_rows(sem) == []


def test_reclaim_of_more_than_one_write_of_nothing_live_deletes_the_counter_at_once(
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    per_write: Callable[[int], None],
) -> None:
    """198 expired leases, nothing live, nobody waiting, 99 per write: the plan is ``idle``
    whatever the number of leases, so one version-checked DeleteItem removes the counter and
    every lease in it; no chain of removals first."""
    per_write(SMALL)
    sem = make_semaphore(clock)
    _expired_leases(sem, clock, 198, limit=1000)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(f"\nreclaim of 198 (nothing live) at {SMALL} per write: {dict(seen.calls)}")
    assert (result.deleted, result.freed, result.grants) == (198, 198, ())
    assert dict(seen.calls) == {"GetItem": 1, "DeleteItem": 1}
    assert sem.entries("k") == [] and list(sem.scan_leases()) == []
    assert meta_rows(sem) == []


def test_read_capacity_grows_linearly_with_the_leases_reclaimed(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """Per lease, reclaiming 999 reads no more than reclaiming 198 does (plus rounding): the
    reclaim reads the counter item once, whatever the number of writes."""
    sem = make_semaphore(clock)
    units: dict[int, float] = {}
    writes = {n: {"DeleteItem": 1} for n in (99, 198, 999)}
    for n in (99, 198, 999):
        _expired_leases(sem, clock, n, limit=1000)
        with traffic(sem.client) as seen:
            assert sem.reclaim_expired("k") == n
        print(f"\nreclaim of {n} (nothing live): {dict(seen.calls)}, read units {seen.read_units}")
        units[n] = seen.read_units
        assert dict(seen.calls) == {"GetItem": 1, **writes[n]}
        assert meta_rows(sem) == []
    print(f"read units: {units}")
    assert units[99] <= units[198] <= units[999]
    assert units[999] / 999 <= units[198] / 198 + 0.01


def test_chained_writes_keep_the_count_equal_to_the_leases_left_after_each(
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    ddb_endpoint: str,
    per_write: Callable[[int], None],
) -> None:
    """297 expired and 3 live leases, 99 per write: three UpdateItems, each expecting the
    version the one before wrote; after each, the item counts exactly the leases it holds
    and its hint is the earliest expiry among them."""
    per_write(SMALL)
    sem = make_semaphore(clock)
    for i in range(297):  # expiries spread out, so each batch moves the hint
        assert sem.try_acquire("k", f"s{i:04}", 300, ttl_seconds=5 + i // SMALL) is not None
    for holder in ("live-a", "live-b", "live-c"):
        assert sem.try_acquire("k", holder, 300, ttl_seconds=3600) is not None
    clock.advance(8 + sem.clock_skew_seconds)
    start = Meta.parse(_counter(sem))
    observer = local_dynamodb_client(ddb_endpoint)
    after: list[Meta] = []

    def on_write(model: Any, **_: Any) -> None:
        if model.name == "UpdateItem":
            out = observer.get_item(
                TableName=sem.table_name,
                Key={PK: {"S": "k"}, SK: {"S": META_SK}},
                ConsistentRead=True,
            )
            after.append(Meta.parse(out["Item"]))

    sem.client.meta.events.register("after-call.dynamodb", on_write)
    try:
        with traffic(sem.client) as seen:
            result = sem.reclaim("k")
    finally:
        sem.client.meta.events.unregister("after-call.dynamodb", on_write)
    print(f"\nreclaim of 297 at {SMALL} per write: {dict(seen.calls)}")
    assert (result.deleted, result.freed) == (297, 297)
    assert dict(seen.calls) == {"GetItem": 1, "UpdateItem": 3}
    assert [m.version for m in after] == [start.version + 1, start.version + 2, start.version + 3]
    assert [m.count for m in after] == [len(m.leases) for m in after] == [201, 102, 3]
    assert [m.hint for m in after] == [min(x.expires_at for x in m.leases.values()) for m in after]
    assert len({m.hint for m in after}) == 3  # each batch removed the earliest ones


def test_a_writer_between_batches_makes_the_reclaim_read_again_and_admits_no_one_extra(
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    ddb_endpoint: str,
    per_write: Callable[[int], None],
) -> None:
    """Another client acquires right after the first write: the chained second write is
    refused (the version moved), the reclaim reads the key again and finishes. Newcomers
    get exactly the slots the expired leases free, and the count ends equal to the leases."""
    per_write(SMALL)
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
        if model.name != "UpdateItem" or counts:
            return
        counts.append(other.slot_count("k").count)  # after the first write
        for i in range(limit + 5):
            if other.try_acquire("k", f"new{i:03}", limit, ttl_seconds=3600) is not None:
                admitted.append(f"new{i:03}")

    sem.client.meta.events.register("after-call.dynamodb", between_batches)
    try:
        with traffic(sem.client) as seen:
            result = sem.reclaim("k")
    finally:
        sem.client.meta.events.unregister("after-call.dynamodb", between_batches)
    print(f"\nreclaim cut short by a writer: {dict(seen.calls)}")
    assert counts == [2 + 198 - SMALL]  # the first write counted exactly the leases left
    # The first write freed 99 slots; the newcomer refused after those reclaimed the rest
    # itself, so the newcomers got all 198 freed slots and no more.
    assert len(admitted) == 198
    assert (result.deleted, result.freed) == (SMALL, SMALL)
    # The reclaim read twice: once at first, once after its second write was refused; the
    # second read found nothing left to do.
    assert dict(seen.calls) == {"GetItem": 2, "UpdateItem": 2}
    live = sorted(e.holder for e in sem.holders("k"))
    assert live == sorted(["live-a", "live-b", *admitted])
    meta = Meta.parse(_counter(sem))
    assert meta.count == len(meta.leases) == len(live) == limit  # no expired lease left


def test_slots_freed_over_several_writes_go_to_the_waiters(
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    per_write: Callable[[int], None],
) -> None:
    per_write(SMALL)
    sem = make_semaphore(clock)
    for i in range(150):
        assert sem.try_acquire("k", f"s{i:03}", 150, ttl_seconds=5) is not None
    for i in range(3):
        assert sem.acquire("k", f"w{i}", 150).queued
    clock.advance(6 + sem.clock_skew_seconds)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(f"\nreclaim of 150 with 3 waiters: {dict(seen.calls)}")
    assert (result.deleted, result.freed) == (150, 150)
    assert [g.holder for g in result.grants] == ["w0", "w1", "w2"]
    # One read and two chained writes; then a queue read and a hand-off transaction per
    # waiter, a last queue read that finds it empty (a GetItem and a Query to check nwait),
    # and the explicit reclaim's look for dead waiters (one Query).
    assert dict(seen.calls) == {"GetItem": 2, "UpdateItem": 2, "Query": 6, "TransactWriteItems": 3}
    assert sorted(e.holder for e in sem.holders("k")) == ["w0", "w1", "w2"]
    assert {e.state for e in sem.holders("k")} == {GRANTED}
    count = sem.slot_count("k")
    assert (count.count, count.waiters) == (3, 0)
    assert sem.waiters("k") == []


def test_reclaim_drops_dead_waiters_one_transaction_each(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """120 expired leases and 40 waiters that stopped checking in: one write frees the
    leases, and each dead waiter (its queue entry and its marker) goes in a transaction of
    its own; nobody is granted, and no marker or entry is left."""
    sem = make_semaphore(clock)
    for i in range(120):
        assert sem.try_acquire("k", f"s{i:03}", 120, ttl_seconds=5) is not None
    for i in range(40):
        assert sem.acquire("k", f"w{i:02}", 120, queue_ttl_seconds=5).queued
    assert sem.slot_count("k").waiters == 40
    clock.advance(6 + sem.clock_skew_seconds)
    with traffic(sem.client) as seen:
        result = sem.reclaim("k")
    print(
        f"\nreclaim of 120 leases and 40 dead waiters: {dict(seen.calls)}, "
        f"read units {seen.read_units}, write units {seen.write_units}"
    )
    assert (result.deleted, result.freed, result.grants) == (120, 120, ())
    # The leases: one read, one write. The waiters: one transaction each, dropped four at
    # a time from one read of the queue's heads while filling the freed slots; then the
    # empty queue's recount (a GetItem and a Query) and the look for dead waiters (a Query).
    assert dict(seen.calls) == {
        "GetItem": 2,
        "UpdateItem": 1,
        "Query": 40 // 4 + 3,
        "TransactWriteItems": 40,
    }
    assert sem.entries("k") == [] and sem.waiters("k") == []
    count = sem.slot_count("k")
    assert (count.count, count.waiters) == (0, 0)


# -- the planner, without DynamoDB -------------------------------------------------------------


def _lease(name: str, expires_at: float, *, state: str = HELD) -> Lease:
    return Lease("k", name, 0.0, expires_at, None, state, "t")


def _meta(
    leases: list[Lease],
    *,
    count: int | None = None,
    version: int = 7,
    nwait: int = 0,
    hint: float | None = None,
) -> Meta:
    return Meta(
        exists=True,
        count=len(leases) if count is None else count,
        version=version,
        wseq=nwait,
        nwait=nwait,
        hint=hint,
        limit=1000,
        leases={slot_name(lease.holder): lease for lease in leases},
    )


CUTOFF = 970.0


def test_the_plan_chains_versions_and_keeps_the_count_equal_to_the_leases_left() -> None:
    """150 expired leases (expiries 800..949) and 2 live ones, 60 removals per write."""
    expired = [_lease(f"a{i:03}", 800 + i) for i in range(150)]
    live = [_lease("z1", 2_000), _lease("z2", 3_000)]
    meta = _meta(list(reversed(expired)) + live, hint=800)
    plan = reconcile.plan(meta, cutoff=CUTOFF, per_write=60)
    assert not plan.settled and not plan.idle and plan.hint == 2_000
    assert [len(b.removes) for b in plan.batches] == [60, 60, 30]
    assert [b.version for b in plan.batches] == [7, 8, 9]  # each expects the one before's
    assert [b.count for b in plan.batches] == [92, 32, 2]  # the leases left after each
    # The hint stays at the earliest lease left, expired ones included, until they are gone.
    assert [b.hint for b in plan.batches] == [860, 920, 2_000]
    # Earliest first: every batch removes leases that expired before the next one's.
    removed = [name for b in plan.batches for name in b.removes]
    assert removed == [slot_name(lease.holder) for lease in expired]
    # The writes built from it: version i expects i and writes i + 1; the count and hint.
    writes = [requests.reconcile("k", b.version, b.removes, b.count, b.hint) for b in plan.batches]
    values = [w["ExpressionAttributeValues"] for w in writes]
    assert [(v[":v"]["N"], v[":nv"]["N"]) for v in values] == [("7", "8"), ("8", "9"), ("9", "10")]
    assert [v[":n"]["N"] for v in values] == ["92", "32", "2"]
    assert [v[":xh"]["N"] for v in values] == ["860", "920", "2000"]
    assert all(w["ConditionExpression"] == requests.UNCHANGED for w in writes)
    first = writes[0]
    assert first["UpdateExpression"].endswith("REMOVE " + ", ".join(f"#r{n}" for n in range(60)))
    assert [first["ExpressionAttributeNames"][f"#r{n}"] for n in range(60)] == removed[:60]


def test_the_plan_at_the_real_removes_per_write() -> None:
    """999 expired and one live lease: 400, 400 and 199 removals, in one read's chain."""
    assert REMOVES_PER_WRITE == 400
    leases = [_lease(f"s{i:04}", 900) for i in range(999)] + [_lease("live", 5_000)]
    plan = reconcile.plan(_meta(leases, version=3), cutoff=CUTOFF)
    assert [len(b.removes) for b in plan.batches] == [400, 400, 199]
    assert [b.version for b in plan.batches] == [3, 4, 5]
    assert [b.count for b in plan.batches] == [600, 200, 1]
    assert [b.hint for b in plan.batches] == [900, 900, 5_000]
    assert not plan.idle and plan.hint == 5_000
    # Every expired lease is removed exactly once, the live one never.
    removed = [name for b in plan.batches for name in b.removes]
    assert len(set(removed)) == 999 and slot_name("live") not in removed
    # One write's expression stays within DynamoDB's 4 KB expression limit.
    write = requests.reconcile("k", 3, plan.batches[0].removes, 600, 900)
    assert len(write["UpdateExpression"].encode()) < 4096


def test_the_plan_expires_leases_at_the_cutoff_and_counts_granted_ones() -> None:
    leases = [
        _lease("at-cutoff", CUTOFF),
        _lease("just-after", CUTOFF + 1),
        _lease("granted", CUTOFF - 1, state=GRANTED),
    ]
    plan = reconcile.plan(_meta(leases), cutoff=CUTOFF)
    [batch] = plan.batches
    assert sorted(batch.removes) == sorted([slot_name("at-cutoff"), slot_name("granted")])
    assert (batch.count, batch.hint, plan.hint) == (1, CUTOFF + 1, CUTOFF + 1)


def test_the_plan_deletes_the_counter_only_when_nothing_is_left_for_anyone() -> None:
    expired = [_lease(f"a{i:03}", 900) for i in range(120)]
    # All expired, nobody waiting, one write's worth: the item itself can go.
    plan = reconcile.plan(_meta(expired, version=3), cutoff=CUTOFF)
    assert plan.idle and not plan.settled
    assert [(len(b.removes), b.version, b.count, b.hint) for b in plan.batches] == [
        (120, 3, 0, None)
    ]
    assert requests.delete_expired_counter("k", 3) == {
        "Key": {PK: {"S": "k"}, SK: {"S": META_SK}},
        "ConditionExpression": requests.UNCHANGED,
        "ExpressionAttributeNames": {"#v": VERSION},
        "ExpressionAttributeValues": {":v": {"N": "3"}},
    }
    # Somebody waits: the counter stays (its nwait and the queue's order live there).
    assert not reconcile.plan(_meta(expired, nwait=1), cutoff=CUTOFF).idle
    # A live lease stays: the counter stays.
    assert not reconcile.plan(_meta([*expired, _lease("z", 2_000)]), cutoff=CUTOFF).idle
    # More than one write's worth of leases: still one delete of the whole item.
    assert reconcile.plan(_meta(expired), cutoff=CUTOFF, per_write=100).idle
    # An empty counter with the count right: settled and idle (forget it, no lease write).
    empty = reconcile.plan(_meta([]), cutoff=CUTOFF)
    assert empty.idle and empty.settled and empty.hint is None
    # A counter never written: nothing to delete.
    assert not reconcile.plan(Meta.parse(None), cutoff=CUTOFF).idle


def test_the_plan_writes_nothing_when_settled_and_recounts_a_wrong_count() -> None:
    live = [_lease("b", 2_000), _lease("c", 2_500)]
    plan = reconcile.plan(_meta(live, hint=2_000), cutoff=CUTOFF)
    assert plan.settled and not plan.idle and plan.hint == 2_000
    # A count that drifted from the leases: one write, removing nothing, setting it right.
    plan = reconcile.plan(_meta(live, count=5), cutoff=CUTOFF)
    assert not plan.settled
    assert [(b.removes, b.count, b.hint) for b in plan.batches] == [([], 2, 2_000)]


def test_the_plan_reads_a_raw_counter_item() -> None:
    """From an item as DynamoDB returns it (encoded leases among the counter's attributes)."""
    item: dict[str, Any] = {
        PK: {"S": "k"},
        SK: {"S": META_SK},
        COUNT: {"N": "3"},
        VERSION: {"N": "12"},
        NWAIT: {"N": "0"},
        HINT: {"N": "900"},
        "expires_at": {"N": "90000"},
    }
    for holder, expires_at in (("k#old", 900), ("k#older", 800), ("new", 4_000)):
        item[slot_name(holder)] = encode_lease(
            "k",
            holder,
            token=f"tok-{holder}",
            expires_at=expires_at,
            acquired_at=100.5,
            execution_arn=None,
        )
    meta = Meta.parse(item)
    assert (meta.count, meta.version, meta.hint) == (3, 12, 900.0)
    assert {lease.holder for lease in meta.leases.values()} == {"k#old", "k#older", "new"}
    plan = reconcile.plan(meta, cutoff=CUTOFF)
    [batch] = plan.batches
    assert batch.removes == [slot_name("k#older"), slot_name("k#old")]
    assert (batch.version, batch.count, batch.hint, plan.idle) == (12, 1, 4_000, False)
