"""The long chaos soak: the chaos suite's run (tests/chaos), scaled up.

Eight worker processes do at least 100,000 acquire/release operations against a DynamoDB Local
of their own (on disk), while botocore hooks inject throttling, connection errors and answers
lost after the write applied, the parent SIGKILLs workers at random, workers SIGKILL themselves
inside the critical section, the dead workers' holders are replayed from fresh processes, and
DynamoDB Local itself is SIGKILLed and restarted. Then, with faults off, it checks the end
state of every key, and runs the broken control store under the same observer.

A second phase kills holders and waiters while every worker waits in the queue and nothing
else (no poller, no newcomer that reconciles, no replay, no reaper) can bring a dead slot
back, and reports the longest time a slot sat free while someone waited, against TTL + 1 s
(whole-second expiry) + margin + one poll + slack; then the same with waiters that do not
look at the key, which must miss it.

A third phase runs one sharded key (its limit over several counter items) with faults and
kills, judged as a whole by the observer, then the same with shards that each take the whole
limit, which must be caught over-admitting.

Prints: operations, faults injected by kind, kills, restarts, peak observed vs limit, leaks,
the longest free slot vs its bound, and the duration. Exits 1 if the limit was exceeded,
anything leaked, a worker failed, or a free slot sat longer than the bound.

Run: ``make soak`` (``SOAK_ARGS="--cycles 500 --live-kills 4"`` for a quick one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives with the chaos tests

import boto3  # noqa: E402
from tests.chaos.faults import FaultRates  # noqa: E402
from tests.chaos.invariants import end_state, problems  # noqa: E402
from tests.chaos.run import (  # noqa: E402
    FREE_SLOT_SLACK,
    ChaosPlan,
    ChaosReport,
    RestartableDynamoDB,
    free_slot_bound,
    queue_liveness_plan,
    run_chaos,
)
from tests.chaos.workers import Workload  # noqa: E402
from tests.conftest import dynamodb_local  # noqa: E402

from durable_semaphore import DynamoDBSemaphore  # noqa: E402
from durable_semaphore.store import default_client_config  # noqa: E402
from durable_semaphore.store.shards import all_shards  # noqa: E402


def _spread(count: int) -> tuple[float, ...]:
    """``count`` progress fractions spread evenly over the run (none at its very ends)."""
    return tuple(round((i + 1) / (count + 1), 4) for i in range(count))


def _plan(args: argparse.Namespace) -> ChaosPlan:
    rate = args.fault_rate
    workload = Workload(
        keys=tuple(f"soak-{i}" for i in range(args.keys)),
        limit=args.limit,
        ttl_seconds=args.ttl,
        clock_skew_seconds=max(args.skew, 2.0),
        hold=(0.0, args.hold),
        faults=FaultRates(throttle=rate, connection=rate, lost=rate, surfaced=rate / 4),
        queue_share=0.2,
        renew_share=0.05,
        queue_ttl_seconds=30,
    )
    return ChaosPlan(
        workload=workload,
        processes=args.processes,
        cycles=args.cycles,
        clock_offsets=(0.0, args.skew) if args.skew else (0.0,),
        kills=_spread(args.kills),
        self_kills=args.self_kills,
        replay_share=args.replay_share,
        restarts=_spread(args.restarts),
        seed=args.seed,
    )


def _live_run(
    client: Any, server: RestartableDynamoDB, work: Path, plan: ChaosPlan, name: str
) -> ChaosReport:
    """One queue-only run on a table of its own."""
    table = f"{name}-{uuid.uuid4().hex[:8]}"
    DynamoDBSemaphore(table_name=table, client=client).create_table()
    return run_chaos(plan, server.endpoint, table, work / f"{name}-logs")


def _shard_plan(args: argparse.Namespace) -> ChaosPlan:
    """The shard phase: one key, a limit of 8 over 4 shards (2 slots each), faults and kills,
    with more processes than the limit, so that the control can show over-admission."""
    rate = args.fault_rate
    workload = Workload(
        keys=("soak-sharded",),
        limit=8,
        shards=4,
        ttl_seconds=args.ttl,
        clock_skew_seconds=2.0,
        hold=(0.0, max(args.hold, 0.02)),
        faults=FaultRates(throttle=rate, connection=rate, lost=rate, surfaced=rate / 4),
        queue_share=0.3,
        queue_ttl_seconds=30,
    )
    return ChaosPlan(
        workload=workload,
        processes=max(args.processes, 12),
        cycles=args.shard_cycles,
        kills=_spread(2),
        seed=args.seed + 1,
    )


def _end(client: Any, table: str, plan: ChaosPlan) -> tuple[list[dict[str, Any]], list[str]]:
    w = plan.workload
    states, found = [], []
    for key, limit in (s for k in w.keys for s in all_shards(k, w.limit, w.shards)):
        state = end_state(
            client,
            table,
            key,
            limit,
            beyond=max(plan.clock_offsets) + max(w.ttl_seconds, w.queue_ttl_seconds),
            clock_skew_seconds=w.clock_skew_seconds,
        )
        states.append(asdict(state))
        found.extend(problems(state, limit))
    return states, found


def _print(report: ChaosReport, canary: ChaosReport, states: list[dict[str, Any]]) -> None:
    print(f"operations:        {report.operations:,} ({report.acquires:,} acquires, "
          f"{report.releases:,} releases; {report.refused:,} refused attempts besides)",
          )  # fmt: skip
    print(f"duration:          {report.duration:,.1f} s "
          f"({report.operations / report.duration:,.0f} operations/s)")  # fmt: skip
    faults = ", ".join(f"{k} {v:,}" for k, v in sorted(report.faults.items()))
    print(f"faults injected:   {sum(report.faults.values()):,} ({faults})")
    print(f"errors surfaced:   {sum(report.raised.values()):,} to workers, each retried")
    print(f"kills:             {report.kills} random, {report.self_kills} inside the critical "
          f"section; {report.dead_holding} dead holding a holder id, {report.replays} replayed "
          f"({report.replayed_same_token} of {report.replayed_live} live leases found with their "
          f"token), {report.not_replayed} left to expire")  # fmt: skip
    print(f"DynamoDB restarts: {report.restarts}")
    print(f"peak vs limit:     {report.peak} vs {report.limit} (per key {report.verdict.peaks}); "
          f"control store: {canary.peak} vs {canary.limit}")  # fmt: skip
    print(f"free slot waited:  {report.longest_free_slot:.2f} s at most (not judged here: "
          "DynamoDB restarts, self-kills and replays)")  # fmt: skip
    print(f"leases stalled past their end (observer clipped): {report.verdict.overruns}; "
          f"expired on arrival: {report.stale_grants}; releases returning False: "
          f"{report.release_false}")  # fmt: skip
    for state in states:
        left, after = state["as_left"], state["after_reclaim"]
        print(f"end state {state['key']}: as left count {left['count']} / leases "
              f"{left['leases']} ({left['live_leases']} live) / queue {left['entries']}; after "
              f"expiry + reclaim ({state['freed']} freed): count {after['count']}, leases "
              f"{after['leases']}, queue {after['entries']}; probe {state['admitted']} of "
              f"{report.limit} admitted, one more "
              f"{'refused' if state['refused_extra'] else 'ADMITTED'}")  # fmt: skip


def _print_liveness(live: ChaosReport, blind: ChaosReport, bound: float) -> None:
    print(f"queue only:        {live.kills} kills ({live.killed_holding} holding, "
          f"{live.killed_waiting} waiting), {live.operations:,} operations in "
          f"{live.duration:.0f} s; peak {live.peak} vs {live.limit}; longest wait "
          f"{live.verdict.longest_wait:.2f} s, {live.timeouts} gave up")  # fmt: skip
    print(f"free slot waited:  {live.longest_free_slot:.2f} s at most vs bound {bound:.2f} s; "
          f"control (blind waiters): {blind.longest_free_slot:.2f} s, {blind.timeouts} waits "
          "gave up")  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=6400, help="cycles per process slot")
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--limit", type=int, default=3, help="the limit of each key")
    parser.add_argument("--ttl", type=float, default=10.0, help="lease TTL, seconds")
    parser.add_argument("--hold", type=float, default=0.005, help="longest hold, seconds")
    parser.add_argument("--fault-rate", type=float, default=0.02, help="per kind and request")
    parser.add_argument("--kills", type=int, default=20, help="random SIGKILLs by the parent")
    parser.add_argument("--self-kills", type=int, default=20, help="SIGKILLs after an acquire")
    parser.add_argument("--replay-share", type=float, default=0.75)
    parser.add_argument("--restarts", type=int, default=3, help="DynamoDB Local restarts")
    parser.add_argument("--skew", type=float, default=0.0, help="half the clocks this far ahead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--live-kills", type=int, default=12, help="queue-only phase: kills (0 skips the phase)"
    )
    parser.add_argument("--live-ttl", type=float, default=3.0, help="queue-only phase: TTL")
    parser.add_argument("--live-margin", type=float, default=1.0, help="its skew margin")
    parser.add_argument(
        "--live-slack", type=float, default=FREE_SLOT_SLACK, help="seconds over the bound"
    )
    parser.add_argument(
        "--shard-cycles", type=int, default=400, help="shard phase: cycles (0 skips the phase)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the event logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args(argv)
    plan = _plan(args)

    # On tmpfs when there is one: a SIGKILLed server's data survives in the file system either
    # way, and DynamoDB Local's file writes cost less there.
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=shm if shm.is_dir() else None))
    server = RestartableDynamoDB(dynamodb_local, work / "db")
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            config=default_client_config(),
        )
        table = f"soak-{uuid.uuid4().hex[:8]}"
        DynamoDBSemaphore(table_name=table, client=client).create_table()
        began = time.monotonic()

        def progress(done: float) -> None:
            print(f"  {done:6.1%} after {time.monotonic() - began:,.0f} s", flush=True)

        print(f"soak: {plan.processes} processes x {plan.cycles:,} cycles on {server.endpoint}")
        report = run_chaos(
            plan, server.endpoint, table, work / "logs", server, on_progress=progress
        )
        states, found = _end(client, table, plan)
        canary_table = f"canary-{uuid.uuid4().hex[:8]}"
        DynamoDBSemaphore(table_name=canary_table, client=client).create_table()
        # The control: the same observer on a store that ignores the limit, with holds long
        # enough that its over-admission shows whatever the machine's speed.
        broken = replace(plan.workload, broken=True, hold=(0.05, 0.1))
        canary_plan = ChaosPlan(workload=broken, processes=plan.processes, cycles=20)
        canary = run_chaos(canary_plan, server.endpoint, canary_table, work / "canary-logs")
        live = blind = None
        bound = 0.0
        if args.live_kills:
            live_plan = queue_liveness_plan(
                args.live_kills,
                ttl=args.live_ttl,
                margin=args.live_margin,
                processes=args.processes,
                seed=args.seed,
            )
            bound = free_slot_bound(live_plan.workload) + args.live_slack
            print(f"queue-only phase: {args.live_kills} kills, about {live_plan.run_seconds:.0f} s")
            live = _live_run(client, server, work, live_plan, "live")
            # The control: the same plan with check-ins that do not look at the key.
            blind_plan = replace(
                live_plan, workload=replace(live_plan.workload, blind_waiters=True)
            )
            blind = _live_run(client, server, work, blind_plan, "blind")
        sharded = unsplit = None
        shard_found: list[str] = []
        if args.shard_cycles:
            shard_plan = _shard_plan(args)
            print(f"shard phase: {shard_plan.processes} processes x {shard_plan.cycles} cycles")
            shard_table = f"sharded-{uuid.uuid4().hex[:8]}"
            DynamoDBSemaphore(table_name=shard_table, client=client).create_table()
            sharded = run_chaos(shard_plan, server.endpoint, shard_table, work / "sharded-logs")
            _shard_states, shard_found = _end(client, shard_table, shard_plan)
            unsplit_plan = replace(
                shard_plan,
                cycles=20,
                kills=(),
                workload=replace(shard_plan.workload, unsplit_shards=True, hold=(0.05, 0.1)),
            )
            unsplit = _live_run(client, server, work, unsplit_plan, "unsplit")
    finally:
        server.close()
    print(f"restart took {', '.join(f'{s:.1f}' for s in server.restart_seconds)} s")
    _print(report, canary, states)
    failed = [*report.errors, *found]
    if live is not None and blind is not None:
        _print_liveness(live, blind, bound)
        failed.extend(live.errors + blind.errors)
        if live.peak > live.limit:
            failed.append(f"queue only: peak {live.peak} over the limit {live.limit}")
        if live.longest_free_slot > bound:
            failed.append(f"a slot sat free {live.longest_free_slot:.2f} s (bound {bound:.2f})")
        if live.timeouts:
            failed.append(f"queue only: {live.timeouts} waits gave up")
        if blind.longest_free_slot <= bound:
            failed.append("blind waiters were not caught: the free-slot metric proves nothing")
    if sharded is not None and unsplit is not None:
        print(f"sharded key:       {sharded.operations:,} operations, {sharded.kills} kills, "
              f"faults {sum(sharded.faults.values()):,}; peak {sharded.peak} vs limit "
              f"{sharded.limit} over 4 shards; control (shards not splitting the limit): "
              f"peak {unsplit.peak}")  # fmt: skip
        failed.extend(sharded.errors + shard_found)
        if sharded.peak > sharded.limit:
            failed.append(f"sharded: peak {sharded.peak} over the limit {sharded.limit}")
        if unsplit.peak <= unsplit.limit:
            failed.append("unsplit shards were not caught: the shard phase proves nothing")
    if args.json:
        extra: dict[str, Any] = {}
        if live is not None and blind is not None:
            extra = {"queue_only": live.summary(), "blind": blind.summary(), "bound": bound}
        out = {"summary": report.summary(), "end_states": states, **extra}
        print(json.dumps(out, default=str))
    if report.peak > report.limit:
        failed.append(f"peak {report.peak} over the limit {report.limit}")
    if canary.peak <= canary.limit:
        failed.append("the control store was not caught: the observer proves nothing")
    print("leaks and failures: " + ("none" if not failed else "\n  " + "\n  ".join(failed)))
    if args.keep_logs:
        print(f"event logs: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
