"""The queue's order: priority with ageing, and fair sharing between groups.

The queue is one sorted range of sort keys, and its head is its first entry, so a hand-off
reads the head exactly as a plain FIFO queue does. Order is therefore decided once, when an
entry joins, by the **rank** written into its sort key; ties go to the earlier arrival.

Ranks are in the units of the arrival numbers (``core._next_seq``: microseconds times
1,000). One **rank unit** (:data:`RANK_UNIT`) is one second of arrival time:

- **plain** (priority 0, no group): rank = its arrival number. Sort key and requests are what
  they always were: FIFO by arrival.
- **ungrouped, priority p**: rank = arrival - p * aging * RANK_UNIT. A priority level is worth
  ``aging`` seconds of earlier arrival. Bound: waiter W is passed only by waiters that
  arrived less than (p - p_W) * aging seconds after it, so it waits at most for what was
  queued before it plus what arrives in the next (P - p_W) * aging seconds (P the highest
  priority in use). Joining costs what a plain join costs.
- **grouped** (start-time fair queuing): each group keeps the start tag of its last entry
  (``g#<group>``), the counter keeps the virtual time V (``vt``: the tag of the last grouped
  entry served plus one unit). A joining entry's tag S = max(V, last[group] + RANK_UNIT) and
  its rank = S - p * aging * RANK_UNIT. With equal priorities, backlogged groups take turns
  (a new group's first entry goes right after the entry being served), FIFO within a group.
  Bound: the k-th entry of W's group that arrives after W has S >= S_W + k units, so W is
  passed by fewer than (p - p_W) * aging later entries of its own group, and by at most
  (p - p_W) * aging + (S_W - V)/RANK_UNIT + 1 entries of any other group (its fair turns).
  A grouped join reads the group's item (GetItem) and the counter (which a refused acquire
  has just returned, or a second GetItem) and writes the group's item in its transaction.

Serving an entry that priority put ahead of its group's backlog moves V to that entry's tag
(plus a unit): groups joining afterwards start behind the tags queued before it, so they lose
up to that backlog's turns (no starvation; exact SFQ with one priority per key).

Virtual time starts at the first grouped entry's arrival number (an epoch, ``ve``, kept with
it); a group's item from an earlier epoch (the key went idle and its counter was deleted) is
ignored. Grouped and plain entries share the one order: a plain entry's rank is its arrival
time, a grouped one's its virtual tag, so in a key that mixes them neither starves (both
advance), but their shares are not equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from durable_semaphore.store.expressions import Expr
from durable_semaphore.store.model import ORDERED_BASE, TIE_SPACE, Waiter
from durable_semaphore.store.schema import (
    PK,
    QUEUE_GROUP,
    QUEUE_PRIORITY,
    QUEUE_TAG,
    SK,
    TTL_ATTRIBUTE,
    life_of,
    num,
)

#: One second of arrival numbers: what one turn of a group, and one unit of ageing, is worth.
RANK_UNIT = 10**9
#: Rank units per priority level, unless the semaphore is given another ``aging``.
DEFAULT_AGING = 100
#: Ranks are clamped to this (a number of 38 digits at most; see model.ORDERED_BASE).
MAX_RANK = 9 * 10**18
GROUP_PREFIX = "g#"
#: On the counter: virtual time, and the epoch it belongs to. On a group's item: its last tag.
VTIME = "vt"
EPOCH = "ve"
GROUP_LAST = "last"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a joining entry goes, and (grouped) what its join read, for its conditions."""

    seq: int
    priority: int = 0
    group: str | None = None
    tag: int | None = None
    seen_vtime: int | None = None
    epoch: int | None = None
    seen_last: int | None = None

    @property
    def plain(self) -> bool:
        return self.priority == 0 and self.group is None


def ordered_seq(rank: int, arrival: int) -> int:
    """The number of an entry of ``rank``: ties broken by arrival (its last 18 digits)."""
    return ORDERED_BASE + min(max(rank, 0), MAX_RANK) * TIE_SPACE + arrival % TIE_SPACE


def ungrouped_place(arrival: int, priority: int, aging: int) -> Place:
    """A plain waiter keeps its arrival number; a prioritized one is ranked ahead by
    ``priority * aging`` seconds of arrival."""
    if priority == 0:
        return Place(arrival)
    rank = arrival - priority * aging * RANK_UNIT
    return Place(ordered_seq(rank, arrival), priority)


