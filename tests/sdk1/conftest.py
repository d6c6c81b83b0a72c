"""Fixtures for the SDK 1.7 tests (testing library 1.2.1).

SDK 1.x sizes a thread pool with ``max_concurrency``, so suspended branches free their thread and
more start: the bug this library fixes. Run this folder in a venv with SDK 1.7.0:
``python -m pytest tests/sdk1``. Under SDK >= 2 it is not collected (tests/sdk covers that line).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest
from aws_durable_execution_sdk_python.__about__ import __version__ as SDK_VERSION

if int(SDK_VERSION.split(".")[0]) != 1:
    collect_ignore_glob = ["test_*.py"]


RunIsolated = Callable[[Callable[[], Any], float], Any]
"""``run(scenario, deadline)``: the ``run_isolated`` fixture's type."""


def is_refused_checkpoint(text: str) -> bool:
    """The runner's "Invalid checkpoint token" refusal, wherever it surfaces."""
    return "checkpoint token" in text


class RunnerFailure(Exception):
    """The local runner (testing 1.2.1) failed or hung: not a verdict on the code under test."""


def run_with_deadline(
    scenario: Callable[[], Any],
    deadline: float,
    attempts: int = 20,
    after_failure: Callable[[], None] | None = None,
) -> Any:
    """Run ``scenario`` (which builds its own runner) in a forked child with a deadline.

    testing 1.2.1 sometimes fails with "Invalid checkpoint token" or hangs, with or without a
    limiter: each wait timer that fires bumps the execution's token sequence, so an invocation
    still checkpointing when another timer fires is refused, and SDK 1.7's executor then never
    returns. Measured on the bare SDK, 13% to 60% of runs hang, depending on load. A refused
    checkpoint ends the attempt at once; the deadline catches any other hang. A hung
    runner leaves non-daemon pool threads behind that would keep pytest from ever exiting, so
    each attempt runs in its own process and a hung one is killed. Such a run is retried up to
    ``attempts`` times; if every attempt is a runner failure the test fails as a RUNNER
    FAILURE, never passes. Assertion errors are not retried. ``scenario`` must return something
    picklable (a digest of the run, not the runner's result object).
    ``after_failure`` runs after each failed attempt: a killed execution is a dead one, and its
    leases would otherwise be counted against the next attempt.
    """
    context = multiprocessing.get_context("fork")
    failures: list[str] = []
    for _ in range(attempts):
        kind, payload = _attempt(context, scenario, deadline)
        if kind == "value":
            if failures:
                warnings.warn(
                    f"testing 1.2.1 runner failed {len(failures)} time(s) before this pass: "
                    f"{failures}",
                    stacklevel=2,
                )
            return payload
        if kind == "error":
            raise AssertionError(f"in the runner's child process: {payload}")
        failures.append(payload)
        if after_failure is not None:
            after_failure()
    pytest.fail(f"RUNNER FAILURE (testing 1.2.1), not a test verdict: {failures}")


def _attempt(context: Any, scenario: Callable[[], Any], deadline: float) -> tuple[str, Any]:
    """One attempt in a forked child: ("value", result), ("runner", why) or ("error", why)."""
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(scenario, sender), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(deadline):
            return ("runner", f"hung for more than {deadline}s")
        try:
            outcome: tuple[str, Any] = receiver.recv()
        except EOFError:
            child.join(timeout=1)
            return ("runner", f"child exited with code {child.exitcode} and no result")
        return outcome
    finally:
        child.kill()
        child.join()
        receiver.close()


def _child(scenario: Callable[[], Any], sender: Connection) -> None:
    """Run one attempt and report it; ``os._exit`` skips joining the runner's pool threads."""
    reported = threading.Lock()

    def report(outcome: tuple[str, Any]) -> None:
        reported.acquire()  # the first report wins, and the process ends with it
        try:
            sender.send(outcome)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    logging.getLogger("aws_durable_execution_sdk_python").addHandler(_RefusedCheckpoint(report))
    try:
        outcome: tuple[str, Any] = ("value", scenario())
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
        is_runner = isinstance(exc, RunnerFailure | TimeoutError) or is_refused_checkpoint(text)
        outcome = ("runner" if is_runner else "error", text)
    report(outcome)


class _RefusedCheckpoint(logging.Handler):
    """Reports a refused checkpoint at once: SDK 1.7 never returns after one, so waiting out
    the deadline would only cost time (every hang measured here followed such a refusal)."""

    def __init__(self, report: Callable[[tuple[str, Any]], None]) -> None:
        super().__init__(logging.ERROR)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_refused_checkpoint(str(error)):
            self._report(("runner", f"refused checkpoint: {type(error).__name__}: {error}"))


@pytest.fixture
def run_isolated(semaphore: Any) -> RunIsolated:
    """``run_with_deadline`` for this test's table: a killed attempt is a dead execution, so
    its leases are released before the next attempt, as the reaper would release them."""

    def discard_dead_leases() -> None:
        for lease in list(semaphore.scan_leases()):
            semaphore.release(lease.key, lease.holder)

    def run(scenario: Callable[[], Any], deadline: float) -> Any:
        return run_with_deadline(scenario, deadline, after_failure=discard_dead_leases)

    return run
