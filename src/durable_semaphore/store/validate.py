"""Input checks: bad input gets our own error naming the value, before anything is written."""

from __future__ import annotations

import math
import re

from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store.schema import HOLDER_PREFIX

# DynamoDB's own limits on key attributes, in UTF-8 bytes.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
MAX_HOLDER_BYTES = MAX_SORT_KEY_BYTES - len(HOLDER_PREFIX)
MAX_EXECUTION_ARN_BYTES = 2048
MAX_CALLBACK_ID_BYTES = 4096
#: Accepted ranges: DynamoDB numbers carry at most 38 digits, and an expiry must stay a sane
#: epoch second for the TTL sweeper; a century and a billion slots are far beyond real use.
MAX_LIMIT = 1_000_000_000
MAX_TTL_SECONDS = 100 * 366 * 86_400


def utf8(name: str, value: str) -> bytes:
    """Encode for DynamoDB; a lone surrogate cannot be stored, so it is bad input, not a crash."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            name, value, "is not valid Unicode text (it contains a lone surrogate)"
        ) from None


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError("key", key, "must be a non-empty string")
    if len(utf8("key", key)) > MAX_PARTITION_KEY_BYTES:
        raise InvalidArgumentError(
            "key", key, f"is over DynamoDB's {MAX_PARTITION_KEY_BYTES}-byte partition key limit"
        )
    return key


def validate_holder(holder: object) -> str:
    if not isinstance(holder, str) or not holder:
        raise InvalidArgumentError("holder", holder, "must be a non-empty string")
    if len(utf8("holder", holder)) > MAX_HOLDER_BYTES:
        raise InvalidArgumentError(
            "holder",
            holder,
            f"is over {MAX_HOLDER_BYTES} bytes (DynamoDB's sort key limit less our prefix)",
        )
    return holder


def validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError("limit", limit, f"must be an integer from 1 to {MAX_LIMIT:,}")
    return limit


def validate_ttl(ttl_seconds: object, name: str = "ttl_seconds") -> float:
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not math.isfinite(ttl_seconds)
        or not 0 < ttl_seconds <= MAX_TTL_SECONDS
    ):
        raise InvalidArgumentError(
            name, ttl_seconds, f"must be a number of seconds in (0, {MAX_TTL_SECONDS:,}]"
        )
    return float(ttl_seconds)


def validate_clock_skew(clock_skew_seconds: object) -> float:
    """The skew margin: a finite number of seconds >= 0 (0 trusts every clock exactly)."""
    if (
        isinstance(clock_skew_seconds, bool)
        or not isinstance(clock_skew_seconds, int | float)
        or not math.isfinite(clock_skew_seconds)
        or not 0 <= clock_skew_seconds <= MAX_TTL_SECONDS
    ):
        raise InvalidArgumentError(
            "clock_skew_seconds",
            clock_skew_seconds,
            f"must be a number of seconds in [0, {MAX_TTL_SECONDS:,}]",
        )
    return float(clock_skew_seconds)


def validate_token(token: object) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token or len(token) > 128:
        raise InvalidArgumentError("token", token, "must be a lease's token (a string) or None")
    utf8("token", token)
    return token


def validate_arn(execution_arn: object) -> str | None:
    return _optional_text("execution_arn", execution_arn, MAX_EXECUTION_ARN_BYTES)


def validate_callback_id(callback_id: object) -> str | None:
    return _optional_text("callback_id", callback_id, MAX_CALLBACK_ID_BYTES)


def validate_position(position: object) -> int | None:
    if position is None:
        return None
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise InvalidArgumentError("position", position, "must be an integer >= 1 or None")
    return position


#: The shortest emission interval (``per / rate``) a rate may have: starts are epoch seconds
#: read back as floats, which resolve about a quarter of a microsecond today, and one key's
#: item takes about a thousand writes a second anyway.
MIN_RATE_INTERVAL = 1e-6


def validate_rate(rate: object, per: object, burst: object) -> tuple[float, float, int]:
    """A rate of ``rate`` starts per ``per`` seconds, up to ``burst`` of them at once:
    ``rate`` and ``per`` finite and > 0, ``burst`` an integer >= 1, and an emission interval
    ``per / rate`` of at least :data:`MIN_RATE_INTERVAL` (a shorter one could not be told
    apart from the next start on the float clock every caller reads)."""
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or not 0 < rate <= MAX_LIMIT
    ):
        raise InvalidArgumentError("rate", rate, f"must be a finite number in (0, {MAX_LIMIT:,}]")
    if (
        isinstance(per, bool)
        or not isinstance(per, int | float)
        or not math.isfinite(per)
        or not 0 < per <= MAX_TTL_SECONDS
    ):
        raise InvalidArgumentError(
            "per", per, f"must be a number of seconds in (0, {MAX_TTL_SECONDS:,}]"
        )
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_LIMIT:
        raise InvalidArgumentError("burst", burst, f"must be an integer from 1 to {MAX_LIMIT:,}")
    if per / rate < MIN_RATE_INTERVAL:
        raise InvalidArgumentError(
            "rate",
            rate,
            f"leaves {per / rate!r} s between starts (per={per!r}); "
            f"the least is {MIN_RATE_INTERVAL} s",
        )
    return float(rate), float(per), burst


def validate_weight(weight: object, limit: int | None = None) -> int:
    """Units of a limit one holder takes: an integer from 1 (to the limit, when known: a
    heavier one could never be admitted)."""
    top = limit if limit is not None else MAX_LIMIT
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= top:
        why = f"must be an integer from 1 to {top:,}"
        if limit is not None:
            why += " (the limit: a heavier holder could never get in)"
        raise InvalidArgumentError("weight", weight, why)
    return weight


#: DynamoDB's rule for table names, or a table ARN (which DynamoDB accepts as TableName too).
_TABLE_NAME_RE = re.compile(
    r"(?:arn:[a-z0-9-]+:dynamodb:[a-z0-9-]+:\d{12}:table/)?[A-Za-z0-9_.-]{3,255}"
)


def validate_table_name(table_name: object) -> str:
    """DynamoDB would refuse a bad name at the first request, with a less helpful message."""
    if not isinstance(table_name, str) or not _TABLE_NAME_RE.fullmatch(table_name):
        raise InvalidArgumentError(
            "table_name",
            table_name,
            "must be 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.' "
            "(DynamoDB's rule), or a table ARN",
        )
    return table_name


#: Priorities a waiter may have: enough levels for any policy, and small enough that a rank
#: (arrival less priority times ageing) stays within its 20 digits.
MAX_PRIORITY = 1000
#: A group's name is part of a sort key (``g#<group>``) and is stored on each of its entries.
MAX_GROUP_BYTES = 256
#: Ageing, in rank units per priority level (see store/ordering.py).
MAX_AGING = 1_000_000


def validate_priority(priority: object) -> int:
    """A waiter's priority: an integer from -MAX_PRIORITY to MAX_PRIORITY (higher first)."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not -MAX_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise InvalidArgumentError(
            "priority", priority, f"must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}"
        )
    return priority


def validate_group(group: object) -> str | None:
    """A fair-sharing group: None, or a non-empty string of at most MAX_GROUP_BYTES."""
    return _optional_text("group", group, MAX_GROUP_BYTES)


def _optional_text(name: str, value: object, max_bytes: int) -> str | None:
    """None, or a non-empty string of at most ``max_bytes`` in UTF-8 (what the row stores)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(name, value, "must be a non-empty string or None")
    if len(utf8(name, value)) > max_bytes:
        raise InvalidArgumentError(name, value, f"is over {max_bytes} bytes")
    return value


def validate_aging(aging: object) -> int:
    """Rank units one priority level is worth: an integer from 1 (a priority never starves
    a lower one for good) to MAX_AGING."""
    if isinstance(aging, bool) or not isinstance(aging, int) or not 1 <= aging <= MAX_AGING:
        raise InvalidArgumentError("aging", aging, f"must be an integer from 1 to {MAX_AGING:,}")
    return aging
