"""The one module that touches the AWS Durable Execution SDK.

Importing :mod:`durable_semaphore` calls :func:`install`, which wraps ``DurableContext.map`` and
``DurableContext.parallel`` once. The wrappers do nothing unless the call's ``config`` is one of
our :class:`MapConfig` / :class:`ParallelConfig` with a ``limiter``: then every branch function is
wrapped so it

1. acquires a lease, or joins the key's FIFO queue, in ONE durable operation when a slot is
   free at once. A waiting branch then waits in one of two ways:

   * **callback** (named limiters with a waker): it suspends on a durable callback with a
     timeout; the releaser hands it the slot in the store and completes the callback, so it
     resumes owning the slot. On timeout (a lost wake-up) it checks the store again;
   * **polling** (per-operation scopes, or no waker): ``wait_for_condition`` checks its queue
     entry with the limiter's backoff, and, while another branch of the same execution runs in
     this process, blocks briefly on an in-process signal that the releaser sets;

2. on replay gets the checkpointed result back (renewing the lease only when it nears expiry;
   renew never takes a new slot);
3. runs the body and releases the lease once the branch is terminal (returned, or raised a real
   failure), never on a suspension or a retryable ``InvocationError``. Releasing hands the slot
   to the oldest waiter and wakes it.

When the map or parallel itself finishes, leases still held by its branches (branches abandoned
by early completion) are swept by holder-id prefix.

Why wrap branches instead of subclassing the executor: the SDK's plugins only observe, and the
executor has no admission hook, so gating there needs private names that changed between 1.x
and 3.x. Wrapping the branch function uses public API (``wait_for_condition``) on every line.
The few private reads left (the next operation id, the branch context's id prefix) live in
:mod:`durable_semaphore._sdk_compat`, are verified at install, and are checked against each
other at run time, failing loudly if the SDK changes them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

import aws_durable_execution_sdk_python.config as _sdk_config
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration, ParallelBranch
from aws_durable_execution_sdk_python.context import DurableContext
from aws_durable_execution_sdk_python.exceptions import (
    CallbackError,
    InvocationError,
    OrphanedChildException,
)
from aws_durable_execution_sdk_python.waits import (
    WaitForConditionConfig,
    WaitForConditionDecision,
)

from durable_semaphore import _sdk_compat, observability
from durable_semaphore.errors import (
    DurableSemaphoreError,
    UnsupportedSDKVersionError,
)
from durable_semaphore.limiter import (
    DynamoDBLimiter,
    LimiterSpec,
    resolve_limiter,
    validate_limiter_spec,
)
from durable_semaphore.store import is_transient_error

__all__ = [
    "ACQUIRE_OPERATION_NAME",
    "CHECK_OPERATION_NAME",
    "RELEASE_OPERATION_NAME",
    "SUPPORTED_SDK_RANGE",
    "WAIT_OPERATION_NAME",
    "MapConfig",
    "NestedLimiterError",
    "ParallelConfig",
    "check_sdk_version",
    "install",
    "is_installed",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SDK_DISTRIBUTION = "aws-durable-execution-sdk-python"
#: Inclusive lower, exclusive upper bound; keep in step with pyproject's dependency.
SUPPORTED_SDK_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((1, 7), (4, 0))
#: Name of the durable operation that acquires a branch's lease (visible in the history).
ACQUIRE_OPERATION_NAME = "durable-semaphore-acquire"
#: The callback a waiting branch suspends on until a releaser hands it a slot.
WAIT_OPERATION_NAME = "durable-semaphore-wait"
#: The step that records that callback on the branch's queue entry (and checks it again).
CHECK_OPERATION_NAME = "durable-semaphore-check"
#: The step a finished branch checkpoints before it releases its slot (see ``_release_gated``).
RELEASE_OPERATION_NAME = "durable-semaphore-release"
_HOOK_SENTINEL = "__durable_semaphore_hook__"


class NestedLimiterError(DurableSemaphoreError):
    """A map/parallel asked for a key that the branch calling it already holds.

    Waiting for a second slot on a key you hold deadlocks once every slot is held by a parent
    waiting for its children, so the nested call is refused instead (deterministically, before
    any durable operation starts).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"nested map/parallel uses limiter key {key!r}, which the enclosing branch already "
            "holds; this could deadlock. Use a different named limiter (or limiter='dynamodb', "
            "whose key is per operation) for the inner map, or limit only one level"
        )


