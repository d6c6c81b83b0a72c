"""The testing 1.2.1 workaround keeps the runner's timer handlers out of a running invocation.

testing 1.2.1 runs a timer's handler (complete the wait or retry, queue an invocation) on a
worker thread, so one dispatched just before an invocation started completed operations while
it ran, unseen by it; the runner then refused its PENDING output. These tests drive the guard
with a stand-in executor (the real one needs testing 1.2.1, whose line runs the demo test
tests/sdk1/test_demo17.py): a handler waits for its execution's invocation to end, and only
for its own execution's. The control shows the probe sees a handler that runs inside.
"""

from __future__ import annotations

import threading
from typing import Any

from durable_semaphore.demo.local_runner import _TimersBetweenInvocations

ARN = "arn:execution:a"
OTHER = "arn:execution:b"
PATIENCE = 0.3  # how long a handler is given to run while the invocation is held


class StandInExecutor:
    """The two handler methods the guard wraps; each records what ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []
        self.done = threading.Event()

    def _on_wait_succeeded(self, execution_arn: str, operation_id: str) -> None:
        self.ran.append(("wait", operation_id))
        self.done.set()

    def _on_retry_ready(self, execution_arn: str, operation_id: str) -> None:
        self.ran.append(("retry", operation_id))
        self.done.set()


def fire(handler: Any, arn: str, operation_id: str) -> threading.Thread:
    """Call a handler from a worker thread, as the runner's ``asyncio.to_thread`` does."""
    thread = threading.Thread(target=handler, args=(arn, operation_id), daemon=True)
    thread.start()
    return thread


def ran_during_invocation(
    executor: StandInExecutor, guard: _TimersBetweenInvocations | None
) -> bool:
    """Whether a wait handler fired during an invocation completes before that invocation ends."""
    held = guard.invocation(ARN) if guard is not None else threading.Lock()
    with held:
        thread = fire(executor._on_wait_succeeded, ARN, "w1")
        inside = executor.done.wait(PATIENCE)
    thread.join(5)
    assert not thread.is_alive()
    assert executor.ran == [("wait", "w1")]  # it always runs, the question is when
    return inside


def test_a_timer_handler_waits_for_the_running_invocation_of_its_execution() -> None:
    executor = StandInExecutor()
    guard = _TimersBetweenInvocations(executor)
    assert ran_during_invocation(executor, guard) is False
    assert guard.deferred == 1


def test_control_an_unguarded_handler_completes_inside_the_invocation() -> None:
    executor = StandInExecutor()
    assert ran_during_invocation(executor, None) is True


def test_retry_handlers_are_guarded_too() -> None:
    executor = StandInExecutor()
    guard = _TimersBetweenInvocations(executor)
    with guard.invocation(ARN):
        thread = fire(executor._on_retry_ready, ARN, "s1")
        assert executor.done.wait(PATIENCE) is False
    thread.join(5)
    assert executor.ran == [("retry", "s1")] and guard.deferred == 1


def test_another_executions_handler_is_not_held_up() -> None:
    executor = StandInExecutor()
    guard = _TimersBetweenInvocations(executor)
    with guard.invocation(ARN):
        thread = fire(executor._on_wait_succeeded, OTHER, "w2")
        assert executor.done.wait(5) is True
    thread.join(5)
    assert guard.deferred == 0


def test_between_invocations_a_handler_runs_at_once() -> None:
    executor = StandInExecutor()
    guard = _TimersBetweenInvocations(executor)
    with guard.invocation(ARN):
        pass
    executor._on_wait_succeeded(ARN, "w3")  # no invocation running: no wait, no deferral
    assert executor.ran == [("wait", "w3")] and guard.deferred == 0
