"""The demo: the seed scenario run in the SDK's local runner, judged by an independent observer.

``durable-semaphore demo`` maps ``items`` inputs with ``max_concurrency``; every branch invokes
(``ctx.invoke``) a registered durable target that waits ``task_seconds`` of durable time. With
``executions > 1`` that many executions run at once and share ONE named limiter, so the limit is
global rather than per map. The runner skips durable time, so 100 one-second tasks take seconds.

It runs on every SDK line the project supports; :mod:`durable_semaphore.demo_runner` detects
what the installed testing library can do. Where it cannot register invoke targets or skip time
(testing 1.2.1, with SDK 1.7 and 2.0) each branch's downstream work is a durable wait of its
own (``demo-task``), on the real clock, with that module's workaround for the runner's timers.

The peak in flight is measured from the execution histories (the overlap of the downstream
``InvokeOperation`` or ``demo-task`` wait intervals), never from the limiter's own bookkeeping,
so the demo would catch the limiter lying. ``--compare`` runs the bare SDK first, so the summary
can say what the limiter adds on the SDK it runs on. The SDK, its testing library and matplotlib
are imported inside the functions that need them, so ``durable-semaphore --help`` works without
the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

TARGET_FUNCTION = "demo-target"
#: The durable wait that is a branch's downstream work where the runner cannot invoke.
TASK_WAIT_NAME = "demo-task"
#: Default items on a runner that cannot skip durable time (the real clock): about 6 waves.
REAL_CLOCK_ITEMS = 30
#: What the testing library's executor logs when it re-invokes after its own race (below).
RUNNER_RACE_MESSAGE = "Cannot return PENDING status with no pending operations"
RUNNER_LOGGER = "aws_durable_execution_sdk_python_testing.executor"
_TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED", "CANCELLED"})


# -- the independent observer ------------------------------------------------------------------


def all_operations(result: Any) -> list[Any]:
    """Every operation of a runner result, children included, de-duplicated by operation id."""
    seen: dict[str, Any] = {}
    for op in result.get_all_operations():
        seen.setdefault(op.operation_id, op)
    return list(seen.values())


def _is_task(op: Any, kind: str, name: str | None) -> bool:
    return type(op).__name__ == kind and (name is None or getattr(op, "name", None) == name)


def operation_intervals(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every ``kind`` operation (named ``name``, if given);
    unfinished ones raise."""
    spans: list[tuple[float, float]] = []
    for op in all_operations(result):
        if not _is_task(op, kind, name):
            continue
        if op.start_timestamp is None or op.end_timestamp is None:
            raise RuntimeError(f"{kind} {op.operation_id} has no start or end in the history")
        spans.append((op.start_timestamp.timestamp(), op.end_timestamp.timestamp()))
    return spans


def _branch_waits(
    result: Any, kind: str, name: str | None
) -> list[tuple[str | None, float, float]]:
    """(branch id, branch start, ``kind`` start) for each task, from the history (the branch
    is the task's parent context), never from the limiter."""
    ops = {op.operation_id: op for op in all_operations(result)}
    out: list[tuple[str | None, float, float]] = []
    for op in ops.values():
        if not _is_task(op, kind, name) or op.start_timestamp is None:
            continue
        parent_id = getattr(op, "parent_id", None)
        parent = ops.get(parent_id or "")
        if parent is None or parent.start_timestamp is None:
            continue
        out.append((parent_id, parent.start_timestamp.timestamp(), op.start_timestamp.timestamp()))
    return out


