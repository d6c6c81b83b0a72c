"""The admin CLI against DynamoDB Local: the happy paths and every documented exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
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

from durable_semaphore import (
    ConfigurationError,
    DynamoDBLimiter,
    DynamoDBSemaphore,
    InvalidArgumentError,
    cli,
)
from durable_semaphore.store import admin_client_config, endpoint_url_problem


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def local(endpoint: str, table: str) -> list[str]:
    return ["--endpoint-url", endpoint, "--table", table]


def test_create_table_is_idempotent(
    ddb_endpoint: str, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "create-table", *local(ddb_endpoint, table_name))
    assert code == cli.EXIT_OK
    assert f"table {table_name!r} created" in out
    code, out, _ = run(capsys, "create-table", *local(ddb_endpoint, table_name))
    assert code == cli.EXIT_OK
    assert "already exists" in out


def test_status_shows_holders_expiry_and_execution(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:durable-execution:fn:run:1"
    semaphore.try_acquire("orders", "h-1", 3, ttl_seconds=3600, execution_arn=arn)
    semaphore.try_acquire("orders", "h-2", 3, ttl_seconds=60)
    semaphore.try_acquire("other", "h-9", 3)

    code, out, _ = run(
        capsys, "status", "orders", "--json", *local(ddb_endpoint, semaphore.table_name)
    )
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert doc["key"] == "orders" and doc["live"] == 2 and doc["count"] == 2
    by_holder = {h["holder"]: h for h in doc["holders"]}
    assert set(by_holder) == {"h-1", "h-2"}
    assert by_holder["h-1"]["execution_arn"] == arn
    assert 3500 < by_holder["h-1"]["expires_in_seconds"] <= 3600
    assert by_holder["h-2"]["execution_arn"] is None

    code, out, _ = run(capsys, "status", "orders", *local(ddb_endpoint, semaphore.table_name))
    assert code == cli.EXIT_OK
    assert "2 live lease(s)" in out
    assert "holder     h-1" in out and arn in out
    assert "h-9" not in out


def test_release_frees_the_slot_then_reports_nothing_held(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    semaphore.try_acquire("k", "stuck", 1)
    assert semaphore.try_acquire("k", "next", 1) is None
    where = local(ddb_endpoint, semaphore.table_name)

    code, out, _ = run(capsys, "release", "k", "stuck", *where)
    assert code == cli.EXIT_OK and "released 'stuck'" in out
    assert semaphore.holders("k") == []
    assert semaphore.try_acquire("k", "next", 1) is not None

    code, out, _ = run(capsys, "release", "k", "stuck", *where)
    assert code == cli.EXIT_NO and "nothing released" in out


def test_status_counts_waiters_by_group_and_priority(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert semaphore.try_acquire("tenants", "h-0", 1) is not None
    for i, (group, priority) in enumerate([("A", 0), ("A", 0), ("B", 0), ("A", 2)]):
        result = semaphore.acquire("tenants", f"w-{i}", 1, group=group, priority=priority)
        assert result.queued
    where = local(ddb_endpoint, semaphore.table_name)
    code, out, _ = run(capsys, "status", "tenants", "--json", *where)
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert doc["waiting_by"] == [
        {"group": "A", "priority": 2, "count": 1},
        {"group": "A", "priority": 0, "count": 2},
        {"group": "B", "priority": 0, "count": 1},
    ]
    assert (doc["waiters"][0]["group"], doc["waiters"][0]["priority"]) == ("A", 2)
    code, out, _ = run(capsys, "status", "tenants", *where)
    assert "waiting by group and priority: A p2: 1, A p0: 2, B p0: 1" in out
    assert "order    group A, priority 2" in out
    # Control: plain FIFO waiters print no group line.
    semaphore.acquire("plain", "h-0", 1)
    semaphore.acquire("plain", "w-0", 1)
    code, out, _ = run(capsys, "status", "plain", *where)
    assert "waiting by group" not in out and "1 waiting" in out


def test_status_with_a_limit_shows_every_shard_and_the_total(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    limiter = DynamoDBLimiter("hot", 150, shards=3, semaphore=semaphore, waker=None)
    for i in range(5):
        assert limiter.acquire("hot", f"h{i}", 150).held
    where = local(ddb_endpoint, semaphore.table_name)
    code, out, _ = run(capsys, "status", "hot", "--limit", "150", "--shards", "3", "--json", *where)
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert doc["live"] == 5 and [s["key"] for s in doc["shards"]] == [
        f"hot#{i}of3" for i in range(3)
    ]
    assert sorted(h["holder"] for s in doc["shards"] for h in s["holders"]) == [
        f"h{i}" for i in range(5)
    ]
    code, out, _ = run(capsys, "status", "hot", "--limit", "150", "--shards", "3", *where)
    assert code == cli.EXIT_OK and out.startswith("'hot': 3 shards, 5 live lease(s), 0 waiting")
    # Without the limit the name alone is one stored key, which holds nothing here.
    code, out, _ = run(capsys, "status", "hot", "--json", *where)
    assert code == cli.EXIT_OK and json.loads(out)["live"] == 0
    # A shard count the limit cannot have: our error, exit 2.
    code, _, err = run(capsys, "status", "hot", "--limit", "150", "--shards", "1", *where)
    assert code == cli.EXIT_USAGE and "shards" in err and "use at least 2" in err


def test_status_shows_waiters_in_queue_order_and_granted_leases(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:durable-execution:fn:run:1"
    semaphore.acquire("orders", "h-1", 1, ttl_seconds=3600)
    semaphore.acquire("orders", "w-1", 1, execution_arn=arn, callback_id="cb-1")
    semaphore.acquire("orders", "w-2", 1, queue_ttl_seconds=900)
    where = local(ddb_endpoint, semaphore.table_name)

    code, out, _ = run(capsys, "status", "orders", "--json", *where)
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert (doc["live"], doc["count"], doc["waiting"], doc["queue_count"]) == (1, 1, 2, 2)
    assert [(h["holder"], h["state"]) for h in doc["holders"]] == [("h-1", "held")]
    assert [(w["ahead"], w["holder"]) for w in doc["waiters"]] == [(0, "w-1"), (1, "w-2")]
    assert [w["live_ahead"] for w in doc["waiters"]] == [0, 1]
    assert not any("seq" in w or "position" in w for w in doc["waiters"])  # no sequence numbers
    first, second = doc["waiters"]
    assert (first["execution_arn"], first["callback"], first["expired"]) == (arn, True, False)
    assert first["queued_at"] is not None and 0 <= first["queued_seconds"] < 60
    assert 800 < second["expires_in_seconds"] <= 900
    assert (second["execution_arn"], second["callback"]) == (None, False)

    code, out, _ = run(capsys, "status", "orders", *where)
    assert code == cli.EXIT_OK
    assert "1 live lease(s), 2 waiting" in out
    assert out.index("holder     h-1") < out.index("waiter     w-1") < out.index("waiter     w-2")
    assert "ahead    0 ahead" in out and "ahead    1 ahead" in out
    assert "wake     callback" in out and "wake     polls" in out and arn in out

    semaphore.release("orders", "h-1")  # handed to w-1, which has not claimed it yet
    code, out, _ = run(capsys, "status", "orders", "--json", *where)
    doc = json.loads(out)
    assert [(h["holder"], h["state"]) for h in doc["holders"]] == [("w-1", "granted")]
    assert [(w["ahead"], w["holder"]) for w in doc["waiters"]] == [(0, "w-2")]
    code, out, _ = run(capsys, "status", "orders", *where)
    assert "holder     w-1" in out and "granted: handed over from the queue" in out
    assert "1 live lease(s), 1 waiting" in out


def test_release_of_a_waiter_leaves_the_queue_and_a_held_slot_is_handed_on(
    ddb_endpoint: str,
    semaphore: DynamoDBSemaphore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    semaphore.acquire("k", "a", 1)
    semaphore.acquire("k", "b", 1)
    semaphore.acquire("k", "c", 1)
    where = local(ddb_endpoint, semaphore.table_name)

    code, out, _ = run(capsys, "release", "k", "b", *where)
    assert code == cli.EXIT_OK and "left the queue" in out
    assert [w.holder for w in semaphore.waiters("k")] == ["c"]

    code, out, _ = run(capsys, "release", "k", "a", *where)
    assert code == cli.EXIT_OK and "released 'a'" in out and "handed to 'c'" in out
    assert [(h.holder, h.state) for h in semaphore.holders("k")] == [("c", "granted")]
    assert semaphore.waiters("k") == []

    code, out, _ = run(capsys, "release", "k", "b", *where)  # neither holds nor waits now
    assert code == cli.EXIT_NO and "nothing released" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "k"],
        ["release", "k", "h"],
        ["reap", "--region", "us-east-1"],
    ],
)
def test_missing_table_has_its_own_exit_code(
    ddb_endpoint: str, table_name: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv, *local(ddb_endpoint, table_name))
    assert code == cli.EXIT_TABLE_MISSING
    assert f"{table_name!r} does not exist" in err and "create-table" in err
    assert out == ""


def test_bad_arguments_exit_2(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore, capsys: pytest.CaptureFixture[str]
) -> None:
    where = local(ddb_endpoint, semaphore.table_name)
    # argparse's own usage errors
    with pytest.raises(SystemExit) as exc:
        cli.main(["release", "only-a-key", *where])
    assert exc.value.code == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--items", "many"])
    assert exc.value.code == cli.EXIT_USAGE
    capsys.readouterr()
    # values the library refuses (InvalidArgumentError), before anything is written
    code, _, err = run(capsys, "status", "", *where)
    assert code == cli.EXIT_USAGE and "invalid key" in err
    code, _, err = run(capsys, "release", "k", "x" * 2000, *where)
    assert code == cli.EXIT_USAGE and "invalid holder" in err
    code, _, err = run(capsys, "demo", "--items", "0", *where)
    assert code == cli.EXIT_USAGE and "invalid items=0" in err


def _no_aws_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_no_credentials_exit_4(
    ddb_endpoint: str,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_aws_configuration(monkeypatch, tmp_path)
    code, _, err = run(capsys, "status", "k", *local(ddb_endpoint, table_name))
    assert code == cli.EXIT_NO_CREDENTIALS
    assert "Unable to locate credentials" in err and "configure AWS credentials" in err


def test_no_region_exit_4(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_aws_configuration(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    code, _, err = run(capsys, "create-table", "--table", "whatever")
    assert code == cli.EXIT_NO_CREDENTIALS and "--region" in err


def test_reap_is_delegated_to_the_reaper(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "reap",
        "--json",
        "--region",
        "us-east-1",
        *local(ddb_endpoint, semaphore.table_name),
    )
    assert code == cli.EXIT_OK
    assert json.loads(out)["scanned"] == 0


#: Every exit code the CLI documents, with the start of its line in --help.
DOCUMENTED_EXIT_CODES = {
    cli.EXIT_OK: "0  success",
    cli.EXIT_NO: '1  the command ran but the answer is "no"',
    cli.EXIT_USAGE: "2  bad arguments",
    cli.EXIT_TABLE_MISSING: "3  the lease table does not exist",
    cli.EXIT_NO_CREDENTIALS: "4  no AWS credentials",
    cli.EXIT_AWS_ERROR: "5  another AWS or DynamoDB error",
    cli.EXIT_PREREQUISITE: "6  a local prerequisite is missing",
    cli.EXIT_TABLE_INVALID: "7  the table exists but is not a lease table",
    cli.EXIT_UNREACHABLE: "8  DynamoDB could not be reached",
    cli.EXIT_INTERRUPTED: "130  interrupted (Ctrl-C)",
}


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys)
    for line in DOCUMENTED_EXIT_CODES.values():
        assert line in out
    for command in ("demo", "status", "release", "set-limit", "reap", "create-table"):
        assert command in out
    codes = {v for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert codes == set(DOCUMENTED_EXIT_CODES)  # a new code must be documented here and there


def test_every_help_is_plain_text_and_lists_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Help is read in a terminal: reST or Markdown backticks are noise there."""
    assert "`" not in _help(capsys)
    for name in cli._REGISTRY:
        out = _help(capsys, name)
        assert "`" not in out, name
        assert DOCUMENTED_EXIT_CODES[cli.EXIT_UNREACHABLE] in out, name


