"""What the demo runs: the scenario, its durable handlers, and the default for each SDK.

The scenario is the seed one: a durable execution maps ``items`` inputs with
``MapConfig(max_concurrency=..., limiter=...)``, and each branch's downstream work is one
``task_seconds`` durable operation (an invoke of a registered target, or a durable wait of its
own where the runner has no invoke registry). With ``executions > 1`` that many executions run
at once and share ONE named limiter, so the limit is global rather than per map.

:func:`default_scenario` picks what ``durable-semaphore demo`` runs with no options: whatever
shows what the limiter adds on the installed SDK, on the real clock, in well under a minute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration

from durable_semaphore.demo.local_runner import sdk_limits_one_map
from durable_semaphore.errors import InvalidArgumentError
from durable_semaphore.sdk import MapConfig

TARGET_FUNCTION = "demo-target"
#: The durable wait that is a branch's downstream work where the runner cannot invoke.
TASK_WAIT_NAME = "demo-task"
#: Branches in all (items x executions) of the default run, per clock. On the real clock every
#: wave of ``limit`` branches takes a real second, so 30 branches at a limit of 5 take about 6 s
#: with the limiter; the skipping clock makes 100 cheap.
DEFAULT_BRANCHES = {"real": 30, "skip": 100}
#: Executions sharing one limit by default where the SDK bounds one map itself (SDK >= 2): the
#: smallest run in which the bare SDK visibly exceeds the limit (3 x 5 = 15 in flight).
SHARED_EXECUTIONS = 3
CLOCKS = ("real", "skip")


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


def build_handlers(config: DemoConfig, limiter: Any, *, invoke: bool = True) -> tuple[Any, Any]:
    """The target and the mapping handler, built per run so they close over this config.

    With ``invoke=False`` (a runner without an invoke registry) a branch waits ``task_seconds``
    itself: a suspended durable wait is in flight in the same way a pending invoke is.
    """
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


@dataclass(frozen=True)
class DefaultScenario:
    """The sizes and clock of a run once the user's options are merged with the defaults."""

    items: int
    executions: int
    #: "real" or "skip": the clock the run will use.
    clock: str
    #: The user asked for the skip clock, which this testing library cannot do.
    skip_unavailable: bool = False


def default_scenario(
    *,
    sdk_version: str,
    can_skip_time: bool,
    items: int | None = None,
    executions: int | None = None,
    clock: str | None = None,
) -> DefaultScenario:
    """Fill in what the user left out, so the default run shows what the limiter adds.

    On SDK 1.x one map already exceeds ``max_concurrency`` without the limiter (it bounds
    threads), so one execution is enough. From SDK 2.0 the SDK bounds one map itself, and what
    the limiter adds is one limit shared across executions: three executions by default. The
    clock is the real one unless asked otherwise, because the skip clock counts each hand-off's
    real latency as durable time and so overstates the limiter's makespan.
    """
    if clock is not None and clock not in CLOCKS:
        raise InvalidArgumentError("clock", clock, f"must be one of {', '.join(CLOCKS)}")
    if executions is None:
        executions = SHARED_EXECUTIONS if sdk_limits_one_map(sdk_version) else 1
    wanted = clock or "real"
    used = wanted if can_skip_time else "real"
    if items is None:
        items = math.ceil(DEFAULT_BRANCHES[used] / max(executions, 1))
    return DefaultScenario(
        items=items, executions=executions, clock=used, skip_unavailable=used != wanted
    )
