"""Single-process semantics of the lease store, on DynamoDB Local."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from durable_semaphore import DynamoDBSemaphore, InvalidArgumentError, Lease
from tests.conftest import FakeClock


def test_acquire_until_full_then_release_frees_a_slot(semaphore: DynamoDBSemaphore) -> None:
    leases = [semaphore.try_acquire("k", f"h{i}", 3) for i in range(3)]
    assert all(isinstance(lease, Lease) for lease in leases)
    assert semaphore.try_acquire("k", "h3", 3) is None
    assert sorted(lease.holder for lease in semaphore.holders("k")) == ["h0", "h1", "h2"]
    assert semaphore.release("k", "h1") is True
    assert semaphore.try_acquire("k", "h3", 3) is not None
    assert sorted(lease.holder for lease in semaphore.holders("k")) == ["h0", "h2", "h3"]
    assert semaphore.slot_count("k").count == 3


def test_keys_are_independent(semaphore: DynamoDBSemaphore) -> None:
    assert semaphore.try_acquire("a", "h", 1) is not None
    assert semaphore.try_acquire("b", "h", 1) is not None
    assert semaphore.try_acquire("a", "other", 1) is None


def test_reacquire_by_same_holder_returns_same_slot(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    first = sem.try_acquire("k", "h", 2, ttl_seconds=100)
    assert first is not None
    clock.advance(50)
    again = sem.try_acquire("k", "h", 2, ttl_seconds=100)
    assert again is not None
    assert again.acquired_at == first.acquired_at
    assert again.expires_at == first.expires_at + 50  # extended, not a new lease
    assert sem.slot_count("k").count == 1
    assert [lease.holder for lease in sem.holders("k")] == ["h"]
    # The second slot is still free for someone else, and only one.
    assert sem.try_acquire("k", "x", 2) is not None
    assert sem.try_acquire("k", "y", 2) is None


def test_reacquire_when_full_still_returns_own_lease(semaphore: DynamoDBSemaphore) -> None:
    assert semaphore.try_acquire("k", "a", 1) is not None
    assert semaphore.try_acquire("k", "a", 1) is not None
    assert semaphore.try_acquire("k", "b", 1) is None


def test_release_is_idempotent(semaphore: DynamoDBSemaphore) -> None:
    semaphore.try_acquire("k", "a", 2)
    assert semaphore.release("k", "a") is True
    assert semaphore.release("k", "a") is False
    assert semaphore.release("k", "never") is False
    assert semaphore.release("nokey", "never") is False
    assert semaphore.slot_count("k").count == 0
    assert semaphore.holders("k") == []


def test_lowered_limit_admits_nobody_until_below_and_evicts_nobody(
    semaphore: DynamoDBSemaphore,
) -> None:
    for i in range(4):
        assert semaphore.try_acquire("k", f"h{i}", 4) is not None
    assert semaphore.try_acquire("k", "new", 2) is None
    assert len(semaphore.holders("k")) == 4
    semaphore.release("k", "h0")
    semaphore.release("k", "h1")
    assert semaphore.try_acquire("k", "new", 2) is None  # 2 held, limit 2
    semaphore.release("k", "h2")
    assert semaphore.try_acquire("k", "new", 2) is not None
    # A raised limit admits at once.
    assert semaphore.try_acquire("k", "more", 3) is not None


def test_expired_lease_stops_counting_and_acquire_reclaims_it(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    assert sem.try_acquire("k", "short", 1, ttl_seconds=10) is not None
    assert sem.try_acquire("k", "b", 1) is None
    clock.advance(11)
    assert sem.holders("k") == []
    # Expired on our clock, but others reclaim it only past the skew margin.
    assert sem.try_acquire("k", "b", 1) is None
    clock.advance(sem.clock_skew_seconds)
    lease = sem.try_acquire("k", "b", 1)
    assert lease is not None
    assert [h.holder for h in sem.holders("k")] == ["b"]
    assert sem.slot_count("k").count == 1
    # The expired holder lost its slot: releasing it now changes nothing.
    assert sem.release("k", "short") is False
    assert sem.slot_count("k").count == 1


def test_release_of_expired_lease_returns_false_and_cleans_up(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    sem.try_acquire("k", "a", 3, ttl_seconds=5)
    sem.try_acquire("k", "b", 3, ttl_seconds=500)
    clock.advance(6)
    assert sem.release("k", "a") is False
    assert sem.slot_count("k").count == 1
    assert [h.holder for h in sem.holders("k")] == ["b"]


def test_reclaim_expired_counts_and_is_idempotent(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    for i in range(5):
        sem.try_acquire("k", f"s{i}", 10, ttl_seconds=5)
    sem.try_acquire("k", "long", 10, ttl_seconds=500)
    clock.advance(10)
    assert sem.reclaim_expired("k") == 0  # within the skew margin
    clock.advance(sem.clock_skew_seconds)
    assert sem.reclaim_expired("k") == 5
    assert sem.reclaim_expired("k") == 0
    assert sem.slot_count("k").count == 1
    assert sem.release("k", "s0") is False
    assert sem.release("k", "long") is True
    assert sem.slot_count("k").count == 0


def test_reclaim_more_than_one_transaction_of_expired(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    for i in range(130):
        sem.try_acquire("k", f"s{i}", 1000, ttl_seconds=5)
    clock.advance(6 + sem.clock_skew_seconds)
    assert sem.reclaim_expired("k") == 130
    assert sem.slot_count("k").count == 0


def test_ttl_deleted_items_are_repaired_when_full(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """DynamoDB's TTL sweeper deletes expired items without touching our counter; we recover.

    The sweeper only ever deletes *expired* items, which is what lets a refusal skip the
    reconcile while no lease can have expired (the counter's expiry hint says so).
    """
    sem = make_semaphore(clock)
    sem.try_acquire("k", "a", 2, ttl_seconds=10)
    sem.try_acquire("k", "b", 2, ttl_seconds=500)
    clock.advance(11 + sem.clock_skew_seconds)
    # Simulate the sweeper: delete the expired lease item directly.
    sem.client.delete_item(TableName=sem.table_name, Key={"pk": {"S": "k"}, "sk": {"S": "h#a"}})
    assert sem.slot_count("k").count == 2
    assert sem.try_acquire("k", "c", 2) is not None
    assert sorted(h.holder for h in sem.holders("k")) == ["b", "c"]
    assert sem.slot_count("k").count == 2


def test_refusal_does_not_reconcile_while_no_lease_can_have_expired(
    semaphore: DynamoDBSemaphore,
) -> None:
    """A refused attempt costs one request whatever the number of holders (no Query)."""
    from tests.store_helpers import count_requests

    for i in range(20):
        assert semaphore.try_acquire("k", f"h{i}", 20) is not None
    with count_requests(semaphore.client) as seen:
        assert semaphore.try_acquire("k", "late", 20) is None
    assert dict(seen) == {"UpdateItem": 1}


def test_renew_never_takes_a_slot(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    assert sem.renew("k", "a", 100) is None
    assert sem.slot_count("k").count == 0
    lease = sem.try_acquire("k", "a", 1, ttl_seconds=100)
    assert lease is not None
    clock.advance(10)
    renewed = sem.renew("k", "a", 100)
    assert renewed is not None and renewed.expires_at == lease.expires_at + 10
    # A shorter renew never cuts a lease short.
    shorter = sem.renew("k", "a", 1)
    assert shorter is not None and shorter.expires_at == renewed.expires_at
    clock.advance(1000)
    assert sem.renew("k", "a", 100) is None


def test_holders_prefix_and_execution_arn(semaphore: DynamoDBSemaphore) -> None:
    semaphore.try_acquire("k", "arn1#m#1", 10, execution_arn="arn1")
    semaphore.try_acquire("k", "arn1#m#2", 10, execution_arn="arn1")
    semaphore.try_acquire("k", "arn2#m#1", 10)
    assert sorted(h.holder for h in semaphore.holders("k", prefix="arn1#")) == [
        "arn1#m#1",
        "arn1#m#2",
    ]
    assert {h.execution_arn for h in semaphore.holders("k")} == {"arn1", None}
    assert len(list(semaphore.scan_leases())) == 3


def test_create_table_is_idempotent_and_enables_ttl(semaphore: DynamoDBSemaphore) -> None:
    assert semaphore.create_table() is False
    ttl = semaphore.client.describe_time_to_live(TableName=semaphore.table_name)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("", "h", 1), "key"),
        (("k", "", 1), "holder"),
        (("k", "h", 0), "limit"),
        (("k", "h", -3), "limit"),
        (("k", "h", True), "limit"),
        (("k", "h", 1.5), "limit"),
        (("k" * 2049, "h", 1), "key"),
        (("k", "h" * 1023, 1), "holder"),
        (("k", "é" * 512, 1), "holder"),
        ((None, "h", 1), "key"),
        (("a\ud800", "h", 1), "key"),
        (("k", "a\ud800", 1), "holder"),
        (("k", "h", 10**38 + 1), "limit"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    semaphore: DynamoDBSemaphore, args: tuple[object, object, object], name: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        semaphore.try_acquire(*args)  # type: ignore[arg-type]
    assert info.value.name == name
    assert repr(info.value.value)[:20] in str(info.value)
    assert semaphore.client.scan(TableName=semaphore.table_name)["Count"] == 0


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "10", 1e200])
def test_bad_ttl_raises_and_writes_nothing(semaphore: DynamoDBSemaphore, ttl: object) -> None:
    with pytest.raises(InvalidArgumentError, match="ttl_seconds"):
        semaphore.try_acquire("k", "h", 1, ttl_seconds=ttl)  # type: ignore[arg-type]
    assert semaphore.client.scan(TableName=semaphore.table_name)["Count"] == 0


def test_longest_valid_key_and_holder_work(semaphore: DynamoDBSemaphore) -> None:
    key, holder = "k" * 2048, "h" * 1022
    assert semaphore.try_acquire(key, holder, 1) is not None
    assert semaphore.release(key, holder) is True


def test_missing_table_is_a_clear_error(ddb_client: object) -> None:
    from durable_semaphore import TableNotFoundError

    sem = DynamoDBSemaphore(table_name="does-not-exist", client=ddb_client)  # type: ignore[arg-type]
    for call in (
        lambda: sem.try_acquire("k", "h", 1),
        lambda: sem.release("k", "h"),
        lambda: sem.holders("k"),
        lambda: sem.reclaim_expired("k"),
    ):
        with pytest.raises(TableNotFoundError, match="does-not-exist"):
            call()
