"""The ``durable-semaphore`` command line: the demo and the lease table's admin commands.

Exit codes (the same for every command, so scripts can branch on them):

  0  success
  1  the command ran but the answer is "no": the demo saw more in flight than the limit or
     left leases or waiters behind; ``release`` found no live lease or queue entry; ``reap``
     could not judge some leases
  2  bad arguments (usage errors, or a value the library refuses)
  3  the lease table does not exist (create it with ``durable-semaphore create-table``)
  4  no AWS credentials or no region configured
  5  another AWS or DynamoDB error (throttling, access denied, endpoint unreachable, a
     request DynamoDB refused as invalid on a table whose key is right, ...)
  6  a local prerequisite is missing (the ``demo`` extra, or the embedded DynamoDB failed)
  7  the table exists but is not a lease table (its key is not pk String HASH + sk String
     RANGE); every command, ``reap`` and ``create-table`` included
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from durable_semaphore.errors import (
    DurableSemaphoreError,
    InvalidArgumentError,
    TableNotFoundError,
    TableSchemaError,
)
from durable_semaphore.limiter import TABLE_ENV_VAR, resolve_table_name
from durable_semaphore.store import (
    GRANTED,
    DynamoDBSemaphore,
    Lease,
    Waiter,
    default_client_config,
)

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_TABLE_MISSING = 3
EXIT_NO_CREDENTIALS = 4
EXIT_AWS_ERROR = 5
EXIT_PREREQUISITE = 6
#: Not EXIT_TABLE_MISSING: its remedy (create-table) would fail on this table, which exists.
EXIT_TABLE_INVALID = 7

#: The region used with ``--endpoint-url`` when none is configured: local backends ignore it.
LOCAL_REGION = "us-east-1"
DEMO_PNG = "durable-semaphore-demo.png"

Handler = Callable[[argparse.Namespace], int]


class PrerequisiteError(DurableSemaphoreError):
    """Something the command needs locally is missing (an optional extra, a local server)."""


# -- subcommand registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class Subcommand:
    """One ``durable-semaphore NAME`` command.

    ``add_arguments`` fills its parser; ``run`` gets the parsed namespace and returns the exit
    code. ``common`` adds ``--table/--endpoint-url/--region`` (commands that define their own,
    like ``reap``, pass False). Errors raised by ``run`` are mapped to exit codes by :func:`main`.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler
    common: bool = True


_REGISTRY: dict[str, Subcommand] = {}


def register_subcommand(command: Subcommand) -> None:
    """Add (or replace) a subcommand. ``bench`` and other tools plug in here, e.g.::

        register_subcommand(Subcommand("bench", "run the store benchmark", add, run))

    Registration at import time of this module (see the bottom) keeps ``--help`` complete.
    """
    _REGISTRY[command.name] = command


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table",
        default=None,
        help=f"lease table (default: ${TABLE_ENV_VAR}, else 'durable-semaphore')",
    )
    parser.add_argument(
        "--endpoint-url", default=None, help="DynamoDB endpoint, e.g. a local DynamoDB"
    )
    parser.add_argument(
        "--region",
        default=None,
        help=f"AWS region (default: the AWS configuration; {LOCAL_REGION} with --endpoint-url)",
    )


def semaphore_from_args(
    args: argparse.Namespace, *, dummy_credentials: bool = False
) -> DynamoDBSemaphore:
    """A semaphore on ``--table`` with a client for ``--endpoint-url``/``--region``.

    Real credentials are never invented: only the embedded DynamoDB (a process we started) gets
    dummy ones, so a misconfigured shell fails with exit code 4 instead of silently working.
    """
    import boto3

    # A fresh session: boto3's default one caches credentials resolved earlier in the process.
    session = boto3.session.Session()
    region = args.region
    if region is None and args.endpoint_url is not None:
        region = session.region_name or LOCAL_REGION
    kwargs: dict[str, Any] = {}
    if dummy_credentials:
        kwargs = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    client = session.client(
        "dynamodb",
        endpoint_url=args.endpoint_url,
        region_name=region,
        config=default_client_config(),
        **kwargs,
    )
    return DynamoDBSemaphore(resolve_table_name(args.table), client=client)


