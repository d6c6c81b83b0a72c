"""Lease safety on DynamoDB Local: fencing tokens, the clock-skew margin, expired own leases,
what ``reclaim_expired`` reports, and counters that do not outlive their keys.

Each over-admission claim has a control next to it that shows the same scenario over-admits
without the protection (no token, margin 0), judged by what the owners themselves believe:
an owner is "in" from its acquire until its lease's ``expires_at`` on its own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore, InvalidArgumentError
from durable_semaphore.store import DEFAULT_CLOCK_SKEW_SECONDS, GRANTED
from tests.conftest import FakeClock
from tests.store_helpers import meta_rows

# -- fencing -----------------------------------------------------------------------------------


def _stale_owner_scenario(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, *, fenced: bool
) -> tuple[bool, bool, bool]:
    """Issue 9's scenario: A's lease on holder id ``h`` expires, B takes ``h`` again, then A
    releases late. Returns (A's release result, C admitted, B's renew still works)."""
    sem = make_semaphore(clock)
    a = sem.try_acquire("k", "h", 1, ttl_seconds=1)
    assert a is not None and a.token
    clock.advance(2 + sem.clock_skew_seconds)  # A's lease is reclaimable by anyone now
    b = sem.try_acquire("k", "h", 1, ttl_seconds=60)
    assert b is not None and b.token and b.token != a.token
    released = sem.release("k", "h", token=a.token if fenced else None)
    c_admitted = sem.try_acquire("k", "c", 1) is not None
    b_renewed = sem.renew("k", "h", 60, token=b.token) is not None
    return released, c_admitted, b_renewed


def test_a_stale_owner_never_frees_a_newer_lease(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    released, c_admitted, b_renewed = _stale_owner_scenario(make_semaphore, clock, fenced=True)
    assert (released, c_admitted, b_renewed) == (False, False, True)


def test_control_without_the_token_the_stale_release_over_admits(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    """The no-token release is the admin call: it frees whatever the holder id holds now."""
    released, c_admitted, b_renewed = _stale_owner_scenario(make_semaphore, clock, fenced=False)
    assert (released, c_admitted, b_renewed) == (True, True, False)  # B and C both "in"


def test_tokens_are_stable_for_a_live_holder_and_fresh_per_grant(
    semaphore: DynamoDBSemaphore,
) -> None:
    first = semaphore.try_acquire("k", "a", 1)
    again = semaphore.try_acquire("k", "a", 1)
    assert first is not None and again is not None and first.token == again.token
    renewed = semaphore.renew("k", "a", 100, token=first.token)
    assert renewed is not None and renewed.token == first.token
    assert semaphore.renew("k", "a", 100, token="someone-else") is None
    # A hand-off mints a new generation for the waiter; the Grant carries it.
    assert semaphore.acquire("k", "w", 1).queued
    grant = semaphore.release_slot("k", "a", token=first.token).grant
    assert grant is not None and grant.token and grant.token != first.token
    granted = semaphore.entries("k")
    assert [(e.holder, e.state, e.token) for e in granted] == [("w", GRANTED, grant.token)]
    claimed = semaphore.acquire("k", "w", 1, position=1).lease
    assert claimed is not None and claimed.token == grant.token


def test_a_wrong_token_touches_nothing_not_even_a_queue_place(
    semaphore: DynamoDBSemaphore,
) -> None:
    holder = semaphore.try_acquire("k", "a", 1)
    assert holder is not None
    assert semaphore.acquire("k", "w", 1).queued
    assert semaphore.release("k", "w", token="stale") is False
    assert [w.holder for w in semaphore.waiters("k")] == ["w"]
    assert semaphore.release("k", "a", token="stale") is False
    assert semaphore.slot_count("k").count == 1
    assert semaphore.release("k", "a", token=holder.token) is True


@pytest.mark.parametrize("token", ["", 5, "x" * 129])
def test_a_malformed_token_is_refused(semaphore: DynamoDBSemaphore, token: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="token"):
        semaphore.release("k", "a", token=token)
    with pytest.raises(InvalidArgumentError, match="token"):
        semaphore.renew("k", "a", 10, token=token)


# -- clock skew --------------------------------------------------------------------------------


class _Skewed:
    """Another client's clock: the shared base plus a fixed offset."""

    def __init__(self, base: FakeClock, offset: float) -> None:
        self.base = base
        self.offset = offset

    def __call__(self) -> float:
        return self.base() + self.offset


