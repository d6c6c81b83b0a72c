"""The chaos workload: what one worker process does, and what a replay of a dead one does.

A worker runs acquire/hold/release cycles with a fresh holder id each, on its own boto3 client
with faults injected, and tells the observer (its event log) everything it believes. It polls
with ``try_acquire`` or waits in the FIFO queue with ``acquire``, renews with its token now and
then, and releases with its token. It may be told to SIGKILL itself right after a lease came
back, inside the critical section. A replay is a fresh process that takes over the holders of
a dead worker, as a durable branch's next invocation would: the same holder id, which must
find its own live lease (the same token) and release it.

For the liveness scenario a worker can join the queue before trying for a slot (so it never
reconciles as a refused newcomer does: only queued waiters' check-ins can bring a dead slot
back), give up a wait after a deadline, and, as the control, check in without looking at the
key (``blind_waiters``).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from durable_semaphore import ContentionError, DynamoDBSemaphore, Lease
from durable_semaphore.store import AcquireResult, default_client_config
from durable_semaphore.store import queue_requests as store_requests
from durable_semaphore.store.shards import placement
from tests.chaos.faults import FaultInjector, FaultRates
from tests.chaos.observer import EventLog
from tests.test_store_concurrency import UnconditionalStore

# Pauses between a refused try_acquire and the next, and between check-ins of a queued holder.
TRY_POLL = (0.002, 0.01)
QUEUE_POLL = (0.01, 0.03)
# After this many refusals a polling holder joins the queue, so that none starves.
MAX_POLLS = 20
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
    }
)


@dataclass(frozen=True, slots=True)
class Workload:
    """What every worker of a run does; ``limit`` applies to each key."""

    keys: tuple[str, ...]
    limit: int
    ttl_seconds: float
    clock_skew_seconds: float
    hold: tuple[float, float]
    faults: FaultRates = field(default_factory=FaultRates)
    queue_share: float = 0.3
    renew_share: float = 0.1
    queue_ttl_seconds: float = 60.0
    broken: bool = False
    #: Every cycle joins the queue before trying for a slot (``acquire(queue_first=True)``):
    #: no arrival reconciles, so a dead slot comes back only through queued waiters.
    join_first: bool = False
    #: The control of the liveness scenario: check-ins leave out the key check (the
    #: behaviour before waiters served the queue), so nothing but a newcomer frees a dead slot.
    blind_waiters: bool = False
    #: A wait longer than this (seconds) gives up: logged as "timeout", the worker leaves
    #: the queue and stops, so a control whose queue is stuck still ends.
    wait_deadline: float | None = None
    #: Each key is one limit spread over this many counter items (store/shards.py); the
    #: observer still judges the key as a whole.
    shards: int = 1
    #: The sharding control: every shard takes the whole limit instead of its share.
    unsplit_shards: bool = False


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """A holder a dead worker had tried or held; ``token``/``expires_at`` if it held a lease."""

    key: str
    holder: str
    token: str | None = None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    endpoint: str
    table: str
    workload: Workload
    log_path: Path
    worker_id: str
    seed: int
    cycles: int = 0
    clock_offset: float = 0.0
    #: Cycle after whose acquire the worker SIGKILLs itself (inside the critical section).
    kill_at_cycle: int | None = None
    #: Set for a replay process: the dead worker's holders, taken over one by one.
    replay: tuple[ReplayJob, ...] = ()
    #: No cycle starts after this ``time.monotonic()`` (one clock for every process here).
    stop_at: float | None = None


class CanaryStore(UnconditionalStore):
    """The broken "semaphore" of test_store_concurrency, with the calls the workload makes."""

    def acquire(
        self, key: str, holder: str, limit: int, ttl_seconds: float = 86_400, **_: Any
    ) -> AcquireResult:
        return AcquireResult(self.try_acquire(key, holder, limit, ttl_seconds))

    def renew(
        self, key: str, holder: str, ttl_seconds: float = 86_400, *, token: str | None = None
    ) -> Lease | None:
        now = self.now()
        return Lease(key, holder, now, now + ttl_seconds)

    def release(self, key: str, holder: str, *, token: str | None = None) -> bool:
        return super().release(key, holder)


def is_transient(err: BaseException) -> bool:
    """Errors a caller is expected to retry (the operations are idempotent per holder)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code")) in _RETRYABLE_CODES
    return isinstance(err, BotoCoreError | ContentionError)