def grouped_place(
    arrival: int,
    priority: int,
    aging: int,
    group: str,
    meta: Mapping[str, Any] | None,
    group_item: Mapping[str, Any] | None,
) -> Place:
    """A grouped waiter's tag and rank, from the counter and its group's item as read."""
    vtime = _number(meta, VTIME)
    last = _number(group_item, GROUP_LAST)
    if vtime is None:
        epoch, tag = arrival, arrival  # the first grouped entry starts virtual time
    else:
        epoch = _number(meta, EPOCH) or vtime
        current = last if _number(group_item, EPOCH) == epoch else None
        tag = vtime if current is None else max(vtime, current + RANK_UNIT)
    rank = tag - priority * aging * RANK_UNIT
    return Place(
        ordered_seq(rank, arrival),
        priority,
        group,
        tag,
        vtime,
        epoch,
        last,
    )


def order_moved(meta: Mapping[str, Any] | None, place: Place) -> bool:
    """Whether a grouped join was refused because virtual time moved since it read it."""
    return place.group is not None and _number(meta, VTIME) != place.seen_vtime


def _number(item: Mapping[str, Any] | None, name: str) -> int | None:
    return int(item[name]["N"]) if item and name in item else None


def entry_fields(place: Place) -> dict[str, Any]:
    """The queue entry's attributes that say how it was ordered (none for a plain one)."""
    fields: dict[str, Any] = {}
    if place.priority:
        fields[QUEUE_PRIORITY] = {"N": str(place.priority)}
    if place.group is not None and place.tag is not None:
        fields[QUEUE_GROUP] = {"S": place.group}
        fields[QUEUE_TAG] = {"N": str(place.tag)}
    return fields


def group_key(key: str, group: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": GROUP_PREFIX + group}}


def join_counter(expr: Expr, place: Place) -> None:
    """A grouped join's conditions on the counter: virtual time has not passed the entry's
    tag (a hand-off in between would make it jump the queue), in the epoch it read; the first
    grouped join starts the epoch."""
    if place.group is None or place.tag is None or place.epoch is None:
        return
    expr.names.update({"#vt": VTIME, "#ve": EPOCH})
    expr.values.update({":tag": {"N": str(place.tag)}, ":ep": {"N": str(place.epoch)}})
    if place.seen_vtime is None:
        expr.sets += ["#vt = :tag", "#ve = :ep"]
        expr.conditions.append("attribute_not_exists(#vt)")
    else:
        expr.conditions.append("#ve = :ep AND #vt <= :tag")


def join_group(table: str, key: str, place: Place, queue_expires: int) -> dict[str, Any]:
    """The group's item in a grouped join: its last tag becomes this entry's, if nobody of
    the group joined since it was read. It lives as long as the entry (TTL)."""
    assert place.group is not None and place.tag is not None and place.epoch is not None
    expr = Expr(
        sets=["#gl = :tag", "#ve = :ep", "#e = :life"],
        names={"#gl": GROUP_LAST, "#ve": EPOCH, "#e": TTL_ATTRIBUTE},
        values={
            ":tag": {"N": str(place.tag)},
            ":ep": {"N": str(place.epoch)},
            ":life": num(life_of(queue_expires)),
        },
    )
    if place.seen_last is not None:
        expr.conditions.append("#gl = :seen")
        expr.values[":seen"] = {"N": str(place.seen_last)}
    else:
        expr.conditions.append("attribute_not_exists(#gl)")
    write = expr.update(group_key(key, place.group), return_old=False)
    return {"Update": {"TableName": table, **write}}


def served_vtime(waiter: Waiter) -> int | None:
    """Virtual time after serving ``waiter``: its tag plus a unit (grouped only)."""
    if waiter.group is None or waiter.tag is None:
        return None
    return waiter.tag + RANK_UNIT


def join_vtime(expr: Expr, vtime: int | None) -> None:
    """A hand-off's counter write advances virtual time when it serves a grouped entry."""
    if vtime is None:
        return
    expr.sets.append("#vt = :vt")
    expr.names["#vt"] = VTIME
    expr.values[":vt"] = {"N": str(vtime)}
