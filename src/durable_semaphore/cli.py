"""The ``durable-semaphore`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from durable_semaphore.store import DEFAULT_TABLE_NAME, DynamoDBSemaphore


def _smoke(args: argparse.Namespace) -> int:
    """Acquire and release against an embedded local DynamoDB: proof the store works here."""
    from durable_semaphore.embedded import embedded_dynamodb

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    with embedded_dynamodb() as endpoint:
        sem = DynamoDBSemaphore(DEFAULT_TABLE_NAME, endpoint_url=endpoint, region_name="us-east-1")
        sem.create_table()
        limit = args.limit
        got = [sem.try_acquire("smoke", f"holder-{i}", limit) for i in range(limit + 2)]
        admitted = sum(lease is not None for lease in got)
        print(f"limit {limit}: {admitted} of {limit + 2} holders admitted")
        started = time.perf_counter()
        released = sum(sem.release("smoke", f"holder-{i}") for i in range(limit + 2))
        print(f"released {released} leases in {time.perf_counter() - started:.3f} s")
        left = len(sem.holders("smoke"))
        print(f"leases left: {left}")
        return 0 if admitted == limit and left == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable-semaphore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo on an embedded local DynamoDB")
    demo.add_argument("--limit", type=int, default=5)
    demo.set_defaults(func=_smoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
