"""What the store hands back: leases, waiters, grants and the results of its operations.

Plain frozen values, so callers (the limiter, ``hold()``, the reaper, the CLI) never see an
item's encoding; :mod:`durable_semaphore.store.schema` turns items into these and back.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

DEFAULT_TABLE_NAME = "durable-semaphore"
DEFAULT_TTL_SECONDS = 86_400
#: How long a queue entry lives without its waiter checking in. A waiter refreshes it on every
#: check; one that stops (its branch or execution ended) drops out after this.
DEFAULT_QUEUE_TTL_SECONDS = 900
#: Others reclaim a lease only once it is expired by more than this (clocks differ).
DEFAULT_CLOCK_SKEW_SECONDS = 30.0
#: A queue entry with a priority or a group is numbered ``ORDERED_BASE + rank * TIE_SPACE +
#: (arrival % TIE_SPACE)``: one integer of at most 38 digits (what a DynamoDB number holds)
#: that names its place, orders it by rank and then arrival, and sits above every plain
#: arrival number, so its sort key is derived from the number alone (see store/ordering.py).
ORDERED_BASE = 10**37
TIE_SPACE = 10**18

#: States of a lease: held by its owner, or handed to a waiter that has not claimed it yet.
#: QUEUED is a waiter's marker, never a slot.
HELD = "held"
QUEUED = "queued"
GRANTED = "granted"


def new_token() -> str:
    """A fresh fencing token (128 random bits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Lease:
    """One held slot (or, with ``state == QUEUED``, a queue marker). Times are epoch seconds."""

    key: str
    holder: str
    acquired_at: float
    expires_at: float
    execution_arn: str | None = None
    state: str = HELD
    #: The lease's generation: pass it to ``release``/``renew`` so that a lease you no longer
    #: own (expired and granted again under the same holder id) is never touched by you.
    token: str | None = None
    #: Units of the limit the lease holds (``weight=`` at acquire).
    weight: int = 1

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    @property
    def holds_slot(self) -> bool:
        """True for a held or granted lease, False for a queue marker."""
        return self.state != QUEUED


@dataclass(frozen=True, slots=True)
class Waiter:
    """One entry of a key's wait queue; the queue is ordered by :attr:`rank`, then arrival.

    ``seq`` names the entry (the position its acquire returned): its arrival number for a
    plain waiter, an ordered number (see :data:`ORDERED_BASE`) for one with a priority or a
    group.
    """

    key: str
    holder: str
    seq: int
    expires_at: float
    lease_ttl_seconds: float
    execution_arn: str | None = None
    callback_id: str | None = None
    #: Callbacks to try, in order, when ``callback_id`` has already timed out.
    spare_callback_ids: tuple[str, ...] = ()
    #: Units of the limit it waits for, and the limit it waits under.
    weight: int = 1
    limit: int | None = None
    #: ``acquire(priority=..., group=...)``; ``tag`` is a grouped entry's virtual start tag.
    priority: int = 0
    group: str | None = None
    tag: int | None = None

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    @property
    def rank(self) -> int:
        """Where the entry stands: lower goes first (its arrival number when plain)."""
        if self.seq < ORDERED_BASE:
            return self.seq
        return (self.seq - ORDERED_BASE) // TIE_SPACE


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot this call handed to a waiter. The caller wakes it (callback or local signal)."""

    key: str
    holder: str
    execution_arn: str | None
    callback_id: str | None
    spare_callback_ids: tuple[str, ...] = ()
    #: The fencing token of the granted lease (the waiter may be told it with the wake-up).
    token: str | None = None


def grant_of(waiter: Waiter, token: str) -> Grant:
    """The grant that tells a waiter's caller whom to wake, and with which token."""
    return Grant(
        waiter.key,
        waiter.holder,
        waiter.execution_arn,
        waiter.callback_id,
        waiter.spare_callback_ids,
        token,
    )


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """What :meth:`DynamoDBSemaphore.acquire` did.

    ``lease`` is set when the holder owns a slot; otherwise ``position`` is its queue sequence
    number when it waits (None when it was refused without queueing). ``grants`` are slots this
    call handed to *other* waiters while repairing the key; wake them.
    """

    lease: Lease | None
    position: int | None = None
    grants: tuple[Grant, ...] = ()
    #: On joining the queue: about how many waiters are ahead (None when not just queued).
    ahead: int | None = None

    @property
    def held(self) -> bool:
        return self.lease is not None

    @property
    def queued(self) -> bool:
        return self.lease is None and self.position is not None

    def with_grants(self, grants: list[Grant]) -> AcquireResult:
        """This result, carrying also the slots the call handed to others on the way."""
        if not grants:
            return self
        return dataclasses.replace(self, grants=tuple(grants) + self.grants)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What :meth:`DynamoDBSemaphore.release_slot` did.

    ``released`` is True only if this call freed a live slot. ``grants`` name the waiters
    that received its units (wake them: with weights, one release can admit several, or
    none when the head of the queue needs more); ``left_queue`` is True when the holder was a
    waiter and its queue entry was removed instead.
    """

    released: bool
    grants: tuple[Grant, ...] = ()
    left_queue: bool = False

    @property
    def grant(self) -> Grant | None:
        """The first waiter admitted (the only one when every weight is 1)."""
        return self.grants[0] if self.grants else None


@dataclass(frozen=True, slots=True)
class SlotCount:
    """The counter as stored: ``count`` includes expired leases not yet reclaimed."""

    count: int
    version: int
    waiters: int = 0


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    """What :meth:`DynamoDBSemaphore.reclaim` did: expired leases removed, slots freed, and
    slots handed to waiters."""

    deleted: int
    freed: int
    grants: tuple[Grant, ...]
