"""The rate booking store (``durable_semaphore.store.rates``) on DynamoDB Local.

What one booking costs (requests counted, WCU as DynamoDB Local reports them), that a holder
never books twice, that bad input writes nothing, that the row expires and its records do not
pile up, that the store computes exactly what the pure model (:func:`reserve`) does, and, with
real threads and the real clock, that the starts handed out obey GCRA's window bound, judged
by an observer that only sees the returned start instants; the same observer catches a store
whose condition is removed.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store import TTL_ATTRIBUTE, Booking, DynamoDBRateStore, reserve
from durable_semaphore.store.rates import (
    BOOKING_PREFIX,
    DEFAULT_MAX_BOOKINGS,
    RATE_SK,
    TAT,
    book_request,
    booking_name,
    rate_key,
)
from durable_semaphore.store.schema import IDLE_GRACE_SECONDS
from tests.conftest import FakeClock, local_dynamodb_client
from tests.store_helpers import count_requests, traffic

# -- helpers -----------------------------------------------------------------------------------


def rows(sem: DynamoDBSemaphore) -> list[dict[str, Any]]:
    out = sem.client.scan(TableName=sem.table_name, ConsistentRead=True)
    return list(out["Items"])


def rate_item(sem: DynamoDBSemaphore, key: str) -> dict[str, Any]:
    got = sem.client.get_item(TableName=sem.table_name, Key=rate_key(key), ConsistentRead=True)
    return dict(got.get("Item", {}))


def records(item: dict[str, Any]) -> dict[str, float]:
    return {k: float(v["N"]) for k, v in item.items() if k.startswith(BOOKING_PREFIX)}


def window_violation(
    starts: list[float], interval: float, burst: int, *, slack: float = 0.0
) -> tuple[int, int, float, float] | None:
    """The observer: the first closed window of starts holding more than GCRA allows,
    ``floor((width + slack) / interval) + burst``, as (count, allowed, from, to); None if none.

    Every window is checked: for sorted starts, the window from start i to start j holds at
    least j - i + 1 of them. A tolerance of 5 microseconds absorbs the float reading of the
    decimal instants DynamoDB computed (about 0.24 us at today's epoch).
    """
    xs = sorted(starts)
    for i in range(len(xs)):
        for j in range(i, len(xs)):
            allowed = math.floor((xs[j] - xs[i] + slack + 5e-6) / interval) + burst
            if j - i + 1 > allowed:
                return j - i + 1, allowed, xs[i], xs[j]
    return None


def backlogged_rate(starts: list[float], burst: int) -> float:
    """Starts per second over a run that was backlogged throughout: the first ``burst`` come
    at once, each later one a full interval after the one before."""
    xs = sorted(starts)
    return (len(xs) - burst) / (xs[-1] - xs[0])


@pytest.fixture
def key() -> str:
    return f"rate-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_store(semaphore: DynamoDBSemaphore) -> Callable[..., DynamoDBRateStore]:
    def build(**kwargs: Any) -> DynamoDBRateStore:
        return DynamoDBRateStore(semaphore.table_name, semaphore.client, **kwargs)

    return build


# -- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "seen_tat", "condition", "update"),
    [
        (
            "idle",
            None,
            "(attribute_not_exists(#tat) OR #tat <= :now) AND attribute_not_exists(#b)",
            "SET #tat = :now + :T, #b = :now, #e = :life",
        ),
        (
            "burst",
            100.5,
            "#tat > :now AND #tat <= :edge AND attribute_not_exists(#b) AND #tat <= :covered",
            "SET #tat = #tat + :T, #b = :now, #e = :life",
        ),
        (
            "queued",
            103.0,
            "#tat > :edge AND attribute_not_exists(#b) AND #tat <= :covered",
            "SET #tat = #tat + :T, #b = #tat - :tau, #e = :life",
        ),
    ],
)
def test_the_three_booking_writes(
    variant: str, seen_tat: float | None, condition: str, update: str
) -> None:
    """Pinned: each variant's condition and SET, the TTL a day past the tat it expects, and
    both the new item and, refused, the old one come back (no read ever needed)."""
    got = book_request(
        "k", "B#x", variant, now=100.0, interval=0.5, tolerance=1.0, seen_tat=seen_tat
    )
    assert got["ConditionExpression"] == condition
    assert got["UpdateExpression"] == update
    assert got["ReturnValues"] == "ALL_NEW"
    assert got["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
    expected_tat = 100.5 if seen_tat is None else seen_tat + 0.5
    assert got["ExpressionAttributeValues"][":life"] == {
        "N": str(math.ceil(expected_tat) + IDLE_GRACE_SECONDS)
    }
    pruning = book_request(
        "k",
        "B#x",
        variant,
        now=100.0,
        interval=0.5,
        tolerance=1.0,
        seen_tat=seen_tat,
        removes=["B#old1", "B#old2"],
    )
    assert pruning["UpdateExpression"] == update + " REMOVE #r0, #r1"
    assert pruning["ExpressionAttributeNames"]["#r1"] == "B#old2"


def test_one_booking_is_one_update_item(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    store = make_store(clock=clock)
    with traffic(semaphore.client) as seen:
        first = store.book(key, "h0", 10, 1, 3)
    assert first == Booking(clock.now, clock.now, fresh=True)
    assert seen.calls == Counter({"UpdateItem": 1}) and seen.units_per_write == [1.0]
    # Within the burst, then queued: each still one write, no read.
    for n in range(1, 30):
        with count_requests(semaphore.client) as sent:
            got = store.book(key, f"h{n}", 10, 1, 3)
        assert sent == Counter({"UpdateItem": 1}), (n, sent)
        assert got.start == pytest.approx(clock.now + max(0, n - 2) * 0.1, abs=1e-6)
    # The clock moves on past the backlog: what the store saw last (a tat now in the past)
    # still names the right write, the idle one.
    clock.advance(60)
    with count_requests(semaphore.client) as sent:
        assert store.book(key, "later", 10, 1, 3).start == clock.now
    assert sent == Counter({"UpdateItem": 1}), "an idle key after a backlog is still 1 write"


def test_a_store_that_never_saw_the_key_pays_one_refusal(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    busy = make_store(clock=clock)
    for n in range(10):
        busy.book(key, f"h{n}", 5, 1, 1)
    newcomer = make_store(clock=clock)
    with traffic(semaphore.client) as seen:
        got = newcomer.book(key, "new", 5, 1, 1)
    assert got.start == pytest.approx(clock.now + 10 * 0.2)
    assert seen.calls == Counter({"UpdateItem": 2}), "a wrong guess, then the right write"
    with count_requests(semaphore.client) as sent:
        newcomer.book(key, "new2", 5, 1, 1)
    assert sent == Counter({"UpdateItem": 1})


def test_wcu_per_booking_as_the_item_grows(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
) -> None:
    """The cost table of the module docstring, measured: 1 WCU while the item is under 1 KB
    (about 35 records), never more than 2 with the defaults and a short key."""
    key = "api.example.com"
    store = make_store(clock=clock)
    units: list[float] = []
    counts: list[int] = []
    with traffic(semaphore.client) as seen:
        for n in range(400):
            store.book(
                key, f"arn:aws:lambda:us-east-1:123456789012:function:f/exec-{n}/2", 50, 1, 5
            )
            counts.append(len(records(rate_item(semaphore, key))))
            clock.advance(0.01)  # arrivals at 100/s on a 50/s rate: backlogged throughout
    units = seen.units_per_write
    assert seen.calls["UpdateItem"] == 400, "one write per booking, no prune write needed"
    assert units[:30] == [1.0] * 30
    assert max(units) <= 2.0
    assert max(counts) <= DEFAULT_MAX_BOOKINGS + 1


# -- identity ----------------------------------------------------------------------------------


def test_a_holder_never_books_twice(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    first = make_store(clock=clock)
    for n in range(3):
        first.book(key, f"other{n}", 2, 1, 1)
    booked = first.book(key, "me", 2, 1, 1)
    assert booked.fresh and booked.start == pytest.approx(clock.now + 1.5)
    tat = first.peek(key)

    # The same store: it knows the booking, so a replay sends nothing.
    with count_requests(semaphore.client) as sent:
        again = first.book(key, "me", 2, 1, 1)
    assert sent == Counter() and again.start == booked.start and not again.fresh

    # Another store (another invocation), later, on another clock: the refusal carries the
    # booking; nothing moves.
    clock.advance(0.7)
    replay = make_store(clock=clock).book(key, "me", 2, 1, 1)
    assert replay == Booking(booked.start, clock.now, fresh=False)
    assert first.peek(key) == tat
    # The next holder gets the next slot: the replays took none.
    assert first.book(key, "next", 2, 1, 1).start == pytest.approx(booked.start + 0.5)


def test_overlapping_calls_of_one_holder_get_one_start(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, key: str
) -> None:
    stores = [
        DynamoDBRateStore(semaphore.table_name, local_dynamodb_client(ddb_endpoint))
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(stores))
    got: list[Booking] = []

    def run(store: DynamoDBRateStore) -> None:
        barrier.wait()
        got.append(store.book(key, "same-holder", 1, 1, 1))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({b.start for b in got}) == 1
    assert sum(b.fresh for b in got) == 1
    assert len(records(rate_item(semaphore, key))) == 1


# -- input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("", "h", 1, 1, 1), "key"),
        ((None, "h", 1, 1, 1), "key"),
        (("k" * 2049, "h", 1, 1, 1), "key"),
        (("k", "", 1, 1, 1), "holder"),
        (("k", "h" * 1023, 1, 1, 1), "holder"),
        (("k", "\ud800", 1, 1, 1), "holder"),
        (("k", "h", 0, 1, 1), "rate"),
        (("k", "h", -1, 1, 1), "rate"),
        (("k", "h", math.nan, 1, 1), "rate"),
        (("k", "h", math.inf, 1, 1), "rate"),
        (("k", "h", True, 1, 1), "rate"),
        (("k", "h", "5", 1, 1), "rate"),
        (("k", "h", 1e9, 1e-6, 1), "rate"),  # 1e-15 s between starts
        (("k", "h", 1, 0, 1), "per"),
        (("k", "h", 1, -2.5, 1), "per"),
        (("k", "h", 1, math.inf, 1), "per"),
        (("k", "h", 1, math.nan, 1), "per"),
        (("k", "h", 1, 1, 0), "burst"),
        (("k", "h", 1, 1, 2.0), "burst"),
        (("k", "h", 1, 1, True), "burst"),
        (("k", "h", 1, 1, -3), "burst"),
    ],
)
def test_bad_input_raises_ours_and_writes_nothing(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    args: tuple[Any, ...],
    name: str,
) -> None:
    store = make_store()
    with count_requests(semaphore.client) as sent, pytest.raises(InvalidArgumentError) as err:
        store.book(*args)
    assert err.value.name == name
    assert sent == Counter()
    assert rows(semaphore) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"keep_seconds": 0}, "keep_seconds"),
        ({"keep_seconds": math.nan}, "keep_seconds"),
        ({"max_bookings": 0}, "max_bookings"),
        ({"max_bookings": 10_000}, "max_bookings"),
        ({"table_name": ""}, "table_name"),
    ],
)
def test_bad_configuration_raises_ours(
    semaphore: DynamoDBSemaphore, kwargs: dict[str, Any], name: str
) -> None:
    kwargs.setdefault("table_name", semaphore.table_name)
    with pytest.raises(InvalidArgumentError) as err:
        DynamoDBRateStore(client=semaphore.client, **kwargs)
    assert err.value.name == name


def test_bad_now_and_peek_key(
    semaphore: DynamoDBSemaphore, make_store: Callable[..., DynamoDBRateStore]
) -> None:
    store = make_store()
    with pytest.raises(InvalidArgumentError) as err:
        store.book("k", "h", 1, 1, 1, now=math.inf)
    assert err.value.name == "now"
    with pytest.raises(InvalidArgumentError):
        store.peek("")
    assert rows(semaphore) == []


# -- TTL and pruning ---------------------------------------------------------------------------


def test_the_row_expires_and_outlives_its_tat(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    store = make_store(clock=clock)
    for n in range(50):
        store.book(key, f"h{n}", 1, 1, 2)
        item = rate_item(semaphore, key)
        expires = item[TTL_ATTRIBUTE]["N"]
        assert expires.isdigit(), "whole epoch seconds, as DynamoDB's TTL reads them"
        assert int(expires) >= float(item[TAT]["N"]) + IDLE_GRACE_SECONDS / 2
    assert all(TTL_ATTRIBUTE in row for row in rows(semaphore))
    assert item["sk"]["S"] == RATE_SK


def test_a_stale_cache_cannot_let_the_row_outlive_its_ttl(
    semaphore: DynamoDBSemaphore, make_store: Callable[..., DynamoDBRateStore], key: str
) -> None:
    """A store that last saw the key long ago guesses its TTL from an old ``tat``; a backlog
    that grew more than half a day since refuses that write, and the retry covers it."""
    now = float(int(time.time()))
    stale = make_store()
    stale.book(key, "early", 1, 1, 1, now=now)  # tat = now + 1
    stale.book(key, "early2", 1, 1, 1, now=now)  # tat = now + 2, and stale remembers that
    other = make_store()
    for n in range(3):  # a slow rate: 3 starts a day apart push tat 3 days ahead
        other.book(key, f"slow{n}", 1, 86_400, 1, now=now)
    with count_requests(semaphore.client) as sent:
        got = stale.book(key, "late", 1, 1, 1, now=now)
    assert sent == Counter({"UpdateItem": 2})
    item = rate_item(semaphore, key)
    assert got.start == pytest.approx(now + 3 * 86_400 + 2, abs=1e-6)
    assert int(item[TTL_ATTRIBUTE]["N"]) >= float(item[TAT]["N"]) + IDLE_GRACE_SECONDS / 2


def test_stale_records_are_removed_by_the_bookings(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    store = make_store(clock=clock, keep_seconds=10, max_bookings=8)
    for n in range(40):
        store.book(key, f"h{n}", 1, 1, 1)
        clock.advance(1)  # one start a second: each record goes stale 10 s after its start
    kept = records(rate_item(semaphore, key))
    assert 4 < len(kept) <= 9, kept
    assert min(kept.values()) >= clock.now - 10 - 1
    # A holder whose record was pruned and that books again gets a new start (a slot wasted,
    # never one too many); a kept one gets its own back.
    assert make_store(clock=clock).book(key, "h39", 1, 1, 1).fresh is False
    assert make_store(clock=clock).book(key, "h0", 1, 1, 1).fresh is True


def test_records_of_a_deep_backlog_are_capped(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    """Every record's start is in the future, none stale: the cap still bounds the item."""
    store = make_store(clock=clock, max_bookings=10)
    for n in range(60):
        store.book(key, f"h{n}", 1, 1, 1)
    assert len(records(rate_item(semaphore, key))) <= 11


def test_writers_that_book_once_still_prune(
    semaphore: DynamoDBSemaphore,
    make_store: Callable[..., DynamoDBRateStore],
    clock: FakeClock,
    key: str,
) -> None:
    """Store objects that book once and leave never get to piggy-back a removal; a booking
    that finds the item over twice the cap prunes it with one more write."""
    most = 0
    for n in range(60):
        make_store(clock=clock, max_bookings=8, keep_seconds=5).book(key, f"h{n}", 10, 1, 1)
        clock.advance(1)
        most = max(most, len(records(rate_item(semaphore, key))))
    assert most <= 2 * 8 + 1


# -- the store is the model --------------------------------------------------------------------


def test_the_store_books_what_the_model_says(
    semaphore: DynamoDBSemaphore, make_store: Callable[..., DynamoDBRateStore], key: str
) -> None:
    """Random arrivals (gaps from none to idle), several store objects with their own stale
    views, every variant: each start and the final ``tat`` are the model's."""
    rng = random.Random(7)
    rate, per, burst = 4, 2.0, 3
    interval, tolerance = per / rate, (burst - 1) * per / rate
    now = float(int(time.time()))
    stores = [make_store() for _ in range(3)]
    tat: float | None = None
    for n in range(120):
        now += rng.choice([0.0, 0.0, 0.1, 0.3, 1.0, 4.0])
        want, tat = reserve(tat, now, interval, tolerance)
        got = rng.choice(stores).book(key, f"h{n}", rate, per, burst, now=now)
        assert got.fresh and got.start == pytest.approx(want, abs=1e-6), n
        assert got.start >= now - 1e-6
    assert stores[0].peek(key) == pytest.approx(tat, abs=1e-6)


# -- concurrency, judged from outside ----------------------------------------------------------

RATE, PER, BURST = 20, 1.0, 5
INTERVAL = PER / RATE
THREADS = 8


class ReadThenWriteStore(DynamoDBRateStore):
    """The control: GCRA computed from a read and written back without any condition, as a
    naive limiter would; the pause between read and write is where others slip in."""

    def book(
        self,
        key: str,
        holder: str,
        rate: float,
        per: float,
        burst: int,
        *,
        now: float | None = None,
    ) -> Booking:
        now = self.now() if now is None else now
        tat = self.peek(key)
        start, new_tat = reserve(tat, now, per / rate, (burst - 1) * per / rate)
        time.sleep(0.003)
        self.client.update_item(
            TableName=self.table_name,
            Key=rate_key(key),
            UpdateExpression="SET #tat = :t, #b = :s, #e = :e",
            ExpressionAttributeNames={"#tat": TAT, "#b": booking_name(holder), "#e": TTL_ATTRIBUTE},
            ExpressionAttributeValues={
                ":t": {"N": repr(new_tat)},
                ":s": {"N": repr(start)},
                ":e": {"N": str(int(new_tat) + 86_400)},
            },
        )
        return Booking(start, now, fresh=True)


def run_callers(
    endpoint: str,
    table: str,
    key: str,
    store_cls: type[DynamoDBRateStore],
    per_thread: int,
    *,
    wait: bool = False,
) -> tuple[list[float], list[float]]:
    """``THREADS`` callers, each with its own client, booking ``per_thread`` holders as fast as
    they can (or, with ``wait``, each sleeping until its start before booking the next, as a
    real caller does). Returns the booked starts, and the instants the callers actually
    started (after their sleep: the start, or later)."""
    barrier = threading.Barrier(THREADS)
    starts: list[float] = []
    actual: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def caller(worker: int) -> None:
        try:
            store = store_cls(table, local_dynamodb_client(endpoint))
            barrier.wait()
            for n in range(per_thread):
                got = store.book(key, f"w{worker}-{n}", RATE, PER, BURST)
                if wait:
                    time.sleep(max(0.0, got.start - time.time()))
                began = max(time.time(), got.start)
                with lock:
                    starts.append(got.start)
                    actual.append(began)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return starts, actual


def test_concurrent_bookings_keep_the_gcra_bound(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, key: str
) -> None:
    starts, _ = run_callers(ddb_endpoint, semaphore.table_name, key, DynamoDBRateStore, 25)
    assert len(starts) == THREADS * 25
    assert window_violation(starts, INTERVAL, BURST) is None
    assert backlogged_rate(starts, BURST) >= 0.95 * RATE / PER
    # The piggy-backed removals kept the item bounded under contention.
    assert len(records(rate_item(semaphore, key))) <= DEFAULT_MAX_BOOKINGS + THREADS


def test_control_without_the_condition_breaks_the_bound(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, key: str
) -> None:
    starts, _ = run_callers(ddb_endpoint, semaphore.table_name, key, ReadThenWriteStore, 25)
    violation = window_violation(starts, INTERVAL, BURST)
    assert violation is not None, "the observer must catch a limiter without its condition"


def test_callers_that_wait_for_their_start(
    semaphore: DynamoDBSemaphore, ddb_endpoint: str, key: str
) -> None:
    """Real callers: book, sleep until the start, book again. The key moves between idle,
    burst and backlogged. The booked starts keep the exact bound; the instants the callers
    actually started keep it with their lateness ``D`` added to the window, as documented."""
    starts, actual = run_callers(
        ddb_endpoint, semaphore.table_name, key, DynamoDBRateStore, 5, wait=True
    )
    assert window_violation(starts, INTERVAL, BURST) is None
    lateness = max(a - s for a, s in zip(actual, starts, strict=True))
    assert window_violation(actual, INTERVAL, BURST, slack=lateness) is None
