"""The chaos suite on DynamoDB Local: faults, a restart, crashes, skewed clocks, stale owners.

Each multi-process scenario is judged by the independent observer (``observer.py``), never by
the limiter, and each has a control that must fail under the same observer: the same workload
on a store that ignores the limit, the skew scenario at a margin of 0, and the queue-only
liveness scenario with waiters that do not look at the key. The runs are short here (CI runs
this folder with the rest of the suite); ``make soak`` runs the long version.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store.shards import all_shards
from tests.chaos.faults import FAULT_KINDS, FaultInjector, FaultRates
from tests.chaos.invariants import end_state, problems
from tests.chaos.observer import judge
from tests.chaos.run import (
    FREE_SLOT_SLACK,
    ChaosPlan,
    ChaosReport,
    RestartableDynamoDB,
    free_slot_bound,
    queue_liveness_plan,
    run_chaos,
)
from tests.chaos.workers import Workload
from tests.conftest import FakeClock

pytestmark = pytest.mark.chaos

FAULTS = FaultRates(throttle=0.03, connection=0.03, lost=0.03, surfaced=0.02)
WORKLOAD = Workload(
    keys=("alpha", "beta"),
    limit=2,
    ttl_seconds=10,
    clock_skew_seconds=2,
    hold=(0.01, 0.03),
    faults=FAULTS,
    queue_ttl_seconds=15,
)
SKEW = 30.0


def _run(
    plan: ChaosPlan, chaos_db: RestartableDynamoDB, table: str, logs: Path, label: str
) -> ChaosReport:
    report = run_chaos(plan, chaos_db.endpoint, table, logs, chaos_db)
    print(f"{label}: {report.summary()}")
    return report


def _end_problems(client: Any, table: str, workload: Workload, offset: float = 0.0) -> list[str]:
    """The end-of-run invariant on every stored key (each shard with its share)."""
    found: list[str] = []
    stored = [
        shard for key in workload.keys for shard in all_shards(key, workload.limit, workload.shards)
    ]
    for key, limit in stored:
        state = end_state(
            client,
            table,
            key,
            limit,
            beyond=offset + max(workload.ttl_seconds, workload.queue_ttl_seconds),
            clock_skew_seconds=workload.clock_skew_seconds,
        )
        print(state)
        found.extend(problems(state, limit))
    return found


def test_faults_restart_and_crashes_never_over_admit_or_leak(
    chaos_db: RestartableDynamoDB, chaos_client: Any, chaos_table: str, logs: Path
) -> None:
    plan = ChaosPlan(
        workload=WORKLOAD,
        processes=8,
        cycles=20,
        kills=(0.2, 0.5, 0.7),
        self_kills=3,
        replay_share=0.65,  # every third dead worker's lease is left to expire
        restarts=(0.4,),
        seed=9,
    )
    # Data must survive the restart: a lease taken before the run is still there after it.
    survivor = DynamoDBSemaphore(table_name=chaos_table, client=chaos_client)
    before = survivor.try_acquire("survivor", "s", 1, ttl_seconds=3600)
    assert before is not None
    report = _run(plan, chaos_db, chaos_table, logs, "faults, restart, crashes")
    assert [lease.token for lease in survivor.holders("survivor")] == [before.token]
    assert survivor.release("survivor", "s", token=before.token) is True
    assert report.errors == []
    # The run did what it says, or its verdict would mean nothing.
    assert all(report.faults[kind] > 0 for kind in FAULT_KINDS), report.faults
    assert report.restarts == 1
    assert report.kills == 3 and report.self_kills == 3
    assert report.verdict.open_at_kill >= 3  # at least the self-kills died holding a lease
    assert report.not_replayed >= 1
    # Every other dead worker's holder was taken over by a fresh process and released...
    assert report.replays == report.dead_holding - report.not_replayed
    assert report.replayed_live > 0, "no replay met a live lease: the check proved nothing"
    # ... and a live lease came back to it as it was, token and all.
    assert report.replayed_same_token == report.replayed_live
    assert report.refused > 0, "the limit was never reached"
    assert report.renew_lost == 0  # a renew with the token never missed a live lease
    # The verdict: never more than the limit, and the limit was reached.
    assert all(peak <= WORKLOAD.limit for peak in report.verdict.peaks.values())
    assert report.peak == WORKLOAD.limit
    # Faults off: counter = leases, nothing leaked, exactly `limit` get in again.
    assert _end_problems(chaos_client, chaos_table, WORKLOAD) == []


def test_control_an_unconditional_store_is_caught(
    chaos_db: RestartableDynamoDB, chaos_table: str, logs: Path
) -> None:
    """The same workload and observer on a store that just puts items must over-admit."""
    plan = ChaosPlan(workload=replace(WORKLOAD, broken=True), processes=8, cycles=15, seed=9)
    report = _run(plan, chaos_db, chaos_table, logs, "canary")
    assert report.errors == []
    assert report.peak > WORKLOAD.limit, "the observer missed a store that ignores the limit"


@pytest.mark.parametrize(
    ("margin", "over_admits"), [(SKEW, False), (0.0, True)], ids=["margin-30", "control-0"]
)
def test_clock_skew_within_the_margin_never_over_admits(
    chaos_db: RestartableDynamoDB,
    chaos_client: Any,
    chaos_table: str,
    logs: Path,
    margin: float,
    over_admits: bool,
) -> None:
    """Half the clients run 30 s ahead, with leases of 5 s: to them every lease of the others
    looks long expired. With a margin >= the skew they still wait; at 0 they reclaim leases
    that are alive, and the observer sees it."""
    workload = Workload(
        keys=("skew",),
        limit=2,
        ttl_seconds=5,
        clock_skew_seconds=margin,
        # Long against a steal (a refusal, a reconcile, an acquire), so that the observer sees
        # the victim still inside when the thief enters.
        hold=(0.2, 0.4),
        queue_ttl_seconds=120,
    )
    plan = ChaosPlan(workload=workload, processes=8, cycles=5, clock_offsets=(0.0, SKEW))
    report = _run(plan, chaos_db, chaos_table, logs, f"skew {SKEW:g} s, margin {margin:g} s")
    assert report.errors == []
    assert report.refused > 0, "the limit was never reached"
    if over_admits:
        assert report.peak > workload.limit, "at margin 0 a fast clock should steal live leases"
        return
    assert report.peak == workload.limit
    assert report.release_false == 0  # nobody's live lease was taken from under it
    assert _end_problems(chaos_client, chaos_table, workload, offset=SKEW) == []


@pytest.mark.parametrize("unsplit", [False, True], ids=["sharded", "control-unsplit"])
def test_a_sharded_key_never_admits_more_than_its_limit_in_total(
    chaos_db: RestartableDynamoDB,
    chaos_client: Any,
    chaos_table: str,
    logs: Path,
    unsplit: bool,
) -> None:
    """One key, limit 6 over 3 shards (2 slots each), 12 processes with faults: the observer
    judges the key as a whole. The control gives every shard the whole limit, as a sharding
    that forgot to split it would, and must be caught over-admitting."""
    workload = Workload(
        keys=("hot",),
        limit=6,
        shards=3,
        unsplit_shards=unsplit,
        ttl_seconds=10,
        clock_skew_seconds=2,
        # The control holds longer, so that its over-admission shows whatever the machine's
        # speed (12 processes over shards that each let 6 in).
        hold=(0.1, 0.2) if unsplit else (0.02, 0.05),
        faults=FAULTS,
        queue_ttl_seconds=15,
    )
    plan = ChaosPlan(workload=workload, processes=12, cycles=12, seed=5)
    label = "sharded, control: unsplit" if unsplit else "sharded"
    report = _run(plan, chaos_db, chaos_table, logs, label)
    assert report.errors == []
    if unsplit:
        assert report.peak > workload.limit, "the observer missed shards that ignore the total"
        return
    assert report.refused > 0, "the limit was never reached"
    assert report.peak <= workload.limit
    # Several shards admitted side by side (one shard alone holds 2). Not always all 6: a
    # holder goes to the shard its id hashes to, so one shard can be full while another has
    # room (the price of sharding, docs/store.md).
    assert report.peak > workload.limit // workload.shards
    assert _end_problems(chaos_client, chaos_table, workload) == []


def test_the_free_slot_metric_on_a_made_up_log() -> None:
    """The metric alone, on logs whose answer is known: a killed holder's lease counts until
    its end, a killed waiter waits until its kill, a timed-out one until its timeout."""
    a = [_ev("try", 0, "a"), _ev("in", 0, "a", end=10), _ev("out", 5, "a")]
    b = [_ev("try", 1, "b"), _ev("in", 1, "b", end=4), {"ev": "killed", "t": 4.5}]
    c = [_ev("try", 2, "c"), _ev("in", 6, "c", end=20), _ev("out", 9, "c")]
    d = [_ev("try", 3, "d"), {"ev": "killed", "t": 3.5}]
    e = [_ev("try", 7, "e"), _ev("timeout", 8, "e")]
    verdict = judge([a, b, c, d, e], limit=2)
    # From b's lease end (4) until c gets in (6); e's wait (7 to 8) is shorter.
    assert verdict.free_while_waiting == {"k": (4, 6)}
    assert verdict.longest_free_slot == 2 and verdict.longest_wait == 4
    assert judge([a, b, c, d, e]).free_while_waiting == {}  # no limit, no metric


def _ev(kind: str, t: float, holder: str, **fields: Any) -> dict[str, Any]:
    return {"ev": kind, "t": t, "k": "k", "h": holder, **fields}


@pytest.mark.parametrize("blind", [False, True], ids=["queue-serves-itself", "control-blind"])
def test_after_kills_only_queued_waiters_bring_dead_slots_back(
    chaos_db: RestartableDynamoDB,
    chaos_client: Any,
    chaos_table: str,
    logs: Path,
    blind: bool,
) -> None:
    """Limit 2, leases of 3 s, margin 1 s; every worker waits in the queue, two holders and
    two waiters are SIGKILLed; no poller, no newcomer that reconciles, no replay, no reaper.
    The observer's longest stretch with someone waiting and a slot free must stay within the
    bound. The control (check-ins that do not look at the key) must miss it: its queue loses
    the dead slots for good, and its waits give up at their deadline."""
    plan = queue_liveness_plan(4, blind=blind, seed=3)
    workload = plan.workload
    bound = free_slot_bound(workload) + FREE_SLOT_SLACK
    label = "queue only, blind waiters" if blind else "queue only"
    report = _run(plan, chaos_db, chaos_table, logs, label)
    print(f"{label}: longest free slot {report.longest_free_slot:.2f} s vs bound {bound:.2f} s")
    assert report.errors == []
    assert report.peak <= workload.limit
    if blind:
        assert report.longest_free_slot > bound, "the metric missed slots lost for good"
        assert report.timeouts > 0  # the stuck queue gave up at its deadline: the run ended
        return
    # The run did what it says: holders and waiters died, and the slots they cost showed.
    assert report.kills == 4
    assert report.killed_holding >= 1 and report.killed_waiting >= 1
    assert report.refused > 0, "nobody ever waited"
    assert report.timeouts == 0
    assert report.longest_free_slot > workload.clock_skew_seconds, "no dead slot was seen"
    assert report.longest_free_slot <= bound
    assert report.peak == workload.limit
    assert _end_problems(chaos_client, chaos_table, workload) == []


def test_a_stale_owner_never_frees_a_newer_lease_of_its_holder_id(
    chaos_client: Any, chaos_table: str
) -> None:
    """A's lease (ttl 1) expires and B takes the same holder id (ttl 60). A's late release
    with its token must not free B's lease, and C stays out at limit 1. A and B talk through
    clients that lose every write's answer once, so each call is also replayed."""
    # An hour ahead: DynamoDB Local's TTL sweeper works on the real clock and would otherwise
    # delete A's expired lease behind the counter's back (then B waits out the skew margin).
    clock = FakeClock(start=float(int(time.time())) + 3600)
    injectors: list[FaultInjector] = []

    def lossy_semaphore() -> DynamoDBSemaphore:
        client = _fresh_client(chaos_client)
        injectors.append(FaultInjector(client, FaultRates(lost=1.0), first_attempts_only=True))
        return DynamoDBSemaphore(table_name=chaos_table, client=client, clock=clock)

    a, b = lossy_semaphore(), lossy_semaphore()
    c = DynamoDBSemaphore(table_name=chaos_table, client=chaos_client, clock=clock)
    lease_a = a.try_acquire("k", "h", 1, ttl_seconds=1)
    assert lease_a is not None and lease_a.token
    clock.advance(2)  # A's lease has expired (on every clock)
    lease_b = b.try_acquire("k", "h", 1, ttl_seconds=60)
    assert lease_b is not None and lease_b.token not in (None, lease_a.token)

    assert a.release("k", "h", token=lease_a.token) is False
    assert a.renew("k", "h", 60, token=lease_a.token) is None
    assert [lease.token for lease in c.holders("k")] == [lease_b.token]
    assert c.try_acquire("k", "c", 1) is None
    assert b.renew("k", "h", 60, token=lease_b.token) is not None

    # Control: the admin release (no token) does free whatever the holder id holds, which is
    # what A's release did before fencing.
    assert a.release("k", "h") is True
    assert c.try_acquire("k", "c", 1) is not None
    assert [i.counts["lost"] > 0 for i in injectors] == [True, True]


