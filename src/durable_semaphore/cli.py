"""The durable-semaphore command line: the demo and the lease table's admin commands.

Exit codes (the same for every command, so scripts can branch on them):

    0  success
    1  the command ran but the answer is "no": the demo saw more in flight
       than the limit or left leases or waiters behind; release found no live
       lease or queue entry; reap could not judge some leases
    2  bad arguments: usage errors, an --endpoint-url that is not a URL like
       http://localhost:8000, or a value the library refuses (a key, holder
       or table name, ...)
    3  the lease table does not exist (create it with: durable-semaphore
       create-table)
    4  no AWS credentials or no region configured, or a malformed region or
       endpoint URL in the environment (AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB,
       AWS_ENDPOINT_URL, ...) or in the AWS config file
    5  another AWS or DynamoDB error (throttling, access denied, no answer in
       time, a request DynamoDB refused as invalid on a table whose key is
       right, ...)
    6  a local prerequisite is missing (the demo extra, or the embedded
       DynamoDB failed)
    7  the table exists but is not a lease table (its key is not pk String
       HASH + sk String RANGE); every command, reap and create-table included
    8  DynamoDB could not be reached: connection refused, unknown host, or no
       connection within the connect timeout (status, release and
       create-table give up after 2 attempts of 2 s each)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from durable_semaphore.errors import (
    ConfigurationError,
    DurableSemaphoreError,
    InvalidArgumentError,
    PrerequisiteError,
    TableNotFoundError,
    TableSchemaError,
)
from durable_semaphore.settings import TABLE_ENV_VAR, resolve_table_name
from durable_semaphore.store import (
    GRANTED,
    DynamoDBSemaphore,
    Lease,
    Waiter,
    admin_client_config,
    create_client,
    endpoint_url_problem,
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
#: Not EXIT_AWS_ERROR: nothing answered, so the remedy is the endpoint, network or local
#: server, never the request; a script may wait and retry.
EXIT_UNREACHABLE = 8
EXIT_INTERRUPTED = 130

#: The region used with ``--endpoint-url`` when none is configured: local backends ignore it.
LOCAL_REGION = "us-east-1"
DEMO_PNG = "durable-semaphore-demo.png"

Handler = Callable[[argparse.Namespace], int]


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
        "--endpoint-url",
        default=None,
        help="DynamoDB endpoint URL, e.g. http://localhost:8000 for a DynamoDB Local",
    )
    parser.add_argument(
        "--region",
        default=None,
        help=f"AWS region (default: the AWS configuration; {LOCAL_REGION} with --endpoint-url)",
    )


def semaphore_from_args(
    args: argparse.Namespace, *, dummy_credentials: bool = False, config: Config | None = None
) -> DynamoDBSemaphore:
    """A semaphore on ``--table`` with a client for ``--endpoint-url``/``--region``.

    Real credentials are never invented: only the embedded DynamoDB (a process we started) gets
    dummy ones, so a misconfigured shell fails with exit code 4 instead of silently working.
    By default the client gives up quickly (:func:`admin_client_config`): a person is waiting.
    A workload that must ride out throttling (the demo) passes ``default_client_config()``.
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
    client = create_client(
        session=session,
        endpoint_url=args.endpoint_url,
        region_name=region,
        config=config if config is not None else admin_client_config(),
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
    release drops them; ``waiting`` counts only the live ones. A waiter's place is shown as how
    many entries are ahead of it (and how many of those are live), not its sequence number:
    sequence numbers order the queue but count arrivals, so they say nothing about the wait.
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
                        _waiter_json(queue, ahead, markers.get(waiter.holder), now)
                        for ahead, waiter in enumerate(queue)
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
            "reclaimed yet (the next full acquire, or durable-semaphore reap, reclaims them)"
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
    for ahead, waiter in enumerate(queue):
        marker = markers.get(waiter.holder)
        print(f"  waiter     {waiter.holder}")
        print(f"    ahead    {_ahead(queue, ahead, now)}")
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


def _ahead(queue: Sequence[Waiter], ahead: int, now: float) -> str:
    """``N ahead`` for the text output; the live count only when dead entries are among them."""
    live = sum(1 for w in queue[:ahead] if w.is_live(now))
    if live == ahead:
        return f"{ahead} ahead"
    return f"{ahead} ahead ({live} live; the expired are dropped when reached)"


def _waiter_json(
    queue: Sequence[Waiter], ahead: int, marker: Lease | None, now: float
) -> dict[str, Any]:
    """The queue entry ``queue[ahead]`` for ``status --json``; ``queued_*`` are None when its
    marker is gone. ``ahead`` counts the entries before it, ``live_ahead`` the live ones."""
    waiter = queue[ahead]
    return {
        "holder": waiter.holder,
        "ahead": ahead,
        "live_ahead": sum(1 for w in queue[:ahead] if w.is_live(now)),
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
    parser.add_argument("holder", help="the holder id (see: durable-semaphore status KEY)")
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
# The command bodies live in durable_semaphore.demo.command, imported inside the commands: the
# CLI works without the demo extra, and importing durable_semaphore never imports the demo.


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="items per map (default: 30 branches in all on the real clock, so 10 per "
        "execution with 3 executions and 30 with one; 100 in all on the skip clock)",
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
        default=None,
        help="run K executions at once that share one named limiter (default: 3 on SDK >= 2, "
        "which bounds one map itself; 1 on SDK 1.x)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--compare",
        action="store_true",
        help="run the bare SDK, then the limiter, and print both (the default)",
    )
    which.add_argument("--no-limiter", action="store_true", help="run only the bare SDK")
    which.add_argument("--limiter-only", action="store_true", help="run only the limiter")
    parser.add_argument(
        "--clock",
        choices=("real", "skip"),
        default=None,
        help="real (default): durable waits take real seconds, so the makespan is the one a "
        "deployment sees; skip: the runner skips them, faster, but hand-offs then inflate the "
        "limiter's makespan (testing 1.2.1 has only the real clock)",
    )
    parser.add_argument(  # the option before --clock existed
        "--real-time", dest="clock", action="store_const", const="real", help=argparse.SUPPRESS
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
        "--polling",
        action="store_true",
        help="executions sharing a limit poll instead of being woken by callbacks (control)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--png", default=DEMO_PNG, help=f"where to save the timeline (default {DEMO_PNG})"
    )
    parser.add_argument("--no-png", action="store_true", help="do not draw the timeline")


def _demo_commands(command: str) -> Any:
    """The demo's command bodies, imported only when one runs: they need the 'demo' extra."""
    try:
        from durable_semaphore.demo import command as commands
    except ImportError as exc:
        raise PrerequisiteError(
            f"{command} needs the 'demo' extra ({exc}); "
            "install it with: pip install 'durable-semaphore[demo]'"
        ) from exc
    return commands


def _demo(args: argparse.Namespace) -> int:
    """Run the demo and judge it from the execution histories (durable_semaphore.demo)."""
    return int(_demo_commands("the demo").run_demo_command(args, semaphore_from_args))


def _add_local_dynamodb(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="loopback port to listen on (default 8000, DynamoDB Local's; 0 picks a free one)",
    )


def _local_dynamodb(args: argparse.Namespace) -> int:
    """Serve the demo's embedded DynamoDB (ministack) on loopback until Ctrl-C."""
    return int(_demo_commands("local-dynamodb").run_local_dynamodb(args))


# -- entry point -------------------------------------------------------------------------------


for _command in (
    Subcommand(
        "demo", "run the bare SDK, then the limiter, and draw both timelines", _add_demo, _demo
    ),
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
    Subcommand(
        "local-dynamodb",
        "run a local DynamoDB (ministack, in memory) on loopback until Ctrl-C",
        _add_local_dynamodb,
        _local_dynamodb,
        common=False,
    ),
):
    register_subcommand(_command)


#: The module docstring's exit-code table, shown verbatim by --help (so it is plain text).
EXIT_CODES_HELP = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def _epilog(text: str | None) -> str:
    """A subcommand's epilog, then the exit codes: a script author reads ``status --help``.

    The raw formatter keeps the table's columns, so one-line paragraphs are wrapped here;
    paragraphs with line breaks of their own are left as written.
    """
    paragraphs = [
        p if "\n" in p.strip() else textwrap.fill(p.strip(), 78)
        for p in (text or "").split("\n\n")
        if p.strip()
    ]
    return "\n\n".join([*paragraphs, EXIT_CODES_HELP.rstrip()])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-semaphore",
        description="A DynamoDB-backed semaphore for AWS durable functions.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _REGISTRY.values():
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(child)
        if command.common:
            _add_common(child)
        child.epilog = _epilog(child.epilog)
        child.set_defaults(func=command.run)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"durable-semaphore: error: {message}", file=sys.stderr)
    return code