# -- version check ---------------------------------------------------------------------------


def _parse_version(version: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise UnsupportedSDKVersionError(
            f"cannot parse {SDK_DISTRIBUTION} version {version!r}; "
            f"durable-semaphore supports >=1.7,<4"
        )
    return int(match.group(1)), int(match.group(2) or 0)


def check_sdk_version(version: str | None = None) -> str:
    """Raise :class:`UnsupportedSDKVersionError` unless the SDK version is in the supported range.

    The hook relies on how branch contexts and operation ids work; outside the tested range
    that may silently stop limiting, which is worse than failing at import.
    """
    if version is None:
        try:
            version = metadata.version(SDK_DISTRIBUTION)
        except metadata.PackageNotFoundError:
            from aws_durable_execution_sdk_python.__about__ import __version__

            version = str(__version__)
    low, high = SUPPORTED_SDK_RANGE
    parsed = _parse_version(version)
    if not (low <= parsed < high):
        raise UnsupportedSDKVersionError(
            f"{SDK_DISTRIBUTION} {version} is not supported by durable-semaphore "
            f"(supported: >={low[0]}.{low[1]},<{high[0]})"
        )
    return version


# -- configs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapConfig(_sdk_config.MapConfig[T], Generic[T]):
    """The SDK's ``MapConfig`` plus ``limiter``: None (SDK behaviour), ``"dynamodb"`` (lease per
    branch, limit ``max_concurrency``, scoped to this map of this execution) or a
    :class:`DynamoDBLimiter` (a named limit shared across executions)."""

    limiter: LimiterSpec = None

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        validate_limiter_spec(self.limiter, self.max_concurrency)


@dataclass(frozen=True)
class ParallelConfig(_sdk_config.ParallelConfig):
    """The SDK's ``ParallelConfig`` plus ``limiter`` (see :class:`MapConfig`)."""

    limiter: LimiterSpec = None

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        validate_limiter_spec(self.limiter, self.max_concurrency)


# -- per-call scope --------------------------------------------------------------------------

#: Keys held by the branch body running in this thread; used to refuse self-deadlocking nesting.
_HELD_KEYS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "durable_semaphore_held_keys", default=frozenset()
)


@dataclass
class _Scope:
    """Everything the branches of one gated map/parallel call share."""

    limiter: DynamoDBLimiter
    execution_arn: str
    operation_id: str
    key: str
    limit: int
    held_outside: frozenset[str]
    closed: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: A branch released a slot in this process: the map ran here, not only replayed, so its
    #: end is when the per-operation key's counter can go.
    released_here: bool = False

    @property
    def holder_prefix(self) -> str:
        return self.limiter.holder_prefix(self.execution_arn, self.operation_id)


def _execution_arn(ctx: DurableContext) -> str:
    execution_context = getattr(ctx, "execution_context", None)
    arn = getattr(execution_context, "durable_execution_arn", None)
    if not arn:
        arn = ctx.state.durable_execution_arn
    return str(arn)


#: Store errors worth another attempt later rather than failing the branch (one rule for the
#: SDK integration and ``hold()``; it lives with the store).
_is_transient = is_transient_error


def _is_terminal(exc: BaseException) -> bool:
    """Whether an exception leaving a branch body (or a map) ends it for good.

    Suspensions (``SuspendExecution`` and ``TimedSuspendExecution``, both BaseException), the
    SDK's background-thread error, and a retryable ``InvocationError`` (the invocation is retried
    with no FAIL checkpoint) are not terminal: the branch is still in flight and keeps its lease.
    ``OrphanedChildException`` (also BaseException) means the map finished without this branch,
    so its lease goes. Any other ``Exception`` is a real failure (retries exhausted included).
    """
    if isinstance(exc, InvocationError):
        return not exc.is_retryable()
    if isinstance(exc, Exception):
        return True
    return isinstance(exc, OrphanedChildException)


