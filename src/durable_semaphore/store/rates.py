"""Rate bookings: GCRA reservations on one item per rate key, one conditional write each.

A rate of ``rate`` starts per ``per`` seconds with up to ``burst`` of them at once is kept as
one number per key, the *theoretical arrival time* ``tat`` of GCRA (the generic cell rate
algorithm). A caller *books* a start: it learns the instant it may start, now or later, from one
conditional UpdateItem, and waits until then. A booking always succeeds: the excess is queued
into the future, in the order the writes reach the item, rather than refused, so nobody polls.

Layout::

    pk = <key>  sk = "#rate"   tat          the theoretical arrival time (epoch seconds)
                               expires_at   the TTL: at least half a day past tat
                               B#<digest>   one per holder: the start it booked

The arithmetic (:func:`reserve`), with the emission interval ``T = per / rate`` and the
tolerance ``tau = (burst - 1) * T``: a booking at clock reading ``now`` that finds ``tat``
starts at ``max(now, tat - tau)`` and leaves ``max(tat, now) + T`` (an absent ``tat`` reads as
``now``).

**The bound, and its proof.** The bookings of a key are applied one at a time (each is a
conditional write of one item), so they form a sequence. Booking ``i`` reads ``n_i`` on its
caller's clock (no order among the readings is assumed), finds ``tat_{i-1}``, starts at
``s_i = max(n_i, tat_{i-1} - tau)`` and leaves ``tat_i = max(tat_{i-1}, n_i) + T``. Then

1. ``tat_i >= s_i + T``, because ``tau >= 0`` makes ``s_i <= max(n_i, tat_{i-1}) = tat_i - T``;
2. ``tat_j >= tat_i + (j - i) T`` for ``j >= i`` (every booking adds at least ``T``);
3. so for ``j > i``: ``s_j >= tat_{j-1} - tau >= tat_i + (j - 1 - i) T - tau
   >= s_i + (j - i) T - tau``.

Take ``m`` bookings whose starts lie in a closed interval of length ``L``, and let ``i`` be the
first and ``j`` the last of them in booking order: ``j - i >= m - 1`` and ``s_j - s_i <= L``,
so ``(m - 1) T - tau <= L``, that is ``m <= L / T + burst``. ``m`` is an integer:

    **starts in any closed window of w seconds <= floor(w / T) + burst
    = floor(rate * w / per) + burst**

exactly, and tight (``burst`` starts at once, then one every ``T``). It holds for the booked
instants *whatever the callers' clocks say*: (3) never used an order of the readings.

**Clock skew.** A caller starts when its own clock reads its start. Say caller ``c``'s clock
reads ``t + e_c`` at true time ``t``, and every two clocks are within ``skew`` seconds of each
other (all ``e_c`` lie in some ``[e, e + skew]``). Booking ``i`` then starts at true time
``u_i = s_i - e_c``. The starts whose true times lie in ``[a, a + w]`` have booked instants in
``[a + e, a + w + e + skew]``, an interval of ``w + skew`` seconds, so:

    **true starts in any window of w seconds <= floor((w + skew) / T) + burst
    = floor(rate * (w + skew) / per) + burst**

This is tight: with ``burst = 1``, ``T = 1`` and callers whose clocks read ``0, 1, ..., k``
ahead, all booking at true time 0 in that order, caller ``k`` finds ``tat = k`` and starts at
its reading ``k``, true time 0: ``k + 1 = floor(skew / T) + burst`` starts at one instant.
Every start is still at or after its caller's arrival on its own clock (``s_i >= n_i``).

**Lateness** works the same way: a caller that starts up to ``D`` seconds after its booked
instant (its answer came late, a durable timer fired late) moves its start within
``[u_i, u_i + D]``, which widens the window in the bound by ``D`` as skew does:
``floor(rate * (w + skew + D) / per) + burst``. A caller that sleeps until ``start`` and then
runs has ``D`` its scheduling delay; the bound on *booked* instants is the exact one.

**Backlog.** When booking ``i + 1`` is queued (``s_{i+1} > n_{i+1}``), ``s_{i+1} - s_i <= T``
(``s_i >= max(n_i, tat_{i-1}) - tau = tat_i - T - tau`` and ``s_{i+1} = tat_i - tau``): a
backlog leaves no gap, so backlogged starts come at the rate, exactly, after the burst.

**One write.** ``tat - tau`` relative to ``now`` decides the start, and an update expression
has no ``max``, so the write comes in three variants, each with the condition that makes it
the right one (the item as it was is what an expression reads):

========  ==============================  ===============================  ===============
variant   condition                       SET                              booking records
========  ==============================  ===============================  ===============
idle      no ``tat``, or ``tat <= now``   ``tat = :now + :T``              ``:now``
burst     ``now < tat <= now + tau``      ``tat = tat + :T``               ``:now``
queued    ``tat > now + tau``             ``tat = tat + :T``               ``tat - :tau``
========  ==============================  ===============================  ===============

each also ``attribute_not_exists(B#<digest>)`` (a replay or an overlapping invocation of the
same holder never books twice: its refusal carries its booking) and setting ``expires_at``. The
store picks the variant from the last state it saw of the key (cached per store object);
``tat`` only ever grows, so a key seen queued is still queued and a backlogged key costs one
write, with no read. A wrong guess is refused with the item as it was (``ALL_OLD``), which
names the right variant. For a given ``now`` the right variant only moves from idle to burst
to queued, so a booking meets at most two refusals (one more if the backlog grew by over half
a day since the store last looked, see TTL below). ``ReturnValues=ALL_NEW`` brings the
booking and the item back with the write (no read capacity). The start is computed by DynamoDB
in decimal, and the record holds it, so a replay returns the very instant the first call
booked, whatever its own clock.

**Cost.** A write bills 1 WCU per KB of the larger of the item before and after it, a refused
one too. The item is about ``55 + len(key)`` bytes plus about 24 bytes per booking record (a
14-byte name and the start), so a booking costs ``ceil((55 + len(key) + 24 * records) / 1024)``
WCU: 1 up to about 40 records, 2 up to about 80 (measured on DynamoDB Local). Records are
dropped by the booking writes themselves: once the item holds more than ``max_bookings / 2``
of them, a write also removes those whose start is more than ``keep_seconds`` in the past,
and the oldest beyond ``max_bookings`` (at most :data:`MAX_REMOVES_PER_WRITE` per write), so a
store object that keeps booking a key keeps it at ``max_bookings + 1`` records at most. With
the defaults (64, 300 s) that is at most 2 WCU a booking for keys up to about 400 bytes. Store
objects that book once and leave never get to piggy-back a removal: a booking that finds more
than ``2 * max_bookings`` records sends one more write to prune (then up to 4 WCU each, once
per ``max_bookings`` bookings). A holder whose record was dropped and that books again gets a
new, later start: a slot wasted, never one too many (the bound counts bookings, not holders).

**TTL.** Every write sets ``expires_at`` to a whole second a day past the ``tat`` it expects,
on condition that the ``tat`` it finds is at least half a day below it, so the row always
outlives its ``tat`` by half a day: it expires only after half a day idle, when forgetting it
changes nothing (an absent ``tat`` books as an idle one does).

A booking whose caller never runs (its execution failed) is lost: a rate counts bookings, and
a lost one only lowers the achieved rate.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durable_semaphore.errors import ContentionError, InvalidArgumentError
from durable_semaphore.store.client import ConditionFailed, StoreIO, create_client
from durable_semaphore.store.core import MAX_ATTEMPTS
from durable_semaphore.store.expressions import Expr
from durable_semaphore.store.model import DEFAULT_TABLE_NAME
from durable_semaphore.store.schema import IDLE_GRACE_SECONDS, PK, SK, TTL_ATTRIBUTE, num
from durable_semaphore.store.validate import (
    validate_holder,
    validate_key,
    validate_rate,
    validate_table_name,
    validate_ttl,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

RATE_SK = "#rate"
TAT = "tat"
#: Booking records of the rate item start with this; nothing else there does.
BOOKING_PREFIX = "B#"

#: A record is kept at least this long after its start (a re-executed booking step comes
#: back within seconds to minutes of its first run)...
DEFAULT_KEEP_SECONDS = 300.0
#: ...unless the item would hold more records than this (each one makes every write dearer).
DEFAULT_MAX_BOOKINGS = 64
#: The most ``max_bookings`` can be: 8,192 records of 25 bytes stay far below DynamoDB's
#: 400 KB item limit even at twice that before a prune.
MAX_MAX_BOOKINGS = 4096
#: An update expression is at most 4 KB: a hundred ``#rN`` removals fit beside the booking.
MAX_REMOVES_PER_WRITE = 100
#: Keys whose last state a store object remembers.
CACHED_KEYS = 1024

IDLE, BURST, QUEUED = "idle", "burst", "queued"

# -- conditions on the rate item ---------------------------------------------------------------

#: The holder has no booking yet: a replay or an overlapping invocation of the same holder
#: never books a second start (its refusal carries the first one).
NOT_BOOKED = "attribute_not_exists(#b)"
#: The key is idle: nothing booked beyond now, so the start is now and ``tat`` restarts there
#: (a stale idle guess on a busy key would drop its backlog).
WAS_IDLE = "(attribute_not_exists(#tat) OR #tat <= :now)"
#: Within the burst: a start now is allowed (``tat - tau <= now``), but ``tat`` is ahead of
#: now and must grow from itself, not restart at now.
IN_BURST = "#tat > :now AND #tat <= :edge"
#: Backlogged beyond the burst: the start is ``tat - tau``, later than now (an earlier start
#: would exceed the rate).
BEYOND_BURST = "#tat > :edge"
#: The TTL this write sets outlives the new ``tat`` by half the grace (a ``tat`` that grew
#: since the writer last saw it could otherwise outlive its row).
COVERED = "#tat <= :covered"
#: A prune only touches an existing item (an UpdateItem would create a key-only row).
STILL_THERE = "attribute_exists(#tat)"


# -- the arithmetic ----------------------------------------------------------------------------


def reserve(
    tat: float | None, now: float, interval: float, tolerance: float
) -> tuple[float, float]:
    """GCRA: ``(start, new_tat)`` for a booking at ``now`` that finds ``tat`` (None: nothing
    booked), with emission interval ``interval`` (``per / rate``) and tolerance ``tolerance``
    (``(burst - 1) * interval``). Pure; what every booking write computes in DynamoDB."""
    if tat is None:
        return now, now + interval
    return max(now, tat - tolerance), max(tat, now) + interval


def window_bound(window: float, interval: float, burst: int) -> int:
    """The most starts any closed window of ``window`` seconds can hold:
    ``floor(window / interval) + burst`` (proved in the module docstring; exact when the
    arguments are exact, e.g. :class:`fractions.Fraction`)."""
    return math.floor(window / interval) + burst


def skew_window_bound(window: float, skew: float, interval: float, burst: int) -> int:
    """The same bound for true start times when every two callers' clocks are within ``skew``
    seconds of each other (or callers start up to ``skew`` late): the window widens by it."""
    return window_bound(window + skew, interval, burst)


def variant_for(tat: float | None, now: float, tolerance: float) -> str:
    """Which write books at ``now`` on a key whose ``tat`` is as given (see the table above)."""
    if tat is None or tat <= now:
        return IDLE
    if tat <= now + tolerance:
        return BURST
    return QUEUED


# -- the layout --------------------------------------------------------------------------------


def rate_key(key: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": RATE_SK}}


def booking_name(holder: str) -> str:
    """The rate item's attribute for ``holder``'s booking: 72 bits of its digest, as for a
    lease (:func:`durable_semaphore.store.schema.slot_name`); addressable without reading."""
    digest = hashlib.blake2b(holder.encode(), digest_size=9).digest()
    return BOOKING_PREFIX + base64.urlsafe_b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class RateState:
    """The rate item, parsed: its ``tat`` (None when absent) and booking records."""

    tat: float | None = None
    #: Booking attribute name -> the start it booked.
    bookings: dict[str, float] = field(default_factory=dict)
    expires_at: float | None = None

    @classmethod
    def parse(cls, item: Mapping[str, Any] | None) -> RateState:
        if not item:
            return cls()
        return cls(
            float(item[TAT]["N"]) if TAT in item else None,
            {
                name: float(value["N"])
                for name, value in item.items()
                if name.startswith(BOOKING_PREFIX)
            },
            float(item[TTL_ATTRIBUTE]["N"]) if TTL_ATTRIBUTE in item else None,
        )


@dataclass(frozen=True, slots=True)
class Booking:
    """A booked start. The caller starts at ``start`` (epoch seconds on the clock of whoever
    booked it), at once when that has passed."""

    start: float
    #: The clock reading of this call. For a fresh booking, when it was booked; for a
    #: replay, when the existing booking was found (the record keeps only the start).
    booked_at: float
    #: True when this call made the booking; False when it found the holder's earlier one.
    fresh: bool

    @property
    def delay(self) -> float:
        """How long this caller still waits: ``start - booked_at``, never below 0."""
        return max(0.0, self.start - self.booked_at)


def stale_bookings(
    bookings: Mapping[str, float], now: float, keep_seconds: float, max_bookings: int
) -> list[str]:
    """The records a write should remove: none while there are at most ``max_bookings / 2``
    (small items are cheap, and the common write stays bare); else those whose start is more
    than ``keep_seconds`` before ``now``, then the oldest beyond ``max_bookings``, oldest
    first, at most :data:`MAX_REMOVES_PER_WRITE`."""
    if len(bookings) <= max_bookings // 2:
        return []
    by_start = sorted(bookings, key=lambda name: (bookings[name], name))
    cutoff = now - keep_seconds
    doomed = [name for name in by_start if bookings[name] < cutoff]
    excess = len(by_start) - len(doomed) - max_bookings
    if excess > 0:
        doomed += [name for name in by_start if bookings[name] >= cutoff][:excess]
    return doomed[:MAX_REMOVES_PER_WRITE]


# -- requests ----------------------------------------------------------------------------------


def life_for(tat: float) -> int:
    """The rate item's TTL when its ``tat`` is about to be ``tat``: a day later, whole seconds."""
    return math.ceil(tat) + IDLE_GRACE_SECONDS


