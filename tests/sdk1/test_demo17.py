"""``durable-semaphore demo --compare`` on SDK 1.7 (testing 1.2.1), where the seed bug lives.

The demo runs the bare SDK, then the per-operation limiter, on the same map, and judges both
from the execution histories (the overlap of the branches' ``demo-task`` waits). On SDK 1.7 the
bare SDK puts every branch that suspends in flight, so its peak must exceed the limit (the
control: the observer can see an overshoot); with the limiter the peak must not.

15 items at limit 3 is a size that hung testing 1.2.1 before the demo's timer workaround
(durable_semaphore.demo.local_runner): the waiting branches' polls came due while others ran.
The run is isolated in a forked child with a deadline, as every 1.2.1 test here is, so a hang
fails the test instead of pytest; a hang or a refused token is reported as a runner failure.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo.report import format_adds, format_comparison
from durable_semaphore.demo.running import run_compare
from durable_semaphore.demo.scenario import DemoConfig, default_scenario
from durable_semaphore.store import default_client_config
from tests.sdk1.conftest import run_with_deadline

ITEMS = 15
LIMIT = 3
DEADLINE = 120.0  # about 15 s on the real clock (the bare run 2 s, the limiter 10 s)


def test_demo_compare_bare_sdk_exceeds_the_limit_and_the_limiter_holds_it(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore
) -> None:
    def scenario() -> dict[str, Any]:
        # A client of the child's own: a forked copy of the parent's connection pool is unsafe.
        client = boto3.client(
            "dynamodb",
            endpoint_url=ddb_endpoint,
            region_name="us-east-1",
            config=default_client_config(),
        )
        sem = DynamoDBSemaphore(table_name=semaphore.table_name, client=client)
        config = DemoConfig(items=ITEMS, max_concurrency=LIMIT)
        bare, limited = run_compare(config, sem)
        return {
            "bare": bare.to_json(),
            "limited": limited.to_json(),
            "text": format_comparison(bare, limited) + "\n" + format_adds(limited, bare),
        }

    def discard_dead_leases() -> None:
        for lease in list(semaphore.scan_leases()):
            semaphore.release(lease.key, lease.holder)

    digest = run_with_deadline(scenario, DEADLINE, attempts=3, after_failure=discard_dead_leases)
    bare, limited = digest["bare"], digest["limited"]
    assert bare["succeeded"] and limited["succeeded"], digest["text"]
    assert bare["sdk_limits_one_map"] is False and bare["clock"] == "real"
    assert bare["downstream"] == limited["downstream"] == "wait"
    # The control: SDK 1.7 lets every suspended branch be in flight.
    assert bare["peak_in_flight"] > LIMIT, digest["text"]
    assert bare["dynamodb_requests"] == 0
    # The fix, judged by the same observer.
    assert 1 <= limited["peak_in_flight"] <= LIMIT, digest["text"]
    assert limited["leases_left"] == 0 and limited["waiters_left"] == 0
    assert limited["ok"] is True, digest["text"]
    assert "bounds threads, not operations" in digest["text"]


def test_runner_features_are_detected_not_assumed() -> None:
    from durable_semaphore.demo.local_runner import detect

    features = detect()
    assert features.skip_time is False  # testing 1.2.1 runs durable waits in real time
    assert features.invoke_registry is False
    assert features.timeout_arg == "timeout"
    assert features.needs_timer_workaround is True


def test_the_default_demo_on_sdk17_is_the_seed_scenario_on_the_real_clock() -> None:
    """On 1.7 one map is enough to show the limiter (bare: all 30 in flight), so `make demo`
    runs one execution of 30 items, bare then limited, on the only clock there is."""
    from durable_semaphore.demo.local_runner import detect, installed_versions

    sdk, _ = installed_versions()
    plan = default_scenario(sdk_version=sdk, can_skip_time=detect().skip_time)
    assert (plan.executions, plan.items, plan.clock) == (1, 30, "real")


@pytest.fixture(autouse=True)
def _no_named_limiter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo builds its own limiter on ``semaphore``; no environment may redirect it."""
    monkeypatch.delenv("DURABLE_SEMAPHORE_TABLE", raising=False)
    monkeypatch.delenv("DURABLE_SEMAPHORE_WAKER", raising=False)
