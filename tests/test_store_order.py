"""The queue's order: priority with ageing and fair sharing between groups (store/ordering.py),
on DynamoDB Local. Each behaviour is checked against a control that lacks it, and the plain
path (no priority, no group) against what it always cost."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo.observer import jain_fairness
from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store import TTL_ATTRIBUTE
from durable_semaphore.store.ordering import RANK_UNIT
from tests.conftest import FakeClock
from tests.store_helpers import traffic

LIMIT = 5


def _fill_limit(sem: DynamoDBSemaphore, key: str, limit: int = LIMIT) -> list[str]:
    holders = [f"hold{i}" for i in range(limit)]
    for holder in holders:
        assert sem.acquire(key, holder, limit).held
    return holders


def _grant_order(sem: DynamoDBSemaphore, key: str, holders: list[str], n: int) -> list[str]:
    """Release one slot at a time (the first holder still holding), ``n`` times; the holders
    the slots went to, in order. Each one granted holds until its turn to release comes."""
    order: list[str] = []
    holding = list(holders)
    for _ in range(n):
        result = sem.release_slot(key, holding.pop(0), waiters_likely=True)
        assert result.released and len(result.grants) == 1, result
        order.append(result.grants[0].holder)
        holding.append(result.grants[0].holder)
    return order


def _rows(sem: DynamoDBSemaphore) -> list[dict[str, Any]]:
    out = sem.client.scan(TableName=sem.table_name, ConsistentRead=True)
    return list(out["Items"])


# -- priority ----------------------------------------------------------------------------------


def _priority_run(sem: DynamoDBSemaphore, high: int) -> list[str]:
    holders = _fill_limit(sem, "p")
    for i in range(50):
        assert sem.acquire("p", f"low{i:02d}", LIMIT).queued
    for i in range(5):
        assert sem.acquire("p", f"high{i}", LIMIT, priority=high).queued
    return _grant_order(sem, "p", holders, 55)


@pytest.mark.parametrize("high", [1, 0], ids=["priority", "control"])
def test_high_priority_waiters_are_served_before_earlier_low_ones(
    make_semaphore: Callable[..., DynamoDBSemaphore], high: int
) -> None:
    """50 low waiters, then 5 high ones: every high one is granted before any low one still
    waiting; FIFO within each. The control (priority 0 for all) serves them last."""
    order = _priority_run(make_semaphore(), high)
    highs = [n for n, holder in enumerate(order) if holder.startswith("high")]
    lows = [holder for holder in order if holder.startswith("low")]
    assert lows == sorted(lows)  # FIFO among equals
    if high:
        assert highs == [0, 1, 2, 3, 4]
        assert order[:5] == [f"high{i}" for i in range(5)]
    else:
        assert highs == [50, 51, 52, 53, 54]  # the control: plain FIFO


def test_prioritized_waiters_show_their_rank_and_are_listed_in_serving_order(
    semaphore: DynamoDBSemaphore,
) -> None:
    _fill_limit(semaphore, "k", 1)
    semaphore.acquire("k", "low", 1)
    semaphore.acquire("k", "urgent", 1, priority=5)
    semaphore.acquire("k", "lazy", 1, priority=-1)
    waiters = semaphore.waiters("k")
    assert [(w.holder, w.priority, w.group) for w in waiters] == [
        ("urgent", 5, None),
        ("low", 0, None),
        ("lazy", -1, None),
    ]
    ranks = [w.rank for w in waiters]
    assert ranks == sorted(ranks)
    # Plain: its rank is its arrival number; prioritized: 5 levels x 100 s of arrival ahead.
    assert waiters[1].rank == waiters[1].seq
    assert abs((waiters[1].rank - waiters[0].rank) - 5 * 100 * RANK_UNIT) < 10 * RANK_UNIT


# -- ageing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [1, 2])
def test_a_low_waiter_is_passed_by_fewer_than_aging_times_delta_later_arrivals_of_its_group(
    make_semaphore: Callable[..., DynamoDBSemaphore], delta: int
) -> None:
    """aging=3: later higher-priority entries of W's group pass it only while fewer than
    3 * delta of them arrived after it (whatever their arrival rate)."""
    base = make_semaphore()
    sem = DynamoDBSemaphore(base.table_name, base.client, aging=3)
    holders = _fill_limit(sem, "a", 1)
    assert sem.acquire("a", "W", 1, group="g").queued
    for i in range(12):
        assert sem.acquire("a", f"H{i:02d}", 1, priority=delta, group="g").queued
    order = _grant_order(sem, "a", holders, 13)
    passed = order.index("W")
    assert passed == 3 * delta - 1  # H00..H(3d-2) pass, the next ties and W arrived first
    assert order[:passed] == [f"H{i:02d}" for i in range(passed)]


def test_control_without_ageing_bound_every_later_high_arrival_passes(
    make_semaphore: Callable[..., DynamoDBSemaphore],
) -> None:
    """The control: with a huge ageing, all 12 later high-priority arrivals pass W."""
    base = make_semaphore()
    sem = DynamoDBSemaphore(base.table_name, base.client, aging=1_000_000)
    holders = _fill_limit(sem, "a", 1)
    sem.acquire("a", "W", 1, group="g")
    for i in range(12):
        sem.acquire("a", f"H{i:02d}", 1, priority=1, group="g")
    assert _grant_order(sem, "a", holders, 13).index("W") == 12


def test_an_ungrouped_low_waiter_is_passed_only_by_arrivals_within_aging_seconds(
    make_semaphore: Callable[..., DynamoDBSemaphore],
) -> None:
    """Ungrouped, a priority level is worth ``aging`` seconds of arrival: with aging=3 and
    one high arrival every 1.25 s after W, exactly the two that arrive within 3 s pass it."""
    clock = FakeClock()
    base = make_semaphore()
    sem = DynamoDBSemaphore(base.table_name, base.client, clock=clock, aging=3)
    holders = _fill_limit(sem, "u", 1)
    sem.acquire("u", "W", 1, queue_ttl_seconds=3600)
    for i in range(8):
        clock.advance(1.25)
        sem.acquire("u", f"H{i}", 1, priority=1, queue_ttl_seconds=3600)
    order = _grant_order(sem, "u", holders, 9)
    assert order[: order.index("W")] == ["H0", "H1"]


# -- fair sharing ------------------------------------------------------------------------------


def _fair_run(sem: DynamoDBSemaphore, grouped: bool) -> list[str]:
    holders = _fill_limit(sem, "f")
    for i in range(40):
        assert sem.acquire("f", f"A{i:02d}", LIMIT, group="A" if grouped else None).queued
    for i in range(10):
        assert sem.acquire("f", f"B{i:02d}", LIMIT, group="B" if grouped else None).queued
    return _grant_order(sem, "f", holders, 50)


@pytest.mark.parametrize("grouped", [True, False], ids=["groups", "control"])
def test_groups_take_turns_however_long_the_first_ones_backlog(
    make_semaphore: Callable[..., DynamoDBSemaphore], grouped: bool
) -> None:
    """A queues 40, then B 10, at limit 5: B's first grant comes within the next 2, and the
    grants alternate while both wait (Jain's index over the groups >= 0.95). The control
    (no groups) serves B after all of A."""
    order = _fair_run(make_semaphore(), grouped)
    first_b = next(n for n, holder in enumerate(order) if holder.startswith("B"))
    for name in ("A", "B"):
        mine = [holder for holder in order if holder.startswith(name)]
        assert mine == sorted(mine)  # FIFO within a group
    if not grouped:
        assert first_b == 40
        return
    assert first_b <= 1
    last_b = max(n for n, holder in enumerate(order) if holder.startswith("B"))
    window = Counter(holder[0] for holder in order[: last_b + 1])
    jain = jain_fairness([window["A"], window["B"]])
    print(f"\nfirst B grant #{first_b}, window {dict(window)}, Jain {jain:.3f}")
    assert jain >= 0.95
    assert all(order[n][0] != order[n + 1][0] for n in range(last_b))  # strictly alternating


def test_a_group_that_returns_after_being_served_gets_no_credit_and_no_penalty(
    semaphore: DynamoDBSemaphore,
) -> None:
    """B is served once, then joins again behind A's backlog: it takes turns again, neither
    jumping all of A (credit for its idle time) nor waiting for all of A (a penalty)."""
    holders = _fill_limit(semaphore, "r", 1)
    for i in range(10):
        semaphore.acquire("r", f"A{i}", 1, group="A")
    semaphore.acquire("r", "B0", 1, group="B")
    first = _grant_order(semaphore, "r", holders, 2)
    assert first == ["A0", "B0"]
    semaphore.acquire("r", "B1", 1, group="B")
    semaphore.acquire("r", "B2", 1, group="B")
    rest = _grant_order(semaphore, "r", ["B0"], 5)
    assert rest == ["A1", "B1", "A2", "B2", "A3"]


def test_groups_compose_with_priority(semaphore: DynamoDBSemaphore) -> None:
    """Within groups taking turns, a high-priority entry goes ahead by aging turns."""
    holders = _fill_limit(semaphore, "c", 1)
    for i in range(4):
        semaphore.acquire("c", f"A{i}", 1, group="A")
    for i in range(4):
        semaphore.acquire("c", f"B{i}", 1, group="B")
    semaphore.acquire("c", "Burgent", 1, group="B", priority=1)
    waiters = semaphore.waiters("c")
    assert waiters[0].holder == "Burgent" and waiters[0].group == "B"
    assert [w.holder for w in waiters[1:]] == ["A0", "B0", "A1", "B1", "A2", "B2", "A3", "B3"]
    assert _grant_order(semaphore, "c", holders, 3) == ["Burgent", "A0", "B0"]


def test_grouped_rows_carry_the_ttl_and_an_idle_key_leaves_only_expiring_rows(
    semaphore: DynamoDBSemaphore,
) -> None:
    holders = _fill_limit(semaphore, "t", 1)
    semaphore.acquire("t", "x", 1, group="G")
    semaphore.acquire("t", "y", 1, group="H", priority=2)
    rows = _rows(semaphore)
    assert {row["sk"]["S"] for row in rows} >= {"g#G", "g#H", "#meta"}
    assert all(TTL_ATTRIBUTE in row for row in rows)
    meta = next(row for row in rows if row["sk"]["S"] == "#meta")
    assert "vt" in meta and not any(key.startswith("g") for key in meta)  # nothing per group
    order = _grant_order(semaphore, "t", holders, 2)
    assert order == ["y", "x"]
    semaphore.release("t", "y")
    semaphore.release("t", "x")
    left = _rows(semaphore)
    assert {row["sk"]["S"] for row in left} <= {"g#G", "g#H", "#meta"}
    assert all(TTL_ATTRIBUTE in row for row in left)


def test_an_ordered_waiter_checks_in_leaves_and_is_reclaimed_by_its_position(
    make_semaphore: Callable[..., DynamoDBSemaphore],
) -> None:
    """Everything that addresses an entry by its number works for an ordered one: check-in
    with ``position``, leaving the queue (release), and dropping a dead one (reclaim)."""
    clock = FakeClock()
    sem = make_semaphore(clock)
    _fill_limit(sem, "o", 1)
    got = sem.acquire("o", "w", 1, priority=3, group="G", queue_ttl_seconds=60)
    assert got.queued and got.position is not None
    again = sem.acquire("o", "w", 1, position=got.position, callback_id="cb1")
    assert again.queued and again.position == got.position
    assert sem.waiters("o")[0].callback_id == "cb1"
    assert sem.acquire("o", "w", 1).position == got.position  # a replay keeps its place
    left = sem.release_slot("o", "w")
    assert left.left_queue and sem.waiters("o") == []
    dead = sem.acquire("o", "d", 1, priority=-2, queue_ttl_seconds=10)
    assert dead.queued and [w.seq for w in sem.scan_waiters()] == [dead.position]
    clock.advance(60)
    sem.reclaim("o")
    assert sem.waiters("o") == [] and sem.slot_count("o").waiters == 0


def test_a_heavy_prioritized_head_is_never_passed(semaphore: DynamoDBSemaphore) -> None:
    """A 4-unit waiter that priority put at the head waits for 4 free units; the earlier
    1-unit waiter behind it, which would fit at once, does not pass it."""
    holders = _fill_limit(semaphore, "h")
    assert semaphore.acquire("h", "light", LIMIT).queued
    assert semaphore.acquire("h", "heavy", LIMIT, weight=4, priority=1).queued
    assert [w.holder for w in semaphore.waiters("h")] == ["heavy", "light"]
    for holder in holders[:3]:
        assert semaphore.release_slot("h", holder, waiters_likely=True).grants == ()
    fourth = semaphore.release_slot("h", holders[3], waiters_likely=True)
    assert [g.holder for g in fourth.grants] == ["heavy"]
    last = semaphore.release_slot("h", holders[4], waiters_likely=True)
    assert [g.holder for g in last.grants] == ["light"]


# -- the plain path ----------------------------------------------------------------------------


@contextlib.contextmanager
def _transaction_sizes(client: Any) -> Iterator[list[int]]:
    """The number of items of each TransactWriteItems ``client`` sends inside the block
    (DynamoDB Local's reported capacity for transactions is not what AWS bills: 2 units
    per item, so the items are what to compare)."""
    sizes: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["TransactItems"]))

    event = "provide-client-params.dynamodb.TransactWriteItems"
    client.meta.events.register(event, record)
    try:
        yield sizes
    finally:
        client.meta.events.unregister(event, record)


def _cycle_cost(sem: DynamoDBSemaphore, key: str, **order: Any) -> dict[str, Any]:
    """Requests, write units (single writes) and transaction items of: an uncontended
    acquire + release, a join of the queue first thing (``queue_first``) and after a refused
    acquire, and the hand-off to the first waiter."""
    with traffic(sem.client) as free:
        sem.acquire(key, "solo", 1)
        sem.release_slot(key, "solo")
    sem.acquire(key, "holder", 1)
    with traffic(sem.client) as join, _transaction_sizes(sem.client) as join_items:
        assert sem.acquire(key, "waiter", 1, queue_first=True, **order).queued
    with traffic(sem.client) as refused:
        assert sem.acquire(key, "second", 1, **order).queued
    with traffic(sem.client) as handoff, _transaction_sizes(sem.client) as handoff_items:
        assert sem.release_slot(key, "holder", waiters_likely=True).grant is not None
    return {
        "free": (dict(free.calls), free.units_per_write),
        "join": (dict(join.calls), join_items),
        "refused+join": dict(refused.calls),
        "handoff": (dict(handoff.calls), handoff_items),
    }


def test_the_plain_path_is_fifo_by_arrival_with_its_sort_key_and_costs_unchanged(
    semaphore: DynamoDBSemaphore,
) -> None:
    _fill_limit(semaphore, "d", 1)
    positions = [semaphore.acquire("d", f"w{i}", 1).position for i in range(5)]
    entries = [row for row in _rows(semaphore) if row["sk"]["S"].startswith("w#")]
    assert sorted(row["sk"]["S"] for row in entries) == [f"w#{p:020d}" for p in positions]
    assert not any({"pri", "grp", "tag"} & set(row) for row in entries)
    assert [w.holder for w in semaphore.waiters("d")] == [f"w{i}" for i in range(5)]
    assert "vt" not in next(row for row in _rows(semaphore) if row["sk"]["S"] == "#meta")
    cost = _cycle_cost(semaphore, "d2")
    print(f"\nplain: {cost}")
    assert cost["free"][0] == {"UpdateItem": 2}
    assert cost["join"][0] == {"TransactWriteItems": 1}
    assert cost["refused+join"] == {"UpdateItem": 1, "TransactWriteItems": 1}
    assert cost["handoff"][0] == {"Query": 1, "TransactWriteItems": 1}
    assert cost["join"][1] == cost["handoff"][1] == [3] and cost["free"][1] == [1.0, 1.0]


def test_what_priority_and_groups_cost_next_to_the_plain_path(
    semaphore: DynamoDBSemaphore,
) -> None:
    """A prioritized join and its hand-off cost what plain ones do; a grouped join reads its
    group's item, and the counter unless a refusal just returned it (GetItem: no permission
    beyond the documented roles), and writes its group's item in the transaction."""
    plain = _cycle_cost(semaphore, "c0")
    prioritized = _cycle_cost(semaphore, "c1", priority=7)
    grouped = _cycle_cost(semaphore, "c2", group="tenant-1")
    print(f"\npriority: {prioritized}\ngroup: {grouped}")
    assert prioritized == plain
    assert grouped["free"] == plain["free"] and grouped["handoff"][0] == plain["handoff"][0]
    assert grouped["join"][0] == {"GetItem": 2, "TransactWriteItems": 1}
    assert grouped["refused+join"] == {"UpdateItem": 1, "GetItem": 1, "TransactWriteItems": 1}
    assert plain["join"][1] == [3] and grouped["join"][1] == [4]  # its group's item
    assert grouped["handoff"][1] == plain["handoff"][1] == [3]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("priority", True),
        ("priority", 1001),
        ("priority", -1001),
        ("priority", 1.5),
        ("priority", "1"),
        ("group", ""),
        ("group", 7),
        ("group", "x" * 257),
        ("group", "\ud800"),
    ],
)
def test_a_bad_priority_or_group_is_refused_and_writes_nothing(
    semaphore: DynamoDBSemaphore, name: str, value: object
) -> None:
    _fill_limit(semaphore, "b", 1)
    before = _rows(semaphore)
    with pytest.raises(InvalidArgumentError) as exc:
        semaphore.acquire("b", "w", 1, **{name: value})  # type: ignore[arg-type]
    assert exc.value.name == name and exc.value.value == value
    assert repr(value)[:20] in str(exc.value)
    assert _rows(semaphore) == before


