"""The FIFO wait queue and the hand-off, on DynamoDB Local (single process)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import GRANTED, HELD, QUEUED
from tests.conftest import FakeClock
from tests.store_helpers import count_requests


def test_waiters_queue_in_arrival_order_and_release_hands_off(
    semaphore: DynamoDBSemaphore,
) -> None:
    assert semaphore.acquire("k", "a", 1).held
    queued = [semaphore.acquire("k", h, 1) for h in ("b", "c", "d")]
    positions = [q.position for q in queued]
    assert positions == sorted(set(positions))  # numbered in arrival order
    assert [q.ahead for q in queued] == [0, 1, 2]
    assert [w.holder for w in semaphore.waiters("k")] == ["b", "c", "d"]

    handed = semaphore.release_slot("k", "a")
    assert handed.released and handed.grant is not None and handed.grant.holder == "b"
    # The count never dipped: the slot moved from a to b.
    assert semaphore.slot_count("k").count == 1
    assert [(h.holder, h.state) for h in semaphore.holders("k")] == [("b", GRANTED)]
    # b finds the lease already its own (and claims it).
    got = semaphore.acquire("k", "b", 1, position=positions[0])
    assert got.held and got.lease is not None and got.lease.state == HELD
    assert [w.holder for w in semaphore.waiters("k")] == ["c", "d"]
    assert semaphore.release_slot("k", "b").grant.holder == "c"  # type: ignore[union-attr]
    assert semaphore.release_slot("k", "c").grant.holder == "d"  # type: ignore[union-attr]
    last = semaphore.release_slot("k", "d")
    assert last.released and last.grant is None
    assert semaphore.slot_count("k").count == 0
    assert semaphore.slot_count("k").waiters == 0
    assert semaphore.waiters("k") == [] and semaphore.entries("k") == []


def test_newcomer_does_not_barge_ahead_of_waiters(semaphore: DynamoDBSemaphore) -> None:
    semaphore.acquire("k", "a", 2)
    semaphore.acquire("k", "b", 2)
    w = semaphore.acquire("k", "w", 2)
    assert w.queued and w.position is not None
    semaphore.release_slot("k", "a")  # goes to w, not to whoever asks next
    assert semaphore.try_acquire("k", "newcomer", 2) is None
    queued = semaphore.acquire("k", "newcomer", 2)
    assert queued.queued and queued.position is not None and queued.position > w.position


def test_enqueue_is_idempotent_per_holder(semaphore: DynamoDBSemaphore) -> None:
    semaphore.acquire("k", "a", 1)
    first = semaphore.acquire("k", "b", 1)
    again = semaphore.acquire("k", "b", 1)  # a replay, without knowing its position
    assert first.position is not None and first.position == again.position
    assert semaphore.slot_count("k").waiters == 1
    assert len(semaphore.waiters("k")) == 1


def test_overlapping_invocations_enqueue_the_same_branch_once(
    semaphore: DynamoDBSemaphore,
) -> None:
    semaphore.acquire("k", "holder", 1)
    barrier = threading.Barrier(6)
    results: list[int | None] = []
    lock = threading.Lock()

    def invocation() -> None:
        barrier.wait()
        got = semaphore.acquire("k", "branch", 1)
        with lock:
            results.append(got.position)

    threads = [threading.Thread(target=invocation) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] is not None
    assert [w.holder for w in semaphore.waiters("k")] == ["branch"]
    assert semaphore.slot_count("k").waiters == 1


def test_control_distinct_branches_racing_each_get_their_own_place(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Control for the test above: the same race with six different holders shows six
    entries with six distinct numbers, so that check can see a branch queued twice."""
    semaphore.acquire("k", "holder", 1)
    barrier = threading.Barrier(6)
    results: list[int | None] = []
    lock = threading.Lock()

    def invocation(n: int) -> None:
        barrier.wait()
        got = semaphore.acquire("k", f"branch-{n}", 1)
        with lock:
            results.append(got.position)

    threads = [threading.Thread(target=invocation, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert None not in results and len(set(results)) == 6
    assert len(semaphore.waiters("k")) == 6
    assert semaphore.slot_count("k").waiters == 6


def test_callback_id_is_recorded_for_the_releaser(semaphore: DynamoDBSemaphore) -> None:
    semaphore.acquire("k", "a", 1)
    pos = semaphore.acquire("k", "b", 1, execution_arn="arn:exec-b").position
    assert semaphore.acquire("k", "b", 1, position=pos, callback_id="cb-1").queued
    grant = semaphore.release_slot("k", "a").grant
    assert grant is not None
    assert (grant.holder, grant.callback_id, grant.execution_arn) == ("b", "cb-1", "arn:exec-b")


def test_dead_waiter_is_skipped(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    sem.acquire("k", "a", 1)
    sem.acquire("k", "dead", 1, queue_ttl_seconds=10)
    clock.advance(5)
    sem.acquire("k", "alive", 1, queue_ttl_seconds=100)
    clock.advance(6)  # "dead" never checked in again
    grant = sem.release_slot("k", "a").grant
    assert grant is not None and grant.holder == "alive"
    assert sem.waiters("k") == []
    assert sem.slot_count("k").waiters == 0
    # The dead waiter, should it come back, queues again at the back.
    later = sem.acquire("k", "later", 1, queue_ttl_seconds=100)
    back = sem.acquire("k", "dead", 1, position=1)
    assert back.queued and later.position is not None and back.position is not None
    assert back.position > later.position
    assert [w.holder for w in sem.waiters("k")] == ["later", "dead"]


def test_revoke_passes_an_unclaimed_grant_on_and_never_a_claimed_one(
    semaphore: DynamoDBSemaphore,
) -> None:
    semaphore.acquire("k", "a", 1)
    semaphore.acquire("k", "b", 1)
    semaphore.acquire("k", "c", 1)
    assert semaphore.release_slot("k", "a").grant.holder == "b"  # type: ignore[union-attr]
    revoked = semaphore.revoke("k", "b")  # b's callback was gone
    assert revoked.released and revoked.grant is not None and revoked.grant.holder == "c"
    assert semaphore.slot_count("k").count == 1
    # b comes back: its entry is gone, so it queues again.
    assert semaphore.acquire("k", "b", 1, position=1).queued
    # c claims its slot; a revoke can no longer take it.
    assert semaphore.acquire("k", "c", 1, position=2).held
    assert semaphore.revoke("k", "c").released is False
    assert [h.holder for h in semaphore.holders("k")] == ["c"]


def test_a_waiter_that_gives_up_leaves_the_queue(semaphore: DynamoDBSemaphore) -> None:
    semaphore.acquire("k", "a", 1)
    semaphore.acquire("k", "b", 1)
    semaphore.acquire("k", "c", 1)
    left = semaphore.release_slot("k", "b")
    assert left.left_queue and not left.released
    assert [w.holder for w in semaphore.waiters("k")] == ["c"]
    assert [e.state for e in semaphore.entries("k") if e.holder == "c"] == [QUEUED]
    assert semaphore.release_slot("k", "a").grant.holder == "c"  # type: ignore[union-attr]


def test_expired_lease_with_waiters_is_handed_to_the_oldest(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    sem.acquire("k", "short", 1, ttl_seconds=5)
    sem.acquire("k", "w1", 1, queue_ttl_seconds=3600)
    clock.advance(6 + sem.clock_skew_seconds)
    # A newcomer's refusal notices the expiry; the freed slot goes to w1, not to it.
    late = sem.acquire("k", "late", 1, queue_ttl_seconds=3600)
    assert late.queued
    assert [g.holder for g in late.grants] == ["w1"]
    assert sem.acquire("k", "w1", 1, position=1).held


def test_uncontended_cycle_costs_two_single_item_writes(semaphore: DynamoDBSemaphore) -> None:
    semaphore.acquire("k", "warm", 5)
    semaphore.release_slot("k", "warm")
    with count_requests(semaphore.client) as seen:
        assert semaphore.acquire("k", "a", 5).held
        assert semaphore.release_slot("k", "a").released
    assert dict(seen) == {"UpdateItem": 2}


def test_first_cycle_on_a_new_key_costs_the_same(semaphore: DynamoDBSemaphore) -> None:
    """No read and no second variant on a key that has no row yet (per-item keys)."""
    with count_requests(semaphore.client) as seen:
        assert semaphore.acquire("fresh", "a", 5).held
        assert semaphore.release_slot("fresh", "a").released
    assert dict(seen) == {"UpdateItem": 2}


def test_contended_wait_costs_a_constant_number_of_requests(
    semaphore: DynamoDBSemaphore,
) -> None:
    for i in range(30):
        semaphore.acquire("k", f"h{i}", 30)
    with count_requests(semaphore.client) as seen:
        pos = semaphore.acquire("k", "w", 30).position  # refused + enqueue
    assert sum(seen.values()) == 2
    with count_requests(semaphore.client) as seen:
        assert semaphore.acquire("k", "w", 30, position=pos, callback_id="cb").queued
    assert sum(seen.values()) == 1
    with count_requests(semaphore.client) as seen:
        assert semaphore.release_slot("k", "h0", waiters_likely=True).grant is not None
    assert dict(seen) == {"Query": 1, "TransactWriteItems": 1}


def test_the_oldest_waiter_releasing_itself_just_leaves_the_queue(
    semaphore: DynamoDBSemaphore,
) -> None:
    """With ``waiters_likely`` a release reads the queue first; when the head is the caller
    itself there is no slot to hand over (and no item to touch twice)."""
    semaphore.acquire("k", "a", 1)
    semaphore.acquire("k", "b", 1)
    semaphore.acquire("k", "c", 1)
    out = semaphore.release_slot("k", "b", waiters_likely=True)
    assert out.left_queue and not out.released and out.grant is None
    assert [w.holder for w in semaphore.waiters("k")] == ["c"]
    assert semaphore.release_slot("k", "a", waiters_likely=True).grant.holder == "c"  # type: ignore[union-attr]


def test_queue_first_reports_the_waiters_ahead_or_that_it_does_not_know(
    semaphore: DynamoDBSemaphore,
) -> None:
    """A waiter that joins first thing (no read of the counter) cannot count who is ahead:
    it says None, never a wrong 0."""
    assert semaphore.try_acquire("k", "holder", 1) is not None
    for i in range(3):
        assert semaphore.acquire("k", f"w{i}", 1).ahead == i
    late = semaphore.acquire("k", "late", 1, queue_first=True)
    assert late.queued and late.ahead is None


def test_a_waiter_handed_a_slot_claims_it_in_two_requests(semaphore: DynamoDBSemaphore) -> None:
    """Its check-in finds its place gone (one cancelled transaction), then it claims the
    slot straight away (one write): no refused acquire in between."""
    assert semaphore.acquire("k", "a", 1).held
    waiting = semaphore.acquire("k", "w", 1)
    assert semaphore.release_slot("k", "a", waiters_likely=True).grant is not None
    with count_requests(semaphore.client) as seen:
        claimed = semaphore.acquire("k", "w", 1, position=waiting.position)
    assert claimed.held and claimed.lease is not None and claimed.lease.state == "held"
    assert dict(seen) == {"TransactWriteItems": 1, "UpdateItem": 1}


def test_joining_first_on_a_full_key_is_one_transaction(semaphore: DynamoDBSemaphore) -> None:
    """The counter's TTL (a day-long lease's) outlives the place: the first variant of the
    join is the right one, with no cancelled transaction before it."""
    assert semaphore.acquire("k", "a", 1).held
    with count_requests(semaphore.client) as seen:
        joined = semaphore.acquire("k", "w", 1, callback_id="cb", queue_first=True)
    assert joined.queued
    assert dict(seen) == {"TransactWriteItems": 1}
