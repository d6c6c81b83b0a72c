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
    PlottingUnavailableError,
    RunnerRaceCounter,
    overlap_steps,
    peak_overlap,
    save_timeline,
)

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
    # map context + invoke + the limiter's acquire per branch, plus the map itself
    assert doc["durable_operations_per_branch"] >= 3.0


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
    counter = RunnerRaceCounter()
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
