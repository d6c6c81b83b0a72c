"""The store half of the limiter facade: every call the package makes to the lease store.

:class:`~durable_semaphore.limiter.DynamoDBLimiter` derives from :class:`StoreAccess`, so the
SDK integration, ``hold()``, the reaper and the CLI call limiter methods only, never the
:class:`~durable_semaphore.store.DynamoDBSemaphore` behind them. This module holds the thin
ones (reads, renewals, scans, table admin); the limiter adds the ones that wake waiters
(acquire, release). Each delegates with the limiter's table, client and lease TTL.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from durable_semaphore import deadline as budget
from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.settings import resolve_table_name
from durable_semaphore.store import (
    DynamoDBSemaphore,
    Grant,
    Lease,
    ReclaimResult,
    SlotCount,
    Waiter,
    validate_clock_skew,
)
from durable_semaphore.store.overrides import StoredLimit
from durable_semaphore.store.shards import override_shares, shard_key, shard_limit
from durable_semaphore.store.validate import validate_key, validate_limit

__all__ = ["CODE", "SET_LIMIT", "LimitInForce", "StoreAccess", "limit_of"]

#: Where a limit in force comes from (:attr:`LimitInForce.source`).
SET_LIMIT = "set-limit"
CODE = "code"


class LimitInForce(NamedTuple):
    """The limit admissions on a key count against, and where it comes from: ``"set-limit"``
    (set at run time, at ``set_at``), or ``"code"`` (the limit the callers pass: the one
    given, else the one the counter last recorded; None when neither is known)."""

    limit: int | None
    source: str
    set_at: float | None = None

    def describe(self) -> str:
        """``8 (set-limit at 2026-12-06T09:40Z)`` or ``5 (code)``, as ``status`` shows it."""
        shown = "unknown" if self.limit is None else str(self.limit)
        if self.source == SET_LIMIT and self.set_at is not None:
            when = datetime.datetime.fromtimestamp(self.set_at, datetime.UTC)
            return f"{shown} (set-limit at {when.strftime('%Y-%m-%dT%H:%MZ')})"
        return f"{shown} ({self.source})"


def _check_store_options(
    semaphore: DynamoDBSemaphore | None,
    table_name: str | None,
    client: Any,
    clock_skew_seconds: float | None,
) -> None:
    """A ready store (``semaphore=``) excludes the options that would build another one."""
    if semaphore is not None and (table_name is not None or client is not None):
        raise InvalidArgumentError(
            "semaphore", semaphore, "pass either semaphore or table_name/client, not both"
        )
    if clock_skew_seconds is not None:
        validate_clock_skew(clock_skew_seconds)
        if semaphore is not None:
            raise InvalidArgumentError(
                "clock_skew_seconds",
                clock_skew_seconds,
                "set it on the DynamoDBSemaphore you pass (semaphore=), not on both",
            )


def limit_of(stored: list[StoredLimit], code_limit: int | None) -> LimitInForce:
    """The limit in force over the stored keys of one logical key (its shards, in order):
    each one's override, else its share of ``code_limit``, else the code's limit it last
    recorded; the source is ``"set-limit"`` (at the latest setting) when any has one."""
    total: int | None = 0
    for index, one in enumerate(stored):
        share = shard_limit(code_limit, len(stored), index) if code_limit else one.code_limit
        part = one.override if one.override is not None else share
        total = None if total is None or part is None else total + part
    set_at = [one.set_at for one in stored if one.set_at is not None]
    if set_at:
        return LimitInForce(total, SET_LIMIT, max(set_at))
    return LimitInForce(total, CODE)


class StoreAccess:
    """The lease store of one table, created on first use, behind thin delegating methods.

    ``ttl_seconds`` is the lifetime of the leases this facade takes and renews (a caller with
    its own, like a hold, passes it per call).
    """

    def __init__(
        self,
        *,
        table_name: str | None,
        client: Any,
        semaphore: DynamoDBSemaphore | None,
        clock_skew_seconds: float | None,
        ttl_seconds: float,
    ) -> None:
        _check_store_options(semaphore, table_name, client, clock_skew_seconds)
        #: Others reclaim a lease only once it is expired by more than this (None: the
        #: store's default, 30 s). See :class:`DynamoDBSemaphore`.
        self.clock_skew_seconds = clock_skew_seconds
        #: The table: as given, or the ``semaphore``'s; None: ``$DURABLE_SEMAPHORE_TABLE``
        #: (else the default) at first use.
        self.table_name = semaphore.table_name if semaphore is not None else table_name
        self.client = client
        self.ttl_seconds = float(ttl_seconds)
        self._semaphore = semaphore
        self._lock = threading.Lock()

    @property
    def semaphore(self) -> DynamoDBSemaphore:
        """The lease store, created on first use (creating a boto3 client costs tens of ms).

        For tests and tools that need the raw store; the package itself calls the methods of
        this facade. With no ``client``, a missing region or a malformed endpoint URL in the
        environment raises :class:`~durable_semaphore.errors.ConfigurationError` here, at the
        first use, rather than botocore's ``NoRegionError``; nothing is cached, so a fixed
        environment works at the next use.
        """
        if self._semaphore is None:
            with self._lock:
                if self._semaphore is None:
                    kwargs: dict[str, Any] = {}
                    if self.clock_skew_seconds is not None:
                        kwargs["clock_skew_seconds"] = self.clock_skew_seconds
                    self._semaphore = DynamoDBSemaphore(
                        table_name=resolve_table_name(self.table_name),
                        client=self.client,
                        **kwargs,
                    )
        return self._semaphore

    # -- time and deadlines ----------------------------------------------------------------------

    def now(self) -> float:
        """The store's clock: callers judge expiry (and waits) the way the store does."""
        return self.semaphore.now()

    def guard_deadlines(self) -> None:
        """Make the store's requests respect :mod:`~durable_semaphore.deadline` budgets, so a
        blocking caller (a hold) stops retrying at its deadline; idempotent."""
        budget.guard(self.semaphore.client)

    def reclaimable(self, lease: Lease, now: float) -> bool:
        """Whether anyone may reclaim ``lease`` at ``now`` (the store's rule): a lease once
        expired by more than the clock-skew margin, a queue marker as soon as it expired."""
        margin = self.semaphore.clock_skew_seconds if lease.holds_slot else 0.0
        return lease.expires_at + margin <= now

    # -- one key -------------------------------------------------------------------------------

    def place(self, key: str, holder: str, limit: int | None) -> tuple[str, int | None]:
        """The stored key of ``holder`` under ``key`` (the limiter shards; see there)."""
        return key, limit

    def stored_keys(self, key: str, limit: int | None) -> list[str]:
        """Every stored key of the logical ``key`` (the limiter shards; see there)."""
        return [key]

    def renew(
        self,
        key: str,
        holder: str,
        *,
        ttl_seconds: float | None = None,
        token: str | None = None,
        limit: int | None = None,
    ) -> Lease | None:
        """Extend ``holder``'s live lease (the limiter's TTL unless given); never takes a new
        slot, so None means the lease was lost. ``token`` fences to that generation; ``limit``
        makes ``key`` a logical key (see ``place``)."""
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        stored, _ = self.place(key, holder, limit)
        return self.semaphore.renew(stored, holder, ttl, token=token)

    def entries(
        self, key: str, prefix: str | None = None, *, limit: int | None = None
    ) -> list[Lease]:
        """Live leases and queue markers on ``key`` (holder ids starting with ``prefix``): what
        a map's sweep frees and what ``durable-semaphore status`` shows. With ``limit``,
        ``key`` is a logical key and every shard of it is read."""
        found: list[Lease] = []
        for stored in self.stored_keys(key, limit):
            found.extend(self.semaphore.entries(stored, prefix))
        return found

    def waiters(self, key: str) -> list[Waiter]:
        """The wait queue of ``key``, oldest first, dead entries included (for status)."""
        return self.semaphore.waiters(key)

    def slot_count(self, key: str) -> SlotCount:
        """The stored counters of ``key`` (expired leases included), for diagnostics."""
        return self.semaphore.slot_count(key)

    def reclaim(self, key: str) -> ReclaimResult:
        """Free the expired leases and queue markers of ``key``; the caller wakes the grants."""
        return self.semaphore.reclaim(key)

    def forget_if_idle(self, key: str, *, limit: int | None = None) -> bool:
        """Drop the counter of a key nobody holds or waits on (a finished map's own key);
        with ``limit``, of every shard of the logical ``key``. True if all went."""
        gone = [self.semaphore.forget_if_idle(stored) for stored in self.stored_keys(key, limit)]
        return all(gone)

    # -- the whole table -------------------------------------------------------------------------

    def scan_leases(self, *, page_size: int | None = None) -> Iterator[Lease]:
        """Every lease and queue marker in the table, expired ones included (for the reaper)."""
        return self.semaphore.scan_leases(page_size=page_size)

    def scan_waiters(self, *, page_size: int | None = None) -> Iterator[Waiter]:
        """Every queue entry in the table (for the reaper's orphan count)."""
        return self.semaphore.scan_waiters(page_size=page_size)

    def check_table(self) -> None:
        """Raise unless the table exists and is a lease table: a Scan alone cannot tell."""
        self.semaphore.check_table()

    def create_table(self, *, wait: bool = True) -> bool:
        """Create the lease table if missing (True if this call did); for the CLI and tests."""
        return self.semaphore.create_table(wait=wait)

    # -- limits set at run time -------------------------------------------------------------------

    def set_limit(
        self,
        key: str,
        limit: int,
        *,
        code_limit: int | None = None,
        shards: int | None = None,
        wake: bool = True,
    ) -> tuple[Grant, ...]:
        """Make ``limit`` the limit of the logical ``key``, whatever the code passes, until
        :meth:`clear_limit`. A sharded limit (``code_limit`` with the limiter's shards, or
        ``shards``, the count its keys are stored in) gives each shard its share of ``limit``
        by the code's rule; a limit below the shard count is refused.

        Raising admits waiters at once (woken here unless ``wake=False``; the grants come
        back either way); lowering revokes nobody (store/overrides.py). Nothing is written on
        bad input.
        """
        validate_limit(limit)
        keys = self._limit_keys(key, code_limit, shards)
        shares = override_shares(limit, len(keys))
        grants: list[Grant] = []
        for stored, share in zip(keys, shares, strict=True):
            grants.extend(self.semaphore.set_limit(stored, share))
        if wake:
            self._wake_all(grants)
        return tuple(grants)

    def clear_limit(
        self,
        key: str,
        *,
        code_limit: int | None = None,
        shards: int | None = None,
        wake: bool = True,
    ) -> tuple[Grant, ...]:
        """Return the logical ``key`` to the code's limit (see :meth:`set_limit` for
        ``code_limit`` and ``shards``). Waiters that now fit are admitted and woken."""
        keys = self._limit_keys(key, code_limit, shards)
        grants: list[Grant] = []
        for index, stored in enumerate(keys):
            share = shard_limit(code_limit, len(keys), index) if code_limit else None
            grants.extend(self.semaphore.clear_limit(stored, share))
        if wake:
            self._wake_all(grants)
        return tuple(grants)

    def limit_in_force(
        self, key: str, code_limit: int | None = None, *, shards: int | None = None
    ) -> LimitInForce:
        """The limit of the logical ``key`` now, and its source: one read per stored key.
        Over shards, the shares add up (each shard's override, else its share of the code's
        limit); the source is ``"set-limit"`` when any shard has one."""
        keys = self._limit_keys(key, code_limit, shards)
        return limit_of([self.stored_limit(one) for one in keys], code_limit)

    def stored_limit(self, key: str) -> StoredLimit:
        """What the counter of the stored ``key`` says of its limit (one read)."""
        return self.semaphore.read_limit(key)

    def _limit_keys(self, key: str, code_limit: int | None, shards: int | None) -> list[str]:
        """The stored keys of the logical ``key``: ``shards`` of them when given (the count
        ``status`` shows), else as the code's limit places them (see ``stored_keys``)."""
        validate_key(key)
        if code_limit is not None:
            validate_limit(code_limit)
        if shards is None:
            return self.stored_keys(key, code_limit)
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise InvalidArgumentError("shards", shards, "must be an integer >= 1 or None")
        return [shard_key(key, shards, index) for index in range(shards)]

    def _wake_all(self, grants: list[Grant]) -> None:
        """Wake the waiters a limit change admitted, as a release does (the limiter's
        ``wake``; a bare store access has none, and its waiters find the slot when they
        next check)."""
        wake = getattr(self, "wake", None)
        if callable(wake):
            for grant in grants:
                wake(grant)
