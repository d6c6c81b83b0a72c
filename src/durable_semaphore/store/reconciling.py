"""Repairs: removing expired leases, correcting the count, serving a queue left behind."""

from __future__ import annotations

from dataclasses import dataclass

from durable_semaphore import observability
from durable_semaphore.errors import ContentionError
from durable_semaphore.store import reconcile, requests
from durable_semaphore.store.client import ConditionFailed
from durable_semaphore.store.core import MAX_ATTEMPTS, backoff
from durable_semaphore.store.model import Grant, ReclaimResult
from durable_semaphore.store.queueing import Queueing
from durable_semaphore.store.schema import QUEUE_PREFIX, Meta, waiter_from_item
from durable_semaphore.store.validate import validate_key


@dataclass(frozen=True, slots=True)
class _Pass:
    """A reconcile's result, and whether it wrote every batch its read called for."""

    result: ReclaimResult
    complete: bool
    #: Queue entries the read counted (``nwait``).
    waiting: int = 0


class Reconciling(Queueing):
    """Reconcile, reclaim and the idle counter."""

    def reclaim(self, key: str) -> ReclaimResult:
        """Free the slots of expired leases (expired by more than the skew margin) and fix the
        count, handing freed slots to waiters; returns what it did and whom it granted.

        One read of the key, then one write per 400 expired leases; it reads again only when
        another writer cut the chain short.
        """
        validate_key(key)
        total = ReclaimResult(0, 0, ())
        for attempt in range(MAX_ATTEMPTS):
            outcome = self._reconcile_pass(key, force=False)
            if outcome is not None:
                done = outcome.result
                total = ReclaimResult(
                    total.deleted + done.deleted,
                    total.freed + done.freed,
                    total.grants + done.grants,
                )
                if outcome.complete:
                    if outcome.waiting > 0 and self._drop_dead_waiters(key):
                        meta = self._read_meta(key)
                        if meta.nwait > 0 and _room(meta, meta.count):
                            grants = tuple(self._fill(key, _code_limit(meta)))
                            total = ReclaimResult(total.deleted, total.freed, total.grants + grants)
                    return total
            backoff(attempt)
        raise ContentionError(f"reclaim_expired({key!r}) lost {MAX_ATTEMPTS} races")

    def reclaim_expired(self, key: str) -> int:
        """:meth:`reclaim`, returning only the number of slots freed."""
        return self.reclaim(key).freed

    def forget_if_idle(self, key: str) -> bool:
        """Delete the counter item of ``key`` if no lease is counted and nobody waits.

        One conditional request, for a caller that knows a key's users are done with it (the
        SDK integration, when a map with a per-operation key returns); an idle key that is
        not forgotten expires on its own (its TTL). Harmless if the key is in use again: an
        acquire recreates the counter.
        """
        validate_key(key)
        return self._delete_idle_counter(key, None)

    def _drop_dead_waiters(self, key: str) -> int:
        """Remove every queue entry whose waiter stopped checking in (and its marker). For
        an explicit reclaim (the reaper, the CLI): a refused acquire only drops the dead
        waiters it meets at the head of the queue."""
        now = self._clock()
        entries = (waiter_from_item(item) for item in self._query_items(key, QUEUE_PREFIX))
        dead = [waiter for waiter in entries if not waiter.is_live(now)]
        for waiter in dead:
            self._drop_waiter(key, waiter)
        return len(dead)

    def _delete_idle_counter(self, key: str, version: int | None) -> bool:
        try:
            self.io.delete(**requests.delete_idle_counter(key, version))
        except ConditionFailed:
            return False
        return True

    def _reconcile(self, key: str, *, force: bool = False) -> ReclaimResult | None:
        """Make the count equal the live leases, removing every lease expired by more than
        the skew margin. None when another writer changed the key before anything was
        written (the caller retries). Freed slots go to live waiters first."""
        outcome = self._reconcile_pass(key, force=force)
        return None if outcome is None else outcome.result

    def _reconcile_pass(self, key: str, *, force: bool) -> _Pass | None:
        now = self._clock()
        meta = self._read_meta(key)
        plan = reconcile.plan(meta, cutoff=now - self.clock_skew_seconds)
        if plan.idle and plan.settled:
            self._delete_idle_counter(key, meta.version)
            return _Pass(ReclaimResult(0, 0, ()), complete=True)
        if plan.settled and not force:
            return _Pass(self._settle(key, meta, plan.hint), complete=True, waiting=meta.nwait)
        return self._run_batches(key, meta, plan)

    def _settle(self, key: str, meta: Meta, hint: float | None) -> ReclaimResult:
        """Nothing to remove and the count is right: hand free slots to waiters and raise a
        stale expiry hint, so refusals stop reconciling for nothing."""
        observability.lease_in_flight(key, meta.count)
        grants: list[Grant] = []
        if meta.nwait > 0 and _room(meta, meta.count):
            grants = self._fill(key, _code_limit(meta))
        if meta.hint != hint and hint is not None:
            self._update_or_none(requests.set_hint(key, meta.version, hint))
        return ReclaimResult(0, 0, tuple(grants))

    def _run_batches(self, key: str, meta: Meta, plan: reconcile.Plan) -> _Pass | None:
        """Write the planned batches in order without reading between them, until one is
        refused (another writer moved the key: the caller reads again); then hand the freed
        slots to waiters, once."""
        done: list[reconcile.Batch] = []
        if plan.idle:
            try:
                self.io.delete(**requests.delete_expired_counter(key, meta.version))
                done = plan.batches
            except ConditionFailed:
                pass
        else:
            for batch in plan.batches:
                write = requests.reconcile(
                    key, batch.version, batch.removes, batch.count, batch.hint
                )
                if not self._update_or_none(write):
                    break
                done.append(batch)
                observability.lease_reclaimed(key, len(batch.removes), in_flight=batch.count)
        if not done:
            return None
        count = done[-1].count
        grants: list[Grant] = []
        if meta.nwait > 0 and _room(meta, count):
            grants = self._fill(key, _code_limit(meta))
        deleted = sum(len(batch.removes) for batch in done)
        result = ReclaimResult(deleted, max(0, meta.count - count), tuple(grants))
        return _Pass(result, complete=len(done) == len(plan.batches), waiting=meta.nwait)

    def _serve_queue(self, key: str, limit: int, meta: Meta) -> list[Grant]:
        """Free the slots of expired leases and hand free slots to the oldest waiters.

        What a refused newcomer does, done by a waiter whose check-in found the key not full
        of live leases, so that waiters alone keep the queue moving.
        """
        outcome = self._reconcile(key)
        if outcome is not None and (outcome.grants or outcome.freed or outcome.deleted):
            return list(outcome.grants)
        if meta.count < meta.in_force(limit) and meta.nwait > 0:
            return self._fill(key, limit)
        return list(outcome.grants) if outcome is not None else []


def _code_limit(meta: Meta) -> int:
    """The code's limit as the counter last recorded it (``lim``); the override stands in
    where none was recorded. Only called when :func:`_room` found one of them."""
    return meta.limit or meta.override or 0


def _room(meta: Meta, count: int) -> bool:
    """Whether ``count`` units leave room under the limit in force as ``meta`` records it."""
    limit = meta.override if meta.override is not None else meta.limit
    return bool(limit) and count < (limit or 0)
