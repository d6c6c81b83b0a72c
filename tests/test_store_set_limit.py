"""Limits set at run time (``set_limit``) on DynamoDB Local: the override beats the code's
limit at every admission, a raise admits waiters at once, a lowering revokes nobody, a stale
belief is refused by DynamoDB and corrected, and the override outlives the key's idleness.

Every claim has a control that must fail: the same steps without the override, or with the
belief condition taken out of the writes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore, InvalidArgumentError
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.store import MAX_LIMIT, queue_requests, requests
from durable_semaphore.store.overrides import PINNED_LIFE
from durable_semaphore.store.schema import IDLE_GRACE_SECONDS, Meta
from tests.conftest import FakeClock, local_dynamodb_client
from tests.store_helpers import meta_rows, traffic


def _rows(sem: DynamoDBSemaphore) -> list[dict[str, Any]]:
    out = sem.client.scan(TableName=sem.table_name, ConsistentRead=True)
    return list(out["Items"])


def _leases_in_row(sem: DynamoDBSemaphore, key: str) -> int:
    """Leases (held or granted) in ``key``'s counter row, from a scan, not from the store."""
    for row in meta_rows(sem):
        if row["pk"]["S"] == key:
            return sum(1 for name in row if name.startswith("L#"))
    return 0


@pytest.fixture
def other(semaphore: DynamoDBSemaphore, ddb_endpoint: str) -> DynamoDBSemaphore:
    """A second store object with its own client: another process's view of the table."""
    return DynamoDBSemaphore(semaphore.table_name, client=local_dynamodb_client(ddb_endpoint))


