"""The gate a branch passes before its body runs: take a slot, or wait for one to be handed over.

What it records in the branch's history is what it costs (Lambda bills every durable
operation), so it records as little as determinism allows:

* **Uncontended: nothing.** The gate acquires straight from the store with a token derived from
  the holder id, so a replay knows the token without a record. A replay tells from the history
  whether the first run waited: our wait operation sits at the branch's next position, or the
  body's first operation does (or nothing yet: then the idempotent acquire is simply repeated).
* **Contended: one callback per wait round.** The branch joins the key's FIFO queue, records a
  callback (``durable-semaphore-wait``) and writes its id on its queue entry. A releaser hands
  it the slot in the store and completes the callback with the lease's token. A round ends only
  when the callback completes (woken) or times out (a wake-up that was never sent); its timeout
  doubles each round, so a long wait records a handful of operations, not one per timeout.
* **Wake-ups are never lost.** While other work of the waiter's execution runs in this process
  (another branch's gate, body or release), the invocation is alive and would see a completion
  without acting on it; so the waiter stays in-process and refreshes the execution's operations
  until its callback completes or the execution goes idle here. Only then does it suspend: from
  that moment nothing in the invocation reads a checkpoint response, so a later completion is
  one the invocation has not seen, and the execution is invoked again for it.

Without a waker (per-operation scopes, or named limiters with no ``DURABLE_SEMAPHORE_WAKER``) a
contended branch polls the store in one ``wait_for_condition`` (``durable-semaphore-poll``),
blocking briefly on an in-process hand-off from a branch of its own execution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aws_durable_execution_sdk_python.config import CallbackConfig, Duration
from aws_durable_execution_sdk_python.context import DurableContext
from aws_durable_execution_sdk_python.exceptions import CallbackError, SuspendExecution
from aws_durable_execution_sdk_python.waits import (
    WaitForConditionConfig,
    WaitForConditionDecision,
)

from durable_semaphore import _sdk_compat, observability
from durable_semaphore.retry import is_transient_error
from durable_semaphore.store import AcquireResult, Grant
from durable_semaphore.wake import WakeOutcome, wake_payload

if TYPE_CHECKING:
    import threading

    from durable_semaphore.limiter import DynamoDBLimiter

__all__ = [
    "ACQUIRE_OPERATION_NAME",
    "IDLE_GRACE_SECONDS",
    "MAX_REFRESH_INTERVAL_SECONDS",
    "POLL_OPERATION_NAME",
    "REFRESH_INTERVAL_SECONDS",
    "RETRY_OPERATION_NAME",
    "WAIT_OPERATION_NAME",
    "GateNames",
    "Held",
    "Scope",
    "gate",
    "is_gate_operation",
    "replay_token",
]

logger = logging.getLogger(__name__)

#: A step that reads the store after a wait round timed out (or when a slot came with a token
#: a replay could not derive); its result is the decision.
ACQUIRE_OPERATION_NAME = "durable-semaphore-acquire"
#: The callback a waiting branch suspends on until a releaser hands it a slot.
WAIT_OPERATION_NAME = "durable-semaphore-wait"
#: The ``wait_for_condition`` of a waiter that polls (no waker).
POLL_OPERATION_NAME = "durable-semaphore-poll"
#: A durable pause after the store failed transiently, before the next decision.
RETRY_OPERATION_NAME = "durable-semaphore-retry"


@dataclass(frozen=True, slots=True)
class GateNames:
    """The names a gate records its operations under.

    A branch under several limits passes one gate per limit, one after another, at the same
    history positions; a replayed gate must tell its own operations from the next gate's (which
    mean "this one held its slot", like the body's). So the first gate keeps the plain names
    (histories of a single limit are unchanged) and gate ``i`` of a branch adds ``:i``.
    """

    acquire: str = ACQUIRE_OPERATION_NAME
    wait: str = WAIT_OPERATION_NAME
    poll: str = POLL_OPERATION_NAME
    retry: str = RETRY_OPERATION_NAME

    @classmethod
    def of(cls, index: int) -> GateNames:
        """The names of a branch's gate number ``index`` (0-based, in the canonical order)."""
        if index == 0:
            return cls()
        return cls(*(f"{name}:{index}" for name in _BASE_NAMES))

    @property
    def ours(self) -> frozenset[str]:
        return frozenset({self.acquire, self.wait, self.poll, self.retry})


