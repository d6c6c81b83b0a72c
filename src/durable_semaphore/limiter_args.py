"""The rules for a :class:`~durable_semaphore.limiter.DynamoDBLimiter`'s arguments, checked
when it is built, so a bad one fails there (our error naming the value), not at the first
branch that uses it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store import MAX_LIMIT
from durable_semaphore.store.shards import validate_shards
from durable_semaphore.store.validate import validate_key, validate_priority, validate_weight
from durable_semaphore.wake import Waker

__all__ = [
    "MAX_WAKE_TIMEOUT_SECONDS",
    "check_backoff",
    "check_name",
    "check_per_item",
    "check_positive",
    "check_scope",
    "check_shards",
    "check_waking",
]

#: The longest callback timeout a waiting round uses (the SDK accepts far more; a day keeps a
#: wake-up that was never sent from stalling a waiter for longer).
MAX_WAKE_TIMEOUT_SECONDS = 86_400


def check_positive(name: str, value: float, *, minimum: float = 0.0, strict: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(name, value, "must be a finite number")
    bad = value <= minimum if strict else value < minimum
    if bad:
        relation = ">" if strict else ">="
        raise InvalidArgumentError(name, value, f"must be a number {relation} {minimum}")


def check_scope(name: object, limit: int | None) -> None:
    """A name is a key as written (the store's key rule), or a function of the item that
    returns one; a named or per-item limiter needs its limit."""
    if callable(name):
        if limit is None:
            raise InvalidArgumentError(
                "limit", limit, "a per-item limiter (name is a function) needs an explicit limit"
            )
    elif name is not None:
        check_name("name", name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidArgumentError("limit", limit, "must be an int >= 1 or None")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError("limit", limit, f"must be from 1 to {MAX_LIMIT:,}")
    if name is not None and limit is None:
        raise InvalidArgumentError(
            "limit", limit, f"a named limiter ({name!r}) needs an explicit limit shared by all"
        )


def check_name(field: str, name: object, context: str = "") -> str:
    """``name`` as a key: a non-empty string as written, within the store's key rule."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(field, name, "must be a non-empty string" + context)
    if name != name.strip():
        # The name is the key as written; "x" and " x " would be two different limits.
        raise InvalidArgumentError(
            field,
            name,
            "must not start or end with whitespace (it is the key as written)" + context,
        )
    # The store's key rule (2,048 UTF-8 bytes, no lone surrogate), checked here so a bad
    # name fails at construction (a per-item key: before the map records anything).
    try:
        validate_key(name)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(field, name, exc.reason + context) from None
    return name


def check_shards(shards: object, limit: int | None) -> None:
    if shards is None:
        return
    if limit is not None:
        validate_shards(shards, limit)
    elif isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidArgumentError("shards", shards, "must be an integer >= 1 or None")


def check_backoff(initial: float, multiplier: float, maximum: float) -> None:
    check_positive("initial_delay_seconds", initial)
    check_positive("backoff_multiplier", multiplier, minimum=1.0, strict=False)
    check_positive("max_delay_seconds", maximum)
    if maximum < initial:
        raise InvalidArgumentError("max_delay_seconds", maximum, "must be >= initial_delay_seconds")


def check_waking(wake_timeout_seconds: object, local_wait_seconds: float, waker: object) -> None:
    if (
        isinstance(wake_timeout_seconds, bool)
        or not isinstance(wake_timeout_seconds, int)
        or wake_timeout_seconds < 1
    ):
        raise InvalidArgumentError(
            "wake_timeout_seconds", wake_timeout_seconds, "must be an integer >= 1"
        )
    if wake_timeout_seconds > MAX_WAKE_TIMEOUT_SECONDS:
        raise InvalidArgumentError(
            "wake_timeout_seconds",
            wake_timeout_seconds,
            f"must be at most {MAX_WAKE_TIMEOUT_SECONDS} (a day)",
        )
    check_positive("local_wait_seconds", local_wait_seconds, strict=False)
    if not (waker is None or waker in ("auto", "lambda") or isinstance(waker, Waker)):
        raise InvalidArgumentError(
            "waker", waker, "must be None, 'auto', 'lambda' or a Waker (with a wake method)"
        )


def check_per_item(
    weight: int | Callable[[Any], int],
    priority: int | Callable[[Any], int],
    fair_by: object,
    limit: int | None,
) -> None:
    """A weight and a priority are values or functions of the item (checked per item when
    functions); ``fair_by`` is a function or None."""
    if not callable(weight):
        validate_weight(weight, limit)
    if not callable(priority):
        validate_priority(priority)
    if fair_by is not None and not callable(fair_by):
        raise InvalidArgumentError("fair_by", fair_by, "must be a function of the item or None")
