"""Rate limits across executions: the booked starts against GCRA's bound, the achieved rate,
and what each admitted branch cost, judged from the execution histories.

Runs ``--executions`` durable executions at once (default 10), each mapping ``--items``
branches under one shared ``DynamoDBRateLimiter`` (default 5 starts per second, burst 5), on
the local runner's real clock against DynamoDB Local, then the same maps without the
limiter (the control). Prints, from the histories and the clock inside each branch's work:
the most booked starts in any window of ``per`` seconds against ``floor(rate * w / per) +
burst``, the most real starts (and how late the runner resumed them), the achieved rate while
backlogged, durable operations and DynamoDB requests per branch.

Run: ``python bench/rate_bench.py [--executions 10] [--items 10] [--rate 5] [--burst 5]``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import dynamodb_local, local_dynamodb_client  # noqa: E402
from tests.store_helpers import count_requests  # noqa: E402

from durable_semaphore import DynamoDBSemaphore  # noqa: E402
from durable_semaphore.demo.rate import RateDemo, run_rate  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=10)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=5)
    args = parser.parse_args(argv)
    demo = RateDemo(args.executions, args.items, args.rate, 1.0, args.burst)
    branches = args.executions * args.items
    with dynamodb_local.running() as endpoint:
        client = local_dynamodb_client(endpoint)
        table = f"rate-{uuid.uuid4().hex[:8]}"
        sem = DynamoDBSemaphore(table_name=table, client=client)
        sem.create_table()
        with count_requests(client) as sent:
            limited = run_rate(demo, sem)
        bare = run_rate(RateDemo(args.executions, args.items, use_limiter=False), sem)
    span = max(limited.booked) - min(limited.booked)
    achieved = (len(limited.booked) - demo.burst) / span if span else float("inf")
    late = max(r - b for r, b in zip(limited.ran, limited.booked, strict=True))
    print(
        f"{args.executions} executions x {args.items} items sharing {demo.rate:g}/s, burst "
        f"{demo.burst} (bound {demo.bound} starts in any second):\n"
        f"  booked starts: most in any second {limited.most_booked_in_window} (bound "
        f"{demo.bound}); achieved {achieved:.2f}/s while backlogged ({achieved / demo.rate:.0%} "
        f"of the rate)\n"
        f"  real starts: most in any second {limited.most_ran_in_window}; late by {late:.2f} s "
        "at most (the local runner resumes durable waits late), never early\n"
        f"  DynamoDB requests per branch {sum(sent.values()) / branches:.2f} "
        f"({dict(sent)}); durable operations added per branch: 1 booking step, plus 1 wait "
        "when its start was a second or more ahead\n"
        f"  control, no limiter: most starts in any second {bare.most_ran_in_window}"
    )
    return 0 if limited.ok and bare.most_ran_in_window > demo.bound else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
