"""Side-by-side benchmark: this store against dynamo-dlm, on the same DynamoDB Local.

One run, one DynamoDB Local, one table per library. For each (processes, limit) in
{1, 8} x {5, 1000} it runs timed rounds of hot-key try-acquire plus release with no hold. Three
systems take turns, and the order rotates every round so that drift on a noisy machine hits all
alike:

* ``ours``: ``DynamoDBSemaphore.try_acquire`` then ``release`` on the holder's shard of the key
  (``placement`` with the default shard count, ``min_shards(limit)``: 1 at limit 5, 10 at
  limit 1,000); uncontended, one conditional ``UpdateItem`` each;
* ``dlm-reused``: dynamo-dlm with one ``DynamoDbLock`` per worker process, reused: its best case;
* ``dlm-fresh``: dynamo-dlm as its README uses it, a new ``DynamoDbLock`` per cycle (each one
  builds its own ``boto3.resource("dynamodb")``, and so its own connection).

dynamo-dlm's counting primitive is ``DynamoDbLock(resource_id, concurrency=limit,
wait_forever=False)``: ``limit`` slot items under one partition key, probed in order with a
conditional PutItem until one is free or expired, released with a conditional DeleteItem. A
refused ``acquire()`` leaves the object unusable (its ``release_code`` stays set), so after a
refusal ``dlm-reused`` clears that private field, the cheapest way on (favouring dynamo-dlm).

It prints, per configuration:

* the median cycles/s of each system and the ratios ours/dlm-reused and ours/dlm-fresh;
* requests per completed cycle (every HTTP attempt, counted with a botocore ``before-send``
  hook), split by operation, the errors among them, and the refused attempts per cycle;
* where the time goes: wall time per cycle as one process sees it, client CPU per cycle (all
  worker processes, ``time.process_time``), server CPU per cycle (the DynamoDB Local JVM, from
  ``/proc``; unknown when ``DYNAMODB_LOCAL_ENDPOINT`` points at a server we did not start) and
  the machine's idle share;
* the write capacity the real service would bill per cycle for those requests: a
  PutItem/UpdateItem/DeleteItem as DynamoDB Local reports it with ``ReturnConsumedCapacity``
  (1 WCU per KB of the item; a refused conditional write, which reports nothing, as 1), 2 WCU
  per item of a TransactWriteItems; and from it the per-key ceiling at 1,000 WCU/s per
  partition (for ours at limit 1,000: per shard, times the shards).

dynamo-dlm (PyPI, GPL-3.0-or-later) is a bench-only dependency, the ``bench`` extra; nothing in
src/ imports it. Without it the script exits with status 2.

Run: ``make bench-peer`` (or ``python bench/peer_bench.py --rounds 5 --seconds 3 --json``).
Machines here are noisy: quote medians and ratios, not single runs. ``--markdown`` prints the
tables of docs/benchmarks.md ("Peer comparison") instead, headed by the date and the command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from durable_semaphore.store.shards import min_shards, placement

ROOT = Path(__file__).resolve().parent.parent
OURS = "ours"
DLM_REUSED = "dlm-reused"
DLM_FRESH = "dlm-fresh"
SYSTEMS = (OURS, DLM_REUSED, DLM_FRESH)
LABELS = {
    OURS: "durable-semaphore",
    DLM_REUSED: "dynamo-dlm, one lock object per worker",
    DLM_FRESH: "dynamo-dlm, a new DynamoDbLock per cycle",
}
TTL_SECONDS = 60
PARTITION_WCU_PER_S = 1000
WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem")
REGION = "us-east-1"


def _infra() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dynamodb_local", ROOT / "infra" / "dynamodb_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dlm_version() -> str | None:
    if importlib.util.find_spec("dynamo_dlm") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dynamo-dlm")
    except PackageNotFoundError:
        return "unknown"


def _store_version() -> str:
    """The commit the measured store comes from, marked when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted src/" if dirty else "")


