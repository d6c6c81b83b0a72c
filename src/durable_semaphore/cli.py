"""The durable-semaphore command line: the parser, main and the demo commands. The admin
commands are in :mod:`durable_semaphore.cli_admin`, what every command shares (exit codes,
the registry, the common options) in :mod:`durable_semaphore.cli_support`.

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
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from durable_semaphore import cli_admin
from durable_semaphore.cli_support import (
    _REGISTRY,
    EXIT_AWS_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO,
    EXIT_NO_CREDENTIALS,
    EXIT_OK,
    EXIT_PREREQUISITE,
    EXIT_TABLE_INVALID,
    EXIT_TABLE_MISSING,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    LOCAL_REGION,
    Handler,
    Subcommand,
    add_common_options,
    limiter_from_args,
    register_subcommand,
    semaphore_from_args,
)
from durable_semaphore.errors import (
    ConfigurationError,
    DurableSemaphoreError,
    InvalidArgumentError,
    PrerequisiteError,
    TableNotFoundError,
    TableSchemaError,
)
from durable_semaphore.store import endpoint_url_problem

__all__ = [
    "EXIT_AWS_ERROR",
    "EXIT_CODES_HELP",
    "EXIT_INTERRUPTED",
    "EXIT_NO",
    "EXIT_NO_CREDENTIALS",
    "EXIT_OK",
    "EXIT_PREREQUISITE",
    "EXIT_TABLE_INVALID",
    "EXIT_TABLE_MISSING",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "LOCAL_REGION",
    "Handler",
    "Subcommand",
    "add_common_options",
    "build_parser",
    "limiter_from_args",
    "main",
    "register_subcommand",
    "semaphore_from_args",
]

DEMO_PNG = "durable-semaphore-demo.png"


# -- demo --------------------------------------------------------------------------------------
# The command bodies live in durable_semaphore.demo.command, imported inside the commands: the
# CLI works without the demo extra, and importing durable_semaphore never imports the demo.


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        choices=("limit", "rate", "tenants"),
        default="limit",
        help="limit (default): branches in flight under max_concurrency; rate: starts per "
        "second shared by the executions (--rate, --burst); tenants: at most 2 per tenant "
        "and 5 in total, the total raised to 8 mid-run",
    )
    parser.add_argument(
        "--rate", type=float, default=5.0, help="--scenario rate: starts per second (default 5)"
    )
    parser.add_argument(
        "--burst", type=int, default=5, help="--scenario rate: starts at once (default 5)"
    )
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
    _add_demo_settings(parser)


def _add_demo_settings(parser: argparse.ArgumentParser) -> None:
    """The demo's waiting settings and its output."""
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
        cli_admin.add_status,
        cli_admin.status,
    ),
    Subcommand(
        "release",
        "release one holder's lease (or queue entry) on a key",
        cli_admin.add_release,
        cli_admin.release,
    ),
    Subcommand(
        "set-limit",
        "set a key's limit at run time (it beats the code's), or clear it",
        cli_admin.add_set_limit,
        cli_admin.set_limit,
    ),
    Subcommand(
        "reap",
        "release leases of finished executions and reclaim expired ones",
        cli_admin.add_reap,
        cli_admin.reap,
        common=False,
    ),
    Subcommand(
        "create-table",
        "create the lease table if missing",
        cli_admin.add_create_table,
        cli_admin.create_table,
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
            add_common_options(child)
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
