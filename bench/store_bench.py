"""Micro-benchmark of the lease store on DynamoDB Local.

Prints:
* acquire+release cycles per second on one key, from 1 process and from 8 (median of rounds);
* DynamoDB capacity per uncontended cycle, read from ``ReturnConsumedCapacity=TOTAL``, at limit 5
  and at limit 1,000 with 500 holders present; with the real service's transactional billing
  (2x per item) next to the local figure, which under-reports transactions;
* for comparison, the write cost of the alternative "one item holding a map of holders" model.

Run: ``make bench`` (or ``python bench/store_bench.py --rounds 5``). Machines here are noisy:
quote medians and ratios, not single runs. ``--markdown`` prints the tables of
docs/benchmarks.md ("Lease store") instead, headed by the date and the command that made them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import default_client_config

ROOT = Path(__file__).resolve().parent.parent


def _infra() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dynamodb_local", ROOT / "infra" / "dynamodb_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=default_client_config(),
    )


class CapacityMeter:
    """Adds ReturnConsumedCapacity=TOTAL to every call and sums what DynamoDB reports."""

    def __init__(self, client: Any) -> None:
        self.read = 0.0
        self.write = 0.0
        self.billed_write = 0.0  # transactional writes cost 2x on the real service
        self.requests: dict[str, int] = {}
        events = client.meta.events
        events.register("provide-client-params.dynamodb.*", self._add_param)
        events.register("after-call.dynamodb.*", self._record)

    def _add_param(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _record(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        self.requests[name] = self.requests.get(name, 0) + 1
        consumed = parsed.get("ConsumedCapacity")
        if consumed is None:
            return
        entries = consumed if isinstance(consumed, list) else [consumed]
        for entry in entries:
            read = float(entry.get("ReadCapacityUnits", 0.0))
            write = float(entry.get("WriteCapacityUnits", 0.0))
            total = float(entry.get("CapacityUnits", 0.0))
            if not read and not write and total:
                # Some operations report only the total: attribute it by operation kind.
                if name in ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"):
                    read = total
                else:
                    write = total
            self.read += read
            self.write += write
            self.billed_write += write * (2 if name == "TransactWriteItems" else 1)

    def reset(self) -> None:
        self.read = self.write = self.billed_write = 0.0
        self.requests = {}


def measure_capacity(
    endpoint: str, table: str, limit: int, present: int, cycles: int
) -> dict[str, Any]:
    client = _client(endpoint)
    sem = DynamoDBSemaphore(table, client)
    key = f"cap-{limit}-{uuid.uuid4().hex[:6]}"
    arn = (
        "arn:aws:lambda:us-east-1:123456789012:function:example:$LATEST/durable-execution/"
        + uuid.uuid4().hex
    )
    for i in range(present):
        assert sem.try_acquire(key, f"{arn}#map#{i:05d}", limit, execution_arn=arn) is not None
    meter = CapacityMeter(client)
    for i in range(cycles):
        holder = f"{arn}#map#bench{i:05d}"
        assert sem.try_acquire(key, holder, limit, execution_arn=arn) is not None
        assert sem.release(key, holder)
    return {
        "limit": limit,
        "holders_present": present,
        "wcu_local": meter.write / cycles,
        "wcu_billed": meter.billed_write / cycles,
        "rcu": meter.read / cycles,
        "requests": {k: v / cycles for k, v in sorted(meter.requests.items())},
    }


def measure_map_model(endpoint: str, table: str, holders: int) -> float:
    """WCU of one write to a single item holding ``holders`` entries (the rejected model)."""
    client = _client(endpoint)
    meter = CapacityMeter(client)
    arn = (
        "arn:aws:lambda:us-east-1:123456789012:function:example:$LATEST/durable-execution/"
        + uuid.uuid4().hex
    )
    entries = {f"{arn}#map#{i:05d}": {"N": str(int(time.time()) + 86400)} for i in range(holders)}
    client.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"map-model-{holders}"},
            "sk": {"S": "#meta"},
            "holders": {"M": entries},
            "count": {"N": str(holders)},
        },
    )
    return meter.write


def _worker(
    endpoint: str, table: str, key: str, limit: int, seconds: float, ready: Any, go: Any, out: Any
) -> None:
    sem = DynamoDBSemaphore(table, _client(endpoint))
    sem.holders(key)  # connect and warm up before the clock starts
    me = uuid.uuid4().hex[:8]
    ready.put(me)
    go.wait()
    deadline = time.monotonic() + seconds
    done = refused = 0
    while time.monotonic() < deadline:
        holder = f"{me}-{done}"
        if sem.try_acquire(key, holder, limit) is None:
            refused += 1
            continue
        sem.release(key, holder)
        done += 1
    out.put((done, refused))


def measure_throughput(
    endpoint: str, table: str, processes: int, limit: int, seconds: float
) -> tuple[float, int]:
    """Cycles per second over all processes, all started together after warming up."""
    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    key = f"tp-{processes}-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(target=_worker, args=(endpoint, table, key, limit, seconds, ready, go, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    done = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    return done / seconds, refused


def _thousands(n: int) -> str:
    return f"{n:,}"


def markdown(report: dict[str, Any], command: list[str], day: str | None = None) -> str:
    """The report as the Markdown tables of docs/benchmarks.md, under a line that says which
    command made them and on which day (UTC)."""
    day = day or datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [f"Measured {day} with `{' '.join(command)}`:", ""]
    lines += [
        "| limit | holders present | requests per cycle | WCU (DynamoDB Local) "
        "| WCU billed by AWS | RCU |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["capacity_per_cycle"]:
        reqs = " + ".join(f"{v:g} \u00d7 {k}" for k, v in c["requests"].items()) or "-"
        lines.append(
            f"| {_thousands(c['limit'])} | {_thousands(c['holders_present'])} | {reqs} "
            f"| {c['wcu_local']:.1f} | {c['wcu_billed']:.1f} | {c['rcu']:g} |"
        )
    lines += [
        "",
        "| holders in the item | WCU per write | WCU per cycle (2 writes) |",
        "|---|---|---|",
    ]
    for n, wcu in report["map_model_wcu_per_write"].items():
        lines.append(f"| {_thousands(int(n))} | {wcu:g} | {2 * wcu:g} |")
    throughput = report["throughput"]
    limits = sorted({int(name.split("limit")[1]) for name in throughput})
    processes = sorted({int(name.split("p_")[0]) for name in throughput})
    lines += [
        "",
        "| processes | " + " | ".join(f"limit {_thousands(x)}" for x in limits) + " |",
        "|---" * (len(limits) + 1) + "|",
    ]
    for p in processes:
        cells = [
            f"{throughput[f'{p}p_limit{x}']['median_cycles_per_s']:.1f}"
            if f"{p}p_limit{x}" in throughput
            else "-"
            for x in limits
        ]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="lease store micro-benchmark")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median taken)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput round")
    parser.add_argument("--cycles", type=int, default=50, help="cycles per capacity measurement")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument(
        "--markdown", action="store_true", help="print the tables of docs/benchmarks.md"
    )
    args = parser.parse_args(argv)

    infra = _infra()
    with infra.running() as endpoint:
        table = "bench-" + uuid.uuid4().hex[:8]
        DynamoDBSemaphore(table, _client(endpoint)).create_table()
        capacity = [
            measure_capacity(endpoint, table, 5, 0, args.cycles),
            measure_capacity(endpoint, table, 1000, 500, args.cycles),
        ]
        map_model = {n: measure_map_model(endpoint, table, n) for n in (5, 100, 500)}
        throughput: dict[str, Any] = {}
        for processes in (1, 8):
            for limit in (5, 1000):
                rates, refusals = [], []
                for _ in range(args.rounds):
                    rate, refused = measure_throughput(
                        endpoint, table, processes, limit, args.seconds
                    )
                    rates.append(rate)
                    refusals.append(refused)
                throughput[f"{processes}p_limit{limit}"] = {
                    "median_cycles_per_s": statistics.median(rates),
                    "rounds": [round(r, 1) for r in rates],
                    "median_refused_attempts": statistics.median(refusals),
                }

    report = {
        "capacity_per_cycle": capacity,
        "map_model_wcu_per_write": map_model,
        "throughput": throughput,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.markdown:
        print(markdown(report, ["python", "bench/store_bench.py", *argv]), end="")
        return 0
    print("Capacity per uncontended acquire+release cycle (ReturnConsumedCapacity=TOTAL):")
    print(
        f"  {'limit':>6} {'holders':>8} {'WCU local':>10} {'WCU billed':>11} {'RCU':>6}  requests"
    )
    for c in capacity:
        reqs = ", ".join(f"{k} {v:g}" for k, v in c["requests"].items())
        print(
            f"  {c['limit']:>6} {c['holders_present']:>8} {c['wcu_local']:>10.2f}"
            f" {c['wcu_billed']:>11.2f} {c['rcu']:>6.2f}  {reqs}"
        )
    print("  (billed: the real service charges transactional writes 2x; DynamoDB Local reports 1x)")
    print("One write to a single item holding a map of N holders (the rejected model):")
    for n, wcu in map_model.items():
        print(f"  N={n:<4} {wcu:.0f} WCU per write, x2 per cycle")
    print(f"Throughput on one key (median of {args.rounds} rounds of {args.seconds:g} s):")
    for name, t in throughput.items():
        print(
            f"  {name:<14} {t['median_cycles_per_s']:8.1f} cycles/s  rounds {t['rounds']}"
            f"  refused {t['median_refused_attempts']:g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
