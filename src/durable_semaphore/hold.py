"""Holding a slot from plain code: a blocking acquire with a timeout, as a context manager.

For code that is not a map or parallel branch: a Lambda handler, a container worker, or the
inside of a durable ``step`` that calls a rate-limited API::

    with limiter.hold(timeout=30):
        call_the_api()

The hold joins the key's FIFO queue, so it never barges past waiting branches or holds (and
none barges past it), and polls its own queue entry with jittered backoff; a poll that finds
the key holding an expired lease frees it and hands it on, so waiters alone keep the queue
moving. A release in the same process wakes it at once; a release elsewhere hands the slot to
it in the releasing transaction, and it notices at its next poll. While held, a daemon thread
(:mod:`durable_semaphore.heartbeat`) renews the lease, so the lease can be short: a crashed
process frees its slot within ``ttl_seconds`` (plus the store's clock-skew margin), not a day
later.

Every call runs under a time budget (:mod:`durable_semaphore.deadline`), so a timeout bounds
wall time whatever DynamoDB does, and a lease whose renewals do not come back is counted lost
at its expiry, before anyone else can be admitted. A hold calls only its limiter's methods
(:class:`HoldLimiter`), never the store behind it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from durable_semaphore import deadline as budget
from durable_semaphore import observability
from durable_semaphore.errors import (
    AcquireTimeoutError,
    ContentionError,
    DeadlineExceededError,
    DurableSemaphoreError,
    InvalidArgumentError,
)
from durable_semaphore.heartbeat import Heartbeat, fence
from durable_semaphore.retry import Backoff, is_transient_error
from durable_semaphore.store import (
    AcquireResult,
    Grant,
    Lease,
    ReleaseResult,
)
from durable_semaphore.store.validate import validate_holder, validate_ttl, validate_weight
from durable_semaphore.wake import LocalSignals


class HoldLimiter(Protocol):
    """What a hold needs of its limiter (a named :class:`~durable_semaphore.DynamoDBLimiter`):
    its facade methods only, never the store behind it.

    A protocol, so that this module does not import the limiter that builds holds: the
    dependency runs one way, limiter -> hold.
    """

    name: str | Callable[[Any], str] | None
    limit: int | None
    jitter: bool
    signals: LocalSignals

    def now(self) -> float: ...

    def guard_deadlines(self) -> None: ...

    def place(self, key: str, holder: str, limit: int | None) -> tuple[str, int | None]: ...

    def acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        *,
        ttl_seconds: float | None = ...,
        position: int | None = ...,
        queue_ttl_seconds: float | None = ...,
        enqueue: bool = ...,
        wake: bool = ...,
        weight: int = ...,
    ) -> AcquireResult: ...

    def release(
        self,
        key: str,
        holder: str,
        *,
        waited: bool = ...,
        token: str | None = ...,
        wake: bool = ...,
        weight: int | None = ...,
    ) -> ReleaseResult: ...

    def renew(
        self, key: str, holder: str, *, ttl_seconds: float | None = ..., token: str | None = ...
    ) -> Lease | None: ...

    def wake(self, grant: Grant, *, releaser_arn: str | None = None) -> object: ...


__all__ = [
    "DEFAULT_HOLD_TTL_SECONDS",
    "DEFAULT_MAX_POLL_SECONDS",
    "HOLD_SIGNAL_SCOPE",
    "TIMEOUT_BOUND_SECONDS",
    "Hold",
    "holding",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Lease lifetime of a hold. Short, because the heartbeat renews it: what it bounds is how long
#: the slot of a crashed process stays taken.
DEFAULT_HOLD_TTL_SECONDS = 60.0
#: Longest pause between two polls of a waiting hold: how late, at worst, it notices a slot
#: handed over by another process. Each poll is one small transaction.
DEFAULT_MAX_POLL_SECONDS = 1.0
#: The first pause; pauses double up to the maximum, with jitter.
_FIRST_POLL_SECONDS = 0.05
#: The heartbeat renews this often, as a fraction of the TTL, so two renewals can fail in a
#: row before the lease runs out.
_HEARTBEAT_FRACTION = 1 / 3
#: The :class:`~durable_semaphore.wake.LocalSignals` scope of holds. Holds have no execution
#: ARN (the reaper would ask Lambda about one), so they share this scope, which no ARN equals.
HOLD_SIGNAL_SCOPE = "durable-semaphore:hold"
#: A request started before the timeout may take this long past it before the hold stops
#: waiting for it (a last poll just before the deadline deserves its answer).
_CALL_GRACE_SECONDS = 0.5
#: How long giving up the queue place may take after that; then the entry expires on its own.
_LEAVE_SECONDS = 1.0
#: How long leaving a ``with`` block may wait for the release (plus the heartbeat's join).
_RELEASE_SECONDS = 5.0
#: ``hold(timeout=t)`` returns or raises within ``t`` plus this, whatever DynamoDB does.
TIMEOUT_BOUND_SECONDS = _CALL_GRACE_SECONDS + _LEAVE_SECONDS
_THROTTLE_CODES = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"}
)


def _seconds(name: str, value: object, *, allow_zero: bool, none_means: str | None) -> None:
    """Reject what is not a finite number of seconds (inf included: use None to wait forever)."""
    if value is None and none_means is not None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        relation = ">= 0" if allow_zero else "> 0"
        hint = f", or None to {none_means}" if none_means is not None else ""
        raise InvalidArgumentError(
            name, value, f"must be a finite number of seconds {relation}{hint}"
        )


def _cause(err: BaseException | None) -> str | None:
    """Why the last poll failed, in words a caller can act on (None: it did not fail)."""
    if err is None:
        return None
    if isinstance(err, DeadlineExceededError):
        if err.__cause__ is not None and not isinstance(err.__cause__, DeadlineExceededError):
            return _cause(err.__cause__)  # what the last attempt met before time ran out
        return "DynamoDB did not answer in time (the last request was still unanswered)"
    if isinstance(err, EndpointConnectionError | ConnectTimeoutError):
        return f"DynamoDB was unreachable ({err})"
    if isinstance(err, ReadTimeoutError):
        return f"DynamoDB did not answer in time ({err})"
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _THROTTLE_CODES:
            return f"DynamoDB throttled the requests ({code})"
        return f"DynamoDB failed ({code or err})"
    if isinstance(err, ContentionError):
        return f"the key was too contended ({err})"
    return f"the connection to DynamoDB failed ({err!r})"


def _wrote_nothing(exc: BaseException) -> bool:
    """Our own refusals (bad input, a missing or wrong table) come before any write: there is
    no queue place to give up, and trying would only log a second failure."""
    return isinstance(exc, DurableSemaphoreError) and not isinstance(
        exc, AcquireTimeoutError | ContentionError | DeadlineExceededError
    )


class Hold:
    """One blocking hold of a slot of a named :class:`DynamoDBLimiter`.

    Use it as a context manager (``with limiter.hold(timeout=30):``), or call :meth:`acquire`
    and :meth:`release` yourself. One ``with`` block at a time per object.

    Attributes a caller may read: ``holder`` (the lease's holder id), ``lease`` (while held),
    ``waited`` (had to queue), ``position`` (its queue sequence number while waiting), and
    ``lost`` / ``lost_reason``: set, with a WARNING log and a call of ``on_lost``, when the
    lease is gone (revoked by an operator, or no renewal came back before it expired). The
    rule: ``lost`` turns True no later than the lease's expiry as this process's clock sees
    it, whether or not a renew call returns, so before anyone else can be admitted to the
    slot (others wait for the expiry plus the store's clock-skew margin). The block is not
    interrupted; code that must not run without the slot checks ``lost``.
    """

    def __init__(
        self,
        limiter: HoldLimiter,
        *,
        timeout: float | None = None,
        holder: str | None = None,
        ttl_seconds: float = DEFAULT_HOLD_TTL_SECONDS,
        max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
        heartbeat_seconds: float | None = None,
        on_lost: Callable[[Hold], None] | None = None,
        weight: int = 1,
    ) -> None:
        if not isinstance(limiter.name, str) or limiter.limit is None:
            raise InvalidArgumentError(
                "name",
                limiter.name,
                "hold() needs a named limiter with a limit (DynamoDBLimiter(name, limit)); a "
                "per-operation limiter belongs to one map or parallel, and a per-item one "
                "names its key per item (use DynamoDBLimiter(that_key, limit) here)",
            )
        _seconds("timeout", timeout, allow_zero=True, none_means="wait forever")
        ttl = validate_ttl(ttl_seconds)
        _seconds("max_poll_seconds", max_poll_seconds, allow_zero=False, none_means=None)
        _seconds("heartbeat_seconds", heartbeat_seconds, allow_zero=False, none_means="use ttl/3")
        if heartbeat_seconds is not None and heartbeat_seconds >= ttl:
            raise InvalidArgumentError(
                "heartbeat_seconds", heartbeat_seconds, f"must be below ttl_seconds ({ttl:g})"
            )
        if on_lost is not None and not callable(on_lost):
            raise InvalidArgumentError("on_lost", on_lost, "must be a function of the Hold")
        if holder is not None:
            validate_holder(holder)
        #: Units of the limit this hold takes.
        self.weight = validate_weight(weight, limiter.limit)
        self.limiter = limiter
        self.key: str = limiter.name
        self.limit: int = limiter.limit
        self.timeout = None if timeout is None else float(timeout)
        # Unique per hold, so two holds never share a slot; a caller's own id makes a retried
        # piece of work find its slot again (acquire is idempotent per holder).
        self.holder = holder if holder is not None else f"hold#{os.getpid()}#{uuid.uuid4().hex}"
        self.ttl_seconds = ttl
        self.max_poll_seconds = float(max_poll_seconds)
        self.heartbeat_seconds = (
            float(heartbeat_seconds) if heartbeat_seconds is not None else ttl * _HEARTBEAT_FRACTION
        )
        self.on_lost = on_lost
        # A waiter refreshes its entry at every poll; only a dead one outlives this.
        self.queue_ttl_seconds = max(60.0, 10 * self.max_poll_seconds)
        self.lease: Lease | None = None
        self.position: int | None = None
        self.ahead: int | None = None
        self.waited = False
        self.lost = False
        self.lost_reason: str | None = None
        self._heartbeat: Heartbeat | None = None
        self._lost_lock = threading.Lock()
        #: Bumped by every acquire, so a late answer to an abandoned call of an earlier one
        #: never undoes a later one.
        self._generation = 0

    def __repr__(self) -> str:
        return f"Hold(key={self.key!r}, holder={self.holder!r}, held={self.lease is not None})"

    # -- calls through the limiter, within the time budget ------------------------------------

    def _call(
        self,
        call: Callable[[], R],
        deadline: float | None,
        what: str,
        on_late: Callable[[R], None] | None = None,
    ) -> R:
        """``call()``, abandoned at ``deadline`` (monotonic) if it has not answered by then."""
        if deadline is None:
            return call()
        return budget.call_within(deadline, call, what=f"{what} {self.key}", on_late=on_late)

    # -- acquiring -----------------------------------------------------------------------------

    def acquire(self) -> Lease:
        """Wait for a slot (FIFO), start the heartbeat, and return the lease.

        Raises :class:`AcquireTimeoutError` when the timeout passes, after leaving the queue,
        within ``timeout`` + :data:`TIMEOUT_BOUND_SECONDS` whatever DynamoDB does. Our own
        refusals (a missing or wrong table, bad input) are raised as they are, at once.
        """
        if self.lease is not None:
            raise DurableSemaphoreError(f"{self!r} already holds its slot; release it first")
        self.limiter.guard_deadlines()
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        self._generation += 1
        self.position = None
        self.ahead = None
        self.waited = False
        self.lost = False
        self.lost_reason = None
        try:
            lease = self._wait(deadline)
        except BaseException as exc:
            if not _wrote_nothing(exc):
                self._leave()  # timed out, interrupted or failed: leave nothing behind
            raise
        self.lease = lease
        self.position = None
        observability.lease_waited(self.key, self.holder, time.monotonic() - started)
        self._heartbeat = Heartbeat(self)
        self._heartbeat.start()
        return lease

    def _poll(self, deadline: float | None) -> AcquireResult:
        """One acquire-or-check-in; a call still unanswered after the grace is abandoned."""
        limiter = self.limiter
        generation = self._generation

        def undo_late(result: AcquireResult) -> None:
            # Applied after we gave up: give the slot or queue place back at once.
            for grant in result.grants:
                self._wake(grant)
            ours = generation == self._generation and self.lease is None
            if ours and (result.lease is not None or result.queued):
                with budget.budget(time.monotonic() + _LEAVE_SECONDS):
                    outcome = limiter.release(self.key, self.holder, wake=False, weight=self.weight)
                for grant in outcome.grants:
                    self._wake(grant)

        return self._call(
            lambda: limiter.acquire(
                self.key,
                self.holder,
                self.limit,
                ttl_seconds=self.ttl_seconds,
                enqueue=True,
                position=self.position,
                queue_ttl_seconds=self.queue_ttl_seconds,
                wake=False,  # woken by _wake, which logs a failed wake-up instead of raising
                weight=self.weight,
            ),
            None if deadline is None else deadline + _CALL_GRACE_SECONDS,
            "acquire",
            undo_late,
        )

    def _wait(self, deadline: float | None) -> Lease:
        polls = 0
        last_error: Exception | None = None
        # Registered before the first check, so a hand-off in between is not missed.
        stored = self.limiter.place(self.key, self.holder, None)[0]
        with self.limiter.signals.waiting(HOLD_SIGNAL_SCOPE, stored, self.holder) as woken:
            while True:
                woken.clear()  # a wake-up before this check is seen by the check itself
                try:
                    result = self._poll(deadline)
                except Exception as exc:
                    if not is_transient_error(exc) and not isinstance(exc, DeadlineExceededError):
                        raise  # the SDK integration's rule too: our refusals do not heal
                    logger.warning(
                        "durable-semaphore: hold on %s: poll failed, will retry: %r", self.key, exc
                    )
                    last_error = exc
                else:
                    last_error = None
                    for grant in result.grants:
                        self._wake(grant)
                    if result.lease is not None:
                        return result.lease
                    self.position = result.position
                    if result.ahead is not None:
                        self.ahead = result.ahead
                    self.waited = self.waited or result.queued
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    assert self.timeout is not None
                    raise AcquireTimeoutError(
                        self.key,
                        self.timeout,
                        self.position,
                        ahead=self.ahead,
                        cause=_cause(last_error),
                    ) from last_error
                polls += 1
                pause = self._pause(polls)
                woken.wait(pause if remaining is None else min(pause, remaining))

    def _pause(self, polls: int) -> float:
        """Capped exponential backoff with equal jitter: spread out, but never a hot loop."""
        jitter: Literal["equal", "none"] = "equal" if self.limiter.jitter else "none"
        return Backoff(_FIRST_POLL_SECONDS, self.max_poll_seconds, jitter=jitter).delay(polls)

    def _leave(self) -> None:
        """Give up the queue place; a slot handed over meanwhile is passed on, not kept.

        Bounded by :data:`_LEAVE_SECONDS`; if DynamoDB does not answer by then, the entry
        expires on its own (after ``queue_ttl_seconds``, or the lease TTL for a slot granted
        in the race) and an answer that comes later is still acted on.
        """

        def wake_late(result: ReleaseResult) -> None:
            for grant in result.grants:
                self._wake(grant)

        limiter = self.limiter
        try:
            # No token: a queue marker has none, and a slot granted in the race carries one we
            # were never told. The holder id is this hold's own. Not ``waiters_likely``: that
            # starts with a hand-off from the queue head, which may be this very waiter.
            result = self._call(
                lambda: limiter.release(self.key, self.holder, wake=False, weight=self.weight),
                time.monotonic() + _LEAVE_SECONDS,
                "leave",
                wake_late,
            )
        except Exception:
            logger.warning(
                "durable-semaphore: hold on %s: leaving the queue failed; the entry expires "
                "on its own within %g s",
                self.key,
                max(self.queue_ttl_seconds, self.ttl_seconds),
                exc_info=True,
            )
            return
        for grant in result.grants:
            self._wake(grant)

    def _wake(self, grant: Grant) -> None:
        """Tell the waiter a slot was handed to: the limiter's route (local signal, callback,
        passing on a dead waiter's slot), as its own release path does."""
        try:
            self.limiter.wake(grant, releaser_arn=None)
        except Exception:
            logger.warning(
                "durable-semaphore: waking %s on %s failed; it finds the slot at its next check",
                grant.holder,
                grant.key,
                exc_info=True,
            )

    # -- releasing -----------------------------------------------------------------------------

    def release(self) -> bool:
        """Stop the heartbeat and free the slot, handing it to the oldest waiter.

        True only if this call freed a live lease. Never raises for a store failure (it is
        logged; the slot then comes back when the lease expires), and never blocks the end of
        the block longer than :data:`_RELEASE_SECONDS` (an answer that comes later is still
        acted on).
        """
        lease = self.lease
        if lease is None:
            return False
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
        self.lease = None
        limiter = self.limiter

        def wake_late(result: ReleaseResult) -> None:
            for grant in result.grants:
                self._wake(grant)

        try:
            result = self._call(
                lambda: limiter.release(
                    self.key,
                    self.holder,
                    waited=self.waited,
                    token=fence(lease),
                    wake=False,
                    weight=self.weight,
                ),
                time.monotonic() + _RELEASE_SECONDS,
                "release",
                wake_late,
            )
        except Exception:
            logger.warning(
                "durable-semaphore: release of %s on %s failed; the slot frees when the lease "
                "expires",
                self.holder,
                self.key,
                exc_info=True,
            )
            return False
        for grant in result.grants:
            self._wake(grant)
        return result.released

    def __enter__(self) -> Hold:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- losing the lease (told by the heartbeat, :mod:`durable_semaphore.heartbeat`) ----------

    def _mark_lost(self, reason: str) -> None:
        """Count the lease as lost, once: set ``lost``, log, report, and call ``on_lost``."""
        with self._lost_lock:
            if self.lost:
                return
            self.lost = True
            self.lost_reason = reason
        logger.warning(
            "durable-semaphore: %s lost its slot on %s: %s; the block keeps running without it",
            self.holder,
            self.key,
            reason,
        )
        observability.lease_lost(self.key, self.holder)
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:
                logger.warning(
                    "durable-semaphore: on_lost of %s raised", self.holder, exc_info=True
                )


def holding(
    limiter: HoldLimiter,
    timeout: float | None = None,
    *,
    holder: Callable[..., str] | None = None,
    ttl_seconds: float = DEFAULT_HOLD_TTL_SECONDS,
    max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
    on_lost: Callable[[Hold], None] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function so each call runs inside its own :class:`Hold`.

    ``holder``, if given, computes the holder id from the call's arguments (an idempotency
    key, say), so a retried call finds its slot again; a fixed id would make concurrent calls
    share one slot. Arguments are checked here, at decoration time.
    """
    if holder is not None and not callable(holder):
        raise InvalidArgumentError(
            "holder", holder, "must be a function of the call's arguments returning an id, or None"
        )
    Hold(
        limiter,
        timeout=timeout,
        ttl_seconds=ttl_seconds,
        max_poll_seconds=max_poll_seconds,
        on_lost=on_lost,
    )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            raise InvalidArgumentError(
                "func", func, "is async; a hold blocks its thread, so it would stall the loop"
            )

        @functools.wraps(func)
        def held(*args: P.args, **kwargs: P.kwargs) -> R:
            hold = Hold(
                limiter,
                timeout=timeout,
                holder=holder(*args, **kwargs) if holder is not None else None,
                ttl_seconds=ttl_seconds,
                max_poll_seconds=max_poll_seconds,
                on_lost=on_lost,
            )
            with hold:
                return func(*args, **kwargs)

        return held

    return decorate