def _release_quietly(
    scope: _Scope,
    holder: str,
    *,
    waited: bool,
    token: str | None = None,
    report_lost: bool = True,
) -> None:
    """Release once the branch is terminal. With the lease's ``token``, a lease this branch
    no longer owns is never freed, and finding it gone is reported as a lost lease (unless
    ``report_lost`` is False: a replay repeating a release an earlier invocation made)."""
    try:
        result = scope.limiter.release(
            scope.key, holder, execution_arn=scope.execution_arn, waited=waited, token=token
        )
    except Exception:
        # A failed release leaks the slot only until the map's sweep, the reaper or expiry.
        logger.warning(
            "durable-semaphore: release of %s on %s failed", holder, scope.key, exc_info=True
        )
        return
    scope.released_here = True
    if report_lost and token is not None and not result.released and not result.left_queue:
        _lease_lost(scope, holder, "at release")


def _lease_lost(scope: _Scope, holder: str, when: str) -> None:
    """The branch ran (part of) its body without its slot: swept, reaped, expired, or released
    by an operator or an overlapping invocation. Nothing to undo, but it must be visible."""
    logger.warning(
        "durable-semaphore: %s no longer held its lease on %s %s (swept, reaped, expired or "
        "released by an operator or an overlapping invocation); its body ran without a slot",
        holder,
        scope.key,
        when,
    )
    observability.lease_lost(scope.key, holder)


def _sweep(scope: _Scope) -> None:
    """Free every lease and queue entry this map/parallel's branches still have (branches
    abandoned by early completion). Each one is attempted; failures are counted and logged.

    Queue entries go first: a slot released by this sweep must go to another map's waiter,
    never to a branch of this map, which will not run again to use (or release) it. A second
    pass catches entries that branches still running their first check created meanwhile.
    """
    scope.closed.set()
    failed = attempted = 0
    for _ in range(2):
        try:
            entries = scope.limiter.semaphore.entries(scope.key, prefix=scope.holder_prefix)
        except Exception:
            logger.warning("durable-semaphore: sweep of %s failed", scope.key, exc_info=True)
            return
        if not entries:
            break
        for entry in sorted(entries, key=lambda e: e.holds_slot):
            attempted += 1
            try:
                scope.limiter.release(
                    scope.key,
                    entry.holder,
                    execution_arn=scope.execution_arn,
                    waited=entry.holds_slot,  # a queued entry just leaves: no queue read
                )
            except Exception:
                failed += 1
                logger.warning(
                    "durable-semaphore: sweep could not release %s on %s",
                    entry.holder,
                    scope.key,
                    exc_info=True,
                )
    if failed:
        logger.warning(
            "durable-semaphore: sweep of %s failed for %d of %d entries",
            scope.key,
            failed,
            attempted,
        )
    elif not scope.limiter.is_named and scope.released_here:
        # The map's own key is done with: drop its counter, so finished maps leave nothing
        # behind (one conditional request per map that ran here, none on later replays).
        try:
            scope.limiter.semaphore.forget_if_idle(scope.key)
        except Exception:
            logger.warning("durable-semaphore: could not drop %s", scope.key, exc_info=True)


def _attempt(
    scope: _Scope,
    holder: str,
    state: dict[str, Any],
    *,
    callback_ids: tuple[str, ...] = (),
    local_wait: bool = False,
) -> dict[str, Any]:
    """One acquire-or-queue check; returns the next checkpointable state.

    State keys: ``held``, ``position`` (queue number while waiting), ``queued`` (ever waited,
    which predicts waiters at release), ``polls``, ``first_at`` (the first check's time, so the
    wait is measured across invocations), ``expires_at`` once held.
    """
    limiter = scope.limiter
    sem = limiter.semaphore
    polls = int(state.get("polls", 0)) + 1
    first_at = float(state.get("first_at") or sem.now())
    out: dict[str, Any] = {
        "held": False,
        "polls": polls,
        "first_at": first_at,
        "queued": bool(state.get("queued")),
        "position": state.get("position"),
    }
    arn = scope.execution_arn
    try:
        with limiter.signals.waiting(arn, scope.key, holder) as woken:
            result = limiter.acquire(
                scope.key,
                holder,
                scope.limit,
                execution_arn=arn,
                position=out["position"],
                callback_id=callback_ids[0] if callback_ids else None,
                spare_callback_ids=callback_ids[1:],
            )
            if (
                result.queued
                and local_wait
                and limiter.local_wait_seconds > 0
                and limiter.signals.busy(arn, scope.key)
            ):
                woken.wait(limiter.local_wait_seconds)
        if result.queued and woken.is_set():
            # A branch of this execution handed us its slot while we waited in-thread.
            result = limiter.acquire(
                scope.key, holder, scope.limit, execution_arn=arn, position=result.position
            )
    except Exception as exc:
        if not _is_transient(exc):
            raise
        logger.warning("durable-semaphore: acquire on %s failed, will retry: %r", scope.key, exc)
        out["error"] = type(exc).__name__
        return out
    if scope.closed.is_set() and (result.lease is not None or result.queued):
        # The map already returned (this branch was orphaned by early completion): give the
        # slot or the queue place straight back and stop waiting for good; the branch's next
        # checkpoint is refused anyway.
        _release_quietly(scope, holder, waited=result.lease is not None)
        out["orphaned"] = True
        return out
    if result.lease is None:
        out["position"] = result.position
        out["queued"] = out["queued"] or result.queued
        return out
    observability.lease_waited(scope.key, holder, max(0.0, sem.now() - first_at))
    out.update(
        held=True, position=None, expires_at=result.lease.expires_at, token=result.lease.token
    )
    return out