def _blind_check_ins() -> None:
    """Make this process's check-ins leave out the key check (see tests/chaos/test_liveness).

    The store calls the module-level ``queue_requests.touch``, so wrapping it there reaches
    the store of this worker process (and only it: each worker is a process of its own).
    """
    original = store_requests.touch
    if getattr(original, "__wrapped__", None) is not None:
        return

    @functools.wraps(original)
    def check_in_only(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        kwargs["reclaim_cutoff"] = None
        return original(*args, **kwargs)

    store_requests.touch = check_in_only


def build_store(spec: WorkerSpec, log: EventLog) -> DynamoDBSemaphore:
    client = boto3.client(
        "dynamodb",
        endpoint_url=spec.endpoint,
        region_name="us-east-1",
        aws_access_key_id="chaos",
        aws_secret_access_key="chaos",
        config=default_client_config(),
    )
    rates = spec.workload.faults
    if rates.any:
        FaultInjector(client, rates, seed=spec.seed, on_fault=lambda k: log.write("f", kind=k))
    offset = spec.clock_offset
    clock: Callable[[], float] = (lambda: time.time() + offset) if offset else time.time
    if spec.workload.blind_waiters:
        _blind_check_ins()
    store_cls = CanaryStore if spec.workload.broken else DynamoDBSemaphore
    return store_cls(
        table_name=spec.table,
        client=client,
        clock=clock,
        clock_skew_seconds=spec.workload.clock_skew_seconds,
    )


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.w = spec.workload
        self.log = EventLog(spec.log_path)
        self.sem = build_store(spec, self.log)
        self.rng = random.Random(spec.seed)

    def _retrying(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, bool]:
        """Call until it returns; and True if an attempt failed first (its outcome unknown)."""
        failed = False
        while True:
            try:
                return call(*args, **kwargs), failed
            except Exception as err:
                if not is_transient(err):
                    raise
                failed = True
                self.log.write("x", op=call.__name__, err=type(err).__name__)
                time.sleep(self.rng.uniform(0.02, 0.1))

    def place(self, key: str, holder: str) -> tuple[str, int]:
        """The stored key (the holder's shard) and that shard's limit."""
        stored, share = placement(key, holder, self.w.limit, self.w.shards)
        return stored, self.w.limit if self.w.unsplit_shards else share

    def take(self, key: str, holder: str, queue: bool) -> tuple[Lease | None, int]:
        """A lease for ``holder``, by polling or by waiting in the queue; and the refusals.

        None when the workload's wait deadline passed first."""
        key, limit = self.place(key, holder)
        position: int | None = None
        refused = 0
        deadline = self.w.wait_deadline
        give_up = None if deadline is None else time.monotonic() + deadline
        while True:
            if give_up is not None and refused and time.monotonic() >= give_up:
                return None, refused
            if queue or refused >= MAX_POLLS:
                queue = True
                result, _ = self._retrying(
                    self.sem.acquire,
                    key,
                    holder,
                    limit,
                    self.w.ttl_seconds,
                    position=position,
                    queue_ttl_seconds=self.w.queue_ttl_seconds,
                    queue_first=self.w.join_first and position is None,
                )
                if result.lease is not None:
                    return result.lease, refused
                position = result.position
                refused += 1
                time.sleep(self.rng.uniform(*QUEUE_POLL))
            else:
                lease, _ = self._retrying(
                    self.sem.try_acquire, key, holder, limit, self.w.ttl_seconds
                )
                if lease is not None:
                    return lease, refused
                refused += 1
                time.sleep(self.rng.uniform(*TRY_POLL))

    def enter(self, lease: Lease, refused: int, key: str) -> None:
        """Tell the observer we hold ``lease`` of ``key`` (the key as a whole, whichever
        shard the lease is in), and when it ends on the monotonic clock."""
        t = time.monotonic()
        end = t + (lease.expires_at - self.sem.now())
        self.log.write("in", k=key, h=lease.holder, t=t, end=end, tok=lease.token,
                       exp=lease.expires_at, r=refused)  # fmt: skip

    def hold(self, lease: Lease) -> None:
        pause = self.rng.uniform(*self.w.hold)
        if self.rng.random() >= self.w.renew_share:
            time.sleep(pause)
            return
        time.sleep(pause / 2)
        try:
            renewed = self.sem.renew(lease.key, lease.holder, self.w.ttl_seconds, token=lease.token)
        except Exception as err:
            if not is_transient(err):
                raise
            self.log.write("x", op="renew", err=type(err).__name__)
        else:
            if renewed is None:
                self.log.write("renew-lost", h=lease.holder)
            else:
                end = time.monotonic() + (renewed.expires_at - self.sem.now())
                self.log.write("renew", h=lease.holder, end=end)
        time.sleep(pause / 2)

    def leave(self, lease: Lease) -> None:
        self.log.write("out", h=lease.holder, t=time.monotonic())
        released, retried = self._retrying(
            self.sem.release, lease.key, lease.holder, token=lease.token
        )
        self.log.write("rel", h=lease.holder, ok=released, retried=retried)

    def give_up(self, key: str, holder: str) -> None:
        """Past the wait deadline: say so, and leave the queue (or hand on a slot granted
        meanwhile: a release without token frees whatever the holder id has)."""
        self.log.write("timeout", k=key, h=holder)
        released, _ = self._retrying(self.sem.release, self.place(key, holder)[0], holder)
        self.log.write("left", h=holder, ok=released)

    def cycles(self) -> None:
        for cycle in range(self.spec.cycles):
            if self.spec.stop_at is not None and time.monotonic() >= self.spec.stop_at:
                return
            key = self.rng.choice(self.w.keys)
            holder = f"{self.spec.worker_id}-{cycle}"
            self.log.write("try", k=key, h=holder)
            lease, refused = self.take(key, holder, self.rng.random() < self.w.queue_share)
            if lease is None:
                self.give_up(key, holder)
                return
            self.enter(lease, refused, key)
            if cycle == self.spec.kill_at_cycle:
                self.log.write("kill", h=holder)
                os.kill(os.getpid(), signal.SIGKILL)
            self.hold(lease)
            self.leave(lease)

    def replays(self) -> None:
        for job in self.spec.replay:
            lease, refused = self.take(job.key, job.holder, queue=True)
            if lease is None:
                self.give_up(job.key, job.holder)
                return
            # Still live when the re-acquire returned (so at every step of it, on our clock):
            # then it found the dead worker's lease and must return it as it was.
            live = job.expires_at is not None and self.sem.now() < job.expires_at
            same = None if job.token is None else lease.token == job.token
            self.log.write("replay", h=job.holder, live=live, same=same)
            self.enter(lease, refused, job.key)
            self.hold(lease)
            self.leave(lease)


def worker_main(spec: WorkerSpec) -> None:
    """Process entry point: run the cycles or the replays, then say "done"."""
    worker = _Worker(spec)
    try:
        if spec.replay:
            worker.replays()
        else:
            worker.cycles()
    except BaseException as err:
        worker.log.write("error", err=repr(err), tb=traceback.format_exc()[-3000:])
        raise
    worker.log.write("done")
    worker.log.close()