_BASE_NAMES = (
    ACQUIRE_OPERATION_NAME,
    WAIT_OPERATION_NAME,
    POLL_OPERATION_NAME,
    RETRY_OPERATION_NAME,
)


def is_gate_operation(name: str | None, base: str) -> bool:
    """Whether ``name`` is gate operation ``base`` of any gate (``base`` or ``base:<i>``)."""
    return name is not None and (name == base or name.startswith(base + ":"))


#: How often a waiter whose invocation is alive asks for the execution's operations, at first.
#: Waiters of one execution share the request (the SDK batches refreshes due at one instant).
REFRESH_INTERVAL_SECONDS = 0.1
#: The longest interval between a live waiter's refreshes (it backs off while nothing comes).
MAX_REFRESH_INTERVAL_SECONDS = 2.0
#: How long a waiter stays in-process after its execution went idle here: covers the SDK's own
#: steps between two pieces of our work (a branch's SUCCEED checkpoint, admitting the next one).
IDLE_GRACE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Held:
    """A branch's slot, as the gate found it."""

    #: The lease's fencing token (releases and renewals touch only that generation).
    token: str | None
    #: The branch had to queue: waiters are likely at release (saves a request there).
    waited: bool
    #: The first run took the slot and this is a replay of it: nothing was read from the store.
    replayed: bool = False


class Scope(Protocol):
    """What the gate needs of one limit of its branch (``branch.Slot`` is the one in use)."""

    key: str
    #: What this gate's operations are called (one set per limit of a branch).
    names: GateNames

    @property
    def limiter(self) -> DynamoDBLimiter: ...

    @property
    def execution_arn(self) -> str: ...

    @property
    def limit(self) -> int: ...

    @property
    def closed(self) -> threading.Event:
        """Set once the map has returned: a branch still deciding gives its slot back."""

    def release_now(
        self, holder: str, *, waited: bool, token: str | None = None, report_lost: bool = False
    ) -> None: ...

    def drain_local_releases(self) -> None: ...

    def stored_key(self, holder: str) -> str: ...

    def weight_of(self, holder: str) -> int: ...

    def queue_order(self, holder: str) -> tuple[int, str | None]: ...


def replay_token(holder: str) -> str:
    """The token an uncontended gate gives a fresh lease: derived from the holder id, so a
    replay that recorded nothing still releases exactly that generation. A lease revived or
    handed over gets a random token instead, and a stale owner holding this one is fenced."""
    return "g0-" + hashlib.blake2b(holder.encode(), digest_size=12).hexdigest()


def gate(scope: Scope, ctx: DurableContext, holder: str) -> Held | None:
    """Return the branch's slot, waiting durably as needed; None when the map already returned
    (early completion orphaned this branch). May raise ``SuspendExecution``.

    The walk is the same on every replay: at each position of the branch's history it either
    finds one of our operations (and replays it) or the body's first one (the slot was held),
    or nothing (and decides now, recording what a replay must find).
    """
    walk = _Walk()
    names = scope.names
    held: Held | _Next | None
    while True:
        found = _sdk_compat.next_operation(ctx)
        if found is not None and found.name in names.ours:
            walk.recorded_any = True
            if walk.first_started is None:
                walk.first_started = found.started_at
        if found is not None and found.name == names.wait and found.kind == "CALLBACK":
            walk.rounds += 1
            walk.round_next = False
            held = _wait_round(scope, ctx, holder, walk, new=False) or _NEXT
        elif found is not None and found.name == names.poll:
            held = _poll(scope, ctx, holder)
        elif found is not None and found.name == names.retry:
            ctx.wait(Duration(seconds=1), name=names.retry)  # replayed: no wait
            continue
        elif found is not None and found.name == names.acquire:
            held = _decided(scope, ctx, holder, walk, _recorded_acquire(scope, ctx, holder, walk))
        elif found is not None:
            # The first run went on to the body holding the slot: with the derived token,
            # unless a recorded decision gave another (that case returned earlier).
            return Held(replay_token(holder), waited=walk.rounds > 0, replayed=True)
        elif walk.round_next:
            walk.rounds += 1
            walk.round_next = False
            held = _wait_round(scope, ctx, holder, walk, new=True) or _NEXT
        elif walk.recorded_any:
            held = _decided(scope, ctx, holder, walk, _recorded_acquire(scope, ctx, holder, walk))
        else:
            held = _decided(scope, ctx, holder, walk, _live_acquire(scope, ctx, holder, walk))
        if held is None or isinstance(held, Held):
            if isinstance(held, Held):
                _report_wait(scope, holder, ctx, walk)
            return held
        # else: a round timed out, or a decision was to wait: the next position says more


