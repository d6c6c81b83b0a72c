"""The queue: handing slots to the oldest live waiter, filling free slots, dropping the dead.

Each primitive returns what happened (a release result, grants, or "look again") and never
decides for its caller what to do next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from dataclasses import dataclass

from durable_semaphore import observability
from durable_semaphore.store import ordering, queue_requests, requests
from durable_semaphore.store.client import Cancelled, ConditionFailed, failed
from durable_semaphore.store.core import MAX_ATTEMPTS, StoreCore, backoff
from durable_semaphore.store.model import (
    GRANTED,
    Grant,
    Lease,
    ReleaseResult,
    Waiter,
    grant_of,
    new_token,
)
from durable_semaphore.store.queue_requests import Handover
from durable_semaphore.store.requests import Fence
from durable_semaphore.store.schema import (
    QUEUE_PREFIX,
    SEQ,
    SK,
    STATE,
    Meta,
    encode_lease,
    holder_key,
    meta_key,
    slot_name,
)
from durable_semaphore.store.validate import MAX_LIMIT


@dataclass(frozen=True, slots=True)
class LookAgain:
    """A hand-off that could not be made as planned: read the queue (or the key) again."""


#: The releaser's own lease expired on its clock but is still counted: remove it by exactly
#: this expiry (a release then reports that no live slot was freed).
@dataclass(frozen=True, slots=True)
class ExpiredOwn:
    expires_at: float


@dataclass(frozen=True, slots=True)
class HeadTooHeavy:
    """The queue's head needs more units than the releaser's would leave it: the releaser
    frees its units past the queue, and whoever fits is served from what is free."""


HandoffOutcome = ReleaseResult | ExpiredOwn | LookAgain | HeadTooHeavy


def releasable(lease: Lease | None, fence: Fence) -> bool:
    """Whether the fence's conditions hold for ``lease`` (what the write checks, in Python,
    to tell which condition a refusal failed)."""
    if lease is None:
        return False
    if fence.token is not None and lease.token != fence.token:
        return False
    if fence.only_granted and lease.state != GRANTED:
        return False
    if fence.seen_expiry is not None:
        return lease.expires_at == fence.seen_expiry
    return lease.expires_at > fence.now


class Queueing(StoreCore):
    """Hand-off, fill and queue upkeep."""

    def _not_released(
        self, key: str, holder: str, lease: Lease | None, fence: Fence
    ) -> ReleaseResult | ExpiredOwn:
        """The holder had no releasable lease: explain, and leave the queue if it waits."""
        if fence.only_granted:
            return ReleaseResult(False)  # a revoke never touches a claimed lease or a waiter
        if lease is None:
            if fence.token is not None:
                return ReleaseResult(False)  # a fenced release never dequeues anyone
            marker = self.io.get(holder_key(key, holder))
            if marker is not None and marker.get(STATE, {}).get("S") == "queued":
                self._leave_queue(key, holder, int(marker[SEQ]["N"]))
                return ReleaseResult(False, left_queue=True)
            return ReleaseResult(False)
        if fence.token is not None and lease.token != fence.token:
            return ReleaseResult(False)  # another generation: not ours to free
        if lease.expires_at <= fence.now and fence.seen_expiry != lease.expires_at:
            return ExpiredOwn(lease.expires_at)
        return ReleaseResult(False)

    def _handover(self, waiter: Waiter, now: float, token: str) -> Handover:
        expires_at = math.ceil(now + waiter.lease_ttl_seconds)
        lease = encode_lease(
            waiter.key,
            waiter.holder,
            token=token,
            expires_at=expires_at,
            acquired_at=now,
            execution_arn=waiter.execution_arn,
            granted=True,
            weight=waiter.weight,
        )
        return Handover(
            waiter.seq,
            waiter.holder,
            slot_name(waiter.holder),
            lease,
            expires_at,
            waiter.weight,
            ordering.served_vtime(waiter),
        )

    def _handoff(self, key: str, releaser: Fence, holder: str, waiter: Waiter) -> HandoffOutcome:
        """One hand-off from ``holder`` (its lease fenced by ``releaser``) to ``waiter``."""
        to = self._handover(waiter, releaser.now, new_token())
        limit = waiter.limit if waiter.limit is not None else MAX_LIMIT  # the code's
        lower_hint, longer_life = False, not self._pinned(key)
        for _ in range(4):
            items = queue_requests.handoff(
                self.table_name,
                key,
                to,
                releaser=releaser,
                limit=limit,
                lower_hint=lower_hint,
                longer_life=longer_life,
                override=self._believed(key),
            )
            try:
                self.io.transact(items)
            except Cancelled as cancelled:
                reasons = cancelled.reasons
                if failed(reasons[requests.HANDOFF_ENTRY]):
                    return LookAgain()  # someone else served this waiter
                if failed(reasons[requests.HANDOFF_MARKER]):
                    self._drop_waiter(key, waiter)  # its marker is gone: an orphan entry
                    return LookAgain()
                if not failed(reasons[requests.HANDOFF_META]):
                    return LookAgain()  # a conflict
                meta = Meta.parse(reasons[requests.HANDOFF_META].get("Item"))
                mine = meta.lease_of(holder)
                if mine is None or not releasable(mine, releaser):
                    return self._not_released(key, holder, mine, releaser)
                if mine.weight != (releaser.weight or 1):
                    releaser = dataclasses.replace(releaser, weight=mine.weight)
                    continue  # the releaser's weight was not what the caller said
                if self._learn(key, meta):
                    continue  # the override changed: hand over under the one in force
                after = self._after_refused_handoff(
                    key, meta, to, waiter, mine.weight, meta.in_force(limit)
                )
                if after is None or isinstance(after, HeadTooHeavy):
                    return after or LookAgain()
                if after == (lower_hint, longer_life):
                    return LookAgain()
                lower_hint, longer_life = after
                continue
            observability.lease_released(key, holder)
            observability.lease_acquired(key, waiter.holder)
            live = releaser.seen_expiry is None
            grants = [grant_of(waiter, _token_of(to))]
            if (releaser.weight or 1) > waiter.weight:
                grants += self._fill(key, limit)  # units left over: the next ones in line
            return ReleaseResult(live, tuple(grants))
        return LookAgain()

    def _after_refused_handoff(
        self, key: str, meta: Meta, to: Handover, waiter: Waiter, freed: int, limit: int
    ) -> tuple[bool, bool] | HeadTooHeavy | None:
        """After a refused hand-off whose releaser was fine: the (hint, TTL) variant to try
        next; :class:`HeadTooHeavy` when the head's units do not fit in what the release
        frees; or None to look again (repairing a counter that says nobody waits)."""
        if meta.lease_of(waiter.holder) is not None:
            self._drop_waiter(key, waiter)  # it holds a slot already: its entry is stale
            return None
        if meta.nwait <= 0:
            self._recount_queue(key)
            return None
        if meta.count - freed + waiter.weight > limit:
            return HeadTooHeavy()
        return (meta.needs_lower_hint(to.expires_at), meta.needs_longer_life(to.expires_at))

    def _fill(self, key: str, limit: int) -> list[Grant]:
        """Hand free units to the oldest live waiters, in order, while the head's weight fits
        (a heavier head waits for more, and nobody behind it passes: no starvation).
        ``limit`` is the code's: a limit set at run time takes its place (store/overrides.py)."""
        grants: list[Grant] = []
        variants = (False, not self._pinned(key))
        for _ in range(MAX_ATTEMPTS):
            now = self._clock()
            heads = self._queue_heads(key)
            if not heads:
                self._recount_queue(key)
                return grants
            # Dead waiters ahead of the first live one go, all from this one read.
            dead = _dead_ahead(heads, now)
            for waiter in dead:
                self._drop_waiter(key, waiter)
            if len(dead) == len(heads):
                continue
            waiter = heads[len(dead)]
            to = self._handover(waiter, now, new_token())
            items = queue_requests.handoff(
                self.table_name,
                key,
                to,
                releaser=None,
                limit=limit,
                lower_hint=variants[0],
                longer_life=variants[1],
                override=self._believed(key),
            )
            try:
                self.io.transact(items)
            except Cancelled as cancelled:
                reasons = cancelled.reasons
                if failed(reasons[requests.HANDOFF_MARKER]):
                    self._drop_waiter(key, waiter)
                elif failed(reasons[requests.HANDOFF_META]):
                    meta = Meta.parse(reasons[requests.HANDOFF_META].get("Item"))
                    if self._learn(key, meta):
                        continue  # the override changed: fill up to the one in force
                    if meta.nwait <= 0 or not meta.fits(waiter.weight, meta.in_force(limit)):
                        return grants  # nobody waits, or the head needs more than is free
                    if meta.lease_of(waiter.holder) is not None:
                        self._drop_waiter(key, waiter)
                        continue
                    wanted = (
                        meta.needs_lower_hint(to.expires_at),
                        meta.needs_longer_life(to.expires_at),
                    )
                    if wanted == variants:
                        backoff(1)
                    variants = wanted
                continue
            variants = (False, not self._pinned(key))
            observability.lease_acquired(key, waiter.holder)
            grants.append(grant_of(waiter, _token_of(to)))
        return grants

    def _drop_waiter(self, key: str, waiter: Waiter) -> None:
        """Remove a dead waiter's entry (and its marker, if it still belongs to that entry)."""
        try:
            self.io.transact(
                queue_requests.leave_queue(self.table_name, key, waiter.holder, waiter.seq)
            )
        except Cancelled as cancelled:
            reasons = cancelled.reasons
            if failed(reasons[requests.LEAVE_MARKER]) and not failed(reasons[requests.LEAVE_ENTRY]):
                # The holder has moved on (a newer entry): drop only the entry.
                with contextlib.suppress(Cancelled):
                    self.io.transact(
                        queue_requests.leave_queue(self.table_name, key, None, waiter.seq)
                    )

    def _leave_queue(self, key: str, holder: str, seq: int) -> None:
        try:
            self.io.transact(queue_requests.leave_queue(self.table_name, key, holder, seq))
        except Cancelled as cancelled:
            if failed(cancelled.reasons[requests.LEAVE_ENTRY]):
                self._remove_marker(key, holder, seq)

    def _remove_marker(self, key: str, holder: str, seq: int) -> None:
        with contextlib.suppress(ConditionFailed):
            self.io.delete(**queue_requests.marker_delete(key, holder, seq))

    def _recount_queue(self, key: str) -> None:
        """``nwait`` says someone waits but the queue is empty: set it to what is there."""
        meta = self._read_meta(key)
        actual = sum(1 for _ in self._query_items(key, QUEUE_PREFIX, projection=SK))
        if not meta.exists or meta.nwait == actual:
            return
        self._update_or_none(requests.set_waiting(key, meta.version, actual))


def _dead_ahead(heads: list[Waiter], now: float) -> list[Waiter]:
    """The dead waiters at the front of ``heads`` (ahead of the first live one)."""
    return list(itertools.takewhile(lambda waiter: not waiter.is_live(now), heads))


def _token_of(to: Handover) -> str:
    return str(to.lease["M"]["t"]["S"])


__all__ = [
    "ExpiredOwn",
    "HandoffOutcome",
    "HeadTooHeavy",
    "LookAgain",
    "Queueing",
    "meta_key",
    "releasable",
]
