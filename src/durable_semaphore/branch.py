"""A gated branch from start to finish: gate, body, release after the branch's own checkpoint.

A branch holds its slot from before its body runs until it is terminal. The release must not
come from an invocation that a newer one superseded (it would free a slot the newer one still
uses), so it waits for proof that this invocation is live. The SDK gives that proof for free:
it checkpoints the branch's SUCCEED or FAIL synchronously right after the branch function
returns, and a superseded invocation has that checkpoint refused. So a finished branch hands
its release to :class:`ReleaseQueue`, which runs it once that checkpoint shows in the
execution state (and drops it if the invocation ends first: the map's sweep, the reaper or a
later replay's sweep frees the slot then). FLAT branches have no checkpoint of their own, so
they record a no-op step (``durable-semaphore-release``) before releasing, as all branches did
before.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aws_durable_execution_sdk_python.context import DurableContext
from aws_durable_execution_sdk_python.exceptions import InvocationError, OrphanedChildException

from durable_semaphore import _sdk_compat, observability
from durable_semaphore.errors import DurableSemaphoreError
from durable_semaphore.limiter import BRANCH_LEASE_TTL_SECONDS, DynamoDBLimiter
from durable_semaphore.waiting import Held, gate

__all__ = [
    "HELD_KEYS",
    "RELEASE_OPERATION_NAME",
    "ReleaseQueue",
    "Scope",
    "is_terminal",
    "release_queue",
    "run_gated",
    "sweep",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")

#: The no-op step a FLAT branch checkpoints before it releases its slot.
RELEASE_OPERATION_NAME = "durable-semaphore-release"
#: How long a release waits for its branch's checkpoint before it is dropped (the invocation
#: was superseded or is ending; the sweep or the reaper frees the slot).
_RELEASE_PATIENCE_SECONDS = 300.0
#: How often the release queue looks for checkpoints while releases are pending.
_RELEASE_POLL_SECONDS = 0.005

#: Keys held by the branch body running in this thread; used to refuse self-deadlocking nesting.
HELD_KEYS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "durable_semaphore_held_keys", default=frozenset()
)


@dataclass
class Scope:
    """Everything the branches of one gated map/parallel call share."""

    limiter: DynamoDBLimiter
    execution_arn: str
    operation_id: str
    key: str
    limit: int
    held_outside: frozenset[str]
    #: The execution state the branches checkpoint to (their SUCCEED shows up here).
    state: object
    #: Branches share their parent's context (NestingType.FLAT): no checkpoint of their own.
    flat: bool = False
    closed: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: A branch released a slot in this process: the map ran here, not only replayed, so its
    #: end is when the per-operation key's counter can go.
    released_here: bool = False
    #: Units each branch (by holder id) takes, when not 1.
    weights: dict[str, int] = dataclasses.field(default_factory=dict)

    def weight_of(self, holder: str) -> int:
        return self.weights.get(holder, 1)

    @property
    def holder_prefix(self) -> str:
        return self.limiter.holder_prefix(self.execution_arn, self.operation_id)

    def stored_key(self, holder: str) -> str:
        """The key ``holder``'s lease is stored under (its shard of this scope's key): what
        grants carry, so what in-process wake-ups are addressed by."""
        return self.limiter.place(self.key, holder, self.limit)[0]

    def release_now(
        self,
        holder: str,
        *,
        waited: bool,
        token: str | None = None,
        report_lost: bool = False,
    ) -> None:
        _release_quietly(self, holder, waited=waited, token=token, report_lost=report_lost)

    def drain_local_releases(self) -> None:
        """Run this execution's finished releases of this key now, before an acquire: a
        branch the SDK admits because another finished must find that slot free."""
        release_queue.drain(self.execution_arn, self.key)


def is_terminal(exc: BaseException) -> bool:
    """Whether an exception leaving a branch body (or a map) ends it for good.

    Suspensions (``SuspendExecution`` and ``TimedSuspendExecution``, both BaseException), the
    SDK's background-thread error, and a retryable ``InvocationError`` (the invocation is retried
    with no FAIL checkpoint) are not terminal: the branch is still in flight and keeps its lease.
    ``OrphanedChildException`` (also BaseException) means the map finished without this branch,
    so its lease goes. Any other ``Exception`` is a real failure (retries exhausted included).
    """
    if isinstance(exc, InvocationError):
        return not exc.is_retryable()
    if isinstance(exc, Exception):
        return True
    return isinstance(exc, OrphanedChildException)


def run_gated(
    scope: Scope,
    ctx: DurableContext,
    index: int,
    body: Callable[[], R],
    item: object = None,
) -> R:
    """Gate, run ``body`` while holding the slot, release once the branch is terminal.
    ``item`` (a map's; a parallel's branch index) decides the branch's weight."""
    expected = _sdk_compat.branch_operation_id(scope.operation_id, index)
    actual = _sdk_compat.branch_context_id(ctx)
    if actual != expected:
        raise DurableSemaphoreError(
            f"branch {index} has operation id {actual!r}, expected {expected!r} for map/"
            f"parallel {scope.operation_id!r}; was the same context used from several threads "
            "at once? The limiter cannot tell which map this branch belongs to"
        )
    # The index (public: the SDK passes it to map functions) identifies the branch within its
    # map as well as its operation id does, and reads better in `durable-semaphore status`.
    holder = scope.limiter.holder_id(scope.execution_arn, scope.operation_id, str(index))
    weight = scope.limiter.weight_of(index if item is None else item, scope.limit)
    if weight != 1:
        scope.weights[holder] = weight
    signals = scope.limiter.signals
    arn = scope.execution_arn
    with signals.active(arn):
        held = gate(scope, ctx, holder)
    if held is None:
        return None  # type: ignore[return-value]  # the map returned without this branch
    if held.replayed:
        _renew_on_replay(scope, holder, held)
    keys = HELD_KEYS.set(scope.held_outside | {scope.key})
    try:
        with signals.active(arn), signals.running(arn, scope.stored_key(holder)):
            result = body()
    except BaseException as exc:
        if is_terminal(exc):
            _finish(
                scope, ctx, holder, expected, held, orphaned=isinstance(exc, OrphanedChildException)
            )
        raise
    finally:
        HELD_KEYS.reset(keys)
    _finish(scope, ctx, holder, expected, held, orphaned=False)
    return result


