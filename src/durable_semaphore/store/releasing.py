"""Freeing a slot: one single-item write when nobody waits, a hand-off when someone does."""

from __future__ import annotations

from dataclasses import replace

from durable_semaphore import observability
from durable_semaphore.errors import ContentionError
from durable_semaphore.store import requests
from durable_semaphore.store.client import ConditionFailed
from durable_semaphore.store.core import MAX_ATTEMPTS, backoff
from durable_semaphore.store.model import Lease, ReleaseResult, new_token
from durable_semaphore.store.queueing import ExpiredOwn, HeadTooHeavy, LookAgain, releasable
from durable_semaphore.store.reconciling import Reconciling
from durable_semaphore.store.requests import Fence
from durable_semaphore.store.schema import Meta, slot_name
from durable_semaphore.store.validate import (
    validate_holder,
    validate_key,
    validate_token,
    validate_weight,
)


class Releasing(Reconciling):
    """release, release_slot and revoke."""

    def release(self, key: str, holder: str, *, token: str | None = None) -> bool:
        """Free ``holder``'s slot (handing it to the oldest waiter, if any). Idempotent: True
        only if this call released a live lease.

        Pass the lease's ``token``: a lease you no longer own is never freed by you. With it,
        a lease of another generation under the same holder id (yours expired, and the holder
        id acquired again) is left alone and False returned. Without it (admin use, as
        ``durable-semaphore release`` does) whatever the holder id holds now is released.

        Releasing a lease that is not held or was already released returns False and leaves
        the count right; an owner's lease that expired on its own clock is still removed (it
        is counted until then) but reported False. A queued holder leaves the queue (also
        False: it held no slot). Use :meth:`release_slot` to learn which waiter received the
        slot, so it can be woken.
        """
        return self.release_slot(key, holder, token=token).released

    def release_slot(
        self,
        key: str,
        holder: str,
        *,
        waiters_likely: bool = False,
        token: str | None = None,
        weight: int | None = None,
    ) -> ReleaseResult:
        """Free ``holder``'s slot; with waiters, hand it to the oldest live one.

        ``token`` fences as in :meth:`release`. ``waiters_likely`` (the caller had to wait
        itself, say) starts with the queue read instead of the optimistic no-waiter release:
        2 requests instead of 3 under contention. ``weight``, the units the lease holds, saves
        a refused hand-off when it is not 1 (the lease's own weight is what counts).
        """
        validate_key(key)
        validate_holder(holder)
        validate_token(token)
        return self._release(
            key,
            holder,
            waiters_likely=waiters_likely,
            only_granted=False,
            token=token,
            weight=validate_weight(weight) if weight is not None else None,
        )

    def revoke(self, key: str, holder: str) -> ReleaseResult:
        """Take back a slot handed to ``holder`` that it has not claimed yet, passing it on.

        For a releaser whose wake-up found the waiter's callback gone (timed out, or its
        execution ended). A claimed lease is never touched, so a waiter that woke and claimed
        its slot at the same moment keeps it.
        """
        validate_key(key)
        validate_holder(holder)
        return self._release(key, holder, waiters_likely=True, only_granted=True)

    def _release(
        self,
        key: str,
        holder: str,
        *,
        waiters_likely: bool,
        only_granted: bool,
        token: str | None = None,
        weight: int | None = None,
    ) -> ReleaseResult:
        counted_waiters = False
        # Set once the holder's lease turns out expired (on our clock) but still counted: it
        # is then removed by exactly that expiry, and the result says it was not live.
        seen_expiry: float | None = None
        slot = slot_name(holder)
        request_id = new_token()[:12]
        for attempt in range(MAX_ATTEMPTS):
            fence = Fence(
                slot, self._clock(), token, only_granted, seen_expiry, request_id, weight=weight
            )
            if waiters_likely:
                outcome = self._release_to_queue(key, holder, fence, counted_waiters)
                if outcome is None:
                    waiters_likely = counted_waiters = False
                    continue
                if isinstance(outcome, ExpiredOwn):
                    seen_expiry = outcome.expires_at
                    continue
                if isinstance(outcome, LookAgain):
                    continue
                if isinstance(outcome, HeadTooHeavy):
                    return self._release_past_queue(key, holder, fence)
                return outcome
            try:
                self.io.update(**requests.release(key, fence))
            except ConditionFailed as refused:
                meta = Meta.parse(refused.item)
                mine = meta.lease_of(holder)
                if _resent(refused, meta, mine, request_id):
                    observability.lease_released(key, holder)
                    return ReleaseResult(seen_expiry is None)
                if not releasable(mine, fence):
                    result = self._not_released(key, holder, mine, fence)
                    if isinstance(result, ExpiredOwn):
                        seen_expiry = result.expires_at
                        continue
                    return result
                if meta.nwait > 0:
                    waiters_likely = counted_waiters = True
                    weight = mine.weight if mine is not None else weight
                    continue
                if meta.count <= 0:
                    # A lease but a zero count: only possible after manual edits.
                    self._reconcile(key, force=True)
                    continue
                backoff(attempt)
                continue
            observability.lease_released(key, holder)
            return ReleaseResult(seen_expiry is None)
        raise ContentionError(f"release({key!r}, {holder!r}) lost {MAX_ATTEMPTS} races")

    def _release_past_queue(self, key: str, holder: str, fence: Fence) -> ReleaseResult:
        """The head needs more units than this release frees: free them past the queue (no
        newcomer can take them: ``nwait > 0`` still refuses fresh acquires), then serve the
        queue from what is free. A release of many units can admit several waiters."""
        write = requests.release(key, replace(fence, past_waiters=True))
        try:
            # The item as the release left it comes back with it: no second read.
            out = self.io.update(**write, ReturnValues="ALL_NEW")
        except ConditionFailed as refused:
            mine = Meta.parse(refused.item).lease_of(holder)
            result = self._not_released(key, holder, mine, fence)
            return result if isinstance(result, ReleaseResult) else ReleaseResult(False)
        observability.lease_released(key, holder)
        meta = Meta.parse(out.get("Attributes"))
        self._learn(key, meta)
        code = meta.limit or meta.override  # the fill puts the override in its place
        grants = self._fill(key, code) if code and meta.nwait > 0 else []
        return ReleaseResult(fence.seen_expiry is None, tuple(grants))

    def _release_to_queue(
        self, key: str, holder: str, fence: Fence, counted_waiters: bool
    ) -> ReleaseResult | ExpiredOwn | LookAgain | HeadTooHeavy | None:
        """Hand the slot to the queue's oldest live waiter; None when the queue is empty (the
        caller then releases the plain way)."""
        heads = self._queue_heads(key)
        if not heads:
            if counted_waiters:
                self._recount_queue(key)  # nwait > 0 over an empty queue: repair
            return None
        head = heads[0]
        if not head.is_live(fence.now):
            self._drop_waiter(key, head)
            return LookAgain()
        if head.holder == holder:
            # The "releaser" is itself the oldest waiter: it holds no slot, so it just leaves
            # the queue (a hand-off to itself would write its lease twice).
            if fence.token is not None or fence.only_granted:
                return ReleaseResult(False)
            self._leave_queue(key, holder, head.seq)
            return ReleaseResult(False, left_queue=True)
        return self._handoff(key, fence, holder, head)


def _resent(refused: ConditionFailed, meta: Meta, mine: Lease | None, request_id: str) -> bool:
    """Whether this very release was applied and botocore resent it after losing the answer:
    its id is still the last release's, or its lease is gone after a resend (another release
    in between would have had to free it within that resend)."""
    return meta.last_release == request_id or (refused.retried and mine is None)