def _fresh_client(like: Any) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=like.meta.endpoint_url,
        region_name="us-east-1",
        config=like.meta.config,
    )


def test_acquire_never_returns_a_lease_already_expired_on_its_own_clock(
    chaos_client: Any, chaos_table: str
) -> None:
    """Seen in the restart scenario: an acquire sent just before DynamoDB Local died was
    retried by botocore until the server was back, 17 s later, and returned a 10 s lease that
    had expired 7 s before the caller got it. Here the request's time in transit is simulated
    by a clock that moves on while it is sent."""
    clock = FakeClock(start=float(int(time.time())) + 3600)
    client = _fresh_client(chaos_client)
    sent: list[str] = []

    def delayed(request: Any = None, **_: Any) -> None:
        if "UpdateItem" in str(request.headers.get("X-Amz-Target", b"")):
            sent.append("UpdateItem")
            if len(sent) == 1:
                clock.advance(15)  # longer than the TTL, as in the run; only the first

    client.meta.events.register("before-send.dynamodb", delayed)
    sem = DynamoDBSemaphore(
        table_name=chaos_table, client=client, clock=clock, clock_skew_seconds=2
    )
    lease = sem.try_acquire("k", "h", 1, ttl_seconds=10)
    # Nobody reclaimed the late lease, so the acquire renews it as a new generation.
    assert lease is not None and lease.is_live(clock.now)
    [stored] = sem.holders("k")
    assert stored.token == lease.token and stored.expires_at == lease.expires_at


