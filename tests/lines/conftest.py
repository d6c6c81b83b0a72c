"""Fixtures for the suite that runs on every SDK line in the test matrix (1.7, 2.0, 2.1, 3.x).

The lines differ in two ways that matter here:

* **the SDK**: below 2.0 ``max_concurrency`` sizes a thread pool, so suspended branches free
  their thread and the bare SDK exceeds the limit within one invocation (the seed bug). From
  2.0 the SDK admits at most ``max_concurrency`` branches per map itself, so there the limiter
  adds what the SDK cannot: a limit shared across executions, and across overlapping
  invocations;
* **the testing library**: 1.2.1 (SDK 1.7 and 2.0) has no invoke registry, takes
  ``run(timeout=...)``, runs waits in real time, and sometimes refuses its own checkpoint
  tokens. 1.3+ (SDK 2.1 and 3.x) registers invoke targets, takes ``execution_timeout`` and
  skips durable time.

A scenario builds its own runner and returns a picklable digest of the run. On testing 1.2.1
it runs in a forked child with a deadline (``tests.sdk1.conftest.run_with_deadline``): only
that library's known failures (a refused checkpoint token, a hang) are retried; an assertion
or any other error is never retried, and the verdict on the limit is taken in this process
from the digest of a run that completed. On 1.3+ a scenario runs in this process.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pytest
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

from tests.sdk.observe import all_operations, op_signature, peak_of
from tests.sdk1.conftest import RunnerFailure, is_refused_checkpoint, run_with_deadline

SDK_VERSION = metadata.version("aws-durable-execution-sdk-python")
TESTING_VERSION = metadata.version("aws-durable-execution-sdk-python-testing")
SDK_LINE: tuple[int, int] = (int(SDK_VERSION.split(".")[0]), int(SDK_VERSION.split(".")[1]))
#: From SDK 2.0 the SDK itself keeps at most ``max_concurrency`` branches of a map in flight.
SDK_LIMITS_ONE_MAP = SDK_LINE >= (2, 0)
#: testing 1.3+ can register invoke targets and skips durable time; 1.2.1 cannot.
CAN_INVOKE = hasattr(DurableFunctionTestRunner, "register_durable_function")
#: testing 1.2.1 (the one without an invoke registry) needs isolated runs with retries.
FLAKY_RUNNER = not CAN_INVOKE
_TIMEOUT_ARG = (
    "execution_timeout"
    if "execution_timeout" in inspect.signature(DurableFunctionTestRunner.run).parameters
    else "timeout"
)

Scenario = Callable[[], Any]
RunScenario = Callable[[Scenario, float], Any]
"""``run(scenario, deadline)``: the ``run_scenario`` fixture's type."""


def run_timeout(seconds: int) -> dict[str, int]:
    """The execution timeout argument of ``run``/``run_async`` under this testing library."""
    return {_TIMEOUT_ARG: seconds}


def digest(res: Any, *, peaks: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a test needs from a run, computed where the run happened (results do not pickle).

    A run that failed because the runner refused its own checkpoint token is a runner
    failure (retried), not a verdict; any other failure is returned and asserted on.
    """
    status = str(res.status.name)
    if status != "SUCCEEDED" and is_refused_checkpoint(str(res.error)):
        raise RunnerFailure(str(res.error))
    ok = status == "SUCCEEDED"
    return {
        "status": status,
        "error": str(res.error),
        "result": json.loads(res.result) if ok and res.result is not None else None,
        "peaks": {kind: peak_of(res, kind) for kind in peaks} if ok else {},
        "signature": op_signature(res) if ok else [],
        "operations": [
            (op.operation_id, op.parent_id, type(op).__name__, op.sub_type, op.name)
            for op in all_operations(res)
        ],
    }


def ok(run: dict[str, Any]) -> Any:
    """The result of a digested run, which must have succeeded."""
    assert run["status"] == "SUCCEEDED", run["error"]
    return run["result"]


@pytest.fixture
def run_scenario(semaphore: Any) -> RunScenario:
    """Run a scenario on this line's runner; on testing 1.2.1 isolated, with retries of its
    known failures. A killed attempt is a dead execution: its leases are released before the
    next attempt, as the reaper would release them."""

    def discard_dead_leases() -> None:
        for lease in list(semaphore.scan_leases()):
            semaphore.release(lease.key, lease.holder)

    def run(scenario: Scenario, deadline: float) -> Any:
        if not FLAKY_RUNNER:
            return scenario()
        return run_with_deadline(scenario, deadline, after_failure=discard_dead_leases)

    return run
