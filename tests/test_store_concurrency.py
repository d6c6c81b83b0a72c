"""Multi-process tests of the lease store on DynamoDB Local.

The judge is an independent observer, not the store: each worker records the interval during
which it *believed* it held a lease, on the machine-wide monotonic clock, from after
``try_acquire`` returned until just before ``release`` was sent. That interval lies inside the
real holding interval, so an observed overlap above the limit is a real violation. The control
run points the same harness at a deliberately broken store and must see one. The overlap count
is the demo's observer (``overlap_steps``), unit-tested in test_demo.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import random
import time
import uuid
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore, Lease
from durable_semaphore.demo.observer import overlap_steps
from tests.conftest import local_dynamodb_client

PROCESSES = 8
CYCLES = 250
LIMIT = 5
HOLD_MIN, HOLD_MAX = 0.04, 0.08  # seconds


class UnconditionalStore(DynamoDBSemaphore):
    """The canary: writes the lease without checking the limit, as a naive store would."""

    def try_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = 86_400,
        *,
        execution_arn: str | None = None,
    ) -> Lease | None:
        now = self.now()
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "pk": {"S": key},
                "sk": {"S": "h#" + holder},
                "holder": {"S": holder},
                "acquired_at": {"N": str(now)},
                "expires_at": {"N": str(int(now + ttl_seconds) + 1)},
            },
        )
        return Lease(key, holder, now, now + ttl_seconds)

    def release(self, key: str, holder: str) -> bool:
        self.client.delete_item(
            TableName=self.table_name, Key={"pk": {"S": key}, "sk": {"S": "h#" + holder}}
        )
        return True


def _cycle_worker(
    endpoint: str,
    table: str,
    key: str,
    worker: int,
    cycles: int,
    broken: bool,
    barrier: Barrier,
    out: Any,
) -> None:
    store_cls = UnconditionalStore if broken else DynamoDBSemaphore
    sem = store_cls(table_name=table, client=local_dynamodb_client(endpoint))
    rng = random.Random(worker)
    intervals: list[tuple[float, float]] = []
    refused = 0
    barrier.wait()
    for cycle in range(cycles):
        holder = f"w{worker}-c{cycle}"
        while sem.try_acquire(key, holder, LIMIT, ttl_seconds=300) is None:
            refused += 1
            time.sleep(rng.uniform(0, 0.002))
        start = time.monotonic()
        # Hold it long against the round trip, so the key stays full and every release is raced
        # by the waiting workers' acquires: that boundary is where a store would over-admit.
        time.sleep(rng.uniform(HOLD_MIN, HOLD_MAX))
        end = time.monotonic()
        released = sem.release(key, holder)
        intervals.append((start, end))
        if not released:
            out.put(("error", f"{holder}: release returned False for a held lease"))
    out.put(("intervals", intervals, refused))


def _share_at(steps: list[tuple[float, int]], level: int) -> float:
    """Fraction of the run during which the observer saw exactly ``level`` holders."""
    at_level = sum(t_next - t for (t, n), (t_next, _) in itertools.pairwise(steps) if n == level)
    return at_level / (steps[-1][0] - steps[0][0])


def _run_harness(
    endpoint: str, table: str, key: str, cycles: int, broken: bool
) -> tuple[int, int, int, list[str]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_cycle_worker,
            args=(endpoint, table, key, w, cycles, broken, barrier, out),
        )
        for w in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    intervals: list[tuple[float, float]] = []
    errors: list[str] = []
    refused = 0
    finished = 0
    while finished < PROCESSES:
        msg = out.get(timeout=600)
        if msg[0] == "intervals":
            intervals.extend(msg[1])
            refused += msg[2]
            finished += 1
        else:
            errors.append(msg[1])
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    steps = overlap_steps(intervals)
    print(f"observer saw {LIMIT} holders for {_share_at(steps, LIMIT):.0%} of the run")
    return max(n for _, n in steps), len(intervals), refused, errors


@pytest.mark.stress
def test_stress_never_over_admits_and_canary_is_caught(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore
) -> None:
    table = semaphore.table_name
    peak, cycles, refused, errors = _run_harness(ddb_endpoint, table, "stress", CYCLES, False)
    print(f"real store: {cycles} cycles, peak {peak}, {refused} refused attempts")
    assert errors == []
    assert cycles == PROCESSES * CYCLES
    assert refused > 0, "the limit was never reached: the test exercised nothing"
    assert peak <= LIMIT
    assert peak == LIMIT  # it was saturated, not starved
    assert semaphore.holders("stress") == []
    assert semaphore.slot_count("stress").count == 0

    # Control: the same harness and observer on a store that ignores the limit.
    bad_peak, _, _, _ = _run_harness(ddb_endpoint, table, "canary", 100, True)
    print(f"broken store: peak {bad_peak}")
    assert bad_peak > LIMIT, "the observer failed to catch a store that ignores the limit"


def _replay_worker(endpoint: str, table: str, keys: list[str], barrier: Barrier, out: Any) -> None:
    sem = DynamoDBSemaphore(table_name=table, client=local_dynamodb_client(endpoint))
    got = 0
    for key in keys:
        barrier.wait()
        if sem.try_acquire(key, "the-same-holder", 2) is not None:
            got += 1
    out.put(got)


def test_same_holder_from_many_processes_takes_one_slot(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore
) -> None:
    keys = [f"replay-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    ctx = mp.get_context("spawn")
    workers = 4
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_replay_worker, args=(ddb_endpoint, semaphore.table_name, keys, barrier, out)
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    # Every process was told it holds the lease: it is the same holder.
    assert results == [len(keys)] * workers
    for key in keys:
        assert [h.holder for h in semaphore.holders(key)] == ["the-same-holder"]
        assert semaphore.slot_count(key).count == 1
        # The second slot is still free: the replays did not eat it.
        assert semaphore.try_acquire(key, "someone-else", 2) is not None
        assert semaphore.try_acquire(key, "third", 2) is None
