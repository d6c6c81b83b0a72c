"""The SDK's local runner as the demo uses it, on every testing-library line.

The demo runs in ``DurableFunctionTestRunner`` from aws-durable-execution-sdk-python-testing,
and the lines this project supports come with different releases of it: 1.2.1 (SDK 1.7 and
2.0), 1.3 (SDK 2.1) and 1.4 (SDK 3.x). :func:`detect` reads what the installed runner can do
from its signatures, not from version strings:

* ``skip_time`` (1.3+): durable waits are skipped; without it they take real seconds;
* ``register_durable_function`` (1.3+): ``ctx.invoke`` targets; without it a branch's
  downstream work is a durable wait of its own;
* the name of the execution-timeout argument of ``run_async``.

**The testing 1.2.1 workaround** (:func:`complete_timers_like_the_service`). That runner
completes a durable wait or a retry only from a timer on its asyncio loop, and it runs an
invocation *on* that loop (a coroutine that calls the handler synchronously). So no wait or
retry can complete while an invocation runs (except from a timer handler the loop dispatched to
a worker thread just before the invocation began: :class:`_TimersBetweenInvocations`).
SDK 1.7 and 2.0 resume a timed branch inside the running invocation, after a refresh
checkpoint that on the service returns the wait completed.
Under 1.2.1 it still reads STARTED (or PENDING), so the branch suspends again at once with the
same past time: once two branches do that while a third still runs, the map never sees every
branch suspended together and the invocation spins for good. When the invocation does end,
every timer queued meanwhile fires in one burst; each bumps the execution's checkpoint-token
sequence from a worker thread while the invocation it queued already runs, whose next
checkpoint is then refused ("Invalid checkpoint token"), after which SDK 1.7 hangs. Both
reproduce with the bare SDK and no durable_semaphore (docs/benchmarks.md has the evidence); a
map whose branches all suspend before any timer is due (the bare seed scenario) escapes both,
while one whose branches suspend at staggered times (any limiter, or a slow first step) does
not.

The workaround makes the runner do what the service does, through the runner's own objects
(nothing of the library is copied): at each checkpoint, first complete the waits and retries
that are due; accept the newest checkpoint token the runner issued even if a timer bumped the
sequence since (older tokens stay refused, so a superseded invocation is still fenced); queue
at most one pending invocation per execution instead of one per timer; hold the runner's timer
handlers until a running invocation of their execution ends. The runner's own timer
then finds its wait already completed; :class:`LateTimerFilter` keeps that expected error off
the terminal.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = [
    "LateTimerFilter",
    "PendingTaskFilter",
    "RunnerFeatures",
    "complete_timers_like_the_service",
    "detect",
    "installed_versions",
    "sdk_limits_one_map",
]

logger = logging.getLogger(__name__)

_TOKEN_REFUSED = "Invalid checkpoint token"


@dataclass(frozen=True)
class RunnerFeatures:
    """What the installed ``DurableFunctionTestRunner`` can do (see the module docstring)."""

    #: Durable waits can be skipped (testing 1.3+); else they take real seconds.
    skip_time: bool
    #: ``register_durable_function`` exists, so branches can ``ctx.invoke`` a target.
    invoke_registry: bool
    #: Keyword of ``run_async`` that sets the execution timeout.
    timeout_arg: str
    #: The runner cannot complete timers during an invocation (testing 1.2.1), so the demo
    #: applies :func:`complete_timers_like_the_service`.
    needs_timer_workaround: bool


def detect(runner_class: Any = None) -> RunnerFeatures:
    """Read the runner's features from its signatures (the testing library is imported here)."""
    if runner_class is None:
        from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

        runner_class = DurableFunctionTestRunner
    init = inspect.signature(runner_class.__init__).parameters
    run_async = inspect.signature(runner_class.run_async).parameters
    skip_time = "skip_time" in init
    return RunnerFeatures(
        skip_time=skip_time,
        invoke_registry=callable(getattr(runner_class, "register_durable_function", None)),
        timeout_arg="execution_timeout" if "execution_timeout" in run_async else "timeout",
        # The executor that runs invocations off its loop came with the skipping clock (1.3).
        needs_timer_workaround=not skip_time,
    )


