"""Wall-clock budgets for blocking calls, whatever DynamoDB does.

A caller that promised to return by a time (``hold(timeout=...)``, a heartbeat that must know
of a loss before the lease ends) cannot rely on botocore's own timeouts: with the defaults a
refused connection is retried for about 25 s and a socket that never answers blocks for
minutes. So the call runs on a helper thread and the caller stops waiting at its deadline
(:func:`call_within`); meanwhile every HTTP attempt the call makes checks the same deadline
(:func:`guard` registers a botocore ``before-send`` hook) and none is sent past it, so the
abandoned call stops retrying too. A call may still be in flight at the deadline and be
applied later: ``on_late`` hears of its result so the caller can undo it.

Deadlines are :func:`time.monotonic` instants.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from durable_semaphore.errors import DeadlineExceededError

__all__ = ["budget", "call_within", "guard", "remaining", "sleep"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Budget:
    """One deadline, and the last failure a request met under it (to explain a time-out)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.last_error: BaseException | None = None


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "durable_semaphore_budget", default=None
)
_HOOK_ID = "durable-semaphore-deadline"


@contextlib.contextmanager
def budget(deadline: float | None) -> Iterator[None]:
    """Make ``deadline`` the deadline of every guarded request made in this context."""
    with _active(None if deadline is None else _Budget(deadline)):
        yield


@contextlib.contextmanager
def _active(state: _Budget | None) -> Iterator[None]:
    token = _BUDGET.set(state)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget (None: no budget)."""
    state = _BUDGET.get()
    return None if state is None else state.deadline - time.monotonic()


def sleep(seconds: float) -> None:
    """Sleep, but never past the current budget's deadline (a retry pause would overrun it)."""
    left = remaining()
    time.sleep(max(0.0, seconds if left is None else min(seconds, left)))


def _before_send(request: Any = None, **_: Any) -> None:
    state = _BUDGET.get()
    if state is not None and state.deadline <= time.monotonic():
        url = getattr(request, "url", "DynamoDB")
        raise DeadlineExceededError(
            f"not sending a request to {url}: the time budget is used up"
        ) from state.last_error


def _note_failure(
    response: Any = None, caught_exception: BaseException | None = None, **_: Any
) -> None:
    """Remember what the last attempt met (botocore asks whether to retry after each one)."""
    state = _BUDGET.get()
    if state is None:
        return
    if caught_exception is not None:
        state.last_error = caught_exception
        return
    if response is not None:
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code")
        if code and getattr(http, "status_code", 200) >= 400:
            state.last_error = ClientError(parsed, "request")


def guard(client: Any) -> None:
    """Make every HTTP attempt of ``client`` (botocore retries included) check the budget.

    Idempotent; outside a :func:`budget` the hooks do nothing.
    """
    client.meta.events.register("before-send.dynamodb", _before_send, unique_id=_HOOK_ID)
    client.meta.events.register(
        "needs-retry.dynamodb", _note_failure, unique_id=f"{_HOOK_ID}-failures"
    )


def call_within(
    deadline: float,
    call: Callable[[], T],
    *,
    what: str,
    on_late: Callable[[T], None] | None = None,
) -> T:
    """``call()`` under ``deadline``: its result, its error, or :class:`DeadlineExceededError`
    at the deadline while it is still running.

    The call runs on a daemon thread inside :func:`budget`, so its own retries stop at the
    deadline as well. If it was abandoned and returns later, ``on_late`` gets the result (an
    acquire DynamoDB applied after we gave up, say) on that thread.
    """
    context = contextvars.copy_context()
    state = _Budget(deadline)
    outcome: dict[str, Any] = {}
    finished = threading.Event()
    lock = threading.Lock()
    abandoned = False

    def bounded() -> T:
        with _active(state):
            return call()

    def run() -> None:
        try:
            outcome["value"] = context.run(bounded)
        except BaseException as err:  # handed to the waiting caller
            outcome["error"] = err
        with lock:
            late = abandoned
            finished.set()
        if late and on_late is not None and "value" in outcome:
            try:
                on_late(outcome["value"])
            except Exception:
                logger.warning(
                    "durable-semaphore: cleaning up after %s failed", what, exc_info=True
                )

    thread = threading.Thread(target=run, name=f"durable-semaphore-{what}", daemon=True)
    thread.start()
    finished.wait(max(0.0, deadline - time.monotonic()))
    with lock:
        if not finished.is_set():
            abandoned = True
            raise DeadlineExceededError(
                f"{what}: DynamoDB did not answer in time"
            ) from state.last_error
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value