def _skew_scenario(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock, margin: float
) -> int:
    """A (accurate clock) holds the only slot with a 5 s lease; B's clock runs 29 s fast.
    Returns the peak of owners that believe they hold a slot at the same real moment."""
    slow = make_semaphore(clock)
    fast = DynamoDBSemaphore(
        slow.table_name, slow.client, clock=_Skewed(clock, 29), clock_skew_seconds=margin
    )
    a = slow.try_acquire("k", "a", 1, ttl_seconds=5)
    assert a is not None
    intervals = [(clock(), a.expires_at)]  # A is "in" until its expiry on its own clock
    for _ in range(4):
        clock.advance(1)
        b = fast.try_acquire("k", "b", 1, ttl_seconds=5)
        if b is not None:
            intervals.append((clock(), b.expires_at - 29))  # B's view, in real time
            break
    moments = sorted({start for start, _ in intervals})
    return max(sum(1 for s, e in intervals if s <= t < e) for t in moments)


def test_clients_whose_clocks_differ_by_less_than_the_margin_never_over_admit(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    assert _skew_scenario(make_semaphore, clock, margin=DEFAULT_CLOCK_SKEW_SECONDS) == 1


def test_control_with_margin_zero_a_fast_clock_over_admits(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    assert _skew_scenario(make_semaphore, clock, margin=0) == 2


def test_an_owner_takes_its_expired_lease_back_within_the_margin(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    old = sem.try_acquire("k", "a", 1, ttl_seconds=5)
    assert old is not None
    clock.advance(10)  # expired on our clock, still counted for everyone else
    assert sem.renew("k", "a", 5, token=old.token) is None  # the owner treats it as ended
    again = sem.try_acquire("k", "a", 1, ttl_seconds=5)
    assert again is not None and again.token != old.token and again.expires_at > clock()
    assert sem.slot_count("k").count == 1
    # The old generation's late release leaves the new one alone.
    assert sem.release("k", "a", token=old.token) is False
    assert sem.release("k", "a", token=again.token) is True


def test_an_owner_releasing_its_expired_lease_frees_the_slot_at_once(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    lease = sem.try_acquire("k", "a", 1, ttl_seconds=5)
    assert lease is not None
    assert sem.acquire("k", "w", 1).queued
    clock.advance(10)
    # Not "released a live lease" (False), but the slot moves on now, not after the margin.
    result = sem.release_slot("k", "a", token=lease.token)
    assert result.released is False
    assert result.grant is not None and result.grant.holder == "w"


@pytest.mark.parametrize("margin", [-1, float("inf"), float("nan"), True, "30"])
def test_a_bad_margin_is_refused(ddb_client: Any, margin: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="clock_skew_seconds"):
        DynamoDBSemaphore("table", ddb_client, clock_skew_seconds=margin)


# -- reclaim and counters ----------------------------------------------------------------------


def test_reclaim_expired_reports_slots_freed_behind_the_ttl_sweeper(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    for i in range(3):
        sem.try_acquire("k", f"s{i}", 5, ttl_seconds=5)
    sem.try_acquire("k", "long", 5, ttl_seconds=500)
    clock.advance(6 + sem.clock_skew_seconds)
    for i in range(3):  # DynamoDB's TTL sweeper deletes the items, never the counter
        sem.client.delete_item(
            TableName=sem.table_name, Key={"pk": {"S": "k"}, "sk": {"S": f"h#s{i}"}}
        )
    assert sem.slot_count("k").count == 4
    assert sem.reclaim_expired("k") == 3
    assert sem.slot_count("k").count == 1


def test_a_finished_key_leaves_no_counter_behind(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    lease = sem.try_acquire("done", "a", 2)
    assert lease is not None
    assert sem.forget_if_idle("done") is False  # in use: kept
    assert sem.release("done", "a", token=lease.token)
    assert len(meta_rows(sem)) == 1
    assert sem.forget_if_idle("done") is True
    assert meta_rows(sem) == []
    # A key whose last lease expired: the reclaim takes the counter with it.
    sem.try_acquire("expired", "b", 2, ttl_seconds=5)
    clock.advance(6 + sem.clock_skew_seconds)
    assert sem.reclaim_expired("expired") == 1
    assert meta_rows(sem) == []
    assert sem.try_acquire("expired", "c", 2) is not None  # the key works as new


def test_the_limiter_passes_its_margin_to_the_store_it_builds(ddb_client: Any) -> None:
    from durable_semaphore import DynamoDBLimiter

    assert DynamoDBLimiter("x", 1, client=ddb_client).semaphore.clock_skew_seconds == 30
    limiter = DynamoDBLimiter("x", 1, client=ddb_client, clock_skew_seconds=120)
    assert limiter.semaphore.clock_skew_seconds == 120
    with pytest.raises(InvalidArgumentError, match="clock_skew_seconds"):
        DynamoDBLimiter("x", 1, clock_skew_seconds=float("inf"))
    with pytest.raises(InvalidArgumentError, match="clock_skew_seconds"):
        DynamoDBLimiter(
            "x", 1, semaphore=DynamoDBSemaphore("table", ddb_client), clock_skew_seconds=5
        )
