"""Waking a waiter whose slot was handed over: a callback across executions, a signal within one.

The store hands a freed slot to the oldest waiter in the same transaction that frees it (see
:mod:`durable_semaphore.store`); this module only tells the waiter. Two routes:

* **The callback**: a waiting branch records a durable callback, and the releaser completes it
  with the Lambda API ``SendDurableExecutionCallbackSuccess`` through a :class:`Waker`, with
  the lease's token as the result. :class:`LambdaCallbackWaker` is the production one (a boto3
  ``lambda`` client); pointed at the testing library's local web server
  (``AWS_ENDPOINT_URL_LAMBDA``) it is also the one the demo and tests use. A callback waiter
  resumes only on its completed callback, in its own execution too, so its replays see the
  same history.
* **Within one execution in one process** (the branches of one map running in one invocation),
  :class:`LocalSignals` makes a waiter look at once: a callback waiter refreshes its
  execution's operations, a polling one checks the store. :class:`LocalSignals` also tracks an
  execution's live work here, which decides whether a waiter stays in-process (and sees its
  wake-up there) or suspends (see :mod:`durable_semaphore.waiting`). It is keyed by execution
  ARN: a deployed Lambda sandbox runs one invocation at a time, and the local runner hosts many
  executions in one process, so a wider scope would make the demo faster than production could
  ever be.

A callback's timeout is the fallback for a wake-up that was never sent (a releaser that died
between hand-off and wake-up, a refused API call): then the waiter reads the store, where the
slot is usually already its own.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from durable_semaphore.retry import WAKE, client_config

if TYPE_CHECKING:
    from mypy_boto3_lambda.client import LambdaClient

    from durable_semaphore.store import Grant
else:
    LambdaClient = Any

__all__ = [
    "GONE_ERROR_CODES",
    "LIVE_EXECUTION_STATUSES",
    "WAKER_ENV_VAR",
    "WAKE_PAYLOAD",
    "LambdaCallbackWaker",
    "LocalSignals",
    "WakeOutcome",
    "Waker",
    "local_signals",
    "wake_first_waiting",
    "waker_from_env",
]

logger = logging.getLogger(__name__)

#: Environment variable choosing the default waker: ``lambda`` wakes waiters of named limiters
#: through ``SendDurableExecutionCallbackSuccess``; unset or ``none`` means polling.
WAKER_ENV_VAR = "DURABLE_SEMAPHORE_WAKER"

#: What a woken waiter receives: the slot is already its own.
WAKE_PAYLOAD = b'{"granted": true}'


#: Answers that prove the callback can never be completed: it timed out, was already closed,
#: or does not exist (its execution ended). Anything else may heal, so the grant stays.
GONE_ERROR_CODES = frozenset(
    {"CallbackTimeoutException", "ResourceNotFoundException", "InvalidParameterValueException"}
)


class WakeOutcome(enum.Enum):
    """What a wake attempt achieved."""

    #: The callback was completed; the waiter will resume (perhaps on its next invocation).
    DELIVERED = "delivered"
    #: The callback is gone for good: the slot must go to someone else.
    GONE = "gone"
    #: Unknown (throttled, denied, network): keep the grant; the waiter's timeout finds it.
    FAILED = "failed"


@runtime_checkable
class Waker(Protocol):
    """Completes a waiting branch's callback. Implementations must be thread-safe."""

    def wake(self, callback_id: str, payload: bytes = WAKE_PAYLOAD) -> WakeOutcome:
        """Complete ``callback_id`` successfully with ``payload`` (JSON); never raise."""
        ...


#: Durable-execution statuses in which the execution may still run code (and claim a slot).
LIVE_EXECUTION_STATUSES = frozenset({"RUNNING", "PAUSING", "PAUSED"})


def _lambda_config() -> Config:
    # A wake-up is latency-sensitive and has a fallback (the waiter's timeout): retry a little.
    return client_config(WAKE)


class LambdaCallbackWaker:
    """Wakes waiters through ``lambda:SendDurableExecutionCallbackSuccess``.

    The boto3 client is created on first use; boto3 honours ``AWS_ENDPOINT_URL_LAMBDA``, which
    is how tests and the demo reach the testing library's local durable-execution server.
    Deployed, the releasing function needs ``lambda:SendDurableExecutionCallbackSuccess`` on
    the functions that wait on the same limiter (template.yaml grants exactly that).
    """

    def __init__(
        self,
        client: LambdaClient | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
    ) -> None:
        self._client = client
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._lock = threading.Lock()
        self._warned_denied = False

    @property
    def client(self) -> LambdaClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3

                    self._client = boto3.client(
                        "lambda",
                        endpoint_url=self._endpoint_url,
                        region_name=self._region_name,
                        config=_lambda_config(),
                    )
        return self._client

    def wake(self, callback_id: str, payload: bytes = WAKE_PAYLOAD) -> WakeOutcome:
        try:
            self.client.send_durable_execution_callback_success(
                CallbackId=callback_id, Result=payload
            )
            return WakeOutcome.DELIVERED
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in GONE_ERROR_CODES or status == 404:
                return WakeOutcome.GONE
            if code in ("AccessDeniedException", "AccessDenied") and not self._warned_denied:
                self._warned_denied = True
                logger.warning(
                    "durable-semaphore: no permission to wake waiters "
                    "(lambda:SendDurableExecutionCallbackSuccess); they will resume at their "
                    "callback timeout instead"
                )
            else:
                logger.warning("durable-semaphore: wake-up failed: %s", code or err)
            return WakeOutcome.FAILED
        except (BotoCoreError, OSError) as err:
            logger.warning("durable-semaphore: wake-up failed: %r", err)
            return WakeOutcome.FAILED

    def execution_running(self, execution_arn: str) -> bool | None:
        """Whether the waiter's execution may still run code: True, False, or None (unknown).

        Asked only when a wake-up finds the callback gone: a live waiter whose callback just
        timed out is about to check again and should keep its slot; a dead one must not.
        """
        try:
            out = self.client.get_durable_execution(DurableExecutionArn=execution_arn)
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code == "ResourceNotFoundException" or status == 404:
                return False
            return None
        except (BotoCoreError, OSError):
            return None
        return str(out.get("Status", "")) in LIVE_EXECUTION_STATUSES


