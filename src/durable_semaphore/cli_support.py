"""What every ``durable-semaphore`` command shares: exit codes, the subcommand registry, the
common options and the table access they configure.

:mod:`durable_semaphore.cli` (the parser and :func:`~durable_semaphore.cli.main`) and
:mod:`durable_semaphore.cli_admin` (the admin commands) both build on this module, which imports
neither of them. ``durable_semaphore.cli`` re-exports everything public here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.settings import TABLE_ENV_VAR, resolve_table_name
from durable_semaphore.store import DynamoDBSemaphore, admin_client_config, create_client

__all__ = [
    "EXIT_AWS_ERROR",
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
    "limiter_from_args",
    "register_subcommand",
    "semaphore_from_args",
]

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


Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One ``durable-semaphore NAME`` command.

    ``add_arguments`` fills its parser; ``run`` gets the parsed namespace and returns the exit
    code. ``common`` adds ``--table/--endpoint-url/--region`` (commands that define their own,
    like ``reap``, pass False). Errors raised by ``run`` are mapped to exit codes by
    :func:`durable_semaphore.cli.main`.
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

    The built-in commands register when :mod:`durable_semaphore.cli` is imported, which keeps
    ``--help`` complete.
    """
    _REGISTRY[command.name] = command


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--table``, ``--endpoint-url`` and ``--region``: where the lease table is."""
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
    """A semaphore on ``--table`` with a client for ``--endpoint-url``/``--region``: the raw
    store, for the demo and plugged-in tools; the admin commands use :func:`limiter_from_args`.

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


def limiter_from_args(args: argparse.Namespace) -> DynamoDBLimiter:
    """The table's facade for an admin command: a limiter without a name (the commands pass
    the key per call) on :func:`semaphore_from_args`'s store, with no waker: a slot the
    command hands over is found by its waiter at its next check."""
    return DynamoDBLimiter(semaphore=semaphore_from_args(args), waker=None)
