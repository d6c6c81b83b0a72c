"""Liveness of the queue: a slot whose holder died comes back to the waiters alone.

No newcomer arrives and no reaper runs: the only parties are queued ``hold()`` waiters. The
bound is the lease TTL plus the clock-skew margin plus one poll (and one second of the
expiry's whole-second granularity). Judged by the test's own clock at the moment the hold's
``with`` block is entered, not by the store. Each case has a control: the same run with the
waiters' check-ins unable to see the key (the behaviour before this test existed) must miss
the bound.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest

from durable_semaphore import AcquireTimeoutError, DynamoDBLimiter, DynamoDBSemaphore
from durable_semaphore.store import queue_requests as store_requests

pytestmark = pytest.mark.chaos

TTL = 2.0
MARGIN = 1.0
POLL = 0.5
#: TTL + margin + one poll, plus the whole-second rounding of expiries and scheduling slack.
BOUND = TTL + MARGIN + POLL + 1.0 + 1.0
CONTROL_TIMEOUT = BOUND + 4.0


@pytest.fixture(params=["waiters-serve-the-queue", "control-check-in-only"])
def blind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The control makes every check-in leave out the key check (waiters only check in)."""
    if request.param == "waiters-serve-the-queue":
        return False
    original = store_requests.touch

    def check_in_only(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        kwargs["reclaim_cutoff"] = None
        return original(*args, **kwargs)

    monkeypatch.setattr(store_requests, "touch", functools.wraps(original)(check_in_only))
    return True


def _store(chaos_client: Any, chaos_table: str) -> DynamoDBSemaphore:
    return DynamoDBSemaphore(table_name=chaos_table, client=chaos_client, clock_skew_seconds=MARGIN)


def _limiter(sem: DynamoDBSemaphore) -> DynamoDBLimiter:
    return DynamoDBLimiter("svc", 1, semaphore=sem, waker=None)


class _Admission:
    """A hold on a thread; records when (monotonic) its block was entered, or the error."""

    def __init__(self, limiter: DynamoDBLimiter, timeout: float) -> None:
        self.entered: float | None = None
        self.error: BaseException | None = None
        self._hold = limiter.hold(timeout=timeout, ttl_seconds=30, max_poll_seconds=POLL)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self._hold:
                self.entered = time.monotonic()
        except BaseException as err:
            self.error = err

    def start(self) -> _Admission:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(CONTROL_TIMEOUT + 30)


def _judge(waiter: _Admission, blind: bool, *, since: float, what: str) -> None:
    """Admitted within the bound; the control (blind check-ins) times out instead."""
    waiter.join()
    if blind:
        assert isinstance(waiter.error, AcquireTimeoutError), waiter.error
        return
    assert waiter.error is None, waiter.error
    assert waiter.entered is not None
    waited = waiter.entered - since
    print(f"admitted {waited:.2f} s after {what} (bound {BOUND:.1f} s)")
    assert waited <= BOUND


def test_a_dead_holders_slot_goes_to_a_queued_waiter(
    chaos_client: Any, chaos_table: str, blind: bool
) -> None:
    sem = _store(chaos_client, chaos_table)
    began = time.monotonic()
    # The holder takes the only slot and dies: it never renews or releases.
    assert sem.try_acquire("svc", "dead-holder", 1, ttl_seconds=TTL) is not None
    waiter = _Admission(_limiter(sem), timeout=CONTROL_TIMEOUT).start()
    _judge(waiter, blind, since=began, what="the holder died")


def test_a_slot_handed_to_a_dead_waiter_goes_to_the_next(
    chaos_client: Any, chaos_table: str, blind: bool
) -> None:
    sem = _store(chaos_client, chaos_table)
    holder = sem.try_acquire("svc", "holder", 1, ttl_seconds=3600)
    assert holder is not None
    # The head of the queue joins and dies: its entry outlives it, so the hand-off picks it.
    dead = sem.acquire("svc", "dead-waiter", 1, ttl_seconds=TTL, queue_ttl_seconds=600)
    assert dead.queued
    waiter = _Admission(_limiter(sem), timeout=CONTROL_TIMEOUT + TTL).start()
    while not any(w.holder.startswith("hold#") for w in sem.waiters("svc")):
        time.sleep(0.05)
    released = time.monotonic()
    result = sem.release_slot("svc", "holder", token=holder.token)
    assert result.grant is not None and result.grant.holder == "dead-waiter"
    _judge(waiter, blind, since=released, what="the slot went to a dead waiter")
