"""Keeping the terminal to what the user needs: expected runner noise becomes counts, and Ctrl-C
ends the demo with one line.

The local runner logs, from its own threads, things the demo expects: a waiter's callback
timing out (the hand-off's designed fallback), its own timers finding a wait already completed
(the testing 1.2.1 workaround), and invocations it refuses for returning PENDING with nothing
pending, which the demo counts and judges instead (:class:`InvalidPendingCounter`).

On Ctrl-C the main thread unwinds and shuts the runner down while the SDK's branch threads are
mid-checkpoint; each then fails ("execution registry is shut down") and logs a traceback of
about 50 lines, in 2 runs of 6 when measured. :class:`QuietInterrupt` silences every thread but
the main one the moment SIGINT arrives, so the CLI's one "interrupted" line is all that shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, TextIO, cast

from durable_semaphore.demo.local_runner import LateTimerFilter, PendingTaskFilter

#: The testing library's executor logger: the runner's warnings and errors come from here
#: (a late timer, for one, is reported there as an error).
RUNNER_LOGGER = "aws_durable_execution_sdk_python_testing.executor"
#: What the runner logs when it refuses an invocation's output (see report.PENDING_DOCS).
RUNNER_RACE_MESSAGE = "Cannot return PENDING status with no pending operations"
#: Exit code after Ctrl-C (the shell's 128 + SIGINT), as the CLI's own.
EXIT_INTERRUPTED = 130
#: Once interrupted and unwound, how long Python's own exit may take before we leave anyway.
EXIT_GRACE_SECONDS = 1.0


class CallbackTimeoutFilter(logging.Filter):
    """Keeps the runner's "Callback ... timed out" warnings off the terminal: a waiter's
    callback timing out is the hand-off's designed fallback, not a problem to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("timed out") and "Callback " in message)


class InvalidPendingCounter(logging.Filter):
    """Counts invocations the local runner refused as "Cannot return PENDING status with no
    pending operations" and keeps the raw warning off the terminal; the summary reports them.

    The runner mirrors the service: it retries such an output at most 3 times in a row, then
    fails the execution. So every one counts against the run (``DemoResult.ok``): it means an
    invocation saw a completion and suspended without acting on it. On the skip clock the
    runner completes a durable wait before its time, which the bare SDK can see too when its
    branches start at different instants (``bench/runner_race.py``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if RUNNER_RACE_MESSAGE in record.getMessage():
            with self._lock:
                self.count += 1
            return False
        return True


@contextmanager
def runner_log_filters() -> Iterator[InvalidPendingCounter]:
    """Install the runner-log filters for one run; yields the invalid-PENDING counter."""
    logger = logging.getLogger(RUNNER_LOGGER)
    counter = InvalidPendingCounter()
    filters: list[logging.Filter] = [counter, CallbackTimeoutFilter(), LateTimerFilter()]
    for item in filters:
        logger.addFilter(item)
    try:
        yield counter
    finally:
        for item in filters:
            logger.removeFilter(item)


def quiet_runner_leftovers() -> None:
    """Keep asyncio's "Task was destroyed but it is pending!" for the runner's own timers off
    the terminal: testing 1.2.1 stops its loop with timers pending, and asyncio reports each
    when the process exits, after the verdict. Installed once per process."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, PendingTaskFilter) for f in logger.filters):
        logger.addFilter(PendingTaskFilter())


# -- Ctrl-C ------------------------------------------------------------------------------------

#: Child processes to kill if a second Ctrl-C leaves without unwinding (the embedded DynamoDB
#: runs in a session of its own, so the terminal's Ctrl-C does not reach it).
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


def track_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` on a hard exit (second Ctrl-C); :func:`untrack_child` once it is stopped."""
    with _children_lock:
        _children.add(proc)


def untrack_child(proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        _children.discard(proc)


class _MainThreadOnly:
    """A stderr that drops what other threads write: once interrupted, only the main thread,
    which prints the one line, may speak."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop(*_: Any) -> None:
    """An excepthook that says nothing: the user asked to stop, not for a traceback."""


def silence_other_threads() -> None:
    """Silence every thread but the main one for the rest of the process.

    Logging is disabled (the SDK's "Checkpoint batch processing failed" tracebacks come from its
    loggers), uncaught thread exceptions and unraisable ones are dropped, and stderr only takes
    the main thread's writes. Meant for a process about to exit: nothing is restored.
    """
    logging.disable(logging.CRITICAL)
    threading.excepthook = _drop
    sys.unraisablehook = _drop
    if not isinstance(sys.stderr, _MainThreadOnly):
        sys.stderr = cast(TextIO, _MainThreadOnly(sys.stderr))


class QuietInterrupt:
    """While active, Ctrl-C silences the other threads and then raises ``KeyboardInterrupt`` in
    the main thread, which unwinds (stopping the runner and the embedded DynamoDB) to the CLI's
    one "interrupted" line and exit code 130. A second Ctrl-C leaves at once (130), killing the
    tracked child processes first. Once unwound, the process gets :data:`EXIT_GRACE_SECONDS` to
    exit before it leaves with 130 regardless (a branch thread may be retrying a request).

    Only the main thread can take signals; elsewhere (a test calling the CLI from a worker
    thread) this does nothing. After a normal run the previous handler is restored; after an
    interrupt ours stays, since the process is ending and a second Ctrl-C must still be quiet.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> QuietInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if not self._installed:
            return
        if not self.interrupted:
            signal.signal(signal.SIGINT, self._previous)
            return
        # Unwound: the runner and the embedded DynamoDB are stopped, and the CLI prints its line
        # next. Python's exit then joins the SDK's branch threads, which may be retrying a
        # request to the DynamoDB just stopped (up to 15 s measured): leave after a grace.
        watchdog = threading.Timer(EXIT_GRACE_SECONDS, _leave_now)
        watchdog.daemon = True
        watchdog.start()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            _leave_now()
        self.interrupted = True
        silence_other_threads()
        raise KeyboardInterrupt


def _leave_now() -> None:
    """Exit with 130 at once: flush what the main thread printed, kill tracked children."""
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    with _children_lock:
        for proc in _children:
            with contextlib.suppress(Exception):
                proc.kill()
    os._exit(EXIT_INTERRUPTED)