def test_a_registered_subcommand_gets_common_options_and_error_mapping(
    ddb_endpoint: str, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=1)

    def go(args: argparse.Namespace) -> int:
        sem = cli.semaphore_from_args(args)
        sem.slot_count("k")  # the table does not exist
        return 0

    cli.register_subcommand(cli.Subcommand("probe", "test only", add, go))
    try:
        code, _, err = run(capsys, "probe", "--rounds", "2", *local(ddb_endpoint, table_name))
    finally:
        cli._REGISTRY.pop("probe")
    assert code == cli.EXIT_TABLE_MISSING and "does not exist" in err


def test_a_table_that_is_not_a_lease_table_has_its_own_exit_code(
    ddb_endpoint: str, ddb_client: Any, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ddb_client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    where = local(ddb_endpoint, table_name)
    for argv in (
        ["status", "k"],
        ["release", "k", "h"],
        ["reap", "--region", "us-east-1"],  # its Scan alone would find nothing and exit 0
        ["reap", "--dry-run", "--region", "us-east-1"],
        ["create-table"],
    ):
        code, out, err = run(capsys, *argv, *where)
        assert code == cli.EXIT_TABLE_INVALID != cli.EXIT_OK, argv
        assert f"{table_name!r} is not a lease table" in err, argv
        assert "its key is id String HASH, expected pk String HASH + sk String RANGE" in err
        assert "ValidationException" not in err and out == ""
    assert ddb_client.scan(TableName=table_name)["Items"] == []


def test_a_bad_table_name_exits_2(ddb_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["status", "k"], ["reap", "--region", "us-east-1"], ["create-table"]):
        code, out, err = run(capsys, *argv, *local(ddb_endpoint, "bad table!"))
        assert code == cli.EXIT_USAGE, argv
        assert "invalid table_name='bad table!'" in err and out == ""


def test_help_documents_the_table_invalid_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "7  the table exists but is not a lease table" in capsys.readouterr().out
    assert cli.EXIT_TABLE_INVALID == 7


def test_status_counts_dead_queue_entries_ahead_apart(
    ddb_endpoint: str, make_semaphore: Callable[..., DynamoDBSemaphore], capsys: Any
) -> None:
    """A dead entry still holds its place until reached, so it is ahead, but not live ahead."""
    live = make_semaphore()
    live.acquire("k", "h", 1, ttl_seconds=3600)
    past = make_semaphore(clock=lambda: time.time() - 2000)  # its entry expired long ago
    assert past.acquire("k", "dead", 1, queue_ttl_seconds=60).queued
    assert live.acquire("k", "alive", 1).queued
    where = local(ddb_endpoint, live.table_name)

    code, out, _ = run(capsys, "status", "k", "--json", *where)
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert [(w["holder"], w["ahead"], w["live_ahead"]) for w in doc["waiters"]] == [
        ("dead", 0, 0),
        ("alive", 1, 0),
    ]
    code, out, _ = run(capsys, "status", "k", *where)
    assert "1 ahead (0 live; the expired are dropped when reached)" in out


# -- no traceback for any documented misuse ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """A port that accepts connections and never answers: a request waits for its read timeout.
    The event is set once a connection was accepted (the CLI is then inside its request)."""
    accepted = threading.Event()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    kept: list[socket.socket] = []

    def serve() -> None:
        try:
            kept.append(srv.accept()[0])
            accepted.set()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], accepted
    srv.close()
    for conn in kept:
        conn.close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose accept queue is full, so the kernel drops new SYNs: a connect times out,
    as with a firewall that drops packets. Skipped where the OS refuses instead (the control)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.3)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect(("127.0.0.1", port))
        black = False
    except TimeoutError:
        black = True
    except OSError:
        black = False
    finally:
        probe.close()
    try:
        if not black:
            pytest.skip("this OS does not drop connects to a full accept queue")
        yield port
    finally:
        for c in fillers:
            c.close()
        srv.close()


#: The command line as a user runs it, in its own process (so a traceback would reach stderr).
CLI = (sys.executable, "-m", "durable_semaphore.cli")


def _cli(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str, float]:
    """Run the CLI as a user does, in its own process; returns code, stdout, stderr, seconds."""
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, *argv],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def _env_without_region(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    empty = tmp_path / "aws-config"
    empty.write_text("")
    env["AWS_CONFIG_FILE"] = str(empty)
    return env


def _assert_clean(code: int, err: str, expected: int, *fragments: str) -> None:
    assert "Traceback" not in err, err
    assert code == expected, (code, err)
    assert err.startswith("durable-semaphore: error: ") or expected == cli.EXIT_INTERRUPTED, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "KEY", "--endpoint-url", "localhost:44515"],  # no scheme
        ["release", "KEY", "h", "--endpoint-url", "ftp://localhost:8000"],
        ["create-table", "--endpoint-url", "http://localhost:port"],
        ["reap", "--endpoint-url", "localhost:8000"],  # reap defines its own options
    ],
)
def test_a_malformed_endpoint_url_exits_2_with_our_message(argv: list[str]) -> None:
    code, out, err, _ = _cli(*argv)
    _assert_clean(
        code, err, cli.EXIT_USAGE, "--endpoint-url must be a URL like http://localhost:8000"
    )
    assert out == ""


@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
@pytest.mark.parametrize("command", [["status", "KEY"], ["reap"]])
def test_a_malformed_endpoint_url_in_the_environment_exits_4(var: str, command: list[str]) -> None:
    env = {**os.environ, var: "localhost:44515"}
    code, _, err, _ = _cli(*command, "--region", "us-east-1", env=env)
    _assert_clean(code, err, cli.EXIT_NO_CREDENTIALS, "localhost:44515", "http://localhost:8000")


def test_a_dead_port_fails_within_seconds_with_its_own_exit_code() -> None:
    """Measured: 0.4 to 0.6 s (it was 9 to 21 s with the library's 10 retries, exit 5)."""
    port = _free_port()
    for command in (["status", "KEY"], ["release", "KEY", "h"], ["create-table"]):
        code, _, err, seconds = _cli(*command, "--endpoint-url", f"http://127.0.0.1:{port}")
        _assert_clean(
            code,
            err,
            cli.EXIT_UNREACHABLE,
            f"cannot reach DynamoDB at http://127.0.0.1:{port}",
            "Connection refused",
            "--endpoint-url",
        )
        assert seconds < 5, (command, seconds)


def test_a_black_holed_endpoint_fails_within_seconds(black_hole: int) -> None:
    """Two connects of 2 s: measured 4.4 s (about a minute with the library's config)."""
    code, _, err, seconds = _cli(
        "status", "KEY", "--endpoint-url", f"http://127.0.0.1:{black_hole}"
    )
    _assert_clean(code, err, cli.EXIT_UNREACHABLE, "no connection within the connect timeout")
    assert seconds < 8


def test_admin_commands_give_up_after_two_short_attempts() -> None:
    config = admin_client_config()
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert config.connect_timeout == 2


def test_no_region_exits_4_naming_the_option(tmp_path: Path) -> None:
    code, _, err, _ = _cli("create-table", "--table", "whatever", env=_env_without_region(tmp_path))
    _assert_clean(code, err, cli.EXIT_NO_CREDENTIALS, "no AWS region configured", "--region")
    assert "region_name" not in err  # the library's argument, which a CLI user cannot pass


def test_bad_table_missing_table_and_wrong_table_in_a_process(
    ddb_endpoint: str, ddb_client: Any, table_name: str
) -> None:
    code, _, err, _ = _cli("status", "k", *local(ddb_endpoint, "bad table!"))
    _assert_clean(code, err, cli.EXIT_USAGE, "invalid table_name='bad table!'")
    code, _, err, _ = _cli("status", "k", *local(ddb_endpoint, table_name))
    _assert_clean(code, err, cli.EXIT_TABLE_MISSING, "does not exist")
    ddb_client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    code, _, err, _ = _cli("status", "k", *local(ddb_endpoint, table_name))
    _assert_clean(code, err, cli.EXIT_TABLE_INVALID, "is not a lease table")


def test_ctrl_c_while_waiting_on_dynamodb_exits_130(
    silent_server: tuple[int, threading.Event],
) -> None:
    port, accepted = silent_server
    proc = subprocess.Popen(
        [*CLI, "status", "KEY", "--endpoint-url", f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert accepted.wait(15), "the CLI never connected"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_clean(proc.returncode, err, cli.EXIT_INTERRUPTED, "interrupted")
    assert out == ""


# -- client construction: our errors instead of botocore's (the library, not only the CLI) --


@pytest.fixture
def fresh_default_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default session caches the config file it read; start each test without it."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def _no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))


@pytest.mark.usefixtures("fresh_default_session")
def test_a_hold_without_a_region_raises_our_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_region(monkeypatch, tmp_path)
    limiter = DynamoDBLimiter("x", 1)
    with pytest.raises(ConfigurationError) as exc, limiter.hold(timeout=1):
        pass
    assert exc.value.setting == "region"
    assert "AWS_REGION" in str(exc.value) and "region_name" in str(exc.value)
    with pytest.raises(ConfigurationError):
        DynamoDBSemaphore("t-x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "")  # set but empty: botocore's endpoint "dynamodb.."
    with pytest.raises(ConfigurationError, match="the configured region is empty"):
        DynamoDBSemaphore("t-x")


@pytest.mark.usefixtures("fresh_default_session")
def test_aws_region_alone_is_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore reads only AWS_DEFAULT_REGION; our error names AWS_REGION, so it must work."""
    _no_region(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert DynamoDBSemaphore("t-x").client.meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")  # botocore's own wins when set
    assert DynamoDBSemaphore("t-x").client.meta.region_name == "us-west-2"


@pytest.mark.usefixtures("fresh_default_session")
def test_malformed_endpoints_and_regions_raise_our_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("localhost:8000", "ftp://localhost:8000", "http://localhost:port", "http://", ""):
        assert endpoint_url_problem(bad) is not None, bad
        with pytest.raises(InvalidArgumentError, match="http://localhost:8000"):
            DynamoDBSemaphore("t-x", endpoint_url=bad, region_name="us-east-1")
    for good in (
        "http://localhost:8000",
        "https://dynamodb.eu-west-1.amazonaws.com/",
        "http://[::1]:8000",
    ):
        assert endpoint_url_problem(good) is None, good
    with pytest.raises(InvalidArgumentError, match="region_name"):
        DynamoDBSemaphore("t-x", region_name="us east 1")
    for value in ("localhost:1", "ftp://x:1"):  # botocore refuses the first, not the second
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", value)
        with pytest.raises(ConfigurationError, match="AWS_ENDPOINT_URL_DYNAMODB") as exc:
            DynamoDBSemaphore("t-x", region_name="us-east-1")
        assert exc.value.setting == "endpoint_url"


def test_set_limit_raises_a_key_admits_its_waiters_and_status_names_the_source(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore, capsys: pytest.CaptureFixture[str]
) -> None:
    where = local(ddb_endpoint, semaphore.table_name)
    for holder in ("a", "b", "w1", "w2", "w3"):
        semaphore.acquire("orders", holder, 2)
    code, out, _ = run(capsys, "status", "orders", *where)
    assert code == cli.EXIT_OK and "limit      2 (code)" in out
    code, out, _ = run(capsys, "status", "orders", "--limit", "5", *where)
    assert "limit      5 (--limit)" in out

    code, out, _ = run(capsys, "set-limit", "orders", "4", *where)
    assert code == cli.EXIT_OK
    assert "set to 4 (was 2 (code))" in out and "2 waiter(s) admitted: w1, w2" in out
    assert [w.holder for w in semaphore.waiters("orders")] == ["w3"]
    code, out, _ = run(capsys, "status", "orders", "--limit", "2", "--json", *where)
    doc = json.loads(out)
    assert (doc["limit"], doc["limit_source"]) == (4, "set-limit") and doc["limit_set_at"]
    code, out, _ = run(capsys, "status", "orders", *where)
    assert "limit      4 (set-limit at 20" in out

    code, out, _ = run(capsys, "set-limit", "orders", "--clear", *where)
    assert code == cli.EXIT_OK and "cleared (was 4 (set-limit at" in out
    code, out, _ = run(capsys, "status", "orders", *where)
    assert "limit      2 (code)" in out


def test_set_limit_on_shards_and_its_bad_input(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore, capsys: pytest.CaptureFixture[str]
) -> None:
    where = local(ddb_endpoint, semaphore.table_name)
    code, _, _ = run(capsys, "set-limit", "hot", "7", "--shards", "3", *where)
    assert code == cli.EXIT_OK
    code, out, _ = run(capsys, "status", "hot", "--limit", "150", "--shards", "3", "--json", *where)
    doc = json.loads(out)
    assert doc["limit"] == 7 and [s["limit"] for s in doc["shards"]] == [3, 2, 2]
    code, out, _ = run(capsys, "status", "hot", "--limit", "150", "--shards", "3", *where)
    assert "3 shards, 0 live lease(s), 0 waiting, limit 7 (set-limit at" in out
    before = semaphore.client.scan(TableName=semaphore.table_name)["Items"]
    for argv, fragment in (
        (["set-limit", "hot", "2", "--shards", "3"], "3 shards"),  # a shard without a slot
        (["set-limit", "hot", "0"], "invalid limit=0"),
        (["set-limit", "hot"], "--clear"),
        (["set-limit", "hot", "3", "--clear"], "--clear"),
        (["set-limit", "", "3"], "invalid key"),
    ):
        code, _, err = run(capsys, *argv, *where)
        assert code == cli.EXIT_USAGE and fragment in err, (argv, err)
    assert semaphore.client.scan(TableName=semaphore.table_name)["Items"] == before
    code, out, _ = run(capsys, "set-limit", "hot", "--clear", "--shards", "3", *where)
    assert code == cli.EXIT_OK
    code, out, _ = run(capsys, "status", "hot", "--limit", "150", "--shards", "3", *where)
    assert "limit 150 (--limit)" in out
