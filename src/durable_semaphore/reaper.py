"""The reaper: gives back the slots of leases whose durable execution can no longer release them.

Branches release their own leases, and a map or parallel sweeps its leftovers when it returns.
Neither happens when the *execution* ends underneath them: it FAILED, TIMED_OUT or was STOPPED
(nothing runs any more), or it SUCCEEDED past an early completion that orphaned branches. Those
leases would hold their slots until they expire, and branch leases live up to a year. The reaper
scans the lease items, asks Lambda for each holder execution's status
(``lambda:GetDurableExecution``) and releases the leases of terminal executions; it also
reclaims leases that have simply expired.

Safety rule: **never release when in doubt.** A lease is released only when its execution is
positively reported SUCCEEDED, FAILED, TIMED_OUT or STOPPED, or when it has expired. A live
status (RUNNING, PAUSING, PAUSED), DELETING, a status this code does not know, throttling, access
denied, a network error or anything else keeps the lease: a wrongly released slot lets one
branch too many run, which is the one thing the limiter exists to prevent, whereas a wrongly
kept slot only delays work until the next run or the lease's expiry.

``ResourceNotFoundException`` is kept too by default. "Not found" does not prove that the
execution ended: the reaper may be looking in another region or account than the execution's,
or the function may have been deleted and re-created. When it does mean "ended long ago" (the
history is deleted ``RetentionPeriodInDays``, 1 to 90 days, after an execution closes), a reaper
running on schedule will already have seen the terminal status during those days. Operators who
know their reaper covers every execution can opt in with ``release_not_found=True``, which still
only releases when the ARN's region is the Lambda client's region.

Entry points: :class:`Reaper` (library), :func:`handler` (the scheduled Lambda function of
template.yaml), and :func:`add_cli_arguments` / :func:`run_cli` (``durable-semaphore reap``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from durable_semaphore.errors import DurableSemaphoreError
from durable_semaphore.limiter import resolve_table_name
from durable_semaphore.store import DynamoDBSemaphore, Lease, default_client_config

if TYPE_CHECKING:
    from mypy_boto3_lambda.client import LambdaClient
else:
    LambdaClient = Any

__all__ = [
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "ReapReport",
    "Reaper",
    "add_cli_arguments",
    "handler",
    "run_cli",
]

#: Statuses after which an execution runs no more code, so its leases can never be released by it.
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED"})
#: Statuses of executions that may still run (or resume) and release their own leases.
LIVE_STATUSES = frozenset({"RUNNING", "PAUSING", "PAUSED"})

# Outcomes of a status lookup that are not a status.
_NOT_FOUND = "<not found>"
_LOCAL_REGION = "us-east-1"
_ERROR = "<error>"


def _lambda_client_config() -> Config:
    """Standard retry mode: throttling (TooManyRequestsException) is retried with backoff
    before the reaper gives up on an ARN for this run."""
    return Config(
        retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15
    )


@dataclass
class ReapReport:
    """What one reaper run saw and did. Counts are of lease items unless named otherwise.

    In a dry run, ``released_*`` count what *would* have been released; nothing is written.
    """

    dry_run: bool = False
    scanned: int = 0
    #: Leases of SUCCEEDED/FAILED/TIMED_OUT/STOPPED executions, released (or to be, in dry run).
    released_terminal: int = 0
    #: Leases freed because they had expired (deleted by ``reclaim_expired``).
    released_expired: int = 0
    #: Leases of terminal executions that were gone or expired by the time we released them.
    already_released: int = 0
    #: Leases of live executions (RUNNING, PAUSING, PAUSED).
    kept_running: int = 0
    #: Leases kept because the status was DELETING, unknown, or the execution was not found.
    kept_unknown: int = 0
    #: Live leases without an execution ARN: only their expiry can free them.
    kept_no_arn: int = 0
    #: Leases kept because the status lookup failed (throttled, denied, network).
    kept_error: int = 0
    #: Failed lookups, releases and reclaims. Non-zero means the run was incomplete.
    errors: int = 0
    #: Distinct execution ARNs looked up, and how many of them were live.
    executions_checked: int = 0
    executions_live: int = 0
    #: Keys whose expired leases were reclaimed.
    keys_reclaimed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reaper:
    """Releases leases of terminal executions and reclaims expired leases in one table.

    ``lambda_client`` may be None when no lease carries an execution ARN (then only expiry is
    acted on); it is created lazily with standard retries otherwise. ``clock`` defaults to the
    store's clock so both judge expiry alike.
    """

    def __init__(
        self,
        semaphore: DynamoDBSemaphore,
        lambda_client: LambdaClient | None = None,
        *,
        clock: Callable[[], float] | None = None,
        release_not_found: bool = False,
        logger: Any = None,
    ) -> None:
        self.semaphore = semaphore
        self._lambda = lambda_client
        self._clock = clock if clock is not None else semaphore.now
        self.release_not_found = release_not_found
        self._log = logger if logger is not None else _default_logger()

    @property
    def lambda_client(self) -> LambdaClient:
        if self._lambda is None:
            self._lambda = boto3.client("lambda", config=_lambda_client_config())
        return self._lambda

    def reap(self, *, dry_run: bool = False, page_size: int | None = None) -> ReapReport:
        """One sweep over every lease. Per-lease failures are counted, never raised, so one bad
        ARN cannot stop the sweep; only failing to scan the table raises.

        Statuses are cached per ARN for this run only: an execution with many leases costs one
        lookup, and a status never goes stale across runs.
        """
        report = ReapReport(dry_run=dry_run)
        cache: dict[str, str] = {}
        expired_by_key: dict[str, int] = {}
        now = self._clock()
        for lease in self.semaphore.scan_leases(page_size=page_size):
            report.scanned += 1
            if not lease.is_live(now):
                expired_by_key[lease.key] = expired_by_key.get(lease.key, 0) + 1
                continue
            if lease.execution_arn is None:
                report.kept_no_arn += 1
                continue
            arn = lease.execution_arn
            if arn not in cache:
                cache[arn] = self._status(arn, report)
            self._judge(lease, cache[arn], report, dry_run=dry_run)

        for key, count in expired_by_key.items():
            self._reclaim(key, count, report, dry_run=dry_run)
        report.executions_checked = len(cache)
        report.executions_live = sum(1 for s in cache.values() if s in LIVE_STATUSES)
        self._log.info("reaper run finished", extra={"report": report.as_dict()})
        return report

    # ------------------------------------------------------------------ steps

    def _status(self, arn: str, report: ReapReport) -> str:
        """The execution's status, or a marker for not found / lookup failed."""
        try:
            out = self.lambda_client.get_durable_execution(
                DurableExecutionArn=arn, IncludeExecutionData=False
            )
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code == "ResourceNotFoundException":
                status = _NOT_FOUND
            else:
                report.errors += 1
                self._log.warning(
                    "status lookup failed; keeping its leases",
                    extra={"execution_arn": arn, "error_code": code},
                )
                status = _ERROR
        except BotoCoreError as err:
            report.errors += 1
            self._log.warning(
                "status lookup failed; keeping its leases",
                extra={"execution_arn": arn, "error": repr(err)},
            )
            status = _ERROR
        else:
            status = str(out.get("Status", ""))
        report.statuses[status] = report.statuses.get(status, 0) + 1
        return status

    def _judge(self, lease: Lease, status: str, report: ReapReport, *, dry_run: bool) -> None:
        fields = {"key": lease.key, "holder": lease.holder, "execution_arn": lease.execution_arn}
        if status in LIVE_STATUSES:
            report.kept_running += 1
            return
        if status == _ERROR:
            report.kept_error += 1
            return
        releasable = status in TERMINAL_STATUSES or (
            status == _NOT_FOUND and self.release_not_found and self._same_region(lease)
        )
        if not releasable:
            report.kept_unknown += 1
            self._log.info(
                "keeping lease: status not conclusive", extra={**fields, "status": status}
            )
            return
        if dry_run:
            report.released_terminal += 1
            self._log.info("dry run: would release lease", extra={**fields, "status": status})
            return
        try:
            released = self.semaphore.release(lease.key, lease.holder)
        except (ClientError, BotoCoreError, DurableSemaphoreError) as err:
            report.errors += 1
            self._log.warning("release failed", extra={**fields, "error": repr(err)})
            return
        if released:
            report.released_terminal += 1
            self._log.info("released lease", extra={**fields, "status": status})
        else:
            report.already_released += 1

    def _reclaim(self, key: str, expired: int, report: ReapReport, *, dry_run: bool) -> None:
        if dry_run:
            report.released_expired += expired
            report.keys_reclaimed += 1
            self._log.info("dry run: would reclaim expired leases", extra={"key": key})
            return
        try:
            removed = self.semaphore.reclaim_expired(key)
        except (ClientError, BotoCoreError, DurableSemaphoreError) as err:
            report.errors += 1
            self._log.warning("reclaim failed", extra={"key": key, "error": repr(err)})
            return
        report.released_expired += removed
        report.keys_reclaimed += 1
        if removed:
            self._log.info("reclaimed expired leases", extra={"key": key, "removed": removed})

    def _same_region(self, lease: Lease) -> bool:
        """True if the ARN's region is the Lambda client's: "not found" in another region than
        the execution's says nothing about the execution."""
        arn = lease.execution_arn or ""
        parts = arn.split(":")
        return len(parts) > 3 and parts[3] == self.lambda_client.meta.region_name


