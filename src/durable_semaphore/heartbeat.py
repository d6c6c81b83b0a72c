"""The heartbeat of a hold: a daemon thread that renews its lease and declares it lost in time.

:class:`~durable_semaphore.hold.Hold` starts one when it gets its slot and stops it on release.
The rule it keeps: a hold counts its lease as lost no later than the lease's expiry on this
process's clock, whether or not a renew call ever returns, so before anyone else can be
admitted to the slot (others wait for the expiry plus the store's clock-skew margin). Each
renewal runs under a time budget (:mod:`durable_semaphore.deadline`) that ends at that moment.

This module does not import :mod:`durable_semaphore.hold`: it sees its hold through
:class:`HeldLease`, so the dependency runs one way, hold -> heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from durable_semaphore import deadline as budget
from durable_semaphore.errors import DeadlineExceededError
from durable_semaphore.store import Lease

__all__ = ["Heartbeat", "HeldLease", "fence"]

#: The hold's logger: what a hold reports, from either thread, goes to one place.
logger = logging.getLogger("durable_semaphore.hold")

#: How long leaving the block waits for an in-flight renewal before releasing anyway.
_HEARTBEAT_JOIN_SECONDS = 1.0
#: ``lost`` turns True this long before the lease's expiry on the holder's clock, so that it
#: is never late by a timer's jitter.
_LOSS_LEAD_SECONDS = 0.1


def fence(lease: Lease) -> str | None:
    """The one spot the lease's fencing token is taken for ``renew`` and ``release``.

    With the token, a lease this hold no longer owns (expired and taken again under the same
    holder id) is never renewed or freed by it.
    """
    return lease.token


class _Renewer(Protocol):
    """What the heartbeat needs of the hold's limiter."""

    def now(self) -> float: ...

    def renew(
        self, key: str, holder: str, *, ttl_seconds: float | None = ..., token: str | None = ...
    ) -> Lease | None: ...


class HeldLease(Protocol):
    """What the heartbeat needs of its hold (a :class:`~durable_semaphore.hold.Hold`)."""

    key: str
    holder: str
    ttl_seconds: float
    heartbeat_seconds: float
    lease: Lease | None

    @property
    def limiter(self) -> _Renewer: ...

    def _mark_lost(self, reason: str) -> None: ...


class Heartbeat:
    """A daemon thread renewing a hold's lease every ``heartbeat_seconds`` until stopped, and
    declaring it lost at its expiry if no renewal came back by then.

    Daemon, so a renewal stuck on the network never keeps the interpreter alive.
    """

    def __init__(self, hold: HeldLease) -> None:
        self._hold = hold
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"durable-semaphore-heartbeat-{hold.key}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(_HEARTBEAT_JOIN_SECONDS)

    def seconds_left(self) -> float | None:
        """Seconds until the hold must count its lease as lost (None: not held)."""
        lease = self._hold.lease
        if lease is None:
            return None
        return lease.expires_at - self._hold.limiter.now() - _LOSS_LEAD_SECONDS

    def _run(self) -> None:
        hold = self._hold
        pause = hold.heartbeat_seconds
        try:
            while True:
                left = self.seconds_left()
                if left is None:
                    return
                # Never sleep past the moment the lease must be counted lost.
                if self._stopped.wait(max(0.0, min(pause, left))):
                    return
                renewed = hold.lease
                if not self._renew():
                    return
                # After a failed renewal, try again sooner than a full beat.
                failed = hold.lease is renewed
                pause = hold.heartbeat_seconds / 3 if failed else hold.heartbeat_seconds
        except Exception:  # pragma: no cover - _renew handles store errors itself
            logger.exception("durable-semaphore: heartbeat of %s stopped", hold.holder)

    def _renew(self) -> bool:
        """One beat: extend the lease; False once it is lost or released (stop beating).

        The renew call is abandoned when the lease runs out before it answers: a renewal
        stuck on the network must not keep ``lost`` False past the expiry.
        """
        hold, stopped = self._hold, self._stopped
        lease = hold.lease
        left = self.seconds_left()
        if lease is None or left is None or stopped.is_set():
            return False
        if left <= 0:
            hold._mark_lost("no renewal came back before it expired")
            return False
        try:
            renewed = budget.call_within(
                time.monotonic() + left,
                lambda: hold.limiter.renew(
                    hold.key, hold.holder, ttl_seconds=hold.ttl_seconds, token=fence(lease)
                ),
                what=f"renew {hold.key}",
            )
        except Exception as exc:
            return self._failed(exc)
        if stopped.is_set():
            return False  # released meanwhile: a None here is the release, not a loss
        if renewed is None:
            hold._mark_lost("it was no longer held when renewed (revoked, or expired)")
            return False
        hold.lease = renewed
        return True

    def _failed(self, exc: Exception) -> bool:
        """A renewal that raised: retry while the lease lasts, else count it lost."""
        hold = self._hold
        if self._stopped.is_set():
            return False
        left = self.seconds_left()
        if left is not None and left > 0 and not isinstance(exc, DeadlineExceededError):
            logger.warning(
                "durable-semaphore: renewing %s on %s failed, will retry: %r",
                hold.holder,
                hold.key,
                exc,
            )
            return True
        hold._mark_lost("no renewal came back before it expired")
        return False