@dataclass
class _Walk:
    """Where a gate is in its recorded operations (rebuilt identically on every replay)."""

    rounds: int = 0
    recorded_any: bool = False
    #: The last decision was to wait: the next position is a wait round.
    round_next: bool = False
    first_started: float | None = None


class _Next:
    """The gate goes on at the next position."""


_NEXT = _Next()


def _decided(
    scope: Scope, ctx: DurableContext, holder: str, walk: _Walk, decision: dict[str, Any]
) -> Held | _Next | None:
    """Act on one decision (recorded or not): hold, give up (orphaned), pause after a store
    error, or wait (a callback round next, or polling without a waker)."""
    limiter = scope.limiter
    logger.debug("durable-semaphore: %s decided %s", holder, decision)
    if decision.get("orphaned"):
        return None
    if decision.get("held"):
        return Held(decision.get("token"), waited=bool(decision.get("queued")))
    walk.recorded_any = True
    if walk.first_started is None:
        walk.first_started = limiter.now()
    if decision.get("error"):
        ctx.wait(
            Duration(seconds=limiter.backoff_delay(max(1, walk.rounds))),
            name=scope.names.retry,
        )
        return _NEXT
    if not limiter.uses_callbacks:
        return _poll(scope, ctx, holder)
    walk.round_next = True
    return _NEXT


# -- one decision ----------------------------------------------------------------------------


def _acquire_now(scope: Scope, holder: str, **options: Any) -> dict[str, Any]:
    """One acquire-or-queue against the store, as a checkpointable dict."""
    priority, group = scope.queue_order(holder)
    try:
        result: AcquireResult = scope.limiter.acquire(
            scope.key,
            holder,
            scope.limit,
            execution_arn=scope.execution_arn,
            token=replay_token(holder),
            weight=scope.weight_of(holder),
            priority=priority,
            group=group,
            **options,
        )
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        logger.warning("durable-semaphore: acquire on %s failed, will retry: %r", scope.key, exc)
        return {"held": False, "error": type(exc).__name__}
    if scope.closed.is_set() and (result.lease is not None or result.queued):
        # The map already returned: give the slot or the queue place straight back.
        scope.release_now(holder, waited=result.lease is not None)
        return {"held": False, "orphaned": True}
    if result.lease is not None:
        return {"held": True, "token": result.lease.token, "queued": False}
    return {"held": False, "position": result.position, "queued": result.queued}


def _live_acquire(scope: Scope, ctx: DurableContext, holder: str, walk: _Walk) -> dict[str, Any]:
    """The first decision, recorded nowhere: the uncontended path costs no operation. A
    callback waiter joins the queue only once its callback exists (one request, with the
    callback id), so here it only tries for a slot."""
    scope.drain_local_releases()
    decision = _acquire_now(scope, holder, enqueue=not scope.limiter.uses_callbacks)
    if decision.get("held") and decision.get("token") != replay_token(holder):
        # A slot with a token a replay cannot derive (handed to a queue place an earlier
        # invocation took before it crashed): record it.
        walk.recorded_any = True
        return _recorded_acquire(scope, ctx, holder, walk)
    return decision


