"""Micro-benchmark of the lease store on DynamoDB Local.

Prints, at the store's defaults (lease TTL, queue TTL, shard count ``min_shards(limit)``):

* write units per uncontended acquire+release cycle, read from ``ReturnConsumedCapacity=TOTAL``
  (what DynamoDB Local reports) and as the real service would bill them (worked out per item
  from the items' sizes before and after each write, see :class:`CapacityMeter`): at limits 5
  and 50 with the SDK's holder ids (``<execution ARN>#<operation id>#<branch>``) and 0, 4 or
  limit - 1 other holders present, since the counter item grows with its leases; and at limit
  1,000 with 500 holders present, sharded (at most 100 slots per counter item) with the
  default shard count and with more;
* the contended path: a refused acquire, an enqueue, a check-in, a hand-off, the claim of the
  slot handed over, and the release of a holder that waited, in requests and billed WCU;
* the write units each counter item takes per second at the targets set for the store, and the
  per-key ceiling they imply on the service (1,000 WCU/s per partition);
* the old data model (two 2-item transactions per cycle) against this one;
* acquire+release cycles per second on DynamoDB Local, from 1 and 8 processes, at limit 5 and
  on a sharded limit of 1,000 (also with the limit kept full), with the peak in flight seen by
  an observer outside the store: each worker returns when it held each lease, by the machine's
  monotonic clock, and the parent computes the largest overlap.

Run: ``make bench`` (or ``python bench/store_bench.py --rounds 5``). Machines here are noisy:
quote medians and ratios, not single runs. ``--markdown`` prints the tables of
docs/benchmarks.md ("Lease store") instead, headed by the date and the command that made them;
``--json`` the whole report.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import importlib.util
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import default_client_config
from durable_semaphore.store.shards import MAX_SLOTS_PER_SHARD, min_shards, placement

ROOT = Path(__file__).resolve().parent.parent
PARTITION_WCU_PER_S = 1000
#: The targets: cycles per second one key must reach on the service.
TARGET_UNSHARDED = 500
TARGET_SHARDED = 2000
#: The model this store replaced (before commit 8da187a): an acquire and a release were
#: each a TransactWriteItems of 2 small items, 2 billed WCU per item.
OLD_MODEL = {"requests": "2 \u00d7 TransactWriteItems (2 items each)", "wcu_billed": 8.0}
#: A worker keeping many leases gives one back after this many refusals in a row.
REFUSALS_BEFORE_RELEASE = 3
#: At most this long to fill the limit before a kept-full run's clock starts.
FILL_SECONDS = 120.0
WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem")
READ_OPS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")


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


# -- the SDK's holder ids ----------------------------------------------------------------------


def execution_arn() -> str:
    """A durable execution ARN as the service names them."""
    return (
        "arn:aws:lambda:us-east-1:123456789012:function:payments-workflow:$LATEST"
        f"/durable-execution/{uuid.uuid4()}/{uuid.uuid4()}"
    )


def operation_id() -> str:
    """An operation id as the SDK makes them (64 hex digits of a blake2b digest)."""
    return hashlib.blake2b(uuid.uuid4().bytes).hexdigest()[:64]


def holder_id(arn: str, op: str, branch: int) -> str:
    """The SDK integration's holder id of one branch (``DynamoDBLimiter.holder_id``)."""
    return f"{arn}#{op}#{branch}"


def callback_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes * 3).decode()


# -- capacity ----------------------------------------------------------------------------------


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value by DynamoDB's item-size rules."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_size(inner)
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size(s) for s in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    """Bytes of an item by DynamoDB's rules (attribute names plus values); 0 for no item."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Standard write units of a write of an item of ``size`` bytes (1 KB each, at least 1)."""
    return max(1, math.ceil(size / 1024))


def _key_of(params: dict[str, Any]) -> dict[str, Any]:
    if "Key" in params:
        return dict(params["Key"])
    return {"pk": params["Item"]["pk"], "sk": params["Item"]["sk"]}