#: Options that take an endpoint URL (``reap`` defines its own); checked before any client.
_ENDPOINT_OPTIONS = (
    ("endpoint_url", "--endpoint-url"),
    ("lambda_endpoint_url", "--lambda-endpoint-url"),
)


def _bad_endpoint_option(args: argparse.Namespace) -> str | None:
    """Our message for a malformed endpoint option: botocore's is a ValueError traceback."""
    for attr, flag in _ENDPOINT_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None and (problem := endpoint_url_problem(value)):
            return f"{flag} {problem} (got {value!r})"
    return None


def _unreachable(exc: BaseException) -> str | None:
    """Our message when ``exc`` (or its cause) is a failure to connect at all, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EndpointConnectionError | ConnectTimeoutError):
            url = str(seen.kwargs.get("endpoint_url", "")).rstrip("/") or "its endpoint"
            reason = "no connection within the connect timeout"
            if isinstance(seen, EndpointConnectionError):
                # Only the socket error of urllib3's long text, e.g. "Connection refused"
                detail = str(seen.kwargs.get("error", ""))
                found = re.search(r"\[Errno [^\]]*\] ([^)'\"]+)", detail)
                reason = found.group(1).strip() if found else "connection failed"
            return f"cannot reach DynamoDB at {url} ({reason})"
        seen = seen.__cause__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn known failures into a message and a distinct exit code."""
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    if (problem := _bad_endpoint_option(args)) is not None:
        return _fail(EXIT_USAGE, problem)
    local = getattr(args, "endpoint_url", None) is not None
    try:
        result: int = args.func(args)
    except InvalidArgumentError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except ConfigurationError as exc:
        # The library's remedy names its argument; a CLI user has the option instead.
        return _fail(EXIT_NO_CREDENTIALS, str(exc).replace("pass region_name", "pass --region"))
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
    except (BotoCoreError, DurableSemaphoreError) as exc:
        if (unreachable := _unreachable(exc)) is not None:
            hint = (
                "is DynamoDB Local running there? check --endpoint-url"
                if local
                else "check the network, proxy and --region, or pass --endpoint-url"
            )
            return _fail(EXIT_UNREACHABLE, f"{unreachable}; {hint}")
        return _fail(EXIT_AWS_ERROR, str(exc))
    except ValueError as exc:
        # botocore's "Invalid endpoint" from a client this module did not build (the reaper's
        # Lambda client reads AWS_ENDPOINT_URL too); anything else is a bug: let it show.
        if not str(exc).startswith("Invalid endpoint"):
            raise
        return _fail(
            EXIT_NO_CREDENTIALS,
            f"{exc}: the configured endpoint URL (AWS_ENDPOINT_URL_DYNAMODB, "
            "AWS_ENDPOINT_URL_LAMBDA, AWS_ENDPOINT_URL or the AWS config file) must be a URL "
            "like http://localhost:8000",
        )
    except KeyboardInterrupt:
        print("durable-semaphore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


if __name__ == "__main__":
    sys.exit(main())
