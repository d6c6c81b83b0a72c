"""The lease table's admin commands: ``status``, ``release``, ``set-limit``, ``create-table``
and ``reap``.

Each reaches the table through the limiter facade
(:func:`durable_semaphore.cli_support.limiter_from_args`), never the store itself.
:mod:`durable_semaphore.cli` registers them, and maps their errors to its exit codes.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from durable_semaphore._store_access import CODE, LimitInForce, limit_of
from durable_semaphore.cli_support import (
    EXIT_NO,
    EXIT_OK,
    add_common_options,
    limiter_from_args,
)
from durable_semaphore.errors import InvalidArgumentError, PrerequisiteError
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.store import GRANTED, Lease, SlotCount, Waiter
from durable_semaphore.store.overrides import StoredLimit
from durable_semaphore.store.shards import shard_limit

__all__ = [
    "add_create_table",
    "add_reap",
    "add_release",
    "add_set_limit",
    "add_status",
    "create_table",
    "reap",
    "release",
    "set_limit",
    "status",
]


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the semaphore key (a limiter name, or ARN#operation id)")
    parser.add_argument(
        "--limit",
        type=int,
        help="the key's limit: with it, every shard of a sharded limit is shown (the shards "
        "a limit has follow from it and --shards)",
    )
    parser.add_argument("--shards", type=int, help="the limiter's shards= (default: automatic)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def status(args: argparse.Namespace) -> int:
    """Holders of KEY with state, expiry and execution, its wait queue in order, and the
    stored counters (which may include expired leases and dead waiters not yet cleared).

    Dead queue entries are listed (``expired``) because they still occupy their place until a
    release drops them; ``waiting`` counts only the live ones. A waiter's place is shown as how
    many entries are ahead of it (and how many of those are live), not its sequence number:
    sequence numbers order the queue but count arrivals, so they say nothing about the wait.
    """
    table = limiter_from_args(args)
    if args.limit is not None:
        table = DynamoDBLimiter(
            limit=args.limit, shards=args.shards, semaphore=table.semaphore, waker=None
        )
    views = [_view(table, key) for key in table.stored_keys(args.key, args.limit)]
    total_limit = _in_force([view.limit for view in views], args.limit)
    if len(views) > 1:  # each shard shows its own share
        views = [
            replace(view, in_force=_in_force([view.limit], _share(args.limit, len(views), i)))
            for i, view in enumerate(views)
        ]
    else:
        views = [replace(views[0], in_force=total_limit)]
    if args.json:
        if len(views) == 1:
            print(json.dumps(_status_json(views[0]), indent=2))
        else:
            shards = [_status_json(view) for view in views]
            total = {"key": args.key, "live": sum(s["live"] for s in shards)}
            total.update(_limit_json(total_limit))
            print(json.dumps({**total, "shards": shards}, indent=2))
        return EXIT_OK
    if len(views) > 1:
        live = sum(len(view.leases) for view in views)
        waiting = sum(view.waiting for view in views)
        print(
            f"{args.key!r}: {len(views)} shards, {live} live lease(s), {waiting} waiting, "
            f"limit {_describe(total_limit)}"
        )
    for view in views:
        _print_status(view)
    return EXIT_OK


def _share(limit: int | None, shards: int, index: int) -> int | None:
    return None if limit is None else shard_limit(limit, shards, index)


def _in_force(stored: list[StoredLimit], given: int | None) -> LimitInForce:
    """The limit in force as ``status`` tells it: a limit given with --limit is named so."""
    found = limit_of(stored, given)
    if found.source == CODE and given is not None:
        return found._replace(source="--limit")
    return found


def _describe(limit: LimitInForce) -> str:
    if limit.limit is None:
        return "unknown (no limit set at run time, none recorded yet; pass --limit)"
    return limit.describe()


def _limit_json(limit: LimitInForce) -> dict[str, Any]:
    return {
        "limit": limit.limit,
        "limit_source": limit.source,
        "limit_set_at": _iso(limit.set_at) if limit.set_at is not None else None,
    }


def _view(table: DynamoDBLimiter, key: str) -> _KeyView:
    """One stored key, read once."""
    now = table.now()
    entries = table.entries(key)
    return _KeyView(
        key=key,
        table=str(table.table_name),
        now=now,
        leases=sorted((e for e in entries if e.holds_slot), key=lambda lease: lease.acquired_at),
        # The queue marker knows when its holder joined; the queue entry only when it expires.
        markers={e.holder: e for e in entries if not e.holds_slot},
        queue=table.waiters(key),
        count=table.slot_count(key),
        limit=table.stored_limit(key),
    )


_UNKNOWN = LimitInForce(None, CODE)


@dataclass(frozen=True)
class _KeyView:
    """What ``status`` read of one key, read once and shown as JSON or text."""

    key: str
    table: str
    now: float
    leases: list[Lease]
    markers: dict[str, Lease]
    queue: list[Waiter]
    count: SlotCount
    limit: StoredLimit
    #: The limit in force and its source, as ``status`` shows it (set once all are read).
    in_force: LimitInForce = _UNKNOWN

    @property
    def waiting(self) -> int:
        return sum(1 for w in self.queue if w.is_live(self.now))


def _status_json(view: _KeyView) -> dict[str, Any]:
    now = view.now
    return {
        "key": view.key,
        "table": view.table,
        "live": len(view.leases),
        "count": view.count.count,
        "waiting": view.waiting,
        "queue_count": view.count.waiters,
        **_limit_json(view.in_force),
        "holders": [
            {
                "holder": lease.holder,
                "state": lease.state,
                "acquired_at": _iso(lease.acquired_at),
                "expires_at": _iso(lease.expires_at),
                # Whole seconds left, rounded down: the store rounds the expiry up to its
                # TTL second, so rounding to nearest could report more time than the lease
                # was granted.
                "expires_in_seconds": max(0, int(lease.expires_at - now)),
                "execution_arn": lease.execution_arn,
            }
            for lease in view.leases
        ],
        "waiting_by": [
            {"group": g, "priority": p, "count": n} for g, p, n in _waiting_by(view.queue, now)
        ],
        "waiters": [
            _waiter_json(view.queue, ahead, view.markers.get(waiter.holder), now)
            for ahead, waiter in enumerate(view.queue)
        ],
    }


def _print_status(view: _KeyView) -> None:
    now, leases, queue, count = view.now, view.leases, view.queue, view.count
    print(
        f"key {view.key!r} in table {view.table!r}: {len(leases)} live lease(s), "
        f"{view.waiting} waiting"
    )
    print(f"  limit      {_describe(view.in_force)}")
    if count.count != len(leases):
        print(
            f"  counter says {count.count}: {count.count - len(leases)} expired lease(s) not "
            "reclaimed yet (the next full acquire, or durable-semaphore reap, reclaims them)"
        )
    if count.waiters != len(queue):
        print(f"  counter says {count.waiters} waiting: the next release or acquire repairs it")
    by = _waiting_by(queue, now)
    if any(group is not None or priority for group, priority, _ in by):
        shown = ", ".join(f"{g if g is not None else '-'} p{p}: {n}" for g, p, n in by)
        print(f"  waiting by group and priority: {shown}")
    for lease in leases:
        print(f"  holder     {lease.holder}")
        if lease.state == GRANTED:
            print("    state    granted: handed over from the queue, not claimed yet")
        print(f"    expires  {_iso(lease.expires_at)} (in {_duration(lease.expires_at - now)})")
        print(f"    acquired {_iso(lease.acquired_at)}")
        print(f"    execution {lease.execution_arn or '-'}")
    for ahead, waiter in enumerate(queue):
        _print_waiter(queue, ahead, view.markers.get(waiter.holder), now)


def _print_waiter(queue: Sequence[Waiter], ahead: int, marker: Lease | None, now: float) -> None:
    waiter = queue[ahead]
    print(f"  waiter     {waiter.holder}")
    print(f"    ahead    {_ahead(queue, ahead, now)}")
    if marker is not None:
        queued_for = _duration(now - marker.acquired_at)
        print(f"    queued   {_iso(marker.acquired_at)} ({queued_for} ago)")
    if waiter.is_live(now):
        left = _duration(waiter.expires_at - now)
        print(f"    expires  {_iso(waiter.expires_at)} (in {left} unless it checks in)")
    else:
        print(f"    expired  {_iso(waiter.expires_at)} (dead: dropped when reached)")
    if waiter.group is not None or waiter.priority:
        print(f"    order    group {waiter.group or '-'}, priority {waiter.priority}")
    print(f"    wake     {'callback' if waiter.callback_id else 'polls'}")
    print(f"    execution {waiter.execution_arn or '-'}")


def _waiting_by(queue: Sequence[Waiter], now: float) -> list[tuple[str | None, int, int]]:
    """Live waiters counted by (group, priority), highest priority first: who the queue
    serves under fair sharing and priorities, at a glance."""
    counts: dict[tuple[str | None, int], int] = {}
    for waiter in queue:
        if waiter.is_live(now):
            place = (waiter.group, waiter.priority)
            counts[place] = counts.get(place, 0) + 1
    order = sorted(counts.items(), key=lambda kv: (-kv[0][1], kv[0][0] or ""))
    return [(group, priority, n) for (group, priority), n in order]


def _ahead(queue: Sequence[Waiter], ahead: int, now: float) -> str:
    """``N ahead`` for the text output; the live count only when dead entries are among them."""
    live = sum(1 for w in queue[:ahead] if w.is_live(now))
    if live == ahead:
        return f"{ahead} ahead"
    return f"{ahead} ahead ({live} live; the expired are dropped when reached)"


def _waiter_json(
    queue: Sequence[Waiter], ahead: int, marker: Lease | None, now: float
) -> dict[str, Any]:
    """The queue entry ``queue[ahead]`` for ``status --json``; ``queued_*`` are None when its
    marker is gone. ``ahead`` counts the entries before it, ``live_ahead`` the live ones."""
    waiter = queue[ahead]
    return {
        "holder": waiter.holder,
        "ahead": ahead,
        "live_ahead": sum(1 for w in queue[:ahead] if w.is_live(now)),
        "queued_at": _iso(marker.acquired_at) if marker is not None else None,
        "queued_seconds": max(0, int(now - marker.acquired_at)) if marker is not None else None,
        "expires_at": _iso(waiter.expires_at),
        "expires_in_seconds": max(0, int(waiter.expires_at - now)),
        "expired": not waiter.is_live(now),
        "callback": waiter.callback_id is not None,
        "execution_arn": waiter.execution_arn,
        "group": waiter.group,
        "priority": waiter.priority,
    }


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def add_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the semaphore key")
    parser.add_argument("holder", help="the holder id (see: durable-semaphore status KEY)")
    parser.epilog = (
        "A holder that waits in the queue leaves it (exit 0). A released slot goes to the "
        "oldest waiter, who finds it at its next check. Exit 1 when the holder neither holds a "
        "live lease nor waits."
    )


def release(args: argparse.Namespace) -> int:
    """Free one holder's slot by hand (e.g. after an execution was deleted), or take a waiting
    holder out of the queue; exit 0 for either, 1 when there was nothing to release."""
    table = limiter_from_args(args)
    # No wake-up: the oldest waiter finds the handed-over slot at its next check.
    result = table.release(args.key, args.holder, wake=False)
    if result.left_queue:
        print(f"{args.holder!r} was waiting on {args.key!r}: it left the queue (it held no slot)")
        return EXIT_OK
    if result.released:
        print(f"released {args.holder!r} on {args.key!r}")
        if result.grant is not None:
            print(
                f"  the slot was handed to {result.grant.holder!r}, the oldest waiter; it takes "
                "it at its next check"
            )
        return EXIT_OK
    print(
        f"{args.holder!r} holds no live lease on {args.key!r} and is not queued; nothing released"
    )
    return EXIT_NO


def add_set_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the limit's name (a limiter name, or a stored key)")
    parser.add_argument("limit", nargs="?", type=int, help="the new limit (none with --clear)")
    parser.add_argument(
        "--clear", action="store_true", help="return the key to the limit the code passes"
    )
    parser.add_argument(
        "--shards",
        type=int,
        help="the shards the limit is stored in (the limiter's shards=, as status shows; "
        "default 1); each shard gets its share of N",
    )
    parser.add_argument(
        "--code-limit",
        type=int,
        help="the code's limit: with it, the shards follow from it and --shards as in status "
        "--limit, and --clear serves waiters up to it at once",
    )
    parser.epilog = (
        "The limit set here takes precedence over the one the code passes, until --clear, "
        "and survives the key going idle. Raising it admits the oldest waiters at once (they "
        "take their slot at their next check); lowering it revokes nobody: no one is admitted "
        "until fewer units than the new limit are held."
    )


def set_limit(args: argparse.Namespace) -> int:
    """Set (or clear) the limit of KEY at run time; exit 0."""
    if (args.limit is None) != args.clear:
        raise InvalidArgumentError("limit", args.limit, "give the new limit N, or --clear")
    table = limiter_from_args(args)
    shards = args.shards
    if args.code_limit is not None:
        table = DynamoDBLimiter(
            limit=args.code_limit, shards=shards, semaphore=table.semaphore, waker=None
        )
        shards = None  # the limiter places the shards, as status --limit does
    where = {"code_limit": args.code_limit, "shards": shards}
    before = table.limit_in_force(args.key, **where)
    if args.clear:
        grants = table.clear_limit(args.key, **where, wake=False)
        print(f"limit of {args.key!r} cleared (was {_describe(before)}): the code's applies")
    else:
        grants = table.set_limit(args.key, args.limit, **where, wake=False)
        print(f"limit of {args.key!r} set to {args.limit} (was {_describe(before)})")
    if grants:
        names = ", ".join(grant.holder for grant in grants)
        print(f"  {len(grants)} waiter(s) admitted: {names} (at their next check)")
    return EXIT_OK


def add_create_table(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return before the table is ACTIVE")


def create_table(args: argparse.Namespace) -> int:
    """Create the lease table (on-demand billing, TTL on expires_at); idempotent."""
    table = limiter_from_args(args)
    created = table.create_table(wait=not args.no_wait)
    print(f"table {table.table_name!r} {'created' if created else 'already exists'}")
    return EXIT_OK


def add_reap(parser: argparse.ArgumentParser) -> None:
    try:
        from durable_semaphore import reaper
    except ImportError:
        add_common_options(parser)  # so that `reap --help` still shows something sensible
        return
    reaper.add_cli_arguments(parser)


def reap(args: argparse.Namespace) -> int:
    """Delegate to the reaper: release leases of finished executions, reclaim expired ones."""
    try:
        from durable_semaphore import reaper
    except ImportError as exc:
        raise PrerequisiteError(f"the reaper is not available in this build: {exc}") from exc
    result: int = reaper.run_cli(args)
    return result