def test_a_late_lease_reclaimed_meanwhile_is_competed_for_again(
    chaos_client: Any, chaos_table: str
) -> None:
    """The other outcome of a late answer: while the answer was on its way, another client
    (its clock past the lease's end and the margin) reclaimed the lease. Taking it back by its
    token must fail, and the acquire must compete again, not return the reclaimed lease."""
    clock = FakeClock(start=float(int(time.time())) + 3600)
    client = _fresh_client(chaos_client)
    other = DynamoDBSemaphore(
        table_name=chaos_table,
        client=_fresh_client(chaos_client),
        clock=lambda: clock.now + 60,  # past the 10 s lease and the 2 s margin
        clock_skew_seconds=2,
    )
    seen: dict[str, Any] = {"sent": 0, "reclaimed": 0}

    def delayed(request: Any = None, **_: Any) -> None:
        if "UpdateItem" in str(request.headers.get("X-Amz-Target", b"")):
            seen["sent"] += 1
            if seen["sent"] == 1:
                clock.advance(15)  # only the first answer is late

    def reclaimed_meanwhile(http_response: Any = None, **_: Any) -> None:
        if seen["sent"] == 1 and not seen["reclaimed"]:
            seen["reclaimed"] = other.reclaim_expired("k")
            seen["stale"] = [lease.token for lease in other.holders("k")]

    client.meta.events.register("before-send.dynamodb", delayed)
    client.meta.events.register("after-call.dynamodb.UpdateItem", reclaimed_meanwhile)
    sem = DynamoDBSemaphore(
        table_name=chaos_table, client=client, clock=clock, clock_skew_seconds=2
    )
    lease = sem.try_acquire("k", "h", 1, ttl_seconds=10)
    assert seen["reclaimed"] == 1 and seen["stale"] == []  # the first lease really was taken
    # The late acquire, the refused revive of it (the lease was gone), then a fresh acquire.
    assert seen["sent"] == 3
    assert lease is not None and lease.is_live(clock.now)
    [stored] = sem.holders("k")
    assert stored.token == lease.token
    assert sem.slot_count("k").count == 1
