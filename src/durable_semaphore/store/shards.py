"""Sharding: one logical limit spread over several counter items, so that a hot key is not
capped by one partition (about 1,000 write units a second, 500 cycles at 2 units each).

Shard ``i`` of ``n`` is its own key, ``<key>#<i>of<n>``, with ``limit // n`` slots (the first
``limit % n`` shards one more), so the shards' limits add up to the limit and no reading of
several items is ever needed to keep the total under it. A holder always goes to the shard
its id hashes to: the same shard on every replay, so a holder is never counted twice, and
each shard keeps its own FIFO queue and hand-off.

What it costs: order is FIFO within a shard, not across them, and a shard can be full while
another has room (fewer than ``limit`` in flight with someone waiting), which matters when
few holders share a large limit. The count of shards is part of the key, so two
configurations never share rows; change it only while the limit is idle.
"""

from __future__ import annotations

import hashlib

from durable_semaphore.errors import InvalidArgumentError

#: The most slots one counter item carries: its leases stay far below DynamoDB's 400 KB item
#: limit even with the longest holder ids, and a write of a full item stays a few KB.
MAX_SLOTS_PER_SHARD = 100


def validate_shards(shards: object, limit: int) -> int:
    """A shard count for ``limit``: an integer from 1 to ``limit`` that leaves no shard over
    :data:`MAX_SLOTS_PER_SHARD` slots."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= limit:
        raise InvalidArgumentError(
            "shards", shards, f"must be an integer from 1 to the limit ({limit})"
        )
    if fullest_shard(limit, shards) > MAX_SLOTS_PER_SHARD:
        raise InvalidArgumentError(
            "shards",
            shards,
            f"leaves over {MAX_SLOTS_PER_SHARD} slots per shard at limit {limit}; "
            f"use at least {min_shards(limit)}",
        )
    return shards


def min_shards(limit: int) -> int:
    """The fewest shards a limit needs (one counter item carries at most
    :data:`MAX_SLOTS_PER_SHARD` slots); the default shard count."""
    return -(-limit // MAX_SLOTS_PER_SHARD)


def shard_limit(limit: int, shards: int, index: int) -> int:
    """Slots of shard ``index``: the limit split as evenly as it goes."""
    return limit // shards + (1 if index < limit % shards else 0)


def fullest_shard(limit: int, shards: int) -> int:
    """Slots of the fullest shard (the first): what :data:`MAX_SLOTS_PER_SHARD` bounds."""
    return shard_limit(limit, shards, 0)


def shard_key(key: str, shards: int, index: int) -> str:
    return key if shards == 1 else f"{key}#{index}of{shards}"


def shard_of(holder: str, shards: int) -> int:
    """The shard a holder always goes to."""
    if shards == 1:
        return 0
    digest = hashlib.blake2b(holder.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def placement(key: str, holder: str, limit: int, shards: int) -> tuple[str, int]:
    """(the key, the limit) a holder's acquire and release use."""
    index = shard_of(holder, shards)
    return shard_key(key, shards, index), shard_limit(limit, shards, index)


def all_shards(key: str, limit: int, shards: int) -> list[tuple[str, int]]:
    """Every (key, limit) of a sharded limit, for status and repairs."""
    return [(shard_key(key, shards, i), shard_limit(limit, shards, i)) for i in range(shards)]


def override_shares(limit: int, shards: int) -> list[int]:
    """Each shard's share of a limit set at run time, by the same rule as the code's limit.

    The shard count stays the code's (it is part of the stored keys), so a limit that would
    leave a shard without a slot (fewer than ``shards``), or one item with more than
    :data:`MAX_SLOTS_PER_SHARD`, is refused rather than silently rounded.
    """
    if limit < shards:
        raise InvalidArgumentError(
            "limit",
            limit,
            f"is below the {shards} shards the key is stored in: every shard needs a slot "
            f"(set at least {shards}, or change the code's shards)",
        )
    if fullest_shard(limit, shards) > MAX_SLOTS_PER_SHARD:
        raise InvalidArgumentError(
            "limit",
            limit,
            f"leaves over {MAX_SLOTS_PER_SHARD} slots per shard on the key's {shards} shards "
            f"(set at most {MAX_SLOTS_PER_SHARD * shards}, or change the code's shards)",
        )
    return [shard_limit(limit, shards, i) for i in range(shards)]
