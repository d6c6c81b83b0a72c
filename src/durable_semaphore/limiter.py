"""The limiter policy: which key a branch leases, under which holder id, and how long it waits.

This module knows nothing about the durable SDK (``sdk.py`` owns that). It turns the
``limiter=`` value of a map or parallel into a scope key, a limit and deterministic holder ids,
and computes the backoff between acquire attempts, so the policy can be tested without a runner.
"""

from __future__ import annotations

import math
import os
import random
import threading
from collections.abc import Callable
from typing import Any, Literal

from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.store import DEFAULT_TABLE_NAME, DynamoDBSemaphore

__all__ = [
    "BRANCH_LEASE_TTL_SECONDS",
    "TABLE_ENV_VAR",
    "DynamoDBLimiter",
    "LimiterSpec",
    "default_limiter",
    "resolve_limiter",
    "resolve_table_name",
]

#: Environment variable naming the lease table (the SAM template sets it).
TABLE_ENV_VAR = "DURABLE_SEMAPHORE_TABLE"
#: Default lease lifetime. A suspended branch cannot heartbeat, and a durable execution may run
#: for up to a year (366 days), so a lease must be able to outlive the longest suspension.
#: Slots of dead executions are recovered by the sweep and the reaper; expiry is the last resort.
BRANCH_LEASE_TTL_SECONDS = 366 * 24 * 3600

_SEPARATOR = "#"


def resolve_table_name(table_name: str | None = None) -> str:
    """Return the lease table: the explicit name, else ``$DURABLE_SEMAPHORE_TABLE``, else default.

    Read at call time (not import time) so a Lambda's environment and tests can set it late.
    """
    if table_name:
        return table_name
    return os.environ.get(TABLE_ENV_VAR) or DEFAULT_TABLE_NAME


def _check_positive(name: str, value: float, *, minimum: float = 0.0, strict: bool = True) -> None:
    bad = value <= minimum if strict else value < minimum
    if isinstance(value, bool) or not isinstance(value, int | float) or bad or math.isnan(value):
        relation = ">" if strict else ">="
        raise InvalidArgumentError(name, value, f"must be a number {relation} {minimum}")


