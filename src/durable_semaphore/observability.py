"""Lease events for logs and metrics, off by default and nearly free while off.

The store and the SDK integration report lease events through the module functions below
(:func:`lease_acquired`, :func:`lease_released`, :func:`lease_reclaimed`, :func:`lease_waited`,
:func:`lease_in_flight`). Each one is a single global read and a ``None`` check until an
observer is installed, and Powertools is not even imported then: a lease operation costs
milliseconds of DynamoDB round trip, so the disabled path is noise.

Enable it with :func:`enable` (or set ``DURABLE_SEMAPHORE_METRICS_NAMESPACE`` before the import)
to get Powertools structured logs (fields ``key`` and ``holder``; never payloads or credentials)
and CloudWatch EMF metrics ``LeaseAcquired``, ``LeaseReleased``, ``LeaseWaitSeconds``,
``LeaseReclaimed`` and ``InFlight``. EMF lines go to stdout, which Lambda ships to CloudWatch
Logs, where they become metrics without any API call. Any other sink can implement
:class:`LeaseObserver` and be installed with :func:`set_observer`.

Metric dimensions stay low-cardinality, because every distinct dimension set is a billed custom
metric: a per-operation key (``limiter="dynamodb"``: ``<execution ARN>#<operation id>``) gets
the constant ``scope=per-operation``; any other key (a named limiter) gets ``scope=named`` and
``limiter=<name>``. The key, holder and execution ARN travel as EMF properties, which are
searchable in CloudWatch Logs but are not metrics (see :func:`metric_dimensions`).

``InFlight`` is reported where the store already knows the count without an extra request:
whenever it reconciles a key (which it does when a full key may hold an expired lease, and
when reclaiming), so the gauge costs nothing and is exact when it is reported.
"""

from __future__ import annotations

import collections
import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "LOG_LEVEL_ENV_VAR",
    "METRICS_NAMESPACE_ENV_VAR",
    "SCOPE_NAMED",
    "SCOPE_PER_ITEM",
    "SCOPE_PER_OPERATION",
    "LeaseObserver",
    "PowertoolsObserver",
    "configure_from_env",
    "disable",
    "enable",
    "get_observer",
    "lease_acquired",
    "lease_in_flight",
    "lease_queued",
    "lease_reclaimed",
    "lease_released",
    "lease_waited",
    "metric_dimensions",
    "metric_properties",
    "register_family",
    "set_observer",
]

#: Set to a CloudWatch namespace to enable logs and metrics when the package is imported.
METRICS_NAMESPACE_ENV_VAR = "DURABLE_SEMAPHORE_METRICS_NAMESPACE"
#: Log level of the structured logger when enabled from the environment (default INFO).
LOG_LEVEL_ENV_VAR = "DURABLE_SEMAPHORE_LOG_LEVEL"
DEFAULT_SERVICE = "durable-semaphore"
# CloudWatch rejects dimension values over 1024 characters; keys may be up to 2048 bytes.
_MAX_DIMENSION_CHARS = 1024
#: Values of the ``scope`` dimension.
SCOPE_PER_OPERATION = "per-operation"
SCOPE_NAMED = "named"
SCOPE_PER_ITEM = "per-item"
# The SDK's operation ids (SDK 1.x to 3.x): the first 64 hex digits of a blake2b digest.
_SDK_OPERATION_ID = re.compile(r"[0-9a-f]{64}")


@runtime_checkable
class LeaseObserver(Protocol):
    """Receives lease events. Implementations must be thread-safe and must not raise."""

    def acquired(self, key: str, holder: str) -> None:
        """``holder`` took a new slot on ``key`` (not an idempotent re-acquire)."""

    def released(self, key: str, holder: str) -> None:
        """``holder`` gave its live slot back."""

    def reclaimed(self, key: str, count: int) -> None:
        """``count`` expired leases of ``key`` were deleted and their slots freed."""

    def waited(self, key: str, holder: str, seconds: float) -> None:
        """``holder`` waited ``seconds`` (durable time) before its lease was granted."""

    def in_flight(self, key: str, count: int) -> None:
        """``key`` had ``count`` live leases when the store last counted them."""

    def lost(self, key: str, holder: str) -> None:
        """``holder`` found its lease gone (swept, reaped, expired or released by someone
        else) while its work still ran: that work ran without a slot."""

    def booked(self, key: str, holder: str, delay: float) -> None:
        """``holder`` booked a start under the rate ``key``, ``delay`` seconds ahead (0: at
        once). Once per booking: a replay that finds its booking is not reported."""

    def queued(self, key: str, holder: str, ahead: int) -> None:
        """``holder`` joined ``key``'s queue with about ``ahead`` waiters before it."""


_observer: LeaseObserver | None = None


def set_observer(observer: LeaseObserver | None) -> LeaseObserver | None:
    """Install ``observer`` (None disables); returns the previous one so tests can restore it."""
    global _observer
    previous = _observer
    _observer = observer
    return previous


def get_observer() -> LeaseObserver | None:
    return _observer


