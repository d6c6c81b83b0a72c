"""Flow control, measured: fair sharing, priorities, head-of-line blocking across two limits,
and a limit changed at run time, each beside its control.

Every scenario runs real durable executions in the SDK's local runner on the real clock against
DynamoDB Local, with waiters woken through callbacks (as deployed), and is judged from the
execution histories. The scenarios are the SDK tests' (tests/sdk/test_order.py,
tests/sdk/test_set_limit.py); this prints their figures, with the library's defaults.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import dynamodb_local, local_dynamodb_client  # noqa: E402
from tests.sdk import test_order, test_set_limit  # noqa: E402

import durable_semaphore.branch as branch  # noqa: E402
from durable_semaphore import DynamoDBSemaphore  # noqa: E402
from durable_semaphore._store_access import StoreAccess  # noqa: E402


def _fresh(client: Any) -> DynamoDBSemaphore:
    sem = DynamoDBSemaphore(table_name=f"flow-{uuid.uuid4().hex[:8]}", client=client)
    sem.create_table()
    return sem


def _fairness(client: Any) -> str:
    def run(**options: Any) -> tuple[int, float]:
        sem = _fresh(client)
        name = f"fair-{uuid.uuid4().hex[:6]}"
        limiter = test_order._limiter(sem, name, **options)
        return test_order._fairness(
            test_order._run_staggered(limiter, test_order._tenant_batches(), delay=1.5)
        )

    passed, jain = run(fair_by=test_order._tenant)
    control, control_jain = run()
    return (
        f"fair sharing (A 40 items, then B 10, limit 5): {passed} of A's started between B's "
        f"queueing and B's first start, Jain {jain:.3f} while both had a backlog; control "
        f"without fair_by: {control}, Jain {control_jain:.3f}"
    )


def _priority(client: Any) -> str:
    def run(**options: Any) -> int:
        limiter = test_order._limiter(_fresh(client), "prio", **options)
        records = test_order._run_staggered(limiter, test_order._priority_batches(), delay=2.0)
        return test_order._priority_violations(records)

    seen = run(priority=lambda x: int(x["prio"]))
    control = run()
    return (
        f"priority (50 low, then 5 high, limit 5): {seen} low waiters handed a slot before a "
        f"high one that arrived while they waited; control without priority: {control}"
    )


def _head_of_line(client: Any) -> str:
    seen = test_order._hol(_fresh(client))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(branch, "_CANONICAL_ORDER", False)
        control = test_order._hol(_fresh(client))
    return (
        f"two limits (A 20 items on its limit of 2, B 2 items 1.5 s later, total 6): B's last "
        f"start {seen:.2f} s after A's first; control taking the total first: {control:.2f} s"
    )


def _run_time(client: Any) -> str:
    def peaks(spans: list[tuple[float, float]], changed: list[float]) -> tuple[int, int, int]:
        lowered, raised = changed
        task = test_set_limit.TASK
        return (
            test_set_limit._peak_between(spans, 0.0, lowered),
            test_set_limit._peak_between(spans, lowered + task + 0.5, raised),
            test_set_limit._peak_between(spans, raised, 1e9),
        )

    seen = peaks(*test_set_limit._run(_fresh(client)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StoreAccess, "set_limit", lambda self, *a, **k: ())
        control = peaks(*test_set_limit._run(_fresh(client)))
    return (
        "run-time limit 5 -> 2 -> 8 (3 executions x 12 tasks of 2 s), peak before / from one "
        f"task after the lowering / after the raise: {seen[0]} / {seen[1]} / {seen[2]}; "
        f"control with set_limit ignored: {control[0]} / {control[1]} / {control[2]}"
    )


SCENARIOS = {
    "fair": _fairness,
    "priority": _priority,
    "head-of-line": _head_of_line,
    "run-time": _run_time,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args(argv)
    with dynamodb_local.running() as endpoint:
        client = local_dynamodb_client(endpoint)
        for name in args.only or list(SCENARIOS):
            print(SCENARIOS[name](client), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
