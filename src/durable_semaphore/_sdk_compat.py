"""Every read of the durable execution SDK's private names, in one place.

The limiter needs facts that the SDK has no public API for:

1. the operation id that a map or parallel is about to take: the per-operation lease key and
   the holder-id prefix that the end-of-map sweep looks for;
2. which map a branch context belongs to: a branch must never be limited on another map's key;
3. what the history holds at a branch's next position (:func:`next_operation`): an
   uncontended gate records nothing, so a replay must tell from the history whether the first
   run waited there;
4. whether an operation has checkpointed a terminal state (:func:`operation_terminal`): a
   branch's own SUCCEED or FAIL checkpoint proves its invocation was still the live one, so
   its slot is released only after it;
5. a fresh view of the execution's operations while an invocation runs (:func:`refresh`): a
   waiter whose invocation is alive notices its wake-up in-process instead of suspending.

Everything else uses public API. A branch's holder id ends with its index, which the SDK passes
to map functions; parallel branches are numbered in list order, as the SDK numbers them. The
SDK's naming of a map after its function survives the wrapping through
:func:`functools.update_wrapper`.

:func:`verify` runs at install time (importing ``durable_semaphore``). It refuses an SDK on
which a read is missing or behaves differently, because limiting the wrong key would fail
silently. ``tests/lines/test_sdk_contract.py`` checks the same reads against real executions
on every SDK line in the test matrix.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_durable_execution_sdk_python.context import DurableContext

from durable_semaphore.errors import UnsupportedSDKVersionError

__all__ = [
    "RecordedOperation",
    "branch_context_id",
    "branch_operation_id",
    "can_refresh",
    "carry_attributes",
    "next_operation",
    "next_operation_id",
    "operation_terminal",
    "progress_since",
    "refresh",
    "rewind_to",
    "subtree_terminal",
    "verify",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The private names this module reads, each checked by :func:`verify`.
PEEK_NEXT_OPERATION_ID = "_peek_next_operation_id"
STEP_ID_PREFIX = "_step_id_prefix"
GET_CHECKPOINT_RESULT = "get_checkpoint_result"
SCHEDULE_REFRESH = "schedule_refresh"
STEP_COUNTER = "_step_counter"

#: Operation statuses after which nothing more happens to an operation.
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "STOPPED"})


@dataclass(frozen=True, slots=True)
class RecordedOperation:
    """What the history holds at one operation id: enough to recognise our own operations."""

    operation_id: str
    kind: str
    name: str | None
    status: str
    #: When the operation started (epoch seconds), if the SDK reports it.
    started_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", getattr(value, "name", value)))


def _checkpoint(state: Any, operation_id: str) -> Any:
    """``state.get_checkpoint_result(id)`` as a pure read (SDK 3 would otherwise run a
    plugin's end hook, which belongs to the read that consumes the result)."""
    getter = getattr(state, GET_CHECKPOINT_RESULT)
    if _takes_claim_flag(getattr(getter, "__func__", getter)):
        return getter(operation_id, claim_end_hook=False)
    return getter(operation_id)


@functools.cache
def _takes_claim_flag(function: Any) -> bool:
    try:
        return "claim_end_hook" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def recorded(state: Any, operation_id: str) -> RecordedOperation | None:
    """The operation the history holds under ``operation_id``, or None."""
    checkpoint = _checkpoint(state, operation_id)
    operation = getattr(checkpoint, "operation", None)
    if operation is None:
        return None
    started = getattr(operation, "start_timestamp", None)
    return RecordedOperation(
        operation_id=operation_id,
        kind=_enum_name(getattr(operation, "operation_type", "")),
        name=getattr(operation, "name", None),
        status=_enum_name(getattr(operation, "status", "")),
        started_at=float(started.timestamp()) if started is not None else None,
    )


def next_operation(ctx: DurableContext) -> RecordedOperation | None:
    """What the history holds at the position of ``ctx``'s next operation (None: nothing yet).

    Why: an uncontended gate records no operation, so on replay the branch must tell from the
    history whether its first run waited (then our wait operation sits at this position) or
    went straight on (then the body's first operation does, or nothing yet). Private read:
    ``DurableContext._peek_next_operation_id()`` (as :func:`next_operation_id`); the lookup
    itself is ``ExecutionState.get_checkpoint_result``, which every operation uses.
    """
    return recorded(ctx.state, next_operation_id(ctx))


def operation_terminal(state: Any, operation_id: str) -> bool:
    """Whether ``operation_id`` has checkpointed a terminal status in this invocation's view.

    Why: a branch's slot is released only after the SDK's own SUCCEED/FAIL checkpoint of the
    branch was accepted, which proves that this invocation was not superseded; that costs no
    operation of ours. The SDK writes that checkpoint synchronously, after the branch function
    returned, so the release waits for it here.
    """
    found = recorded(state, operation_id)
    return found is not None and found.terminal


def can_refresh(ctx: DurableContext) -> bool:
    """Whether this SDK can refresh the execution's operations during an invocation (2.0+)."""
    return callable(getattr(ctx.state, SCHEDULE_REFRESH, None))


def refresh(ctx: DurableContext, *, at: float | None = None) -> bool:
    """Fetch the execution's operations now (an empty checkpoint; no durable operation).

    Why: a wake-up (a callback completed by a releaser in another execution) is seen by a
    running invocation only through a checkpoint response. A waiter that stays in-process
    asks for one instead of suspending. ``at`` (epoch seconds) lets waiters of one execution
    share a single request: the SDK sends every refresh due at the same time together.
    Private call: ``ExecutionState.schedule_refresh`` (SDK 2.0+, which the executor itself
    uses to resume timed waits in-process). False when the SDK has none.
    """
    schedule = getattr(ctx.state, SCHEDULE_REFRESH, None)
    if not callable(schedule):
        return False
    handle = schedule(time.time() if at is None else at)
    handle.wait()
    return True


def next_operation_id(ctx: DurableContext) -> str:
    """The operation id that the next operation on ``ctx`` (the map or parallel about to be
    called) will take, read before the SDK allocates it.

    Why: the lease key (``<ARN>#<op id>``) and the holder prefix must be known before any
    branch runs, and they must be the same on every replay and in overlapping invocations. The
    operation id is both; a counter of our own would not survive replays. Private read:
    ``DurableContext._peek_next_operation_id()``. It would be replaced by a public id for the
    map on the branch context (or in an admission hook on ``MapConfig``).
    """
    return str(getattr(ctx, PEEK_NEXT_OPERATION_ID)())


def branch_context_id(ctx: DurableContext) -> str | None:
    """The operation id of the map branch that ``ctx`` is the context of.

    Why: it shows whether the map id from :func:`next_operation_id` is really this branch's
    map. It is not if a context was used from several threads at once and another operation
    took that id first. Private read: ``DurableContext._step_id_prefix``, the prefix of the
    branch's own operation ids (the branch's id in both NESTED and FLAT nesting). It would be
    replaced by a public ``operation_id`` (and parent map id) on the child context.
    """
    prefix = getattr(ctx, STEP_ID_PREFIX)
    return prefix if isinstance(prefix, str) else None


def branch_operation_id(map_operation_id: str, index: int) -> str:
    """The operation id that the SDK gives branch ``index`` of the map or parallel
    ``map_operation_id``.

    Why: it is compared with :func:`branch_context_id` to check that a branch belongs to the
    map whose key it takes. This is the SDK's derivation (SDK 1.7 to 3.x): a child's id is the
    first 64 hex digits of ``blake2b("<parent id>-<position>")``, and a branch's position is
    its index. :func:`verify` checks it against the SDK at install time, and the contract test
    checks it against the ids in real execution histories. It would be replaced by the same
    public ids as :func:`branch_context_id`.
    """
    return hashlib.blake2b(f"{map_operation_id}-{index}".encode()).hexdigest()[:64]


def carry_attributes(wrapper: F, func: Callable[..., Any]) -> F:
    """Make ``wrapper`` (a gated branch function) carry ``func``'s name and attributes.

    Why: with no ``name=``, the SDK names a map after an attribute of its function
    (``_original_name``, set by its decorators), so the gated function must carry it, or the
    history would change. Public API: :func:`functools.update_wrapper` copies the function's
    attributes, whatever the SDK reads, so no private name is read here.
    """
    functools.update_wrapper(wrapper, func)
    return wrapper


def subtree_terminal(state: Any, root_id: str) -> dict[str, bool]:
    """Whether each operation under ``root_id`` (a map or parallel) is terminal, by id.

    Why: together with :func:`progress_since` it tells whether an invocation saw an operation
    of a suspended branch complete (a checkpoint response carried it after the branch read
    it) without acting on it. Reads ``ExecutionState.operations``, the SDK's own snapshot of
    the execution's operations (a copy).
    """
    return {op_id: terminal for op_id, _branch, terminal in _under(state, root_id)}


def progress_since(state: Any, root_id: str, before: dict[str, bool]) -> int:
    """Operations under ``root_id`` that turned terminal since ``before`` while the branch
    they belong to is not terminal: a suspended branch that could go on if driven again."""
    under = _under(state, root_id)
    terminal = {op_id: done for op_id, _branch, done in under}
    return sum(
        1
        for op_id, branch, done in under
        if done and not before.get(op_id) and branch != op_id and not terminal.get(branch)
    )


def _under(state: Any, root_id: str) -> list[tuple[str, str, bool]]:
    """(operation id, the child of ``root_id`` it lies under, terminal?) for every operation
    under ``root_id``."""
    operations: dict[str, Any] = dict(getattr(state, "operations", {}) or {})
    parents = {op_id: getattr(op, "parent_id", None) for op_id, op in operations.items()}
    out: list[tuple[str, str, bool]] = []
    for op_id, op in operations.items():
        branch = _branch_of(op_id, root_id, parents)
        if branch is not None:
            out.append((op_id, branch, _enum_name(getattr(op, "status", "")) in _TERMINAL))
    return out


def _branch_of(op_id: str, root_id: str, parents: dict[str, str | None]) -> str | None:
    """The child of ``root_id`` that ``op_id`` lies under (itself, if it is one), or None."""
    current: str | None = op_id
    for _ in range(64):  # nesting depth; a cycle would be a corrupt history
        if current is None:
            return None
        parent = parents.get(current)
        if parent == root_id:
            return current
        current = parent
    return None


def rewind_to(ctx: DurableContext, operation_id: str) -> bool:
    """Make ``operation_id`` (the operation ``ctx`` started last) ``ctx``'s next operation
    again, so the same map can be driven once more in this invocation. False (and nothing
    changed) when it is not the last one.

    Why: a completion (a waiter's wake-up, a branch's invoke result) can arrive in a
    checkpoint response after its branch suspended and before its map did, for instance in a
    waiting branch's refresh. The invocation then has seen it without acting on it, and the
    service does not invoke the execution again for it. Driving the map again replays the
    finished branches from their checkpoints and resumes that branch now. Private name:
    ``DurableContext._step_counter`` (an ``OrderedCounter``; its ``decrement`` is public). It
    would be replaced by the executor resuming a branch whose callback completed, as it
    resumes timed waits.
    """
    counter = getattr(ctx, STEP_COUNTER, None)
    if counter is None or not callable(getattr(counter, "decrement", None)):
        return False
    counter.decrement()
    if next_operation_id(ctx) == operation_id:
        return True
    counter.increment()
    return False


def verify(sdk: str) -> None:
    """Refuse to install on an SDK where a private read is missing or changed meaning.

    ``sdk`` names the installed SDK and its version, for the error message. The check builds a
    throwaway context tree (root, map, branch) with the SDK's public constructor and
    ``create_child_context``; nothing is checkpointed and nothing is sent anywhere.
    """

    def refuse(problem: str) -> UnsupportedSDKVersionError:
        return UnsupportedSDKVersionError(
            f"{sdk} is not supported by durable-semaphore: {problem}. The limiter relies on it "
            "to know which map a branch belongs to, and without it could limit the wrong key; "
            "install a tested SDK version (docs/sdk-integration.md lists them)"
        )

    if not callable(getattr(DurableContext, PEEK_NEXT_OPERATION_ID, None)):
        raise refuse(f"DurableContext.{PEEK_NEXT_OPERATION_ID} is missing")
    from aws_durable_execution_sdk_python.state import ExecutionState

    if not callable(getattr(ExecutionState, GET_CHECKPOINT_RESULT, None)):
        raise refuse(f"ExecutionState.{GET_CHECKPOINT_RESULT} is missing")
    map_id, index = "durable-semaphore-probe", 1
    expected = branch_operation_id(map_id, index)
    # Stand-ins with the one attribute the constructor reads: no execution state is needed.
    execution: Any = types.SimpleNamespace(durable_execution_arn="arn:durable-semaphore:probe")
    try:
        root = DurableContext(state=execution, execution_context=execution)
        map_context = root.create_child_context(map_id)
        branch = map_context.create_child_context(expected)
    except Exception as exc:
        raise refuse(f"building a probe context failed ({type(exc).__name__}: {exc})") from exc
    if not hasattr(branch, STEP_ID_PREFIX):
        raise refuse(f"DurableContext.{STEP_ID_PREFIX} is missing")
    if branch_context_id(branch) != expected:
        raise refuse(
            f"DurableContext.{STEP_ID_PREFIX} no longer holds a child context's operation id"
        )
    try:
        peeked = next_operation_id(map_context)
    except Exception as exc:
        raise refuse(
            f"DurableContext.{PEEK_NEXT_OPERATION_ID}() failed ({type(exc).__name__}: {exc})"
        ) from exc
    # A fresh context's next operation is its first child, position 1: the same derivation
    # the SDK uses for branch ``index`` of a map.
    if peeked != expected:
        raise refuse(
            f"DurableContext.{PEEK_NEXT_OPERATION_ID}() returned {peeked!r}, not the operation "
            f"id derivation durable-semaphore expects ({expected!r})"
        )
