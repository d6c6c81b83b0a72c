"""The chaos run: start worker processes, kill them, restart DynamoDB Local, replay the dead.

:func:`run_chaos` drives one run against one table and returns a :class:`ChaosReport` built
from the event logs alone (the observer's verdict, faults by kind, kills, replays). The tests
in this folder and ``bench/soak.py`` share it; they differ only in the plan's size.
:func:`queue_liveness_plan` is the run where, after the kills, only queued waiters are left
to bring a dead slot back; :func:`free_slot_bound` is what its longest free slot must meet.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tests.chaos.observer import EventLog, LogTail, Verdict, judge, read_events
from tests.chaos.workers import QUEUE_POLL, ReplayJob, WorkerSpec, Workload, worker_main

#: What a worker is doing after each of these events (the parent picks role kills by it).
_ROLE_AFTER = {"try": "waiter", "in": "holder", "out": None, "timeout": None, "done": None}


class RestartableDynamoDB:
    """A DynamoDB Local of its own whose data lives in ``db_path``; :meth:`restart` SIGKILLs
    it and starts it again on the same port and folder (clients keep their endpoint)."""

    def __init__(self, infra: Any, db_path: Path) -> None:
        self._infra = infra
        self.db_path = db_path
        self.proc: subprocess.Popen[bytes]
        self.proc, self.endpoint = infra.start(db_path=db_path)
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self.restart_seconds: list[float] = []

    def restart(self) -> None:
        began = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc, _ = self._infra.start(port=self.port, db_path=self.db_path)
        self.restart_seconds.append(time.monotonic() - began)

    def close(self) -> None:
        self._infra.stop_process(self.proc)


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    """One run. Every process slot does ``cycles`` cycles in all, across its reincarnations."""

    workload: Workload
    processes: int = 8
    cycles: int = 50
    #: Clock offsets (seconds) given to the process slots in turn: skewed clients.
    clock_offsets: tuple[float, ...] = (0.0,)
    #: Progress fractions at which the parent SIGKILLs a random worker, wherever it is.
    kills: tuple[float, ...] = ()
    #: Workers that SIGKILL themselves right after an acquire returned.
    self_kills: int = 0
    #: Share of dead workers whose holders a fresh process replays; the others' leases are
    #: left to expire (spread evenly: at 0.75, every fourth death is not replayed).
    replay_share: float = 1.0
    #: Progress fractions at which DynamoDB Local is SIGKILLed and restarted.
    restarts: tuple[float, ...] = ()
    seed: int = 0
    #: (delay, role) in order: ``delay`` seconds after the previous such kill (the first:
    #: after the start), SIGKILL a worker that is a "holder" (inside the critical section,
    #: chosen at random) or a "waiter" (the longest waiting, the next a hand-off would pick);
    #: when none is in that role yet, the first that is.
    role_kills: tuple[tuple[float, str], ...] = ()
    #: Workers start no new cycle this many seconds after the start (a run of set length).
    run_seconds: float | None = None


@dataclass
class ChaosReport:
    """What the logs say happened."""

    verdict: Verdict
    limit: int
    duration: float
    acquires: int = 0
    releases: int = 0
    refused: int = 0
    release_false: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    raised: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    self_kills: int = 0
    restarts: int = 0
    #: Dead workers that left holders behind, and how many of those were not replayed.
    dead_holding: int = 0
    not_replayed: int = 0
    replays: int = 0
    replayed_live: int = 0
    replayed_same_token: int = 0
    renewals: int = 0
    renew_lost: int = 0
    #: Acquires that returned a lease already expired on the worker's own clock (a request
    #: delayed in retries beyond the TTL). The observer counts no stay for them.
    stale_grants: int = 0
    #: Workers the parent killed, by what their own log says they were doing then.
    killed_holding: int = 0
    killed_waiting: int = 0
    #: Waits that gave up at the workload's deadline.
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        """Acquires that returned a lease plus releases that returned."""
        return self.acquires + self.releases

    @property
    def peak(self) -> int:
        return max(self.verdict.peaks.values(), default=0)

    @property
    def longest_free_slot(self) -> float:
        """Longest time (s) fewer than ``limit`` leases were in force while someone waited."""
        return self.verdict.longest_free_slot

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return (
            f"{self.operations} operations ({self.acquires} acquires, {self.releases} "
            f"releases, {self.refused} refusals) in {self.duration:.1f} s; faults: {faults}; "
            f"errors surfaced to workers: {sum(self.raised.values())}; kills: {self.kills} "
            f"by the parent + {self.self_kills} in the critical section; DynamoDB restarts: "
            f"{self.restarts}; dead with holders {self.dead_holding}, {self.not_replayed} of "
            f"them left to expire; replays: {self.replays} ({self.replayed_same_token} of "
            f"{self.replayed_live} live leases found with their token); peak {self.peak} "
            f"(per key {self.verdict.peaks}) vs limit {self.limit}; overruns "
            f"{self.verdict.overruns}; releases returning False {self.release_false}; leases "
            f"expired on arrival {self.stale_grants}; killed holding {self.killed_holding}, "
            f"waiting {self.killed_waiting}; longest free slot while someone waited "
            f"{self.longest_free_slot:.2f} s (per key {self._free_per_key()}); longest wait "
            f"{self.verdict.longest_wait:.2f} s; waits timed out {self.timeouts}"
        )

    def _free_per_key(self) -> dict[str, float]:
        return {k: round(e - s, 2) for k, (s, e) in self.verdict.free_while_waiting.items()}


@dataclass
class _Slot:
    index: int
    cycles_left: int
    generation: int = 0


def _dead_holders(events: list[dict[str, Any]]) -> list[ReplayJob]:
    """Holders a killed worker tried or held and did not see released."""
    jobs: dict[str, ReplayJob] = {}
    for ev in events:
        holder = str(ev.get("h"))
        if ev["ev"] == "try":
            jobs[holder] = ReplayJob(ev["k"], holder)
        elif ev["ev"] == "in" and holder in jobs:
            jobs[holder] = ReplayJob(ev["k"], holder, ev["tok"], ev["exp"])
        elif ev["ev"] == "out" and holder in jobs:
            jobs[holder] = ReplayJob(jobs[holder].key, holder)  # the release may have landed
        elif ev["ev"] == "rel":
            jobs.pop(holder, None)
    return list(jobs.values())


def _context() -> Any:
    """Fork workers from a clean server process that has imported them once: a dead worker
    is replayed and replaced in milliseconds, not after a new interpreter's imports, and
    nothing is forked from a test process that may run threads."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.chaos.workers"])
    return ctx


