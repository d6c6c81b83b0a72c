"""Taking a slot: the single-item acquire, the queue's join and check-in, and what a holder
that already has a lease gets back (renewed, claimed or revived)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_semaphore import observability
from durable_semaphore.errors import ContentionError, InvalidArgumentError
from durable_semaphore.store import ordering, queue_requests, requests
from durable_semaphore.store.client import Cancelled, ConditionFailed, failed
from durable_semaphore.store.core import MAX_ATTEMPTS, backoff
from durable_semaphore.store.model import (
    GRANTED,
    HELD,
    AcquireResult,
    Grant,
    Lease,
    new_token,
)
from durable_semaphore.store.releasing import Releasing
from durable_semaphore.store.schema import (
    ARN,
    HOLDER,
    HOLDER_PREFIX,
    PK,
    QUEUE_LIMIT,
    QUEUE_WEIGHT,
    SEQ,
    SK,
    STATE,
    TTL_ATTRIBUTE,
    Meta,
    decode_lease,
    encode_lease,
    life_of,
    meta_key,
    num,
    queue_sk,
    slot_name,
)
from durable_semaphore.store.validate import (
    validate_callback_id,
    validate_holder,
    validate_key,
    validate_token,
    validate_ttl,
)


@dataclass
class Attempt:
    """One acquire call: what it asks for, and what it did on the way (slots it handed to
    others, to be woken by the caller)."""

    key: str
    holder: str
    limit: int
    ttl: float
    queue_ttl: float
    execution_arn: str | None
    callbacks: tuple[str, ...]
    token: str | None
    #: The queue number of this call's first try: every retry joins under it, so a retried
    #: enqueue keeps the place its first try had.
    arrival: int = 0
    #: Units of the limit the holder takes.
    weight: int = 1
    #: Where it queues (store/ordering.py): higher priority first; groups take turns.
    priority: int = 0
    group: str | None = None
    #: The counter as the last refused write returned it: a grouped join's place is computed
    #: from it instead of a second read (a hand-off since then fails the join's condition).
    counter_item: Mapping[str, Any] | None = None
    grants: list[Grant] = field(default_factory=list)

    @property
    def slot(self) -> str:
        return slot_name(self.holder)

    def lease_value(
        self, token: str, expires_at: int, now: float, execution_arn: str | None
    ) -> dict[str, Any]:
        """This holder's lease attribute, held (not a grant)."""
        return encode_lease(
            self.key,
            self.holder,
            token=token,
            expires_at=expires_at,
            acquired_at=now,
            execution_arn=execution_arn,
            weight=self.weight,
        )


def callbacks_of(callback_id: str | None, spare_callback_ids: tuple[str, ...]) -> tuple[str, ...]:
    validate_callback_id(callback_id)
    for spare in spare_callback_ids:
        validate_callback_id(spare)
    if spare_callback_ids and callback_id is None:
        raise InvalidArgumentError(
            "spare_callback_ids", spare_callback_ids, "need a callback_id to follow"
        )
    return (callback_id, *spare_callback_ids) if callback_id is not None else ()


