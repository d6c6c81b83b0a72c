"""The measured run, as the summary, ``--json`` and the timeline need it.

Plain data: :mod:`.running` fills it from the observer, :mod:`.report` and :mod:`.plot` read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durable_semaphore.demo.local_runner import sdk_limits_one_map
from durable_semaphore.demo.observer import jain_fairness

#: Progress labels of the two runs of a comparison.
BARE_RUN = "bare SDK"
LIMITED_RUN = "with the limiter"


@dataclass
class Progress:
    """A snapshot for the progress line, read from the live execution histories."""

    done: int
    in_flight: int
    waiting: int
    total: int
    #: Which run this is ("bare SDK" or "with the limiter"): under a comparison both run.
    run: str = ""


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
    #: Branches whose history holds a wait of the limiter (a callback or a poll): the summary
    #: says how waiters were woken only when there were any.
    branches_waited: int = 0
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
            "branches_waited": self.branches_waited,
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
        return sdk_limits_one_map(self.sdk_version)