def _wait_by_polling(
    scope: _Scope, ctx: DurableContext, holder: str
) -> tuple[dict[str, Any], bool]:
    """One ``wait_for_condition``: check, then back off durably; the check may block briefly
    on an in-process hand-off from a branch of this execution."""
    ran = False

    def check(state: dict[str, Any], _check_ctx: Any) -> dict[str, Any]:
        nonlocal ran
        ran = True
        return _attempt(scope, holder, state, local_wait=True)

    def wait_strategy(state: dict[str, Any], attempts_made: int) -> WaitForConditionDecision:
        if state.get("held") or state.get("orphaned"):
            return WaitForConditionDecision.stop_polling()
        return WaitForConditionDecision.continue_waiting(
            Duration(seconds=scope.limiter.backoff_delay(attempts_made))
        )

    state = ctx.wait_for_condition(
        check,
        config=WaitForConditionConfig(wait_strategy=wait_strategy, initial_state={"polls": 0}),
        name=ACQUIRE_OPERATION_NAME,
    )
    return dict(state), ran


def _wait_by_callback(
    scope: _Scope, ctx: DurableContext, holder: str
) -> tuple[dict[str, Any], bool]:
    """A step that acquires or queues; while queued, callbacks the releaser completes.

    Uncontended this is one durable operation, like the polling route. A wait round creates a
    *ladder* of callbacks whose timeouts are 1, 2, ... ``wake_callbacks`` times
    ``wake_timeout_seconds`` and records them in one check-in step (which also finds the slot
    already handed over, if the releaser was quicker). The branch waits on them in order; a
    releaser wakes the first that has not timed out. So a lost wake-up still ends within one
    timeout (when the next callback's wait begins, the execution is invoked and a completion
    it missed is seen), while the queue entry is written once per ladder, not per timeout.
    """
    ran = False
    limiter = scope.limiter

    def step_of(state: dict[str, Any], callback_ids: tuple[str, ...]) -> Callable[[Any], Any]:
        def run(_step_ctx: Any) -> dict[str, Any]:
            nonlocal ran
            ran = True
            return _attempt(scope, holder, state, callback_ids=callback_ids)

        return run

    state: dict[str, Any] = ctx.step(step_of({"polls": 0}, ()), name=ACQUIRE_OPERATION_NAME)
    rounds = 0
    while not state.get("held") and not state.get("orphaned"):
        rounds += 1
        if state.get("position") is None:
            # A transient store error: wait durably, then try again.
            ctx.wait(Duration(seconds=limiter.backoff_delay(rounds)))
            state = ctx.step(step_of(state, ()), name=ACQUIRE_OPERATION_NAME)
            continue
        ladder: list[Any] = [
            ctx.create_callback(
                name=WAIT_OPERATION_NAME,
                config=CallbackConfig(
                    timeout=Duration(seconds=limiter.wake_timeout_seconds * (rung + 1))
                ),
            )
            for rung in range(limiter.wake_callbacks)
        ]
        ids = tuple(str(callback.callback_id) for callback in ladder)
        state = ctx.step(step_of(state, ids), name=CHECK_OPERATION_NAME)
        if state.get("held") or state.get("orphaned"):
            break
        woken = False
        payload: Any = None
        for callback in ladder:
            try:
                payload = callback.result()
            except CallbackError:
                continue  # timed out (maybe a lost wake-up): wait on the next one
            woken = True
            break
        if woken:
            # The releaser handed us the slot in the same transaction that freed it, and sent
            # the lease's fencing token with the wake-up.
            token = _token_of(payload)
            state = {**state, "held": True, "position": None, "woken": True, "token": token}
        # else: every callback timed out: check the store again and set up a new ladder.
    return state, ran