class Acquiring(Releasing):
    """acquire and everything a holder's own lease or queue place leads to."""

    def _acquire(
        self, call: Attempt, position: int | None, queue_first: bool, enqueue: bool
    ) -> AcquireResult:
        if queue_first and position is None and enqueue:
            queued = self._enqueue(call, Meta.parse(None), self._clock())
            if queued is not None:
                return queued.with_grants(call.grants)
        # (lower the expiry hint, raise the item's TTL): a pinned TTL is never raised.
        variants = (False, not self._pinned(call.key))
        for attempt in range(MAX_ATTEMPTS):
            now = self._clock()
            if position is not None:
                touched = self._touch(call, position, now)
                if touched is not None:
                    return touched.with_grants(call.grants)
                position = None  # the entry is gone: acquire or queue afresh
                # Mostly because the slot was handed over: claim it at once (a waiter that
                # was dropped instead pays this one refused write, then competes anew).
                claimed = self._claim(call.key, call.holder, now, call.ttl)
                if claimed is not None:
                    return AcquireResult(claimed, None, tuple(call.grants))
            try:
                lease = self._take(call, now, variants)
            except ConditionFailed as refused:
                meta = Meta.parse(refused.item)
                call.counter_item = refused.item
                outcome = self._after_refusal(call, meta, now, variants, attempt, enqueue)
                if isinstance(outcome, AcquireResult):
                    return outcome.with_grants(call.grants)
                if isinstance(outcome, tuple):
                    variants = outcome
                continue
            if lease is not None:
                observability.lease_acquired(call.key, call.holder)
                return AcquireResult(lease, None, tuple(call.grants))
        raise ContentionError(f"acquire({call.key!r}, {call.holder!r}) lost {MAX_ATTEMPTS} races")

    def _take(self, call: Attempt, now: float, variants: tuple[bool, bool]) -> Lease | None:
        """One single-item write for a new slot; the lease, or None to compete again (the
        answer came back after the lease ended and it was reclaimed meanwhile)."""
        expires_at = math.ceil(now + call.ttl)
        token = call.token or new_token()
        value = call.lease_value(token, expires_at, now, call.execution_arn)
        write = requests.acquire(
            call.key,
            call.slot,
            value,
            call.limit,
            expires_at,
            lower_hint=variants[0],
            longer_life=variants[1],
            weight=call.weight,
            override=self._believed(call.key),
        )
        self.io.update(**write)
        lease = Lease(
            call.key,
            call.holder,
            now,
            float(expires_at),
            call.execution_arn,
            HELD,
            token,
            call.weight,
        )
        if lease.is_live(self._clock()):
            return lease
        # botocore retried across an outage longer than the TTL: never hand out a lease that
        # is already over; renew it as a new generation if it is still counted.
        revived = self._revive(call, lease, self._clock())
        if revived is None or not revived.is_live(self._clock()):
            return None  # reclaimed meanwhile (or late again): compete anew
        return revived

    def _after_refusal(
        self,
        call: Attempt,
        meta: Meta,
        now: float,
        variants: tuple[bool, bool],
        attempt: int,
        enqueue: bool,
    ) -> AcquireResult | tuple[bool, bool] | None:
        """What a refused acquire does next: its own lease, other variants of the write,
        repairs, joining the queue. None means try again."""
        learned = self._learn(call.key, meta)  # an override set or cleared meanwhile
        mine = meta.lease_of(call.holder)
        if mine is not None:
            return self._own_lease(call, mine, now)
        expires_at = math.ceil(now + call.ttl)
        if meta.fits(call.weight, meta.in_force(call.limit)) and meta.nwait <= 0:
            # Room for us: only the override belief or the hint or TTL variant refused us.
            # Pick what the item needs; if it already was that one, the key moved on: retry.
            wanted = (meta.needs_lower_hint(expires_at), meta.needs_longer_life(expires_at))
            if wanted == variants and not learned:
                backoff(attempt)
            return wanted
        if meta.may_hold_expired(now - self.clock_skew_seconds):
            outcome = self._reconcile(call.key)
            if outcome is None:
                backoff(attempt)
                return None
            call.grants.extend(outcome.grants)
            if outcome.freed > 0 or outcome.deleted > 0:
                return None
        if meta.count < meta.in_force(call.limit) and meta.nwait > 0:
            # Free slots behind a queue (an expiry or a dead waiter): fill them first.
            call.grants.extend(self._fill(call.key, call.limit))
        if not enqueue:
            return AcquireResult(None, None)
        queued = self._enqueue(call, meta, now)
        if queued is None:
            backoff(attempt)
        return queued

    def _own_lease(self, call: Attempt, mine: Lease, now: float) -> AcquireResult | None:
        """The holder already has a lease: return what it means, or None to retry."""
        if mine.expires_at <= now:
            if mine.expires_at + self.clock_skew_seconds > now:
                # Our own lease expired, but within the skew margin nobody else may reclaim
                # it, so its slot is still ours to take again (as a new generation).
                revived = self._revive(call, mine, now)
                return AcquireResult(revived) if revived is not None else None
            self._reconcile(call.key)  # reclaimable by anyone: clear it, then compete anew
            return None
        if mine.state == GRANTED:
            claimed = self._claim(call.key, call.holder, now, call.ttl)
            return AcquireResult(claimed) if claimed is not None else None
        renewed = self.renew(call.key, call.holder, call.ttl)
        return AcquireResult(renewed) if renewed is not None else None

    def _revive(self, call: Attempt, seen: Lease, now: float) -> Lease | None:
        """Renew the holder's expired-but-counted lease as a new generation (new token)."""
        expires_at = math.ceil(now + call.ttl)
        token = new_token()
        fresh = call.lease_value(token, expires_at, now, seen.execution_arn or call.execution_arn)
        try:
            self._update_counter(
                lambda longer: requests.revive(
                    call.key,
                    call.slot,
                    seen.expires_at,
                    seen.token,
                    fresh,
                    expires_at,
                    longer_life=longer,
                ),
                expires_at,
                call.key,
            )
        except ConditionFailed:
            return None
        observability.lease_acquired(call.key, call.holder)
        arn = seen.execution_arn or call.execution_arn
        return Lease(call.key, call.holder, now, float(expires_at), arn, HELD, token, call.weight)

    def _claim(self, key: str, holder: str, now: float, ttl: float) -> Lease | None:
        """Turn a slot handed to ``holder`` into its own (a revoke can no longer take it),
        living ``ttl`` from now (a grant whose wake-up failed may have been shortened)."""
        expires_at = math.ceil(now + ttl)
        slot = slot_name(holder)
        try:
            out = self._update_counter(
                lambda longer: requests.claim(key, slot, expires_at, now, longer_life=longer),
                expires_at,
                key,
            )
        except ConditionFailed as refused:
            mine = Meta.parse(refused.item).lease_of(holder)
            if mine is not None and mine.state == HELD and mine.is_live(now):
                return mine  # claimed already (a replay)
            return None
        return decode_lease(key, out["Attributes"][slot])

    def renew(
        self,
        key: str,
        holder: str,
        ttl_seconds: float = 86_400,
        *,
        token: str | None = None,
    ) -> Lease | None:
        """Extend a live lease to at least now + ``ttl_seconds``; never takes a new slot.

        Returns the lease, or None if ``holder`` holds no live lease on ``key`` (a queue entry
        is not a lease), or, with ``token``, none of that generation. Expiry is only ever moved
        later, so a short-TTL renew cannot cut a longer lease short. Without ``token`` any live
        lease of the holder is extended (admin use).
        """
        validate_key(key)
        validate_holder(holder)
        ttl = validate_ttl(ttl_seconds)
        validate_token(token)
        now = self._clock()
        expires_at = math.ceil(now + ttl)
        slot = slot_name(holder)
        try:
            out = self._update_counter(
                lambda longer: requests.renew(
                    key, slot, expires_at, now, token, longer_life=longer
                ),
                expires_at,
                key,
            )
        except ConditionFailed as refused:
            mine = Meta.parse(refused.item).lease_of(holder)
            if mine is not None and mine.is_live(now) and (token is None or mine.token == token):
                return mine  # already lives at least that long
            return None
        return decode_lease(key, out["Attributes"][slot])

    def shorten_grant(self, key: str, holder: str, expires_at: float) -> bool:
        """Let a slot handed to ``holder`` (not yet claimed) expire at ``expires_at``.

        For a waiter whose wake-up found its callback gone while its execution still runs:
        it keeps the slot if it claims it in time, and a reconcile hands it on otherwise.
        The counter's expiry hint is lowered with it, so the next refusal notices.
        """
        validate_key(key)
        validate_holder(holder)
        deadline = math.ceil(expires_at)
        slot = slot_name(holder)
        for lower_hint in (True, False):
            try:
                self.io.update(**requests.shorten_grant(key, slot, deadline, lower_hint=lower_hint))
                return True
            except ConditionFailed as refused:
                mine = Meta.parse(refused.item).lease_of(holder)
                if mine is None or mine.state != GRANTED or mine.expires_at <= deadline:
                    return False  # claimed, released or already shorter
        return False

    # -- the queue ------------------------------------------------------------------------

    def _enqueue(self, call: Attempt, meta: Meta, now: float) -> AcquireResult | None:
        """Join the queue under the call's arrival number; None when a slot freed meanwhile.
        A number another waiter already has (a tie of clock and tiebreak, vanishingly rare)
        is replaced by a fresh one. A grouped join that raced another of its group, or a
        hand-off that moved virtual time, reads the order again and retries."""
        queue_expires = math.ceil(now + call.queue_ttl)
        # Unread (a waiter joining first thing), the counter is taken to outlive the place:
        # its TTL covers the leases that fill the key, which usually live longer.
        longer = meta.needs_longer_life(queue_expires) if meta.exists else False
        for attempt in range(3 if call.group is None else MAX_ATTEMPTS):
            place = self._place(call)
            marker, entry = self._queue_items(call, place, now, queue_expires)
            items = queue_requests.enqueue(
                self.table_name,
                call.key,
                call.slot,
                call.limit,
                marker,
                entry,
                queue_expires,
                longer_life=longer,
                weight=call.weight,
                place=place if call.group is not None else None,
                override=self._believed(call.key),
            )
            try:
                self.io.transact(items)
            except Cancelled as cancelled:
                reasons = cancelled.reasons
                existing = reasons[requests.ENQUEUE_MARKER].get("Item")
                if failed(reasons[requests.ENQUEUE_MARKER]) and existing is not None:
                    return self._touch(call, int(existing[SEQ]["N"]), now)
                if failed(reasons[requests.ENQUEUE_ENTRY]):
                    call.arrival = self._next_seq(self._clock())
                    continue
                if not failed(reasons[requests.ENQUEUE_META]):
                    if call.group is None:
                        return None
                    backoff(attempt)  # another of the group joined first, or a conflict
                    continue
                seen = Meta.parse(reasons[requests.ENQUEUE_META].get("Item"))
                learned = self._learn(call.key, seen)
                mine = seen.lease_of(call.holder)
                if mine is not None:
                    return self._own_lease(call, mine, now)
                must_wait = seen.exists and (
                    not seen.fits(call.weight, seen.in_force(call.limit)) or seen.nwait > 0
                )
                if must_wait and ordering.order_moved(
                    reasons[requests.ENQUEUE_META].get("Item"), place
                ):
                    continue
                if must_wait and (learned or seen.needs_longer_life(queue_expires) != longer):
                    longer = seen.needs_longer_life(queue_expires)
                    continue
                return None
            # How many wait ahead, from the counter as last read (unknown without a read).
            ahead = max(0, meta.wseq - meta.served) if meta.exists else None
            return AcquireResult(None, place.seq, ahead=ahead)
        return None

    def _place(self, call: Attempt) -> ordering.Place:
        """Where the call's entry goes: its arrival number when plain (no read); a grouped
        one reads its group's item, and the counter unless a refusal just returned it
        (GetItem only: the roles of docs/guide.md and template.yaml grant nothing more)."""
        if call.group is None:
            return ordering.ungrouped_place(call.arrival, call.priority, self.aging)
        counter, call.counter_item = call.counter_item, None  # a retry reads afresh
        if counter is None:
            counter = self.io.get(meta_key(call.key))
        group_item = self.io.get(ordering.group_key(call.key, call.group))
        return ordering.grouped_place(
            call.arrival, call.priority, self.aging, call.group, counter, group_item
        )

    def _queue_items(
        self, call: Attempt, place: ordering.Place, now: float, queue_expires: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The marker (``h#<holder>``) and the queue entry (``w#<seq>``) of a new waiter."""
        marker: dict[str, Any] = {
            PK: {"S": call.key},
            SK: {"S": HOLDER_PREFIX + call.holder},
            STATE: {"S": "queued"},
            SEQ: {"N": str(place.seq)},
            "acquired_at": num(now),
            TTL_ATTRIBUTE: num(queue_expires),
        }
        entry: dict[str, Any] = {
            PK: {"S": call.key},
            SK: {"S": queue_sk(place.seq)},
            HOLDER: {"S": call.holder},
            SEQ: {"N": str(place.seq)},
            "qexp": num(queue_expires),
            "lttl": num(call.ttl),
            "at": num(now),
            TTL_ATTRIBUTE: num(life_of(queue_expires)),
            QUEUE_LIMIT: {"N": str(call.limit)},
            **ordering.entry_fields(place),
        }
        if call.weight != 1:
            entry[QUEUE_WEIGHT] = {"N": str(call.weight)}
        if call.execution_arn is not None:
            marker[ARN] = {"S": call.execution_arn}
            entry[ARN] = {"S": call.execution_arn}
        if call.callbacks:
            entry["cb"] = {"S": call.callbacks[0]}
            entry["cbs"] = {"L": [{"S": spare} for spare in call.callbacks[1:]]}
        return marker, entry

    def _touch(self, call: Attempt, seq: int, now: float) -> AcquireResult | None:
        """A queued holder checks in. Returns its state, or None when its place is gone (it
        was handed a slot, or dropped: the caller acquires afresh and finds out which).

        A check-in that finds the key not full of live leases reconciles (freeing expired
        slots and handing free ones to the queue's head, which may be this waiter), then
        checks in again; the grants it made go to ``call.grants`` for the caller to wake.
        One reconcile per call: a key whose stored limit differs cannot loop.
        """
        queue_expires = math.ceil(now + call.queue_ttl)
        check_key = True
        for attempt in range(MAX_ATTEMPTS):
            cutoff = self._clock() - self.clock_skew_seconds if check_key else None
            items = queue_requests.touch(
                self.table_name,
                call.key,
                call.holder,
                seq,
                queue_expires,
                call.callbacks,
                limit=call.limit,
                reclaim_cutoff=cutoff,
                weight=call.weight,
                override=self._believed(call.key),
            )
            try:
                self.io.transact(items)
                return AcquireResult(None, seq)
            except Cancelled as cancelled:
                reasons = cancelled.reasons
                if failed(reasons[requests.TOUCH_MARKER]):
                    existing = reasons[requests.TOUCH_MARKER].get("Item")
                    if existing is None or SEQ not in existing:
                        return None
                    seq = int(existing[SEQ]["N"])  # an overlapping invocation's newer entry
                    continue
                if failed(reasons[requests.TOUCH_ENTRY]):
                    # Our queue item was dropped (judged dead) but the marker stayed: leave
                    # cleanly and let the caller queue again.
                    self._remove_marker(call.key, call.holder, seq)
                    return None
                if len(reasons) > requests.TOUCH_KEY_CHECK and failed(
                    reasons[requests.TOUCH_KEY_CHECK]
                ):
                    meta = Meta.parse(reasons[requests.TOUCH_KEY_CHECK].get("Item"))
                    if self._learn(call.key, meta):
                        continue  # checked under a stale override: check again under this one
                    check_key = False
                    call.grants.extend(self._serve_queue(call.key, call.limit, meta))
                    continue
                backoff(attempt)
        raise ContentionError(f"touch({call.key!r}, {call.holder!r}) lost {MAX_ATTEMPTS} races")
