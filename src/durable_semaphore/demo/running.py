"""Running the demo: build a run, run it in the SDK's local runner, judge it from the histories.

:func:`run_demo` is the three steps in a row: :func:`build_run` (the limiter and the durable
handlers for one :class:`~.scenario.DemoConfig`), :func:`execute` (the runner, the executions,
the progress reports, the DynamoDB requests counted on the wire) and :func:`judge` (the
observer's verdict, and what the run left in the table). :func:`run_compare` runs the bare SDK,
then the limiter, on the same scenario, so the difference is what the limiter adds.

On a runner that cannot skip time (testing 1.2.1) the real clock is implied and the timer
workaround of :mod:`.local_runner` is applied. The testing library is imported inside the
functions that run, so this module imports without the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from durable_semaphore.demo import local_runner
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from durable_semaphore.demo.local_runner import RunnerFeatures
from durable_semaphore.demo.observer import (
    RequestCounter,
    all_operations,
    branch_waits,
    busy_while_waiting,
    operation_intervals,
    overlap_steps,
    peak_overlap,
    wait_spans,
)
from durable_semaphore.demo.quiet import runner_log_filters
from durable_semaphore.demo.result import BARE_RUN, LIMITED_RUN, DemoResult, Progress
from durable_semaphore.demo.scenario import (
    TARGET_FUNCTION,
    TASK_WAIT_NAME,
    DemoConfig,
    build_handlers,
)
from durable_semaphore.limiter import DynamoDBLimiter

ProgressCallback = Callable[[Progress], None]
_TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED", "CANCELLED"})


# -- build -------------------------------------------------------------------------------------


@dataclass
class PreparedRun:
    """Everything a run needs before the runner starts (:func:`build_run`)."""

    config: DemoConfig
    features: RunnerFeatures
    sdk_version: str
    testing_version: str
    run_id: str
    target: Any
    handler: Any
    limiter: DynamoDBLimiter | None = None
    #: The shared limiter's name (its table key), when executions share one.
    key_name: str | None = None
    wake_mode: str = "none"
    #: Where the local Lambda API will listen, when waiters are woken by callbacks.
    lambda_port: int | None = None

    @property
    def invoke(self) -> bool:
        """Branches invoke a registered target (else each waits ``task_seconds`` itself)."""
        return self.features.invoke_registry

    @property
    def task(self) -> tuple[str, str | None]:
        """(operation type, name) of a branch's downstream operation in the histories."""
        return ("InvokeOperation", None) if self.invoke else ("WaitOperation", TASK_WAIT_NAME)

    @property
    def label(self) -> str:
        return LIMITED_RUN if self.config.use_limiter else BARE_RUN


def _build_limiter(
    config: DemoConfig,
    semaphore: Any,
    run_id: str,
    wrap_waker: Callable[[Any], Any] | None,
) -> tuple[DynamoDBLimiter, str | None, int | None]:
    """The limiter of a run: per map, or one named limiter shared by the executions (woken
    through the local Lambda API, as deployed); returns (limiter, key name, Lambda port)."""
    options: dict[str, Any] = {"semaphore": semaphore, "waker": None}
    if config.max_backoff_seconds is not None:
        options["max_delay_seconds"] = max(config.max_backoff_seconds, 1.0)
    if config.wake_timeout_seconds is not None:
        options["wake_timeout_seconds"] = config.wake_timeout_seconds
    if config.executions == 1:
        return DynamoDBLimiter(**options), None, None  # per-map scope, like limiter="dynamodb"
    port: int | None = None
    if config.hand_off:
        port = free_port()
        waker = local_waker(f"http://127.0.0.1:{port}")
        options["waker"] = wrap_waker(waker) if wrap_waker is not None else waker
    key_name = f"demo-{run_id}"
    return DynamoDBLimiter(key_name, config.max_concurrency, **options), key_name, port