def branch_waits(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[float]:
    """Seconds each branch waited for its slot: from the branch's start to its ``kind`` start."""
    return [max(0.0, end - start) for _b, start, end in _branch_waits(result, kind, name)]


def wait_spans(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[tuple[float, float]]:
    """(start, end) of each wait for a slot, as :func:`branch_waits` measures it, for the
    branches whose history holds a wait of the limiter (a callback or a poll). A branch that
    got its slot at once spent that time on one acquire, not waiting."""
    waited = {
        getattr(op, "parent_id", None)
        for op in all_operations(result)
        if (op.name or "") in ("durable-semaphore-wait", "durable-semaphore-poll")
    }
    return [
        (start, end) for branch, start, end in _branch_waits(result, kind, name) if branch in waited
    ]


def busy_while_waiting(
    tasks: Iterable[tuple[float, float]], waits: Iterable[tuple[float, float]], limit: int
) -> float | None:
    """The time-averaged number of tasks in flight, over the moments when at least one branch
    waited for a slot, as a share of ``limit``. None when nobody waited."""
    events = sorted(
        [(s, 0, 1) for s, _ in tasks]
        + [(e, 0, -1) for _, e in tasks]
        + [(s, 1, 1) for s, _ in waits]
        + [(e, 1, -1) for _, e in waits],
        key=lambda ev: (ev[0], ev[2]),
    )
    busy = waiting = 0
    covered = integral = 0.0
    last: float | None = None
    for at, which, delta in events:
        if last is not None and waiting > 0:
            covered += at - last
            integral += (at - last) * busy
        last = at
        if which == 0:
            busy += delta
        else:
            waiting += delta
    if covered <= 0:
        return None
    return integral / covered / limit


def jain_fairness(values: Sequence[float]) -> float:
    """Jain's index (sum x)^2 / (n * sum x^2): 1.0 when all are equal, 1/n at worst."""
    if not values:
        return 1.0
    squares = sum(x * x for x in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def overlap_steps(spans: Iterable[tuple[float, float]]) -> list[tuple[float, int]]:
    """The open-interval count after each event time, as (time, count), in time order.

    An interval that ends exactly when another starts does not overlap it (ends sort first).
    """
    events = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda e: (e[0], e[1]),
    )
    steps: list[tuple[float, int]] = []
    current = 0
    for at, delta in events:
        current += delta
        if steps and steps[-1][0] == at:
            steps[-1] = (at, current)
        else:
            steps.append((at, current))
    return steps


def peak_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    return max((count for _, count in overlap_steps(spans)), default=0)


# -- counting DynamoDB requests ----------------------------------------------------------------


class RequestCounter:
    """Counts the HTTP requests a boto3 client sends, retries included, by operation.

    Hooked on botocore's ``before-send`` event, so it sees exactly what goes on the wire.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_operation: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send.dynamodb", self._on_send)

    def detach(self, client: Any) -> None:
        """Stop counting (``--compare`` runs twice on one client)."""
        client.meta.events.unregister("before-send.dynamodb", self._on_send)

    def _on_send(self, request: Any = None, **_: Any) -> None:
        target = ""
        if request is not None:
            target = str(request.headers.get("X-Amz-Target", b"") or "")
        name = target.rsplit(".", 1)[-1].strip("'") or "unknown"
        with self._lock:
            self.by_operation[name] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_operation.values())


# -- configuration and result -----------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """What to run. ``limit`` is ``max_concurrency``: per map, and the shared total when
    ``executions > 1``."""

    items: int = 100
    max_concurrency: int = 5
    executions: int = 1
    use_limiter: bool = True
    task_seconds: int = 1
    #: Upper bound of the limiter's durable backoff between a polling waiter's checks. None:
    #: the library's default (DynamoDBLimiter's ``max_delay_seconds``). A demo-only knob: the
    #: summary names it when set.
    max_backoff_seconds: float | None = None
    #: Callback timeout of a waiter's first round: the fallback for a wake-up that was never
    #: sent. None: the library's default. The local runner counts it in real seconds. A
    #: demo-only knob: the summary names it when set.
    wake_timeout_seconds: int | None = None
    #: Run durable waits in real time instead of skipping them. The skipping clock jumps by
    #: every wait armed at a different instant, which serializes independent hand-off chains
    #: that real time would overlap; real time measures makespan as production sees it.
    real_time: bool = False
    #: Wake waiters through callbacks (the local durable-execution server) instead of polling.
    hand_off: bool = True
    execution_timeout: int = 3600

    def __post_init__(self) -> None:
        from durable_semaphore.errors import InvalidArgumentError

        for name in ("items", "max_concurrency", "executions", "task_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, value, "must be an integer >= 1")
        if self.wake_timeout_seconds is not None and (
            isinstance(self.wake_timeout_seconds, bool)
            or not isinstance(self.wake_timeout_seconds, int)
            or self.wake_timeout_seconds < 1
        ):
            raise InvalidArgumentError(
                "wake_timeout_seconds", self.wake_timeout_seconds, "must be an integer >= 1"
            )
        if self.max_backoff_seconds is not None and not (self.max_backoff_seconds >= 1):
            raise InvalidArgumentError(
                "max_backoff_seconds", self.max_backoff_seconds, "must be >= 1"
            )


@dataclass
class Progress:
    """A snapshot for the progress line, read from the live execution histories."""

    done: int
    in_flight: int
    waiting: int
    total: int


@dataclass
class DemoResult:
    """Everything the summary, ``--json`` and the timeline need."""

    items: int
    executions: int
    limit: int
    limiter: bool
    peak_in_flight: int
    makespan_seconds: float
    ideal_seconds: float
    makespan_ratio: float
    dynamodb_requests: int
    dynamodb_requests_per_branch: float
    dynamodb_requests_by_operation: dict[str, int]
    durable_operations: int
    durable_operations_per_branch: float
    leases_left: int
    wall_seconds: float
    succeeded: bool
    #: Invocations that returned PENDING with no pending operation (InvalidPendingCounter):
    #: the service retries such an output at most 3 times in a row, then fails the execution.
    invalid_pending_outputs: int = 0
    #: Time-averaged share of the limit in use while any branch waited for a slot, from the
    #: histories (None: nobody waited).
    busy_while_waiting: float | None = None
    #: Demo-only limiter settings that differ from the library's defaults (empty: defaults).
    settings: dict[str, float] = field(default_factory=dict)
    #: Queue entries left in the table at the end (must be 0, like ``leases_left``).
    waiters_left: int = 0
    #: How waiters learn that a slot is theirs: "callback", "polling" or "none" (no limiter).
    wake_mode: str = "none"
    #: One dict per execution: execution (1-based), finished_seconds, mean_wait_seconds.
    executions_detail: list[dict[str, float]] = field(default_factory=list)
    #: The observer's step function: (seconds since the first invoke, in-flight count).
    timeline: list[tuple[float, int]] = field(default_factory=list)
    #: Per execution, the same step function (the lanes of the picture).
    lanes: list[list[tuple[float, int]]] = field(default_factory=list)
    #: The SDK and testing-library versions of the run: what the limiter adds depends on them.
    sdk_version: str = ""
    testing_version: str = ""
    #: "skip" (the runner skipped durable time) or "real" (it cannot: testing 1.2.1).
    clock: str = "skip"
    #: Each branch's downstream operation: "invoke" (a target) or "wait" (``demo-task``).
    downstream: str = "invoke"
    #: Durable seconds of one downstream operation.
    task_seconds: int = 1
    #: How often the testing 1.2.1 workaround stepped in; empty when it was not needed.
    runner_workaround: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The demo's verdict: every execution succeeded, no overshoot, nothing left behind."""
        return (
            self.succeeded
            and self.peak_in_flight <= self.limit
            and self.leases_left == 0
            and self.waiters_left == 0
            and self.invalid_pending_outputs == 0
        )

    @property
    def jain_fairness(self) -> float:
        """Jain's index over the executions' finishing times (1.0: all finish together)."""
        return jain_fairness([d["finished_seconds"] for d in self.executions_detail])

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object (without the timeline, which belongs in the picture)."""
        return {
            "ok": self.ok,
            "peak_in_flight": self.peak_in_flight,
            "limit": self.limit,
            "items": self.items,
            "executions": self.executions,
            "limiter": self.limiter,
            "makespan_seconds": round(self.makespan_seconds, 3),
            "ideal_seconds": self.ideal_seconds,
            "makespan_ratio": round(self.makespan_ratio, 3),
            "dynamodb_requests": self.dynamodb_requests,
            "dynamodb_requests_per_branch": round(self.dynamodb_requests_per_branch, 2),
            "dynamodb_requests_by_operation": self.dynamodb_requests_by_operation,
            "durable_operations": self.durable_operations,
            "durable_operations_per_branch": round(self.durable_operations_per_branch, 2),
            "leases_left": self.leases_left,
            "waiters_left": self.waiters_left,
            "wake_mode": self.wake_mode,
            "jain_fairness": round(self.jain_fairness, 4),
            "executions_detail": self.executions_detail,
            "wall_seconds": round(self.wall_seconds, 2),
            "invalid_pending_outputs": self.invalid_pending_outputs,
            "settings": self.settings,
            "busy_while_waiting": (
                None if self.busy_while_waiting is None else round(self.busy_while_waiting, 3)
            ),
            "succeeded": self.succeeded,
            "sdk_version": self.sdk_version,
            "testing_version": self.testing_version,
            "sdk_limits_one_map": self.sdk_limits_one_map,
            "clock": self.clock,
            "downstream": self.downstream,
            "runner_workaround": self.runner_workaround,
        }

    @property
    def sdk_limits_one_map(self) -> bool:
        """Whether this SDK keeps one map to ``max_concurrency`` by itself (SDK >= 2.0)."""
        from durable_semaphore.demo_runner import sdk_limits_one_map

        return sdk_limits_one_map(self.sdk_version)


# -- running -----------------------------------------------------------------------------------


class CallbackTimeoutFilter(logging.Filter):
    """Keeps the runner's "Callback ... timed out" warnings off the terminal: a waiter's
    callback timing out is the hand-off's designed fallback, not a problem to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("timed out") and "Callback " in message)


class InvalidPendingCounter(logging.Filter):
    """Counts invocations the local runner refused as "Cannot return PENDING status with no
    pending operations" and keeps the raw warning off the terminal; the summary reports them.

    The runner mirrors the service: it retries such an output at most 3 times in a row, then
    fails the execution. So every one counts against the run (``DemoResult.ok``): it means an
    invocation saw a completion and suspended without acting on it. On the skip clock the
    runner completes a durable wait before its time, which the bare SDK can see too when its
    branches start at different instants (``bench/runner_race.py``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if RUNNER_RACE_MESSAGE in record.getMessage():
            with self._lock:
                self.count += 1
            return False
        return True


def _make_handlers(config: DemoConfig, limiter: Any, *, invoke: bool = True) -> tuple[Any, Any]:
    """The target and the mapping handler, built per run so they close over this config.

    With ``invoke=False`` (a runner without an invoke registry) a branch waits ``task_seconds``
    itself: a suspended durable wait is in flight in the same way a pending invoke is.
    """
    from aws_durable_execution_sdk_python import DurableContext, durable_execution
    from aws_durable_execution_sdk_python.config import Duration

    from durable_semaphore.sdk import MapConfig

    task_seconds = config.task_seconds

    @durable_execution
    def target(event: Any, context: DurableContext) -> Any:
        """The downstream work: one unit of durable time."""
        context.wait(Duration.from_seconds(task_seconds))
        return event

    def branch(ctx: DurableContext, item: Any, index: int, items: Sequence[Any]) -> Any:
        if not invoke:
            ctx.wait(Duration.from_seconds(task_seconds), name=TASK_WAIT_NAME)
            return item
        return ctx.invoke(TARGET_FUNCTION, item)

    map_config: Any = MapConfig(max_concurrency=config.max_concurrency, limiter=limiter)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        batch: Any = context.map(list(range(int(event["items"]))), branch, config=map_config)
        return len(batch.get_results())

    return target, handler


def _progress(runner: Any, arns: Sequence[str], total: int, *, invoke: bool = True) -> Progress:
    """Count started and finished downstream operations (chained invokes, or ``demo-task``
    waits) in the runner's live execution state.

    Progress is cosmetic, so this reads the runner's executor (not public API) and degrades to
    zeros if the testing library changes; the verdict never depends on it.
    """
    started = finished = 0
    executor = getattr(runner, "_executor", None)
    for arn in arns:
        try:
            operations = list(executor.get_execution(arn).operations)  # type: ignore[union-attr]
        except Exception:
            continue
        for op in operations:
            kind = getattr(op.operation_type, "name", "")
            if invoke and kind != "CHAINED_INVOKE":
                continue
            if not invoke and (kind != "WAIT" or getattr(op, "name", None) != TASK_WAIT_NAME):
                continue
            started += 1
            if getattr(op.status, "name", "") in _TERMINAL_STATUSES:
                finished += 1
    return Progress(
        done=finished, in_flight=started - finished, waiting=total - started, total=total
    )


@contextlib.contextmanager
def local_lambda_endpoint(runner: Any, port: int) -> Iterator[str]:
    """Serve the testing library's durable-execution Lambda API for ``runner``'s executions.

    The waker completes callbacks through it (``SendDurableExecutionCallbackSuccess``), the
    same API call it makes against AWS. Attaching the server needs the runner's executor, which
    is private: with ``_progress`` and the testing 1.2.1 workaround in
    :mod:`durable_semaphore.demo_runner`, the demo's only reach into the testing library.
    """
    from aws_durable_execution_sdk_python_testing.web.server import (
        WebServer,
        WebServiceConfig,
    )

    root = logging.getLogger()
    handlers = list(root.handlers)
    server = WebServer(
        WebServiceConfig(host="127.0.0.1", port=port, log_level=logging.WARNING),
        runner._executor,
    )
    # The server calls logging.basicConfig(); keep the caller's logging as it was.
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-lambda-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def local_lambda_client(endpoint: str) -> Any:
    """A boto3 ``lambda`` client for the testing library's local durable-execution API server
    (callbacks, ``GetDurableExecution``), with dummy credentials."""
    import boto3

    from durable_semaphore.wake import _lambda_config

    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-west-2",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=_lambda_config(),
    )


def local_waker(endpoint: str) -> Any:
    """A :class:`~durable_semaphore.wake.LambdaCallbackWaker` for the local API server."""
    from durable_semaphore.wake import LambdaCallbackWaker

    return LambdaCallbackWaker(local_lambda_client(endpoint))


def run_demo(
    config: DemoConfig,
    semaphore: Any,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 0.5,
    wrap_waker: Callable[[Any], Any] | None = None,
) -> DemoResult:
    """Run the scenario against ``semaphore``'s table and judge it from the histories.

    ``semaphore`` is a :class:`~durable_semaphore.store.DynamoDBSemaphore` whose table exists;
    its boto3 client is the one the limiter uses, so its requests are counted. ``wrap_waker``
    (tests) wraps the local waker, e.g. to lose wake-ups on purpose. On a runner that cannot
    skip time, ``config.real_time`` is implied and the testing 1.2.1 workaround is applied.
    """
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    from durable_semaphore import demo_runner
    from durable_semaphore.limiter import DynamoDBLimiter

    features = demo_runner.detect(DurableFunctionTestRunner)
    sdk_version, testing_version = demo_runner.installed_versions()
    invoke = features.invoke_registry
    kind, task_name = ("InvokeOperation", None) if invoke else ("WaitOperation", TASK_WAIT_NAME)

    run_id = uuid.uuid4().hex[:10]
    counter = RequestCounter()
    counter.attach(semaphore.client)
    total = config.items * config.executions

    wall_start = time.perf_counter()
    results: list[Any] = []
    race = InvalidPendingCounter()
    runner_logger = logging.getLogger(RUNNER_LOGGER)
    runner_logger.addFilter(race)
    quiet_timeouts = CallbackTimeoutFilter()
    runner_logger.addFilter(quiet_timeouts)
    late_timers = demo_runner.LateTimerFilter()
    runner_logger.addFilter(late_timers)
    workaround: Callable[[], dict[str, int]] | None = None
    limiter: DynamoDBLimiter | None = None
    key_name: str | None = None
    wake_mode = "none"
    lambda_port: int | None = None
    if config.use_limiter:
        common: dict[str, Any] = {"semaphore": semaphore, "waker": None}
        if config.max_backoff_seconds is not None:
            common["max_delay_seconds"] = max(config.max_backoff_seconds, 1.0)
        if config.wake_timeout_seconds is not None:
            common["wake_timeout_seconds"] = config.wake_timeout_seconds
        if config.executions > 1:
            # Executions sharing a limit wake each other through callbacks, as deployed.
            if config.hand_off:
                from durable_semaphore.embedded import free_port

                lambda_port = free_port()
                waker = local_waker(f"http://127.0.0.1:{lambda_port}")
                common["waker"] = wrap_waker(waker) if wrap_waker is not None else waker
            key_name = f"demo-{run_id}"
            limiter = DynamoDBLimiter(key_name, config.max_concurrency, **common)
        else:
            limiter = DynamoDBLimiter(**common)  # per-map scope, like limiter="dynamodb"
        wake_mode = "callback" if limiter.uses_callbacks else "polling"
    target, handler = _make_handlers(config, limiter, invoke=invoke)
    runner_options: dict[str, Any] = {}
    if features.skip_time:
        runner_options["skip_time"] = not config.real_time
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(runner_logger.removeFilter, race)
        cleanup.callback(runner_logger.removeFilter, quiet_timeouts)
        cleanup.callback(runner_logger.removeFilter, late_timers)
        runner = cleanup.enter_context(DurableFunctionTestRunner(handler=handler, **runner_options))
        if features.needs_timer_workaround:
            try:
                workaround = demo_runner.complete_timers_like_the_service(runner)
            except AttributeError as exc:  # a runner release the workaround does not know
                logging.getLogger(__name__).warning(
                    "the testing library's timers cannot be fixed up (%s); maps whose "
                    "branches wait at staggered times may hang in this runner",
                    exc,
                )
        if lambda_port is not None:
            cleanup.enter_context(local_lambda_endpoint(runner, lambda_port))
        if invoke:
            runner.register_durable_function(TARGET_FUNCTION, target)
        arns = [
            runner.run_async(
                input=json.dumps({"items": config.items}),
                function_name="durable-semaphore-demo",
                execution_name=f"demo-{run_id}-{k}",
                **{features.timeout_arg: config.execution_timeout},
            )
            for k in range(config.executions)
        ]
        stop = threading.Event()
        reporter: threading.Thread | None = None
        if on_progress is not None:
            report = on_progress

            def loop() -> None:
                while not stop.wait(progress_interval):
                    report(_progress(runner, arns, total, invoke=invoke))

            reporter = threading.Thread(target=loop, name="demo-progress", daemon=True)
            reporter.start()
        try:
            for arn in arns:
                results.append(runner.wait_for_result(arn, timeout=config.execution_timeout))
        finally:
            stop.set()
            if reporter is not None:
                reporter.join(timeout=5)
        if on_progress is not None:
            on_progress(_progress(runner, arns, total, invoke=invoke))
    wall = time.perf_counter() - wall_start

    succeeded = all(getattr(r.status, "name", str(r.status)) == "SUCCEEDED" for r in results)
    per_exec = [operation_intervals(r, kind, task_name) for r in results]
    spans = [span for spans in per_exec for span in spans]
    origin = min((s for s, _ in spans), default=0.0)
    end = max((e for _, e in spans), default=origin)
    makespan = end - origin
    waves = math.ceil(config.items * config.executions / config.max_concurrency)
    ideal = float(waves * config.task_seconds)
    durable_ops = sum(len(all_operations(r)) for r in results)
    requests = counter.total  # before our own check below adds a Scan
    counter.detach(semaphore.client)
    by_operation = dict(sorted(counter.by_operation.items()))

    arn_prefixes = tuple(f"{arn}#" for arn in arns)

    def ours(key: str) -> bool:
        return key == key_name or key.startswith(arn_prefixes)

    now = semaphore.now()
    items = [lease for lease in semaphore.scan_leases() if ours(lease.key)]
    leases_left = sum(1 for lease in items if lease.holds_slot and lease.is_live(now))
    queued = {(lease.key, lease.holder) for lease in items if not lease.holds_slot}
    queued |= {(w.key, w.holder) for w in semaphore.scan_waiters() if ours(w.key)}
    waiters_left = len(queued)
    details = []
    for number, (result, exec_spans) in enumerate(zip(results, per_exec, strict=True), 1):
        waits = branch_waits(result, kind, task_name)
        details.append(
            {
                "execution": number,
                "finished_seconds": round(
                    max((e for _, e in exec_spans), default=origin) - origin, 3
                ),
                "mean_wait_seconds": round(sum(waits) / len(waits), 3) if waits else 0.0,
            }
        )

    def rebase(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
        return [(at - origin, count) for at, count in steps]

    return DemoResult(
        items=config.items,
        executions=config.executions,
        limit=config.max_concurrency,
        limiter=config.use_limiter,
        peak_in_flight=peak_overlap(spans),
        makespan_seconds=makespan,
        ideal_seconds=ideal,
        makespan_ratio=makespan / ideal if ideal else 0.0,
        dynamodb_requests=requests,
        dynamodb_requests_per_branch=requests / total,
        dynamodb_requests_by_operation=by_operation,
        durable_operations=durable_ops,
        durable_operations_per_branch=durable_ops / total,
        leases_left=leases_left,
        waiters_left=waiters_left,
        wake_mode=wake_mode,
        executions_detail=details,
        wall_seconds=wall,
        succeeded=succeeded,
        invalid_pending_outputs=race.count,
        settings={
            k: v
            for k, v in (
                ("max_delay_seconds", config.max_backoff_seconds),
                ("wake_timeout_seconds", config.wake_timeout_seconds),
            )
            if v is not None and config.use_limiter
        },
        busy_while_waiting=busy_while_waiting(
            spans,
            [w for r in results for w in wait_spans(r, kind, task_name)],
            config.max_concurrency,
        ),
        timeline=rebase(overlap_steps(spans)),
        lanes=[rebase(overlap_steps(s)) for s in per_exec],
        sdk_version=sdk_version,
        testing_version=testing_version,
        clock="skip" if features.skip_time and not config.real_time else "real",
        downstream="invoke" if invoke else "wait",
        task_seconds=config.task_seconds,
        runner_workaround=workaround() if workaround is not None else {},
    )


def run_compare(
    config: DemoConfig,
    semaphore: Any,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 0.5,
) -> tuple[DemoResult, DemoResult]:
    """Run the scenario on the bare SDK, then with the limiter: ``(bare, limited)``.

    Same items, executions, limit and runner; the same observer judges both, so the difference
    is what the limiter adds on the installed SDK. The bare run goes first: it touches no table.
    """
    bare = run_demo(
        dataclasses.replace(config, use_limiter=False),
        semaphore,
        on_progress=on_progress,
        progress_interval=progress_interval,
    )
    limited = run_demo(
        dataclasses.replace(config, use_limiter=True),
        semaphore,
        on_progress=on_progress,
        progress_interval=progress_interval,
    )
    return bare, limited


# -- presenting --------------------------------------------------------------------------------


def format_progress(progress: Progress) -> str:
    return (
        f"items done {progress.done}/{progress.total}  in flight {progress.in_flight}  "
        f"waiting {progress.waiting}"
    )


def format_summary(result: DemoResult, *, adds: bool = True) -> str:
    """The human summary printed at the end of the demo; ``adds=False`` leaves out what the
    limiter adds (``--compare`` prints it after the comparison instead)."""
    verdict = "OK" if result.peak_in_flight <= result.limit else "EXCEEDED"
    scope = (
        f"shared by {result.executions} executions"
        if result.executions > 1
        else "per map operation"
    )
    limiter = f"DynamoDB limiter, {scope}" if result.limiter else "no limiter (bare SDK)"
    ops = ", ".join(f"{k} {v}" for k, v in result.dynamodb_requests_by_operation.items())
    lines = [
        f"{result.items} items x {result.executions} execution(s), limit {result.limit} "
        f"({limiter})",
        f"  peak in flight      {result.peak_in_flight} (limit {result.limit}): {verdict}",
        f"  makespan            {result.makespan_seconds:.1f} s durable time vs ideal "
        f"{result.ideal_seconds:.0f} s (ratio {result.makespan_ratio:.2f})",
        f"  DynamoDB requests   {result.dynamodb_requests_per_branch:.2f} per branch "
        f"({result.dynamodb_requests} total{': ' + ops if ops else ''})",
        f"  durable operations  {result.durable_operations_per_branch:.2f} per branch "
        f"({result.durable_operations} total)",
        f"  leases left         {result.leases_left}, waiters left {result.waiters_left}",
        f"  wall time           {result.wall_seconds:.1f} s ({_clock_note(result)})",
    ]
    if result.executions > 1 and result.executions_detail:
        finished = [d["finished_seconds"] for d in result.executions_detail]
        lines.append(
            f"  fairness            Jain {result.jain_fairness:.3f} over finishing times "
            f"({min(finished):.1f} to {max(finished):.1f} s)"
        )
    if result.limiter and result.busy_while_waiting is not None:
        lines.append(
            f"  while anyone waited {result.busy_while_waiting:.0%} of the limit was in use "
            f"(time-averaged); waiters woken by {result.wake_mode}"
        )
    if result.limiter:
        knobs = ", ".join(f"{k}={v}" for k, v in result.settings.items())
        lines.append(f"  settings            {knobs or 'the library defaults'}")
    if result.invalid_pending_outputs:
        lines.append(
            f"  invalid PENDING     {result.invalid_pending_outputs} invocation(s) returned "
            "PENDING with nothing pending; the service fails an execution after 3 in a row "
            "(docs/demo.md#invalid-pending-outputs)"
        )
    if any(result.runner_workaround.values()):
        steps = result.runner_workaround
        lines.append(
            f"  runner workaround   testing {result.testing_version} timers: "
            f"{steps.get('timers_completed', 0)} completed at a checkpoint, "
            f"{steps.get('tokens_carried', 0)} tokens carried over, "
            f"{steps.get('invocations_coalesced', 0)} invocations coalesced (docs/demo.md)"
        )
    if result.sdk_version:
        note = ""
        if result.downstream == "wait":
            note = f"; each branch waits {result.task_seconds} s itself (no invoke targets)"
        lines.append(
            f"  SDK                 {result.sdk_version}, testing library "
            f"{result.testing_version}{note}"
        )
    if not result.succeeded:
        lines.append("  at least one execution did not succeed")
    if adds:
        lines.append(format_adds(result))
    return "\n".join(lines)


def _clock_note(result: DemoResult) -> str:
    if result.clock == "skip":
        return "durable time skipped"
    if result.downstream == "wait":
        return "real clock: this testing library cannot skip durable time"
    return "real clock (--real-time)"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=98, initial_indent="  ", subsequent_indent="    ")


def limiter_adds(result: DemoResult, bare: DemoResult | None = None) -> str:
    """What the limiter adds on the SDK this run used, in plain words.

    On SDK 1.x ``max_concurrency`` sizes a thread pool, so every branch that suspends is in
    flight: the limiter is what bounds one map. From SDK 2.0 the SDK bounds one map within one
    invocation itself; the limiter adds a limit shared across executions and across
    overlapping invocations of one execution. ``bare`` (from ``--compare``) adds the measured
    peak of the bare SDK.
    """
    limit, k = result.limit, result.executions
    sdk = f"SDK {result.sdk_version}" if result.sdk_version else "this SDK"
    measured = f" (measured: {bare.peak_in_flight})" if bare is not None else ""
    if not result.sdk_limits_one_map:
        text = (
            f"on {sdk}, max_concurrency={limit} bounds threads, not operations, so the bare SDK "
            f"lets every branch that suspends be in flight: up to {result.items * k} here"
            f"{measured}."
        )
        if result.limiter:
            text += f" With the limiter the peak was {result.peak_in_flight} (limit {limit})."
            if k > 1:
                text += f" The {k} executions shared one limit of {limit}."
        elif bare is None:
            text += " Run it again without --no-limiter, or with --compare."
        return text
    if k == 1:
        text = (
            f"on {sdk} the SDK itself keeps one map to max_concurrency={limit} within one "
            f"invocation, so one execution peaks at {limit} or less with or without the limiter"
            f"{measured}. What the limiter adds on this SDK: one limit shared across "
            "executions, and across overlapping invocations of one execution, which the SDK "
            "does not see. Try --executions 3 --compare."
        )
        return text
    text = (
        f"on {sdk} each execution's map is bounded by the SDK on its own, so {k} executions "
        f"can have {k * limit} in flight together{measured}."
    )
    if result.limiter:
        text += (
            f" The shared limiter kept all {k} at {result.peak_in_flight} (limit {limit}); it "
            "also holds across overlapping invocations of one execution."
        )
    return text


def format_comparison(bare: DemoResult, limited: DemoResult) -> str:
    """``--compare``: the bare SDK and the limiter side by side (:func:`format_adds` says what
    the difference means)."""
    rows = [
        (
            "peak in flight",
            str(bare.peak_in_flight),
            str(limited.peak_in_flight),
            f"(limit {limited.limit})",
        ),
        (
            "makespan",
            f"{bare.makespan_seconds:.1f} s",
            f"{limited.makespan_seconds:.1f} s",
            f"(ideal {limited.ideal_seconds:.0f} s)",
        ),
        (
            "DynamoDB req/branch",
            f"{bare.dynamodb_requests_per_branch:.2f}",
            f"{limited.dynamodb_requests_per_branch:.2f}",
            "",
        ),
        (
            "durable ops/branch",
            f"{bare.durable_operations_per_branch:.2f}",
            f"{limited.durable_operations_per_branch:.2f}",
            "",
        ),
        ("wall time", f"{bare.wall_seconds:.1f} s", f"{limited.wall_seconds:.1f} s", ""),
    ]
    lines = [
        f"compared on the same scenario ({limited.items} items x {limited.executions} "
        f"execution(s), max_concurrency {limited.limit}, {_clock_note(limited)}):",
        f"  {'':<20}{'bare SDK':<14}DynamoDB limiter",
    ]
    lines += [f"  {name:<20}{a:<14}{b:<18}{note}".rstrip() for name, a, b, note in rows]
    if not bare.succeeded:
        lines.append("  the bare run did not succeed")
    return "\n".join(lines)


def format_adds(result: DemoResult, bare: DemoResult | None = None) -> str:
    """The closing paragraph: :func:`limiter_adds`, wrapped for the terminal."""
    return "\n".join(_wrap("What the limiter adds: " + limiter_adds(result, bare)))


class PlottingUnavailableError(RuntimeError):
    """matplotlib is not installed (it is part of the ``demo`` extra)."""


def save_timeline(result: DemoResult, path: str, bare: DemoResult | None = None) -> str:
    """Draw the in-flight count over durable time, the limit as a line, and a lane per
    execution when several share the limit; save a PNG at ``path`` and return it. ``bare``
    (``--compare``) adds the bare SDK's count to the top panel, so the difference shows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlottingUnavailableError(
            "matplotlib is not installed, so no timeline was drawn; install the demo extra: "
            "pip install 'durable-semaphore[demo]' (or pass --no-png)"
        ) from exc

    shared = result.executions > 1
    rows = 2 if shared else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 * rows), sharex=True, squeeze=False, dpi=80)
    top = axes[0][0]
    xs = [0.0] + [t for t, _ in result.timeline]
    ys = [0] + [c for _, c in result.timeline]
    label = "in flight (observed)"
    if bare is not None:
        label = "with the limiter (observed)"
    top.step(xs, ys, where="post", color="tab:blue", label=label)
    highest = max(result.peak_in_flight, result.limit)
    limiter = "DynamoDB limiter" if result.limiter else "no limiter"
    title = f"{limiter}: peak {result.peak_in_flight}"
    if bare is not None:
        bx = [0.0] + [t for t, _ in bare.timeline]
        by = [0] + [c for _, c in bare.timeline]
        top.step(bx, by, where="post", color="tab:gray", label="bare SDK (observed)")
        highest = max(highest, bare.peak_in_flight)
        title = f"bare SDK peak {bare.peak_in_flight}, {title}"
    top.axhline(result.limit, color="tab:red", linestyle="--", label=f"limit {result.limit}")
    top.set_ylabel("in flight" if result.downstream == "wait" else "in-flight invokes")
    top.set_ylim(0, highest + 1)
    top.set_title(
        f"{result.items} items x {result.executions} exec, max_concurrency "
        f"{result.limit}, SDK {result.sdk_version or '?'}: {title}",
        fontsize="medium",
    )
    top.legend(loc="upper right", fontsize="small")
    if shared:
        lanes_ax = axes[1][0]
        for k, lane in enumerate(result.lanes):
            lx = [0.0] + [t for t, _ in lane]
            ly = [0] + [c for _, c in lane]
            lanes_ax.step(lx, ly, where="post", label=f"execution {k + 1}")
        lanes_ax.set_ylabel("per execution")
        lanes_ax.set_ylim(0, max(result.peak_in_flight, result.limit) + 1)
        lanes_ax.legend(loc="upper right", fontsize="small", ncol=min(4, result.executions))
    axes[-1][0].set_xlabel(
        f"durable time (s) since the first {'invoke' if result.downstream == 'invoke' else 'task'}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