def _aws_env(endpoint: str) -> None:
    """dynamo-dlm builds its own ``boto3.resource("dynamodb")``: point it here by environment."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)


class RequestMeter:
    """Counts every HTTP attempt by operation, the billed write units they imply, and errors."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.wcu_billed = 0.0

    def attach(self, events: Any) -> None:
        events.register("provide-client-params.dynamodb", self._add_param)
        events.register("before-send.dynamodb", self._before_send)
        events.register("after-call.dynamodb", self._after_call)

    def _add_param(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in WRITE_OPS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before_send(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        op = target.rsplit(".", 1)[-1] or "?"
        self.requests[op] += 1
        if op in WRITE_OPS:
            self.wcu_billed += 1
        elif op == "TransactWriteItems":
            body = request.body
            if isinstance(body, bytes):
                body = body.decode()
            self.wcu_billed += 2 * len(json.loads(body or "{}").get("TransactItems", []))
        # Returning None lets the request go out.

    def _after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code")
        if code:
            self.errors[code] += 1
        if model.name in WRITE_OPS:
            # before-send counted 1 WCU: add what an item over 1 KB costs beyond it.
            consumed = parsed.get("ConsumedCapacity") or {}
            reported = float(
                consumed.get("WriteCapacityUnits") or consumed.get("CapacityUnits") or 0
            )
            self.wcu_billed += max(0.0, reported - 1)

    def reset(self) -> None:
        self.requests.clear()
        self.errors.clear()
        self.wcu_billed = 0.0


# -- worker processes -------------------------------------------------------------------------


class _Ours:
    def __init__(self, endpoint: str, table: str, meter: RequestMeter) -> None:
        import boto3

        from durable_semaphore import DynamoDBSemaphore
        from durable_semaphore.store import default_client_config

        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=default_client_config(),
        )
        meter.attach(client.meta.events)
        self.sem = DynamoDBSemaphore(table, client)

    def prepare(self, key: str, limit: int) -> None:
        self.key, self.limit = key, limit
        self.shards = min_shards(limit)

    def try_cycle(self, holder: str) -> bool:
        key, share = placement(self.key, holder, self.limit, self.shards)
        if self.sem.try_acquire(key, holder, share, TTL_SECONDS) is None:
            return False
        self.sem.release(key, holder)
        return True


class _Theirs:
    """dynamo-dlm, either reusing one lock object or building one per cycle (its README's way:
    ``with DynamoDbLock(resource_id): ...``; each object builds its own boto3 resource)."""

    def __init__(self, table: str, fresh: bool) -> None:
        import dynamo_dlm

        self.dlm = dynamo_dlm
        self.table = table
        self.fresh = fresh

    def _new_lock(self) -> Any:
        return self.dlm.DynamoDbLock(
            self.key,
            duration=TTL_SECONDS,
            table_name=self.table,
            concurrency=self.limit,
            wait_forever=False,
        )

    def prepare(self, key: str, limit: int) -> None:
        self.key, self.limit = key, limit
        self.lock = self._new_lock()

    def try_cycle(self, holder: str) -> bool:
        if self.fresh:
            self.lock = self._new_lock()
        try:
            self.lock.acquire()
        except self.dlm.LockNotAcquiredError:
            # A refused acquire leaves release_code set and the object refusing to acquire again
            # ("Cannot reacquire lock that hasn't been released yet"). Clearing that private
            # field is the cheapest way on; a fresh object costs a boto3 resource.
            self.lock._release_code = None
            return False
        self.lock.release()
        return True


def _worker(index: int, endpoint: str, tables: dict[str, str], commands: Any, out: Any) -> None:
    import boto3

    meter = RequestMeter()
    ours = _Ours(endpoint, tables[OURS], meter)
    _aws_env(endpoint)
    boto3.setup_default_session()
    # Clients copy the session's handlers when created, so every resource that dynamo-dlm builds
    # from the default session carries the meter.
    meter.attach(boto3.DEFAULT_SESSION.events)
    systems: dict[str, Any] = {
        OURS: ours,
        DLM_REUSED: _Theirs(tables[DLM_REUSED], fresh=False),
        DLM_FRESH: _Theirs(tables[DLM_FRESH], fresh=True),
    }
    me = f"w{index}-{uuid.uuid4().hex[:6]}"
    n = 0
    while True:
        cmd = commands.get()
        if cmd is None:
            return
        system_name, key, limit, seconds = cmd
        system = systems[system_name]
        system.prepare(key, limit)
        # Warm up: connect, and build whatever lazily loads on the first call.
        for _ in range(2):
            n += 1
            system.try_cycle(f"{me}-warm-{n}")
        out.put(("ready", index))
        start_at = commands.get()
        meter.reset()
        time.sleep(max(0.0, start_at - time.time()))
        cpu0, t0 = time.process_time(), time.monotonic()
        deadline = t0 + seconds
        done = refused = 0
        while time.monotonic() < deadline:
            n += 1
            if system.try_cycle(f"{me}-{n}"):
                done += 1
            else:
                refused += 1
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        out.put(
            (
                "done",
                {
                    "index": index,
                    "done": done,
                    "refused": refused,
                    "elapsed": elapsed,
                    "cpu": cpu,
                    "requests": dict(meter.requests),
                    "errors": dict(meter.errors),
                    "wcu_billed": meter.wcu_billed,
                },
            )
        )


class Probe:
    """CPU seconds of the DynamoDB Local JVM (None when we did not start it) and of the whole
    machine, from /proc: enough to tell client from server and to see idle cores."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def server_seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # After "(comm)" the fields start at field 3 (state); utime is 14 and stime 15.
        return (int(fields[11]) + int(fields[12])) / self.tick

    def machine(self) -> tuple[float, float] | None:
        """(busy, idle) CPU seconds of all cores so far."""
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()
        except OSError:
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice, inside user]
        values = [int(v) for v in first[1:9]]
        idle = values[3] + values[4]
        return (sum(values) - idle) / self.tick, idle / self.tick


class Pool:
    """Long-lived workers, so that no round pays for spawning interpreters."""

    def __init__(self, size: int, endpoint: str, tables: dict[str, str], probe: Probe) -> None:
        ctx = mp.get_context("spawn")
        self.probe = probe
        self.out = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(size)]
        self.procs = [
            ctx.Process(target=_worker, args=(i, endpoint, tables, self.commands[i], self.out))
            for i in range(size)
        ]
        for p in self.procs:
            p.start()

    def _get(self, kind: str) -> Any:
        got_kind, value = self.out.get(timeout=180)
        assert got_kind == kind, (got_kind, kind)
        return value

    def run_round(self, system: str, processes: int, limit: int, seconds: float) -> dict[str, Any]:
        key = f"peer-{system}-{processes}p-{limit}-{uuid.uuid4().hex[:8]}"
        for q in self.commands[:processes]:
            q.put((system, key, limit, seconds))
        for _ in range(processes):
            self._get("ready")
        start_at = time.time() + 0.2
        for q in self.commands[:processes]:
            q.put(start_at)
        time.sleep(max(0.0, start_at - time.time()))
        server0, machine0 = self.probe.server_seconds(), self.probe.machine()
        results = [self._get("done") for _ in range(processes)]
        server1, machine1 = self.probe.server_seconds(), self.probe.machine()
        requests: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for r in results:
            requests.update(r["requests"])
            errors.update(r["errors"])
        idle = None
        if machine0 is not None and machine1 is not None:
            busy, free = machine1[0] - machine0[0], machine1[1] - machine0[1]
            idle = free / (busy + free) if busy + free > 0 else None
        return {
            "system": system,
            "cycles_per_s": sum(r["done"] / r["elapsed"] for r in results),
            "cycles": sum(r["done"] for r in results),
            "refused": sum(r["refused"] for r in results),
            "process_seconds": sum(r["elapsed"] for r in results),
            "client_cpu_s": sum(r["cpu"] for r in results),
            "server_cpu_s": None if server0 is None or server1 is None else server1 - server0,
            "machine_idle": idle,
            "requests": dict(requests),
            "errors": dict(errors),
            "wcu_billed": sum(r["wcu_billed"] for r in results),
        }

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


# -- set-up and report ----------------------------------------------------------------------


def _create_tables(endpoint: str) -> dict[str, str]:
    import boto3

    from durable_semaphore import DynamoDBSemaphore

    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    suffix = uuid.uuid4().hex[:8]
    dlm_table = f"peer-dlm-{suffix}"
    tables = {OURS: f"peer-ours-{suffix}", DLM_REUSED: dlm_table, DLM_FRESH: dlm_table}
    DynamoDBSemaphore(tables[OURS], client).create_table()
    # dynamo-dlm ships no table creation: its README asks for this key schema.
    client.create_table(
        TableName=dlm_table,
        KeySchema=[
            {"AttributeName": "resource_id", "KeyType": "HASH"},
            {"AttributeName": "concurrency_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "resource_id", "AttributeType": "S"},
            {"AttributeName": "concurrency_id", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=dlm_table)
    return tables


def _summarise(rounds: list[dict[str, Any]], items: int = 1) -> dict[str, Any]:
    """Totals per completed cycle; ``items``: the partition keys the key spreads over (ours
    shards a limit over 100 into ``min_shards(limit)`` keys)."""
    cycles = sum(r["cycles"] for r in rounds) or 1
    requests: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in rounds:
        requests.update(r["requests"])
        errors.update(r["errors"])
    server = [r["server_cpu_s"] for r in rounds]
    idle = [r["machine_idle"] for r in rounds if r["machine_idle"] is not None]
    wcu = sum(r["wcu_billed"] for r in rounds) / cycles
    return {
        "median_cycles_per_s": statistics.median(r["cycles_per_s"] for r in rounds),
        "rounds": [round(r["cycles_per_s"], 1) for r in rounds],
        "requests_per_cycle": sum(requests.values()) / cycles,
        "requests_by_op_per_cycle": {k: v / cycles for k, v in sorted(requests.items())},
        "errors_per_cycle": {k: v / cycles for k, v in sorted(errors.items())},
        "refused_per_cycle": sum(r["refused"] for r in rounds) / cycles,
        "wall_ms_per_cycle_per_process": 1000 * sum(r["process_seconds"] for r in rounds) / cycles,
        "client_cpu_ms_per_cycle": 1000 * sum(r["client_cpu_s"] for r in rounds) / cycles,
        "server_cpu_ms_per_cycle": (
            None if None in server else 1000 * sum(s for s in server if s is not None) / cycles
        ),
        "machine_idle_median": statistics.median(idle) if idle else None,
        "wcu_billed_per_cycle": wcu,
        "ceiling_cycles_per_s_per_key": items * PARTITION_WCU_PER_S / wcu if wcu else None,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _fmt_ratio(ratio: float | None) -> str:
    return f"{'?':>9}" if ratio is None else f"{ratio:>8.2f}x"


def _fmt_ms(value: float | None) -> str:
    return "    ?" if value is None else f"{value:5.2f}"


def _fmt_ops(ops: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in ops.items()) or "-"


def _print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"Hot key, try-acquire + release, no hold: median cycles/s of {cfg['rounds']} rounds of"
        f" {cfg['seconds']:g} s, systems alternating; dynamo-dlm {cfg['dynamo_dlm_version']};"
        f" {os.cpu_count()} CPUs; store at {cfg['store_version']}"
    )
    for system in SYSTEMS:
        print(f"  {system:<10} = {LABELS[system]}")
    print(
        f"  {'config':<13} {OURS:>8} {DLM_REUSED:>10} {DLM_FRESH:>10}"
        f"  {'ours/reused':>11} {'ours/fresh':>10}"
    )
    for name, row in report["results"].items():
        rates = [row[s]["median_cycles_per_s"] for s in SYSTEMS]
        print(
            f"  {name:<13} {rates[0]:8.1f} {rates[1]:10.1f} {rates[2]:10.1f}"
            f"  {_fmt_ratio(row['ratio_vs_reused']):>11} {_fmt_ratio(row['ratio_vs_fresh']):>10}"
        )
    print()
    print(
        "Per completed cycle (totals over the rounds): requests, wall time one process waits,"
        " client CPU (all workers), server CPU (DynamoDB Local), billed WCU, refused attempts;"
        " machine idle share:"
    )
    for name, row in report["results"].items():
        for system in SYSTEMS:
            s = row[system]
            idle = s["machine_idle_median"]
            print(
                f"  {name:<13} {system:<10} req {s['requests_per_cycle']:5.2f}"
                f"  wall {s['wall_ms_per_cycle_per_process']:6.2f} ms"
                f"  client {_fmt_ms(s['client_cpu_ms_per_cycle'])} ms"
                f"  server {_fmt_ms(s['server_cpu_ms_per_cycle'])} ms"
                f"  WCU {s['wcu_billed_per_cycle']:5.2f}"
                f"  refused {s['refused_per_cycle']:.2f}"
                f"  idle {'?' if idle is None else f'{idle:.0%}'}"
            )
            print(f"  {'':<13} {'':<10} ops: {_fmt_ops(s['requests_by_op_per_cycle'])}")
            if s["errors_per_cycle"]:
                print(f"  {'':<13} {'':<10} errors: {_fmt_ops(s['errors_per_cycle'])}")
    print()
    print(
        f"Per-key ceiling on the real service: {PARTITION_WCU_PER_S} WCU/s per partition / billed"
        " WCU per cycle (1 per KB written, failed conditional writes 1, transactional writes 2x;"
        " ours at a limit over 100: times its shards):"
    )
    for name, row in report["results"].items():
        parts = []
        for system in SYSTEMS:
            ceiling = row[system]["ceiling_cycles_per_s_per_key"]
            parts.append(f"{system} {ceiling:.0f}" if ceiling else f"{system} ?")
        print(f"  {name:<13} " + "   ".join(parts) + "  cycles/s")


def _md_ratio(ratio: float | None) -> str:
    return "?" if ratio is None else f"{ratio:.2f}\u00d7"


def _md_ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} ms"


def _md_requests(s: dict[str, Any]) -> str:
    text = " + ".join(f"{v:.2f} {op}" for op, v in s["requests_by_op_per_cycle"].items())
    notes = [f"{s['refused_per_cycle']:.2f} refused"] if s["refused_per_cycle"] else []
    notes += [f"{v:.2f} {code}" for code, v in s["errors_per_cycle"].items()]
    return text + (f" ({', '.join(notes)})" if notes else "")


def markdown(report: dict[str, Any], command: list[str], day: str | None = None) -> str:
    """The report as the Markdown tables of docs/benchmarks.md, under a line that says which
    command made them, on which day (UTC) and on which store commit."""
    day = day or datetime.datetime.now(datetime.UTC).date().isoformat()
    cfg = report["config"]
    results = report["results"]

    def config(name: str) -> tuple[str, str]:
        processes, limit = name.split("p_limit")
        return processes, f"{int(limit):,}"

    lines = [
        f"Measured {day} with `{' '.join(command)}` (store at {cfg['store_version']}, "
        f"dynamo-dlm {cfg['dynamo_dlm_version']}; median of {cfg['rounds']} rounds of "
        f"{cfg['seconds']:g} s):",
        "",
        f"| processes | limit | {OURS} | {DLM_REUSED} | {DLM_FRESH} "
        f"| {OURS} / {DLM_REUSED} | {OURS} / {DLM_FRESH} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        processes, limit = config(name)
        rates = " | ".join(f"{row[s]['median_cycles_per_s']:.1f}" for s in SYSTEMS)
        lines.append(
            f"| {processes} | {limit} | {rates} | {_md_ratio(row['ratio_vs_reused'])} "
            f"| {_md_ratio(row['ratio_vs_fresh'])} |"
        )
    lines += [
        "",
        f"Per completed cycle, the same run (measured {day} with `{' '.join(command)}`):",
        "",
        "| processes | limit | system | requests per cycle | wall | client CPU | server CPU "
        "| machine idle | billed WCU | ceiling per key |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        processes, limit = config(name)
        for system in SYSTEMS:
            s = row[system]
            idle = s["machine_idle_median"]
            ceiling = s["ceiling_cycles_per_s_per_key"]
            lines.append(
                f"| {processes} | {limit} | {system} | {_md_requests(s)} "
                f"| {_md_ms(s['wall_ms_per_cycle_per_process'])} "
                f"| {_md_ms(s['client_cpu_ms_per_cycle'])} "
                f"| {_md_ms(s['server_cpu_ms_per_cycle'])} "
                f"| {'?' if idle is None else f'{idle:.0%}'} | {s['wcu_billed_per_cycle']:.2f} "
                f"| {'?' if not ceiling else f'{ceiling:.0f} cycles/s'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="durable-semaphore vs dynamo-dlm, side by side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per system (median taken)")
    parser.add_argument("--seconds", type=float, default=2.5, help="seconds per round")
    parser.add_argument("--processes", default="1,8", help="comma-separated process counts")
    parser.add_argument("--limits", default="5,1000", help="comma-separated limits")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="untimed seconds per system first (JVM JIT)"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument(
        "--markdown", action="store_true", help="print the tables of docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    processes_list = [int(p) for p in args.processes.split(",")]
    limits = [int(x) for x in args.limits.split(",")]

    dlm_version = _dlm_version()
    if dlm_version is None:
        print(
            "dynamo-dlm is not installed: run `make bench-peer`, or"
            " `pip install 'dynamo-dlm==2.1.0'` (the project's `bench` extra).",
            file=sys.stderr,
        )
        return 2

    infra = _infra()
    given = os.environ.get("DYNAMODB_LOCAL_ENDPOINT")
    proc = None
    if given:
        endpoint, probe = given, Probe(None)
    else:
        proc, endpoint = infra.start()
        probe = Probe(proc.pid)
    pool = None
    try:
        tables = _create_tables(endpoint)
        pool = Pool(max(processes_list), endpoint, tables, probe)
        if args.warmup > 0:
            # DynamoDB Local's JIT warms up on whichever system runs first: give each a turn.
            for system in SYSTEMS:
                pool.run_round(system, max(processes_list), max(limits), args.warmup)
        results: dict[str, Any] = {}
        for processes in processes_list:
            for limit in limits:
                rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
                for r in range(args.rounds):
                    # Rotate the order every round: ours first, then second, then last, ...
                    shift = r % len(SYSTEMS)
                    for system in SYSTEMS[shift:] + SYSTEMS[:shift]:
                        rounds[system].append(
                            pool.run_round(system, processes, limit, args.seconds)
                        )
                row: dict[str, Any] = {
                    s: _summarise(rounds[s], min_shards(limit) if s == OURS else 1) for s in SYSTEMS
                }
                ours = row[OURS]["median_cycles_per_s"]
                row["ratio_vs_reused"] = _ratio(ours, row[DLM_REUSED]["median_cycles_per_s"])
                row["ratio_vs_fresh"] = _ratio(ours, row[DLM_FRESH]["median_cycles_per_s"])
                results[f"{processes}p_limit{limit}"] = row
                if not args.json:
                    print(
                        f"  ... {processes}p limit {limit}: "
                        + "; ".join(f"{s} {row[s]['rounds']}" for s in SYSTEMS),
                        file=sys.stderr,
                    )
    finally:
        if pool is not None:
            pool.close()
        if proc is not None:
            infra.stop_process(proc)

    report = {
        "config": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "dynamo_dlm_version": dlm_version,
            "store_version": _store_version(),
            "ttl_seconds": TTL_SECONDS,
            "systems": LABELS,
        },
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.markdown:
        print(markdown(report, ["python", "bench/peer_bench.py", *argv]), end="")
    else:
        _print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
