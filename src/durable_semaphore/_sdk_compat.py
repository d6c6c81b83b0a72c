"""Every read of the durable execution SDK's private names, in one place.

The limiter needs two facts that the SDK has no public API for:

1. the operation id that a map or parallel is about to take: the per-operation lease key and
   the holder-id prefix that the end-of-map sweep looks for;
2. which map a branch context belongs to: a branch must never be limited on another map's key.

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
import types
from collections.abc import Callable
from typing import Any, TypeVar

from aws_durable_execution_sdk_python.context import DurableContext

from durable_semaphore.errors import UnsupportedSDKVersionError

__all__ = [
    "branch_context_id",
    "branch_operation_id",
    "carry_attributes",
    "next_operation_id",
    "verify",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The private names this module reads, each checked by :func:`verify`.
PEEK_NEXT_OPERATION_ID = "_peek_next_operation_id"
STEP_ID_PREFIX = "_step_id_prefix"


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
