"""Two invocations of one execution running the same branch at once (issue 9): the newer one
supersedes the older, whose checkpoints the service then refuses.

The branch gate (``sdk._run_gated``) runs for real against DynamoDB Local, twice, in two
threads, with the same execution ARN and map operation id (so the same key and holder id). A
small stand-in for ``DurableContext`` records durable steps and refuses the superseded
invocation's checkpoints from a chosen point on, as the SDK does (``SuspendExecution``).
The observer is independent of the limiter: each body records when it runs, and a third
party tries to take the slot while the live body still runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python.exceptions import SuspendExecution

import durable_semaphore.sdk as sdk
from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore
from durable_semaphore.sdk import (
    ACQUIRE_OPERATION_NAME,
    RELEASE_OPERATION_NAME,
    _call_and_sweep,
    _run_gated,
    _Scope,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/e/1"
MAP_OP = "m" * 64


class _Invocation:
    """What ``_run_gated`` needs of a branch context: steps, and a wait_for_condition that
    polls in place. ``refuse_from`` names the first step whose checkpoint is refused."""

    def __init__(self, refuse_from: str | None = None) -> None:
        self.refuse_from = refuse_from
        self.steps: list[str] = []

    def _checkpoint(self, name: str) -> None:
        if self.refuse_from is not None and name == self.refuse_from:
            raise SuspendExecution("checkpoint refused: a newer invocation took over")
        self.steps.append(name)

    def step(self, func: Callable[[Any], Any], name: str) -> Any:
        result = func(None)
        self._checkpoint(name)  # the SDK checkpoints a step's result synchronously
        return result

    def wait_for_condition(self, check: Callable[..., Any], config: Any, name: str) -> Any:
        state = config.initial_state
        for attempt in range(1, 100):
            state = check(state, None)
            self._checkpoint(name)
            if config.wait_strategy(state, attempt).should_continue is False:
                return state
        raise AssertionError("never acquired")


def _scope(limiter: DynamoDBLimiter) -> _Scope:
    return _Scope(
        limiter=limiter,
        execution_arn=ARN,
        operation_id=MAP_OP,
        key="payments",
        limit=1,
        held_outside=frozenset(),
    )


def _superseded_then_live(
    semaphore: DynamoDBSemaphore, *, barrier: bool, refused_at: str = "release"
) -> dict[str, Any]:
    """The newer invocation is inside the branch body; the older one runs the same branch and
    has a checkpoint refused at ``refused_at``: its acquire step, an operation of the body
    (the body raises ``SuspendExecution``, as the SDK does), or the release checkpoint after
    the body. Returns what the observer saw."""
    limiter = DynamoDBLimiter(
        name="payments",
        limit=1,
        semaphore=semaphore,
        waker=None,
        release_after_checkpoint=barrier,
    )
    scope = _scope(limiter)
    live_inside = threading.Event()
    live_may_finish = threading.Event()
    seen: dict[str, Any] = {}

    def live_body() -> str:
        live_inside.set()
        live_may_finish.wait(30)
        return "live"

    refuse_step = {"acquire": ACQUIRE_OPERATION_NAME, "release": RELEASE_OPERATION_NAME}
    older = _Invocation(refuse_from=refuse_step.get(refused_at))

    def older_body() -> str:
        if refused_at == "body":
            raise SuspendExecution("the body's own checkpoint was refused")
        return "superseded"

    newer = _Invocation()
    holder_ok = sdk._sdk_compat.branch_operation_id(MAP_OP, 0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sdk._sdk_compat, "branch_context_id", lambda ctx: holder_ok)
        thread = threading.Thread(
            target=lambda: seen.setdefault("live", _run_gated(scope, newer, 0, live_body))  # type: ignore[arg-type]
        )
        thread.start()
        assert live_inside.wait(30)
        try:
            _run_gated(scope, older, 0, older_body)  # type: ignore[arg-type]
        except SuspendExecution:
            seen["older_suspended"] = True
        # The live body still runs: can anyone else take the slot now?
        intruder = semaphore.try_acquire("payments", "intruder", 1)
        seen["intruder_admitted_while_live_ran"] = intruder is not None
        if intruder is not None:
            semaphore.release("payments", "intruder", token=intruder.token)
        live_may_finish.set()
        thread.join(30)
    after = semaphore.try_acquire("payments", "after", 1)
    seen["admitted_after_live_finished"] = after is not None
    seen["older_steps"] = older.steps
    seen["newer_steps"] = newer.steps
    return seen


@pytest.mark.parametrize("refused_at", ["acquire", "body", "release"])
def test_a_superseded_invocation_never_frees_the_slot_the_live_one_uses(
    semaphore: DynamoDBSemaphore, refused_at: str
) -> None:
    seen = _superseded_then_live(semaphore, barrier=True, refused_at=refused_at)
    assert seen["older_suspended"] is True
    assert seen["intruder_admitted_while_live_ran"] is False
    assert seen["live"] == "live"
    assert seen["newer_steps"][-1] == RELEASE_OPERATION_NAME
    assert seen["admitted_after_live_finished"] is True  # held exactly until the live end


def test_control_without_the_release_checkpoint_the_superseded_release_over_admits(
    semaphore: DynamoDBSemaphore,
) -> None:
    seen = _superseded_then_live(semaphore, barrier=False)
    assert seen["intruder_admitted_while_live_ran"] is True


def test_a_superseded_map_does_not_sweep(semaphore: DynamoDBSemaphore) -> None:
    """A refused checkpoint ends the superseded invocation with SuspendExecution, which is
    not terminal: its map's sweep must not run and free the live invocation's leases."""
    limiter = DynamoDBLimiter(name="payments", limit=1, semaphore=semaphore, waker=None)
    scope = _scope(limiter)
    holder = limiter.holder_id(ARN, MAP_OP, "0")
    lease = semaphore.try_acquire("payments", holder, 1)
    assert lease is not None

    def refused() -> None:
        raise SuspendExecution("checkpoint refused")

    with pytest.raises(SuspendExecution):
        _call_and_sweep(scope, refused)
    assert [h.holder for h in semaphore.holders("payments")] == [holder]
    # Control: a map that really ended sweeps what its branches left.
    _call_and_sweep(scope, lambda: None)
    assert semaphore.holders("payments") == []
