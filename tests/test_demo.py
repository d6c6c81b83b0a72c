"""The demo at CI size: the limit holds, no lease is left, and the observer catches a violation.

The verdict comes from the execution histories (overlap of InvokeOperation intervals), not from
the limiter, so the ``--no-limiter`` control proves the observer can see an overshoot.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from durable_semaphore import cli
from durable_semaphore.demo import (
    RUNNER_LOGGER,
    RUNNER_RACE_MESSAGE,
    DemoResult,
    InvalidPendingCounter,
    PlottingUnavailableError,
    format_comparison,
    format_summary,
    limiter_adds,
    overlap_steps,
    peak_overlap,
    save_timeline,
)
from durable_semaphore.demo_runner import LateTimerFilter, detect

ITEMS = 12
LIMIT = 3


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["demo", "--json", "--no-png", *argv])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


def test_observer_counts_overlap_not_touching_intervals() -> None:
    spans = [(0.0, 1.0), (1.0, 2.0), (0.5, 1.5), (0.5, 0.7)]
    assert peak_overlap(spans) == 3
    assert overlap_steps(spans) == [(0.0, 1), (0.5, 3), (0.7, 2), (1.0, 2), (1.5, 1), (2.0, 0)]
    assert peak_overlap([]) == 0


@pytest.mark.parametrize("executions", [1, 3])
def test_demo_json_keeps_the_limit_and_leaves_no_lease(
    ddb_endpoint: str, table_name: str, executions: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(
        capsys,
        "--items",
        str(ITEMS),
        "--max-concurrency",
        str(LIMIT),
        "--executions",
        str(executions),
        "--endpoint-url",
        ddb_endpoint,
        "--table",
        table_name,
    )
    assert code == cli.EXIT_OK, doc
    assert isinstance(doc["peak_in_flight"], int)
    assert 1 <= doc["peak_in_flight"] <= doc["limit"] == LIMIT
    assert doc["leases_left"] == 0
    assert doc["items"] == ITEMS and doc["executions"] == executions
    assert doc["succeeded"] is True and doc["ok"] is True
    assert isinstance(doc["makespan_ratio"], float) and doc["makespan_ratio"] >= 1.0
    # Every branch took a lease and gave it back: at least one acquire and one release each.
    assert doc["dynamodb_requests_by_operation"]["TransactWriteItems"] >= 2 * ITEMS * executions
    # map context + invoke per branch, plus the map itself; the limiter adds at most one
    # callback per waiting branch (nothing when the slot was free)
    assert 2.0 <= doc["durable_operations_per_branch"] <= 3.2
    assert doc["invalid_pending_outputs"] == 0


def test_control_without_limiter_the_observer_sees_the_overshoot(
    ddb_endpoint: str, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three executions each bounded only by their own map exceed the shared limit."""
    code, doc = run_json(
        capsys,
        "--items",
        str(ITEMS),
        "--max-concurrency",
        str(LIMIT),
        "--executions",
        "3",
        "--no-limiter",
        "--endpoint-url",
        ddb_endpoint,
        "--table",
        table_name,
    )
    assert doc["peak_in_flight"] > LIMIT
    assert doc["ok"] is False
    assert code == cli.EXIT_NO
    assert doc["dynamodb_requests"] == 0  # the bare SDK never touched the table


def test_demo_on_embedded_ministack_prints_summary_and_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "timeline.png"
    code = cli.main(
        ["demo", "--items", "6", "--max-concurrency", "2", "--executions", "2", "--png", str(png)]
    )
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    assert "peak in flight      " in out and "(limit 2): OK" in out
    assert "backend             embedded ministack" in out
    assert "leases left         0" in out
    # matplotlib comes with the dev extra (through demo), so the picture must exist.
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runner_race_is_counted_and_kept_off_the_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The runner's own re-invocation warning becomes a count; other warnings still show."""
    logger = logging.getLogger(RUNNER_LOGGER)
    counter = InvalidPendingCounter()
    logger.addFilter(counter)
    try:
        with caplog.at_level(logging.WARNING, logger=RUNNER_LOGGER):
            logger.warning("[arn] Lambda output validation failure: %s.", RUNNER_RACE_MESSAGE)
            logger.warning("[arn] something else went wrong")
    finally:
        logger.removeFilter(counter)
    assert counter.count == 1
    assert [r.getMessage() for r in caplog.records] == ["[arn] something else went wrong"]


def test_missing_matplotlib_gives_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = DemoResult(
        items=1,
        executions=1,
        limit=1,
        limiter=True,
        peak_in_flight=1,
        makespan_seconds=1.0,
        ideal_seconds=1.0,
        makespan_ratio=1.0,
        dynamodb_requests=0,
        dynamodb_requests_per_branch=0.0,
        dynamodb_requests_by_operation={},
        durable_operations=3,
        durable_operations_per_branch=3.0,
        leases_left=0,
        wall_seconds=0.1,
        succeeded=True,
    )
    with pytest.raises(PlottingUnavailableError, match=r"durable-semaphore\[demo\]"):
        save_timeline(result, str(tmp_path / "x.png"))