@pytest.fixture
def no_belief_condition(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The control: writes no longer carry the override belief, and stores never learn one,
    so every admission counts against the code's limit."""

    def ignore(expr: Any, override: int | None) -> None:
        return None

    monkeypatch.setattr(requests, "believe", ignore)
    monkeypatch.setattr(queue_requests, "believe", ignore)
    monkeypatch.setattr(DynamoDBSemaphore, "_learn", lambda self, key, meta: False)
    monkeypatch.setattr(Meta, "in_force", lambda self, code_limit: code_limit)
    yield


# -- 1. raising ----------------------------------------------------------------------------------


def test_raising_the_limit_admits_the_oldest_waiters_at_once(
    semaphore: DynamoDBSemaphore,
) -> None:
    for holder in ("a", "b"):
        assert semaphore.acquire("k", holder, 2).held
    for holder in ("w1", "w2", "w3"):
        assert semaphore.acquire("k", holder, 2).queued

    grants = semaphore.set_limit("k", 4)

    assert [grant.holder for grant in grants] == ["w1", "w2"]  # FIFO, and only what fits
    assert [w.holder for w in semaphore.waiters("k")] == ["w3"]
    assert _leases_in_row(semaphore, "k") == 4
    # The granted waiters find their slot at their next check; the code still passes 2.
    position = semaphore.waiters("k")[0].seq
    assert semaphore.acquire("k", "w1", 2).held
    assert semaphore.acquire("k", "w3", 2, position=position).queued
    assert semaphore.acquire("k", "newcomer", 2).queued  # nobody passes w3


def test_control_the_override_write_alone_leaves_the_waiters_waiting(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Without the set-limit call serving the queue, the raise admits nobody until a
    release: the grants above come from that call."""
    for holder in ("a", "b"):
        semaphore.acquire("k", holder, 2)
    for holder in ("w1", "w2"):
        semaphore.acquire("k", holder, 2)
    semaphore.io.update(**requests.set_override("k", 4, semaphore.now()))
    assert [w.holder for w in semaphore.waiters("k")] == ["w1", "w2"]
    assert _leases_in_row(semaphore, "k") == 2


def _lowered_with_waiters(sem: DynamoDBSemaphore) -> None:
    sem.set_limit("k", 1)
    assert sem.acquire("k", "a", 3).held
    for holder in ("w1", "w2", "w3"):
        assert sem.acquire("k", holder, 3).queued  # the override (1), not the code's 3


def test_clearing_admits_the_waiters_that_fit_under_the_codes_limit(
    semaphore: DynamoDBSemaphore,
) -> None:
    _lowered_with_waiters(semaphore)
    grants = semaphore.clear_limit("k")  # up to 3, the limit the code last passed
    assert [grant.holder for grant in grants] == ["w1", "w2"]
    assert _leases_in_row(semaphore, "k") == 3
    assert semaphore.read_limit("k").override is None


def test_control_removing_the_override_alone_admits_nobody(semaphore: DynamoDBSemaphore) -> None:
    _lowered_with_waiters(semaphore)
    meta = semaphore._read_meta("k")
    semaphore.io.update(**requests.clear_override("k", meta.version, semaphore.now() + 60))
    assert _leases_in_row(semaphore, "k") == 1
    assert len(semaphore.waiters("k")) == 3


# -- 2. lowering ---------------------------------------------------------------------------------


def _lower_then_drain(sem: DynamoDBSemaphore, *, override: bool) -> list[tuple[str, int, int]]:
    """5 holders at code limit 5, 3 waiters; lower to 2 (or not), then release the holders
    one by one. Returns (event, units held after it, limit in force) per admission, counted
    from the store's results and checked against a scan of the counter row."""
    held = {f"h{i}" for i in range(5)}
    for holder in sorted(held):
        assert sem.acquire("k", holder, 5).held
    for holder in ("w1", "w2", "w3"):
        assert sem.acquire("k", holder, 5).queued
    limit = 5
    if override:
        assert sem.set_limit("k", 2) == ()
        limit = 2
    assert {lease.holder for lease in sem.holders("k")} == held  # nobody revoked
    admissions: list[tuple[str, int, int]] = []
    for holder in [f"h{i}" for i in range(5)] + ["w1", "w2"]:
        result = sem.release_slot("k", holder, waiters_likely=True)
        assert result.released
        held.discard(holder)
        for grant in result.grants:
            held.add(grant.holder)
            admissions.append((grant.holder, len(held), limit))
            assert _leases_in_row(sem, "k") == len(held)
    return admissions


def test_lowering_revokes_nobody_and_admits_only_under_the_new_limit(
    semaphore: DynamoDBSemaphore,
) -> None:
    admissions = _lower_then_drain(semaphore, override=True)
    print(f"\nadmissions (holder, held after, limit): {admissions}")
    # Releases 1 to 3 just free (5 -> 2 held); the 4th leaves 1 held and hands over.
    assert [holder for holder, _, _ in admissions] == ["w1", "w2", "w3"]
    assert all(after <= limit for _, after, limit in admissions)
    assert max(after for _, after, _ in admissions) == 2


def test_control_without_the_override_the_first_release_hands_over(
    semaphore: DynamoDBSemaphore,
) -> None:
    admissions = _lower_then_drain(semaphore, override=False)
    assert admissions[0] == ("w1", 5, 5)
    assert max(after for _, after, _ in admissions) > 2


def test_a_fresh_acquire_is_refused_while_over_the_lowered_limit(
    semaphore: DynamoDBSemaphore,
) -> None:
    for holder in ("a", "b", "c"):
        semaphore.acquire("k", holder, 5)
    semaphore.set_limit("k", 2)
    assert semaphore.try_acquire("k", "d", 5) is None
    semaphore.release("k", "a")
    assert semaphore.try_acquire("k", "d", 5) is None  # 2 held: not under 2 yet
    semaphore.release("k", "b")
    assert semaphore.try_acquire("k", "d", 5) is not None
    assert _leases_in_row(semaphore, "k") == 2


# -- 3. a stale belief ---------------------------------------------------------------------------


def test_a_stale_belief_is_refused_once_and_corrected_without_a_read(
    semaphore: DynamoDBSemaphore, other: DynamoDBSemaphore
) -> None:
    assert other.acquire("k", "warm", 5).held  # other believes: no override
    other.release("k", "warm")
    semaphore.set_limit("k", 2)

    with traffic(other.client) as first:
        assert other.acquire("k", "o1", 5).held
    assert first.calls == {"UpdateItem": 2}  # one refused (stale belief), one admitted
    with traffic(other.client) as steady:
        assert other.acquire("k", "o2", 5).held
        other.renew("k", "o2", 120)
    assert steady.calls == {"UpdateItem": 2}  # one each: no read, no refusal
    assert other.acquire("k", "o3", 5).queued  # 2 held: the override, not 5, rules
    assert _leases_in_row(semaphore, "k") == 2

    semaphore.clear_limit("k")  # serves o3 up to the code's 5
    with traffic(other.client) as after_clear:
        assert other.acquire("k", "o4", 5).held
    assert after_clear.calls == {"UpdateItem": 2}  # refused once more, then the code's 5
    assert _leases_in_row(semaphore, "k") == 4


def test_control_without_the_belief_condition_the_stale_writer_over_admits(
    semaphore: DynamoDBSemaphore, other: DynamoDBSemaphore, no_belief_condition: None
) -> None:
    semaphore.set_limit("k", 2)
    for holder in ("o1", "o2", "o3"):
        assert other.acquire("k", holder, 5).held
    assert _leases_in_row(semaphore, "k") == 3


# -- 4. concurrency ------------------------------------------------------------------------------

CODE_LIMIT = 5
PHASES = ((None, 1.0), (2, 3.0), (8, 1.5))  # (override, seconds): 5 -> 2 -> 8
WORKERS = 9


class _Run:
    """What the workers and the flipper saw, on time.monotonic."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: (asked, began, ended): asked before the holder's first acquire call (a hand-off
        #: admits it at any time after that), began when the call that found its lease
        #: returned, ended before the release was sent.
        self.spans: list[tuple[float, float, float]] = []
        #: (override, set before, set after) per phase.
        self.flips: list[tuple[int | None, float, float]] = []
        self.errors: list[BaseException] = []


def _worker(sem: DynamoDBSemaphore, n: int, run: _Run, stop: float) -> None:
    rng = random.Random(n)
    cycle = 0
    try:
        while time.monotonic() < stop:
            holder, position = f"w{n}-{cycle}", None
            # A waiter may be handed its slot at any time after it first asked.
            asked = time.monotonic()
            while True:
                result = sem.acquire("k", holder, CODE_LIMIT, 30, position=position)
                if result.lease is not None:
                    break
                position = result.position
                time.sleep(0.02)
            began = time.monotonic()
            time.sleep(rng.uniform(0.05, 0.15))
            ended = time.monotonic()
            with run.lock:
                run.spans.append((asked, began, ended))
            sem.release_slot("k", holder, waiters_likely=True)
            cycle += 1
    except BaseException as exc:  # pragma: no cover - reported by the test
        run.errors.append(exc)


def _flipper(sem: DynamoDBSemaphore, run: _Run) -> None:
    for override, seconds in PHASES:
        before = time.monotonic()
        if override is not None:
            sem.set_limit("k", override)
        run.flips.append((override, before, time.monotonic()))
        time.sleep(seconds)


def _run_flipping(make: Callable[[], DynamoDBSemaphore]) -> _Run:
    run = _Run()
    stop = time.monotonic() + sum(seconds for _, seconds in PHASES)
    threads = [
        threading.Thread(target=_worker, args=(make(), n, run, stop)) for n in range(WORKERS)
    ]
    threads.append(threading.Thread(target=_flipper, args=(make(), run)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert run.errors == []
    return run


def _limits_between(run: _Run, start: float, end: float) -> set[int]:
    """Every limit that may have been in force at some instant of [start, end]."""
    found: set[int] = set()
    for n, (override, before, _) in enumerate(run.flips):
        limit = CODE_LIMIT if override is None else override
        begins = before if n > 0 else float("-inf")  # the code's limit, from the start
        following = run.flips[n + 1][2] if n + 1 < len(run.flips) else float("inf")
        if begins <= end and following >= start:
            found.add(limit)
    return found


def _overlap(spans: list[tuple[float, float, float]], at: float) -> list[int]:
    return [i for i, (_, began, ended) in enumerate(spans) if began <= at < ended]


def _judge(run: _Run) -> tuple[int, int]:
    """(the worst excess over the limits any admission may have counted against, the peak
    overlap of holders admitted entirely inside the lowered phase).

    At any instant, the holders in flight were all held when the last of them was admitted,
    so their number is at most the limit in force at some admission among them: at most the
    largest limit possible within their (asked, began) windows.
    """
    excess = 0
    low_peak = 0
    low = run.flips[1]
    low_start, low_end = low[2], run.flips[2][1]
    for _, began, _ in run.spans:
        inside = _overlap(run.spans, began)
        allowed = max(max(_limits_between(run, run.spans[i][0], run.spans[i][1])) for i in inside)
        excess = max(excess, len(inside) - allowed)
    for asked, began, _ in run.spans:
        if low_start <= asked and began <= low_end:
            low_peak = max(low_peak, len(_overlap(run.spans, began)))
    return excess, low_peak


@pytest.fixture
def make(semaphore: DynamoDBSemaphore, ddb_endpoint: str) -> Callable[[], DynamoDBSemaphore]:
    return lambda: DynamoDBSemaphore(
        semaphore.table_name, client=local_dynamodb_client(ddb_endpoint)
    )


def test_flipping_the_limit_under_load_never_admits_past_the_limit_in_force(
    make: Callable[[], DynamoDBSemaphore],
) -> None:
    run = _run_flipping(make)
    excess, low_peak = _judge(run)
    total_peak = max(len(_overlap(run.spans, began)) for _, began, _ in run.spans)
    low_admissions = sum(
        1 for asked, began, _ in run.spans if run.flips[1][2] <= asked and began <= run.flips[2][1]
    )
    print(
        f"\n{len(run.spans)} holds; peak {total_peak}; excess {excess}; "
        f"{low_admissions} admitted in the low phase, peak there {low_peak}"
    )
    assert excess <= 0
    assert low_admissions >= 5 and low_peak <= 2
    assert total_peak >= 7  # the raise to 8 was used: the check meant something


def test_control_ignoring_the_override_is_caught_over_the_lowered_limit(
    make: Callable[[], DynamoDBSemaphore], no_belief_condition: None
) -> None:
    run = _run_flipping(make)
    excess, low_peak = _judge(run)
    print(f"\ncontrol: excess {excess}, peak in the low phase {low_peak}")
    assert low_peak > 2


# -- 5. idleness ---------------------------------------------------------------------------------


def test_an_override_survives_the_key_going_idle_and_clearing_returns_it_to_clean_up(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    sem.set_limit("k", 3)
    sem.acquire("k", "a", 1, ttl_seconds=10)
    sem.acquire("k", "b", 1, ttl_seconds=10)
    sem.release("k", "a")
    clock.advance(100)  # b expired long ago
    sem.reclaim("k")  # removes b's lease; an idle counter would go with it
    assert sem.forget_if_idle("k") is False
    [row] = meta_rows(sem)
    assert row["ol"] == {"N": "3"} and row["count"] == {"N": "0"}
    assert row["expires_at"] == {"N": str(PINNED_LIFE)}  # DynamoDB's TTL never takes it
    assert sem.read_limit("k").override == 3

    assert sem.clear_limit("k") == ()
    [row] = meta_rows(sem)
    assert "ol" not in row and int(row["expires_at"]["N"]) <= clock() + IDLE_GRACE_SECONDS + 1
    assert sem.forget_if_idle("k") is True
    assert _rows(sem) == []


def test_control_an_idle_counter_without_an_override_is_deleted(
    make_semaphore: Callable[..., DynamoDBSemaphore], clock: FakeClock
) -> None:
    sem = make_semaphore(clock)
    sem.acquire("k", "b", 3, ttl_seconds=10)
    clock.advance(100)
    sem.reclaim("k")
    assert _rows(sem) == []


def test_writes_on_a_pinned_counter_never_unpin_it(semaphore: DynamoDBSemaphore) -> None:
    semaphore.set_limit("k", 3)
    semaphore.acquire("k", "a", 1, ttl_seconds=600)
    semaphore.renew("k", "a", 3600)
    semaphore.acquire("k", "b", 1, ttl_seconds=600)
    semaphore.acquire("k", "c", 1, ttl_seconds=600)
    assert semaphore.acquire("k", "w", 1, queue_ttl_seconds=600).queued
    semaphore.release_slot("k", "a", waiters_likely=True)
    [row] = meta_rows(semaphore)
    assert row["expires_at"] == {"N": str(PINNED_LIFE)}


# -- 6. bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "3", None, MAX_LIMIT + 1])
def test_a_bad_limit_is_our_error_and_writes_nothing(
    semaphore: DynamoDBSemaphore, limit: Any
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        semaphore.set_limit("k", limit)
    assert raised.value.name == "limit"
    limiter = DynamoDBLimiter(semaphore=semaphore, waker=None)
    with pytest.raises(InvalidArgumentError):
        limiter.set_limit("k", limit)
    assert _rows(semaphore) == []


@pytest.mark.parametrize("key", ["", None, 7, "x" * 3000])
def test_a_bad_key_is_our_error_and_writes_nothing(semaphore: DynamoDBSemaphore, key: Any) -> None:
    limiter = DynamoDBLimiter(semaphore=semaphore, waker=None)
    for call in (
        lambda: semaphore.set_limit(key, 3),
        lambda: semaphore.clear_limit(key),
        lambda: limiter.set_limit(key, 3),
        lambda: limiter.clear_limit(key),
    ):
        with pytest.raises(InvalidArgumentError) as raised:
            call()
        assert raised.value.name == "key"
    assert _rows(semaphore) == []


# -- sharded limits ------------------------------------------------------------------------------


def test_a_sharded_override_gives_each_shard_its_share(semaphore: DynamoDBSemaphore) -> None:
    limiter = DynamoDBLimiter(semaphore=semaphore, waker=None, shards=3)
    assert limiter.stored_keys("hot", 150) == ["hot#0of3", "hot#1of3", "hot#2of3"]
    limiter.set_limit("hot", 7, code_limit=150)
    shares = {row["pk"]["S"]: int(row["ol"]["N"]) for row in meta_rows(semaphore)}
    assert shares == {"hot#0of3": 3, "hot#1of3": 2, "hot#2of3": 2}
    in_force = limiter.limit_in_force("hot", 150)
    assert (in_force.limit, in_force.source) == (7, "set-limit")
    assert in_force.describe().startswith("7 (set-limit at ")
    # The shards are the code's: a limit that leaves a shard without a slot is refused.
    with pytest.raises(InvalidArgumentError, match="3 shards"):
        limiter.set_limit("hot", 2, code_limit=150)
    assert {row["pk"]["S"]: int(row["ol"]["N"]) for row in meta_rows(semaphore)} == shares
    limiter.clear_limit("hot", code_limit=150)
    assert limiter.limit_in_force("hot", 150) == (150, "code", None)
    assert limiter.limit_in_force("hot", shards=3).limit is None  # nothing admitted yet


def test_the_limiter_wakes_the_waiters_a_raise_admits(semaphore: DynamoDBSemaphore) -> None:
    limiter = DynamoDBLimiter(semaphore=semaphore, waker=None)
    woken: list[str] = []
    limiter.wake = lambda grant, **_: woken.append(grant.holder)  # type: ignore[method-assign]
    limiter.acquire("k", "a", 1)
    limiter.acquire("k", "w", 1)
    grants = limiter.set_limit("k", 2)
    assert [g.holder for g in grants] == woken == ["w"]
    assert limiter.limit_in_force("k", 1).limit == 2


# -- cost ----------------------------------------------------------------------------------------


def _cycle_cost(sem: DynamoDBSemaphore, key: str) -> tuple[dict[str, int], float]:
    """Requests and write units of three uncontended acquire+release cycles, and of a
    contended one (refused, queued, handed over, claimed)."""
    with traffic(sem.client) as seen:
        for n in range(3):
            assert sem.acquire(key, f"c{n}", 2).held
            assert sem.release(key, f"c{n}")
        sem.acquire(key, "x1", 2)
        sem.acquire(key, "x2", 2)
        waiting = sem.acquire(key, "y", 2)
        sem.release_slot(key, "x1", waiters_likely=True)
        assert sem.acquire(key, "y", 2, position=waiting.position).held
        sem.release(key, "y")
        sem.release(key, "x2")
    return dict(seen.calls), seen.write_units


def test_an_override_costs_no_request_once_known(semaphore: DynamoDBSemaphore) -> None:
    plain = _cycle_cost(semaphore, "plain")
    semaphore.set_limit("set", 2)
    semaphore.acquire("set", "warm", 2)  # the belief is this object's: learnt at set_limit
    semaphore.release("set", "warm")
    overridden = _cycle_cost(semaphore, "set")
    print(f"\nwithout an override {plain}; with one {overridden}")
    assert overridden == plain
    # Acquire, release: one write each; the contended cycle as without the feature.
    assert plain[0]["UpdateItem"] == 3 * 2 + 6 and plain[0]["TransactWriteItems"] == 3