class CapacityMeter:
    """Adds ReturnConsumedCapacity=TOTAL to every call of ``client``, sums what DynamoDB Local
    reports, and works out what the real service would bill.

    The bill follows DynamoDB's rules: a single-item write costs 1 WCU per KB of the larger of
    the item before and after it (a refused conditional write too, by the item's size); a
    ``TransactWriteItems`` costs 2 WCU per KB of each of its items (ConditionCheck included).
    The item sizes come from strongly consistent reads by a second client before and after
    each write, which the meter does not count. DynamoDB Local reports single-item writes that
    way (the meter checks they agree), but a transaction as 2 WCU per KB of all its items
    together (2.0 for 1 to 4 small items alike), so its own figure under-reports every
    transaction of more than one small item.
    """

    def __init__(self, client: Any, shadow: Any) -> None:
        self.shadow = shadow
        self.read = 0.0
        self.write = 0.0
        self.billed_write = 0.0
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        #: Single-item writes where DynamoDB Local's figure and the computed one differ.
        self.disagreements = 0
        self._pending: list[tuple[str, dict[str, Any], int, int]] = []
        events = client.meta.events
        events.register("provide-client-params.dynamodb.*", self._before)
        events.register("after-call.dynamodb.*", self._record)

    def _size_now(self, table: str, key: dict[str, Any]) -> int:
        got = self.shadow.get_item(TableName=table, Key=key, ConsistentRead=True)
        return item_size(got.get("Item"))

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        touched: list[tuple[str, dict[str, Any], int]] = []
        if model.name in WRITE_OPS:
            put = item_size(params["Item"]) if "Item" in params else 0
            touched.append((params["TableName"], _key_of(params), put))
        elif model.name == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((_kind, inner),) = entry.items()
                put = item_size(inner["Item"]) if "Item" in inner else 0
                touched.append((inner["TableName"], _key_of(inner), put))
        self._pending = [(t, k, p, self._size_now(t, k)) for t, k, p in touched]

    def _record(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        self.requests[name] += 1
        pending, self._pending = self._pending, []
        code = parsed.get("Error", {}).get("Code")
        if code:
            self.errors[code] += 1
        local_write = 0.0
        consumed = parsed.get("ConsumedCapacity")
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        for entry in entries:
            read = float(entry.get("ReadCapacityUnits", 0.0))
            write = float(entry.get("WriteCapacityUnits", 0.0))
            total = float(entry.get("CapacityUnits", 0.0))
            if not read and not write and total:
                # Some operations report only the total: attribute it by operation kind.
                if name in READ_OPS:
                    read = total
                else:
                    write = total
            self.read += read
            local_write += write
        self.write += local_write
        if not pending:
            return
        applied = not code
        units = 0
        for table, key, put, before in pending:
            after = self._size_now(table, key) if applied else 0
            units += write_units(max(before, after, put if applied else 0))
        if name == "TransactWriteItems":
            units *= 2
        elif applied and units != local_write:
            self.disagreements += 1
        self.billed_write += units

    def reset(self) -> None:
        self.read = self.write = self.billed_write = 0.0
        self.requests = Counter()
        self.errors = Counter()
        self.disagreements = 0


class Bench:
    """One table on one DynamoDB Local; a metered client and an unmetered one."""

    def __init__(self, endpoint: str, table: str) -> None:
        self.endpoint = endpoint
        self.table = table
        self.plain = _client(endpoint)
        client = _client(endpoint)
        self.meter = CapacityMeter(client, self.plain)
        self.sem = DynamoDBSemaphore(table, client)  # metered
        self.setup = DynamoDBSemaphore(table, self.plain)  # not metered

    def meta_size(self, key: str) -> int:
        got = self.plain.get_item(
            TableName=self.table,
            Key={"pk": {"S": key}, "sk": {"S": "#meta"}},
            ConsistentRead=True,
        )
        return item_size(got.get("Item"))


def _per(meter: CapacityMeter, n: int) -> dict[str, Any]:
    return {
        "wcu_local": meter.write / n,
        "wcu_billed": meter.billed_write / n,
        "rcu": meter.read / n,
        "requests": {k: v / n for k, v in sorted(meter.requests.items())},
        "errors": {k: v / n for k, v in sorted(meter.errors.items())},
    }


def measure_capacity(
    bench: Bench, limit: int, present: int, cycles: int, shards: int = 1
) -> dict[str, Any]:
    """Billed and reported capacity of one uncontended cycle with ``present`` other holders
    (each of its own execution, as a named limiter's are) holding slots of the same limit."""
    key = f"cap-{limit}-{shards}-{uuid.uuid4().hex[:6]}"
    held: Counter[str] = Counter()
    while sum(held.values()) < present:
        arn = execution_arn()
        holder = holder_id(arn, operation_id(), 0)
        stored, share = placement(key, holder, limit, shards)
        if held[stored] >= share:
            continue  # its shard is full: a holder hashed there would wait
        assert bench.setup.try_acquire(stored, holder, share, execution_arn=arn) is not None
        held[stored] += 1
    arn, op = execution_arn(), operation_id()
    sizes: list[int] = []
    bench.meter.reset()
    branch = 0
    for _ in range(cycles):
        while True:
            holder = holder_id(arn, op, branch)
            branch += 1
            stored, share = placement(key, holder, limit, shards)
            if held[stored] < share:
                break
        assert bench.sem.try_acquire(stored, holder, share, execution_arn=arn) is not None
        meter_state = (bench.meter.requests.copy(), bench.meter.errors.copy())
        sizes.append(bench.meta_size(stored))  # the plain client: not metered
        assert (bench.meter.requests, bench.meter.errors) == meter_state
        assert bench.sem.release(stored, holder)
    row = {
        "limit": limit,
        "shards": shards,
        "holders_present": present,
        "counter_item_bytes": statistics.median(sizes),
        **_per(bench.meter, cycles),
    }
    row["disagreements"] = bench.meter.disagreements
    return row


def measure_contended(bench: Bench, limit: int, rounds: int) -> dict[str, Any]:
    """What waiting costs, step by step, on a key kept full of ``limit`` holders.

    Each round: a newcomer is refused (``try_acquire``), joins the queue as the SDK
    integration does after a refusal (``acquire(queue_first=True)`` with a callback id), checks
    in once (``acquire(position=...)``); the oldest holder releases (``release_slot``, as a
    holder that did not wait), which hands its slot over; the waiter claims it
    (``acquire(position=...)`` again). The waiter then releases as a holder that waited
    (``waiters_likely=True``) with nobody queued, and the key is filled up again unmetered.
    """
    key = f"contended-{limit}-{uuid.uuid4().hex[:6]}"
    holders: list[tuple[str, str, str | None]] = []
    for _ in range(limit):
        arn = execution_arn()
        holder = holder_id(arn, operation_id(), 0)
        lease = bench.setup.try_acquire(key, holder, limit, execution_arn=arn)
        assert lease is not None
        holders.append((holder, arn, lease.token))
    steps = ("refused", "enqueue", "check-in", "hand-off", "claim", "release after waiting")
    totals: dict[str, dict[str, Any]] = {}
    sizes: list[int] = []

    def step(name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        bench.meter.reset()
        out = call(key, *args, **kwargs)
        one = _per(bench.meter, 1)
        acc = totals.setdefault(name, {"wcu_local": 0.0, "wcu_billed": 0.0, "rcu": 0.0})
        acc["wcu_local"] += one["wcu_local"]
        acc["wcu_billed"] += one["wcu_billed"]
        acc["rcu"] += one["rcu"]
        acc.setdefault("requests", Counter()).update(bench.meter.requests)
        acc.setdefault("errors", Counter()).update(bench.meter.errors)
        return out

    sem = bench.sem
    for _ in range(rounds):
        sizes.append(bench.meta_size(key))
        arn = execution_arn()
        waiter = holder_id(arn, operation_id(), 0)
        mine = {"execution_arn": arn}
        cb = callback_id()
        refused = step("refused", sem.try_acquire, waiter, limit, **mine)
        assert refused is None, refused
        queued = step(
            "enqueue", sem.acquire, waiter, limit, callback_id=cb, queue_first=True, **mine
        )
        assert queued.queued, queued
        again = step(
            "check-in", sem.acquire, waiter, limit, callback_id=cb, position=queued.position, **mine
        )
        assert again.queued, again
        releaser, _, token = holders.pop(0)
        released = step("hand-off", sem.release_slot, releaser, token=token)
        assert released.released and released.grant is not None, released
        assert released.grant.holder == waiter, released
        claimed = step("claim", sem.acquire, waiter, limit, position=queued.position, **mine)
        assert claimed.lease is not None, claimed
        freed = step(
            "release after waiting",
            sem.release_slot,
            waiter,
            waiters_likely=True,
            token=claimed.lease.token,
        )
        assert freed.released and freed.grant is None, freed
        arn = execution_arn()
        holder = holder_id(arn, operation_id(), 0)
        lease = bench.setup.try_acquire(key, holder, limit, execution_arn=arn)
        assert lease is not None
        holders.append((holder, arn, lease.token))
    out: dict[str, Any] = {
        "limit": limit,
        "rounds": rounds,
        "counter_item_bytes": statistics.median(sizes),
    }
    out["steps"] = {
        name: {
            "wcu_local": totals[name]["wcu_local"] / rounds,
            "wcu_billed": totals[name]["wcu_billed"] / rounds,
            "rcu": totals[name]["rcu"] / rounds,
            "requests": {k: v / rounds for k, v in sorted(totals[name]["requests"].items())},
            "errors": {k: v / rounds for k, v in sorted(totals[name]["errors"].items())},
        }
        for name in steps
    }
    return out


def ceilings(capacity: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: the WCU each counter item takes per second at the target rate and
    the per-key ceiling at 1,000 WCU/s per item (a key of ``shards`` items: ``shards`` times
    that, the shards being separate partition keys)."""
    rows = []
    for c in capacity:
        wcu = c["wcu_billed"]
        per_item = PARTITION_WCU_PER_S / wcu
        target = (
            TARGET_SHARDED
            if c["shards"] > 1 or c["limit"] > MAX_SLOTS_PER_SHARD
            else TARGET_UNSHARDED
        )
        rows.append(
            {
                "limit": c["limit"],
                "shards": c["shards"],
                "holders_present": c["holders_present"],
                "wcu_billed_per_cycle": wcu,
                "cycles_per_s_per_item": per_item,
                "target_cycles_per_s": target,
                "wcu_per_item_per_s_at_target": target * wcu / c["shards"],
                "ceiling_cycles_per_s": c["shards"] * per_item,
                "meets_target": c["shards"] * per_item >= target,
            }
        )
    return rows


# -- throughput --------------------------------------------------------------------------------


def _worker(
    endpoint: str,
    table: str,
    key: str,
    limit: int,
    shards: int,
    inflight: int,
    seconds: float,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """Cycles on one logical key until the deadline. With ``inflight`` > 1 it keeps up to
    that many leases at once (releasing the oldest at that mark, or after a few refusals in a
    row), so the processes together keep the limit full (filled before the clock starts).
    Returns, for the observer, the (acquired, released) monotonic instants of every lease it
    held: after ``try_acquire`` returned, before ``release`` was sent."""
    sem = DynamoDBSemaphore(table, _client(endpoint))
    sem.holders(key)  # connect and warm up before the clock starts
    arn, op = execution_arn(), operation_id()
    ready.put(arn)
    go.wait()
    done = refused = not_released = 0
    held: list[tuple[str, str, float]] = []
    spans: list[tuple[float, float]] = []

    def release_oldest() -> None:
        nonlocal done, not_released
        stored, holder, since = held.pop(0)
        spans.append((since, time.monotonic()))
        if sem.release(stored, holder):
            done += 1
        else:
            not_released += 1

    branch = streak = 0

    def take() -> bool:
        nonlocal branch, refused, streak
        holder = holder_id(arn, op, branch)
        branch += 1
        stored, share = placement(key, holder, limit, shards)
        if sem.try_acquire(stored, holder, share, execution_arn=arn) is None:
            refused += 1
            streak += 1
            return False
        streak = 0
        held.append((stored, holder, time.monotonic()))
        return True

    if inflight > 1:
        # Fill up to the mark first (untimed): the limit is full when the clock starts.
        fill_until = time.monotonic() + FILL_SECONDS
        while len(held) < inflight and streak < 10 and time.monotonic() < fill_until:
            take()
        refused = streak = 0
    deadline = time.monotonic() + seconds
    done = not_released = 0
    while time.monotonic() < deadline:
        if not take():
            # Its shard is full: try another holder id (another shard), and only after a few
            # refusals in a row give a slot back, so the limit stays as full as it gets.
            if held and streak >= REFUSALS_BEFORE_RELEASE:
                release_oldest()
                streak = 0
            continue
        if len(held) >= inflight:
            release_oldest()
    cycles = done  # the timed ones; the leases still held are released after the clock
    while held:
        release_oldest()
    out.put((cycles, refused, not_released, spans))


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an acquire at the very instant of another's
    release counts both)."""
    events = sorted([(a, 0) for a, _ in spans] + [(b, 1) for _, b in spans])
    now = peak = 0
    for _, kind in events:
        now += 1 if kind == 0 else -1
        peak = max(peak, now)
    return peak


def measure_throughput(
    endpoint: str,
    table: str,
    processes: int,
    limit: int,
    seconds: float,
    shards: int = 1,
    inflight: int = 1,
) -> dict[str, Any]:
    """Cycles per second over all processes, all started together after warming up, and the
    peak in flight seen by the observer."""
    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    key = f"tp-{processes}-{limit}-{uuid.uuid4().hex[:6]}"
    args = (endpoint, table, key, limit, shards, inflight, seconds, ready, go, out)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    results = [out.get(timeout=seconds + FILL_SECONDS + 300) for _ in procs]
    for p in procs:
        p.join()
    spans = [span for r in results for span in r[3]]
    return {
        "cycles_per_s": sum(r[0] for r in results) / seconds,
        "refused": sum(r[1] for r in results),
        "not_released": sum(r[2] for r in results),
        "peak_in_flight": peak_overlap(spans),
    }


def throughput_runs(shards_1000: int, processes_all: int) -> list[dict[str, Any]]:
    """(name, processes, limit, shards, in flight per process) of each throughput run."""
    full = math.ceil(1.25 * 1000 / processes_all)
    return [
        {"name": "limit 5", "processes": 1, "limit": 5, "shards": 1, "inflight": 1},
        {"name": "limit 5", "processes": processes_all, "limit": 5, "shards": 1, "inflight": 1},
        {
            "name": "limit 1,000 sharded",
            "processes": 1,
            "limit": 1000,
            "shards": shards_1000,
            "inflight": 1,
        },
        {
            "name": "limit 1,000 sharded",
            "processes": processes_all,
            "limit": 1000,
            "shards": shards_1000,
            "inflight": 1,
        },
        {
            "name": "limit 1,000 sharded, kept full",
            "processes": processes_all,
            "limit": 1000,
            "shards": shards_1000,
            "inflight": full,
        },
    ]


# -- report ------------------------------------------------------------------------------------


def _thousands(n: float) -> str:
    return f"{n:,.0f}"


def _reqs(requests: dict[str, float], errors: dict[str, float] | None = None) -> str:
    text = " + ".join(f"{v:g} \u00d7 {k}" for k, v in requests.items()) or "-"
    if errors:
        text += " (" + ", ".join(f"{v:g} {k}" for k, v in errors.items()) + ")"
    return text


def _kb(size: float) -> str:
    return f"{size / 1024:.1f}"


def contended_total(contended: dict[str, Any]) -> dict[str, float]:
    steps = contended["steps"]
    names = ("refused", "enqueue", "hand-off", "claim", "release after waiting")
    return {
        "requests": sum(sum(steps[n]["requests"].values()) for n in names),
        "wcu_billed": sum(steps[n]["wcu_billed"] for n in names),
    }


def markdown(report: dict[str, Any], command: list[str], day: str | None = None) -> str:
    """The report as the Markdown tables of docs/benchmarks.md, under a line that says which
    command made them and on which day (UTC)."""
    day = day or datetime.datetime.now(datetime.UTC).date().isoformat()
    cfg = report.get("config", {})
    how = (
        f" (capacity: {cfg['cycles']} cycles each; throughput: median of {cfg['rounds']} rounds"
        f" of {cfg['seconds']:g} s)"
        if cfg
        else ""
    )
    stamp = f"measured {day} with `{' '.join(command)}`{how}"
    lines = [f"M{stamp[1:]}:", ""]
    lines += [
        "| limit | shards | holders present | counter item | requests per cycle "
        "| WCU (DynamoDB Local) | WCU billed by AWS | ceiling per key |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_config = {(c["limit"], c["shards"], c["holders_present"]): c for c in report["ceilings"]}
    for c in report["capacity_per_cycle"]:
        ceiling = by_config[(c["limit"], c["shards"], c["holders_present"])]
        lines.append(
            f"| {_thousands(c['limit'])} | {c['shards']} | {_thousands(c['holders_present'])} "
            f"| {_kb(c['counter_item_bytes'])} KB | {_reqs(c['requests'])} "
            f"| {c['wcu_local']:.1f} | **{c['wcu_billed']:.1f}** "
            f"| {_thousands(ceiling['ceiling_cycles_per_s'])} cycles/s |"
        )
    contended = report["contended"]
    lines += [
        "",
        f"Contended path at limit {contended['limit']} (key full, counter item "
        f"{_kb(contended['counter_item_bytes'])} KB; mean of {contended['rounds']} rounds), "
        f"{stamp}:",
        "",
        "| step | requests | WCU (DynamoDB Local) | WCU billed by AWS | RCU |",
        "|---|---|---|---|---|",
    ]
    for name, s in contended["steps"].items():
        lines.append(
            f"| {name} | {_reqs(s['requests'], s['errors'])} | {s['wcu_local']:.1f} "
            f"| {s['wcu_billed']:.1f} | {s['rcu']:g} |"
        )
    total = contended_total(contended)
    lines.append(
        f"| **a waited-for cycle** (all but the check-in) | {total['requests']:g} "
        f"| | **{total['wcu_billed']:.1f}** | |"
    )
    lines += [
        "",
        f"Per-key ceilings on the service (1,000 WCU/s per partition key), {stamp}:",
        "",
        "| key | billed WCU per cycle | target | WCU/s per counter item at the target "
        "| ceiling per key (1,000 WCU/s per item) |",
        "|---|---|---|---|---|",
    ]
    for r in report["ceilings"]:
        config = f"limit {_thousands(r['limit'])}, {_thousands(r['holders_present'])} present"
        if r["shards"] > 1:
            config += f", {r['shards']} shards"
        mark = "" if r["meets_target"] else " (below target)"
        lines.append(
            f"| {config} | {r['wcu_billed_per_cycle']:.1f} "
            f"| {_thousands(r['target_cycles_per_s'])} cycles/s "
            f"| {_thousands(r['wcu_per_item_per_s_at_target'])} "
            f"| {_thousands(r['ceiling_cycles_per_s'])} cycles/s{mark} |"
        )
    old, new = report["old_vs_new"]["old"], report["old_vs_new"]["new"]
    lines += [
        "",
        f"The model this store replaced, against it, {stamp}:",
        "",
        "| model | requests per uncontended cycle | billed WCU per cycle | ceiling per key |",
        "|---|---|---|---|",
        f"| before (two 2-item transactions, 0.1) | {old['requests']} "
        f"| {old['wcu_billed']:.0f} | {_thousands(old['ceiling'])} cycles/s |",
        f"| now (a lease is an attribute of the counter item), limit 5 | {new['requests']} "
        f"| {new['wcu_billed']:.1f} | {_thousands(new['ceiling'])} cycles/s |",
    ]
    lines += [
        "",
        f"Throughput on DynamoDB Local, peak in flight from an outside observer, {stamp}:",
        "",
        "| run | processes | limit | shards | cycles/s (median) | refused (median) "
        "| observed peak in flight |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["throughput"]:
        lines.append(
            f"| {t['name']} | {t['processes']} | {_thousands(t['limit'])} | {t['shards']} "
            f"| {t['median_cycles_per_s']:.1f} | {t['median_refused']:g} "
            f"| {_thousands(t['peak_in_flight'])} of {_thousands(t['limit'])} |"
        )
    return "\n".join(lines) + "\n"


def _print_report(report: dict[str, Any], rounds: int, seconds: float) -> None:
    print("Capacity per uncontended acquire+release cycle (ReturnConsumedCapacity=TOTAL):")
    print(
        f"  {'limit':>6} {'shards':>6} {'present':>8} {'item KB':>8} {'WCU local':>10}"
        f" {'WCU billed':>11} {'RCU':>5}  requests"
    )
    for c in report["capacity_per_cycle"]:
        print(
            f"  {c['limit']:>6} {c['shards']:>6} {c['holders_present']:>8}"
            f" {_kb(c['counter_item_bytes']):>8} {c['wcu_local']:>10.2f}"
            f" {c['wcu_billed']:>11.2f} {c['rcu']:>5.2f}  {_reqs(c['requests'])}"
        )
    print(
        "  (billed: 1 WCU per KB of the larger of the item before and after a write, 2 per KB of\n"
        "  each item of a transaction; DynamoDB Local reports a transaction as 2 per KB of all\n"
        "  its items together. Limit 1,000 cannot be one item: at most"
        f" {MAX_SLOTS_PER_SHARD} slots per counter item, default shards = min_shards(1000) ="
        f" {min_shards(1000)}.)"
    )
    disagree = sum(c["disagreements"] for c in report["capacity_per_cycle"])
    if disagree:
        print(f"  ! {disagree} single-item writes where Local's WCU and the computed bill differ")
    contended = report["contended"]
    print(
        f"Contended path at limit {contended['limit']}, key full (counter item"
        f" {_kb(contended['counter_item_bytes'])} KB; mean of {contended['rounds']} rounds):"
    )
    for name, s in contended["steps"].items():
        print(
            f"  {name:<22} WCU local {s['wcu_local']:5.2f}  billed {s['wcu_billed']:5.2f}"
            f"  RCU {s['rcu']:4.1f}  {_reqs(s['requests'], s['errors'])}"
        )
    total = contended_total(contended)
    print(
        f"  a waited-for cycle (refused, enqueue, hand-off, claim, release):"
        f" {total['requests']:g} requests, {total['wcu_billed']:.1f} billed WCU;"
        f" each check-in adds {contended['steps']['check-in']['wcu_billed']:.1f}"
    )
    print(
        f"Per-key ceiling on the service ({PARTITION_WCU_PER_S} WCU/s per partition, so per"
        " counter item):"
    )
    for r in report["ceilings"]:
        config = f"limit {r['limit']}, {r['holders_present']} present, {r['shards']} shard(s)"
        verdict = "meets" if r["meets_target"] else "BELOW"
        print(
            f"  {config:<36} {r['wcu_billed_per_cycle']:5.2f} WCU/cycle ->"
            f" {r['wcu_per_item_per_s_at_target']:7.0f} WCU/s per item at"
            f" {r['target_cycles_per_s']} cycles/s; ceiling {r['ceiling_cycles_per_s']:7.0f}"
            f" cycles/s ({verdict} the target {r['target_cycles_per_s']})"
        )
    old, new = report["old_vs_new"]["old"], report["old_vs_new"]["new"]
    print("Old model against the new (uncontended cycle, limit 5, nobody else present):")
    print(
        f"  before: {old['requests']}, {old['wcu_billed']:.0f} billed WCU,"
        f" {old['ceiling']:.0f} cycles/s per key"
    )
    print(
        f"  now:    {new['requests']}, {new['wcu_billed']:.1f} billed WCU,"
        f" {new['ceiling']:.0f} cycles/s per key ({new['factor']:.1f}x)"
    )
    print(
        f"Throughput on DynamoDB Local (median of {rounds} rounds of {seconds:g} s); peak in flight"
        " from an observer outside the store:"
    )
    for t in report["throughput"]:
        flag = "" if t["peak_in_flight"] <= t["limit"] else "  !! OVER THE LIMIT"
        print(
            f"  {t['name']:<31} {t['processes']}p shards {t['shards']:<3}"
            f" {t['median_cycles_per_s']:8.1f} cycles/s  rounds {t['rounds']}"
            f"  refused {t['median_refused']:g}  peak {t['peak_in_flight']}/{t['limit']}{flag}"
            + (f"  not released {t['not_released']}" if t["not_released"] else "")
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="lease store micro-benchmark")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median taken)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput round")
    parser.add_argument("--cycles", type=int, default=50, help="cycles per capacity measurement")
    parser.add_argument("--processes", type=int, default=8, help="processes of the parallel runs")
    parser.add_argument(
        "--shards", default="50,100", help="shard counts besides the default for limit 1,000"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument(
        "--markdown", action="store_true", help="print the tables of docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    default_shards = min_shards(1000)
    extra_shards = [int(s) for s in args.shards.split(",") if s]

    infra = _infra()
    with infra.running() as endpoint:
        table = "bench-" + uuid.uuid4().hex[:8]
        DynamoDBSemaphore(table, _client(endpoint)).create_table()
        bench = Bench(endpoint, table)
        capacity = [
            measure_capacity(bench, limit, present, args.cycles)
            for limit, present in ((5, 0), (5, 4), (50, 0), (50, 4), (50, 49))
        ]
        for shards in (default_shards, *extra_shards):
            capacity.append(measure_capacity(bench, 1000, 500, args.cycles, shards))
        contended = measure_contended(bench, 5, max(3, args.cycles // 5))
        throughput: list[dict[str, Any]] = []
        for run in throughput_runs(default_shards, args.processes):
            results = [
                measure_throughput(
                    endpoint,
                    table,
                    run["processes"],
                    run["limit"],
                    args.seconds,
                    run["shards"],
                    run["inflight"],
                )
                for _ in range(args.rounds)
            ]
            throughput.append(
                {
                    **run,
                    "median_cycles_per_s": statistics.median(r["cycles_per_s"] for r in results),
                    "rounds": [round(r["cycles_per_s"], 1) for r in results],
                    "median_refused": statistics.median(r["refused"] for r in results),
                    "peak_in_flight": max(r["peak_in_flight"] for r in results),
                    "not_released": sum(r["not_released"] for r in results),
                }
            )

    bounds = ceilings(capacity)
    new = capacity[0]
    new_wcu = new["wcu_billed"]
    report = {
        "config": {
            "cycles": args.cycles,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "processes": args.processes,
        },
        "capacity_per_cycle": capacity,
        "contended": contended,
        "ceilings": bounds,
        "old_vs_new": {
            "old": {**OLD_MODEL, "ceiling": PARTITION_WCU_PER_S / OLD_MODEL["wcu_billed"]},
            "new": {
                "requests": _reqs(new["requests"]),
                "wcu_billed": new_wcu,
                "ceiling": PARTITION_WCU_PER_S / new_wcu,
                "factor": OLD_MODEL["wcu_billed"] / new_wcu,
            },
        },
        "throughput": throughput,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.markdown:
        print(markdown(report, ["python", "bench/store_bench.py", *argv]), end="")
        return 0
    _print_report(report, args.rounds, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
