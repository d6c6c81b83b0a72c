"""A rate limit shared across executions: at most ``rate`` starts per ``per`` seconds, up to
``burst`` at once, judged by when work *starts* rather than by how much is in flight.

Each start is booked with one conditional write (GCRA, :mod:`durable_semaphore.store.rates`):
the booking says when the caller may start, now or later, and the caller waits until then. No
caller polls and none is refused: the excess is queued into the future in arrival order. A
booking is made once per holder id, so a replay or an overlapping invocation of the same
branch gets the same start back instead of a second one.

Use it in ``MapConfig(limiter=...)``/``ParallelConfig(limiter=...)``, where a branch books in a
durable step and waits durably until its start (docs/sdk-integration.md), or from blocking
code with :meth:`DynamoDBRateLimiter.wait_turn` (docs/hold.md).

A booking whose caller never starts (its execution failed after booking) is lost: that start
of the rate goes unused. For a rate that is acceptable; it never lets anyone start early.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from durable_semaphore import observability
from durable_semaphore.errors import AcquireTimeoutError, InvalidArgumentError
from durable_semaphore.settings import resolve_table_name
from durable_semaphore.store.rates import Booking, DynamoDBRateStore
from durable_semaphore.store.validate import validate_holder, validate_key, validate_rate

__all__ = ["DynamoDBRateLimiter"]

#: The key a rate limiter's bookings live under: its name, marked so that a rate limiter and a
#: concurrency limiter of the same name never share an item.
_KEY_PREFIX = "rate:"


class DynamoDBRateLimiter:
    """At most ``rate`` starts per ``per`` seconds under ``name``, across every execution and
    process that names it, with up to ``burst`` starts at once.

    ``table_name`` defaults to ``$DURABLE_SEMAPHORE_TABLE`` (else the default table), read at
    first use; ``client`` is a boto3 DynamoDB client (default: one from the environment);
    ``store`` a ready :class:`~durable_semaphore.store.rates.DynamoDBRateStore` (tests).
    Bad arguments raise :class:`~durable_semaphore.errors.InvalidArgumentError` here, before
    anything is written.
    """

    def __init__(
        self,
        name: str,
        rate: float,
        per: float = 1.0,
        burst: int = 1,
        *,
        table_name: str | None = None,
        client: Any = None,
        store: DynamoDBRateStore | None = None,
    ) -> None:
        validate_key(_KEY_PREFIX + name if isinstance(name, str) else name)
        if not name:
            raise InvalidArgumentError("name", name, "must be a non-empty string")
        self.rate, self.per, self.burst = validate_rate(rate, per, burst)
        if store is not None and (table_name is not None or client is not None):
            raise InvalidArgumentError(
                "store", store, "pass either store or table_name/client, not both"
            )
        self.name = name
        self.table_name = store.table_name if store is not None else table_name
        self.client = client
        self._store = store
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"DynamoDBRateLimiter(name={self.name!r}, rate={self.rate:g}, per={self.per:g}, "
            f"burst={self.burst})"
        )

    @property
    def key(self) -> str:
        """The stored key of this limit's bookings."""
        return _KEY_PREFIX + self.name

    @property
    def interval(self) -> float:
        """Seconds between two starts at the sustained rate (GCRA's emission interval)."""
        return self.per / self.rate

    @property
    def store(self) -> DynamoDBRateStore:
        """The booking store, created on first use (a boto3 client costs tens of ms)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = DynamoDBRateStore(
                        table_name=resolve_table_name(self.table_name), client=self.client
                    )
        return self._store

    def now(self) -> float:
        """The clock bookings are made on."""
        return self.store.now()

    def book(self, holder: str) -> Booking:
        """Book ``holder``'s start: when it may start, now or later. One conditional write;
        the same start again for a holder that already booked (a replay)."""
        validate_holder(holder)
        booking = self.store.book(self.key, holder, self.rate, self.per, self.burst)
        if booking.fresh:
            observability.rate_booked(self.key, holder, booking.delay)
        return booking

    def wait_turn(
        self,
        holder: str | None = None,
        *,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Booking:
        """Block until this caller may start, for code that is not a durable map (a script,
        a worker, a plain Lambda handler). ``holder`` defaults to a fresh id per call.

        With ``timeout``, a start booked further ahead than that raises
        :class:`~durable_semaphore.errors.AcquireTimeoutError` at once instead of sleeping;
        the booking stays (its start goes unused), so a caller that retries on a timeout
        books behind everyone who came meanwhile.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise InvalidArgumentError("timeout", timeout, "must be a number of seconds >= 0")
        booking = self.book(holder if holder is not None else f"turn#{uuid.uuid4().hex}")
        wait = booking.start - self.now()
        if timeout is not None and wait > timeout:
            raise AcquireTimeoutError(
                self.key, float(timeout), None, cause=f"the next start is {wait:.1f} s away"
            )
        if wait > 0:
            sleep(wait)
        return booking
