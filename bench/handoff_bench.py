"""The hand-off under contention: the demo's scenarios side by side, with ratios.

Runs, in one process and against one DynamoDB Local, the native baselines (the bare SDK's own
``max_concurrency``, one execution) and the limited scenarios of issue 8, and prints for each
the peak in flight (from the execution histories), the makespan in durable seconds and its
ratio to the matching baseline, DynamoDB requests and durable operations per branch, Jain's
fairness over the executions' finishing times, and what was left in the table.

``--clock skip`` (the demo's default) skips durable waits; the testing library's skipping
clock jumps by every wait armed at a different instant, so independent hand-off chains look
serialized next to one execution that starts its branches together. ``--clock real`` runs
durable waits in real time: the makespan production would see. Machines here are noisy:
``--rounds`` repeats every scenario, and medians are printed.

    python bench/handoff_bench.py --clock real --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from typing import Any

import boto3

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo import DemoConfig, run_demo
from durable_semaphore.store import default_client_config
from store_bench import _infra  # the bench scripts' shared DynamoDB Local loader

#: (label, config options, label of the baseline it is compared with)
SCENARIOS: list[tuple[str, dict[str, Any], str | None]] = [
    ("native 100 x1", {"items": 100, "use_limiter": False}, None),
    ("shared 10 x10 (hand-off)", {"items": 10, "executions": 10}, "native 100 x1"),
    (
        "shared 10 x10 (polling)",
        {"items": 10, "executions": 10, "hand_off": False},
        "native 100 x1",
    ),
    ("native 120 x1", {"items": 120, "use_limiter": False}, None),
    ("shared 40 x3 (hand-off)", {"items": 40, "executions": 3}, "native 120 x1"),
    ("per-operation 100 x1", {"items": 100}, "native 100 x1"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clock", choices=("skip", "real"), default="skip")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--wake-timeout", type=int, default=None, help="demo-only; default: the library's")
    parser.add_argument("--only", default=None, help="run scenarios whose label contains this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    rows: dict[str, list[dict[str, Any]]] = {}
    with _infra().running() as endpoint:
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=default_client_config(),
        )
        sem = DynamoDBSemaphore(f"bench-{uuid.uuid4().hex[:8]}", client)
        sem.create_table()
        for _ in range(args.rounds):
            for label, options, _base in SCENARIOS:
                if args.only and args.only not in label and _base is not None:
                    continue
                config = DemoConfig(
                    real_time=args.clock == "real",
                    wake_timeout_seconds=args.wake_timeout,
                    **options,
                )
                result = run_demo(config, sem)
                rows.setdefault(label, []).append(result.to_json())
                print(f"  {label}: makespan {result.makespan_seconds:.1f} s", file=sys.stderr)

    def med(label: str, field: str) -> float:
        return statistics.median(float(r[field]) for r in rows[label])

    table = []
    for label, _options, base in SCENARIOS:
        if label not in rows:
            continue
        makespan = med(label, "makespan_seconds")
        entry = {
            "scenario": label,
            "peak": max(int(r["peak_in_flight"]) for r in rows[label]),
            "limit": rows[label][0]["limit"],
            "makespan_seconds": round(makespan, 1),
            "ratio_to_native": round(makespan / med(base, "makespan_seconds"), 2) if base else None,
            "requests_per_branch": round(med(label, "dynamodb_requests_per_branch"), 2),
            "durable_ops_per_branch": round(med(label, "durable_operations_per_branch"), 2),
            "jain_fairness": round(med(label, "jain_fairness"), 3),
            "left": max(int(r["leases_left"]) + int(r["waiters_left"]) for r in rows[label]),
            "runs": len(rows[label]),
        }
        table.append(entry)
    if args.json:
        print(json.dumps({"clock": args.clock, "rows": table}, indent=2))
        return 0
    print(
        f"clock: {args.clock}; medians of {args.rounds} round(s); "
        f"wake timeout {args.wake_timeout} s"
    )
    header = "scenario                   peak  makespan  ratio  req/branch  ops/branch  Jain   left"
    print(header)
    for e in table:
        ratio = f"{e['ratio_to_native']:.2f}" if e["ratio_to_native"] is not None else "  -  "
        print(
            f"{e['scenario']:<26} {e['peak']:>2}/{e['limit']:<2} {e['makespan_seconds']:>7.1f}  "
            f"{ratio:>5}  {e['requests_per_branch']:>10.2f}  {e['durable_ops_per_branch']:>10.2f}"
            f"  {e['jain_fairness']:.3f}  {e['left']:>4}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
