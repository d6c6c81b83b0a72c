"""Unit tests of the limiter policy, config validation, version check and hook idempotence."""

from __future__ import annotations

import pytest
from aws_durable_execution_sdk_python.context import DurableContext

import durable_semaphore
import durable_semaphore.sdk as sdk
from durable_semaphore import (
    DynamoDBLimiter,
    InvalidArgumentError,
    MapConfig,
    ParallelConfig,
    UnsupportedSDKVersionError,
)
from durable_semaphore.retry import is_transient_error
from durable_semaphore.settings import resolve_table_name


def test_dynamodb_limiter_requires_max_concurrency() -> None:
    with pytest.raises(InvalidArgumentError, match="max_concurrency=None"):
        MapConfig(limiter="dynamodb")
    with pytest.raises(InvalidArgumentError, match="max_concurrency=None"):
        ParallelConfig(limiter="dynamodb")
    with pytest.raises(InvalidArgumentError, match="limiter='redis'"):
        MapConfig(max_concurrency=2, limiter="redis")  # type: ignore[arg-type]
    assert MapConfig(max_concurrency=2, limiter="dynamodb").limiter == "dynamodb"
    assert MapConfig().limiter is None


def test_named_limiter_needs_a_limit() -> None:
    with pytest.raises(InvalidArgumentError, match="limit=None"):
        DynamoDBLimiter(name="x")
    with pytest.raises(InvalidArgumentError, match="limit=0"):
        DynamoDBLimiter(name="x", limit=0)
    with pytest.raises(InvalidArgumentError, match="name=''"):
        DynamoDBLimiter(name="", limit=1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ttl_seconds": float("inf")}, "ttl_seconds"),
        ({"ttl_seconds": 1e200}, "ttl_seconds"),
        ({"max_delay_seconds": float("inf")}, "max_delay_seconds"),
        ({"name": "  x ", "limit": 1}, "name"),
        ({"name": "x", "limit": 10**38 + 1}, "limit"),
        ({"wake_timeout_seconds": 0}, "wake_timeout_seconds"),
        ({"waker": "sns"}, "waker"),
    ],
)
def test_limiter_refuses_bad_settings_at_construction(kwargs: dict[str, object], name: str) -> None:
    """Refused when built, with the offending value, not later in every branch."""
    with pytest.raises(InvalidArgumentError) as info:
        DynamoDBLimiter(**kwargs)  # type: ignore[arg-type]
    assert info.value.name == name


def test_connection_timeouts_are_transient() -> None:
    from botocore.exceptions import ConnectTimeoutError, ResponseStreamingError

    assert is_transient_error(ConnectTimeoutError(endpoint_url="http://x"))
    assert is_transient_error(ResponseStreamingError(error="reset"))


def test_scope_keys_and_holder_ids() -> None:
    per_op = DynamoDBLimiter()
    named = DynamoDBLimiter(name="payments", limit=3)
    assert per_op.scope_key("arn1", "op") == "arn1#op"
    assert named.scope_key("arn1", "op") == "payments"
    holder = per_op.holder_id("arn1", "op", "branch")
    assert holder == "arn1#op#branch"
    assert holder.startswith(per_op.holder_prefix("arn1", "op"))
    assert per_op.resolve_limit(5) == 5
    assert named.resolve_limit(50) == 3


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    top = DynamoDBLimiter(
        initial_delay_seconds=1,
        backoff_multiplier=2,
        max_delay_seconds=10,
        random_source=lambda: 0.999,
    )
    assert [top.backoff_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert top.backoff_delay(10_000) == 10  # no overflow
    bottom = DynamoDBLimiter(max_delay_seconds=10, random_source=lambda: 0.0)
    assert bottom.backoff_delay(5) == 1  # the durable minimum
    fixed = DynamoDBLimiter(jitter=False, max_delay_seconds=30)
    assert fixed.backoff_delay(4) == 8


def test_table_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_SEMAPHORE_TABLE", raising=False)
    assert resolve_table_name() == "durable-semaphore"
    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", "from-env")
    assert resolve_table_name() == "from-env"
    assert resolve_table_name("explicit") == "explicit"


def test_version_check() -> None:
    assert sdk.check_sdk_version("1.7.0") == "1.7.0"
    assert sdk.check_sdk_version("3.0.0") == "3.0.0"
    for bad in ("1.6.9", "4.0.0", "0.9", "garbage"):
        with pytest.raises(UnsupportedSDKVersionError, match=r"not supported|cannot parse"):
            sdk.check_sdk_version(bad)


def test_install_is_idempotent() -> None:
    wrapped_map = DurableContext.map
    wrapped_parallel = DurableContext.parallel
    sdk.install()
    durable_semaphore.install()
    assert DurableContext.map is wrapped_map
    assert DurableContext.parallel is wrapped_parallel
    assert sdk.is_installed()
    # One layer only: the original is right underneath.
    assert not getattr(DurableContext.map.__wrapped__, "__durable_semaphore_hook__", False)
