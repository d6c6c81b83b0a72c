"""``demo --scenario tenants`` on DynamoDB Local: two limits at once (per tenant, from the
item, and a total), the total raised mid-run; judged from the execution histories, with the
bare SDK as the control that breaks both limits."""

from __future__ import annotations

import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo.tenants import (
    TenantsDemo,
    format_tenants,
    ideal_makespan,
    run_tenants,
)


def test_the_ideal_schedule_fills_the_room_with_the_longest_backlogs() -> None:
    # 4 of A, 2 of B, at most 2 per tenant and 3 in all, tasks of 1 s: A A B | A A B -> 2 s.
    assert ideal_makespan({"A": 4, "B": 2}, 2, [], [3], 1.0) == 2.0
    # Shortest-first would leave A alone at the end: 3 s. A raise at 1 s to 4 changes nothing
    # for A (2 per tenant) but lets B finish alongside.
    assert ideal_makespan({"A": 6, "B": 1}, 2, [1.0], [2, 4], 1.0) == 3.0


@pytest.mark.timeout(240)
def test_the_tenants_scenario_keeps_every_limit_and_the_bare_sdk_breaks_them(
    semaphore: DynamoDBSemaphore,
) -> None:
    demo = TenantsDemo()
    limited = run_tenants(demo, semaphore)
    print(format_tenants(limited, None))
    assert limited.ok, format_tenants(limited, None)
    assert len(limited.spans) == demo.executions * len(demo.mix)
    assert max(limited.tenant_peaks.values()) == demo.per_tenant
    assert limited.raised_at is not None
    after = max(n for t, n in limited.total_steps if t >= limited.raised_at)
    assert demo.total < after <= 8, after  # the raise took effect, and held
    bare = run_tenants(TenantsDemo(raised_to=None, use_limiter=False), semaphore)
    assert max(bare.tenant_peaks.values()) > demo.per_tenant
    assert max(n for _, n in bare.total_steps) > demo.total
