"""``durable-semaphore demo --scenario tenants``: several limits on one map, per-item keys, and
a limit raised while the executions run.

Several durable executions map items that belong to a few tenants, under two limits at once:
``DynamoDBLimiter(per_tenant, 2)`` (one key per tenant, from the item) and
``DynamoDBLimiter("<total>", 5)`` shared by all. Part-way through, the total is raised to 8
with ``set_limit`` (what ``durable-semaphore set-limit`` does), without a redeploy. Each
branch's work is one downstream operation named after its tenant, so the verdict comes from the
execution histories alone: the peak per tenant, the total against the limit in force at each
instant, and the makespan against the schedule an ideal scheduler reaches under the same limits.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration

from durable_semaphore.demo import local_runner
from durable_semaphore.demo.embedded import free_port
from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint, local_waker
from durable_semaphore.demo.observer import all_operations, overlap_steps
from durable_semaphore.demo.quiet import runner_log_filters
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.sdk import MapConfig
from durable_semaphore.store import DynamoDBSemaphore

__all__ = [
    "TenantsDemo",
    "TenantsResult",
    "format_tenants",
    "ideal_makespan",
    "run_tenants",
]

TARGET_FUNCTION = "tenants-target"
WORK_PREFIX = "work-"


@dataclass(frozen=True)
class TenantsDemo:
    """What to run: ``executions`` maps of the items in ``mix`` (tenant of each item, in
    order), at most ``per_tenant`` per tenant and ``total`` in all, raised to ``raised_to``
    once ``raise_after`` seconds have passed since the first start."""

    executions: int = 4
    mix: tuple[str, ...] = ("A", "A", "B", "A", "C", "D", "B", "A")
    per_tenant: int = 2
    total: int = 5
    raised_to: int | None = 8
    raise_after: float = 4.0
    task_seconds: int = 2
    use_limiter: bool = True

    def items(self, run: int) -> list[dict[str, Any]]:
        return [{"tenant": t, "n": run * 1000 + i} for i, t in enumerate(self.mix)]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tenant in self.mix:
            counts[tenant] = counts.get(tenant, 0) + self.executions
        return counts


@dataclass
class TenantsResult:
    demo: TenantsDemo
    #: (start, end, tenant) of each branch's work, seconds since the first start.
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    #: When the total was raised, seconds since the first start (None: it was not).
    raised_at: float | None = None
    succeeded: bool = True
    wall_seconds: float = 0.0
    #: The runner's "PENDING with no pending operations" outputs (docs/demo.md).
    invalid_pending_outputs: int = 0

    def limit_at(self, t: float) -> int:
        """The total limit in force at ``t``."""
        raised = self.raised_at is not None and t >= self.raised_at
        return self.demo.raised_to if raised and self.demo.raised_to else self.demo.total

    @property
    def tenant_peaks(self) -> dict[str, int]:
        by: dict[str, list[tuple[float, float]]] = {}
        for start, end, tenant in self.spans:
            by.setdefault(tenant, []).append((start, end))
        return {t: max(c for _, c in overlap_steps(s)) for t, s in sorted(by.items())}

    @property
    def total_steps(self) -> list[tuple[float, int]]:
        return overlap_steps([(s, e) for s, e, _ in self.spans])

    @property
    def over_total(self) -> list[tuple[float, int, int]]:
        """(instant, in flight, limit in force) wherever the total exceeded its limit."""
        return [(t, n, self.limit_at(t)) for t, n in self.total_steps if n > self.limit_at(t)]

    @property
    def makespan(self) -> float:
        return max((end for _, end, _ in self.spans), default=0.0)

    @property
    def ideal(self) -> float:
        raised_to = self.demo.raised_to
        changes = [] if self.raised_at is None or raised_to is None else [self.raised_at]
        totals = [self.demo.total] + ([raised_to] if changes and raised_to else [])
        return ideal_makespan(
            self.demo.counts, self.demo.per_tenant, changes, totals, self.demo.task_seconds
        )

    @property
    def ok(self) -> bool:
        if not self.succeeded or not self.demo.use_limiter:
            return self.succeeded
        within = all(p <= self.demo.per_tenant for p in self.tenant_peaks.values())
        return within and not self.over_total

    def to_json(self) -> dict[str, Any]:
        return {
            "executions": self.demo.executions,
            "items": len(self.spans),
            "limiter": self.demo.use_limiter,
            "per_tenant": self.demo.per_tenant,
            "total": self.demo.total,
            "raised_to": self.demo.raised_to,
            "raised_at": self.raised_at,
            "tenant_peaks": self.tenant_peaks,
            "peak_total": max((n for _, n in self.total_steps), default=0),
            "over_total": self.over_total,
            "makespan": round(self.makespan, 2),
            "ideal_makespan": round(self.ideal, 2),
            "invalid_pending_outputs": self.invalid_pending_outputs,
            "ok": self.ok,
        }


def ideal_makespan(
    counts: dict[str, int],
    per_tenant: int,
    changes: Sequence[float],
    totals: Sequence[int],
    task_seconds: float,
) -> float:
    """The makespan of a clairvoyant scheduler under the same limits: equal tasks, at most
    ``per_tenant`` per tenant, ``totals[i]`` in all from ``changes[i-1]`` on; at every instant
    it fills the room with the tenants that have the most left (optimal for equal tasks)."""
    left = dict(counts)
    running: list[tuple[float, str]] = []
    now = 0.0
    while any(left.values()) or running:
        room = totals[sum(1 for c in changes if c <= now)] - len(running)
        busy = {t: sum(1 for _, r in running if r == t) for t in left}
        for _ in range(max(0, room)):
            ready = [t for t in left if left[t] and busy[t] < per_tenant]
            if not ready:
                break
            tenant = max(ready, key=lambda t: (left[t], t))
            left[tenant] -= 1
            busy[tenant] += 1
            running.append((now + task_seconds, tenant))
        upcoming = [end for end, _ in running] + [c for c in changes if c > now]
        now = min(upcoming)
        running = [(end, t) for end, t in running if end > now]
    return now


def _limits(
    demo: TenantsDemo, semaphore: DynamoDBSemaphore, waker: Any, run_id: str
) -> tuple[list[DynamoDBLimiter], DynamoDBLimiter]:
    options: dict[str, Any] = {"semaphore": semaphore, "waker": waker}

    def per_tenant(item: dict[str, Any]) -> str:
        return f"demo-{run_id}-tenant-{item['tenant']}"

    total = DynamoDBLimiter(f"demo-{run_id}-total", demo.total, **options)
    return [total, DynamoDBLimiter(per_tenant, demo.per_tenant, **options)], total


def _handlers(demo: TenantsDemo, limiter: Any, invoke: bool) -> tuple[Any, Any]:
    seconds = demo.task_seconds

    @durable_execution
    def target(event: Any, context: DurableContext) -> Any:
        context.wait(Duration.from_seconds(seconds))
        return event

    def item(ctx: DurableContext, x: dict[str, Any], i: int, items: Any) -> int:
        name = WORK_PREFIX + str(x["tenant"])
        if invoke:
            ctx.invoke(TARGET_FUNCTION, x, name=name)
        else:
            ctx.wait(Duration.from_seconds(seconds), name=name)
        return int(x["n"])

    config: MapConfig[Any] = MapConfig(max_concurrency=len(demo.mix), limiter=limiter)

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        return context.map(demo.items(int(event["run"])), item, config=config).get_results()

    return target, handler


def _work_spans(results: list[Any], invoke: bool) -> list[tuple[float, float, str]]:
    kind = "InvokeOperation" if invoke else "WaitOperation"
    spans = []
    for res in results:
        for op in all_operations(res):
            name = op.name or ""
            if type(op).__name__ == kind and name.startswith(WORK_PREFIX):
                start, end = op.start_timestamp.timestamp(), op.end_timestamp.timestamp()
                spans.append((start, end, name.removeprefix(WORK_PREFIX)))
    return spans


def _raiser(
    demo: TenantsDemo, total: DynamoDBLimiter | None, started: float
) -> tuple[threading.Thread | None, list[float]]:
    """A thread that raises the total ``raise_after`` s after the executions started
    (``set_limit``, as ``durable-semaphore set-limit`` does); returns it and where it records
    the instant."""
    raised: list[float] = []
    if total is None or demo.raised_to is None:
        return None, raised
    limiter, name, new = total, str(total.name), demo.raised_to

    def run() -> None:
        time.sleep(max(0.0, started + demo.raise_after - time.time()))
        # A raise may hand out room from the moment the call starts: dated from then.
        raised.append(time.time())
        limiter.set_limit(name, new, code_limit=demo.total)

    return threading.Thread(target=run, name="demo-set-limit", daemon=True), raised


def run_tenants(demo: TenantsDemo, semaphore: DynamoDBSemaphore) -> TenantsResult:
    """One run (with or without the limiter) on the real clock, woken through callbacks."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    features = local_runner.detect(DurableFunctionTestRunner)
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    limits, total = (
        _limits(demo, semaphore, local_waker(f"http://127.0.0.1:{port}"), run_id)
        if demo.use_limiter
        else (None, None)
    )
    target, handler = _handlers(demo, limits, features.invoke_registry)
    options: dict[str, Any] = {"skip_time": False} if features.skip_time else {}
    wall = time.perf_counter()
    with contextlib.ExitStack() as stack:
        invalid = stack.enter_context(runner_log_filters())
        runner = stack.enter_context(DurableFunctionTestRunner(handler=handler, **options))
        stack.enter_context(local_lambda_endpoint(runner, port))
        if features.invoke_registry:
            runner.register_durable_function(TARGET_FUNCTION, target)
        arns = [
            runner.run_async(
                input=json.dumps({"run": k}),
                execution_name=f"tenants-{run_id}-{k}",
                **{features.timeout_arg: 600},
            )
            for k in range(demo.executions)
        ]
        thread, raised = _raiser(demo, total, time.time())
        if thread is not None:
            thread.start()
        results = [runner.wait_for_result(arn, timeout=600) for arn in arns]
    spans = _work_spans(results, features.invoke_registry)
    t0 = min((s for s, _, _ in spans), default=0.0)
    return TenantsResult(
        demo,
        spans=sorted((s - t0, e - t0, t) for s, e, t in spans),
        raised_at=(raised[0] - t0) if raised else None,
        succeeded=all(res.status.name == "SUCCEEDED" for res in results),
        wall_seconds=time.perf_counter() - wall,
        invalid_pending_outputs=invalid.count,
    )