def _recorded_acquire(
    scope: Scope, ctx: DurableContext, holder: str, walk: _Walk
) -> dict[str, Any]:
    """A decision recorded as a step (after a timed-out round): replays return it unchanged."""
    waited = walk.rounds > 0

    def decide(_step_ctx: Any) -> dict[str, Any]:
        scope.drain_local_releases()
        out = _acquire_now(scope, holder, enqueue=not scope.limiter.uses_callbacks)
        out["queued"] = bool(out.get("queued")) or waited
        return out

    result: dict[str, Any] = ctx.step(decide, name=scope.names.acquire)
    return result


# -- waiting on a callback -------------------------------------------------------------------


def _wait_round(
    scope: Scope, ctx: DurableContext, holder: str, walk: _Walk, *, new: bool
) -> Held | None:
    """Create (or replay) this round's callback and wait for it; None when it timed out."""
    limiter = scope.limiter
    callback = ctx.create_callback(
        name=scope.names.wait,
        config=CallbackConfig(timeout=Duration(seconds=limiter.round_timeout_seconds(walk.rounds))),
    )
    logger.debug(
        "durable-semaphore: %s waits on %s (round %d, new=%s)",
        holder,
        callback.callback_id,
        walk.rounds,
        new,
    )
    if new:
        token = _register(scope, holder, walk.rounds, str(callback.callback_id))
        if token is not None:
            return Held(token, waited=True)
    return _await_callback(scope, ctx, holder, callback)


def _register(scope: Scope, holder: str, rounds: int, callback_id: str) -> str | None:
    """Write the callback id on the queue entry, so a releaser can wake it.

    When the slot is already ours (freed or handed over before the id was on the entry), no
    releaser will complete the callback, so we complete it ourselves with the lease's token:
    a replay then finds the same outcome in the history. Returns that token, or None to wait.
    """
    limiter = scope.limiter
    outcome = _acquire_now(
        scope,
        holder,
        callback_id=callback_id,
        queue_ttl_seconds=limiter.callback_queue_ttl_seconds(rounds),
        queue_first=True,
    )
    waker = limiter.waker
    token = outcome.get("token")
    if not outcome.get("held") or waker is None or not isinstance(token, str):
        return None
    grant = Grant(scope.stored_key(holder), holder, scope.execution_arn, callback_id, token=token)
    if waker.wake(callback_id, wake_payload(grant)) is not WakeOutcome.DELIVERED:
        return None  # the round's timeout finds the slot ours (a recorded store read)
    return token


class _Pending:
    """The callback has not completed yet."""


_PENDING = _Pending()


def _callback_outcome(callback: Any) -> Any:
    """The callback's result, ``_PENDING``, or the ``CallbackError`` (timed out) as a value.

    ``Callback.result()`` only reads the execution state: it raises ``SuspendExecution``
    while the callback is pending, which here means "not yet".
    """
    try:
        return callback.result()
    except SuspendExecution:
        return _PENDING
    except CallbackError as exc:
        return exc


def _await_callback(scope: Scope, ctx: DurableContext, holder: str, callback: Any) -> Held | None:
    """Wait in-process while the execution is active here, else suspend on the callback.

    In-process, the waiter looks again at once when a releaser of its own execution signals
    it, and otherwise refreshes every 0.1 s, backing off to every 2 s while nothing comes (a
    long body elsewhere in the invocation should not cost a refresh every 0.1 s for minutes).
    """
    arn = scope.execution_arn
    signals = scope.limiter.signals
    in_process = _sdk_compat.can_refresh(ctx)
    interval = REFRESH_INTERVAL_SECONDS
    last = time.monotonic()
    signals.leave(arn)  # a waiter does not keep its invocation alive
    try:
        with signals.waiting(arn, scope.stored_key(holder), holder) as woken:
            while in_process:
                outcome = _callback_outcome(callback)
                if not isinstance(outcome, _Pending):
                    return _round_result(outcome)
                idle = signals.idle_seconds(arn)
                if idle is not None and idle >= IDLE_GRACE_SECONDS:
                    break
                if idle is not None:
                    pause = IDLE_GRACE_SECONDS - idle
                else:
                    pause = interval - (time.monotonic() - last)
                if pause > 0:
                    signals.pause(woken, pause)
                if woken.is_set():
                    woken.clear()
                    _refresh(ctx, aligned=False)
                    last, interval = time.monotonic(), REFRESH_INTERVAL_SECONDS
                elif time.monotonic() - last >= interval:
                    _refresh(ctx, aligned=True)
                    last = time.monotonic()
                    interval = min(MAX_REFRESH_INTERVAL_SECONDS, interval * 1.5)
            if in_process:
                _refresh(ctx, aligned=False)  # the last look before suspending
    finally:
        signals.enter(arn)
    outcome = _callback_outcome(callback)
    logger.debug("durable-semaphore: %s leaves its wait: %r", holder, outcome)
    if isinstance(outcome, _Pending):
        raise SuspendExecution("durable-semaphore: waiting for a slot to be handed over")
    return _round_result(outcome)