class _Run:
    def __init__(
        self,
        plan: ChaosPlan,
        endpoint: str,
        table: str,
        logs: Path,
        server: Any,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.endpoint = endpoint
        self.table = table
        self.logs = logs
        self.server = server
        self.rng = random.Random(plan.seed)
        self.ctx = _context()
        self.workers: dict[BaseProcess, tuple[WorkerSpec, _Slot]] = {}
        self.replayers: dict[BaseProcess, WorkerSpec] = {}
        self.specs: list[WorkerSpec] = []
        self.tails: list[LogTail] = []
        self.self_kills_left = plan.self_kills
        self.kills = 0  # kills sent and not known to have missed
        self.victims: set[BaseProcess] = set()
        self.dead_holding = 0
        self.not_replayed = 0
        self.released = 0
        self.restarts_done = 0
        self.errors: list[str] = []
        self.began = time.monotonic()
        #: Each live worker's role ("waiter"/"holder") and since when, from its log.
        self.roles: dict[Path, tuple[str | None, float]] = {}
        self.role_kills = 0
        self.role_victims: set[BaseProcess] = set()
        self.last_role_kill = self.began

    def _spawn(self, spec: WorkerSpec) -> BaseProcess:
        self.specs.append(spec)
        self.tails.append(LogTail(spec.log_path))
        proc: BaseProcess = self.ctx.Process(target=worker_main, args=(spec,), daemon=True)
        proc.start()
        return proc

    def start_worker(self, slot: _Slot) -> None:
        worker_id = f"s{slot.index}g{slot.generation}"
        kill_at = None
        if self.self_kills_left > 0 and slot.cycles_left >= 4:
            self.self_kills_left -= 1
            kill_at = self.rng.randint(slot.cycles_left // 10, slot.cycles_left * 9 // 10 - 1)
        offsets = self.plan.clock_offsets
        spec = WorkerSpec(
            endpoint=self.endpoint,
            table=self.table,
            workload=self.plan.workload,
            log_path=self.logs / f"{worker_id}.log",
            worker_id=worker_id,
            seed=self.rng.randrange(2**32),
            cycles=slot.cycles_left,
            clock_offset=offsets[slot.index % len(offsets)],
            kill_at_cycle=kill_at,
            stop_at=None if self.plan.run_seconds is None else self.began + self.plan.run_seconds,
        )
        self.workers[self._spawn(spec)] = (spec, slot)

    def kill_one(self) -> None:
        """SIGKILL a random worker that has started work (not one still starting up)."""
        busy = [
            p
            for p, (spec, _) in self.workers.items()
            if p.is_alive() and p not in self.victims and spec.log_path.exists()
        ]
        if not busy:
            return
        victim = self.rng.choice(busy)
        self._kill(victim)
        self.victims.add(victim)
        self.kills += 1
        spec, _ = self.workers[victim]
        if spec.kill_at_cycle is not None:
            self.self_kills_left += 1  # its own kill goes to a later worker instead

    def _kill(self, victim: BaseProcess) -> None:
        """SIGKILL, and note the moment in the victim's own log (its last sign of life: a
        waiter's wait ends there for the observer)."""
        spec, _ = self.workers[victim]
        at = time.monotonic()
        victim.kill()
        log = EventLog(spec.log_path)
        log.write("killed", t=at)
        log.close()

    def kill_role(self, role: str) -> bool:
        """SIGKILL a worker in ``role`` ("holder": one at random; "waiter": the longest
        waiting); False when none is."""
        self.progress()  # the freshest roles
        found = [
            (self.roles[spec.log_path][1], p)
            for p, (spec, _) in self.workers.items()
            if p.is_alive()
            and p not in self.victims | self.role_victims
            and self.roles.get(spec.log_path, (None, 0.0))[0] == role
        ]
        if not found:
            return False
        if role == "waiter":
            victim = min(found, key=lambda f: f[0])[1]
        else:
            victim = self.rng.choice(found)[1]
        self._kill(victim)
        self.role_victims.add(victim)
        return True

    def reap_worker(self, proc: BaseProcess) -> None:
        spec, slot = self.workers.pop(proc)
        events = read_events(spec.log_path)
        if proc.exitcode == 0:
            if proc in self.victims:
                self.kills -= 1  # it had finished: the kill missed, send it again
            if proc in self.role_victims:
                self.role_kills -= 1
            return
        if proc.exitcode != -signal.SIGKILL:
            last = [ev for ev in events if ev["ev"] == "error"]
            self.errors.append(f"{spec.worker_id} exited {proc.exitcode}: {last[-1:]}")
            return
        if proc in self.victims and any(ev["ev"] == "kill" for ev in events):
            self.self_kills_left -= 1  # it had killed itself first after all
        jobs = _dead_holders(events)
        if jobs:
            self.dead_holding += 1
            skip = 1 - self.plan.replay_share
            if int(self.dead_holding * skip) > int((self.dead_holding - 1) * skip):
                self.not_replayed += 1
                jobs = []
        if jobs:
            replay = replace(
                spec,
                log_path=self.logs / f"{spec.worker_id}-replay.log",
                worker_id=f"{spec.worker_id}-replay",
                cycles=0,
                kill_at_cycle=None,
                replay=tuple(jobs),
            )
            self.replayers[self._spawn(replay)] = replay
        slot.cycles_left -= sum(1 for ev in events if ev["ev"] == "try")
        slot.generation += 1
        if slot.cycles_left > 0:
            self.start_worker(slot)

    def progress(self) -> float:
        for spec, tail in zip(self.specs, self.tails, strict=True):
            for ev in tail.new_events():
                kind = ev["ev"]
                self.released += kind == "rel"
                if kind in _ROLE_AFTER:
                    self.roles[spec.log_path] = (_ROLE_AFTER[kind], ev.get("t", 0.0))
        return self.released / (self.plan.processes * self.plan.cycles)

    def loop(self) -> None:
        for index in range(self.plan.processes):
            self.start_worker(_Slot(index, self.plan.cycles))
        told = time.monotonic()
        while self.workers or self.replayers:
            time.sleep(0.05)
            progress = self.progress()
            if self.on_progress is not None and time.monotonic() - told >= 10:
                self.on_progress(progress)
                told = time.monotonic()
            due = self.plan.restarts[self.restarts_done : self.restarts_done + 1]
            if due and progress >= due[0]:
                self.server.restart()
                self.restarts_done += 1
            due = self.plan.kills[self.kills : self.kills + 1]
            if due and progress >= due[0]:
                self.kill_one()
            role_due = self.plan.role_kills[self.role_kills : self.role_kills + 1]
            if (
                role_due
                and time.monotonic() >= self.last_role_kill + role_due[0][0]
                and self.kill_role(role_due[0][1])
            ):
                self.role_kills += 1
                self.last_role_kill = time.monotonic()
            for proc in [p for p in self.workers if not p.is_alive()]:
                proc.join()
                self.reap_worker(proc)
            for proc in [p for p in self.replayers if not p.is_alive()]:
                proc.join()
                spec = self.replayers.pop(proc)
                if proc.exitcode != 0:
                    self.errors.append(f"{spec.worker_id} exited {proc.exitcode}")

    def stop_all(self) -> None:
        for proc in [*self.workers, *self.replayers]:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=10)


def run_chaos(
    plan: ChaosPlan,
    endpoint: str,
    table: str,
    logs: Path,
    server: Any = None,
    *,
    on_progress: Callable[[float], None] | None = None,
) -> ChaosReport:
    """Run ``plan`` against ``table``; ``server`` (a :class:`RestartableDynamoDB`) is needed
    for restarts. Event logs go to the folder ``logs``; ``on_progress`` hears the share of
    cycles done every 10 s."""
    if plan.restarts and server is None:
        raise ValueError("restarts need a RestartableDynamoDB")
    logs.mkdir(parents=True, exist_ok=True)
    run = _Run(plan, endpoint, table, logs, server, on_progress)
    began = run.began
    try:
        run.loop()
    finally:
        run.stop_all()
    duration = time.monotonic() - began
    all_events = [read_events(spec.log_path) for spec in run.specs]
    report = ChaosReport(
        verdict=judge(all_events, plan.workload.limit),
        limit=plan.workload.limit,
        duration=duration,
        kills=run.kills + run.role_kills,
        dead_holding=run.dead_holding,
        not_replayed=run.not_replayed,
        restarts=run.restarts_done,
        errors=run.errors,
    )
    for ev in _flatten(all_events):
        _count(report, ev)
    for events in all_events:
        if any(ev["ev"] == "killed" for ev in events):
            role = _role_at_death(events)
            report.killed_holding += role == "holder"
            report.killed_waiting += role == "waiter"
    return report


def _role_at_death(events: list[dict[str, Any]]) -> str | None:
    role = None
    for ev in events:
        if ev["ev"] in _ROLE_AFTER:
            role = _ROLE_AFTER[ev["ev"]]
    return role


def _flatten(logs: list[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for events in logs:
        yield from events


def _count(report: ChaosReport, ev: dict[str, Any]) -> None:
    kind = ev["ev"]
    if kind == "in":
        report.acquires += 1
        report.refused += ev.get("r", 0)
        report.stale_grants += ev["end"] <= ev["t"]
    elif kind == "rel":
        report.releases += 1
        report.release_false += not ev["ok"]
    elif kind == "f":
        report.faults[ev["kind"]] += 1
    elif kind == "x":
        report.raised[f"{ev['op']}: {ev['err']}"] += 1
    elif kind == "replay":
        report.replays += 1
        report.replayed_live += bool(ev["live"])
        report.replayed_same_token += bool(ev["live"] and ev["same"])
        if ev["live"] and ev["same"] is False:
            report.errors.append(f"replay of {ev['h']} found a live lease with another token")
    elif kind == "kill":
        report.self_kills += 1
    elif kind == "timeout":
        report.timeouts += 1
    elif kind == "renew":
        report.renewals += 1
    elif kind == "renew-lost":
        report.renew_lost += 1
    elif kind == "error":
        report.errors.append(f"{ev['err']}\n{ev.get('tb', '')}")


#: Seconds over :func:`free_slot_bound` for the requests around a dead slot. Before it, the
#: hand-off that gave it to a dead waiter (release, queue read, hand-off transaction); after
#: it, the reclaim (counter read, lease query, transaction), the fill (queue query, hand-off)
#: and the head's claim at its next check-in; and the stretch can run into the other slot's
#: ordinary hand-off, a chain of the same kind. On two busy cores DynamoDB Local answers a
#: transaction in about 50 ms; an ordinary hand-off (one "out" to the next "in") took
#: 0.15 s at the median and up to 0.8 s there; one CI run on a machine busy with other test
#: runs measured 6.08 s against a 1 s slack (bound 6.03 s), hence 2 s. The control stays at
#: 14 s and more.
FREE_SLOT_SLACK = 2.0


def free_slot_bound(workload: Workload) -> float:
    """The target for the longest free slot while someone waited, without slack.

    A slot handed to a dead waiter (or a lease whose holder died before saying so) counts
    until its end, at most the lease TTL + 1 s away (expiries are whole seconds); everyone
    else may reclaim it once it is past its end by the skew margin; a queued waiter notices
    at its next check-in, one poll later. A dead holder's announced lease costs only the
    margin and the poll: the observer counts it in force until its end.
    """
    return workload.ttl_seconds + 1.0 + workload.clock_skew_seconds + QUEUE_POLL[1]


def queue_liveness_plan(
    kills: int,
    *,
    ttl: float = 3.0,
    margin: float = 1.0,
    processes: int = 8,
    limit: int = 2,
    hold: tuple[float, float] = (0.2, 0.4),
    queue_ttl: float = 2.0,
    blind: bool = False,
    seed: int = 0,
) -> ChaosPlan:
    """Holders and waiters SIGKILLed (waiter first, alternately) while every worker waits
    in the queue: no poller, no arrival that reconciles (``join_first``), no replay, no
    reaper. Only the queued waiters' check-ins can bring a dead slot back.

    Kills are spaced so that the slots they cost never overlap in time (the metric is about
    *fewer than limit* leases, so two dead slots at once would add up): a dead waiter's queue
    entry lives up to ``queue_ttl`` + 1 s after its last check-in, and a slot handed to it then
    stays lost for up to :func:`free_slot_bound`; a holder's lease ends no earlier than
    TTL - the longest hold after its kill. Each gap has 0.5 s for requests besides.
    ``blind`` is the control (waiters that do not look at the key); every wait gives up after
    twice the bound (a healthy wait, through one lost slot behind the queue, takes
    about 7 s), so a control whose queue is stuck still ends.
    """
    workload = Workload(
        keys=("live",),
        limit=limit,
        ttl_seconds=ttl,
        clock_skew_seconds=margin,
        hold=hold,
        queue_share=1.0,
        renew_share=0.0,  # a renew's end is logged after it applied: a kill between would hide it
        queue_ttl_seconds=queue_ttl,
        join_first=True,
        blind_waiters=blind,
    )
    bound = free_slot_bound(workload)
    workload = replace(workload, wait_deadline=2 * bound)
    poll = QUEUE_POLL[1]
    after_waiter = queue_ttl + 2.0 + margin + poll + hold[1] + 0.05 + 0.5
    after_holder = bound + 0.5
    delays, last_cost = [], 0.0
    for i in range(kills):
        waiter = i % 2 == 0
        if i == 0:
            delays.append((1.5, "waiter"))
        else:
            delays.append(
                (after_holder if waiter else after_waiter, "waiter" if waiter else "holder")
            )
        last_cost = queue_ttl + 1.0 + bound if waiter else bound
    return ChaosPlan(
        workload=workload,
        processes=processes,
        cycles=100_000,  # bounded by run_seconds
        role_kills=tuple(delays),
        replay_share=0.0,
        run_seconds=sum(d for d, _ in delays) + last_cost + 1.0,
        seed=seed,
    )