@pytest.mark.parametrize("aging", [0, -1, True, 1.0, 10**7])
def test_a_bad_aging_is_refused(semaphore: DynamoDBSemaphore, aging: object) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        DynamoDBSemaphore(semaphore.table_name, semaphore.client, aging=aging)  # type: ignore[arg-type]
    assert exc.value.name == "aging"


# -- concurrency -------------------------------------------------------------------------------


def _threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def run(target: Callable[[], None]) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_concurrent_joins_of_one_group_each_get_a_turn_of_their_own(
    semaphore: DynamoDBSemaphore,
) -> None:
    """20 members of one group join at once: all get in (a join that lost the group's item
    to another reads again), with 20 consecutive tags, served in tag order."""
    holders = _fill_limit(semaphore, "cj", 1)
    joiners = [f"m{i:02d}" for i in range(20)]

    def join(holder: str) -> Callable[[], None]:
        mine = DynamoDBSemaphore(semaphore.table_name, semaphore.client)
        return lambda: assert_queued(mine.acquire("cj", holder, 1, group="A"))

    assert _threads([join(holder) for holder in joiners]) == []
    waiters = semaphore.waiters("cj")
    tags = [w.tag for w in waiters]
    assert sorted(w.holder for w in waiters) == joiners
    assert all(tag is not None for tag in tags)
    first = min(t for t in tags if t is not None)
    assert tags == [first + n * RANK_UNIT for n in range(20)]
    group_row = semaphore.client.get_item(
        TableName=semaphore.table_name,
        Key={"pk": {"S": "cj"}, "sk": {"S": "g#A"}},
        ConsistentRead=True,
    )["Item"]
    assert int(group_row["last"]["N"]) == tags[-1]
    assert _grant_order(semaphore, "cj", holders, 20) == [w.holder for w in waiters]


