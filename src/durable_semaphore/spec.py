"""What ``MapConfig(limiter=...)``/``ParallelConfig(limiter=...)`` accepts, checked when the
config is built, and what each value means when the map runs.

``None`` (the SDK's behaviour), ``"dynamodb"`` (a lease per branch, limit ``max_concurrency``,
per map of each execution), a :class:`~durable_semaphore.limiter.DynamoDBLimiter` (a limit on
branches in flight, often shared across executions) or a
:class:`~durable_semaphore.rate_limiter.DynamoDBRateLimiter` (a limit on starts per second).
"""

from __future__ import annotations

import threading
from typing import Literal

from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.rate_limiter import DynamoDBRateLimiter
from durable_semaphore.settings import resolve_table_name

__all__ = [
    "LimiterSpec",
    "default_limiter",
    "resolve_limiter",
    "resolve_rate_limiter",
    "validate_limiter_spec",
]

_ACCEPTED = "must be None, 'dynamodb', a DynamoDBLimiter or a DynamoDBRateLimiter"

#: The value of ``MapConfig.limiter`` / ``ParallelConfig.limiter``.
LimiterSpec = Literal["dynamodb"] | DynamoDBLimiter | DynamoDBRateLimiter | None

_default_limiters: dict[str, DynamoDBLimiter] = {}
_default_lock = threading.Lock()


def default_limiter() -> DynamoDBLimiter:
    """The per-operation limiter behind ``limiter="dynamodb"``, one per table name.

    Cached so that every map shares one boto3 client; keyed by the table the environment names
    now, so changing ``DURABLE_SEMAPHORE_TABLE`` (in tests) takes effect.
    """
    table = resolve_table_name()
    limiter = _default_limiters.get(table)
    if limiter is None:
        with _default_lock:
            limiter = _default_limiters.get(table)
            if limiter is None:
                limiter = DynamoDBLimiter(table_name=table)
                _default_limiters[table] = limiter
    return limiter


def validate_limiter_spec(limiter: object, max_concurrency: int | None) -> None:
    """Reject a bad ``limiter=`` value when the config is built, naming the value."""
    if limiter is None:
        return
    if isinstance(limiter, str):
        if limiter != "dynamodb":
            raise InvalidArgumentError("limiter", limiter, _ACCEPTED)
        if (
            max_concurrency is None
            or isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise InvalidArgumentError(
                "max_concurrency",
                max_concurrency,
                "limiter='dynamodb' limits in-flight branches to max_concurrency, "
                "so max_concurrency must be an int >= 1",
            )
        return
    if isinstance(limiter, DynamoDBRateLimiter):
        return  # a rate needs no max_concurrency (the SDK's own still caps threads)
    if isinstance(limiter, DynamoDBLimiter):
        if limiter.limit is None and (
            max_concurrency is None or isinstance(max_concurrency, bool) or max_concurrency < 1
        ):
            raise InvalidArgumentError(
                "max_concurrency",
                max_concurrency,
                "DynamoDBLimiter() without limit takes its limit from max_concurrency, "
                "so set one of them",
            )
        return
    raise InvalidArgumentError("limiter", limiter, _ACCEPTED)


def resolve_limiter(limiter: object) -> DynamoDBLimiter | None:
    """Map a validated ``limiter=`` value to a :class:`DynamoDBLimiter` (None, and a rate
    limiter, which :func:`resolve_rate_limiter` takes, give None)."""
    if limiter is None or isinstance(limiter, DynamoDBRateLimiter):
        return None
    if limiter == "dynamodb":
        return default_limiter()
    if isinstance(limiter, DynamoDBLimiter):
        return limiter
    raise InvalidArgumentError("limiter", limiter, _ACCEPTED)


def resolve_rate_limiter(limiter: object) -> DynamoDBRateLimiter | None:
    """The rate limiter of a validated ``limiter=`` value, or None."""
    return limiter if isinstance(limiter, DynamoDBRateLimiter) else None
