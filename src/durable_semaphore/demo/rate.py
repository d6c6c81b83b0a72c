"""``durable-semaphore demo --scenario rate``: executions sharing a rate of starts.

Several durable executions map their items at once; every branch's work is one step. With
the rate limiter each branch books its start (``MapConfig(limiter=DynamoDBRateLimiter(...))``)
and waits for it; the bare SDK starts them all at once. The verdict is judged outside the
limiter: the booked starts from the execution histories against GCRA's bound, and the clock
inside each branch's work (when it really ran), printed as a timeline of starts per second.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution

from durable_semaphore.pacing import BOOK_OPERATION_NAME
from durable_semaphore.rate_limiter import DynamoDBRateLimiter
from durable_semaphore.sdk import MapConfig
from durable_semaphore.store import DynamoDBSemaphore
from durable_semaphore.store.rates import DynamoDBRateStore

__all__ = [
    "RateDemo",
    "RateResult",
    "format_rate",
    "most_in_window",
    "plain_result",
    "run_rate_compare",
]

WORK_STEP_NAME = "demo-work"


@dataclass(frozen=True)
class RateDemo:
    """What to run: ``executions`` x ``items`` branches sharing ``rate`` starts per ``per``
    seconds, ``burst`` at once."""

    executions: int = 3
    items: int = 10
    rate: float = 5.0
    per: float = 1.0
    burst: int = 5
    use_limiter: bool = True

    @property
    def bound(self) -> int:
        """Most starts GCRA allows in any window of ``per`` seconds: rate + burst."""
        return math.floor(self.per / (self.per / self.rate)) + self.burst


@dataclass
class RateResult:
    demo: RateDemo
    #: Seconds since the first start at which each branch really started (its work's clock).
    ran: list[float] = field(default_factory=list)
    #: Seconds since the first start of each booked start (empty without the limiter).
    booked: list[float] = field(default_factory=list)
    succeeded: bool = True

    @property
    def most_ran_in_window(self) -> int:
        return most_in_window(self.ran, self.demo.per)

    @property
    def most_booked_in_window(self) -> int:
        return most_in_window(self.booked, self.demo.per) if self.booked else 0

    @property
    def ok(self) -> bool:
        if not self.succeeded:
            return False
        if not self.demo.use_limiter:
            return True
        return len(self.booked) == len(self.ran) and self.most_booked_in_window <= self.demo.bound

    def per_second(self) -> list[int]:
        """Starts in each second since the first."""
        if not self.ran:
            return []
        counts = [0] * (int(max(self.ran)) + 1)
        for t in self.ran:
            counts[int(t)] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "executions": self.demo.executions,
            "items": self.demo.items,
            "rate": self.demo.rate,
            "per": self.demo.per,
            "burst": self.demo.burst,
            "limiter": self.demo.use_limiter,
            "bound": self.demo.bound,
            "most_booked_in_window": self.most_booked_in_window,
            "most_started_in_window": self.most_ran_in_window,
            "starts_per_second": self.per_second(),
            "ok": self.ok,
        }


def most_in_window(starts: list[float], window: float) -> int:
    """Most of ``starts`` in any closed window of ``window`` seconds (what GCRA bounds)."""
    ordered = sorted(starts)
    return max(
        (sum(1 for t in ordered[i:] if t <= s + window) for i, s in enumerate(ordered)), default=0
    )


def plain_result(value: Any) -> Any:
    """A step result as the SDK stores it, its typed envelope ({"t": ..., "v": ...}) removed."""
    if isinstance(value, dict) and set(value) == {"t", "v"}:
        return plain_result(value["v"])
    if isinstance(value, dict):
        return {k: plain_result(v) for k, v in value.items()}
    return value


def run_rate(demo: RateDemo, semaphore: DynamoDBSemaphore) -> RateResult:
    """One run (with or without the limiter) on the real clock."""
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    store = DynamoDBRateStore(table_name=semaphore.table_name, client=semaphore.client)
    limiter = (
        DynamoDBRateLimiter(
            f"demo-{uuid.uuid4().hex[:8]}", demo.rate, demo.per, demo.burst, store=store
        )
        if demo.use_limiter
        else None
    )
    ran: dict[tuple[int, int], float] = {}
    lock = threading.Lock()

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        run = int(event["run"])

        def work(x: int) -> int:
            with lock:
                ran.setdefault((run, x), time.time())
            return x

        def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
            return ctx.step(lambda _: work(x), name=WORK_STEP_NAME)

        config: MapConfig[int] = MapConfig(max_concurrency=demo.items, limiter=limiter)
        return context.map(list(range(demo.items)), item, config=config).get_results()

    with DurableFunctionTestRunner(handler=handler, skip_time=False) as runner:
        arns = [
            runner.run_async(
                input=json.dumps({"run": k}), execution_timeout=600, execution_name=f"rate-{k}"
            )
            for k in range(demo.executions)
        ]
        results = [runner.wait_for_result(arn, timeout=600) for arn in arns]
    booked = [
        float(plain_result(json.loads(op.result))["start"])
        for res in results
        for op in res.get_all_operations()
        if type(op).__name__ == "StepOperation" and op.name == BOOK_OPERATION_NAME
    ]
    t0 = min(ran.values(), default=0.0)
    return RateResult(
        demo,
        ran=sorted(t - t0 for t in ran.values()),
        booked=sorted(b - t0 for b in booked),
        succeeded=all(res.status.name == "SUCCEEDED" for res in results),
    )


def run_rate_compare(
    demo: RateDemo, semaphore: DynamoDBSemaphore, *, compare: bool
) -> tuple[RateResult | None, RateResult]:
    """The bare SDK first (when comparing), then the limiter."""
    bare = None
    if compare:
        bare = run_rate(RateDemo(**{**demo.__dict__, "use_limiter": False}), semaphore)
    return bare, run_rate(demo, semaphore)


def format_rate(result: RateResult, bare: RateResult | None) -> str:
    """The timeline of starts per second and the verdict, as text."""
    demo = result.demo
    lines = [
        f"rate demo: {demo.executions} executions x {demo.items} items sharing "
        f"{demo.rate:g} starts per {demo.per:g} s, burst {demo.burst} (bound: {demo.bound} "
        f"in any {demo.per:g} s)"
    ]
    for label, run in (("bare SDK", bare), ("rate limiter", result)):
        if run is None:
            continue
        lines.append(f"  {label}: most starts in any {demo.per:g} s: {run.most_ran_in_window}")
        for second, count in enumerate(run.per_second()):
            lines.append(f"    {second:3d} s  {'#' * count} {count}")
    if result.booked:
        late = max(r - b for r, b in zip(result.ran, result.booked, strict=False))
        lines.append(
            f"  booked starts: most in any {demo.per:g} s {result.most_booked_in_window} "
            f"(bound {demo.bound}); started up to {late:.2f} s after the booked instant (the "
            "local runner resumes durable waits late), never before it"
        )
    lines.append("OK" if result.ok else "FAIL: the booked starts exceed the bound")
    return "\n".join(lines)
