"""The store's one class: a counting semaphore per key, with idempotent, identity-based
leases and a FIFO queue with hand-off. Its layers live in the modules it inherits from."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store import admin
from durable_semaphore.store.acquiring import Attempt, callbacks_of
from durable_semaphore.store.client import create_client
from durable_semaphore.store.limits import Overriding
from durable_semaphore.store.model import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    DEFAULT_QUEUE_TTL_SECONDS,
    DEFAULT_TABLE_NAME,
    DEFAULT_TTL_SECONDS,
    AcquireResult,
    Lease,
    SlotCount,
    Waiter,
)
from durable_semaphore.store.ordering import DEFAULT_AGING
from durable_semaphore.store.schema import (
    HOLDER_PREFIX,
    QUEUE_PREFIX,
    marker_lease,
    waiter_from_item,
)
from durable_semaphore.store.validate import (
    validate_aging,
    validate_arn,
    validate_clock_skew,
    validate_group,
    validate_holder,
    validate_key,
    validate_limit,
    validate_position,
    validate_priority,
    validate_table_name,
    validate_token,
    validate_ttl,
    validate_weight,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any


class DynamoDBSemaphore(Overriding):
    """A counting semaphore per key, with idempotent, identity-based leases and a FIFO queue.

    Thread-safe as far as boto3 clients are (a client may be shared between threads).
    ``clock`` returns epoch seconds; inject one to test expiry without sleeping.

    Clocks differ between clients, so expiry is judged with a margin: an owner treats its
    lease as ending at ``expires_at`` (its renew and release use its own clock), but others
    reclaim it only once it is expired by more than ``clock_skew_seconds``. No slot is ever
    over-admitted while the clocks of the clients sharing a key differ by less than that.

    ``aging`` is what one priority level is worth in the queue, in rank units (a second of
    arrival for an ungrouped waiter, one turn of its group for a grouped one): a waiter is
    passed by waiters of higher priority only within that many units per level (the bound is
    in :mod:`durable_semaphore.store.ordering`).
    """

    def __init__(
        self,
        table_name: str = DEFAULT_TABLE_NAME,
        client: DynamoDBClient | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        clock: Callable[[], float] = time.time,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
        aging: int = DEFAULT_AGING,
    ) -> None:
        validate_table_name(table_name)
        skew = validate_clock_skew(clock_skew_seconds)
        order_aging = validate_aging(aging)
        if client is None:
            # Our errors, not botocore's, for no region or a malformed endpoint URL.
            client = create_client(endpoint_url=endpoint_url, region_name=region_name)
        super().__init__(table_name, client, clock, skew)
        self.aging = order_aging

    # -- the table ----------------------------------------------------------------------------

    def create_table(self, *, wait: bool = True) -> bool:
        """Create the lease table if missing; returns True if this call created it.

        Idempotent. Raises :class:`TableSchemaError` for an existing table whose key names,
        key types or key attribute types are not ours (no request of ours could succeed on it;
        it is left untouched), and enables TTL on ``expires_at`` (the template does the same),
        so idle rows are deleted.
        """
        return admin.create_table(self.io, wait=wait)

    def check_table(self) -> None:
        """Raise :class:`TableNotFoundError` or :class:`TableSchemaError` unless the table
        exists and takes lease keys (see :func:`durable_semaphore.store.admin.check_table`)."""
        admin.check_table(self.io)

    # -- acquiring ----------------------------------------------------------------------------

    def try_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        execution_arn: str | None = None,
    ) -> Lease | None:
        """Take a slot for ``holder`` under ``key`` if fewer than ``limit`` live leases exist
        and nobody waits in the queue; never queues.

        Idempotent per ``(key, holder)``: a holder that already holds a live lease gets it back,
        with its expiry extended to at least now + ``ttl_seconds``; it never takes a second slot.
        A holder that was handed a slot while queued gets it. Returns None when the semaphore is
        full (or others wait ahead).
        """
        return self.acquire(
            key, holder, limit, ttl_seconds, execution_arn=execution_arn, enqueue=False
        ).lease

    def acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        execution_arn: str | None = None,
        enqueue: bool = True,
        position: int | None = None,
        callback_id: str | None = None,
        spare_callback_ids: tuple[str, ...] = (),
        queue_ttl_seconds: float = DEFAULT_QUEUE_TTL_SECONDS,
        token: str | None = None,
        queue_first: bool = False,
        weight: int = 1,
        priority: int = 0,
        group: str | None = None,
    ) -> AcquireResult:
        """Take a slot, or join the key's FIFO queue and wait for one to be handed over.

        Idempotent per ``(key, holder)`` whatever state the holder is in: a live lease is
        renewed and returned, a granted slot is claimed and returned, a queued holder keeps its
        place (its entry is refreshed for ``queue_ttl_seconds`` and ``callback_id`` recorded,
        so a releaser can wake it; ``spare_callback_ids`` are tried in order when that one has
        timed out). ``position``, the sequence number a previous call returned,
        saves a round trip for a holder that knows it waits. ``token`` is the fencing token a
        fresh lease gets (default: a new random one); a caller that records nothing can derive
        it again on replay. ``queue_first`` (a caller that was just refused) tries to join the
        queue before trying for a slot: one request instead of two when the key is still full.
        ``weight`` is how many units of the limit the holder takes (1 to ``limit``): a lease
        holds them all or none, and the queue serves its head first whatever it weighs.
        ``priority`` (-1000 to 1000, higher first) and ``group`` (a name; groups take turns,
        FIFO within one) decide where a waiter queues (:mod:`.ordering`: each priority level
        is worth ``aging`` rank units, so no waiter starves); with neither it queues by
        arrival, as it always did. They never let a newcomer past a waiter to a free slot.
        Nothing is written on bad input.
        """
        validate_key(key)
        validate_holder(holder)
        validate_limit(limit)
        call = Attempt(
            key=key,
            holder=holder,
            limit=limit,
            ttl=validate_ttl(ttl_seconds),
            queue_ttl=validate_ttl(queue_ttl_seconds, "queue_ttl_seconds"),
            execution_arn=validate_arn(execution_arn),
            callbacks=callbacks_of(callback_id, spare_callback_ids),
            token=validate_token(token),
            weight=validate_weight(weight, limit),
            priority=validate_priority(priority),
            group=validate_group(group),
        )
        validate_position(position)
        # Arrival order is the order of first tries: the queue number is stamped once, before
        # the first attempt to join, and every retry of this call (ours or botocore's) joins
        # under it.
        call.arrival = self._next_seq(self._clock())
        return self._acquire(call, position, queue_first, enqueue)

    # -- reading ------------------------------------------------------------------------------

    def holders(self, key: str, prefix: str | None = None) -> list[Lease]:
        """Live (unexpired) leases on ``key`` (held or granted, not queued), strongly read.

        ``prefix`` narrows to holder ids starting with it (the SDK integration names holders
        ``<execution>#<map op>#<branch op>``, so a prefix selects one map's leases).
        """
        validate_key(key)
        prefix = _prefix(prefix)
        now = self._clock()
        return sorted(
            (
                lease
                for lease in self._read_meta(key).leases.values()
                if lease.is_live(now) and lease.holder.startswith(prefix)
            ),
            key=lambda lease: lease.holder,
        )

    def entries(self, key: str, prefix: str | None = None) -> list[Lease]:
        """Live leases on ``key`` and its waiters' markers (``state == QUEUED``)."""
        leases = self.holders(key, prefix)
        now = self._clock()
        markers = [
            marker_lease(item) for item in self._query_items(key, HOLDER_PREFIX + _prefix(prefix))
        ]
        return leases + [marker for marker in markers if marker.is_live(now)]

    def waiters(self, key: str) -> list[Waiter]:
        """The wait queue of ``key`` in the order it is served (dead entries included until
        dropped): by rank, then arrival; by arrival alone without priorities or groups."""
        validate_key(key)
        return [waiter_from_item(item) for item in self._query_items(key, QUEUE_PREFIX)]

    def slot_count(self, key: str) -> SlotCount:
        """The stored counter, for diagnostics and tests: it includes unreclaimed expired leases."""
        validate_key(key)
        meta = self._read_meta(key)
        return SlotCount(meta.count, meta.version, meta.nwait)

    def scan_leases(self, *, page_size: int | None = None) -> Iterator[Lease]:
        """Every lease in the table, expired ones and waiters' markers included (for the
        reaper and the CLI).

        ``page_size`` caps the items DynamoDB reads per Scan request (before the filter drops
        queue items), which bounds the read capacity one request consumes; None lets DynamoDB
        fill 1 MB pages.
        """
        return admin.scan_leases(self.io, page_size)

    def scan_waiters(self, *, page_size: int | None = None) -> Iterator[Waiter]:
        """Every queue entry in the table (for the CLI, the reaper and the demo's final check)."""
        return admin.scan_waiters(self.io, page_size)


def _prefix(prefix: object) -> str:
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidArgumentError("prefix", prefix, "must be a string or None")
    return prefix or ""
