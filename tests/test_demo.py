"""The demo at CI size: the limit holds, no lease is left, and the observer catches a violation.

The verdict comes from the execution histories (overlap of InvokeOperation intervals), not from
the limiter, so the ``--no-limiter`` control proves the observer can see an overshoot. Runs here
use the skip clock (``--clock skip``) to stay short; the default, the real clock, runs in the
Ctrl-C tests, which run the CLI as a user does, in a process of its own.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from durable_semaphore import DynamoDBSemaphore, cli
from durable_semaphore.demo.command import ProgressLine, local_dynamodb_lines
from durable_semaphore.demo.local_runner import LateTimerFilter, detect
from durable_semaphore.demo.observer import busy_while_waiting, overlap_steps, peak_overlap
from durable_semaphore.demo.plot import save_timeline
from durable_semaphore.demo.quiet import (
    RUNNER_LOGGER,
    RUNNER_RACE_MESSAGE,
    InvalidPendingCounter,
)
from durable_semaphore.demo.report import (
    PENDING_DOCS,
    format_comparison,
    format_progress,
    format_summary,
    limiter_adds,
)
from durable_semaphore.demo.result import DemoResult, Progress
from durable_semaphore.demo.scenario import default_scenario
from durable_semaphore.errors import PlottingUnavailableError
from durable_semaphore.store import default_client_config

ROOT = Path(__file__).resolve().parent.parent
ITEMS = 12
LIMIT = 3


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["demo", "--json", "--no-png", "--clock", "skip", *argv])
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
        "--limiter-only",
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
    assert "bare" not in doc  # --limiter-only: one run
    assert isinstance(doc["peak_in_flight"], int)
    assert 1 <= doc["peak_in_flight"] <= doc["limit"] == LIMIT
    assert doc["leases_left"] == 0
    assert doc["items"] == ITEMS and doc["executions"] == executions
    assert doc["succeeded"] is True and doc["ok"] is True
    assert isinstance(doc["makespan_ratio"], float) and doc["makespan_ratio"] >= 1.0
    # Every branch took a lease and gave it back: at least one acquire and one release each,
    # single-item writes when uncontended, a transaction for a hand-off.
    writes = doc["dynamodb_requests_by_operation"]
    assert (
        writes.get("UpdateItem", 0) + writes.get("TransactWriteItems", 0) >= 2 * ITEMS * executions
    )
    # map context + invoke per branch, plus the map itself; the limiter adds at most one
    # callback per waiting branch (nothing when the slot was free)
    assert 2.0 <= doc["durable_operations_per_branch"] <= 3.2
    assert doc["invalid_pending_outputs"] == 0
    assert doc["clock"] == "skip"
    if executions == 1:  # SDK 3 bounds one map itself: nobody waits for the per-map limiter
        assert doc["branches_waited"] == 0 and doc["busy_while_waiting"] is None


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


def test_demo_on_embedded_ministack_compares_by_default_and_draws_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No mode option: the bare SDK, then the limiter; progress names each run."""
    png = tmp_path / "timeline.png"
    code = cli.main(
        [
            "demo",
            "--items",
            "6",
            "--max-concurrency",
            "2",
            "--executions",
            "2",
            "--clock",
            "skip",
            "--png",
            str(png),
        ]
    )
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert code == cli.EXIT_OK, out
    assert "peak in flight      " in out and "(limit 2): OK" in out
    assert "backend             embedded ministack" in out
    assert "leases left         0" in out
    assert "bare SDK      DynamoDB limiter" in out  # the comparison table
    assert "skipped durable waits" in out and "--clock real" in out
    assert "demo: 2 executions x 6 items sharing one limit of 2, skip clock" in err
    assert "bare SDK: items done" in err and "with the limiter: items done" in err
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


def test_the_pending_pointer_leads_to_a_section_of_the_demo_docs() -> None:
    """The summary's pointer for invalid PENDING outputs names a heading that exists, and that
    section quotes the runner's message, so a reader who greps for it lands there too."""
    page, anchor = PENDING_DOCS.split("#")
    text = (ROOT / page).read_text()
    headings = {
        "-".join(
            "".join(c for c in line.lstrip("#").strip().lower() if c.isalnum() or c in " -").split()
        ): line
        for line in text.splitlines()
        if line.startswith("#")
    }
    assert anchor in headings
    section = text.split(headings[anchor], 1)[1].split("\n#", 1)[0]
    assert RUNNER_RACE_MESSAGE in section
    summary = " ".join(
        format_summary(_result("3.0.0", peak=5, executions=3, invalid_pending=2)).split()
    )
    assert "2 invocation(s) returned PENDING" in summary and PENDING_DOCS in summary