def _finish(
    scope: Scope,
    ctx: DurableContext,
    holder: str,
    branch_operation_id: str,
    held: Held,
    *,
    orphaned: bool,
) -> None:
    """Release a terminal branch's slot once its invocation is proven live."""
    if orphaned:
        # Its map already returned, so no checkpoint of this branch will be accepted; nothing
        # can supersede a release that no replay will repeat either.
        scope.release_now(holder, waited=held.waited, token=held.token, report_lost=True)
        return
    if scope.flat:
        ran_here = False

        def checkpoint(_step_ctx: object) -> None:
            nonlocal ran_here
            ran_here = True

        ctx.step(checkpoint, name=RELEASE_OPERATION_NAME)
        scope.release_now(holder, waited=held.waited, token=held.token, report_lost=ran_here)
        return
    release_queue.add(
        _Pending(scope, holder, held.token, held.waited, branch_operation_id, time.monotonic())
    )


def _renew_on_replay(scope: Scope, holder: str, held: Held) -> None:
    """A replayed branch extends a short lease. The default lease outlives any execution (a
    year), so only a limiter with a custom ``ttl_seconds`` pays this request on replays.
    Renew never takes a new slot, so a lease lost meanwhile is reported, not re-taken."""
    ttl = scope.limiter.ttl_seconds
    if ttl >= BRANCH_LEASE_TTL_SECONDS:
        return
    try:
        if scope.limiter.renew(scope.key, holder, token=held.token, limit=scope.limit) is None:
            _lease_lost(scope, holder, "on replay")
    except Exception:
        logger.warning("durable-semaphore: renew of %s failed", holder, exc_info=True)


def _release_quietly(
    scope: Scope,
    holder: str,
    *,
    waited: bool,
    token: str | None = None,
    report_lost: bool = True,
) -> None:
    """Release once the branch is terminal. With the lease's ``token``, a lease this branch
    no longer owns is never freed, and finding it gone is reported as a lost lease (unless
    ``report_lost`` is False: a replay repeating a release an earlier invocation made)."""
    try:
        result = scope.limiter.release(
            scope.key,
            holder,
            execution_arn=scope.execution_arn,
            waited=waited,
            token=token,
            limit=scope.limit,
            weight=scope.weight_of(holder),
        )
    except Exception:
        # A failed release leaks the slot only until the map's sweep, the reaper or expiry.
        logger.warning(
            "durable-semaphore: release of %s on %s failed", holder, scope.key, exc_info=True
        )
        return
    scope.released_here = True
    if report_lost and token is not None and not result.released and not result.left_queue:
        _lease_lost(scope, holder, "at release")


def _lease_lost(scope: Scope, holder: str, when: str) -> None:
    """The branch ran (part of) its body without its slot: swept, reaped, expired, or released
    by an operator or an overlapping invocation. Nothing to undo, but it must be visible."""
    logger.warning(
        "durable-semaphore: %s no longer held its lease on %s %s (swept, reaped, expired or "
        "released by an operator or an overlapping invocation); its body ran without a slot",
        holder,
        scope.key,
        when,
    )
    observability.lease_lost(scope.key, holder)


# -- releases that wait for their branch's checkpoint ----------------------------------------


