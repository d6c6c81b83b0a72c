"""``demo --scenario rate`` on DynamoDB Local: the limiter's run keeps GCRA's bound on its
booked starts, and the bare run (the control) breaks it."""

from __future__ import annotations

import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo.rate import RateDemo, format_rate, run_rate_compare


@pytest.mark.timeout(180)
def test_the_rate_scenario_shows_the_bound_kept_and_broken(semaphore: DynamoDBSemaphore) -> None:
    demo = RateDemo(executions=2, items=8, rate=4.0, burst=2)
    bare, limited = run_rate_compare(demo, semaphore, compare=True)
    assert bare is not None and bare.succeeded and not bare.booked
    assert bare.most_ran_in_window > demo.bound  # the control: 16 at once, or close
    assert limited.ok and len(limited.booked) == len(limited.ran) == 16
    assert limited.most_booked_in_window <= demo.bound
    assert min(r - b for r, b in zip(limited.ran, limited.booked, strict=True)) >= -1e-6
    text = format_rate(limited, bare)
    assert f"bare SDK: most starts in any 1 s: {bare.most_ran_in_window}" in text
    assert text.endswith("OK")
    assert limited.to_json()["starts_per_second"] == limited.per_second()
