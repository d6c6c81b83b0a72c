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

import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aws_durable_execution_sdk_python.context import DurableContext
from aws_durable_execution_sdk_python.exceptions import InvocationError, OrphanedChildException

from durable_semaphore import _sdk_compat, observability
from durable_semaphore.errors import DurableSemaphoreError
from durable_semaphore.limiter import BRANCH_LEASE_TTL_SECONDS, DynamoDBLimiter
from durable_semaphore.waiting import GateNames, Held, gate

__all__ = [
    "HELD_KEYS",
    "RELEASE_OPERATION_NAME",
    "ReleaseQueue",
    "Scope",
    "Slot",
    "is_terminal",
    "release_queue",
    "run_gated",
    "slots_of",
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
    """One limit of one gated map/parallel call (a call under several limits has one each)."""

    limiter: DynamoDBLimiter
    execution_arn: str
    operation_id: str
    #: The limit's key for every branch, or each branch's own (a per-item limiter), by index.
    keys: tuple[str, ...]
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
    #: Each branch's (priority, group) in the queue, when not (0, None).
    orders: dict[str, tuple[int, str | None]] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """The key of a limit shared by all branches (what logs name for this scope)."""
        return self.keys[0] if len(set(self.keys)) == 1 else self.limiter.label

    def key_of(self, index: int) -> str:
        return self.keys[index] if len(self.keys) > 1 else self.keys[0]

    @property
    def holder_prefix(self) -> str:
        return self.limiter.holder_prefix(self.execution_arn, self.operation_id)


@dataclass
class Slot:
    """One branch's slot under one limit: what a gate waits for and a release frees."""

    scope: Scope
    key: str
    #: This gate's operation names (the branch's n-th limit in the canonical order).
    names: GateNames = dataclasses.field(default_factory=GateNames)

    @property
    def limiter(self) -> DynamoDBLimiter:
        return self.scope.limiter

    @property
    def execution_arn(self) -> str:
        return self.scope.execution_arn

    @property
    def limit(self) -> int:
        return self.scope.limit

    @property
    def closed(self) -> threading.Event:
        return self.scope.closed

    def weight_of(self, holder: str) -> int:
        return self.scope.weights.get(holder, 1)

    def queue_order(self, holder: str) -> tuple[int, str | None]:
        """The ``(priority, group)`` a waiter joins the queue with ((0, None): plain FIFO)."""
        return self.scope.orders.get(holder, (0, None))

    def stored_key(self, holder: str) -> str:
        """The key ``holder``'s lease is stored under (its shard of this slot's key): what
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


def slots_of(scopes: Sequence[Scope], index: int) -> list[Slot]:
    """Branch ``index``'s slots in the order it takes them: by limit, then key.

    Why one order for everybody: a branch holds the slots it took while it waits for the
    next, so two branches taking two keys in opposite orders could each hold what the other
    waits for, forever. Taken in one global order (a function of the key and its limit, which
    every user of a key agrees on) no such cycle can form. Narrow limits first, because a
    branch waits while holding what it took: waiting for its tenant's slot while holding one
    of the shared total would keep that slot from other tenants' branches.
    """
    pairs = [((scope.limit, scope.key_of(index)), scope) for scope in scopes]
    if _CANONICAL_ORDER:  # False only in the deadlock test's control
        pairs.sort(key=lambda pair: pair[0])
    return [Slot(scope, key, GateNames.of(rank)) for rank, ((_, key), scope) in enumerate(pairs)]


#: Take a branch's slots in the canonical order (False only in the test that shows the
#: deadlock the order prevents).
_CANONICAL_ORDER = True


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
    scopes: Sequence[Scope],
    ctx: DurableContext,
    index: int,
    body: Callable[[], R],
    item: object = None,
) -> R:
    """Gate (each limit in turn), run ``body`` while holding every slot, release them all
    once the branch is terminal. ``item`` (a map's; a parallel's branch index) decides the
    branch's keys and weights."""
    first = scopes[0]
    expected = _sdk_compat.branch_operation_id(first.operation_id, index)
    actual = _sdk_compat.branch_context_id(ctx)
    if actual != expected:
        raise DurableSemaphoreError(
            f"branch {index} has operation id {actual!r}, expected {expected!r} for map/"
            f"parallel {first.operation_id!r}; was the same context used from several threads "
            "at once? The limiter cannot tell which map this branch belongs to"
        )
    # The index (public: the SDK passes it to map functions) identifies the branch within its
    # map as well as its operation id does, and reads better in `durable-semaphore status`.
    holder = first.limiter.holder_id(first.execution_arn, first.operation_id, str(index))
    source = index if item is None else item
    for scope in scopes:
        weight = scope.limiter.weight_of(source, scope.limit)
        if weight != 1:
            scope.weights[holder] = weight
        order = scope.limiter.queue_order(source)
        if order != (0, None):
            scope.orders[holder] = order
    slots = slots_of(scopes, index)
    held = _gate_all(slots, ctx, holder)
    if held is None:
        return None  # type: ignore[return-value]  # the map returned without this branch
    signals = first.limiter.signals
    arn = first.execution_arn
    keys = HELD_KEYS.set(first.held_outside | {slot.key for slot in slots})
    try:
        with contextlib.ExitStack() as running:
            running.enter_context(signals.active(arn))
            for slot in slots:
                running.enter_context(signals.running(arn, slot.stored_key(holder)))
            result = body()
    except BaseException as exc:
        if is_terminal(exc):
            _finish(ctx, holder, expected, held, orphaned=isinstance(exc, OrphanedChildException))
        raise
    finally:
        HELD_KEYS.reset(keys)
    _finish(ctx, holder, expected, held, orphaned=False)
    return result


def _gate_all(
    slots: list[Slot], ctx: DurableContext, holder: str
) -> list[tuple[Slot, Held]] | None:
    """Pass each slot's gate in order (holding the ones passed while waiting for the next);
    None when the map returned meanwhile. A gate that ends the branch (orphaned, or a store
    error that is not transient) gives back the slots already taken."""
    held: list[tuple[Slot, Held]] = []
    signals = slots[0].limiter.signals
    try:
        for slot in slots:
            with signals.active(slot.execution_arn):
                one = gate(slot, ctx, holder)
            if one is None:
                _give_back(held, holder)
                return None
            if one.replayed:
                _renew_on_replay(slot, holder, one)
            held.append((slot, one))
    except BaseException as exc:
        if is_terminal(exc):
            _give_back(held, holder)
        raise
    return held


def _give_back(held: list[tuple[Slot, Held]], holder: str) -> None:
    for slot, one in reversed(held):
        slot.release_now(holder, waited=one.waited, token=one.token)


def _finish(
    ctx: DurableContext,
    holder: str,
    branch_operation_id: str,
    held: list[tuple[Slot, Held]],
    *,
    orphaned: bool,
) -> None:
    """Release a terminal branch's slots once its invocation is proven live."""
    if orphaned:
        # Its map already returned, so no checkpoint of this branch will be accepted; nothing
        # can supersede a release that no replay will repeat either.
        for slot, one in reversed(held):
            slot.release_now(holder, waited=one.waited, token=one.token, report_lost=True)
        return
    if held[0][0].scope.flat:
        ran_here = False

        def checkpoint(_step_ctx: object) -> None:
            nonlocal ran_here
            ran_here = True

        ctx.step(checkpoint, name=RELEASE_OPERATION_NAME)
        for slot, one in reversed(held):
            slot.release_now(holder, waited=one.waited, token=one.token, report_lost=ran_here)
        return
    for slot, one in reversed(held):
        release_queue.add(
            _Pending(slot, holder, one.token, one.waited, branch_operation_id, time.monotonic())
        )


def _renew_on_replay(scope: Slot, holder: str, held: Held) -> None:
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
    scope: Slot,
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
    scope.scope.released_here = True
    if report_lost and token is not None and not result.released and not result.left_queue:
        _lease_lost(scope, holder, "at release")


def _lease_lost(scope: Slot, holder: str, when: str) -> None:
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
    slot: Slot
    holder: str
    token: str | None
    waited: bool
    operation_id: str
    added: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


#: Off only in the control test that shows what :meth:`ReleaseQueue.settle` waits for.
_WAIT_FOR_TAKEN = True


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
        pending.slot.limiter.signals.enter(pending.slot.execution_arn)
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
            lambda p: p.slot.execution_arn == execution_arn and p.slot.key == key,
            drop_unready=False,
        )

    def settle(self, scope: Scope) -> None:
        """At the end of a map (returned or suspended): run its ready releases, drop the rest."""
        self._settle(lambda p: p.slot.scope is scope, drop_unready=True)

    def _settle(self, match: Callable[[_Pending], bool], *, drop_unready: bool) -> None:
        with self._lock:
            mine = [p for p in self._pending if match(p)]
            running = [p for p in self._running if match(p)]
        for pending in mine:
            ready = _sdk_compat.operation_terminal(pending.slot.scope.state, pending.operation_id)
            if (ready or drop_unready) and self._take(pending):
                self._run(pending, release=ready)
        # Wait for every matching release another thread runs, including one the watcher took
        # between the snapshot above and our own take: the map's sweep must not read the key
        # while such a release is in flight, or it frees that lease itself and the branch's
        # fenced release then reports its lease lost (a false alarm, and one extra write).
        for pending in (mine + running) if _WAIT_FOR_TAKEN else running:
            with self._lock:
                queued = pending in self._pending
            if not queued:
                pending.done.wait(10)

    def _take(self, pending: _Pending) -> bool:
        with self._lock:
            if pending not in self._pending:
                return False
            self._pending.remove(pending)
            self._running.append(pending)
            return True

    def _run(self, pending: _Pending, *, release: bool) -> None:
        scope = pending.slot
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
                ready = _sdk_compat.operation_terminal(
                    pending.slot.scope.state, pending.operation_id
                )
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
    """Free every lease and queue entry this map/parallel's branches still have under this
    limit (branches abandoned by early completion), on each key its branches use. Each one is
    attempted; failures are counted and logged.

    Queue entries go first: a slot released by this sweep must go to another map's waiter,
    never to a branch of this map, which will not run again to use (or release) it. A second
    pass catches entries that branches still running their first check created meanwhile.
    """
    scope.closed.set()
    release_queue.settle(scope)
    for key in dict.fromkeys(scope.keys):
        _sweep_key(scope, key)


def _sweep_key(scope: Scope, key: str) -> None:
    failed = attempted = 0
    for _ in range(2):
        try:
            entries = scope.limiter.entries(key, prefix=scope.holder_prefix, limit=scope.limit)
        except Exception:
            logger.warning("durable-semaphore: sweep of %s failed", key, exc_info=True)
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
                    key,
                    exc_info=True,
                )
    if failed:
        logger.warning(
            "durable-semaphore: sweep of %s failed for %d of %d entries", key, failed, attempted
        )
    elif not scope.limiter.is_named and scope.released_here:
        # The map's own key is done with: drop its counter, so finished maps leave nothing
        # behind (one conditional request per map that ran here, none on later replays).
        try:
            scope.limiter.forget_if_idle(key, limit=scope.limit)
        except Exception:
            logger.warning("durable-semaphore: could not drop %s", key, exc_info=True)
