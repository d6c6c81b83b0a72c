"""The admin CLI against DynamoDB Local: the happy paths and every documented exit code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore, cli


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
    assert [(w["position"], w["holder"]) for w in doc["waiters"]] == [(1, "w-1"), (2, "w-2")]
    first, second = doc["waiters"]
    assert (first["execution_arn"], first["callback"], first["expired"]) == (arn, True, False)
    assert first["queued_at"] is not None and 0 <= first["queued_seconds"] < 60
    assert 800 < second["expires_in_seconds"] <= 900
    assert (second["execution_arn"], second["callback"]) == (None, False)

    code, out, _ = run(capsys, "status", "orders", *where)
    assert code == cli.EXIT_OK
    assert "1 live lease(s), 2 waiting" in out
    assert out.index("holder     h-1") < out.index("waiter 1   w-1") < out.index("waiter 2   w-2")
    assert "wake     callback" in out and "wake     polls" in out and arn in out

    semaphore.release("orders", "h-1")  # handed to w-1, which has not claimed it yet
    code, out, _ = run(capsys, "status", "orders", "--json", *where)
    doc = json.loads(out)
    assert [(h["holder"], h["state"]) for h in doc["holders"]] == [("w-1", "granted")]
    assert [(w["position"], w["holder"]) for w in doc["waiters"]] == [(1, "w-2")]
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


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for line in ("3  the lease table does not exist", "4  no AWS credentials", "2  bad arguments"):
        assert line in out
    for command in ("demo", "status", "release", "reap", "create-table"):
        assert command in out


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