def test_missing_matplotlib_gives_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlottingUnavailableError, match=r"durable-semaphore\[demo\]"):
        save_timeline(_result("3.0.0", peak=1), str(tmp_path / "x.png"))


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


def test_mode_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    for pair in (("--compare", "--no-limiter"), ("--limiter-only", "--no-limiter")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", *pair])
        assert exit_info.value.code == 2
        assert "not allowed with argument" in capsys.readouterr().err


def test_the_default_scenario_shows_what_the_limiter_adds_on_each_sdk() -> None:
    """SDK >= 2 bounds one map itself: three executions share the limit. SDK 1.x: one map.
    The real clock by default, 30 branches in all; the user's options win."""
    three = default_scenario(sdk_version="3.0.0", can_skip_time=True)
    assert (three.executions, three.items, three.clock) == (3, 10, "real")
    old = default_scenario(sdk_version="1.7.0", can_skip_time=False)
    assert (old.executions, old.items, old.clock, old.skip_unavailable) == (1, 30, "real", False)
    skip = default_scenario(sdk_version="3.0.0", can_skip_time=True, clock="skip")
    assert (skip.executions, skip.items, skip.clock) == (3, 34, "skip")
    asked = default_scenario(sdk_version="2.0.1", can_skip_time=False, clock="skip")
    assert asked.clock == "real" and asked.skip_unavailable is True
    mine = default_scenario(sdk_version="3.0.0", can_skip_time=True, items=7, executions=1)
    assert (mine.executions, mine.items) == (1, 7)


def _result(
    sdk: str,
    *,
    peak: int,
    limiter: bool = True,
    executions: int = 1,
    invalid_pending: int = 0,
    waited: int = 0,
) -> DemoResult:
    old = sdk.startswith(("1.", "2.0"))
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
        invalid_pending_outputs=invalid_pending,
        busy_while_waiting=0.9 if waited else None,
        branches_waited=waited,
        wake_mode="polling" if limiter else "none",
        sdk_version=sdk,
        testing_version="1.2.1" if old else "1.4.0",
        clock="real" if old else "skip",
        downstream="wait" if old else "invoke",
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

    summary = " ".join(format_summary(old).split())  # wrapped lines, read as one
    assert "real (this testing library cannot skip durable time)" in summary
    assert "the makespan is what a deployment" in summary
    assert "each branch waits 1 s itself" in summary
    assert "What the limiter adds: on SDK 1.7.0" in summary
    table = format_comparison(old_bare, old)
    assert "peak in flight      30            5" in table
    assert "DynamoDB req/branch 0.00          2.00" in table
    assert "invalid PENDING" not in table  # none happened


def test_the_summary_has_no_line_for_what_did_not_happen() -> None:
    """Nobody waited: no waiter line. Somebody did: how many, and how they were woken."""
    quiet = " ".join(format_summary(_result("3.0.0", peak=5, executions=3)).split())
    assert "waited" not in quiet.replace("while anyone waited", "") and "woken" not in quiet
    assert "invalid PENDING" not in quiet and "runner workaround" not in quiet
    busy = " ".join(format_summary(_result("3.0.0", peak=5, executions=3, waited=12)).split())
    assert "12 branch(es) waited, woken by polling" in busy
    assert "skipped durable waits" in busy and "overstated" in busy  # the skip clock's caveat


def test_progress_names_the_run_and_a_new_run_starts_a_new_line() -> None:
    assert format_progress(Progress(3, 5, 22, 30, run="bare SDK")).startswith(
        "bare SDK: items done 3/30"
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    line = ProgressLine(screen)
    line(Progress(0, 15, 15, 30, run="bare SDK"))
    line(Progress(30, 0, 0, 30, run="bare SDK"))
    line(Progress(0, 5, 25, 30, run="with the limiter"))
    line.close()
    shown = screen.getvalue().split("\n")
    assert shown[0].rstrip().endswith("bare SDK: items done 30/30  in flight 0  waiting 0")
    assert shown[1].strip() == "with the limiter: items done 0/30  in flight 5  waiting 25"


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
    # Two slots; one task runs 0-1 s, another 0-2 s; someone waits 0-2 s: 1.5 of 2 slots.
    assert busy_while_waiting([(0, 1), (0, 2)], [(0, 2)], 2) == pytest.approx(0.75)
    # Time when nobody waits does not count: an idle stretch 2-10 s changes nothing.
    assert busy_while_waiting([(0, 1), (0, 2), (9, 10)], [(0, 2)], 2) == pytest.approx(0.75)
    # Both slots busy for the whole wait: 100 %; nobody waiting: no figure at all.
    assert busy_while_waiting([(0, 4), (0, 4)], [(1, 3), (2, 4)], 2) == pytest.approx(1.0)
    assert busy_while_waiting([(0, 4)], [], 2) is None


# -- in a process of its own: imports, Ctrl-C, local-dynamodb ----------------------------------


def _env() -> dict[str, str]:
    """The test process's environment, without anything that would point boto3 elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_importing_the_package_does_not_import_the_demo() -> None:
    """The demo needs the demo extra and has no place in a deployed function."""
    check = (
        "import durable_semaphore, sys; "
        "assert not any(m.startswith('durable_semaphore.demo') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('durable_semaphore.demo'))"
    )
    subprocess.run([sys.executable, "-c", check], check=True, env=_env(), timeout=60)
    cli_check = check.replace("import durable_semaphore,", "import durable_semaphore.cli,")
    subprocess.run([sys.executable, "-c", cli_check], check=True, env=_env(), timeout=60)


class _Lines:
    """Reads a child's stream line by line in a thread, so a test can wait for a line."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if predicate(line)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"no such line within {timeout} s: {self.lines}")
                self._changed.wait(left)

    def finish(self) -> list[str]:
        self._thread.join(timeout=30)
        return self.lines


@pytest.fixture
def spawn() -> Iterator[Callable[..., tuple[subprocess.Popen[str], _Lines, _Lines]]]:
    """Start ``durable-semaphore ARGS`` in a process of its own, with default SIGINT handling
    (a shell's background job would ignore it); killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], _Lines, _Lines]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "durable_semaphore.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        started.append(proc)
        return proc, _Lines(proc.stdout), _Lines(proc.stderr)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.parametrize("during", ["bare SDK", "with the limiter"])
def test_ctrl_c_ends_the_demo_with_one_line_and_130(
    during: str, spawn: Callable[..., tuple[subprocess.Popen[str], _Lines, _Lines]]
) -> None:
    """The default demo, interrupted mid-run: exit 130 and one short line on stderr besides the
    progress lines, never the SDK's tracebacks (before the fix: about 100 lines in 2 of 6)."""
    proc, out, err = spawn("demo", "--no-png")
    err.wait_for(lambda line: line.startswith(f"{during}: items done"), timeout=120)
    time.sleep(1.0)  # mid-run: branches are checkpointing
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    lines = err.finish()
    text = "\n".join(lines)
    assert "Traceback" not in text and "Error" not in text, text
    progress = ("demo: ", "bare SDK: ", "with the limiter: ")
    others = [line for line in lines if not line.startswith(progress)]
    assert len(others) == 1 and len(others[0]) < 80, text
    assert "interrupted" in others[0]
    assert out.finish() == []  # no summary for a run that did not finish


def test_local_dynamodb_serves_until_ctrl_c(
    spawn: Callable[..., tuple[subprocess.Popen[str], _Lines, _Lines]],
) -> None:
    """Start it, use the lines it prints to create a table with the CLI and use it with the
    library, then Ctrl-C: one line, exit 0, and the server is gone."""
    proc, out, err = spawn("local-dynamodb", "--port", "0")
    first = out.wait_for(lambda line: "listening on http://127.0.0.1:" in line, timeout=60)
    endpoint = first.rsplit(" ", 1)[1]
    out.wait_for(lambda line: line.startswith("Ctrl-C"), timeout=10)
    assert out.lines == local_dynamodb_lines(endpoint)
    env = _env()
    for line in out.lines:
        if line.strip().startswith("export "):
            for pair in line.strip().removeprefix("export ").split():
                name, _, value = pair.partition("=")
                env[name] = value
    for name in ("AWS_PROFILE", "AWS_REGION", "DURABLE_SEMAPHORE_TABLE"):
        env.pop(name, None)
    created = subprocess.run(
        [sys.executable, "-m", "durable_semaphore.cli", "create-table"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert "table 'durable-semaphore' created" in created.stdout

    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=default_client_config(),
    )
    sem = DynamoDBSemaphore("durable-semaphore", client=client)
    assert sem.acquire("k", "h1", limit=1, ttl_seconds=60).held
    assert sem.slot_count("k").count == 1

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert err.finish() == [f"stopped the local DynamoDB on {endpoint}"]
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # ministack stopped with it


def test_local_dynamodb_on_a_taken_port_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["local-dynamodb", "--port", str(port)])
    assert code == cli.EXIT_PREREQUISITE
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