def build_run(
    config: DemoConfig, semaphore: Any, *, wrap_waker: Callable[[Any], Any] | None = None
) -> PreparedRun:
    """The limiter (none for the bare SDK) and the handlers for ``config`` on ``semaphore``'s
    table, with what the installed runner can do."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    features = local_runner.detect(DurableFunctionTestRunner)
    sdk_version, testing_version = local_runner.installed_versions()
    run_id = uuid.uuid4().hex[:10]
    limiter: DynamoDBLimiter | None = None
    key_name: str | None = None
    port: int | None = None
    wake_mode = "none"
    if config.use_limiter:
        limiter, key_name, port = _build_limiter(config, semaphore, run_id, wrap_waker)
        wake_mode = "callback" if limiter.uses_callbacks else "polling"
    target, handler = build_handlers(config, limiter, invoke=features.invoke_registry)
    return PreparedRun(
        config=config,
        features=features,
        sdk_version=sdk_version,
        testing_version=testing_version,
        run_id=run_id,
        target=target,
        handler=handler,
        limiter=limiter,
        key_name=key_name,
        wake_mode=wake_mode,
        lambda_port=port,
    )


# -- run ---------------------------------------------------------------------------------------


@dataclass
class RawRun:
    """What :func:`execute` saw: the histories and the counts taken while it ran."""

    arns: list[str]
    results: list[Any]
    wall_seconds: float
    requests_by_operation: dict[str, int]
    invalid_pending_outputs: int
    runner_workaround: dict[str, int] = field(default_factory=dict)


def read_progress(runner: Any, arns: Sequence[str], total: int, prepared: PreparedRun) -> Progress:
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
            if prepared.invoke and kind != "CHAINED_INVOKE":
                continue
            if not prepared.invoke and (
                kind != "WAIT" or getattr(op, "name", None) != TASK_WAIT_NAME
            ):
                continue
            started += 1
            if getattr(op.status, "name", "") in _TERMINAL_STATUSES:
                finished += 1
    return Progress(
        done=finished,
        in_flight=started - finished,
        waiting=total - started,
        total=total,
        run=prepared.label,
    )


def _open_runner(prepared: PreparedRun, cleanup: contextlib.ExitStack) -> tuple[Any, Any]:
    """Start the local runner (and the Lambda API, when waiters are woken by callbacks);
    returns (runner, the testing 1.2.1 workaround's report or None)."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    options: dict[str, Any] = {}
    if prepared.features.skip_time:
        options["skip_time"] = not prepared.config.real_time
    runner = cleanup.enter_context(DurableFunctionTestRunner(handler=prepared.handler, **options))
    workaround = None
    if prepared.features.needs_timer_workaround:
        try:
            workaround = local_runner.complete_timers_like_the_service(runner)
        except AttributeError as exc:  # a runner release the workaround does not know
            logging.getLogger(__name__).warning(
                "the testing library's timers cannot be fixed up (%s); maps whose branches "
                "wait at staggered times may hang in this runner",
                exc,
            )
    if prepared.lambda_port is not None:
        cleanup.enter_context(local_lambda_endpoint(runner, prepared.lambda_port))
    if prepared.invoke:
        runner.register_durable_function(TARGET_FUNCTION, prepared.target)
    return runner, workaround


def _start_executions(runner: Any, prepared: PreparedRun) -> list[str]:
    config = prepared.config
    return [
        runner.run_async(
            input=json.dumps({"items": config.items}),
            function_name="durable-semaphore-demo",
            execution_name=f"demo-{prepared.run_id}-{k}",
            **{prepared.features.timeout_arg: config.execution_timeout},
        )
        for k in range(config.executions)
    ]


def _wait_for_results(
    runner: Any,
    arns: list[str],
    prepared: PreparedRun,
    on_progress: ProgressCallback | None,
    interval: float,
) -> list[Any]:
    """Wait for every execution, reporting progress every ``interval`` s from a thread."""
    total = prepared.config.items * prepared.config.executions
    stop = threading.Event()
    reporter: threading.Thread | None = None
    if on_progress is not None:
        report = on_progress

        def loop() -> None:
            while not stop.wait(interval):
                report(read_progress(runner, arns, total, prepared))

        reporter = threading.Thread(target=loop, name="demo-progress", daemon=True)
        reporter.start()
    try:
        results = [
            runner.wait_for_result(arn, timeout=prepared.config.execution_timeout) for arn in arns
        ]
    finally:
        stop.set()
        if reporter is not None:
            reporter.join(timeout=5)
    if on_progress is not None:
        on_progress(read_progress(runner, arns, total, prepared))
    return results


def execute(
    prepared: PreparedRun,
    semaphore: Any,
    *,
    on_progress: ProgressCallback | None = None,
    progress_interval: float = 0.5,
) -> RawRun:
    """Run the prepared executions in the local runner until all finish.

    ``semaphore``'s client is the limiter's, so the DynamoDB requests counted on it are the
    limiter's own, retries included.
    """
    counter = RequestCounter()
    counter.attach(semaphore.client)
    wall_start = time.perf_counter()
    try:
        with runner_log_filters() as invalid_pending, contextlib.ExitStack() as cleanup:
            runner, workaround = _open_runner(prepared, cleanup)
            arns = _start_executions(runner, prepared)
            results = _wait_for_results(runner, arns, prepared, on_progress, progress_interval)
    finally:
        counter.detach(semaphore.client)
    return RawRun(
        arns=arns,
        results=results,
        wall_seconds=time.perf_counter() - wall_start,
        requests_by_operation=dict(sorted(counter.by_operation.items())),
        invalid_pending_outputs=invalid_pending.count,
        runner_workaround=workaround() if workaround is not None else {},
    )


# -- judge -------------------------------------------------------------------------------------


def _leftovers(semaphore: Any, arns: Sequence[str], key_name: str | None) -> tuple[int, int]:
    """(live leases, queue entries) this run left in the table: both must be 0."""
    prefixes = tuple(f"{arn}#" for arn in arns)

    def ours(key: str) -> bool:
        return key == key_name or key.startswith(prefixes)

    now = semaphore.now()
    items = [lease for lease in semaphore.scan_leases() if ours(lease.key)]
    leases = sum(1 for lease in items if lease.holds_slot and lease.is_live(now))
    queued = {(lease.key, lease.holder) for lease in items if not lease.holds_slot}
    queued |= {(w.key, w.holder) for w in semaphore.scan_waiters() if ours(w.key)}
    return leases, len(queued)


def _execution_details(
    raw: RawRun,
    per_exec: Sequence[Sequence[tuple[float, float]]],
    origin: float,
    task: tuple[str, str | None],
) -> list[dict[str, float]]:
    """Per execution: when its last task ended and how long its branches waited for a slot."""
    details: list[dict[str, float]] = []
    for number, (result, spans) in enumerate(zip(raw.results, per_exec, strict=True), 1):
        waits = branch_waits(result, *task)
        finished = max((end for _, end in spans), default=origin) - origin
        details.append(
            {
                "execution": number,
                "finished_seconds": round(finished, 3),
                "mean_wait_seconds": round(sum(waits) / len(waits), 3) if waits else 0.0,
            }
        )
    return details


def _settings(config: DemoConfig) -> dict[str, float]:
    """The demo-only limiter settings given (empty at the library's defaults)."""
    given = (
        ("max_delay_seconds", config.max_backoff_seconds),
        ("wake_timeout_seconds", config.wake_timeout_seconds),
    )
    return {k: v for k, v in given if v is not None and config.use_limiter}


def judge(prepared: PreparedRun, raw: RawRun, semaphore: Any) -> DemoResult:
    """The verdict, from the histories (never from the limiter) and the table's leftovers."""
    config, task = prepared.config, prepared.task
    total = config.items * config.executions
    per_exec = [operation_intervals(r, *task) for r in raw.results]
    spans = [span for spans in per_exec for span in spans]
    origin = min((s for s, _ in spans), default=0.0)
    makespan = max((e for _, e in spans), default=origin) - origin
    ideal = float(math.ceil(total / config.max_concurrency) * config.task_seconds)
    durable_ops = sum(len(all_operations(r)) for r in raw.results)
    requests = sum(raw.requests_by_operation.values())
    leases_left, waiters_left = _leftovers(semaphore, raw.arns, prepared.key_name)
    waits = [w for r in raw.results for w in wait_spans(r, *task)]

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
        dynamodb_requests_by_operation=raw.requests_by_operation,
        durable_operations=durable_ops,
        durable_operations_per_branch=durable_ops / total,
        leases_left=leases_left,
        waiters_left=waiters_left,
        wake_mode=prepared.wake_mode,
        executions_detail=_execution_details(raw, per_exec, origin, task),
        wall_seconds=raw.wall_seconds,
        succeeded=all(getattr(r.status, "name", str(r.status)) == "SUCCEEDED" for r in raw.results),
        invalid_pending_outputs=raw.invalid_pending_outputs,
        settings=_settings(config),
        busy_while_waiting=busy_while_waiting(spans, waits, config.max_concurrency),
        branches_waited=len(waits),
        timeline=rebase(overlap_steps(spans)),
        lanes=[rebase(overlap_steps(s)) for s in per_exec],
        sdk_version=prepared.sdk_version,
        testing_version=prepared.testing_version,
        clock="skip" if prepared.features.skip_time and not config.real_time else "real",
        downstream="invoke" if prepared.invoke else "wait",
        task_seconds=config.task_seconds,
        runner_workaround=raw.runner_workaround,
    )


