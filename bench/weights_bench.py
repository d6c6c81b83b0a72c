"""Weighted permits: how much of a limit a mixed backlog keeps in use, against strict FIFO's
own ceiling.

A backlog of tasks of weight 1 or 4 (random, seeded) at limit 5, worked by a pool of threads
that each wait in the key's queue (polling their place every 20 ms) and hold their units for
0.4 to 0.6 s. Prints the peak units held (from the workers' own intervals, outside the
store), the share of the limit in use while the backlog lasted (until the last task
started), and what strict FIFO reaches in a simulation with no overhead at all: the rule
(the head is served first whatever it weighs, so a heavy task is never starved) costs the
difference between the ideal and 1.0, the store the rest.

Run: ``python bench/weights_bench.py [--tasks 40] [--workers 8] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import dynamodb_local, local_dynamodb_client  # noqa: E402
from tests.test_store_weights import LIMIT, _peak_units, _run  # noqa: E402

from durable_semaphore import DynamoDBSemaphore  # noqa: E402


def utilization(spans: list[tuple[float, float, int]]) -> float:
    """Units in use over time against the limit, from the first start to the last start."""
    start = min(a for a, _, _ in spans)
    until = max(a for a, _, _ in spans)
    used = sum(max(0.0, min(b, until) - a) * w for a, b, w in spans if a < until)
    return used / (LIMIT * (until - start))


def fifo_ideal(weights: list[int], seed: int) -> float:
    """Strict FIFO with no overhead: admit the head whenever its units fit."""
    rng = random.Random(seed)
    tasks = [(w, rng.uniform(0.4, 0.6)) for w in weights]
    t = used = 0.0
    busy = 0.0
    running: list[tuple[float, int]] = []
    queue = list(tasks)
    while queue:
        while queue and used + queue[0][0] <= LIMIT:
            w, d = queue.pop(0)
            used += w
            heapq.heappush(running, (t + d, w))
        if not queue:
            break
        end, w = heapq.heappop(running)
        busy += used * (end - t)
        t, used = end, used - w
    return busy / (LIMIT * t) if t else 1.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    peaks, shares, ideals = [], [], []
    with dynamodb_local.running() as endpoint:
        client = local_dynamodb_client(endpoint)
        for round_ in range(args.rounds):
            table = f"weights-{uuid.uuid4().hex[:8]}"
            DynamoDBSemaphore(table_name=table, client=client).create_table()
            rng = random.Random(round_)
            weights = [rng.choice((1, 4)) for _ in range(args.tasks)]
            spans = _run(
                lambda t=table: DynamoDBSemaphore(table_name=t, client=client),
                weights,
                workers=args.workers,
            )
            peaks.append(_peak_units(spans))
            shares.append(utilization(spans))
            ideals.append(fifo_ideal(weights * 50, round_))
            print(f"round {round_}: peak {peaks[-1]} of {LIMIT}, in use {shares[-1]:.2f}")
    print(
        f"weights 1 and 4 at limit {LIMIT}, {args.tasks} tasks, {args.workers} workers: peak "
        f"{max(peaks)} of {LIMIT}; share of the limit in use while backlogged "
        f"{statistics.median(shares):.2f} (median of {args.rounds}); strict FIFO's ceiling "
        f"{statistics.median(ideals):.2f}"
    )
    return 0 if max(peaks) <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