class DynamoDBLimiter:
    """A concurrency limit enforced with leases in a DynamoDB table.

    * ``name`` given: one limit shared by every execution that uses the same name (the key is the
      name). ``limit`` is then required, because every user of the key must agree on it.
    * ``name`` omitted: the limit is scoped to one map or parallel operation of one execution
      (the same scope as ``limiter="dynamodb"``), and ``limit`` defaults to ``max_concurrency``.
      Use this form to change the table, client or backoff of the per-operation scope.

    Waiting for a slot uses capped exponential backoff with full jitter:
    ``delay(n) = max(1, ceil(uniform(0, min(max_delay, initial_delay * multiplier**(n-1)))))``
    seconds before attempt ``n + 1``. Durable waits have one-second granularity and a one-second
    minimum, hence the rounding.
    """

    def __init__(
        self,
        name: str | None = None,
        limit: int | None = None,
        *,
        table_name: str | None = None,
        client: Any = None,
        semaphore: DynamoDBSemaphore | None = None,
        ttl_seconds: float = BRANCH_LEASE_TTL_SECONDS,
        initial_delay_seconds: float = 1.0,
        backoff_multiplier: float = 2.0,
        max_delay_seconds: float = 60.0,
        jitter: bool = True,
        random_source: Callable[[], float] | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidArgumentError("name", name, "must be a non-empty string or None")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InvalidArgumentError("limit", limit, "must be an int >= 1 or None")
        if limit is not None and limit < 1:
            raise InvalidArgumentError("limit", limit, "must be >= 1")
        if name is not None and limit is None:
            raise InvalidArgumentError(
                "limit", limit, f"a named limiter ({name!r}) needs an explicit limit shared by all"
            )
        _check_positive("ttl_seconds", ttl_seconds)
        _check_positive("initial_delay_seconds", initial_delay_seconds)
        _check_positive("backoff_multiplier", backoff_multiplier, minimum=1.0, strict=False)
        _check_positive("max_delay_seconds", max_delay_seconds)
        if max_delay_seconds < initial_delay_seconds:
            raise InvalidArgumentError(
                "max_delay_seconds", max_delay_seconds, "must be >= initial_delay_seconds"
            )
        if semaphore is not None and (table_name is not None or client is not None):
            raise InvalidArgumentError(
                "semaphore", semaphore, "pass either semaphore or table_name/client, not both"
            )
        self.name = name
        self.limit = limit
        self.table_name = table_name
        self.client = client
        self.ttl_seconds = float(ttl_seconds)
        self.initial_delay_seconds = float(initial_delay_seconds)
        self.backoff_multiplier = float(backoff_multiplier)
        self.max_delay_seconds = float(max_delay_seconds)
        self.jitter = jitter
        self._random = random_source if random_source is not None else random.random
        self._semaphore = semaphore
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"DynamoDBLimiter(name={self.name!r}, limit={self.limit!r}, "
            f"table_name={self.table_name!r})"
        )

    # -- store ---------------------------------------------------------------------------------

    @property
    def semaphore(self) -> DynamoDBSemaphore:
        """The lease store, created on first use (creating a boto3 client costs tens of ms)."""
        if self._semaphore is None:
            with self._lock:
                if self._semaphore is None:
                    self._semaphore = DynamoDBSemaphore(
                        table_name=resolve_table_name(self.table_name), client=self.client
                    )
        return self._semaphore

    # -- scope ---------------------------------------------------------------------------------

    @property
    def is_named(self) -> bool:
        """True when the limit is shared across executions under ``name``."""
        return self.name is not None

    def resolve_limit(self, max_concurrency: int | None) -> int:
        """The lease limit: the explicit ``limit``, else the operation's ``max_concurrency``."""
        if self.limit is not None:
            return self.limit
        if max_concurrency is None or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise InvalidArgumentError(
                "max_concurrency",
                max_concurrency,
                "limiter='dynamodb' (or DynamoDBLimiter() without limit) takes its limit from "
                "max_concurrency, so set max_concurrency to an int >= 1",
            )
        return max_concurrency

    def scope_key(self, execution_arn: str, operation_id: str) -> str:
        """The semaphore key: the name, or ``{arn}#{map/parallel operation id}``.

        Operation ids repeat across executions of the same function, so the per-operation scope
        needs the execution ARN to keep executions apart.
        """
        if self.name is not None:
            return self.name
        return f"{execution_arn}{_SEPARATOR}{operation_id}"

    @staticmethod
    def holder_prefix(execution_arn: str, operation_id: str) -> str:
        """Prefix shared by the holder ids of one map/parallel; the sweep finds leases by it."""
        return f"{execution_arn}{_SEPARATOR}{operation_id}{_SEPARATOR}"

    @classmethod
    def holder_id(cls, execution_arn: str, operation_id: str, branch_operation_id: str) -> str:
        """Deterministic holder id of one branch: the same on every replay and in every
        overlapping invocation, so neither can take a second slot."""
        return cls.holder_prefix(execution_arn, operation_id) + branch_operation_id

    # -- backoff -------------------------------------------------------------------------------

    def backoff_ceiling(self, attempts_made: int) -> float:
        """Upper bound of the delay after ``attempts_made`` failed attempts (before jitter)."""
        exponent = max(0, attempts_made - 1)
        # Cap the exponent so huge attempt counts cannot overflow a float.
        try:
            raw = self.initial_delay_seconds * self.backoff_multiplier ** min(exponent, 1024)
        except OverflowError:
            raw = math.inf
        return min(self.max_delay_seconds, raw)

    def backoff_delay(self, attempts_made: int) -> int:
        """Whole seconds to wait after ``attempts_made`` failed attempts (at least 1)."""
        ceiling = self.backoff_ceiling(attempts_made)
        delay = ceiling * self._random() if self.jitter else ceiling
        return max(1, math.ceil(delay))


#: The value of ``MapConfig.limiter`` / ``ParallelConfig.limiter``.
LimiterSpec = Literal["dynamodb"] | DynamoDBLimiter | None

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
            raise InvalidArgumentError(
                "limiter", limiter, "must be None, 'dynamodb' or a DynamoDBLimiter"
            )
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
    raise InvalidArgumentError("limiter", limiter, "must be None, 'dynamodb' or a DynamoDBLimiter")


def resolve_limiter(limiter: object) -> DynamoDBLimiter | None:
    """Map a validated ``limiter=`` value to a :class:`DynamoDBLimiter` (None stays None)."""
    if limiter is None:
        return None
    if limiter == "dynamodb":
        return default_limiter()
    if isinstance(limiter, DynamoDBLimiter):
        return limiter
    raise InvalidArgumentError("limiter", limiter, "must be None, 'dynamodb' or a DynamoDBLimiter")