def _token_of(payload: Any) -> str | None:
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


def _run_gated(scope: _Scope, ctx: DurableContext, index: int, body: Callable[[], R]) -> R:
    """Acquire (durably), run ``body`` while holding the lease, release on a terminal outcome."""
    expected = _sdk_compat.branch_operation_id(scope.operation_id, index)
    actual = _sdk_compat.branch_context_id(ctx)
    if actual != expected:
        raise DurableSemaphoreError(
            f"branch {index} has operation id {actual!r}, expected {expected!r} for map/"
            f"parallel {scope.operation_id!r}; was the same context used from several threads "
            "at once? The limiter cannot tell which map this branch belongs to"
        )
    # The index (public: the SDK passes it to map functions) identifies the branch within its
    # map as well as its operation id does, and reads better in `durable-semaphore status`.
    holder = scope.limiter.holder_id(scope.execution_arn, scope.operation_id, str(index))
    limiter = scope.limiter
    if limiter.uses_callbacks:
        state, checked_here = _wait_by_callback(scope, ctx, holder)
    else:
        state, checked_here = _wait_by_polling(scope, ctx, holder)
    if state.get("orphaned"):
        return None  # type: ignore[return-value]  # the map returned without this branch
    if not checked_here:
        _renew_on_replay(scope, holder, state)

    waited = bool(state.get("queued"))
    lease_token = state.get("token")
    held = _HELD_KEYS.set(scope.held_outside | {scope.key})
    try:
        with limiter.signals.running(scope.execution_arn, scope.key):
            result = body()
    except BaseException as exc:
        if _is_terminal(exc):
            barrier = not isinstance(exc, OrphanedChildException)  # its map already returned
            _release_gated(scope, ctx, holder, waited, lease_token, barrier=barrier)
        raise
    finally:
        _HELD_KEYS.reset(held)
    _release_gated(scope, ctx, holder, waited, lease_token, barrier=True)
    return result


def _release_gated(
    scope: _Scope,
    ctx: DurableContext,
    holder: str,
    waited: bool,
    token: str | None,
    *,
    barrier: bool,
) -> None:
    """Release a finished branch's slot, behind a synchronous checkpoint.

    An invocation that a newer one superseded keeps running until its next checkpoint is
    refused. If it finished the branch body and released at once, it would free the slot
    while the newer invocation still runs the same branch. So the release waits for one
    checkpoint (a no-op step, ``durable-semaphore-release``): a superseded invocation is
    refused there and never releases; the live one releases after it. On replay the step is
    not checkpointed again, and the release repeats harmlessly (fenced by the token).
    ``DynamoDBLimiter(release_after_checkpoint=False)`` skips the step: one durable
    operation less per branch, and the window above stays open.
    """
    ran_here = True
    if barrier and scope.limiter.release_after_checkpoint:
        ran_here = False

        def checkpoint(_step_ctx: Any) -> None:
            nonlocal ran_here
            ran_here = True

        ctx.step(checkpoint, name=RELEASE_OPERATION_NAME)
    _release_quietly(scope, holder, waited=waited, token=token, report_lost=ran_here)


def _renew_on_replay(scope: _Scope, holder: str, state: dict[str, Any]) -> None:
    """A replayed branch extends its lease once less than half its lifetime is left.

    Renew never takes a new slot, so a lease lost meanwhile (swept, reaped, released by an
    operator) is not re-taken. Branch leases live long (a year by default), so this rarely
    costs a request: replays happen on every re-invocation of the execution.
    """
    sem = scope.limiter.semaphore
    expires_at = state.get("expires_at")
    ttl = scope.limiter.ttl_seconds
    if expires_at is not None and float(expires_at) - sem.now() > ttl / 2:
        return
    if expires_at is None and state.get("woken"):
        return  # handed over moments ago with a fresh lifetime
    try:
        if sem.renew(scope.key, holder, ttl, token=state.get("token")) is None:
            _lease_lost(scope, holder, "on replay")
    except Exception:
        logger.warning("durable-semaphore: renew of %s failed", holder, exc_info=True)


