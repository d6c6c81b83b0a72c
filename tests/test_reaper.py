"""The reaper against DynamoDB Local, with Lambda stubbed by botocore's Stubber.

The Stubber is strict: a lookup that was not queued fails the test, and a queued one left unused
fails ``assert_no_pending_responses``. So these tests also prove that expired and ARN-less leases
are never looked up, and that each execution is looked up once per run however many leases it
holds.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from durable_semaphore import (
    ContentionError,
    DynamoDBLimiter,
    DynamoDBSemaphore,
    TableNotFoundError,
)
from durable_semaphore import reaper as reaper_module
from durable_semaphore.reaper import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    Reaper,
    add_cli_arguments,
    handler,
    run_cli,
)
from durable_semaphore.store import GRANTED, HOLDER_PREFIX, PK, QUEUED, SK, ReleaseResult
from durable_semaphore.wake import LambdaCallbackWaker, WakeOutcome
from tests.conftest import FakeClock

REGION = "us-east-1"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:example"


def execution_arn(name: str, region: str = REGION) -> str:
    return (
        f"arn:aws:lambda:{region}:123456789012:function:example:$LATEST"
        f"/durable-execution/{name}/0f1e2d3c-{name}"
    )


def table_of(sem: DynamoDBSemaphore) -> DynamoDBLimiter:
    """The reaper's facade on ``sem``'s table: a limiter without a name (it is table-wide)."""
    return DynamoDBLimiter(semaphore=sem, waker=None)


def key_of(arn: str, map_op: str = "map1") -> str:
    """The per-operation scope key the SDK integration uses."""
    return f"{arn}#{map_op}"


def holder_of(arn: str, branch: int, map_op: str = "map1") -> str:
    return f"{arn}#{map_op}#branch{branch}"


def acquire(
    sem: DynamoDBSemaphore,
    arn: str | None,
    branch: int,
    *,
    key: str | None = None,
    limit: int = 100,
    ttl: float = 3600,
) -> tuple[str, str]:
    base = arn if arn is not None else "no-arn"
    k = key if key is not None else key_of(base)
    h = holder_of(base, branch)
    lease = sem.try_acquire(k, h, limit, ttl, execution_arn=arn)
    assert lease is not None
    return k, h


def enqueue(
    sem: DynamoDBSemaphore,
    arn: str | None,
    branch: int,
    *,
    key: str,
    limit: int = 1,
    callback_id: str | None = None,
    queue_ttl: float = 3600,
) -> str:
    """Queue a branch behind a full key (as a waiting SDK branch does); returns its holder."""
    h = holder_of(arn if arn is not None else "no-arn", branch)
    got = sem.acquire(
        key,
        h,
        limit,
        execution_arn=arn,
        callback_id=callback_id,
        queue_ttl_seconds=queue_ttl,
    )
    assert got.queued
    return h


class FakeWaker:
    """Records the callback ids it is asked to complete."""

    def __init__(self, outcome: WakeOutcome = WakeOutcome.DELIVERED) -> None:
        self.outcome = outcome
        self.woken: list[str] = []

    def wake(self, callback_id: str, payload: bytes = b"") -> WakeOutcome:
        self.woken.append(callback_id)
        return self.outcome


def live_holders(sem: DynamoDBSemaphore) -> set[str]:
    now = sem.now()
    return {lease.holder for lease in sem.scan_leases() if lease.is_live(now)}


def raw_items(ddb_client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb_client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return sorted(items, key=lambda i: (i[PK]["S"], i[SK]["S"]))


def arns_in_scan_order(sem: DynamoDBSemaphore) -> list[str]:
    """Distinct live-lease ARNs in the order the reaper will meet them (a Scan's order is
    stable for a table; deleting items does not reorder the rest)."""
    now = sem.now()
    seen: list[str] = []
    for lease in sem.scan_leases():
        if lease.is_live(now) and lease.execution_arn and lease.execution_arn not in seen:
            seen.append(lease.execution_arn)
    return seen


class LambdaStub:
    """A real boto3 Lambda client with a Stubber, plus helpers to queue lookups."""

    def __init__(self) -> None:
        self.client = boto3.client("lambda", region_name=REGION)
        self.stubber = Stubber(self.client)

    def status(self, arn: str, status: str) -> None:
        self.stubber.add_response(
            "get_durable_execution",
            {
                "DurableExecutionArn": arn,
                "DurableExecutionName": arn.split("/")[-2],
                "FunctionArn": FUNCTION_ARN,
                "StartTimestamp": datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC),
                "Status": status,
            },
            {"DurableExecutionArn": arn, "IncludeExecutionData": False},
        )

    def error(self, arn: str, code: str, http_status: int) -> None:
        self.stubber.add_client_error(
            "get_durable_execution",
            service_error_code=code,
            service_message=f"stubbed {code}",
            http_status_code=http_status,
            expected_params={"DurableExecutionArn": arn, "IncludeExecutionData": False},
        )


@pytest.fixture
def lam() -> Iterator[LambdaStub]:
    stub = LambdaStub()
    with stub.stubber:
        yield stub
        stub.stubber.assert_no_pending_responses()


@pytest.fixture
def sem(make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock) -> DynamoDBSemaphore:
    return make_semaphore(clock=clock)


# ------------------------------------------------------------------------- status decisions


@pytest.mark.parametrize("status", sorted(LIVE_STATUSES))
def test_live_execution_keeps_its_leases(
    sem: DynamoDBSemaphore, lam: LambdaStub, status: str
) -> None:
    arn = execution_arn("live")
    key, h0 = acquire(sem, arn, 0)
    _, h1 = acquire(sem, arn, 1)
    lam.status(arn, status)  # queued once: two leases, one lookup

    report = Reaper(table_of(sem), lam.client).reap()

    assert live_holders(sem) == {h0, h1}
    assert sem.slot_count(key).count == 2
    assert (report.scanned, report.kept_running, report.released_terminal) == (2, 2, 0)
    assert (report.executions_checked, report.executions_live) == (1, 1)


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_terminal_execution_loses_its_leases(
    sem: DynamoDBSemaphore, lam: LambdaStub, status: str
) -> None:
    dead, alive = execution_arn("dead"), execution_arn("alive")
    shared = "shared-limit"  # a named limiter: both executions lease under one key
    acquire(sem, dead, 0, key=shared)
    acquire(sem, dead, 1, key=shared)
    _, kept = acquire(sem, alive, 0, key=shared)
    for arn in arns_in_scan_order(sem):
        lam.status(arn, status if arn == dead else "RUNNING")

    report = Reaper(table_of(sem), lam.client).reap()

    assert live_holders(sem) == {kept}
    assert sem.slot_count(shared).count == 1  # the counter gave back exactly the 2 slots
    assert report.released_terminal == 2
    assert report.kept_running == 1
    assert report.statuses == {status: 1, "RUNNING": 1}
    # the freed slots are usable again: limit 3 admits two new holders
    assert sem.try_acquire(shared, "new-1", 3) is not None
    assert sem.try_acquire(shared, "new-2", 3) is not None
    assert sem.try_acquire(shared, "new-3", 3) is None


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        ("TooManyRequestsException", 429),
        ("ServiceException", 500),
        ("AccessDeniedException", 403),
    ],
)
def test_failed_lookup_keeps_the_lease(
    sem: DynamoDBSemaphore, lam: LambdaStub, code: str, http_status: int
) -> None:
    arn = execution_arn("throttled")
    _, holder = acquire(sem, arn, 0)
    acquire(sem, arn, 1)
    lam.error(arn, code, http_status)  # once: the failure is cached for this run

    report = Reaper(table_of(sem), lam.client).reap()

    assert len(live_holders(sem)) == 2 and holder in live_holders(sem)
    assert report.kept_error == 2
    assert report.errors == 1
    assert report.released_terminal == 0


@pytest.mark.parametrize("status", ["DELETING", "SOME_FUTURE_STATUS", ""])
def test_unknown_status_keeps_the_lease(
    sem: DynamoDBSemaphore, lam: LambdaStub, status: str
) -> None:
    arn = execution_arn("odd")
    _, holder = acquire(sem, arn, 0)
    lam.status(arn, status)

    report = Reaper(table_of(sem), lam.client).reap()

    assert live_holders(sem) == {holder}
    assert report.kept_unknown == 1
    assert report.released_terminal == 0


def test_not_found_keeps_the_lease_by_default(sem: DynamoDBSemaphore, lam: LambdaStub) -> None:
    arn = execution_arn("gone")
    _, holder = acquire(sem, arn, 0)
    lam.error(arn, "ResourceNotFoundException", 404)

    report = Reaper(table_of(sem), lam.client).reap()

    assert live_holders(sem) == {holder}
    assert report.kept_unknown == 1
    assert report.errors == 0  # not an error: a definite answer we choose not to act on


def test_not_found_releases_when_opted_in_in_the_same_region(
    sem: DynamoDBSemaphore, lam: LambdaStub
) -> None:
    here, elsewhere = execution_arn("gone"), execution_arn("gone-eu", region="eu-west-1")
    acquire(sem, here, 0)
    _, foreign = acquire(sem, elsewhere, 0)
    for arn in arns_in_scan_order(sem):
        lam.error(arn, "ResourceNotFoundException", 404)

    report = Reaper(table_of(sem), lam.client, release_not_found=True).reap()

    # "not found" in us-east-1 says nothing about an execution in eu-west-1
    assert live_holders(sem) == {foreign}
    assert report.released_terminal == 1
    assert report.kept_unknown == 1


def test_a_failing_release_is_counted_and_the_sweep_goes_on(
    sem: DynamoDBSemaphore, lam: LambdaStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = execution_arn("done")
    _, stuck = acquire(sem, arn, 0)
    acquire(sem, arn, 1)
    acquire(sem, arn, 2)
    lam.status(arn, "SUCCEEDED")
    real_release = sem.release_slot

    def flaky_release(key: str, holder: str, **kwargs: Any) -> ReleaseResult:
        if holder == stuck:
            raise ContentionError("lost the races")
        return real_release(key, holder, **kwargs)

    monkeypatch.setattr(sem, "release_slot", flaky_release)
    report = Reaper(table_of(sem), lam.client).reap()

    assert live_holders(sem) == {stuck}
    assert (report.released_terminal, report.errors) == (2, 1)


# ------------------------------------------------------------------------- expiry


def test_expired_leases_are_reclaimed_without_lookups(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock
) -> None:
    arn = execution_arn("slow")
    key, _ = acquire(sem, arn, 0, ttl=10)
    acquire(sem, arn, 1, ttl=10)
    _, survivor = acquire(sem, arn, 2, ttl=1000)
    clock.advance(60)
    assert sem.slot_count(key).count == 3  # the counter still includes the expired two
    lam.status(arn, "RUNNING")  # only the survivor is looked up, though its execution runs

    report = Reaper(table_of(sem), lam.client).reap()

    assert report.released_expired == 2
    assert report.kept_running == 1
    assert sem.slot_count(key).count == 1
    assert [lease.holder for lease in sem.scan_leases()] == [survivor]  # items deleted too


def test_leases_without_execution_arn_only_expire(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock
) -> None:
    key, holder = acquire(sem, None, 0, ttl=100)

    first = Reaper(table_of(sem), lam.client).reap()  # any lookup would fail: nothing is queued
    assert first.kept_no_arn == 1
    assert live_holders(sem) == {holder}

    clock.advance(101)
    within_margin = Reaper(table_of(sem), lam.client).reap()  # expired, but not by the skew margin
    assert (within_margin.released_expired, within_margin.kept_no_arn) == (0, 1)
    clock.advance(sem.clock_skew_seconds)
    second = Reaper(table_of(sem), lam.client).reap()
    assert second.released_expired == 1
    assert list(sem.scan_leases()) == []
    assert sem.slot_count(key).count == 0


# ------------------------------------------------------------------------- pagination


def test_many_leases_across_scan_pages_and_executions(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock, ddb_client: Any
) -> None:
    statuses = ["RUNNING", "SUCCEEDED", "PAUSED", "FAILED", "TIMED_OUT", "STOPPED"]
    arns = {execution_arn(f"run{i}"): s for i, s in enumerate(statuses)}
    expected_kept: set[str] = set()
    for arn, status in arns.items():
        for branch in range(9):
            _, holder = acquire(sem, arn, branch, key=key_of(arn, f"map{branch % 3}"))
            if status in LIVE_STATUSES:
                expected_kept.add(holder)
    for branch in range(5):  # plus expired leases scattered among them
        acquire(sem, None, 100 + branch, key=f"expiring-{branch}", ttl=5)
    clock.advance(6 + sem.clock_skew_seconds)
    for arn in arns_in_scan_order(sem):
        lam.status(arn, arns[arn])

    scans: list[int] = []
    ddb_client.meta.events.register(
        "after-call.dynamodb.Scan", lambda parsed, **_: scans.append(parsed["ScannedCount"])
    )
    try:
        report = Reaper(table_of(sem), lam.client).reap(page_size=7)
    finally:
        ddb_client.meta.events.unregister("after-call.dynamodb.Scan")

    # 23 counter items (18 map keys and 5 expiring ones) hold the 59 leases, 7 items a page.
    assert len(scans) >= 4
    assert max(scans) <= 7
    assert report.scanned == 59
    assert report.executions_checked == 6
    assert report.released_terminal == 4 * 9
    assert report.kept_running == 2 * 9
    assert report.released_expired == 5
    assert live_holders(sem) == expected_kept
    assert {lease.holder for lease in sem.scan_leases()} == expected_kept
    for arn, status in arns.items():
        for m in range(3):
            want = 3 if status in LIVE_STATUSES else 0
            assert sem.slot_count(key_of(arn, f"map{m}")).count == want


# ------------------------------------------------------------------------- dry run


def test_dry_run_writes_nothing_and_reports_what_a_run_would_do(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock, ddb_client: Any
) -> None:
    done, running = execution_arn("done"), execution_arn("running")
    acquire(sem, done, 0)
    acquire(sem, done, 1)
    acquire(sem, running, 0)
    acquire(sem, None, 0, ttl=5)
    clock.advance(6 + sem.clock_skew_seconds)
    order = arns_in_scan_order(sem)
    for _ in range(2):  # one dry run, then a real one
        for arn in order:
            lam.status(arn, "SUCCEEDED" if arn == done else "RUNNING")
    before = raw_items(ddb_client, sem.table_name)

    dry = Reaper(table_of(sem), lam.client).reap(dry_run=True)

    assert raw_items(ddb_client, sem.table_name) == before
    assert dry.dry_run
    assert (dry.released_terminal, dry.released_expired, dry.kept_running) == (2, 1, 1)

    real = Reaper(table_of(sem), lam.client).reap()
    assert not real.dry_run
    assert (real.released_terminal, real.released_expired, real.kept_running) == (2, 1, 1)
    assert raw_items(ddb_client, sem.table_name) != before
    assert [lease.execution_arn for lease in sem.scan_leases()] == [running]


# ------------------------------------------------------------------------- the wait queue


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_waiters_of_a_terminal_execution_leave_the_queue_and_live_ones_keep_their_place(
    sem: DynamoDBSemaphore, lam: LambdaStub, ddb_client: Any, status: str
) -> None:
    dead, alive = execution_arn("dead"), execution_arn("alive")
    shared = "shared-limit"
    _, holding = acquire(sem, alive, 0, key=shared, limit=1)
    early = enqueue(sem, alive, 1, key=shared)
    enqueue(sem, dead, 0, key=shared)
    enqueue(sem, dead, 1, key=shared)
    late = enqueue(sem, alive, 2, key=shared)
    order = arns_in_scan_order(sem)
    for _ in range(2):  # one dry run, then a real one; one lookup per execution each
        for arn in order:
            lam.status(arn, status if arn == dead else "RUNNING")
    before = raw_items(ddb_client, sem.table_name)

    dry = Reaper(table_of(sem), lam.client).reap(dry_run=True)
    assert raw_items(ddb_client, sem.table_name) == before
    assert (dry.waiters_scanned, dry.waiters_removed, dry.waiters_kept) == (4, 2, 2)

    report = Reaper(table_of(sem), lam.client).reap()

    assert [w.holder for w in sem.waiters(shared)] == [early, late]  # order kept
    assert sorted((e.holder, e.state) for e in sem.entries(shared)) == sorted(
        [(holding, "held"), (early, QUEUED), (late, QUEUED)]
    )
    assert (sem.slot_count(shared).count, sem.slot_count(shared).waiters) == (1, 2)
    assert (report.waiters_scanned, report.waiters_removed, report.waiters_kept) == (4, 2, 2)
    # Queue markers are not leases: none counted as released, scanned or kept.
    assert (report.scanned, report.kept_running, report.released_terminal) == (1, 1, 0)
    assert (report.slots_handed_over, report.orphan_queue_entries, report.errors) == (0, 0, 0)
    assert report.executions_checked == 2


def test_a_terminal_lease_goes_to_the_oldest_waiter_who_is_woken(
    sem: DynamoDBSemaphore, lam: LambdaStub
) -> None:
    dead, alive = execution_arn("dead"), execution_arn("alive")
    shared = "shared-limit"
    acquire(sem, dead, 0, key=shared, limit=1)
    first = enqueue(sem, alive, 0, key=shared, callback_id="cb-first")
    second = enqueue(sem, alive, 1, key=shared, callback_id="cb-second")
    for arn in arns_in_scan_order(sem):
        lam.status(arn, "FAILED" if arn == dead else "RUNNING")
    waker = FakeWaker()

    report = Reaper(table_of(sem), lam.client, waker=waker).reap()

    assert waker.woken == ["cb-first"]
    # The slot moved from the dead execution to the oldest waiter; it was never free.
    assert [(h.holder, h.state) for h in sem.holders(shared)] == [(first, GRANTED)]
    assert [w.holder for w in sem.waiters(shared)] == [second]
    assert sem.slot_count(shared).count == 1
    assert (report.released_terminal, report.slots_handed_over, report.waiters_woken) == (1, 1, 1)
    assert (report.waiters_kept, report.wakes_missed) == (2, 0)
    assert sem.acquire(shared, first, 1).held  # the woken waiter finds the slot its own


@pytest.mark.parametrize("outcome", [None, WakeOutcome.GONE, WakeOutcome.FAILED])
def test_a_hand_off_without_a_wake_up_still_keeps_the_slot_for_the_waiter(
    sem: DynamoDBSemaphore, lam: LambdaStub, outcome: WakeOutcome | None
) -> None:
    dead, alive = execution_arn("dead"), execution_arn("alive")
    acquire(sem, dead, 0, key="k", limit=1)
    waiter = enqueue(sem, alive, 0, key="k", callback_id="cb")
    for arn in arns_in_scan_order(sem):
        lam.status(arn, "STOPPED" if arn == dead else "RUNNING")
    waker = FakeWaker(outcome) if outcome is not None else None

    report = Reaper(table_of(sem), lam.client, waker=waker).reap()

    assert [(h.holder, h.state) for h in sem.holders("k")] == [(waiter, GRANTED)]
    assert (report.slots_handed_over, report.waiters_woken) == (1, 0)
    assert report.wakes_missed == (0 if waker is None else 1)
    assert report.errors == 0  # a missed wake-up only delays the waiter


def test_an_expired_lease_is_reclaimed_for_a_waiter_who_is_woken(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock
) -> None:
    acquire(sem, None, 0, key="k", limit=1, ttl=10)
    waiter = enqueue(sem, None, 1, key="k", callback_id="cb-1")  # no ARN: no lookups
    clock.advance(60)
    waker = FakeWaker()

    report = Reaper(table_of(sem), lam.client, waker=waker).reap()

    assert waker.woken == ["cb-1"]
    assert [(h.holder, h.state) for h in sem.holders("k")] == [(waiter, GRANTED)]
    assert (report.released_expired, report.slots_handed_over, report.waiters_woken) == (1, 1, 1)
    assert sem.waiters("k") == []


def test_expired_waiters_are_reclaimed_on_a_key_without_expired_leases(
    sem: DynamoDBSemaphore, lam: LambdaStub, clock: FakeClock, ddb_client: Any
) -> None:
    _, holding = acquire(sem, None, 0, key="k", limit=1)
    enqueue(sem, None, 1, key="k", queue_ttl=10)  # stops checking in
    clock.advance(60)
    before = raw_items(ddb_client, sem.table_name)

    dry = Reaper(table_of(sem), lam.client).reap(dry_run=True)
    assert raw_items(ddb_client, sem.table_name) == before
    assert (dry.waiters_expired, dry.keys_reclaimed, dry.released_expired) == (1, 1, 0)

    report = Reaper(table_of(sem), lam.client).reap()

    assert (report.waiters_expired, report.keys_reclaimed, report.released_expired) == (1, 1, 0)
    assert (report.kept_no_arn, report.waiters_kept, report.errors) == (1, 0, 0)
    assert sem.waiters("k") == []  # the queue entry went with its marker
    assert [e.holder for e in sem.entries("k")] == [holding]
    assert (sem.slot_count("k").count, sem.slot_count("k").waiters) == (1, 0)


def test_orphan_queue_entries_are_counted_and_left_alone(
    sem: DynamoDBSemaphore, lam: LambdaStub, ddb_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    acquire(sem, None, 0, key="k", limit=1)
    orphan = enqueue(sem, None, 1, key="k")
    kept = enqueue(sem, None, 2, key="k")
    # DynamoDB's TTL sweeper deletes markers (they carry the TTL attribute), never entries.
    ddb_client.delete_item(
        TableName=sem.table_name, Key={PK: {"S": "k"}, SK: {"S": HOLDER_PREFIX + orphan}}
    )
    real_scan = sem.scan_leases
    newcomer: list[str] = []

    def scan_then_someone_joins(**kwargs: Any) -> Iterator[Any]:
        yield from real_scan(**kwargs)
        newcomer.append(enqueue(sem, None, 3, key="k"))  # joins after the lease scan

    monkeypatch.setattr(sem, "scan_leases", scan_then_someone_joins)

    report = Reaper(table_of(sem), lam.client).reap()

    assert report.orphan_queue_entries == 1  # the newcomer is not mistaken for one
    assert (report.waiters_scanned, report.waiters_kept, report.errors) == (1, 1, 0)
    assert [w.holder for w in sem.waiters("k")] == [orphan, kept, *newcomer]


# ------------------------------------------------------------------------- entry points


def test_lambda_handler_reads_the_table_from_the_environment(
    semaphore: DynamoDBSemaphore,
    ddb_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    monkeypatch.setenv("REAPER_METRICS_NAMESPACE", "TestNs")
    acquire(semaphore, None, 0)
    acquire(semaphore, None, 1)

    result = handler({"dry_run": True}, None)

    assert result["dry_run"] is True
    assert result["scanned"] == 2
    assert result["kept_no_arn"] == 2
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf, "no embedded-metric-format line was printed"
    assert emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TestNs"
    assert emf[-1]["Scanned"] == [2.0] and emf[-1]["Errors"] == [0.0]


def test_lambda_handler_wakes_waiters_through_callbacks_when_configured(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    built: list[Reaper] = []

    class Recording(Reaper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(reaper_module, "Reaper", Recording)
    monkeypatch.setenv("DURABLE_SEMAPHORE_WAKER", "lambda")
    handler({"dry_run": True}, None)
    monkeypatch.delenv("DURABLE_SEMAPHORE_WAKER")
    handler({"dry_run": True}, None)

    with_waker, without = built
    assert isinstance(with_waker.waker, LambdaCallbackWaker)
    assert with_waker.waker.client is with_waker.lambda_client  # one client for both
    assert without.waker is None


def test_cli_reap_on_dynamodb_local(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    acquire(semaphore, None, 0)
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            *("--table", semaphore.table_name, "--endpoint-url", ddb_endpoint),
            *("--region", REGION, "--json", "--page-size", "5"),
        ]
    )

    assert run_cli(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["scanned"], report["kept_no_arn"], report["errors"]) == (1, 1, 0)


def test_cli_raises_a_missing_table_for_the_cli_to_map(ddb_endpoint: str) -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--table", "no-such-table", "--endpoint-url", ddb_endpoint])

    with pytest.raises(TableNotFoundError) as exc:
        run_cli(args)
    assert exc.value.table_name == "no-such-table"