def _refresh(ctx: DurableContext, *, aligned: bool) -> None:
    """Refresh now, or at the next 0.1 s mark, so that waiters of one execution share it."""
    now = time.time()
    at = math.ceil(now / REFRESH_INTERVAL_SECONDS) * REFRESH_INTERVAL_SECONDS if aligned else now
    _sdk_compat.refresh(ctx, at=at)


def _round_result(outcome: Any) -> Held | None:
    if isinstance(outcome, CallbackError):
        return None  # timed out: the next position decides (a recorded store read)
    # The releaser handed us the slot in the same transaction that freed it, and sent the
    # lease's fencing token with the wake-up.
    return Held(token_of(outcome), waited=True)


def token_of(payload: Any) -> str | None:
    """The fencing token in a wake-up's callback result: the SDK hands the result back as
    sent (JSON text) or already decoded, depending on its version and serdes."""
    if isinstance(payload, bytes | bytearray):
        payload = payload.decode("utf-8", "replace")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    token = payload.get("token") if isinstance(payload, dict) else None
    return token if isinstance(token, str) and token else None


def _report_wait(scope: Scope, holder: str, ctx: DurableContext, walk: _Walk) -> None:
    """The wait metric, once per branch: when the gate passes and the body has recorded
    nothing yet (a later replay finds the body's first operation and reports nothing)."""
    if _sdk_compat.next_operation(ctx) is not None:
        return
    now = scope.limiter.now()
    started = walk.first_started if walk.first_started is not None else now
    observability.lease_waited(scope.key, holder, max(0.0, now - started))


# -- polling ---------------------------------------------------------------------------------


def _poll(scope: Scope, ctx: DurableContext, holder: str) -> Held | None:
    """One ``wait_for_condition``: check, then back off durably. While a body of this
    execution holding the key runs in this process, the check blocks briefly on an in-process
    hand-off from it."""
    limiter = scope.limiter

    def check(state: dict[str, Any], _check_ctx: Any) -> dict[str, Any]:
        polls = int(state.get("polls", 0)) + 1
        first_at = float(state.get("first_at") or limiter.now())
        position = state.get("position")
        arn = scope.execution_arn
        with limiter.signals.waiting(arn, scope.stored_key(holder), holder) as woken:
            out = _acquire_now(scope, holder, position=position)
            if (
                out.get("position") is not None
                and limiter.local_wait_seconds > 0
                and limiter.signals.busy(arn, scope.stored_key(holder))
            ):
                woken.wait(limiter.local_wait_seconds)
        if woken.is_set() and not out.get("held"):
            out = _acquire_now(scope, holder, position=out.get("position"))
        if out.get("error"):
            out["position"] = position  # a transient error: keep the place we had
        out.update(polls=polls, first_at=first_at, queued=True)
        return out

    def wait_strategy(state: dict[str, Any], attempts_made: int) -> WaitForConditionDecision:
        if state.get("held") or state.get("orphaned"):
            return WaitForConditionDecision.stop_polling()
        return WaitForConditionDecision.continue_waiting(
            Duration(seconds=limiter.backoff_delay(attempts_made))
        )

    state: dict[str, Any] = ctx.wait_for_condition(
        check,
        config=WaitForConditionConfig(wait_strategy=wait_strategy, initial_state={"polls": 0}),
        name=scope.names.poll,
    )
    if state.get("orphaned"):
        return None
    return Held(state.get("token"), waited=True)