def installed_versions() -> tuple[str, str]:
    """(SDK version, testing-library version), for the summary; "?" when unknown."""
    found: list[str] = []
    for name in ("aws-durable-execution-sdk-python", "aws-durable-execution-sdk-python-testing"):
        try:
            found.append(metadata.version(name))
        except metadata.PackageNotFoundError:
            found.append("?")
    return found[0], found[1]


def sdk_limits_one_map(sdk_version: str) -> bool:
    """Whether the SDK itself keeps one map to ``max_concurrency`` branches (from 2.0.0).

    The SDK's own admission is internal, so its documented release boundary is the check here.
    """
    head = sdk_version.split(".", 1)[0]
    return head.isdigit() and int(head) >= 2


class LateTimerFilter(logging.Filter):
    """Drops the runner's report that its timer found a wait or retry already completed.

    Under :func:`complete_timers_like_the_service` that is expected: the checkpoint completed
    it on time. Any other error from the runner still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        late = record.getMessage().endswith(
            ("Error processing wait succeeded.", "Error processing retry ready.")
        )
        return not (late and error is not None and "when it's not" in str(error))


class PendingTaskFilter(logging.Filter):
    """Drops asyncio's "Task was destroyed but it is pending!" for the runner's own timers,
    which testing 1.2.1 leaves pending when it stops its loop."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Task was destroyed but it is pending")
            and "aws_durable_execution_sdk_python_testing" in message
        )


class _ServiceTimers:
    """Wraps the runner's in-memory service client: completes due timers at each checkpoint
    and accepts the newest issued token across a timer's sequence bump (module docstring)."""

    def __init__(self, inner: Any, store: Any, token_class: Any) -> None:
        self._inner = inner
        self._store = store
        self._token_class = token_class
        self._lock = threading.Lock()
        self.completed = 0
        self.tokens_carried = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _complete_due(self, execution: Any) -> None:
        now = datetime.datetime.now(datetime.UTC)
        for op in list(execution.operations):
            kind = getattr(op.operation_type, "name", "")
            status = getattr(op.status, "name", "")
            try:
                if kind == "WAIT" and status == "STARTED":
                    due = getattr(op.wait_details, "scheduled_end_timestamp", None)
                    if due is not None and due <= now:
                        execution.complete_wait(op.operation_id)
                        self.completed += 1
                elif kind == "STEP" and status == "PENDING":
                    due = getattr(op.step_details, "next_attempt_timestamp", None)
                    if due is not None and due <= now:
                        execution.complete_retry(op.operation_id)
                        self.completed += 1
            except Exception:  # the runner's timer got there first: nothing to do
                logger.debug("timer of %s already fired", op.operation_id, exc_info=True)

    def checkpoint(
        self,
        durable_execution_arn: str,
        checkpoint_token: str,
        updates: list[Any],
        client_token: str | None,
    ) -> Any:
        tokens = self._token_class
        with self._lock:
            for attempt in range(5):
                token = tokens.from_str(checkpoint_token)
                execution = self._store.load(token.execution_arn)
                self._complete_due(execution)
                newest = max(tokens.from_str(t).token_sequence for t in execution.used_tokens)
                presented = checkpoint_token
                if token.token_sequence == newest and execution.token_sequence != newest:
                    # Only the runner's own timers moved the sequence since this token.
                    presented = tokens(token.execution_arn, execution.token_sequence).to_str()
                    self.tokens_carried += 1
                try:
                    return self._inner.checkpoint(
                        durable_execution_arn, presented, updates, client_token
                    )
                except Exception as exc:
                    # A timer fired between the two lines above; the refusal changed nothing.
                    stale = token.token_sequence != newest
                    if stale or _TOKEN_REFUSED not in str(exc) or attempt == 4:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover


