"""The reaper: gives back the slots of leases whose durable execution can no longer release them.

Branches release their own leases, and a map or parallel sweeps its leftovers when it returns.
Neither happens when the *execution* ends underneath them: it FAILED, TIMED_OUT or was STOPPED
(nothing runs any more), or it SUCCEEDED past an early completion that orphaned branches. Those
leases would hold their slots until they expire, and branch leases live up to a year. The reaper
scans the lease items, asks Lambda for each holder execution's status
(``lambda:GetDurableExecution``) and releases the leases of terminal executions; it also
reclaims leases that have simply expired.

The wait queue gets the same treatment. A queue marker (an ``h#`` item in state ``queued``) of a
terminal execution is removed with its queue entry, so the dead waiter no longer sits ahead of
live ones; an expired marker (a waiter that stopped checking in) goes with its key's reclaim.
Releasing a lease while others wait hands the slot to the oldest live waiter, as any release
does; with a :class:`~durable_semaphore.wake.Waker` the reaper also wakes it, otherwise the
waiter finds the slot at its next check. Queue entries whose marker is gone (DynamoDB's TTL
sweeper deleted it) are only counted: the store drops them when a release or acquire reaches them.

Safety rule: **never release when in doubt.** A lease is released only when its execution is
positively reported SUCCEEDED, FAILED, TIMED_OUT or STOPPED, or when it has expired. A live
status (RUNNING, PAUSING, PAUSED), DELETING, a status this code does not know, throttling, access
denied, a network error or anything else keeps the lease: a wrongly released slot lets one
branch too many run, which is the one thing the limiter exists to prevent, whereas a wrongly
kept slot only delays work until the next run or the lease's expiry. Queue markers follow the
same rule (a wrongly removed waiter would lose its place in line).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from durable_semaphore.errors import DurableSemaphoreError
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.retry import REAPER_LAMBDA, client_config
from durable_semaphore.store import (
    Grant,
    Lease,
    Waiter,
    admin_client_config,
    create_client,
)
from durable_semaphore.wake import (
    LambdaCallbackWaker,
    WakeOutcome,
    Waker,
    wake_first_waiting,
    waker_from_env,
)

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
    return client_config(REAPER_LAMBDA)


@dataclass
class ReapReport:
    """What one reaper run saw and did. Counts are of lease items (held or granted ``h#``
    items) unless named otherwise; ``waiters_*`` count queue markers (``h#`` items in state
    ``queued``), one per waiting holder.

    In a dry run, ``released_*``, ``waiters_removed`` and ``waiters_expired`` count what
    *would* have been removed; nothing is written, so nothing is handed over or woken.
    """

    dry_run: bool = False
    #: Lease items scanned (expired ones included; queue markers are ``waiters_scanned``).
    scanned: int = 0
    #: Leases of SUCCEEDED/FAILED/TIMED_OUT/STOPPED executions, released (or to be, in dry run).
    released_terminal: int = 0
    #: Leases freed because they had expired (deleted by ``reclaim_expired``).
    released_expired: int = 0
    #: Leases (or queue markers) of terminal executions that were gone or expired by the time
    #: we released them.
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
    #: Keys whose expired leases or queue markers were reclaimed.
    keys_reclaimed: int = 0
    #: Queue markers scanned, expired ones included.
    waiters_scanned: int = 0
    #: Waiters of terminal executions taken out of the queue (marker and queue entry).
    waiters_removed: int = 0
    #: Expired queue markers (waiters that stopped checking in) on the keys reclaimed; the
    #: reclaim deletes them with their queue entries unless the waiter checked in meanwhile.
    waiters_expired: int = 0
    #: Live queue markers left in place, whatever the reason (a live execution, no ARN, a
    #: status that is not conclusive, a failed lookup): the ``kept_*`` counts are leases only.
    waiters_kept: int = 0
    #: Slots that this run's releases and reclaims handed to waiters.
    slots_handed_over: int = 0
    #: Waiters of those hand-offs woken through the waker (callback completed).
    waiters_woken: int = 0
    #: Wake-ups that did not land (callback gone, or the call failed): the waiter finds the
    #: slot at its next check, and a slot granted to an execution that ended is released by
    #: the next run (a granted lease of a terminal execution).
    wakes_missed: int = 0
    #: Queue entries (``w#``) whose holder has no queued marker: left alone, since the store
    #: drops them when a release or an acquire reaches them; non-zero is only worth a look.
    orphan_queue_entries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Expired:
    """Expired items of one key seen by the scan, so a dry run can report what reclaim does."""

    leases: int = 0
    markers: int = 0


class Reaper:
    """Releases leases and queue entries of terminal executions, and reclaims expired ones.

    ``limiter`` is the lease table's facade; the reaper is table-wide, so a limiter without a
    name does (``DynamoDBLimiter(table_name=..., waker=None)``): only its store methods are
    used, never its key, limit or waker. ``lambda_client`` may be None when no lease carries
    an execution ARN (then only expiry is acted on); it is created lazily with standard
    retries otherwise. ``waker`` wakes the
    waiters that this run hands a slot to (None: they find it at their next check or callback
    timeout). ``clock`` defaults to the store's clock so both judge expiry alike.
    """

    def __init__(
        self,
        limiter: DynamoDBLimiter,
        lambda_client: LambdaClient | None = None,
        *,
        waker: Waker | None = None,
        clock: Callable[[], float] | None = None,
        release_not_found: bool = False,
        logger: Any = None,
    ) -> None:
        self.limiter = limiter
        self._lambda = lambda_client
        self.waker = waker
        self._clock = clock if clock is not None else limiter.now
        self.release_not_found = release_not_found
        self._log = logger if logger is not None else _default_logger()

    @property
    def lambda_client(self) -> LambdaClient:
        if self._lambda is None:
            self._lambda = boto3.client("lambda", config=_lambda_client_config())
        return self._lambda

    def reap(self, *, dry_run: bool = False, page_size: int | None = None) -> ReapReport:
        """One sweep over every lease and queue marker, then a count of orphan queue entries.
        Per-item failures are counted, never raised, so one bad ARN cannot stop the sweep; only
        a table that is missing or not a lease table, or failing to scan the lease items,
        raises.

        Statuses are cached per ARN for this run only: an execution with many leases costs one
        lookup, and a status never goes stale across runs.
        """
        # A Scan filters on sk without checking the key schema: on a table of another schema
        # it finds nothing and the run would look clean. One Query first makes that an error.
        self.limiter.check_table()
        report = ReapReport(dry_run=dry_run)
        cache: dict[str, str] = {}
        expired_by_key: dict[str, _Expired] = {}
        queued: set[tuple[str, str]] = set()
        now = self._clock()
        for lease in self.limiter.scan_leases(page_size=page_size):
            waiting = not lease.holds_slot
            if waiting:
                report.waiters_scanned += 1
                queued.add((lease.key, lease.holder))
            else:
                report.scanned += 1
            # Another client's lease is reclaimable only once expired by more than the skew
            # margin (see DynamoDBSemaphore); a queue marker is judged without it.
            if self.limiter.reclaimable(lease, now):
                # Reclaim removes expired markers with their queue entries, so a key whose only
                # expired items are markers is reclaimed too.
                expired = expired_by_key.setdefault(lease.key, _Expired())
                if waiting:
                    expired.markers += 1
                else:
                    expired.leases += 1
                continue
            if lease.execution_arn is None:
                if waiting:
                    report.waiters_kept += 1
                else:
                    report.kept_no_arn += 1
                continue
            arn = lease.execution_arn
            if arn not in cache:
                cache[arn] = self._status(arn, report)
            self._judge(lease, cache[arn], report, dry_run=dry_run)

        for key, expired in expired_by_key.items():
            self._reclaim(key, expired, report, dry_run=dry_run)
        report.orphan_queue_entries = self._orphans(queued, report, page_size=page_size)
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
        """Release a lease, or take a waiter out of the queue, if its execution has ended."""
        waiting = not lease.holds_slot
        what = "waiter" if waiting else "lease"
        fields = {
            "key": lease.key,
            "holder": lease.holder,
            "execution_arn": lease.execution_arn,
            "state": lease.state,
        }
        releasable = status in TERMINAL_STATUSES or (
            status == _NOT_FOUND and self.release_not_found and self._same_region(lease)
        )
        if not releasable:
            if waiting:
                report.waiters_kept += 1
            elif status in LIVE_STATUSES:
                report.kept_running += 1
            elif status == _ERROR:
                report.kept_error += 1
            else:
                report.kept_unknown += 1
            if status not in LIVE_STATUSES and status != _ERROR:
                self._log.info(
                    f"keeping {what}: status not conclusive", extra={**fields, "status": status}
                )
            return
        if dry_run:
            if waiting:
                report.waiters_removed += 1
            else:
                report.released_terminal += 1
            self._log.info(f"dry run: would release {what}", extra={**fields, "status": status})
            return
        try:
            # A queued holder leaves the queue; a held or granted one (a marker may have been
            # granted since the scan) frees its slot, which goes to the oldest live waiter.
            # The reaper wakes the grant itself (_wake), counting what it did.
            result = self.limiter.release(lease.key, lease.holder, wake=False)
        except (ClientError, BotoCoreError, DurableSemaphoreError) as err:
            report.errors += 1
            self._log.warning(f"{what} release failed", extra={**fields, "error": repr(err)})
            return
        if result.left_queue:
            report.waiters_removed += 1
            self._log.info("removed waiter from the queue", extra={**fields, "status": status})
        elif result.released:
            report.released_terminal += 1
            self._log.info("released lease", extra={**fields, "status": status})
        else:
            report.already_released += 1
        if result.grants:
            self._wake(result.grants, report)

    def _reclaim(self, key: str, expired: _Expired, report: ReapReport, *, dry_run: bool) -> None:
        if dry_run:
            report.released_expired += expired.leases
            report.waiters_expired += expired.markers
            report.keys_reclaimed += 1
            self._log.info("dry run: would reclaim expired items", extra={"key": key})
            return
        try:
            result = self.limiter.reclaim(key)
        except (ClientError, BotoCoreError, DurableSemaphoreError) as err:
            report.errors += 1
            self._log.warning("reclaim failed", extra={"key": key, "error": repr(err)})
            return
        report.released_expired += result.deleted
        report.waiters_expired += expired.markers
        report.keys_reclaimed += 1
        if result.deleted or expired.markers:
            self._log.info(
                "reclaimed expired items",
                extra={"key": key, "leases": result.deleted, "waiters": expired.markers},
            )
        self._wake(result.grants, report)

    def _wake(self, grants: Iterable[Grant], report: ReapReport) -> None:
        """Tell waiters their slot is ready. Without a waker, or for a waiter that polls (no
        callback id), they find it at their next check: a missed wake-up only delays."""
        for grant in grants:
            report.slots_handed_over += 1
            fields = {"key": grant.key, "holder": grant.holder}
            if self.waker is None or grant.callback_id is None:
                continue
            try:
                outcome = wake_first_waiting(self.waker, grant)
            except Exception as err:  # a pluggable waker must not stop the sweep
                outcome = WakeOutcome.FAILED
                fields["error"] = repr(err)
            if outcome is WakeOutcome.DELIVERED:
                report.waiters_woken += 1
                self._log.info("woke waiter", extra=fields)
            else:
                report.wakes_missed += 1
                self._log.info(
                    "wake-up missed; the waiter finds its slot at its next check",
                    extra={**fields, "outcome": outcome.value},
                )

    def _orphans(
        self, queued: set[tuple[str, str]], report: ReapReport, *, page_size: int | None
    ) -> int:
        """Queue entries whose holder has no queued marker, counted and left alone.

        An entry not matched by a marker from the lease scan may belong to a waiter that joined
        since; such candidates (rare) are checked against the holder's current item.
        """
        orphans = 0
        try:
            for waiter in self.limiter.scan_waiters(page_size=page_size):
                if (waiter.key, waiter.holder) in queued or self._has_marker(waiter):
                    continue
                orphans += 1
                self._log.info(
                    "orphan queue entry (no queued marker); the store drops it when reached",
                    extra={"key": waiter.key, "holder": waiter.holder, "seq": waiter.seq},
                )
        except (ClientError, BotoCoreError, DurableSemaphoreError) as err:
            report.errors += 1
            self._log.warning("queue scan failed", extra={"error": repr(err)})
        return orphans

    def _has_marker(self, waiter: Waiter) -> bool:
        return any(
            entry.holder == waiter.holder and not entry.holds_slot
            for entry in self.limiter.entries(waiter.key, waiter.holder)
        )

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
    "waiters_scanned",
    "waiters_removed",
    "waiters_expired",
    "waiters_kept",
    "slots_handed_over",
    "waiters_woken",
    "wakes_missed",
    "orphan_queue_entries",
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

    With ``$DURABLE_SEMAPHORE_WAKER=lambda`` the waiters this run hands a slot to are woken
    through their callbacks (the role then needs ``lambda:SendDurableExecutionCallbackSuccess``);
    otherwise they find the slot at their next check.
    """
    event = event or {}
    table = DynamoDBLimiter(waker=None)  # the table of $DURABLE_SEMAPHORE_TABLE, at first use
    lambda_client = boto3.client("lambda", config=_lambda_client_config())
    reaper = Reaper(
        table,
        lambda_client,
        waker=waker_from_env(lambda_client),
        release_not_found=bool(event.get("release_not_found", False)),
    )
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
    parser.add_argument(
        "--wake",
        action="store_true",
        help="wake the waiters handed a slot through their callbacks "
        "(lambda:SendDurableExecutionCallbackSuccess); otherwise they find it at their next check",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """Run one sweep. Exit status 0 when clean, 1 when some leases could not be judged.

    Errors (a missing table, a table that is not a lease table, no credentials, AWS errors)
    propagate, so that ``cli.main`` maps them to its exit codes (3 for a missing table, 7 for
    one that is not a lease table, and so on): a sweep that could not run never exits 0.
    """
    session = boto3.session.Session()
    region = args.region
    if region is None and (args.endpoint_url or args.lambda_endpoint_url):
        region = session.region_name or _LOCAL_REGION  # local backends ignore the region
    table = DynamoDBLimiter(
        table_name=args.table,  # None: $DURABLE_SEMAPHORE_TABLE
        # An admin command: fail within seconds on an unreachable endpoint, with our error.
        client=create_client(
            session=session,
            endpoint_url=args.endpoint_url,
            region_name=region,
            config=admin_client_config(),
        ),
        waker=None,
    )
    # The same region as the table: leases name executions of the table's region.
    lambda_client = session.client(
        "lambda",
        region_name=region,
        endpoint_url=args.lambda_endpoint_url,
        config=_lambda_client_config(),
    )
    reaper = Reaper(
        table,
        lambda_client,
        waker=LambdaCallbackWaker(lambda_client) if args.wake else None,
        release_not_found=args.release_not_found,
        logger=_QuietLogger(),
    )
    report = reaper.reap(dry_run=args.dry_run, page_size=args.page_size)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        verb = "would release" if report.dry_run else "released"
        remove = "would remove" if report.dry_run else "removed"
        print(
            f"scanned {report.scanned} leases: {verb} {report.released_terminal} of terminal "
            f"executions and {report.released_expired} expired; kept {report.kept_running} "
            f"running, {report.kept_unknown} unknown, {report.kept_no_arn} without ARN, "
            f"{report.kept_error} after errors ({report.errors} errors)"
        )
        print(
            f"scanned {report.waiters_scanned} waiters: {remove} {report.waiters_removed} of "
            f"terminal executions and {report.waiters_expired} expired; kept "
            f"{report.waiters_kept}; handed {report.slots_handed_over} slot(s) to waiters, woke "
            f"{report.waiters_woken}; {report.orphan_queue_entries} orphan queue entries"
        )
    return 1 if report.errors else 0


class _QuietLogger:
    """The CLI prints a summary instead of a JSON line per lease."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def warning(self, msg: str, *args: Any, extra: Mapping[str, Any] | None = None) -> None:
        print(f"warning: {msg} {dict(extra or {})}", file=sys.stderr)
