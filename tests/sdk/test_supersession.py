"""Two invocations of one execution running the same branch at once (issue 9): the newer one
supersedes the older, whose checkpoints the service then refuses.

The branch lifecycle (``branch.run_gated``) runs for real against DynamoDB Local, twice, in two
threads, with the same execution ARN and map operation id (so the same key, holder id and
derived token). A small stand-in for the SDK plays the part the SDK plays around a branch
function: it checkpoints the branch's SUCCEED once the function returns, or refuses that
checkpoint for the superseded invocation (``SuspendExecution``). The release waits for that
checkpoint, so only the live invocation frees the slot. The observer is independent of the
limiter: each body records when it runs, and a third party tries to take the slot while the
live body still runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aws_durable_execution_sdk_python.exceptions import SuspendExecution

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore, _sdk_compat
from durable_semaphore.branch import Scope, Slot, release_queue, run_gated
from durable_semaphore.sdk import _call_and_sweep
from durable_semaphore.waiting import replay_token

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/e/1"
MAP_OP = "m" * 64
BRANCH_OP = _sdk_compat.branch_operation_id(MAP_OP, 0)


class _State:
    """The execution state one invocation sees: operations by id, as the SDK keeps them."""

    def __init__(self) -> None:
        self._operations: dict[str, Any] = {}

    @property
    def operations(self) -> dict[str, Any]:
        return dict(self._operations)

    def get_checkpoint_result(self, operation_id: str) -> Any:
        return SimpleNamespace(operation=self._operations.get(operation_id))

    def succeed(self, operation_id: str, parent_id: str | None = None) -> None:
        self._operations[operation_id] = SimpleNamespace(
            operation_type="CONTEXT",
            name=None,
            status="SUCCEEDED",
            start_timestamp=None,
            parent_id=parent_id,
        )


class _Invocation:
    """What ``run_gated`` needs of a branch context in the uncontended case: its state and
    the id of its next operation (nothing recorded yet)."""

    def __init__(self) -> None:
        self.state = _State()
        self._step_id_prefix = BRANCH_OP

    def _peek_next_operation_id(self) -> str:
        return BRANCH_OP + "-first-op"

    def run_branch(self, scope: Scope, body: Callable[[], str], *, refused: bool) -> str:
        """Run the branch as the SDK does: the function, then its SUCCEED checkpoint."""
        result = run_gated([scope], self, 0, body)  # type: ignore[arg-type]
        if refused:
            raise SuspendExecution("checkpoint refused: a newer invocation took over")
        self.state.succeed(BRANCH_OP, parent_id=MAP_OP)
        return result


def _scope(limiter: DynamoDBLimiter, invocation: _Invocation) -> Scope:
    return Scope(
        limiter=limiter,
        execution_arn=ARN,
        operation_id=MAP_OP,
        keys=("payments",),
        limit=1,
        held_outside=frozenset(),
        state=invocation.state,
    )


def _superseded_then_live(
    semaphore: DynamoDBSemaphore, *, refused_at: str, unproven_release: bool = False
) -> dict[str, Any]:
    """The newer invocation is inside the branch body; the older one runs the same branch and
    is refused at ``refused_at``: an operation of the body (the body raises
    ``SuspendExecution``, as the SDK does) or the branch's own SUCCEED checkpoint after the
    body. ``unproven_release`` is the control: the older invocation releases as soon as its
    body returns, without waiting for that checkpoint."""
    limiter = DynamoDBLimiter(name="payments", limit=1, semaphore=semaphore, waker=None)
    newer, older = _Invocation(), _Invocation()
    live_scope, old_scope = _scope(limiter, newer), _scope(limiter, older)
    live_inside = threading.Event()
    live_may_finish = threading.Event()
    seen: dict[str, Any] = {}

    def live_body() -> str:
        live_inside.set()
        live_may_finish.wait(30)
        return "live"

    def older_body() -> str:
        if refused_at == "body":
            raise SuspendExecution("the body's own checkpoint was refused")
        if unproven_release:
            Slot(old_scope, "payments").release_now(
                limiter.holder_id(ARN, MAP_OP, "0"),
                waited=False,
                token=replay_token(limiter.holder_id(ARN, MAP_OP, "0")),
            )
        return "superseded"

    thread = threading.Thread(
        target=lambda: seen.setdefault(
            "live", newer.run_branch(live_scope, live_body, refused=False)
        )
    )
    thread.start()
    assert live_inside.wait(30)
    try:
        older.run_branch(old_scope, older_body, refused=True)
    except SuspendExecution:
        seen["older_suspended"] = True
    release_queue.settle(old_scope)  # the older invocation's map ends (suspended)
    # The live body still runs: can anyone else take the slot now?
    intruder = semaphore.try_acquire("payments", "intruder", 1)
    seen["intruder_admitted_while_live_ran"] = intruder is not None
    if intruder is not None:
        semaphore.release("payments", "intruder", token=intruder.token)
    live_may_finish.set()
    thread.join(30)
    release_queue.settle(live_scope)  # the live map ends: its ready release has run
    after = semaphore.try_acquire("payments", "after", 1)
    seen["admitted_after_live_finished"] = after is not None
    return seen


@pytest.mark.parametrize("refused_at", ["body", "checkpoint"])
def test_a_superseded_invocation_never_frees_the_slot_the_live_one_uses(
    semaphore: DynamoDBSemaphore, refused_at: str
) -> None:
    seen = _superseded_then_live(semaphore, refused_at=refused_at)
    assert seen["older_suspended"] is True
    assert seen["intruder_admitted_while_live_ran"] is False
    assert seen["live"] == "live"
    assert seen["admitted_after_live_finished"] is True  # held exactly until the live end


def test_control_a_release_before_the_branch_checkpoint_over_admits(
    semaphore: DynamoDBSemaphore,
) -> None:
    """Both invocations hold the same generation (same holder, same derived token), so only
    the wait for the checkpoint keeps the superseded one from freeing the live slot."""
    seen = _superseded_then_live(semaphore, refused_at="checkpoint", unproven_release=True)
    assert seen["intruder_admitted_while_live_ran"] is True


def test_a_superseded_map_does_not_sweep(semaphore: DynamoDBSemaphore) -> None:
    """A refused checkpoint ends the superseded invocation with SuspendExecution, which is
    not terminal: its map's sweep must not run and free the live invocation's leases."""
    limiter = DynamoDBLimiter(name="payments", limit=1, semaphore=semaphore, waker=None)
    invocation = _Invocation()
    scope = _scope(limiter, invocation)
    holder = limiter.holder_id(ARN, MAP_OP, "0")
    lease = semaphore.try_acquire("payments", holder, 1)
    assert lease is not None

    def refused() -> None:
        raise SuspendExecution("checkpoint refused")

    with pytest.raises(SuspendExecution):
        _call_and_sweep(invocation, [scope], refused)  # type: ignore[arg-type]
    assert [h.holder for h in semaphore.holders("payments")] == [holder]
    # Control: a map that really ended sweeps what its branches left.
    _call_and_sweep(invocation, [scope], lambda: None)  # type: ignore[arg-type]
    assert semaphore.holders("payments") == []
