"""The reconcile planner: from one read of a counter item to the writes that repair it.

Pure, so every plan can be checked without DynamoDB: which expired leases to remove, the
count and expiry hint after each write, and whether the item can go altogether.
"""

from __future__ import annotations

from dataclasses import dataclass

from durable_semaphore.store.schema import Meta

#: Lease attributes one write removes: an UpdateExpression is at most 4 KB, and each removal
#: costs about 6 bytes of it ("#r123, ").
REMOVES_PER_WRITE = 400


@dataclass(frozen=True, slots=True)
class Batch:
    """One write of a reconcile, expecting the version the previous one wrote."""

    version: int
    removes: list[str]
    #: The count after this write: the units of the leases still in the item (expired ones
    #: that later writes remove included), so no reader between writes sees fewer counted
    #: than there are.
    count: int
    #: The earliest expiry among those leases.
    hint: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    batches: list[Batch]
    #: The earliest expiry among the leases that stay live.
    hint: float | None
    #: Nothing to remove and the count already right: no write needed.
    settled: bool
    #: Nothing live, nobody waiting and no limit set at run time: the item itself can go,
    #: in one version-checked delete whatever the number of expired leases in it.
    idle: bool


def plan(meta: Meta, *, cutoff: float, per_write: int = REMOVES_PER_WRITE) -> Plan:
    """The writes that remove every lease expired at ``cutoff`` (the reclaim cutoff: the
    reader's clock less the skew margin) and set the count to what is left."""
    expired = sorted(
        (name for name, lease in meta.leases.items() if lease.expires_at <= cutoff),
        key=lambda name: meta.leases[name].expires_at,
    )
    live = [lease.expires_at for lease in meta.leases.values() if lease.expires_at > cutoff]
    hint = min(live, default=None)
    # A limit set at run time is configuration: its counter is never idle.
    idle = meta.exists and not live and meta.nwait <= 0 and meta.override is None
    units = sum(lease.weight for lease in meta.leases.values())
    settled = not expired and meta.count == units
    chunks = [expired[i : i + per_write] for i in range(0, len(expired), per_write)] or [[]]
    batches: list[Batch] = []
    left = units
    removed: set[str] = set()
    for n, chunk in enumerate(chunks):
        left -= sum(meta.leases[name].weight for name in chunk)
        removed.update(chunk)
        remaining = [lease.expires_at for name, lease in meta.leases.items() if name not in removed]
        batches.append(Batch(meta.version + n, chunk, left, min(remaining, default=None)))
    return Plan(batches, hint, settled, idle)
