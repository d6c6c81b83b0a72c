"""The demo's text: the progress line, the summary, the comparison and what the limiter adds.

Every line reports something measured in this run; a line whose event did not happen (nobody
waited, no invalid output, no runner workaround) is left out rather than printed as zero, so
the summary never suggests something took place that did not.
"""

from __future__ import annotations

import textwrap

from durable_semaphore.demo.result import DemoResult, Progress

#: Where the summary sends a reader who sees invalid PENDING outputs (a section of docs/demo.md).
PENDING_DOCS = "docs/demo.md#invalid-pending-outputs"
#: Where the two clocks are compared with numbers.
CLOCK_DOCS = "docs/demo.md#the-clock"
_LABEL = 20  # width of the summary's left column


def format_progress(progress: Progress) -> str:
    """One progress line; it names the run, since a comparison runs two in a row."""
    run = f"{progress.run}: " if progress.run else ""
    return (
        f"{run}items done {progress.done}/{progress.total}  in flight {progress.in_flight}  "
        f"waiting {progress.waiting}"
    )


def clock_note(result: DemoResult) -> str:
    """Which clock the run used, in two words (the comparison's header; the summary's clock
    line says what it means)."""
    return "skip clock" if result.clock == "skip" else "real clock"


def clock_meaning(result: DemoResult) -> str:
    """What the clock means for the makespan: the summary's ``clock`` line."""
    if result.clock == "skip":
        return (
            "skipped durable waits: fast, but each hand-off's real latency counts as durable "
            "time, so the limiter's makespan is overstated; --clock real shows the makespan a "
            f"deployment would see ({CLOCK_DOCS})"
        )
    why = (
        "this testing library cannot skip durable time"
        if result.downstream == "wait"
        else "durable waits take real seconds"
    )
    return f"real ({why}): the makespan is what a deployment would see"


def _row(label: str, text: str) -> str:
    return f"  {label:<{_LABEL}}{text}"


def _core_lines(result: DemoResult) -> list[str]:
    """The lines every run has: peak, makespan, requests, operations, leftovers, time."""
    verdict = "OK" if result.peak_in_flight <= result.limit else "EXCEEDED"
    ops = ", ".join(f"{k} {v}" for k, v in result.dynamodb_requests_by_operation.items())
    return [
        _row("peak in flight", f"{result.peak_in_flight} (limit {result.limit}): {verdict}"),
        _row(
            "makespan",
            f"{result.makespan_seconds:.1f} s durable time vs ideal "
            f"{result.ideal_seconds:.0f} s (ratio {result.makespan_ratio:.2f})",
        ),
        _row(
            "DynamoDB requests",
            f"{result.dynamodb_requests_per_branch:.2f} per branch "
            f"({result.dynamodb_requests} total{': ' + ops if ops else ''})",
        ),
        _row(
            "durable operations",
            f"{result.durable_operations_per_branch:.2f} per branch "
            f"({result.durable_operations} total)",
        ),
        _row("leases left", f"{result.leases_left}, waiters left {result.waiters_left}"),
        _row("wall time", f"{result.wall_seconds:.1f} s"),
        *_wrap_row("clock", clock_meaning(result)),
    ]


def _waiting_lines(result: DemoResult) -> list[str]:
    """Fairness across executions, and how waiters fared: only for what happened."""
    lines: list[str] = []
    if result.executions > 1 and result.executions_detail:
        finished = [d["finished_seconds"] for d in result.executions_detail]
        lines.append(
            _row(
                "fairness",
                f"Jain {result.jain_fairness:.3f} over finishing times "
                f"({min(finished):.1f} to {max(finished):.1f} s)",
            )
        )
    if result.limiter and result.branches_waited and result.busy_while_waiting is not None:
        lines += _wrap_row(
            "while anyone waited",
            f"{result.busy_while_waiting:.0%} of the limit was in use (time-averaged); "
            f"{result.branches_waited} branch(es) waited, woken by {result.wake_mode}",
        )
    return lines