def _open_scope(ctx: DurableContext, config: MapConfig[Any] | ParallelConfig) -> _Scope | None:
    limiter = resolve_limiter(config.limiter)
    if limiter is None:
        return None
    arn = _execution_arn(ctx)
    operation_id = _sdk_compat.next_operation_id(ctx)
    key = limiter.scope_key(arn, operation_id)
    held = _HELD_KEYS.get()
    if key in held:
        raise NestedLimiterError(key)
    return _Scope(
        limiter=limiter,
        execution_arn=arn,
        operation_id=operation_id,
        key=key,
        limit=limiter.resolve_limit(config.max_concurrency),
        held_outside=held,
    )


def _call_and_sweep(scope: _Scope, call: Callable[[], R]) -> R:
    try:
        result = call()
    except BaseException as exc:
        if _is_terminal(exc):
            _sweep(scope)
        raise
    _sweep(scope)
    return result


# -- the hook --------------------------------------------------------------------------------

_install_lock = threading.Lock()


def is_installed() -> bool:
    """True once ``DurableContext.map`` and ``.parallel`` carry our wrappers."""
    return bool(getattr(DurableContext.map, _HOOK_SENTINEL, False)) and bool(
        getattr(DurableContext.parallel, _HOOK_SENTINEL, False)
    )


def _wrap_map(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def map_hook(self: DurableContext, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let the SDK report its own TypeError
        config = bound.arguments.get("config")
        if not isinstance(config, MapConfig) or config.limiter is None:
            return original(self, *args, **kwargs)  # untouched: identical history
        scope = _open_scope(self, config)
        if scope is None:  # pragma: no cover - limiter is not None here
            return original(self, *args, **kwargs)
        func = bound.arguments["func"]

        def gated_item(child: DurableContext, item: Any, index: int, items: Sequence[Any]) -> Any:
            return _run_gated(scope, child, index, lambda: func(child, item, index, items))

        # The SDK names an unnamed map after an attribute of its function; keep them all.
        bound.arguments["func"] = _sdk_compat.carry_attributes(gated_item, func)
        return _call_and_sweep(scope, lambda: original(*bound.args, **bound.kwargs))

    setattr(map_hook, _HOOK_SENTINEL, True)
    return map_hook


def _gate_branch(scope: _Scope, index: int, branch: Any) -> Any:
    if isinstance(branch, ParallelBranch):
        inner = branch.func

        def gated_named(child: DurableContext) -> Any:
            return _run_gated(scope, child, index, lambda: inner(child))

        return dataclasses.replace(branch, func=gated_named)

    def gated(child: DurableContext) -> Any:
        return _run_gated(scope, child, index, lambda: branch(child))

    return gated


def _wrap_parallel(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def parallel_hook(self: DurableContext, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)
        config = bound.arguments.get("config")
        if not isinstance(config, ParallelConfig) or config.limiter is None:
            return original(self, *args, **kwargs)
        scope = _open_scope(self, config)
        if scope is None:  # pragma: no cover
            return original(self, *args, **kwargs)
        functions = bound.arguments["functions"]
        bound.arguments["functions"] = [
            _gate_branch(scope, i, branch) for i, branch in enumerate(functions)
        ]
        return _call_and_sweep(scope, lambda: original(*bound.args, **bound.kwargs))

    setattr(parallel_hook, _HOOK_SENTINEL, True)
    return parallel_hook


def install() -> None:
    """Check the SDK version and the private reads we rely on, then wrap
    ``DurableContext.map``/``.parallel`` (idempotent)."""
    version = check_sdk_version()
    _sdk_compat.verify(f"{SDK_DISTRIBUTION} {version}")
    with _install_lock:
        if not getattr(DurableContext.map, _HOOK_SENTINEL, False):
            DurableContext.map = _wrap_map(DurableContext.map)  # type: ignore[method-assign]
        if not getattr(DurableContext.parallel, _HOOK_SENTINEL, False):
            DurableContext.parallel = _wrap_parallel(  # type: ignore[method-assign]
                DurableContext.parallel
            )
