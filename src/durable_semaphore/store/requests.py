"""Every request the store sends, built here so each can be read, and pinned, on its own.

Conditions are named for the race they close. A builder returns the keyword arguments of one
UpdateItem/DeleteItem (the store adds the table) or the ``TransactItems`` of one transaction;
the positions of a transaction's items are named too, so a cancellation reason is never read
by a bare index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durable_semaphore.store.expressions import Expr
from durable_semaphore.store.overrides import NO_OVERRIDE, PINNED_LIFE, believe
from durable_semaphore.store.schema import (
    COUNT,
    F_EXPIRES,
    F_GRANTED,
    F_TOKEN,
    F_WEIGHT,
    HINT,
    LAST_RELEASE,
    LIMIT,
    NWAIT,
    OVERRIDE,
    OVERRIDE_AT,
    TTL_ATTRIBUTE,
    VERSION,
    life_of,
    meta_key,
    num,
)

QUEUED_STATE = "queued"

# -- conditions on the counter item ------------------------------------------------------------

#: Room for the new lease's units under the limit (``:room`` is the limit less its weight):
#: the semaphore itself.
SLOT_FREE = "(attribute_not_exists(#c) OR #c <= :room)"
#: Nobody queued: a newcomer never takes a slot past a waiter (slots go to the queue's head).
NOBODY_WAITS = "(attribute_not_exists(#nw) OR #nw <= :zero)"
#: The holder has no lease yet: the same holder id is never counted twice (a replay, or an
#: overlapping invocation, finds its own lease in the refusal instead).
NO_LEASE_YET = "attribute_not_exists(#l)"
#: Joining the queue only while a waiter cannot be served at once: too few units free for its
#: weight (``:need`` is the limit less its weight, plus one), or others already waiting. A
#: waiter never sits behind room it could use.
MUST_WAIT = "attribute_exists(#c) AND (#c >= :need OR #nw > :zero)"
#: A waiter's check-in passes only while too few units are free for its weight (``:lim`` is
#: the limit less its weight, plus one) and the earliest lease expiry (``xh``) is past the
#: reclaim cutoff. Otherwise a slot is free behind the queue, or a holder
#: may be dead: the waiter reconciles instead of waiting on (a missing hint fails the
#: comparison, so it reads as "may have expired").
KEY_FULL_OF_LIVE_LEASES = "#c >= :lim AND #xh > :cutoff"
#: Nothing has written the item since it was read: a reconcile or repair computed from that
#: read is still right.
UNCHANGED = "#v = :v"
#: A counter holding no lease and no waiter: safe to delete (an acquire recreates it).
IDLE = "(attribute_not_exists(#c) OR #c <= :zero) AND (attribute_not_exists(#nw) OR #nw <= :zero)"

# -- positions of transaction items ------------------------------------------------------------

ENQUEUE_META, ENQUEUE_MARKER, ENQUEUE_ENTRY = 0, 1, 2
#: A grouped join's fourth item: its group's item (store/ordering.py).
ENQUEUE_GROUP = 3
TOUCH_MARKER, TOUCH_ENTRY, TOUCH_KEY_CHECK = 0, 1, 2
HANDOFF_META, HANDOFF_ENTRY, HANDOFF_MARKER = 0, 1, 2
LEAVE_ENTRY, LEAVE_META, LEAVE_MARKER = 0, 1, 2


def counter_write(
    expr: Expr,
    *,
    hint: float | None = None,
    lower_hint: bool = False,
    life: float | None = None,
    longer_life: bool = True,
) -> None:
    """The common part of a counter write: bump the version, keep ``xh`` a lower bound of
    every lease's expiry (a lease expiring at ``hint``), and keep the item's TTL past every
    expiry it covers (``life``: the new lease's expiry plus the idle grace).

    Both bounds are moved by one of two variants of the same write, chosen from the last read
    (the common case keeps the hint and raises the TTL); a refusal tells the caller to switch.
    """
    expr.names["#v"] = VERSION
    expr.sets.append("#v = if_not_exists(#v, :zero) + :one")
    expr.values.update({":zero": {"N": "0"}, ":one": {"N": "1"}})
    if hint is not None:
        expr.names["#xh"] = HINT
        expr.names.setdefault("#c", COUNT)
        expr.values[":exp"] = num(hint)
        if lower_hint:
            expr.sets.append("#xh = :exp")
            expr.conditions.append("(attribute_not_exists(#xh) OR #xh > :exp)")
        else:
            expr.sets.append("#xh = if_not_exists(#xh, :exp)")
            no_leases = "(attribute_not_exists(#xh) AND (attribute_not_exists(#c) OR #c <= :zero))"
            expr.conditions.append(f"({no_leases} OR #xh <= :exp)")
    if life is not None:
        expr.names["#e"] = TTL_ATTRIBUTE
        expr.values[":life"] = num(life)
        if longer_life:
            expr.sets.append("#e = :life")
            expr.conditions.append("(attribute_not_exists(#e) OR #e <= :life)")
        else:
            expr.conditions.append("#e >= :life")


def fence_conditions(
    expr: Expr,
    *,
    now: float | None,
    token: str | None,
    only_granted: bool,
    seen_expiry: float | None = None,
    weight: int | None = None,
) -> None:
    """Conditions on the lease ``#l`` a release or hand-off removes: it exists, is live on
    the releaser's clock (or is exactly the expired one it saw), is of the releaser's
    generation (``token``), for a revoke still an unclaimed grant, and holds ``weight`` units
    when the caller counts on that."""
    expr.conditions.append("attribute_exists(#l)")
    expr.names["#lx"] = F_EXPIRES
    if seen_expiry is None:
        expr.conditions.append("#l.#lx > :now")
        expr.values[":now"] = num(now if now is not None else 0)
    else:
        expr.conditions.append("#l.#lx = :seen")
        expr.values[":seen"] = num(seen_expiry)
    if token is not None:
        expr.conditions.append("#l.#lt = :tok")
        expr.names["#lt"] = F_TOKEN
        expr.values[":tok"] = {"S": token}
    if only_granted:
        expr.conditions.append("attribute_exists(#l.#lg)")
        expr.names["#lg"] = F_GRANTED
    if weight is not None:
        expr.names["#lw"] = F_WEIGHT
        if weight == 1:
            expr.conditions.append("attribute_not_exists(#l.#lw)")
        else:
            expr.conditions.append("#l.#lw = :lw")
            expr.values[":lw"] = {"N": str(weight)}


@dataclass(frozen=True, slots=True)
class Fence:
    """Which lease a release may remove (see :func:`_fence`)."""

    slot: str
    now: float
    token: str | None = None
    only_granted: bool = False
    seen_expiry: float | None = None
    #: Written with a plain release, so that a retry of a release whose answer was lost can
    #: tell it was applied (a single write has no idempotency token, unlike a transaction).
    request_id: str = ""
    #: Release although others wait: their head needs more units than the release frees (the
    #: caller then fills the queue from the units left).
    past_waiters: bool = False
    #: The weight the releaser holds, when it must be known (a hand-off's room): checked.
    weight: int | None = None


# -- taking a slot -----------------------------------------------------------------------------


def acquire(
    key: str,
    slot: str,
    lease: dict[str, Any],
    limit: int,
    expires_at: int,
    *,
    lower_hint: bool,
    longer_life: bool,
    weight: int = 1,
    override: int | None = None,
) -> dict[str, Any]:
    """Take a new slot (``weight`` units) in one single-item write: room under the limit in
    force (``override``, the writer's belief, else the code's ``limit``, which is what ``lim``
    records), nobody queued, and the holder has no lease yet."""
    room = (override if override is not None else limit) - weight
    expr = Expr(
        sets=["#l = :lease", "#c = if_not_exists(#c, :zero) + :w", "#lim = :limit"],
        conditions=[SLOT_FREE, NOBODY_WAITS, NO_LEASE_YET],
        names={"#l": slot, "#c": COUNT, "#nw": NWAIT, "#lim": LIMIT},
        values={
            ":lease": lease,
            ":limit": {"N": str(limit)},
            ":room": {"N": str(room)},
            ":w": {"N": str(weight)},
        },
    )
    believe(expr, override)
    counter_write(
        expr,
        hint=expires_at,
        lower_hint=lower_hint,
        life=life_of(expires_at),
        longer_life=longer_life,
    )
    return expr.update(meta_key(key))


def renew(
    key: str,
    slot: str,
    expires_at: int,
    now: float,
    token: str | None,
    *,
    longer_life: bool,
) -> dict[str, Any]:
    """Move a live lease's expiry later (never earlier: a short renew cannot cut a longer
    lease short). Returns the new item."""
    expr = Expr(
        sets=["#l.#lx = :newexp"],
        conditions=["attribute_exists(#l)", "#l.#lx > :now", "#l.#lx < :newexp"],
        names={"#l": slot, "#lx": F_EXPIRES},
        values={":newexp": num(expires_at), ":now": num(now)},
    )
    if token is not None:
        expr.conditions.append("#l.#lt = :tok")
        expr.names["#lt"] = F_TOKEN
        expr.values[":tok"] = {"S": token}
    counter_write(expr, life=life_of(expires_at), longer_life=longer_life)
    kwargs = expr.update(meta_key(key))
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


def claim(key: str, slot: str, expires_at: int, now: float, *, longer_life: bool) -> dict[str, Any]:
    """Make a slot handed over by a releaser the holder's own (a revoke can no longer take
    it), living until ``expires_at`` (a grant whose wake-up failed may have been shortened)."""
    expr = Expr(
        sets=["#l.#lx = :newexp"],
        removes=["#l.#lg"],
        conditions=["attribute_exists(#l.#lg)", "#l.#lx > :now"],
        names={"#l": slot, "#lx": F_EXPIRES, "#lg": F_GRANTED},
        values={":newexp": num(expires_at), ":now": num(now)},
    )
    counter_write(expr, life=life_of(expires_at), longer_life=longer_life)
    kwargs = expr.update(meta_key(key))
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


def revive(
    key: str,
    slot: str,
    seen_expiry: float,
    seen_token: str | None,
    fresh: dict[str, Any],
    expires_at: int,
    *,
    longer_life: bool,
) -> dict[str, Any]:
    """Renew the holder's own expired-but-counted lease as a new generation. Safe whatever
    the clocks say: the lease is still there, so its slot is still counted and nobody else
    can have been admitted to it."""
    expr = Expr(
        sets=["#l = :fresh"],
        conditions=["#l.#lx = :seen"],
        names={"#l": slot, "#lx": F_EXPIRES},
        values={":fresh": fresh, ":seen": num(seen_expiry)},
    )
    if seen_token is not None:
        expr.conditions.append("#l.#lt = :seentok")
        expr.names["#lt"] = F_TOKEN
        expr.values[":seentok"] = {"S": seen_token}
    counter_write(expr, life=life_of(expires_at), longer_life=longer_life)
    kwargs = expr.update(meta_key(key))
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


def shorten_grant(key: str, slot: str, deadline: int, *, lower_hint: bool) -> dict[str, Any]:
    """Let an unclaimed grant expire at ``deadline``, lowering the counter's expiry hint with
    it (``lower_hint``) so that the next refusal notices."""
    expr = Expr(
        sets=["#l.#lx = :deadline"],
        conditions=["attribute_exists(#l.#lg)", "#l.#lx > :deadline"],
        names={"#l": slot, "#lx": F_EXPIRES, "#lg": F_GRANTED},
        values={":deadline": num(deadline)},
    )
    if lower_hint:
        expr.sets.append("#xh = :deadline")
        expr.conditions.append("(attribute_not_exists(#xh) OR #xh > :deadline)")
        expr.names["#xh"] = HINT
    return expr.update(meta_key(key))


# -- freeing a slot ----------------------------------------------------------------------------


def release(key: str, fence: Fence) -> dict[str, Any]:
    """Free a slot when nobody waits: remove the lease, count its units down (its weight read
    from the lease itself); one single-item write."""
    expr = Expr(
        sets=["#c = #c - if_not_exists(#l.#lw, :one)", "#lr = :rid"],
        removes=["#l"],
        conditions=["#c > :zero"],
        names={"#l": fence.slot, "#c": COUNT, "#lr": LAST_RELEASE, "#lw": F_WEIGHT},
        values={":rid": {"S": fence.request_id}},
    )
    if not fence.past_waiters:
        expr.conditions.append(NOBODY_WAITS)
        expr.names["#nw"] = NWAIT
    fence_conditions(
        expr,
        now=fence.now,
        token=fence.token,
        only_granted=fence.only_granted,
        seen_expiry=fence.seen_expiry,
    )
    counter_write(expr)
    return expr.update(meta_key(key))


# -- repairs -----------------------------------------------------------------------------------


def reconcile(
    key: str,
    version: int,
    removes: list[str],
    count: int,
    hint: float | None,
) -> dict[str, Any]:
    """Remove expired leases and set the count to the leases left, if the item is still the
    one read (``version``); its TTL is left as it is (it covers every lease, removed or not)."""
    expr = Expr(
        sets=["#c = :n", "#v = :nv"],
        conditions=[UNCHANGED],
        names={"#c": COUNT, "#v": VERSION},
        values={":n": {"N": str(count)}, ":nv": {"N": str(version + 1)}, ":v": {"N": str(version)}},
    )
    for n, slot in enumerate(removes):
        expr.names[f"#r{n}"] = slot
        expr.removes.append(f"#r{n}")
    if hint is not None:
        expr.sets.append("#xh = :xh")
        expr.names["#xh"] = HINT
        expr.values[":xh"] = num(hint)
    return expr.update(meta_key(key), return_old=False)


def delete_idle_counter(key: str, version: int | None) -> dict[str, Any]:
    """Delete a counter with no lease, no waiter and no limit set at run time
    (``forget_if_idle``): an override is configuration, kept while the key is idle."""
    expr = Expr(
        conditions=[IDLE, NO_OVERRIDE],
        names={"#c": COUNT, "#nw": NWAIT, "#ol": OVERRIDE},
        values={":zero": {"N": "0"}},
    )
    if version is not None:
        expr.conditions.append(UNCHANGED)
        expr.names["#v"] = VERSION
        expr.values[":v"] = {"N": str(version)}
    return expr.check(meta_key(key))


def delete_expired_counter(key: str, version: int) -> dict[str, Any]:
    """Delete a counter whose every lease was expired and whose queue was empty when read at
    ``version``: the version check says that is still so (and that no override was set
    since: setting one bumps the version; one read never plans this delete)."""
    expr = Expr(conditions=[UNCHANGED], names={"#v": VERSION}, values={":v": {"N": str(version)}})
    return expr.check(meta_key(key))


def set_hint(key: str, version: int, hint: float) -> dict[str, Any]:
    """Raise a stale expiry hint to the true earliest expiry (version-checked)."""
    expr = Expr(
        sets=["#xh = :xh"],
        conditions=[UNCHANGED],
        names={"#xh": HINT, "#v": VERSION},
        values={":xh": num(hint), ":v": {"N": str(version)}},
    )
    return expr.update(meta_key(key), return_old=False)


def set_waiting(key: str, version: int, nwait: int) -> dict[str, Any]:
    """Set ``nwait`` to the entries actually queued (version-checked)."""
    expr = Expr(
        sets=["#nw = :n", "#v = :nv"],
        conditions=[UNCHANGED],
        names={"#nw": NWAIT, "#v": VERSION},
        values={
            ":n": {"N": str(nwait)},
            ":v": {"N": str(version)},
            ":nv": {"N": str(version + 1)},
        },
    )
    return expr.update(meta_key(key), return_old=False)


# -- limits set at run time (see store/overrides.py) -----------------------------------------


def set_override(key: str, limit: int, now: float) -> dict[str, Any]:
    """Store ``limit`` as the key's override (creating the counter if needed) and pin its
    TTL. Unconditional: the set-limit call is the authority, and every admission after it
    either carries this value or is refused. Returns the new item."""
    expr = Expr(
        sets=[
            "#ol = :ol",
            "#olt = :at",
            "#e = :pinned",
            "#c = if_not_exists(#c, :zero)",
            "#v = if_not_exists(#v, :zero) + :one",
        ],
        names={
            "#ol": OVERRIDE,
            "#olt": OVERRIDE_AT,
            "#e": TTL_ATTRIBUTE,
            "#c": COUNT,
            "#v": VERSION,
        },
        values={
            ":ol": {"N": str(limit)},
            ":at": num(round(now, 3)),
            ":pinned": {"N": str(PINNED_LIFE)},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
        },
    )
    kwargs = expr.update(meta_key(key), return_old=False)
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs


def clear_override(key: str, version: int, life: float) -> dict[str, Any]:
    """Remove the override and give the counter back an ordinary TTL (``life``, computed
    from the leases read at ``version``: the version check says they are still those).
    Returns the new item."""
    expr = Expr(
        sets=["#e = :life", "#v = :nv"],
        removes=["#ol", "#olt"],
        conditions=[UNCHANGED],
        names={"#ol": OVERRIDE, "#olt": OVERRIDE_AT, "#e": TTL_ATTRIBUTE, "#v": VERSION},
        values={
            ":life": num(life),
            ":v": {"N": str(version)},
            ":nv": {"N": str(version + 1)},
        },
    )
    kwargs = expr.update(meta_key(key), return_old=False)
    kwargs["ReturnValues"] = "ALL_NEW"
    return kwargs
