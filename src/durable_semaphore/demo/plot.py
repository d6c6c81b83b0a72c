"""The PNG timeline: in-flight count over time, bare SDK against the limiter, and the limit.

matplotlib is part of the ``demo`` extra and imported here only; without it the demo says so
and carries on (:class:`PlottingUnavailableError`).
"""

from __future__ import annotations

from typing import Any

from durable_semaphore.demo import INSTALL_HINT
from durable_semaphore.demo.result import DemoResult
from durable_semaphore.errors import PlottingUnavailableError

_LIMITED_COLOR = "tab:blue"
_BARE_COLOR = "tab:orange"
_LIMIT_COLOR = "tab:red"
#: Lanes avoid the top panel's colours, so no execution looks like "bare" or "limited".
_LANE_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlottingUnavailableError(
            f"matplotlib is not installed, so no timeline was drawn; {INSTALL_HINT} "
            "(or pass --no-png)"
        ) from exc
    return plt


def _steps(timeline: list[tuple[float, int]]) -> tuple[list[float], list[int]]:
    """A step function's points, starting from 0 in flight at time 0."""
    return [0.0] + [t for t, _ in timeline], [0] + [c for _, c in timeline]


def _draw_counts(ax: Any, result: DemoResult, bare: DemoResult | None) -> None:
    """The top panel: the limiter's count, the bare SDK's (if compared), the limit."""
    highest = max(result.peak_in_flight, result.limit)
    if bare is not None:
        ax.step(
            *_steps(bare.timeline),
            where="post",
            color=_BARE_COLOR,
            label=f"bare SDK: peak {bare.peak_in_flight}",
        )
        highest = max(highest, bare.peak_in_flight)
    who = "with the limiter" if result.limiter else "bare SDK"
    ax.step(
        *_steps(result.timeline),
        where="post",
        color=_LIMITED_COLOR if result.limiter else _BARE_COLOR,
        linewidth=2,
        label=f"{who}: peak {result.peak_in_flight}",
    )
    ax.axhline(result.limit, color=_LIMIT_COLOR, linestyle="--", label=f"limit {result.limit}")
    ax.set_ylabel("in flight" if result.downstream == "wait" else "in-flight invokes")
    ax.set_ylim(0, highest + 1)
    ax.legend(loc="upper right", fontsize="small")


def _title(result: DemoResult) -> str:
    if result.executions > 1:
        scope = f"{result.executions} executions x {result.items} items sharing a limit of"
    else:
        scope = f"{result.items} items, max_concurrency"
    clock = "skip clock" if result.clock == "skip" else "real clock"
    return f"{scope} {result.limit} (SDK {result.sdk_version or '?'}, {clock})"


def _draw_lanes(ax: Any, result: DemoResult) -> None:
    """The second panel: the limiter's run, one lane per execution sharing the limit."""
    for k, lane in enumerate(result.lanes):
        color = _LANE_COLORS[k % len(_LANE_COLORS)]
        ax.step(*_steps(lane), where="post", color=color, label=f"execution {k + 1}")
    ax.set_ylabel("with the limiter,\nper execution")
    ax.set_ylim(0, max(result.peak_in_flight, result.limit) + 1)
    ax.legend(loc="upper right", fontsize="small", ncol=min(4, result.executions))


def save_timeline(result: DemoResult, path: str, bare: DemoResult | None = None) -> str:
    """Draw the in-flight count over time with the limit as a line, and a lane per execution
    when several share the limit; save a PNG at ``path`` and return it. ``bare`` (a
    comparison) adds the bare SDK's count to the top panel, so the difference shows."""
    plt = _pyplot()
    shared = result.executions > 1 and result.limiter
    rows = 2 if shared else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 * rows), sharex=True, squeeze=False, dpi=80)
    _draw_counts(axes[0][0], result, bare)
    axes[0][0].set_title(_title(result), fontsize="medium")
    if shared:
        _draw_lanes(axes[1][0], result)
    first = "invoke" if result.downstream == "invoke" else "task"
    unit = "durable seconds" if result.clock == "skip" else "seconds"
    axes[-1][0].set_xlabel(f"{unit} since the first {first} started")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_tenants_timeline(result: Any, path: str, bare: Any = None) -> str:
    """``demo --scenario tenants``: one line per tenant and the total, the per-tenant limit
    and the total's limit in force (a step where it was raised); the bare SDK's total, when
    compared, in the top panel. ``result`` is a :class:`~.tenants.TenantsResult`."""
    from durable_semaphore.demo.observer import overlap_steps

    plt = _pyplot()
    fig, (top, lanes) = plt.subplots(2, 1, figsize=(8, 6.4), sharex=True, dpi=80)
    demo = result.demo
    end = max(result.makespan, bare.makespan if bare is not None else 0.0)
    if bare is not None:
        top.step(*_steps(bare.total_steps), where="post", color=_BARE_COLOR, label="bare SDK")
    top.step(
        *_steps(result.total_steps),
        where="post",
        color=_LIMITED_COLOR,
        linewidth=2,
        label="total, with the limiters",
    )
    changes = [0.0] + ([result.raised_at] if result.raised_at is not None else []) + [end]
    top.step(
        changes,
        [result.limit_at(t) for t in changes],
        where="post",
        color=_LIMIT_COLOR,
        linestyle="--",
        label="total limit in force",
    )
    top.set_ylabel("in flight, all tenants")
    top.legend(loc="upper right", fontsize="small")
    top.set_title(
        f"{demo.executions} executions; at most {demo.per_tenant} per tenant and "
        f"{demo.total} in total" + (f", raised to {demo.raised_to}" if result.raised_at else ""),
        fontsize="medium",
    )
    by: dict[str, list[tuple[float, float]]] = {}
    for start, stop, tenant in result.spans:
        by.setdefault(tenant, []).append((start, stop))
    for k, (tenant, spans) in enumerate(sorted(by.items())):
        color = _LANE_COLORS[k % len(_LANE_COLORS)]
        lanes.step(*_steps(overlap_steps(spans)), where="post", color=color, label=tenant)
    lanes.axhline(demo.per_tenant, color=_LIMIT_COLOR, linestyle="--", label="per-tenant limit")
    lanes.set_ylim(0, demo.per_tenant + 1)
    lanes.set_ylabel("in flight, per tenant")
    lanes.legend(loc="upper right", fontsize="small", ncol=min(5, len(by) + 1))
    lanes.set_xlabel("seconds since the first task started")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
