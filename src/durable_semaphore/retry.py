"""One retry policy: what is transient, how long to pause, and how botocore retries.

Three kinds of retry meet in this library, and each used to have its own numbers in its own
module. They live here, side by side, so they can be read and tuned together:

* **botocore's own retries** of one request (throttling, 5xx, connection resets), set by the
  client's :class:`~botocore.config.Config`: :func:`client_config` builds every one of them,
  with the attempts and timeouts of each kind of caller (:data:`STORE`, :data:`ADMIN`,
  :data:`WAKE`, :data:`REAPER_LAMBDA`).
* **the store's retries of a lost race** (a ``TransactionConflict``, a reconcile that met a
  concurrent writer): :data:`CONFLICT`, bounded attempts with full jitter, never past the
  caller's time budget (:mod:`durable_semaphore.deadline`).
* **a caller's retries of a failed store call** (a hold's poll, a branch's next durable
  attempt): they retry exactly what :func:`is_transient_error` calls transient.

Every pause between attempts is a :class:`Backoff`: capped exponential growth, with full
jitter (the store's races, a branch's durable backoff) or equal jitter (a hold's polls, which
must never turn into a hot loop).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from durable_semaphore.deadline import sleep as budgeted_sleep
from durable_semaphore.errors import ContentionError, DurableSemaphoreError

__all__ = [
    "ADMIN",
    "CONFLICT",
    "REAPER_LAMBDA",
    "STORE",
    "WAKE",
    "Backoff",
    "ClientRetries",
    "ConflictRetry",
    "client_config",
    "is_transient_error",
]

_TRANSIENT_AWS_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)


def is_transient_error(exc: Exception) -> bool:
    """True for store errors worth another attempt later (throttling, 5xx, connection and
    streaming failures, lost races) rather than failing the caller."""
    if isinstance(exc, ContentionError):
        return True
    if isinstance(exc, DurableSemaphoreError):
        # Our refusals (missing table, a table that is not a lease table, a request DynamoDB
        # calls invalid, bad argument) do not heal by waiting.
        return False
    if isinstance(
        exc,
        EndpointConnectionError
        | ConnectionClosedError
        | ConnectTimeoutError
        | ReadTimeoutError
        | ResponseStreamingError,
    ):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code in _TRANSIENT_AWS_CODES or status >= 500
    return False


@dataclass(frozen=True, slots=True)
class ClientRetries:
    """botocore's standard retry mode for one kind of caller: ``attempts`` in all (the first
    included), and the connect and read timeouts of each attempt."""

    attempts: int
    connect_timeout: float
    read_timeout: float
    max_pool_connections: int | None = None


#: The library's DynamoDB client: rides out throttling and blips (11 attempts, as botocore's
#: ``max_attempts: 10`` gave before this module, which counts retries only).
STORE = ClientRetries(attempts=11, connect_timeout=5, read_timeout=15)
#: Commands a person waits on (the CLI): an unreachable endpoint fails in seconds, not after a
#: minute of silence; two attempts still ride out one reset, and a throttled command is rerun.
ADMIN = ClientRetries(attempts=2, connect_timeout=2, read_timeout=10)
#: Waking a waiter (Lambda callbacks): latency-sensitive, with a fallback (the waiter's own
#: timeout); many branches of one process may wake at once, so a pooled connection each.
WAKE = ClientRetries(attempts=4, connect_timeout=3, read_timeout=5, max_pool_connections=50)
#: The reaper asking Lambda about executions: throttling (TooManyRequestsException) is retried
#: with backoff before it gives up on an ARN for this run.
REAPER_LAMBDA = ClientRetries(attempts=6, connect_timeout=5, read_timeout=15)


def client_config(kind: ClientRetries) -> Config:
    """The botocore client configuration of ``kind`` (standard retry mode)."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": kind.attempts},
        connect_timeout=kind.connect_timeout,
        read_timeout=kind.read_timeout,
    )
    if kind.max_pool_connections is not None:
        config = config.merge(Config(max_pool_connections=kind.max_pool_connections))
    return config


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: the ceiling after ``n`` failed attempts is ``first`` times
    ``multiplier`` to the ``n - 1``, at most ``cap``; ``jitter`` picks the pause under it
    ("full": anywhere from 0, which spreads contenders best; "equal": from half of it, which
    never comes close to a hot loop; "none": the ceiling itself)."""

    first: float
    cap: float
    multiplier: float = 2.0
    jitter: Literal["full", "equal", "none"] = "full"

    def ceiling(self, attempts_made: int) -> float:
        exponent = max(0, attempts_made - 1)
        try:  # huge attempt counts must not overflow
            raw = self.first * self.multiplier ** min(exponent, 1024)
        except OverflowError:
            raw = math.inf
        return min(self.cap, raw)

    def delay(self, attempts_made: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(attempts_made)
        if self.jitter == "full":
            return ceiling * rand()
        if self.jitter == "equal":
            return ceiling / 2 + ceiling / 2 * rand()
        return ceiling


@dataclass(frozen=True, slots=True)
class ConflictRetry:
    """Retries of a lost race inside the store: ``attempts`` at most, pausing with full jitter
    from ``first`` seconds, doubling up to ``cap`` (conflicts clear in milliseconds)."""

    attempts: int
    first: float
    cap: float

    def pause(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (0-based), never past the caller's budget."""
        budgeted_sleep(Backoff(self.first, self.cap).delay(attempt + 1))


#: The store's lost-race retries (a conflict, a reconcile that met another writer).
CONFLICT = ConflictRetry(attempts=50, first=0.005, cap=0.2)
