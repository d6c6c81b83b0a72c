"""Fixtures for the SDK 1.7 tests (testing library 1.2.1).

SDK 1.x sizes a thread pool with ``max_concurrency``, so suspended branches free their thread and
more start: the bug this library fixes. Run this folder in a venv with SDK 1.7.0:
``python -m pytest tests/sdk1``. Under SDK >= 2 it is not collected (tests/sdk covers that line).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from aws_durable_execution_sdk_python.__about__ import __version__ as SDK_VERSION

if int(SDK_VERSION.split(".")[0]) != 1:
    collect_ignore_glob = ["test_*.py"]


class RunnerFailure(Exception):
    """The local runner (testing 1.2.1) failed or hung: not a verdict on the code under test."""


def run_with_deadline(
    scenario: Callable[[], Any],
    deadline: float,
    attempts: int = 8,
    after_failure: Callable[[], None] | None = None,
) -> Any:
    """Run ``scenario`` (which builds its own runner) in a forked child with a deadline.

    testing 1.2.1 sometimes fails with "Invalid checkpoint token" or hangs, with or without a
    limiter: each wait timer that fires bumps the execution's token sequence, so an invocation
    still checkpointing when another timer fires is refused, and SDK 1.7's executor then never
    returns. Measured on the bare SDK, 13% to 60% of runs hang, depending on load. A hung
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
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(scenario, sender), daemon=True)
        child.start()
        sender.close()
        outcome: tuple[str, Any] | None = None
        if receiver.poll(deadline):
            try:
                outcome = receiver.recv()
            except EOFError:
                outcome = ("runner", f"child exited with code {child.exitcode} and no result")
        child.kill()
        child.join()
        receiver.close()
        if outcome is None:
            failures.append(f"hung for more than {deadline}s")
            if after_failure is not None:
                after_failure()
            continue
        kind, payload = outcome
        if kind == "value":
            if failures:
                warnings.warn(
                    f"testing 1.2.1 runner failed {len(failures)} time(s) before this pass: "
                    f"{failures}",
                    stacklevel=2,
                )
            return payload
        if kind == "runner":
            failures.append(payload)
            if after_failure is not None:
                after_failure()
            continue
        raise AssertionError(f"in the runner's child process: {payload}")
    pytest.fail(f"RUNNER FAILURE (testing 1.2.1), not a test verdict: {failures}")


def _child(scenario: Callable[[], Any], sender: Connection) -> None:
    """Run one attempt and report it; ``os._exit`` skips joining the runner's pool threads."""
    try:
        outcome: tuple[str, Any] = ("value", scenario())
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
        is_runner = isinstance(exc, RunnerFailure | TimeoutError) or "checkpoint token" in text
        outcome = ("runner" if is_runner else "error", text)
    try:
        sender.send(outcome)
    finally:
        sender.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@pytest.fixture
def limiter_env(
    ddb_endpoint: str, semaphore: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Point ``limiter="dynamodb"`` at this test's fresh table in DynamoDB Local."""
    from durable_semaphore import limiter as limiter_module

    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    limiter_module._default_limiters.clear()
    yield semaphore
    limiter_module._default_limiters.clear()


@pytest.fixture
def discard_dead_leases(semaphore: Any) -> Callable[[], None]:
    """Release every lease in this test's table: what the reaper does for a dead execution."""

    def discard() -> None:
        for lease in list(semaphore.scan_leases()):
            semaphore.release(lease.key, lease.holder)

    return discard


@pytest.fixture
def leases_left(semaphore: Any) -> Callable[[], list[Any]]:
    def scan() -> list[Any]:
        return list(semaphore.scan_leases())

    return scan
