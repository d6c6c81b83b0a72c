"""Several limits at once, per-item keys and a run-time raise: the tenants scenario, measured.

Runs ``demo --scenario tenants`` (4 executions x 8 items of 4 tenants, at most 2 per tenant and
5 in total, the total raised to 8 after 4 s; real clock, callbacks) ``--rounds`` times on
DynamoDB Local with the library's defaults, and prints, judged from the execution histories:
the peaks per tenant and in total, the makespan against an ideal scheduler's under the same
limits (median and each round), and the DynamoDB requests per branch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import dynamodb_local, local_dynamodb_client  # noqa: E402
from tests.store_helpers import count_requests  # noqa: E402

from durable_semaphore import DynamoDBSemaphore  # noqa: E402
from durable_semaphore.demo.tenants import TenantsDemo, run_tenants  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    demo = TenantsDemo()
    branches = demo.executions * len(demo.mix)
    ratios, per_branch, ok = [], [], True
    with dynamodb_local.running() as endpoint:
        client = local_dynamodb_client(endpoint)
        sem = DynamoDBSemaphore(table_name=f"tenants-{uuid.uuid4().hex[:8]}", client=client)
        sem.create_table()
        for k in range(args.rounds):
            with count_requests(client) as sent:
                result = run_tenants(demo, sem)
            ratio = result.makespan / result.ideal
            ratios.append(ratio)
            per_branch.append(sum(sent.values()) / branches)
            ok = ok and result.ok
            peaks = ", ".join(f"{t} {p}" for t, p in result.tenant_peaks.items())
            print(
                f"round {k + 1}: peaks per tenant {peaks}; peak total "
                f"{max(n for _, n in result.total_steps)} (limit {demo.total}, "
                f"{demo.raised_to} from {result.raised_at:.1f} s); over a limit: "
                f"{len(result.over_total)}; makespan {result.makespan:.1f} s vs ideal "
                f"{result.ideal:.1f} s ({ratio:.2f}x); requests per branch "
                f"{per_branch[-1]:.2f} {dict(sent)}"
            )
    median = statistics.median(ratios)
    print(
        f"median makespan {median:.2f}x the ideal schedule (target <= 1.25x); "
        f"{statistics.median(per_branch):.2f} DynamoDB requests per branch under two limits "
        "(queue reads, hand-offs and wake-ups of waiting branches included)"
    )
    return 0 if ok and median <= 1.25 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
