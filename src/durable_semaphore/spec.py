"""What ``MapConfig(limiter=...)``/``ParallelConfig(limiter=...)`` accepts, checked when the
config is built, and what each value means when the map runs.

``None`` (the SDK's behaviour), ``"dynamodb"`` (a lease per branch, limit ``max_concurrency``,
per map of each execution), a :class:`~durable_semaphore.limiter.DynamoDBLimiter` (a limit on
branches in flight, often shared across executions, or one per key of the item), a
:class:`~durable_semaphore.rate_limiter.DynamoDBRateLimiter` (a limit on starts per second), or a
list of several concurrency limits (a branch runs only while it holds a slot of each) and at
most one rate.
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
    "resolve_limiters",
    "resolve_rate_limiter",
    "validate_limiter_spec",
]

_ACCEPTED = (
    "must be None, 'dynamodb', a DynamoDBLimiter, a DynamoDBRateLimiter, or a list of "
    "concurrency limits ('dynamodb' at most once, DynamoDBLimiters of distinct names) and at "
    "most one DynamoDBRateLimiter"
)

#: One limit of ``MapConfig.limiter`` / ``ParallelConfig.limiter``.
OneLimit = Literal["dynamodb"] | DynamoDBLimiter | DynamoDBRateLimiter
#: The value of ``MapConfig.limiter`` / ``ParallelConfig.limiter``: one limit, or a list of
#: concurrency limits and at most one rate (a branch holds its slots, then books its start).
LimiterSpec = OneLimit | list[OneLimit] | tuple[OneLimit, ...] | None

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


def _parts(limiter: object) -> list[object]:
    return list(limiter) if isinstance(limiter, list | tuple) else [limiter]


def validate_limiter_spec(limiter: object, max_concurrency: int | None) -> None:
    """Reject a bad ``limiter=`` value when the config is built, naming the value."""
    if isinstance(limiter, list | tuple):
        rates = [part for part in limiter if isinstance(part, DynamoDBRateLimiter)]
        if not limiter or len(rates) > 1 or _repeated_scope(limiter):
            raise InvalidArgumentError("limiter", limiter, _ACCEPTED)
        for part in limiter:
            _validate_one(part, max_concurrency)
        return
    _validate_one(limiter, max_concurrency)


def _repeated_scope(parts: list[object] | tuple[object, ...]) -> bool:
    """Whether two concurrency limits of one list would lease the same key: a branch would
    count once against what should be two limits (the same holder takes the same lease)."""
    seen: set[object] = set()
    for part in parts:
        if part is None or isinstance(part, DynamoDBRateLimiter):
            continue
        if part == "dynamodb" or (isinstance(part, DynamoDBLimiter) and part.name is None):
            scope: object = ("per-operation",)
        elif isinstance(part, DynamoDBLimiter):
            scope = part.name if isinstance(part.name, str) else id(part)
        else:
            continue  # _validate_one names the bad part
        if scope in seen:
            return True
        seen.add(scope)
    return False


def _validate_one(limiter: object, max_concurrency: int | None) -> None:
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


def resolve_limiters(limiter: object) -> list[DynamoDBLimiter]:
    """The concurrency limits of a validated ``limiter=`` value, in the order given (a rate
    limiter, which :func:`resolve_rate_limiter` takes, is left out)."""
    found: list[DynamoDBLimiter] = []
    for part in _parts(limiter):
        if part is None or isinstance(part, DynamoDBRateLimiter):
            continue
        if part == "dynamodb":
            found.append(default_limiter())
        elif isinstance(part, DynamoDBLimiter):
            found.append(part)
        else:
            raise InvalidArgumentError("limiter", limiter, _ACCEPTED)
    return found


def resolve_limiter(limiter: object) -> DynamoDBLimiter | None:
    """The first concurrency limit of a validated ``limiter=`` value, or None."""
    found = resolve_limiters(limiter)
    return found[0] if found else None


def resolve_rate_limiter(limiter: object) -> DynamoDBRateLimiter | None:
    """The rate limiter of a validated ``limiter=`` value, or None."""
    rates = [part for part in _parts(limiter) if isinstance(part, DynamoDBRateLimiter)]
    return rates[0] if rates else None
