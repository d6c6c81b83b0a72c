"""The end-of-run invariant, read from the raw items with faults off.

For each key:

1. **As left** (the real clock): the counter is never below the live leases it counts (a
   counter that is too high only admits fewer, and the next reconcile repairs it).
2. **After expiry**: a client whose clock is past every lease, waiter and skew margin runs
   ``reclaim_expired``. Then ``#meta`` count equals its lease attributes (held or granted), and no
   lease, queue marker or queue entry is left: nothing leaked.
3. **Capacity**: exactly ``limit`` new holders get in, and one more is refused; released, the
   key is empty again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import HOLDER_PREFIX, META_SK, QUEUE_PREFIX, QUEUED
from durable_semaphore.store.schema import Meta


@dataclass(frozen=True, slots=True)
class KeyState:
    count: int
    nwait: int
    leases: int
    live_leases: int
    markers: int
    entries: int


@dataclass(frozen=True, slots=True)
class EndState:
    key: str
    as_left: KeyState
    after_reclaim: KeyState
    freed: int
    admitted: int
    refused_extra: bool
    after_probe: KeyState


def key_state(client: Any, table: str, key: str, now: float) -> KeyState:
    """The raw items of ``key``'s partition, read strongly."""
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": key}},
        ConsistentRead=True,
    ):
        items.extend(page["Items"])
    meta = Meta.parse(next((i for i in items if i["sk"]["S"] == META_SK), None))
    holders = [i for i in items if i["sk"]["S"].startswith(HOLDER_PREFIX)]
    leases = list(meta.leases.values())
    return KeyState(
        count=meta.count,
        nwait=meta.nwait,
        leases=len(leases),
        live_leases=sum(1 for lease in leases if lease.expires_at > now),
        markers=sum(1 for i in holders if i.get("st", {}).get("S") == QUEUED),
        entries=sum(1 for i in items if i["sk"]["S"].startswith(QUEUE_PREFIX)),
    )


def end_state(
    client: Any, table: str, key: str, limit: int, *, beyond: float, clock_skew_seconds: float
) -> EndState:
    """Check ``key`` as described above; ``beyond`` is how far past the real clock every
    lease and waiter of the run has expired (seconds)."""
    as_left = key_state(client, table, key, time.time())
    offset = beyond + clock_skew_seconds + 1
    later: Callable[[], float] = lambda: time.time() + offset  # noqa: E731
    checker = DynamoDBSemaphore(
        table_name=table, client=client, clock=later, clock_skew_seconds=clock_skew_seconds
    )
    freed = checker.reclaim_expired(key)
    after_reclaim = key_state(client, table, key, later())
    admitted = 0
    for i in range(limit):
        if checker.try_acquire(key, f"probe-{i}", limit) is not None:
            admitted += 1
    refused_extra = checker.try_acquire(key, "probe-extra", limit) is None
    for i in range(limit):
        checker.release(key, f"probe-{i}")
    after_probe = key_state(client, table, key, later())
    return EndState(key, as_left, after_reclaim, freed, admitted, refused_extra, after_probe)


def problems(state: EndState, limit: int) -> list[str]:
    """What is wrong with ``state`` (empty when the invariant holds)."""
    found = []
    left, after, probed = state.as_left, state.after_reclaim, state.after_probe
    if left.count < left.live_leases:
        found.append(f"{state.key}: counter {left.count} below {left.live_leases} live leases")
    if after.count != after.leases:
        found.append(f"{state.key}: after reclaim, counter {after.count} != {after.leases} leases")
    if after.leases or after.markers or after.entries or after.nwait:
        found.append(f"{state.key}: left after reclaim: {after}")
    if state.admitted != limit or not state.refused_extra:
        found.append(
            f"{state.key}: {state.admitted} of {limit} probes admitted, "
            f"one more {'refused' if state.refused_extra else 'admitted'}"
        )
    if probed.count or probed.leases or probed.markers or probed.entries or probed.nwait:
        found.append(f"{state.key}: left after the probe: {probed}")
    return found