def assert_queued(result: Any) -> None:
    assert result.queued, result


def test_groups_joining_while_slots_are_handed_over_lose_no_one_and_admit_no_extra(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Joins of two groups race hand-offs (which move virtual time): every joiner is
    admitted exactly once, never more than the limit at once, and the queue ends empty."""
    limit = 3
    holding = _fill_limit(semaphore, "cr", limit)
    joiners = [f"A{i:02d}" for i in range(10)] + [f"B{i:02d}" for i in range(6)]
    lock = threading.Lock()
    admitted: list[str] = []

    def join(holder: str) -> Callable[[], None]:
        mine = DynamoDBSemaphore(semaphore.table_name, semaphore.client)

        def run() -> None:
            got = mine.acquire("cr", holder, limit, group=holder[0])
            if got.held:
                with lock:
                    admitted.append(holder)
                    holding.append(holder)

        return run

    def release() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(admitted) < len(joiners):
            with lock:
                holder = holding.pop(0) if holding else None
            if holder is None:
                time.sleep(0.01)
                continue
            for grant in semaphore.release_slot("cr", holder, waiters_likely=True).grants:
                with lock:
                    admitted.append(grant.holder)
                    holding.append(grant.holder)
            assert semaphore.slot_count("cr").count <= limit

    assert _threads([join(holder) for holder in joiners] + [release]) == []
    assert sorted(admitted) == joiners  # each exactly once
    assert semaphore.waiters("cr") == [] and semaphore.slot_count("cr").waiters == 0
    assert semaphore.slot_count("cr").count == len(holding) <= limit


def test_a_group_item_left_from_before_the_key_went_idle_is_ignored(
    semaphore: DynamoDBSemaphore,
) -> None:
    """A's 10 turns are served, the key goes idle and its counter is deleted; A's item
    (last tag 9 turns ahead) stays until its TTL. In the new epoch A's next entry starts at
    virtual time like anyone's: right after B's first, not after B's backlog."""
    holders = _fill_limit(semaphore, "e", 1)
    for i in range(10):
        semaphore.acquire("e", f"A{i}", 1, group="A")
    served = _grant_order(semaphore, "e", holders, 10)
    assert served == [f"A{i}" for i in range(10)]
    assert semaphore.release("e", "A9") and semaphore.forget_if_idle("e")
    assert "g#A" in {row["sk"]["S"] for row in _rows(semaphore)}  # stale, still there
    holders = _fill_limit(semaphore, "e", 1)
    for i in range(3):
        semaphore.acquire("e", f"B{i}", 1, group="B")
    semaphore.acquire("e", "A10", 1, group="A")
    assert [w.holder for w in semaphore.waiters("e")] == ["B0", "A10", "B1", "B2"]


def test_groups_take_turns_alike_when_every_waiter_has_the_same_priority(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Only priority differences matter: with priority 2 for all, A's backlog and B still
    alternate, as with priority 0."""
    holders = _fill_limit(semaphore, "u2", 1)
    for i in range(6):
        semaphore.acquire("u2", f"A{i}", 1, group="A", priority=2)
    for i in range(3):
        semaphore.acquire("u2", f"B{i}", 1, group="B", priority=2)
    order = _grant_order(semaphore, "u2", holders, 9)
    assert order == ["A0", "B0", "A1", "B1", "A2", "B2", "A3", "A4", "A5"]
