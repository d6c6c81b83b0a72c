"""The hand-off under contention: the demo's scenarios side by side, with ratios.

Runs, in one process and against one DynamoDB Local, the native baselines (the bare SDK's own
``max_concurrency``, one execution) and the limited scenarios (one shared limit across
executions, and per-operation maps), and prints for each
the peak in flight (from the execution histories), the makespan in durable seconds and its
ratio to the matching baseline, DynamoDB requests and durable operations per branch, Jain's
fairness over the executions' finishing times, and what was left in the table.

``--clock skip`` (the demo's default) skips durable waits; the testing library's skipping
clock jumps by every wait armed at a different instant, so independent hand-off chains look
serialized next to one execution that starts its branches together. ``--clock real`` runs
durable waits in real time: the makespan production would see. Machines here are noisy:
``--rounds`` repeats every scenario, and medians are printed.

    python bench/handoff_bench.py --clock real --rounds 3
    python bench/handoff_bench.py --clock real --markdown   # a table of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import uuid
from typing import Any

import boto3

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.demo.running import run_demo
from durable_semaphore.demo.scenario import DemoConfig
from durable_semaphore.store import default_client_config
from store_bench import _infra  # the bench scripts' shared DynamoDB Local loader

#: (label, config options, label of the baseline it is compared with)
SCENARIOS: list[tuple[str, dict[str, Any], str | None]] = [
    ("native 100 x1", {"items": 100, "use_limiter": False}, None),
    ("shared 10 x10 (hand-off)", {"items": 10, "executions": 10}, "native 100 x1"),
    ("native 120 x1", {"items": 120, "use_limiter": False}, None),
    ("shared 40 x3 (hand-off)", {"items": 40, "executions": 3}, "native 120 x1"),
    ("per-operation 100 x1", {"items": 100}, "native 100 x1"),
    ("native 500 x1", {"items": 500, "use_limiter": False}, None),
    ("shared 50 x10 (hand-off)", {"items": 50, "executions": 10}, "native 500 x1"),
]
#: Long waits (60 s tasks: branches wait 10 minutes and more of durable time); skip clock only,
#: since on the real clock they take 20 minutes each.
LONG_WAITS: list[tuple[str, dict[str, Any], str | None]] = [
    ("native 100 x1, 60 s tasks", {"items": 100, "use_limiter": False, "task_seconds": 60}, None),
    (
        "shared 10 x10, 60 s tasks",
        {"items": 10, "executions": 10, "task_seconds": 60},
        "native 100 x1, 60 s tasks",
    ),
]
#: Polling at the library's defaults (backoff up to 60 s): the slow route, on request.
POLLING = (
    "shared 10 x10 (polling)",
    {"items": 10, "executions": 10, "hand_off": False},
    "native 100 x1",
)
#: Lambda's price of a durable operation, dollars.
DURABLE_OPERATION_USD = 8.0 / 1_000_000


MARKDOWN_HEADER = (
    "| scenario | peak | makespan (s) | ratio to native | req / branch | ops / branch "
    "| +ops $/M | busy | Jain | inv. PENDING | left |"
)


def markdown(
    table: list[dict[str, Any]],
    command: list[str],
    *,
    clock: str = "skip",
    rounds: int = 1,
    day: str | None = None,
) -> str:
    """The rows as the Markdown table of docs/benchmarks.md, under a line that says which
    command made them and on which day (UTC)."""
    day = day or datetime.datetime.now(datetime.UTC).date().isoformat()
    what = "one round" if rounds == 1 else f"medians of {rounds} rounds"
    lines = [
        f"Measured {day} with `{' '.join(command)}` ({clock} clock, {what}):",
        "",
        MARKDOWN_HEADER,
        "|---" * MARKDOWN_HEADER.count(" | ") + "|---|",
    ]
    for e in table:
        ratio = "-" if e["ratio_to_native"] is None else f"{e['ratio_to_native']:.2f}"
        busy = "-" if e["busy_while_waiting"] is None else f"{e['busy_while_waiting']:.2f}"
        lines.append(
            f"| {e['scenario'].removesuffix(' (hand-off)')} | {e['peak']}/{e['limit']} "
            f"| {e['makespan_seconds']:.1f} | {ratio} | {e['requests_per_branch']:g} "
            f"| {e['durable_ops_per_branch']:.2f} | {e['extra_ops_usd_per_million_branches']:g} "
            f"| {busy} | {e['jain_fairness']:.3f} | {e['invalid_pending']} | {e['left']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clock", choices=("skip", "real"), default="skip")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--wake-timeout", type=int, default=None, help="demo-only; default: the library's"
    )
    parser.add_argument("--only", default=None, help="run scenarios whose label contains this")
    parser.add_argument("--with-polling", action="store_true", help="also run " + POLLING[0])
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument(
        "--markdown", action="store_true", help="print the table of docs/benchmarks.md"
    )
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
        scenarios = SCENARIOS + ([POLLING] if args.with_polling else [])
        if args.clock == "skip":
            scenarios += LONG_WAITS
        # --only: the matching scenarios and the baselines they are compared with.
        picked = [(lbl, b) for lbl, _o, b in scenarios if args.only and args.only in lbl]
        wanted = {lbl for lbl, _b in picked} | {b for _l, b in picked if b is not None}
        for _ in range(args.rounds):
            for label, options, _base in scenarios:
                if args.only and label not in wanted:
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
    for label, _options, base in scenarios:
        if label not in rows or (base is not None and base not in rows):
            continue
        makespan = med(label, "makespan_seconds")
        ops = med(label, "durable_operations_per_branch")
        extra = ops - med(base, "durable_operations_per_branch") if base in rows else 0.0
        busy = [r["busy_while_waiting"] for r in rows[label] if r["busy_while_waiting"] is not None]
        entry = {
            "scenario": label,
            "peak": max(int(r["peak_in_flight"]) for r in rows[label]),
            "limit": rows[label][0]["limit"],
            "makespan_seconds": round(makespan, 1),
            "ratio_to_native": round(makespan / med(base, "makespan_seconds"), 2) if base else None,
            "requests_per_branch": round(med(label, "dynamodb_requests_per_branch"), 2),
            "durable_ops_per_branch": round(ops, 2),
            "extra_ops_per_branch": round(extra, 2),
            "extra_ops_usd_per_million_branches": round(extra * DURABLE_OPERATION_USD * 1e6, 2),
            "busy_while_waiting": round(statistics.median(busy), 3) if busy else None,
            "invalid_pending": sum(int(r["invalid_pending_outputs"]) for r in rows[label]),
            "jain_fairness": round(med(label, "jain_fairness"), 3),
            "left": max(int(r["leases_left"]) + int(r["waiters_left"]) for r in rows[label]),
            "runs": len(rows[label]),
        }
        table.append(entry)
    if args.json:
        print(json.dumps({"clock": args.clock, "rows": table}, indent=2))
        return 0
    if args.markdown:
        command = ["python", "bench/handoff_bench.py", *(sys.argv[1:] if argv is None else argv)]
        print(markdown(table, command, clock=args.clock, rounds=args.rounds), end="")
        return 0
    timeout = "library default" if args.wake_timeout is None else f"{args.wake_timeout} s"
    print(f"clock: {args.clock}; medians of {args.rounds} round(s); wake timeout {timeout}")
    header = (
        "scenario                   peak  makespan  ratio  req/br  ops/br  +ops $/M  busy  "
        "Jain   inv.PENDING left"
    )
    print(header)
    for e in table:
        ratio = f"{e['ratio_to_native']:.2f}" if e["ratio_to_native"] is not None else "  -  "
        busy_text = (
            f"{e['busy_while_waiting']:.2f}" if e["busy_while_waiting"] is not None else "  - "
        )
        print(
            f"{e['scenario']:<26} {e['peak']:>2}/{e['limit']:<2} {e['makespan_seconds']:>7.1f}  "
            f"{ratio:>5}  {e['requests_per_branch']:>6.2f}  {e['durable_ops_per_branch']:>6.2f}"
            f"  {e['extra_ops_usd_per_million_branches']:>8.2f}  {busy_text}  "
            f"{e['jain_fairness']:.3f}  {e['invalid_pending']:>11}  {e['left']:>4}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
