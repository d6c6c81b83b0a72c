"""Sharding's arithmetic and configuration (pure: no DynamoDB)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_semaphore import DynamoDBLimiter, InvalidArgumentError
from durable_semaphore.store.shards import (
    MAX_SLOTS_PER_SHARD,
    all_shards,
    min_shards,
    placement,
    shard_of,
)


@given(limit=st.integers(1, 5_000), extra=st.integers(0, 20))
def test_the_shards_limits_add_up_to_the_limit(limit: int, extra: int) -> None:
    shards = min(limit, min_shards(limit) + extra)
    parts = all_shards("k", limit, shards)
    assert sum(share for _, share in parts) == limit
    assert all(1 <= share <= MAX_SLOTS_PER_SHARD for _, share in parts)
    assert len({key for key, _ in parts}) == shards


@given(holder=st.text(min_size=1, max_size=60), shards=st.integers(1, 64))
def test_a_holder_always_goes_to_the_same_shard(holder: str, shards: int) -> None:
    key, share = placement("k", holder, 1_000, max(shards, min_shards(1_000)))
    assert (key, share) == placement("k", holder, 1_000, max(shards, min_shards(1_000)))
    assert 0 <= shard_of(holder, shards) < shards


def test_one_shard_is_the_key_itself() -> None:
    assert placement("payments", "h", 5, 1) == ("payments", 5)


def test_holders_spread_over_the_shards() -> None:
    counts = [0] * 10
    for i in range(10_000):
        counts[shard_of(f"arn#op#{i}", 10)] += 1
    assert min(counts) > 900 and max(counts) < 1_100


@pytest.mark.parametrize(
    ("limit", "shards", "why"),
    [
        (10, 0, "from 1 to the limit"),
        (10, 11, "from 1 to the limit"),
        (10, True, "from 1 to the limit"),
        (1_000, 5, "use at least 10"),
    ],
)
def test_bad_shard_counts_get_our_error_with_the_value(
    limit: int, shards: object, why: str
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        DynamoDBLimiter("api", limit, shards=shards, waker=None)  # type: ignore[arg-type]
    assert why in str(exc.value) and repr(shards) in str(exc.value)


def test_the_default_is_the_fewest_shards_a_limit_needs() -> None:
    assert DynamoDBLimiter("a", 100, waker=None).shards_for(100) == 1
    assert DynamoDBLimiter("a", 101, waker=None).shards_for(101) == 2
    assert DynamoDBLimiter("a", 1_000, shards=50, waker=None).shards_for(1_000) == 50
    # A per-operation limiter learns its limit per map: never more shards than slots.
    assert DynamoDBLimiter(shards=8, waker=None).shards_for(3) == 3