def format_tenants(result: TenantsResult, bare: TenantsResult | None) -> str:
    """Peaks per tenant and in total, the raise, the makespans, and the verdict, as text."""
    demo = result.demo
    lines = [
        f"tenants demo: {demo.executions} executions x {len(demo.mix)} items of tenants "
        f"{', '.join(sorted(demo.counts))}; at most {demo.per_tenant} per tenant and "
        f"{demo.total} in total"
        + (f", raised to {demo.raised_to} after {demo.raise_after:g} s" if demo.raised_to else "")
    ]
    for label, run in (("bare SDK", bare), ("limiter", result)):
        if run is None:
            continue
        peaks = ", ".join(f"{t} {p}" for t, p in run.tenant_peaks.items())
        peak_total = max((n for _, n in run.total_steps), default=0)
        lines.append(
            f"  {label}: peak per tenant {peaks}; peak total {peak_total}; "
            f"makespan {run.makespan:.1f} s; invalid PENDING outputs "
            f"{run.invalid_pending_outputs}"
        )
    if result.raised_at is not None:
        after = [n for t, n in result.total_steps if t >= result.raised_at]
        lines.append(
            f"  limit raised at {result.raised_at:.1f} s; peak total after it "
            f"{max(after, default=0)}"
        )
    lines.append(
        f"  makespan {result.makespan:.1f} s vs {result.ideal:.1f} s for an ideal scheduler "
        f"under the same limits ({result.makespan / result.ideal:.2f}x)"
    )
    lines.append("OK" if result.ok else f"FAIL: over a limit {result.over_total[:3]}")
    return "\n".join(lines)