def book_request(
    key: str,
    name: str,
    variant: str,
    *,
    now: float,
    interval: float,
    tolerance: float,
    seen_tat: float | None,
    removes: Sequence[str] = (),
) -> dict[str, Any]:
    """One booking write of the given variant (see the module docstring), also removing the
    records ``removes``. ``seen_tat`` is the ``tat`` the variant was chosen from (None for
    idle); the TTL is set from it, on condition that the item's ``tat`` is no more than half
    the grace later. Returns the new item (``ALL_NEW``) or, refused, the old one."""
    expr = Expr(
        conditions=[NOT_BOOKED],
        names={"#b": name, "#tat": TAT, "#e": TTL_ATTRIBUTE},
        values={":T": num(interval)},
    )
    if variant == IDLE:
        expr.conditions.insert(0, WAS_IDLE)
        expr.sets += ["#tat = :now + :T", "#b = :now"]
        expr.values[":now"] = num(now)
        life = life_for(now + interval)
    else:
        if seen_tat is None:
            raise ValueError(f"the {variant} variant needs the tat it was chosen from")
        life = life_for(seen_tat + interval)
        expr.sets.append("#tat = #tat + :T")
        if variant == BURST:
            expr.conditions.insert(0, IN_BURST)
            expr.sets.append("#b = :now")
            expr.values[":now"] = num(now)
        else:
            expr.conditions.insert(0, BEYOND_BURST)
            expr.sets.append("#b = #tat - :tau")
            expr.values[":tau"] = num(tolerance)
        expr.conditions.append(COVERED)
        expr.values[":edge"] = num(now + tolerance)
        expr.values[":covered"] = num(life - IDLE_GRACE_SECONDS / 2 - interval)
    expr.sets.append("#e = :life")
    expr.values[":life"] = num(life)
    for n, victim in enumerate(removes):
        expr.names[f"#r{n}"] = victim
        expr.removes.append(f"#r{n}")
    kwargs = expr.update(rate_key(key))
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