def waker_from_env(client: LambdaClient | None = None) -> Waker | None:
    """The waker ``$DURABLE_SEMAPHORE_WAKER`` asks for (limiter and reaper read the same switch)."""
    if os.environ.get(WAKER_ENV_VAR, "").lower() == "lambda":
        return LambdaCallbackWaker(client)
    return None


def wake_payload(grant: Grant) -> bytes:
    """The callback result a woken waiter reads: its lease's fencing token, so it can release
    exactly the generation it was handed without another request."""
    if grant.token is None:
        return WAKE_PAYLOAD
    return json.dumps({"granted": True, "token": grant.token}).encode()


def wake_first_waiting(waker: Waker, grant: Grant) -> WakeOutcome:
    """Wake ``grant``'s callback, or the first of its spares that still waits (the store keeps
    spare callbacks for waiters that record several). GONE comes back only when every one is
    gone."""
    outcome = WakeOutcome.GONE
    payload = wake_payload(grant)
    for callback_id in (grant.callback_id, *grant.spare_callback_ids):
        if callback_id is None:
            continue
        outcome = waker.wake(callback_id, payload)
        if outcome is not WakeOutcome.GONE:
            return outcome
    return outcome


class LocalSignals:
    """In-process wake-ups and activity between branches of one execution.

    A waiter :meth:`waiting` on ``(execution, key, holder)`` blocks on an event for a bounded
    time; a releaser in the same execution and process that handed it the slot calls
    :meth:`wake`, which succeeds only if that waiter is blocked right now (otherwise the
    releaser falls back to the callback, or the waiter to its next check).

    :meth:`active` marks work of an execution that keeps its invocation alive in this process:
    a gate deciding, a body running, a release waiting for its checkpoint. A waiter stays
    in-process (and notices its wake-up there) only while its execution is active; once it is
    idle the waiter suspends, since nothing would see a completion anyway and the execution is
    invoked again for it. :meth:`running` marks bodies that hold ``key``: only then can a local
    release come soon on a polling route.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: dict[tuple[str, str, str], threading.Event] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._active: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}

    # -- activity ----------------------------------------------------------------------------

    def enter(self, execution_arn: str) -> None:
        """One more piece of live work in ``execution_arn`` (pair with :meth:`leave`)."""
        with self._lock:
            self._active[execution_arn] = self._active.get(execution_arn, 0) + 1
            self._idle_since.pop(execution_arn, None)

    def leave(self, execution_arn: str) -> None:
        with self._lock:
            left = self._active.get(execution_arn, 0) - 1
            if left > 0:
                self._active[execution_arn] = left
            else:
                self._active.pop(execution_arn, None)
                self._idle_since[execution_arn] = time.monotonic()
                if len(self._idle_since) > 4096:  # forget long-finished executions
                    oldest = sorted(self._idle_since, key=self._idle_since.__getitem__)
                    for arn in oldest[:2048]:
                        del self._idle_since[arn]
            self._changed.notify_all()

    @contextmanager
    def active(self, execution_arn: str) -> Iterator[None]:
        self.enter(execution_arn)
        try:
            yield
        finally:
            self.leave(execution_arn)

    def idle_seconds(self, execution_arn: str) -> float | None:
        """None while ``execution_arn`` has live work here; else how long it has had none."""
        with self._lock:
            if self._active.get(execution_arn, 0) > 0:
                return None
            since = self._idle_since.get(execution_arn)
            return math.inf if since is None else time.monotonic() - since

    def pause(self, event: threading.Event, timeout: float) -> None:
        """Block up to ``timeout`` s, returning early on a local wake-up of ``event`` or any
        change of activity (so a waiter reacts at once when its execution goes idle)."""
        with self._lock:
            if not event.is_set():
                self._changed.wait(timeout)

    # -- per-key bodies (polling route) -------------------------------------------------------

    @contextmanager
    def running(self, execution_arn: str, key: str) -> Iterator[None]:
        scope = (execution_arn, key)
        with self._lock:
            self._running[scope] = self._running.get(scope, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._running[scope] - 1
                if left:
                    self._running[scope] = left
                else:
                    del self._running[scope]

    def busy(self, execution_arn: str, key: str) -> bool:
        """Whether a body of this execution that holds ``key`` runs in this process now."""
        with self._lock:
            return self._running.get((execution_arn, key), 0) > 0

    # -- wake-ups -----------------------------------------------------------------------------

    @contextmanager
    def waiting(self, execution_arn: str, key: str, holder: str) -> Iterator[threading.Event]:
        """Register before checking the store, so a hand-off in between is not missed."""
        ident = (execution_arn, key, holder)
        event = threading.Event()
        with self._lock:
            self._events[ident] = event
        try:
            yield event
        finally:
            with self._lock:
                if self._events.get(ident) is event:
                    del self._events[ident]

    def wake(self, execution_arn: str | None, key: str, holder: str) -> bool:
        """Wake ``holder`` if it is blocked in this process; True when it was."""
        if execution_arn is None:
            return False
        with self._lock:
            event = self._events.get((execution_arn, key, holder))
            if event is None:
                return False
            event.set()
            self._changed.notify_all()
            return True


#: The process-wide instance the SDK integration uses.
local_signals = LocalSignals()