def _default_logger() -> Any:
    """A Powertools structured logger (JSON lines with key/holder fields) for CloudWatch."""
    from aws_lambda_powertools import Logger

    return Logger(service="durable-semaphore-reaper")


# ------------------------------------------------------------------------------ Lambda handler

_METRIC_FIELDS = (
    "scanned",
    "released_terminal",
    "released_expired",
    "kept_running",
    "kept_unknown",
    "kept_no_arn",
    "kept_error",
    "errors",
    "executions_checked",
    "executions_live",
)


def _emit_metrics(report: ReapReport, namespace: str) -> None:
    """One CloudWatch embedded-metric-format line, so alarms need no extra API calls."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = Metrics(namespace=namespace, service="durable-semaphore-reaper")
    for name in _METRIC_FIELDS:
        metrics.add_metric(
            name="".join(p.capitalize() for p in name.split("_")),
            unit=MetricUnit.Count,
            value=getattr(report, name),
        )
    metrics.flush_metrics()


def handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """The scheduled reaper function. Table from ``$DURABLE_SEMAPHORE_TABLE``.

    The event may carry ``{"dry_run": true}``. The run's report is returned and logged, and its
    counts are published as metrics (namespace ``$REAPER_METRICS_NAMESPACE``, default
    ``DurableSemaphore``). Lookup failures do not fail the invocation (a retry would not help
    and would cost a second scan); alarm on the ``Errors`` metric instead.
    """
    event = event or {}
    semaphore = DynamoDBSemaphore(resolve_table_name(), client=None)
    reaper = Reaper(semaphore, release_not_found=bool(event.get("release_not_found", False)))
    page_size = event.get("page_size")
    report = reaper.reap(
        dry_run=bool(event.get("dry_run", False)),
        page_size=int(page_size) if page_size is not None else None,
    )
    _emit_metrics(report, os.environ.get("REAPER_METRICS_NAMESPACE", "DurableSemaphore"))
    return report.as_dict()


# ------------------------------------------------------------------------------ CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``durable-semaphore reap``; wire with ``set_defaults(func=run_cli)``."""
    parser.add_argument(
        "--table", default=None, help="lease table (default: $DURABLE_SEMAPHORE_TABLE)"
    )
    parser.add_argument("--region", default=None, help="AWS region of the table and executions")
    parser.add_argument("--endpoint-url", default=None, help="DynamoDB endpoint (e.g. local)")
    parser.add_argument("--lambda-endpoint-url", default=None, help="Lambda endpoint override")
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be released; write nothing"
    )
    parser.add_argument(
        "--release-not-found",
        action="store_true",
        help="also release leases whose execution Lambda reports as not found (same region only)",
    )
    parser.add_argument("--page-size", type=int, default=None, help="items per Scan request")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """Run one sweep. Exit status 0 when clean, 1 when some leases could not be judged.

    Errors (a missing table, no credentials, AWS errors) propagate, so that ``cli.main`` maps
    them to its exit codes (3 for a missing table, and so on).
    """
    session = boto3.session.Session()
    region = args.region
    if region is None and (args.endpoint_url or args.lambda_endpoint_url):
        region = session.region_name or _LOCAL_REGION  # local backends ignore the region
    semaphore = DynamoDBSemaphore(
        resolve_table_name(args.table),
        session.client(
            "dynamodb",
            endpoint_url=args.endpoint_url,
            region_name=region,
            config=default_client_config(),
        ),
    )
    # The same region as the table: leases name executions of the table's region.
    lambda_client = session.client(
        "lambda",
        region_name=region,
        endpoint_url=args.lambda_endpoint_url,
        config=_lambda_client_config(),
    )
    reaper = Reaper(
        semaphore,
        lambda_client,
        release_not_found=args.release_not_found,
        logger=_QuietLogger(),
    )
    report = reaper.reap(dry_run=args.dry_run, page_size=args.page_size)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        verb = "would release" if report.dry_run else "released"
        print(
            f"scanned {report.scanned} leases: {verb} {report.released_terminal} of terminal "
            f"executions and {report.released_expired} expired; kept {report.kept_running} "
            f"running, {report.kept_unknown} unknown, {report.kept_no_arn} without ARN, "
            f"{report.kept_error} after errors ({report.errors} errors)"
        )
    return 1 if report.errors else 0


class _QuietLogger:
    """The CLI prints a summary instead of a JSON line per lease."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def warning(self, msg: str, *args: Any, extra: Mapping[str, Any] | None = None) -> None:
        print(f"warning: {msg} {dict(extra or {})}", file=sys.stderr)
