"""The queue's requests: joining, checking in, leaving, and handing a slot to its head.

Split from :mod:`durable_semaphore.store.requests` (the lease writes), whose conditions,
:class:`~durable_semaphore.store.expressions.Expr` and item positions these share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durable_semaphore.store import ordering
from durable_semaphore.store.expressions import Expr
from durable_semaphore.store.overrides import believe
from durable_semaphore.store.requests import (
    KEY_FULL_OF_LIVE_LEASES,
    MUST_WAIT,
    NO_LEASE_YET,
    QUEUED_STATE,
    Fence,
    counter_write,
    fence_conditions,
)
from durable_semaphore.store.schema import (
    COUNT,
    HINT,
    LIMIT,
    NWAIT,
    SEQ,
    SERVED,
    SK,
    STATE,
    TTL_ATTRIBUTE,
    VERSION,
    WSEQ,
    holder_key,
    life_of,
    meta_key,
    num,
    queue_key,
)

# -- the queue ---------------------------------------------------------------------------------


def _put_new(table: str, item: dict[str, Any], *, return_old: bool = True) -> dict[str, Any]:
    """Put ``item`` only if its key is free; the existing item comes back on refusal."""
    put: dict[str, Any] = {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(#sk)",
        "ExpressionAttributeNames": {"#sk": SK},
    }
    if return_old:
        put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {"Put": put}


def enqueue(
    table: str,
    key: str,
    slot: str,
    limit: int,
    marker: dict[str, Any],
    entry: dict[str, Any],
    queue_expires: int,
    *,
    longer_life: bool,
    weight: int = 1,
    place: ordering.Place | None = None,
    override: int | None = None,
) -> list[dict[str, Any]]:
    """Join the queue under the entry's own number (arrivals are counted in ``wseq``; nothing
    here depends on another arrival's number, so waiters that arrive together all get in at
    their first attempt). The marker makes joining idempotent per holder. Whether it must
    wait is judged under the limit in force (``override``, the writer's belief, checked). A
    grouped entry (``place``) also checks virtual time on the counter and writes its group's
    item."""
    need = (override if override is not None else limit) - weight + 1
    expr = Expr(
        sets=[
            "#ws = if_not_exists(#ws, :zero) + :one",
            "#nw = if_not_exists(#nw, :zero) + :one",
            "#lim = :limit",
        ],
        conditions=[MUST_WAIT, NO_LEASE_YET],
        names={"#c": COUNT, "#nw": NWAIT, "#ws": WSEQ, "#lim": LIMIT, "#l": slot},
        values={":limit": {"N": str(limit)}, ":need": {"N": str(need)}},
    )
    believe(expr, override)
    counter_write(expr, life=life_of(queue_expires), longer_life=longer_life)
    if place is not None:
        ordering.join_counter(expr, place)
    items = [
        {"Update": {"TableName": table, **expr.update(meta_key(key))}},
        _put_new(table, marker),
        _put_new(table, entry, return_old=False),
    ]
    if place is not None and place.group is not None:
        items.append(ordering.join_group(table, key, place, queue_expires))
    return items


def touch(
    table: str,
    key: str,
    holder: str,
    seq: int,
    queue_expires: int,
    callbacks: tuple[str, ...],
    *,
    limit: int,
    reclaim_cutoff: float | None,
    weight: int = 1,
    override: int | None = None,
) -> list[dict[str, Any]]:
    """A waiter checks in: keep its marker and entry alive (their TTL with them) and record
    where to wake it.

    The third item checks that the key is still full of live leases (see
    :data:`KEY_FULL_OF_LIVE_LEASES`); when that fails the waiter reconciles and fills free
    slots itself, so a queue whose holders died is served by its own waiters at the same one
    request per check. Without ``reclaim_cutoff`` the check is left out (a waiter that has
    just served the queue). The check is made under the limit in force (``override``, the
    writer's belief, checked with it: a stale belief fails the check and is corrected).
    """
    entry = Expr(
        sets=["#q = :qexp", "#e = :qlife"],
        conditions=["attribute_exists(#sk)"],
        names={"#sk": SK, "#q": "qexp", "#e": TTL_ATTRIBUTE},
        values={":qexp": num(queue_expires), ":qlife": num(life_of(queue_expires))},
    )
    if callbacks:
        entry.sets += ["#cb = :cb", "#cbs = :cbs"]
        entry.names.update({"#cb": "cb", "#cbs": "cbs"})
        entry.values[":cb"] = {"S": callbacks[0]}
        entry.values[":cbs"] = {"L": [{"S": spare} for spare in callbacks[1:]]}
    items: list[dict[str, Any]] = [
        {"Update": {"TableName": table, **_queued_marker(key, holder, seq, queue_expires)}},
        {"Update": {"TableName": table, **entry.update(queue_key(key, seq), return_old=False)}},
    ]
    if reclaim_cutoff is not None:
        check = Expr(
            conditions=[KEY_FULL_OF_LIVE_LEASES],
            names={"#c": COUNT, "#xh": HINT},
            values={
                ":lim": {"N": str((override if override is not None else limit) - weight + 1)},
                ":cutoff": num(reclaim_cutoff),
            },
        )
        believe(check, override)
        items.append(
            {
                "ConditionCheck": {
                    "TableName": table,
                    **check.check(meta_key(key)),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        )
    return items


def _queued_marker(key: str, holder: str, seq: int, queue_expires: int) -> dict[str, Any]:
    """Refresh a waiter's marker, only while it is that waiter's (same entry number)."""
    expr = Expr(
        sets=["#e = :qexp"],
        conditions=["#st = :queued", "#seq = :seq"],
        names={"#e": TTL_ATTRIBUTE, "#st": STATE, "#seq": SEQ},
        values={
            ":qexp": num(queue_expires),
            ":queued": {"S": QUEUED_STATE},
            ":seq": {"N": str(seq)},
        },
    )
    return expr.update(holder_key(key, holder))


def marker_delete(key: str, holder: str, seq: int) -> dict[str, Any]:
    """Delete a waiter's marker only if it still belongs to queue entry ``seq``."""
    expr = Expr(
        conditions=["(attribute_not_exists(#sk) OR (#st = :queued AND #seq = :seq))"],
        names={"#sk": SK, "#st": STATE, "#seq": SEQ},
        values={":queued": {"S": QUEUED_STATE}, ":seq": {"N": str(seq)}},
    )
    return expr.check(holder_key(key, holder))


def leave_queue(table: str, key: str, holder: str | None, seq: int) -> list[dict[str, Any]]:
    """Remove queue entry ``seq`` (and, if given, ``holder``'s marker for that same entry)."""
    meta = Expr(
        sets=[
            "#nw = #nw - :one",
            "#v = #v + :one",
            "#sv = if_not_exists(#sv, :zero) + :one",
        ],
        conditions=["#nw > :zero"],
        names={"#nw": NWAIT, "#v": VERSION, "#sv": SERVED},
        values={":zero": {"N": "0"}, ":one": {"N": "1"}},
    )
    items: list[dict[str, Any]] = [
        {"Delete": {"TableName": table, **_existing(queue_key(key, seq))}},
        {"Update": {"TableName": table, **meta.update(meta_key(key), return_old=False)}},
    ]
    if holder is not None:
        items.append({"Delete": {"TableName": table, **marker_delete(key, holder, seq)}})
    return items


def _existing(item_key: dict[str, Any]) -> dict[str, Any]:
    return Expr(conditions=["attribute_exists(#sk)"], names={"#sk": SK}).check(item_key)


@dataclass(frozen=True, slots=True)
class Handover:
    """A slot going to the queue's head: the waiter, its lease and that lease's attribute."""

    seq: int
    holder: str
    slot: str
    lease: dict[str, Any]
    expires_at: int
    weight: int = 1
    #: Virtual time after serving a grouped waiter (store/ordering.py); None otherwise.
    vtime: int | None = None


def _release_into(expr: Expr, releaser: Fence, weight: int) -> int:
    """The releaser's part of a hand-off: its lease goes (fenced) and its units become the
    waiter's ``weight``; returns the units it freed."""
    freed = releaser.weight if releaser.weight is not None else 1
    expr.names["#l"] = releaser.slot
    expr.removes.append("#l")
    if weight != freed:
        expr.sets.append("#c = #c + :delta")  # the waiter's units for the releaser's
        expr.values[":delta"] = {"N": str(weight - freed)}
    fence_conditions(
        expr,
        now=releaser.now,
        token=releaser.token,
        only_granted=releaser.only_granted,
        seen_expiry=releaser.seen_expiry,
        weight=freed,
    )
    return freed


def handoff(
    table: str,
    key: str,
    to: Handover,
    *,
    releaser: Fence | None,
    limit: int | None = None,
    lower_hint: bool = False,
    longer_life: bool = True,
    override: int | None = None,
) -> list[dict[str, Any]]:
    """Pass a slot to the oldest live waiter in one transaction.

    With ``releaser``, its lease goes and its units go to the waiter: the slot moves, it is
    never free for a newcomer. Without one, free units are filled instead. Either way the
    waiter's units must fit under the limit in force (a heavier head waits for more to be
    freed): ``override``, the writer's belief of the key's override (checked), else the code's
    ``limit``. The waiter's queue entry and marker go; its lease is written ``granted``.
    Items: :data:`HANDOFF_META`, :data:`HANDOFF_ENTRY`, :data:`HANDOFF_MARKER`.
    """
    freed = 0
    expr = Expr(
        sets=["#w = :grant", "#nw = #nw - :one", "#sv = if_not_exists(#sv, :zero) + :one"],
        conditions=["#nw > :zero", "attribute_not_exists(#w)", "#c <= :room"],
        names={"#w": to.slot, "#nw": NWAIT, "#sv": SERVED, "#c": COUNT},
        values={":grant": to.lease},
    )
    if releaser is not None:
        freed = _release_into(expr, releaser, to.weight)
    else:
        expr.sets.append("#c = #c + :ww")
        expr.values[":ww"] = {"N": str(to.weight)}
    ceiling = override if override is not None else (limit if limit is not None else 0)
    expr.values[":room"] = {"N": str(ceiling - to.weight + freed)}
    ordering.join_vtime(expr, to.vtime)
    believe(expr, override)
    counter_write(
        expr,
        hint=to.expires_at,
        lower_hint=lower_hint,
        life=life_of(to.expires_at),
        longer_life=longer_life,
    )
    return [
        {"Update": {"TableName": table, **expr.update(meta_key(key))}},
        {"Delete": {"TableName": table, **_existing(queue_key(key, to.seq))}},
        {"Delete": {"TableName": table, **_queued_marker_delete(key, to.holder, to.seq)}},
    ]


def _queued_marker_delete(key: str, holder: str, seq: int) -> dict[str, Any]:
    expr = Expr(
        conditions=["#st = :queued", "#seq = :seq"],
        names={"#st": STATE, "#seq": SEQ},
        values={":queued": {"S": QUEUED_STATE}, ":seq": {"N": str(seq)}},
    )
    kwargs = expr.check(holder_key(key, holder))
    kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return kwargs