# -- admin commands ----------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def _add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the semaphore key (a limiter name, or ARN#operation id)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _status(args: argparse.Namespace) -> int:
    """Holders of KEY with state, expiry and execution, its wait queue in order, and the
    stored counters (which may include expired leases and dead waiters not yet cleared).

    Dead queue entries are listed (``expired``) because they still occupy their place until a
    release drops them; ``waiting`` counts only the live ones.
    """
    sem = semaphore_from_args(args)
    now = sem.now()
    entries = sem.entries(args.key)
    leases = sorted((e for e in entries if e.holds_slot), key=lambda lease: lease.acquired_at)
    # The queue marker knows when its holder joined; the queue entry only when it expires.
    markers = {e.holder: e for e in entries if not e.holds_slot}
    queue = sem.waiters(args.key)
    count = sem.slot_count(args.key)
    waiting = sum(1 for w in queue if w.is_live(now))
    if args.json:
        print(
            json.dumps(
                {
                    "key": args.key,
                    "table": sem.table_name,
                    "live": len(leases),
                    "count": count.count,
                    "waiting": waiting,
                    "queue_count": count.waiters,
                    "holders": [
                        {
                            "holder": lease.holder,
                            "state": lease.state,
                            "acquired_at": _iso(lease.acquired_at),
                            "expires_at": _iso(lease.expires_at),
                            # Whole seconds left, rounded down: the store rounds the expiry
                            # up to its TTL second, so rounding to nearest could report more
                            # time than the lease was granted.
                            "expires_in_seconds": max(0, int(lease.expires_at - now)),
                            "execution_arn": lease.execution_arn,
                        }
                        for lease in leases
                    ],
                    "waiters": [
                        _waiter_json(position, waiter, markers.get(waiter.holder), now)
                        for position, waiter in enumerate(queue, start=1)
                    ],
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(
        f"key {args.key!r} in table {sem.table_name!r}: {len(leases)} live lease(s), "
        f"{waiting} waiting"
    )
    if count.count != len(leases):
        print(
            f"  counter says {count.count}: {count.count - len(leases)} expired lease(s) not "
            "reclaimed yet (the next full acquire or `durable-semaphore reap` reclaims them)"
        )
    if count.waiters != len(queue):
        print(f"  counter says {count.waiters} waiting: the next release or acquire repairs it")
    for lease in leases:
        print(f"  holder     {lease.holder}")
        if lease.state == GRANTED:
            print("    state    granted: handed over from the queue, not claimed yet")
        print(f"    expires  {_iso(lease.expires_at)} (in {_duration(lease.expires_at - now)})")
        print(f"    acquired {_iso(lease.acquired_at)}")
        print(f"    execution {lease.execution_arn or '-'}")
    for position, waiter in enumerate(queue, start=1):
        marker = markers.get(waiter.holder)
        print(f"  waiter {position:<3} {waiter.holder}")
        if marker is not None:
            queued_for = _duration(now - marker.acquired_at)
            print(f"    queued   {_iso(marker.acquired_at)} ({queued_for} ago)")
        if waiter.is_live(now):
            left = _duration(waiter.expires_at - now)
            print(f"    expires  {_iso(waiter.expires_at)} (in {left} unless it checks in)")
        else:
            print(f"    expired  {_iso(waiter.expires_at)} (dead: dropped when reached)")
        print(f"    wake     {'callback' if waiter.callback_id else 'polls'}")
        print(f"    execution {waiter.execution_arn or '-'}")
    return EXIT_OK


def _waiter_json(position: int, waiter: Waiter, marker: Lease | None, now: float) -> dict[str, Any]:
    """One queue entry for ``status --json``; ``queued_*`` are None when its marker is gone."""
    return {
        "position": position,
        "holder": waiter.holder,
        "seq": waiter.seq,
        "queued_at": _iso(marker.acquired_at) if marker is not None else None,
        "queued_seconds": max(0, int(now - marker.acquired_at)) if marker is not None else None,
        "expires_at": _iso(waiter.expires_at),
        "expires_in_seconds": max(0, int(waiter.expires_at - now)),
        "expired": not waiter.is_live(now),
        "callback": waiter.callback_id is not None,
        "execution_arn": waiter.execution_arn,
    }


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _add_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the semaphore key")
    parser.add_argument("holder", help="the holder id (see `durable-semaphore status KEY`)")
    parser.epilog = (
        "A holder that waits in the queue leaves it (exit 0). A released slot goes to the "
        "oldest waiter, who finds it at its next check. Exit 1 when the holder neither holds a "
        "live lease nor waits."
    )


def _release(args: argparse.Namespace) -> int:
    """Free one holder's slot by hand (e.g. after an execution was deleted), or take a waiting
    holder out of the queue; exit 0 for either, 1 when there was nothing to release."""
    sem = semaphore_from_args(args)
    result = sem.release_slot(args.key, args.holder)
    if result.left_queue:
        print(f"{args.holder!r} was waiting on {args.key!r}: it left the queue (it held no slot)")
        return EXIT_OK
    if result.released:
        print(f"released {args.holder!r} on {args.key!r}")
        if result.grant is not None:
            print(
                f"  the slot was handed to {result.grant.holder!r}, the oldest waiter; it takes "
                "it at its next check"
            )
        return EXIT_OK
    print(
        f"{args.holder!r} holds no live lease on {args.key!r} and is not queued; nothing released"
    )
    return EXIT_NO


def _add_create_table(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return before the table is ACTIVE")


def _create_table(args: argparse.Namespace) -> int:
    """Create the lease table (on-demand billing, TTL on expires_at); idempotent."""
    sem = semaphore_from_args(args)
    created = sem.create_table(wait=not args.no_wait)
    print(f"table {sem.table_name!r} {'created' if created else 'already exists'}")
    return EXIT_OK


def _add_reap(parser: argparse.ArgumentParser) -> None:
    try:
        from durable_semaphore import reaper
    except ImportError:
        _add_common(parser)  # so that `reap --help` still shows something sensible
        return
    reaper.add_cli_arguments(parser)


def _reap(args: argparse.Namespace) -> int:
    """Delegate to the reaper: release leases of finished executions, reclaim expired ones."""
    try:
        from durable_semaphore import reaper
    except ImportError as exc:
        raise PrerequisiteError(f"the reaper is not available in this build: {exc}") from exc
    result: int = reaper.run_cli(args)
    return result


# -- demo --------------------------------------------------------------------------------------


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="items per map (default 100; 30 where the testing library cannot skip durable "
        "time, as testing 1.2.1 with SDK 1.7 and 2.0)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=5,
        help="max_concurrency of each map; with --executions, the shared limit (default 5)",
    )
    parser.add_argument(
        "--executions",
        type=int,
        default=1,
        help="run K executions at once that share one named limiter (default 1)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--no-limiter",
        action="store_true",
        help="run the bare SDK (no DynamoDB limiter) for comparison",
    )
    which.add_argument(
        "--compare",
        action="store_true",
        help="run the bare SDK, then the limiter, and print both (peak, makespan, requests)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=None,
        help="longest durable wait between a polling waiter's checks, seconds (default: the "
        "library's, 60; a demo-only setting, named in the summary)",
    )
    parser.add_argument(
        "--wake-timeout",
        type=int,
        default=None,
        help="first callback timeout of a waiter sharing a limit, the fallback for a wake-up "
        "that was never sent (default: the library's, 900 s; real seconds in the local "
        "runner; a demo-only setting, named in the summary)",
    )
    parser.add_argument(
        "--real-time",
        action="store_true",
        help="run durable waits in real time instead of skipping them (slower, and the "
        "makespan production would see; see docs/demo.md)",
    )
    parser.add_argument(
        "--polling",
        action="store_true",
        help="executions sharing a limit poll instead of being woken by callbacks (control)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--png", default=DEMO_PNG, help=f"where to save the timeline (default {DEMO_PNG})"
    )
    parser.add_argument("--no-png", action="store_true", help="do not draw the timeline")


class _ProgressLine:
    """The live progress line on stderr: rewritten in place on a terminal, else every few s."""

    def __init__(self, stream: Any = None, every: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._line = ""
        self._shown = False

    def __call__(self, progress: Any) -> None:
        from durable_semaphore.demo import format_progress

        line = format_progress(progress)
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
            self._shown = True
        else:
            now = time.monotonic()
            finished = progress.done >= progress.total
            if line == self._line or (now - self._last < self.every and not finished):
                return
            self._last, self._line = now, line
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def _demo(args: argparse.Namespace) -> int:
    """Run the seed scenario and judge it from the execution histories."""
    try:
        import aws_durable_execution_sdk_python_testing  # noqa: F401

        from durable_semaphore import demo_runner
        from durable_semaphore.demo import (
            REAL_CLOCK_ITEMS,
            DemoConfig,
            DemoResult,
            PlottingUnavailableError,
            format_adds,
            format_comparison,
            format_summary,
            limiter_adds,
            run_compare,
            run_demo,
            save_timeline,
        )
    except ImportError as exc:
        raise PrerequisiteError(
            f"the demo needs the 'demo' extra ({exc}); "
            "install it with: pip install 'durable-semaphore[demo]'"
        ) from exc

    features = demo_runner.detect()
    # testing 1.2.1 stops its loop with timers still pending; asyncio reports each one when the
    # process exits. They are the runner's leftovers after the verdict, not news for the user.
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, demo_runner.PendingTaskFilter) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(demo_runner.PendingTaskFilter())
    items = args.items
    if items is None:
        items = 100 if features.skip_time else REAL_CLOCK_ITEMS
    if not features.skip_time:
        _, testing = demo_runner.installed_versions()
        print(
            f"note: testing library {testing} cannot skip durable time, so the demo runs on the "
            f"real clock ({items} items)",
            file=sys.stderr,
        )
    config = DemoConfig(
        items=items,
        max_concurrency=args.max_concurrency,
        executions=args.executions,
        use_limiter=not args.no_limiter,
        max_backoff_seconds=args.max_backoff,
        wake_timeout_seconds=args.wake_timeout,
        hand_off=not args.polling,
        real_time=args.real_time,
    )

    def run(sem: DynamoDBSemaphore, *, create: bool) -> Any:
        if create:
            sem.create_table()
        else:
            sem.slot_count("durable-semaphore-demo-probe")  # TableNotFoundError if missing
        progress = _ProgressLine()
        try:
            if args.compare:
                return run_compare(config, sem, on_progress=progress)
            return None, run_demo(config, sem, on_progress=progress)
        finally:
            progress.close()

    bare: DemoResult | None
    local = args.endpoint_url is not None
    if local or args.table is not None:
        # A real table: create it on a local endpoint (disposable); on AWS it must exist.
        bare, result = run(semaphore_from_args(args), create=local)
        where = args.endpoint_url or "AWS"
    else:
        from durable_semaphore.embedded import EmbeddedDynamoDBError, embedded_dynamodb

        try:
            with embedded_dynamodb() as endpoint:
                args.endpoint_url = endpoint
                bare, result = run(semaphore_from_args(args, dummy_credentials=True), create=True)
        except EmbeddedDynamoDBError as exc:
            raise PrerequisiteError(str(exc)) from exc
        where = "embedded ministack"

    png: str | None = None
    if not args.no_png:
        try:
            png = save_timeline(result, args.png, bare=bare)
        except PlottingUnavailableError as exc:
            print(f"note: {exc}", file=sys.stderr)
    ok = result.ok and (bare is None or bare.succeeded)
    if args.json:
        out = result.to_json()
        out["png"] = png
        out["backend"] = where
        out["limiter_adds"] = limiter_adds(result, bare)
        if bare is not None:
            out["bare"] = bare.to_json()
            out["ok"] = ok
        print(json.dumps(out))
    else:
        print(format_summary(result, adds=False))
        print(f"  backend             {where}")
        if png:
            print(f"  timeline            {png}")
        if bare is not None:
            print(format_comparison(bare, result))
        print(format_adds(result, bare))
        if result.peak_in_flight > result.limit:
            print(f"FAIL: peak in flight {result.peak_in_flight} > limit {result.limit}")
        if result.leases_left:
            print(f"FAIL: {result.leases_left} lease(s) left in the table")
        if result.waiters_left:
            print(f"FAIL: {result.waiters_left} waiter(s) left in the table")
        if bare is not None and not bare.succeeded:
            print("FAIL: the bare run did not succeed, so there is nothing to compare with")
    return EXIT_OK if ok else EXIT_NO


# -- entry point -------------------------------------------------------------------------------


for _command in (
    Subcommand("demo", "run the seed scenario and draw its timeline", _add_demo, _demo),
    Subcommand(
        "status",
        "show a key's holders and waiters, their expiry and execution",
        _add_status,
        _status,
    ),
    Subcommand(
        "release", "release one holder's lease (or queue entry) on a key", _add_release, _release
    ),
    Subcommand(
        "reap",
        "release leases of finished executions and reclaim expired ones",
        _add_reap,
        _reap,
        common=False,
    ),
    Subcommand(
        "create-table", "create the lease table if missing", _add_create_table, _create_table
    ),
):
    register_subcommand(_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-semaphore",
        description="A DynamoDB-backed semaphore for AWS durable functions.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _REGISTRY.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        if command.common:
            _add_common(child)
        child.set_defaults(func=command.run)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"durable-semaphore: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn known failures into a message and a distinct exit code."""
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    try:
        result: int = args.func(args)
    except InvalidArgumentError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except TableNotFoundError as exc:
        return _fail(EXIT_TABLE_MISSING, str(exc))
    except TableSchemaError as exc:
        return _fail(EXIT_TABLE_INVALID, str(exc))
    except (NoCredentialsError, PartialCredentialsError) as exc:
        hint = (
            "a local DynamoDB accepts any, e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
            if getattr(args, "endpoint_url", None) is not None
            else "or use --endpoint-url for a local DynamoDB"
        )
        return _fail(EXIT_NO_CREDENTIALS, f"{exc}; configure AWS credentials ({hint})")
    except NoRegionError:
        return _fail(EXIT_NO_CREDENTIALS, "no AWS region configured; pass --region")
    except PrerequisiteError as exc:
        return _fail(EXIT_PREREQUISITE, str(exc))
    except ClientError as exc:
        return _fail(EXIT_AWS_ERROR, str(exc))
    except BotoCoreError as exc:
        return _fail(EXIT_AWS_ERROR, str(exc))
    except DurableSemaphoreError as exc:
        return _fail(EXIT_AWS_ERROR, str(exc))
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