def _environment_lines(result: DemoResult) -> list[str]:
    """Settings, invalid outputs, the runner workaround, the SDK: what the numbers depend on."""
    lines: list[str] = []
    if result.limiter:
        knobs = ", ".join(f"{k}={v}" for k, v in result.settings.items())
        lines.append(_row("settings", knobs or "the library defaults"))
    if result.invalid_pending_outputs:
        lines += _wrap_row(
            "invalid PENDING",
            f"{result.invalid_pending_outputs} invocation(s) returned PENDING with nothing "
            'pending (the runner\'s "Cannot return PENDING status with no pending operations"); '
            f"the service fails an execution after 3 in a row. See {PENDING_DOCS}",
        )
    if any(result.runner_workaround.values()):
        steps = result.runner_workaround
        lines += _wrap_row(
            "runner workaround",
            f"testing {result.testing_version} timers: "
            f"{steps.get('timers_completed', 0)} completed at a checkpoint, "
            f"{steps.get('tokens_carried', 0)} tokens carried over, "
            f"{steps.get('invocations_coalesced', 0)} invocations coalesced "
            "(docs/demo.md#the-testing-121-workaround)",
        )
    if result.sdk_version:
        note = ""
        if result.downstream == "wait":
            note = f"; each branch waits {result.task_seconds} s itself (no invoke targets)"
        lines.append(
            _row("SDK", f"{result.sdk_version}, testing library {result.testing_version}{note}")
        )
    return lines


def format_summary(result: DemoResult, *, adds: bool = True) -> str:
    """The human summary of one run; ``adds=False`` leaves out what the limiter adds (a
    comparison prints it after the side-by-side table instead)."""
    scope = (
        f"shared by {result.executions} executions"
        if result.executions > 1
        else "per map operation"
    )
    limiter = f"DynamoDB limiter, {scope}" if result.limiter else "no limiter (bare SDK)"
    lines = [
        f"{result.items} items x {result.executions} execution(s), limit {result.limit} "
        f"({limiter})",
        *_core_lines(result),
        *_waiting_lines(result),
        *_environment_lines(result),
    ]
    if not result.succeeded:
        lines.append("  at least one execution did not succeed")
    if adds:
        lines.append(format_adds(result))
    return "\n".join(lines)


def _wrap_row(label: str, text: str) -> list[str]:
    """A summary row whose text wraps under its own column."""
    return textwrap.wrap(
        text,
        width=98,
        initial_indent=f"  {label:<{_LABEL}}",
        subsequent_indent=" " * (_LABEL + 2),
        break_on_hyphens=False,  # keep docs/demo.md#anchors and --options whole
    )


def limiter_adds(result: DemoResult, bare: DemoResult | None = None) -> str:
    """What the limiter adds on the SDK this run used, in plain words.

    On SDK 1.x ``max_concurrency`` sizes a thread pool, so every branch that suspends is in
    flight: the limiter is what bounds one map. From SDK 2.0 the SDK bounds one map within one
    invocation itself; the limiter adds a limit shared across executions and across
    overlapping invocations of one execution. ``bare`` (from a comparison) adds the measured
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
            text += " Run it without --no-limiter to see both."
        return text
    if k == 1:
        return (
            f"on {sdk} the SDK itself keeps one map to max_concurrency={limit} within one "
            f"invocation, so one execution peaks at {limit} or less with or without the limiter"
            f"{measured}. What the limiter adds on this SDK: one limit shared across "
            "executions, and across overlapping invocations of one execution, which the SDK "
            "does not see. Try --executions 3 (the default here)."
        )
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


def _comparison_rows(bare: DemoResult, limited: DemoResult) -> list[tuple[str, str, str, str]]:
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
    if bare.invalid_pending_outputs or limited.invalid_pending_outputs:
        rows.append(
            (
                "invalid PENDING",
                str(bare.invalid_pending_outputs),
                str(limited.invalid_pending_outputs),
                f"({PENDING_DOCS})",
            )
        )
    return rows


def format_comparison(bare: DemoResult, limited: DemoResult) -> str:
    """The bare SDK and the limiter side by side (:func:`format_adds` says what the difference
    means)."""
    lines = [
        f"compared on the same scenario ({limited.items} items x {limited.executions} "
        f"execution(s), max_concurrency {limited.limit}, {clock_note(limited)}):",
        f"  {'':<20}{'bare SDK':<14}DynamoDB limiter",
    ]
    lines += [
        f"  {name:<20}{a:<14}{b:<18}{note}".rstrip()
        for name, a, b, note in _comparison_rows(bare, limited)
    ]
    if not bare.succeeded:
        lines.append("  the bare run did not succeed")
    return "\n".join(lines)


def format_adds(result: DemoResult, bare: DemoResult | None = None) -> str:
    """The closing paragraph: :func:`limiter_adds`, wrapped for the terminal."""
    return "\n".join(
        textwrap.wrap(
            "What the limiter adds: " + limiter_adds(result, bare),
            width=98,
            initial_indent="  ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    )