def prune_request(key: str, removes: Sequence[str]) -> dict[str, Any]:
    """Remove booking records on their own (only when no booking write did it in time)."""
    expr = Expr(conditions=[STILL_THERE], names={"#tat": TAT})
    for n, victim in enumerate(removes):
        expr.names[f"#r{n}"] = victim
        expr.removes.append(f"#r{n}")
    kwargs = expr.update(rate_key(key), return_old=False)
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


# -- the store ---------------------------------------------------------------------------------


def _check_now(now: object) -> None:
    if now is not None and (
        isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now)
    ):
        raise InvalidArgumentError("now", now, "must be a finite number of epoch seconds")


class DynamoDBRateStore:
    """GCRA bookings per key on the lease table (``sk = "#rate"``, beside a key's counter).

    Thread-safe as far as boto3 clients are. ``clock`` returns epoch seconds. Each store object
    remembers the last state it saw of up to :data:`CACHED_KEYS` keys, to choose its writes:
    keep one per process (as the limiter keeps its semaphore), not one per call.
    """

    def __init__(
        self,
        table_name: str = DEFAULT_TABLE_NAME,
        client: DynamoDBClient | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        clock: Callable[[], float] = time.time,
        keep_seconds: float = DEFAULT_KEEP_SECONDS,
        max_bookings: int = DEFAULT_MAX_BOOKINGS,
    ) -> None:
        validate_table_name(table_name)
        self.keep_seconds = validate_ttl(keep_seconds, "keep_seconds")
        if (
            isinstance(max_bookings, bool)
            or not isinstance(max_bookings, int)
            or not 1 <= max_bookings <= MAX_MAX_BOOKINGS
        ):
            raise InvalidArgumentError(
                "max_bookings", max_bookings, f"must be an integer from 1 to {MAX_MAX_BOOKINGS:,}"
            )
        self.max_bookings = max_bookings
        if client is None:
            client = create_client(endpoint_url=endpoint_url, region_name=region_name)
        self.table_name = table_name
        self.client: DynamoDBClient = client
        self.io = StoreIO(client, table_name)
        self._clock = clock
        self._lock = threading.Lock()
        #: One booking at a time per key in this process: each then guesses its write from
        #: the state the one before it left, instead of a burst of threads all guessing from
        #: the same stale state and paying a refused write each.
        self._key_locks: dict[str, threading.Lock] = {}
        self._seen: OrderedDict[str, RateState] = OrderedDict()

    def now(self) -> float:
        """The store's clock: bookings without ``now=`` are made on it, and a caller waits
        until ``start`` on the same clock (another clock adds its skew to the bound)."""
        return self._clock()

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
        """Book ``holder`` a start under ``key``'s rate of ``rate`` starts per ``per`` seconds,
        up to ``burst`` at once; ``now`` defaults to the store's clock.

        Always succeeds: the start is ``now`` or later (wait until it). Idempotent per
        ``(key, holder)`` while the holder's record is kept: a second call returns the same
        start, ``fresh=False``, and books nothing. One UpdateItem when the store object's last
        look at the key still tells the right write (a backlogged key, or one this object
        keeps booking); one more per wrong guess, at most two. The rate is a parameter of each
        call, like a limit; callers sharing a key should agree on it.
        """
        key = validate_key(key)
        holder = validate_holder(holder)
        rate, per, burst = validate_rate(rate, per, burst)
        _check_now(now)
        interval = per / rate
        tolerance = (burst - 1) * interval
        with self._key_lock(key):
            now = float(self.now() if now is None else now)  # after the lock: not in the past
            name = booking_name(holder)
            seen = self._recall(key)
            if seen is not None and name in seen.bookings:
                return Booking(seen.bookings[name], now, fresh=False)
            state = seen or RateState()
            for _ in range(MAX_ATTEMPTS):
                variant = variant_for(state.tat, now, tolerance)
                removes = stale_bookings(state.bookings, now, self.keep_seconds, self.max_bookings)
                request = book_request(
                    key,
                    name,
                    variant,
                    now=now,
                    interval=interval,
                    tolerance=tolerance,
                    seen_tat=state.tat,
                    removes=removes,
                )
                try:
                    out = self.io.update(**request)
                except ConditionFailed as refused:
                    state = self._remember(key, refused.item)
                    if name in state.bookings:
                        # Booked before; or, when botocore resent this write, by its first try.
                        return Booking(state.bookings[name], now, fresh=refused.retried)
                    continue
                state = self._remember(key, out.get("Attributes"))
                start = state.bookings[name]
                if len(state.bookings) > 2 * self.max_bookings:
                    self._prune(key, state, now)
                return Booking(start, now, fresh=True)
        raise ContentionError(f"book({key!r}, {holder!r}) lost {MAX_ATTEMPTS} races")

    def peek(self, key: str) -> float | None:
        """The key's ``tat`` now (a strongly consistent read), None if nothing is booked.

        For status and observability: ``tat - tau - now`` is how far ahead the next start is
        booked. Bookings never need it."""
        key = validate_key(key)
        return self._remember(key, self.io.get(rate_key(key))).tat

    def state(self, key: str) -> RateState:
        """The whole rate item (strongly read): ``tat``, the booking records, the TTL."""
        key = validate_key(key)
        return self._remember(key, self.io.get(rate_key(key)))

    def forget_cache(self) -> None:
        """Drop what this object remembers of every key (the next booking of each guesses)."""
        with self._lock:
            self._seen.clear()

    def _prune(self, key: str, state: RateState, now: float) -> None:
        removes = stale_bookings(state.bookings, now, self.keep_seconds, self.max_bookings)
        if not removes:
            return
        try:
            out = self.io.update(**prune_request(key, removes))
        except ConditionFailed:
            return
        self._remember(key, out.get("Attributes"))

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                if len(self._key_locks) >= CACHED_KEYS:
                    self._key_locks.clear()  # idle keys' locks; a lock in use is still held
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def _recall(self, key: str) -> RateState | None:
        with self._lock:
            state = self._seen.get(key)
            if state is not None:
                self._seen.move_to_end(key)
            return state

    def _remember(self, key: str, item: Mapping[str, Any] | None) -> RateState:
        state = RateState.parse(item)
        with self._lock:
            self._seen[key] = state
            self._seen.move_to_end(key)
            while len(self._seen) > CACHED_KEYS:
                self._seen.popitem(last=False)
        return state


__all__ = [
    "BOOKING_PREFIX",
    "DEFAULT_KEEP_SECONDS",
    "DEFAULT_MAX_BOOKINGS",
    "RATE_SK",
    "TAT",
    "Booking",
    "DynamoDBRateStore",
    "RateState",
    "book_request",
    "booking_name",
    "reserve",
    "skew_window_bound",
    "stale_bookings",
    "variant_for",
    "window_bound",
]