# -- the whole run -----------------------------------------------------------------------------


def run_demo(
    config: DemoConfig,
    semaphore: Any,
    *,
    on_progress: ProgressCallback | None = None,
    progress_interval: float = 0.5,
    wrap_waker: Callable[[Any], Any] | None = None,
) -> DemoResult:
    """Run the scenario against ``semaphore``'s table and judge it from the histories.

    ``semaphore`` is a :class:`~durable_semaphore.store.DynamoDBSemaphore` whose table exists;
    its boto3 client is the one the limiter uses, so its requests are counted. ``wrap_waker``
    (tests) wraps the local waker, e.g. to lose wake-ups on purpose.
    """
    prepared = build_run(config, semaphore, wrap_waker=wrap_waker)
    raw = execute(prepared, semaphore, on_progress=on_progress, progress_interval=progress_interval)
    return judge(prepared, raw, semaphore)


def run_compare(
    config: DemoConfig,
    semaphore: Any,
    *,
    on_progress: ProgressCallback | None = None,
    progress_interval: float = 0.5,
) -> tuple[DemoResult, DemoResult]:
    """Run the scenario on the bare SDK, then with the limiter: ``(bare, limited)``.

    Same items, executions, limit and runner; the same observer judges both, so the difference
    is what the limiter adds on the installed SDK. The bare run goes first: it touches no table.
    """
    runs = [
        run_demo(
            dataclasses.replace(config, use_limiter=use),
            semaphore,
            on_progress=on_progress,
            progress_interval=progress_interval,
        )
        for use in (False, True)
    ]
    return runs[0], runs[1]
