"""The limiter: the policy, and the one facade over the lease store.

The policy: which key a branch leases, under which holder id, and how long it waits. This
module knows nothing about the durable SDK (``sdk.py`` owns that). It turns the ``limiter=``
value of a map or parallel into a scope key, a limit and deterministic holder ids, and computes
the backoff between acquire attempts, so the policy can be tested without a runner.

The facade: the SDK integration, ``hold()``, the reaper and the CLI call only methods of
:class:`DynamoDBLimiter` (acquire and release here, because they wake waiters; the plain store
calls in :class:`~durable_semaphore._store_access.StoreAccess`), never the store itself. The
reaper and the CLI use a limiter without a name, whose methods take the key per call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

from durable_semaphore import observability
from durable_semaphore._store_access import StoreAccess
from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.hold import (
    DEFAULT_HOLD_TTL_SECONDS,
    DEFAULT_MAX_POLL_SECONDS,
    HOLD_SIGNAL_SCOPE,
    Hold,
    holding,
)
from durable_semaphore.limiter_args import (
    MAX_WAKE_TIMEOUT_SECONDS,
    check_backoff,
    check_name,
    check_per_item,
    check_scope,
    check_shards,
    check_waking,
)
from durable_semaphore.retry import Backoff
from durable_semaphore.store import (
    AcquireResult,
    DynamoDBSemaphore,
    Grant,
    ReleaseResult,
)
from durable_semaphore.store.shards import all_shards, min_shards, placement
from durable_semaphore.store.validate import (
    validate_group,
    validate_priority,
    validate_ttl,
    validate_weight,
)
from durable_semaphore.wake import (
    WAKER_ENV_VAR,
    LambdaCallbackWaker,
    LocalSignals,
    WakeOutcome,
    Waker,
    wake_first_waiting,
    waker_from_env,
)
from durable_semaphore.wake import local_signals as _local_signals

__all__ = [
    "BRANCH_LEASE_TTL_SECONDS",
    "WAKER_ENV_VAR",
    "DynamoDBLimiter",
]

#: Default lease lifetime. A suspended branch cannot heartbeat, and a durable execution may run
#: for up to a year (366 days), so a lease must be able to outlive the longest suspension.
#: Slots of dead executions are recovered by the sweep and the reaper; expiry is the last resort.
BRANCH_LEASE_TTL_SECONDS = 366 * 24 * 3600

#: Hand-offs to dead waiters passed on in one release before giving up (the rest wait for
#: their own timeouts, which is safe, only slower).
_MAX_PASS_ON = 10

_SEPARATOR = "#"
#: The decorated function's parameters and result, for :meth:`DynamoDBLimiter.holding`.
P = ParamSpec("P")
R = TypeVar("R")


class DynamoDBLimiter(StoreAccess):
    """A concurrency limit enforced with leases in a DynamoDB table.

    * ``name`` given: one limit shared by every execution that uses the same name (the key is the
      name). ``limit`` is then required, because every user of the key must agree on it.
    * ``name`` a function of the map's item (a parallel's branch index) returning a key, e.g.
      ``lambda item: f"tenant:{item['tenant']}"``: one limit per key, each shared across
      executions like a named one (at most ``limit`` branches per tenant). The key is computed
      before the branch records anything and checked like a name.
    * ``name`` omitted: the limit is scoped to one map or parallel operation of one execution
      (the same scope as ``limiter="dynamodb"``), and ``limit`` defaults to ``max_concurrency``.
      Use this form to change the table, client or backoff of the per-operation scope. It is
      also the table-wide facade of the reaper and the CLI (their methods take the key).

    ``weight``, ``priority`` and ``fair_by`` (values, or functions of the item) set the units a
    branch takes and the order its queue serves waiters in: higher priority first with ageing,
    round robin between ``fair_by`` groups (docs/sdk-integration.md, "Fair sharing").

    Waiting for a slot uses capped exponential backoff with full jitter:
    ``delay(n) = max(1, ceil(uniform(0, min(max_delay, initial_delay * multiplier**(n-1)))))``
    seconds before attempt ``n + 1``. Durable waits have one-second granularity and a one-second
    minimum, hence the rounding.
    """

    def __init__(
        self,
        name: str | Callable[[Any], str] | None = None,
        limit: int | None = None,
        *,
        table_name: str | None = None,
        client: Any = None,
        semaphore: DynamoDBSemaphore | None = None,
        ttl_seconds: float = BRANCH_LEASE_TTL_SECONDS,
        initial_delay_seconds: float = 1.0,
        backoff_multiplier: float = 2.0,
        max_delay_seconds: float = 60.0,
        jitter: bool = True,
        random_source: Callable[[], float] | None = None,
        waker: Waker | Literal["auto", "lambda"] | None = "auto",
        wake_timeout_seconds: int = 900,
        local_wait_seconds: float = 2.0,
        signals: LocalSignals | None = None,
        clock_skew_seconds: float | None = None,
        shards: int | None = None,
        weight: int | Callable[[Any], int] = 1,
        priority: int | Callable[[Any], int] = 0,
        fair_by: Callable[[Any], str] | None = None,
    ) -> None:
        check_scope(name, limit)
        check_shards(shards, limit)
        check_per_item(weight, priority, fair_by, limit)
        validate_ttl(ttl_seconds)  # the store's rule, so a bad TTL fails here, not per branch
        check_backoff(initial_delay_seconds, backoff_multiplier, max_delay_seconds)
        check_waking(wake_timeout_seconds, local_wait_seconds, waker)
        super().__init__(
            table_name=table_name,
            client=client,
            semaphore=semaphore,
            clock_skew_seconds=clock_skew_seconds,
            ttl_seconds=ttl_seconds,
        )
        self.name = name
        self.limit = limit
        #: Counter items the limit is spread over (None: the fewest, :meth:`shards_for`).
        self.shards = shards
        #: Units per branch: an int or a deterministic function of the item (:meth:`weight_of`).
        self.weight = weight
        #: Higher first, with ageing: an int or a function of the item (:meth:`queue_order`).
        self.priority = priority
        #: The item's group for round robin between groups, or None (:meth:`queue_order`).
        self.fair_by = fair_by
        self.initial_delay_seconds = float(initial_delay_seconds)
        self.backoff_multiplier = float(backoff_multiplier)
        self.max_delay_seconds = float(max_delay_seconds)
        self.jitter = jitter
        self._random = random_source if random_source is not None else random.random
        #: Timeout of a waiting branch's first callback: the fallback for a wake-up that was
        #: never sent (live releasers wake waiters at once); each further round doubles it, up
        #: to a day (:meth:`round_timeout_seconds`).
        self.wake_timeout_seconds = wake_timeout_seconds
        self.local_wait_seconds = float(local_wait_seconds)
        self.signals = signals if signals is not None else _local_signals
        self._waker_spec = waker
        self._waker: Waker | None = waker if isinstance(waker, Waker) else None

    def __repr__(self) -> str:
        return (
            f"DynamoDBLimiter(name={self.name!r}, limit={self.limit!r}, "
            f"table_name={self.table_name!r})"
        )

    # -- sharding ------------------------------------------------------------------------------

    def weight_of(self, item: Any, limit: int) -> int:
        """The units a branch of ``item`` takes under ``limit`` (its shard's share, when
        sharded): our error, before any durable operation, for one that could never fit."""
        weight = self.weight(item) if callable(self.weight) else self.weight
        return validate_weight(weight, limit // self.shards_for(limit))

    def queue_order(self, item: Any) -> tuple[int, str | None]:
        """``(priority, group)`` of a branch of ``item``: our error, before any durable
        operation, for a bad one."""
        priority = self.priority(item) if callable(self.priority) else self.priority
        group = self.fair_by(item) if self.fair_by is not None else None
        try:
            return validate_priority(priority), validate_group(group)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                exc.name, exc.value, f"{exc.reason} (computed for item {item!r})"
            ) from None

    def shards_for(self, limit: int) -> int:
        """How many counter items carry ``limit``: as configured, but never fewer than the
        limit needs, nor more than its slots."""
        return min(limit, max(self.shards or 1, min_shards(limit)))

    def place(self, key: str, holder: str, limit: int | None) -> tuple[str, int | None]:
        """The stored key (and its share of the limit) of ``holder`` under the logical
        ``key``. ``limit`` None means ``key`` is already a stored key (as the reaper and the
        CLI find them in the table), except for this limiter's own name."""
        limit = self._logical_limit(key, limit)
        if limit is None:
            return key, None
        return placement(key, holder, limit, self.shards_for(limit))

    def stored_keys(self, key: str, limit: int | None) -> list[str]:
        """Every stored key of the logical ``key`` (one per shard)."""
        limit = self._logical_limit(key, limit)
        if limit is None:
            return [key]
        return [stored for stored, _ in all_shards(key, limit, self.shards_for(limit))]

    def _logical_limit(self, key: str, limit: int | None) -> int | None:
        if limit is None and isinstance(self.name, str) and key == self.name:
            return self.limit
        return limit

    # -- waiting -------------------------------------------------------------------------------

    @property
    def waker(self) -> Waker | None:
        """The callback waker, or None (waiters poll). ``"auto"`` reads $DURABLE_SEMAPHORE_WAKER."""
        if self._waker is None and self._waker_spec is not None:
            with self._lock:
                if self._waker is None:
                    if self._waker_spec == "lambda":
                        self._waker = LambdaCallbackWaker()
                    else:  # "auto"
                        self._waker = waker_from_env()
                    if self._waker is None:
                        self._waker_spec = None  # polling: do not look again
        return self._waker

    @property
    def uses_callbacks(self) -> bool:
        """Whether waiting branches suspend on a callback that a releaser completes.

        Only for named limiters: a per-operation scope's waiters all belong to the releaser's
        own execution, where a callback completed mid-invocation is not seen until the next
        invocation, so they use the in-process signal and polling instead.
        """
        return self.is_named and self.waker is not None

    @property
    def grant_grace_seconds(self) -> float:
        """How long a slot handed to a waiter whose callback is gone waits to be claimed."""
        return max(60.0, 3.0 * self.wake_timeout_seconds)

    def round_timeout_seconds(self, round_number: int) -> int:
        """Callback timeout of wait round ``round_number`` (1-based): the wake timeout,
        doubled each round, at most a day. A branch that waits W seconds for a wake-up that
        never comes records about log2(W / wake_timeout) callbacks, not W / wake_timeout."""
        exponent = min(max(0, round_number - 1), 20)
        return int(min(MAX_WAKE_TIMEOUT_SECONDS, self.wake_timeout_seconds * 2**exponent))

    @property
    def queue_ttl_seconds(self) -> float:
        """How long a polling waiter's queue entry outlives its last check-in: several
        backoff intervals, so only a dead waiter drops out."""
        return 4 * self.max_delay_seconds + 60

    def callback_queue_ttl_seconds(self, round_number: int) -> float:
        """A callback waiter checks in once per round: its entry outlives the round twice
        over. Dead callback waiters are found sooner, by their gone callback at hand-off
        and by the reaper."""
        return 2.0 * self.round_timeout_seconds(round_number) + 60

    def acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        *,
        ttl_seconds: float | None = None,
        execution_arn: str | None = None,
        position: int | None = None,
        callback_id: str | None = None,
        token: str | None = None,
        queue_ttl_seconds: float | None = None,
        enqueue: bool = True,
        queue_first: bool = False,
        wake: bool = True,
        weight: int = 1,
        priority: int = 0,
        group: str | None = None,
    ) -> AcquireResult:
        """Take a slot or keep a place in the queue (see :meth:`DynamoDBSemaphore.acquire`),
        for the limiter's lease TTL unless ``ttl_seconds`` is given; wakes any waiter the call
        handed a slot to on the way (``wake=False``: the caller wakes ``result.grants``).
        ``key`` and ``limit`` are the logical ones: the holder's shard is chosen here."""
        stored, share = self.place(key, holder, limit)
        result = self.semaphore.acquire(
            stored,
            holder,
            share if share is not None else limit,
            self.ttl_seconds if ttl_seconds is None else ttl_seconds,
            execution_arn=execution_arn,
            position=position,
            callback_id=callback_id,
            queue_ttl_seconds=(
                self.queue_ttl_seconds if queue_ttl_seconds is None else queue_ttl_seconds
            ),
            token=token,
            enqueue=enqueue,
            queue_first=queue_first,
            weight=weight,
            priority=priority,
            group=group,
        )
        if result.ahead is not None:
            observability.lease_queued(stored, holder, result.ahead)
        if wake:
            for grant in result.grants:
                self.wake(grant, releaser_arn=execution_arn)
        return result

    def release(
        self,
        key: str,
        holder: str,
        *,
        execution_arn: str | None = None,
        waited: bool = False,
        token: str | None = None,
        wake: bool = True,
        limit: int | None = None,
        weight: int | None = None,
    ) -> ReleaseResult:
        """Free ``holder``'s slot (or its queue place), hand it to the oldest waiter and wake
        that waiter (``wake=False``: the caller wakes ``result.grants`` its own way).

        ``waited`` (this holder had to queue) predicts waiters, which saves a request.
        ``token`` (the lease's) makes sure only that generation of the lease is freed.
        ``limit`` makes ``key`` the logical key of that limit (see :meth:`place`).
        """
        stored, _ = self.place(key, holder, limit)
        result = self.semaphore.release_slot(
            stored, holder, waiters_likely=waited, token=token, weight=weight
        )
        if wake:
            for grant in result.grants:
                self.wake(grant, releaser_arn=execution_arn)
        return result

    def wake(self, grant: Grant, *, releaser_arn: str | None = None) -> WakeOutcome | None:
        """Tell a waiter its slot is ready: in-process when it blocks in this process and
        execution, else through its callback. A callback that is gone passes the slot on to
        the next waiter (bounded), so a dead waiter never keeps it.
        """
        outcome: WakeOutcome | None = None
        for _ in range(_MAX_PASS_ON):
            if grant.execution_arn is None and self.signals.wake(
                HOLD_SIGNAL_SCOPE, grant.key, grant.holder
            ):
                return WakeOutcome.DELIVERED  # a blocking hold waiting in this process
            same_execution = grant.execution_arn is not None and grant.execution_arn == releaser_arn
            waker = self.waker
            if waker is None or grant.callback_id is None:
                # A polling waiter: wake it in-process if it blocks here, else it finds the
                # slot at its next check.
                if same_execution and self.signals.wake(
                    grant.execution_arn, grant.key, grant.holder
                ):
                    return WakeOutcome.DELIVERED
                return outcome
            # A callback waiter resumes only on its completed callback (its replays must see
            # the same history), even in this execution; the local signal then makes it
            # look at once instead of at its next refresh.
            outcome = wake_first_waiting(waker, grant)
            if same_execution:  # never across executions: a Lambda sandbox runs one
                self.signals.wake(grant.execution_arn, grant.key, grant.holder)
            if outcome is not WakeOutcome.GONE:
                return outcome
            running = None
            probe = getattr(waker, "execution_running", None)
            if probe is not None and grant.execution_arn is not None:
                running = probe(grant.execution_arn)
            if running is not False:
                # Its callback timed out a moment ago, so a live waiter checks again within
                # seconds and finds the slot. Keep it, but only for a grace period, in case
                # the waiter is dying after all.
                self.semaphore.shorten_grant(
                    grant.key, grant.holder, self.now() + self.grant_grace_seconds
                )
                return outcome
            passed = self.semaphore.revoke(grant.key, grant.holder)
            if passed.grant is None:
                return outcome
            grant = passed.grant
        return outcome

    # -- blocking holds ------------------------------------------------------------------------

    def hold(
        self,
        timeout: float | None = None,
        *,
        holder: str | None = None,
        ttl_seconds: float = DEFAULT_HOLD_TTL_SECONDS,
        max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
        on_lost: Callable[[Hold], None] | None = None,
        weight: int = 1,
    ) -> Hold:
        """A slot of this named limiter for a ``with`` block outside map/parallel: waits in
        the FIFO queue up to ``timeout`` seconds (None: forever), else raises
        :class:`~durable_semaphore.errors.AcquireTimeoutError`. ``on_lost`` is called (on the
        heartbeat thread) if the lease is lost while held; ``weight`` is how many units of the
        limit it takes. See :mod:`durable_semaphore.hold`.
        """
        return Hold(
            self,
            timeout=timeout,
            holder=holder,
            ttl_seconds=ttl_seconds,
            max_poll_seconds=max_poll_seconds,
            on_lost=on_lost,
            weight=weight,
        )

    def holding(
        self,
        timeout: float | None = None,
        *,
        holder: Callable[..., str] | None = None,
        ttl_seconds: float = DEFAULT_HOLD_TTL_SECONDS,
        max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
        on_lost: Callable[[Hold], None] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form of :meth:`hold`: every call of the function holds its own slot."""
        return holding(
            self,
            timeout,
            holder=holder,
            ttl_seconds=ttl_seconds,
            max_poll_seconds=max_poll_seconds,
            on_lost=on_lost,
        )

    # -- scope ---------------------------------------------------------------------------------

    @property
    def is_named(self) -> bool:
        """True when the limit is shared across executions under ``name`` (or the keys that
        ``name`` returns, for a per-item limiter)."""
        return self.name is not None

    @property
    def per_item(self) -> bool:
        """True when ``name`` is a function of the item: each branch computes its own key."""
        return callable(self.name)

    @property
    def label(self) -> str:
        """What metrics and logs call this limiter: its name, or for a per-item limiter the
        function's name (its keys are unbounded, so they are never a metric dimension)."""
        if self.name is None:
            return "per-operation"
        if isinstance(self.name, str):
            return self.name
        return str(getattr(self.name, "__name__", None) or repr(self.name))

    def key_for(self, item: Any, execution_arn: str, operation_id: str) -> str:
        """The key a branch of ``item`` (a parallel's branch index) leases: the per-item key,
        checked like a name (our error naming the item), or :meth:`scope_key`."""
        if not callable(self.name):
            return self.scope_key(execution_arn, operation_id)
        key = check_name("name", self.name(item), f" (the key name({item!r}) returned)")
        observability.register_family(key, self.label)
        return key

    def resolve_limit(self, max_concurrency: int | None) -> int:
        """The lease limit: the explicit ``limit``, else the operation's ``max_concurrency``."""
        if self.limit is not None:
            return self.limit
        if max_concurrency is None or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise InvalidArgumentError(
                "max_concurrency",
                max_concurrency,
                "limiter='dynamodb' (or DynamoDBLimiter() without limit) takes its limit from "
                "max_concurrency, so set max_concurrency to an int >= 1",
            )
        return max_concurrency

    def scope_key(self, execution_arn: str, operation_id: str) -> str:
        """The semaphore key: the name, or ``{arn}#{map/parallel operation id}``.

        Operation ids repeat across executions of the same function, so the per-operation scope
        needs the execution ARN to keep executions apart.
        """
        if isinstance(self.name, str):
            return self.name
        if self.name is not None:
            raise TypeError("a per-item limiter has one key per item: use key_for(item, ...)")
        return f"{execution_arn}{_SEPARATOR}{operation_id}"

    @staticmethod
    def holder_prefix(execution_arn: str, operation_id: str) -> str:
        """Prefix shared by the holder ids of one map/parallel; the sweep finds leases by it."""
        return f"{execution_arn}{_SEPARATOR}{operation_id}{_SEPARATOR}"

    @classmethod
    def holder_id(cls, execution_arn: str, operation_id: str, branch: str) -> str:
        """Deterministic holder id of one branch (``branch`` is its index in the map): the same
        on every replay and in every overlapping invocation, so neither can take a second
        slot."""
        return cls.holder_prefix(execution_arn, operation_id) + branch

    # -- backoff -------------------------------------------------------------------------------

    def backoff_ceiling(self, attempts_made: int) -> float:
        """Upper bound of the delay after ``attempts_made`` failed attempts (before jitter)."""
        return self._backoff.ceiling(attempts_made)

    def backoff_delay(self, attempts_made: int) -> int:
        """Whole seconds to wait after ``attempts_made`` failed attempts (at least 1)."""
        return max(1, math.ceil(self._backoff.delay(attempts_made, self._random)))

    @property
    def _backoff(self) -> Backoff:
        return Backoff(
            self.initial_delay_seconds,
            self.max_delay_seconds,
            self.backoff_multiplier,
            "full" if self.jitter else "none",
        )