@dataclass(eq=False)
class _Pending:
    scope: Scope
    holder: str
    token: str | None
    waited: bool
    operation_id: str
    added: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class ReleaseQueue:
    """Releases of finished branches, each run once the branch's checkpoint is accepted.

    A pending release keeps its execution *active* (see
    :meth:`~durable_semaphore.wake.LocalSignals.active`), so a waiter of the same execution
    stays in-process until the slot is handed over. One daemon thread per process watches
    the execution states; a gate of the same execution and key, and the end of the map, run
    ready releases themselves without waiting for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: list[_Pending] = []
        self._running: list[_Pending] = []
        self._thread: threading.Thread | None = None

    def add(self, pending: _Pending) -> None:
        pending.scope.limiter.signals.enter(pending.scope.execution_arn)
        with self._lock:
            self._pending.append(pending)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="durable-semaphore-releases", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def drain(self, execution_arn: str, key: str) -> None:
        """Run this execution's ready releases of ``key`` now (and wait for running ones)."""
        self._settle(
            lambda p: p.scope.execution_arn == execution_arn and p.scope.key == key,
            drop_unready=False,
        )

    def settle(self, scope: Scope) -> None:
        """At the end of a map (returned or suspended): run its ready releases, drop the rest."""
        self._settle(lambda p: p.scope is scope, drop_unready=True)

    def _settle(self, match: Callable[[_Pending], bool], *, drop_unready: bool) -> None:
        with self._lock:
            mine = [p for p in self._pending if match(p)]
            running = [p for p in self._running if match(p)]
        for pending in mine:
            ready = _sdk_compat.operation_terminal(pending.scope.state, pending.operation_id)
            if (ready or drop_unready) and self._take(pending):
                self._run(pending, release=ready)
        for pending in running:
            pending.done.wait(10)

    def _take(self, pending: _Pending) -> bool:
        with self._lock:
            if pending not in self._pending:
                return False
            self._pending.remove(pending)
            self._running.append(pending)
            return True

    def _run(self, pending: _Pending, *, release: bool) -> None:
        scope = pending.scope
        logger.debug("durable-semaphore: release of %s (ready=%s)", pending.holder, release)
        try:
            if release:
                scope.release_now(
                    pending.holder, waited=pending.waited, token=pending.token, report_lost=True
                )
            else:
                logger.debug(
                    "durable-semaphore: %s finished but its checkpoint was not accepted in "
                    "this invocation; its slot is left to the sweep",
                    pending.holder,
                )
        finally:
            with self._lock:
                if pending in self._running:
                    self._running.remove(pending)
            pending.done.set()
            scope.limiter.signals.leave(scope.execution_arn)

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                snapshot = list(self._pending)
            now = time.monotonic()
            for pending in snapshot:
                ready = _sdk_compat.operation_terminal(pending.scope.state, pending.operation_id)
                stale = now - pending.added > _RELEASE_PATIENCE_SECONDS
                if (ready or stale) and self._take(pending):
                    try:
                        self._run(pending, release=ready)
                    except Exception:  # pragma: no cover - _run logs its own failures
                        logger.exception("durable-semaphore: release failed")
            with self._lock:
                if self._pending:
                    self._lock.wait(_RELEASE_POLL_SECONDS)


#: The process-wide release queue.
release_queue = ReleaseQueue()


# -- the end of a map ------------------------------------------------------------------------


def sweep(scope: Scope) -> None:
    """Free every lease and queue entry this map/parallel's branches still have (branches
    abandoned by early completion). Each one is attempted; failures are counted and logged.

    Queue entries go first: a slot released by this sweep must go to another map's waiter,
    never to a branch of this map, which will not run again to use (or release) it. A second
    pass catches entries that branches still running their first check created meanwhile.
    """
    scope.closed.set()
    release_queue.settle(scope)
    failed = attempted = 0
    for _ in range(2):
        try:
            entries = scope.limiter.entries(
                scope.key, prefix=scope.holder_prefix, limit=scope.limit
            )
        except Exception:
            logger.warning("durable-semaphore: sweep of %s failed", scope.key, exc_info=True)
            return
        if not entries:
            break
        for entry in sorted(entries, key=lambda e: e.holds_slot):
            attempted += 1
            try:
                scope.limiter.release(
                    entry.key,  # the stored key (its shard)
                    entry.holder,
                    execution_arn=scope.execution_arn,
                    waited=entry.holds_slot,  # a queued entry just leaves: no queue read
                )
            except Exception:
                failed += 1
                logger.warning(
                    "durable-semaphore: sweep could not release %s on %s",
                    entry.holder,
                    scope.key,
                    exc_info=True,
                )
    if failed:
        logger.warning(
            "durable-semaphore: sweep of %s failed for %d of %d entries",
            scope.key,
            failed,
            attempted,
        )
    elif not scope.limiter.is_named and scope.released_here:
        # The map's own key is done with: drop its counter, so finished maps leave nothing
        # behind (one conditional request per map that ran here, none on later replays).
        try:
            scope.limiter.forget_if_idle(scope.key, limit=scope.limit)
        except Exception:
            logger.warning("durable-semaphore: could not drop %s", scope.key, exc_info=True)