# -- the hooks the library calls (cheap when disabled) ----------------------------------------


def lease_acquired(key: str, holder: str) -> None:
    observer = _observer
    if observer is not None:
        _safely(observer.acquired, key, holder)


def lease_released(key: str, holder: str) -> None:
    observer = _observer
    if observer is not None:
        _safely(observer.released, key, holder)


def lease_reclaimed(key: str, count: int, *, in_flight: int | None = None) -> None:
    """Report reclaimed leases (only when ``count`` > 0) and, if known, the count left."""
    observer = _observer
    if observer is not None:
        if count > 0:
            _safely(observer.reclaimed, key, count)
        if in_flight is not None:
            _safely(observer.in_flight, key, in_flight)


def lease_waited(key: str, holder: str, seconds: float) -> None:
    """For the SDK integration: call once when a branch gets its lease, with the durable time
    since its first acquire attempt (0 when it got the lease at once)."""
    observer = _observer
    if observer is not None:
        _safely(observer.waited, key, holder, seconds)


def lease_in_flight(key: str, count: int) -> None:
    observer = _observer
    if observer is not None:
        _safely(observer.in_flight, key, count)


def lease_lost(key: str, holder: str) -> None:
    """For the SDK integration and ``hold()``: a holder's lease was gone while it worked."""
    observer = _observer
    if observer is not None:
        # Looked up inside the guard: an observer that lacks the hook must not break a hold.
        _safely(lambda: observer.lost(key, holder))


def lease_queued(key: str, holder: str, ahead: int) -> None:
    """A holder joined a key's queue, with about ``ahead`` waiters before it (the queue's
    depth as the newest waiter saw it)."""
    observer = _observer
    if observer is not None:
        _safely(lambda: observer.queued(key, holder, ahead))


def rate_booked(key: str, holder: str, delay: float) -> None:
    """For the rate limiter: a fresh booking, and how far ahead it starts."""
    observer = _observer
    if observer is not None:
        _safely(lambda: observer.booked(key, holder, delay))


def _safely(method: Any, *args: Any) -> None:
    """Observability must never break a lease operation."""
    try:
        method(*args)
    except Exception:  # pragma: no cover - defensive; logged by the std logging module
        import logging

        logging.getLogger(__name__).debug("lease observer failed", exc_info=True)


# -- metric dimensions: low cardinality, identities as properties -----------------------------


def _split_per_operation(key: str) -> tuple[str, str] | None:
    """``(execution ARN, operation id)`` if ``key`` is a per-operation scope key, else None.

    Only the key reaches this module, so its shape decides: ``<execution ARN>#<operation id>``
    where the ARN starts with ``arn:`` (as on Lambda) or the id is an SDK operation id (which
    also catches the local test runner, whose execution ARNs are bare UUIDs). Either signal is
    enough, so a change in one of the two formats still keeps ARNs out of the dimensions.
    """
    arn, sep, operation_id = key.rpartition("#")
    if not (sep and arn and operation_id):
        return None
    if key.startswith("arn:") or _SDK_OPERATION_ID.fullmatch(operation_id):
        return arn, operation_id
    return None


def _dimension_value(text: str) -> str:
    """``text`` as CloudWatch accepts it: printable ASCII (others escaped), 1 to 1024 chars."""
    value = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in text)
    return value[:_MAX_DIMENSION_CHARS] if value.strip() else "(blank)"


#: Per-item keys this process computed, by the label of the limiter that computed them: their
#: metrics carry the label as the dimension (keys are unbounded, tenants by the thousand).
_families: collections.OrderedDict[str, str] = collections.OrderedDict()
_families_lock = threading.Lock()
_MAX_FAMILIES = 10_000
_SHARD_SUFFIX = re.compile(r"#\d+of\d+$")


def register_family(key: str, label: str) -> None:
    """Report ``key``'s events under ``label`` (its per-item limiter's name) rather than
    under the key itself. Bounded: the oldest keys fall back to their own name."""
    with _families_lock:
        _families[key] = label
        _families.move_to_end(key)
        while len(_families) > _MAX_FAMILIES:
            _families.popitem(last=False)


def _family(key: str) -> str | None:
    return _families.get(key) or _families.get(_SHARD_SUFFIX.sub("", key))


def metric_dimensions(key: str) -> dict[str, str]:
    """The metric dimensions of ``key``: ``scope=per-operation`` for a per-operation key (one
    constant metric for all of them), ``scope=per-item`` and ``limiter=<label>`` for a key a
    per-item limiter computed, else ``scope=named`` and ``limiter=<key>``."""
    if _split_per_operation(key) is not None:
        return {"scope": SCOPE_PER_OPERATION}
    family = _family(key)
    if family is not None:
        return {"scope": SCOPE_PER_ITEM, "limiter": _dimension_value(family)}
    return {"scope": SCOPE_NAMED, "limiter": _dimension_value(key)}