def test_compare_runs_the_bare_sdk_then_the_limiter_and_reports_both(
    ddb_endpoint: str, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On SDK >= 2 the SDK bounds each map alone; what the limiter adds is the shared limit,
    so the comparison that can fail uses several executions: bare > limit, limiter <= limit."""
    code, doc = run_json(
        capsys,
        "--compare",
        "--items",
        "6",
        "--max-concurrency",
        str(LIMIT),
        "--executions",
        "2",
        "--endpoint-url",
        ddb_endpoint,
        "--table",
        table_name,
    )
    bare = doc["bare"]
    assert code == cli.EXIT_OK, doc
    assert bare["limiter"] is False and doc["limiter"] is True
    assert bare["peak_in_flight"] > LIMIT  # the control: two maps of 3 each, together
    assert 1 <= doc["peak_in_flight"] <= LIMIT
    assert bare["dynamodb_requests"] == 0 and doc["dynamodb_requests"] > 0
    assert doc["leases_left"] == 0 and doc["waiters_left"] == 0
    for run in (bare, doc):
        assert {"makespan_seconds", "dynamodb_requests_per_branch", "sdk_version"} <= set(run)
    assert doc["sdk_limits_one_map"] is True
    assert doc["clock"] == "skip" and doc["downstream"] == "invoke"
    assert "2 executions can have 6 in flight together" in doc["limiter_adds"]


def test_compare_and_no_limiter_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--compare", "--no-limiter"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _result(sdk: str, *, peak: int, limiter: bool = True, executions: int = 1) -> DemoResult:
    return DemoResult(
        items=30,
        executions=executions,
        limit=5,
        limiter=limiter,
        peak_in_flight=peak,
        makespan_seconds=12.0,
        ideal_seconds=6.0,
        makespan_ratio=2.0,
        dynamodb_requests=60 if limiter else 0,
        dynamodb_requests_per_branch=2.0 if limiter else 0.0,
        dynamodb_requests_by_operation={},
        durable_operations=90,
        durable_operations_per_branch=3.0,
        leases_left=0,
        wall_seconds=1.0,
        succeeded=True,
        sdk_version=sdk,
        testing_version="1.2.1" if sdk.startswith(("1.", "2.0")) else "1.4.0",
        clock="real" if sdk.startswith(("1.", "2.0")) else "skip",
        downstream="wait" if sdk.startswith(("1.", "2.0")) else "invoke",
    )


def test_the_summary_says_what_the_limiter_adds_on_each_sdk_line() -> None:
    """SDK 1.x: the bare peak vs the limiter's. SDK >= 2.0: the shared and overlapping limit."""
    old_bare, old = _result("1.7.0", peak=30, limiter=False), _result("1.7.0", peak=5)
    text = limiter_adds(old, old_bare)
    assert "bounds threads, not operations" in text and "(measured: 30)" in text
    assert "With the limiter the peak was 5 (limit 5)" in text
    one = limiter_adds(_result("2.0.1", peak=5))
    assert "keeps one map to max_concurrency=5" in one
    assert "across executions" in one and "overlapping invocations" in one
    shared = limiter_adds(_result("3.0.0", peak=5, executions=3))
    assert "3 executions can have 15 in flight together" in shared

    summary = format_summary(old)
    assert "real clock: this testing library cannot skip durable time" in summary
    assert "each branch waits 1 s itself" in summary
    assert "What the limiter adds: on SDK 1.7.0" in summary
    table = format_comparison(old_bare, old)
    assert "peak in flight      30            5" in table
    assert "DynamoDB req/branch 0.00          2.00" in table


def test_runner_features_come_from_signatures() -> None:
    """Feature checks, not version strings: a runner like testing 1.2.1 gets the workaround."""

    class OldRunner:
        def __init__(self, handler: Any, poll_interval: float = 1.0) -> None: ...

        def run_async(self, input: str | None = None, timeout: int = 900) -> str: ...

    class NewRunner:
        def __init__(self, handler: Any, skip_time: bool = True) -> None: ...

        def run_async(self, input: str | None = None, execution_timeout: int = 900) -> str: ...

        def register_durable_function(self, name: str, handler: Any) -> None: ...

    old, new = detect(OldRunner), detect(NewRunner)
    assert (old.skip_time, old.invoke_registry, old.timeout_arg) == (False, False, "timeout")
    assert old.needs_timer_workaround is True
    assert (new.skip_time, new.invoke_registry, new.timeout_arg) == (
        True,
        True,
        "execution_timeout",
    )
    assert new.needs_timer_workaround is False
    assert detect().skip_time is True  # this suite runs on testing 1.4


def test_late_timer_filter_drops_only_the_already_completed_report() -> None:
    late = LateTimerFilter()

    def record(message: str, error: Exception | None) -> logging.LogRecord:
        info = (type(error), error, None) if error is not None else None
        return logging.LogRecord(RUNNER_LOGGER, logging.ERROR, "x", 1, message, None, info)

    done = RuntimeError("transition a Wait Operation[x] to SUCCEEDED when it's not STARTED")
    assert not late.filter(record("[arn] Error processing wait succeeded.", done))
    assert late.filter(record("[arn] Error processing wait succeeded.", RuntimeError("boom")))
    assert late.filter(record("[arn] something else", done))


def test_busy_while_waiting_averages_the_slots_in_use_over_the_waiting_time() -> None:
    from durable_semaphore.demo import busy_while_waiting

    # Two slots; one task runs 0-1 s, another 0-2 s; someone waits 0-2 s: 1.5 of 2 slots.
    assert busy_while_waiting([(0, 1), (0, 2)], [(0, 2)], 2) == pytest.approx(0.75)
    # Time when nobody waits does not count: an idle stretch 2-10 s changes nothing.
    assert busy_while_waiting([(0, 1), (0, 2), (9, 10)], [(0, 2)], 2) == pytest.approx(0.75)
    # Both slots busy for the whole wait: 100 %; nobody waiting: no figure at all.
    assert busy_while_waiting([(0, 4), (0, 4)], [(1, 3), (2, 4)], 2) == pytest.approx(1.0)
    assert busy_while_waiting([(0, 4)], [], 2) is None