class _TimersBetweenInvocations:
    """Keeps the runner's own timer handlers out of a running invocation of their execution.

    testing 1.2.1 runs an invocation on its loop, but a timer's handler (complete the wait or
    the retry, then queue an invocation) on a worker thread. A handler the loop dispatched just
    before it started an invocation therefore completes operations while that invocation runs,
    after its input was built and unseen by it: the invocation suspends on a wait it had no way
    to see done, and the runner's check of its PENDING output then finds nothing pending
    ("Cannot return PENDING status with no pending operations") and retries it 5 s later. The
    service has no such window: an invocation sees a timer's completion in a checkpoint
    response, or the completion invokes the function again after it. Measured: 2 of 69
    SDK 1.7 limiter runs of the demo under load (docs/demo.md#invalid-pending-outputs).
    A handler that finds its execution's invocation running waits for it to end (counted as
    ``deferred``); due timers still complete at the invocation's checkpoints, where it sees them.
    """

    def __init__(self, executor: Any) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self.deferred = 0
        for name in ("_on_wait_succeeded", "_on_retry_ready"):
            setattr(executor, name, self._between_invocations(getattr(executor, name)))

    def _lock(self, execution_arn: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(execution_arn, threading.Lock())

    @contextlib.contextmanager
    def invocation(self, execution_arn: str) -> Iterator[None]:
        """Held for the whole of one invocation, from building its input to checking its output.

        The loop runs one invocation at a time, so it only ever waits here for a handler that
        is running (milliseconds; a handler never needs the loop); handlers wait for the
        invocation."""
        with self._lock(execution_arn):
            yield

    def _between_invocations(
        self, handler: Callable[[str, str], None]
    ) -> Callable[[str, str], None]:
        def wrapped(execution_arn: str, operation_id: str) -> None:
            lock = self._lock(execution_arn)
            if not lock.acquire(blocking=False):
                with self._guard:
                    self.deferred += 1
                lock.acquire()
            try:
                handler(execution_arn, operation_id)
            finally:
                lock.release()

        return wrapped


def complete_timers_like_the_service(runner: Any) -> Callable[[], dict[str, int]]:
    """Apply the testing 1.2.1 workaround to ``runner`` (module docstring); returns a function
    that reports how often it stepped in. Raises ``AttributeError`` if the runner lacks the
    objects it needs (a testing release this was not written for)."""
    from aws_durable_execution_sdk_python_testing.token import CheckpointToken

    invoker = runner._invoker
    service = _ServiceTimers(invoker.service_client, runner._store, CheckpointToken)
    executor = runner._executor
    schedule = executor._invoke_execution
    make_handler = executor._invoke_handler
    queued: set[str] = set()
    lock = threading.Lock()
    coalesced = 0
    timers = _TimersBetweenInvocations(executor)

    def invoke_handler(execution_arn: str) -> Any:
        inner = make_handler(execution_arn)

        async def invoke() -> None:
            with lock:
                queued.discard(execution_arn)  # from here on, new work needs a new invocation
            with timers.invocation(execution_arn):
                await inner()

        return invoke

    def invoke_execution(execution_arn: str, delay: float = 0) -> None:
        nonlocal coalesced
        with lock:
            if execution_arn in queued:
                coalesced += 1  # the queued invocation has not started: it will see this too
                return
            queued.add(execution_arn)
        schedule(execution_arn, delay=delay)

    invoker.service_client = service
    executor._invoke_handler = invoke_handler
    executor._invoke_execution = invoke_execution

    def report() -> dict[str, int]:
        return {
            "timers_completed": service.completed,
            "tokens_carried": service.tokens_carried,
            "invocations_coalesced": coalesced,
            "timers_deferred": timers.deferred,
        }

    return report