def metric_properties(key: str, holder: str | None = None) -> dict[str, str]:
    """The high-cardinality context of an event, kept out of the dimensions: the full key, the
    holder and, for a per-operation key, its execution ARN and operation id."""
    properties = {"key": key}
    split = _split_per_operation(key)
    if split is not None:
        properties["execution_arn"], properties["operation_id"] = split
    if holder is not None:
        properties["holder"] = holder
    return properties


# -- the Powertools observer ------------------------------------------------------------------


class PowertoolsObserver:
    """Structured logs via Powertools Logger and EMF metrics via Powertools ``single_metric``.

    One EMF line per event, each with its own dimensions (:func:`metric_dimensions`) and
    properties (:func:`metric_properties`): Powertools' batched ``Metrics`` shares one dimension
    set and one metadata set per flush, which would mix up events of different keys. Acquire
    and release are logged at DEBUG (one pair per branch would drown a Lambda's log), reclaims
    and waits at INFO.
    """

    def __init__(
        self,
        namespace: str | None,
        *,
        service: str = DEFAULT_SERVICE,
        logs: bool = True,
        log_level: str = "INFO",
        logger: Any = None,
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.logger: Any = None
        if logs:
            if logger is None:
                from aws_lambda_powertools import Logger

                logger = Logger(service=service, level=log_level)
            self.logger = logger
        self._single_metric: Any = None
        self._units: Any = None
        if namespace:
            from aws_lambda_powertools.metrics import MetricUnit, single_metric

            self._single_metric = single_metric
            self._units = MetricUnit

    def _metric(
        self, name: str, unit: str, value: float, key: str, holder: str | None = None
    ) -> None:
        if self._single_metric is None:
            return
        with self._single_metric(
            name=name,
            unit=getattr(self._units, unit),
            value=value,
            namespace=self.namespace,
            default_dimensions={"service": self.service, **metric_dimensions(key)},
        ) as metric:
            for prop, prop_value in metric_properties(key, holder).items():
                metric.add_metadata(key=prop, value=prop_value)

    def acquired(self, key: str, holder: str) -> None:
        if self.logger is not None:
            self.logger.debug("lease acquired", extra={"key": key, "holder": holder})
        self._metric("LeaseAcquired", "Count", 1, key, holder)

    def released(self, key: str, holder: str) -> None:
        if self.logger is not None:
            self.logger.debug("lease released", extra={"key": key, "holder": holder})
        self._metric("LeaseReleased", "Count", 1, key, holder)

    def reclaimed(self, key: str, count: int) -> None:
        if self.logger is not None:
            self.logger.info("expired leases reclaimed", extra={"key": key, "count": count})
        self._metric("LeaseReclaimed", "Count", count, key)

    def waited(self, key: str, holder: str, seconds: float) -> None:
        if self.logger is not None:
            self.logger.info(
                "lease granted after waiting",
                extra={"key": key, "holder": holder, "wait_seconds": seconds},
            )
        self._metric("LeaseWaitSeconds", "Seconds", seconds, key, holder)

    def in_flight(self, key: str, count: int) -> None:
        self._metric("InFlight", "Count", count, key)

    def booked(self, key: str, holder: str, delay: float) -> None:
        """A start booked under a rate: one admission, and how far ahead it was booked (a
        backlog shows as a growing delay)."""
        if self.logger is not None:
            self.logger.debug("start booked", extra={"key": key, "holder": holder, "delay": delay})
        self._metric("RateAdmissions", "Count", 1, key, holder)
        self._metric("RateBookedDelaySeconds", "Seconds", delay, key, holder)

    def lost(self, key: str, holder: str) -> None:
        if self.logger is not None:
            self.logger.warning("lease lost", extra={"key": key, "holder": holder})
        self._metric("LeaseLost", "Count", 1, key, holder)

    def queued(self, key: str, holder: str, ahead: int) -> None:
        """A waiter joined: the queue's depth as it saw it (a growing backlog shows here)."""
        if self.logger is not None:
            self.logger.debug("queued", extra={"key": key, "holder": holder, "ahead": ahead})
        self._metric("WaitersQueued", "Count", ahead + 1, key, holder)


def enable(
    namespace: str | None = "DurableSemaphore",
    *,
    service: str = DEFAULT_SERVICE,
    logs: bool = True,
    log_level: str = "INFO",
) -> PowertoolsObserver:
    """Turn on Powertools logs and (if ``namespace``) EMF metrics for this process."""
    observer = PowertoolsObserver(namespace, service=service, logs=logs, log_level=log_level)
    set_observer(observer)
    return observer


def disable() -> None:
    set_observer(None)


def configure_from_env(environ: Mapping[str, str] | None = None) -> LeaseObserver | None:
    """Enable from ``$DURABLE_SEMAPHORE_METRICS_NAMESPACE`` (and ``..._LOG_LEVEL``) if set.

    Called once when this module is imported, so a Lambda turns it on with configuration alone.
    """
    env = os.environ if environ is None else environ
    namespace = env.get(METRICS_NAMESPACE_ENV_VAR, "").strip()
    if not namespace:
        return None
    return enable(namespace, log_level=env.get(LOG_LEVEL_ENV_VAR, "INFO").strip() or "INFO")


configure_from_env()
