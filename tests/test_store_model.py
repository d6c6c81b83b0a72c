"""A model of the semaphore checked against the real store on DynamoDB Local.

Hypothesis drives random sequences of acquire (with a varying limit), replay, release, duplicate
release, clock advances (expiry) and reclaim; after every step the store's holders must equal
the model's live holders and its counter must equal the number of lease items it holds.

The model knows the skew margin: an expired lease keeps its slot (nobody else may reclaim it)
until it is expired by more than ``SKEW``; within the margin its own holder takes it back.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import LEASE_PREFIX, META_SK
from tests.conftest import FakeClock

HOLDERS = st.sampled_from(["a", "b", "c", "d", "e"])
SKEW = 7


class SemaphoreModel(RuleBasedStateMachine):
    client: Any = None
    table: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sem = DynamoDBSemaphore(
            self.table, self.client, clock=self.clock, clock_skew_seconds=SKEW
        )
        self.key = f"model-{uuid.uuid4().hex}"
        # holder -> expires_at, for leases the model believes exist (live or not yet reclaimed)
        self.leases: dict[str, float] = {}

    def live(self) -> dict[str, float]:
        return {h: e for h, e in self.leases.items() if e > self.clock.now}

    def counted(self) -> dict[str, float]:
        """Leases that still occupy a slot: live, or expired by no more than the margin."""
        return {h: e for h, e in self.leases.items() if e + SKEW > self.clock.now}

    @rule(holder=HOLDERS, limit=st.integers(1, 4), ttl=st.integers(1, 30))
    def acquire(self, holder: str, limit: int, ttl: int) -> None:
        live = self.live()
        got = self.sem.try_acquire(self.key, holder, limit, ttl_seconds=ttl)
        new_expiry = math.ceil(self.clock.now + ttl)
        counted = self.counted()
        if holder in live:
            assert got is not None, "a live holder must get its own lease back"
            assert got.expires_at == max(live[holder], new_expiry)
            self.leases[holder] = got.expires_at
        elif holder in counted:
            assert got is not None, "an expired lease within the margin is its holder's again"
            assert got.expires_at == new_expiry
            self.leases[holder] = got.expires_at
        elif len(counted) < limit:
            assert got is not None, f"{len(counted)} counted < limit {limit} but refused"
            assert got.expires_at == new_expiry
            self.leases[holder] = got.expires_at
        else:
            assert got is None, f"admitted beyond limit {limit} with {sorted(counted)} counted"

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A second copy of the same holder (a replayed or superseded invocation)."""
        holder = data.draw(st.sampled_from(sorted(self.live())))
        twin = DynamoDBSemaphore(self.table, self.client, clock=self.clock)
        got = twin.try_acquire(self.key, holder, 1, ttl_seconds=1)
        assert got is not None and got.expires_at == self.leases[holder]

    @rule(holder=HOLDERS)
    def release(self, holder: str) -> None:
        was_live = holder in self.live()
        assert self.sem.release(self.key, holder) is was_live
        # Releasing an expired lease may also clean up other expired items, so the model's
        # expired entries are an upper bound on what the store still holds.
        self.leases.pop(holder, None)

    @rule(seconds=st.integers(1, 20))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def reclaim(self) -> None:
        reclaimable = set(self.leases) - set(self.counted())
        freed = self.sem.reclaim_expired(self.key)
        assert 0 <= freed <= len(reclaimable)
        self.leases = self.counted()

    @invariant()
    def store_matches_model(self) -> None:
        holders = self.sem.holders(self.key)
        assert {h.holder: h.expires_at for h in holders} == self.live()
        counter = self.sem.slot_count(self.key).count
        row = self.sem.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": self.key}, "sk": {"S": META_SK}},
            ConsistentRead=True,
        ).get("Item", {})
        items = sum(1 for name in row if name.startswith(LEASE_PREFIX))
        assert counter == items >= len(holders) >= 0


@pytest.mark.timeout(600)
def test_store_matches_model(semaphore: DynamoDBSemaphore) -> None:
    SemaphoreModel.client = semaphore.client
    SemaphoreModel.table = semaphore.table_name
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        SemaphoreModel,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
