"""Failures classified on DynamoDB Local: a table that is not a lease table is a configuration
error (``TableSchemaError``), raised at the first request and never retried as contention; bad
table and limiter names are refused at construction."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from durable_semaphore import (
    ContentionError,
    DurableSemaphoreError,
    DynamoDBLimiter,
    DynamoDBSemaphore,
    InvalidArgumentError,
    TableSchemaError,
)
from durable_semaphore.reaper import Reaper
from durable_semaphore.retry import is_transient_error
from tests.store_helpers import count_requests

EXPECTED = "expected pk String HASH + sk String RANGE"


def make_table(client: Any, name: str, keys: list[tuple[str, str, str]]) -> None:
    """A table with ``keys`` as (name, type, HASH/RANGE), ACTIVE at once on DynamoDB Local."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": n, "KeyType": kind} for n, _, kind in keys],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )


def items(client: Any, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = client.scan(TableName=name, ConsistentRead=True)["Items"]
    return out


@pytest.fixture
def number_sk(ddb_client: Any, table_name: str) -> DynamoDBSemaphore:
    """A store on a table whose sort key ``sk`` is a Number (ours is a String)."""
    make_table(ddb_client, table_name, [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    return DynamoDBSemaphore(table_name, client=ddb_client)


@pytest.fixture
def id_only(ddb_client: Any, table_name: str) -> DynamoDBSemaphore:
    """A store on a table keyed by ``id`` alone."""
    make_table(ddb_client, table_name, [("id", "S", "HASH")])
    return DynamoDBSemaphore(table_name, client=ddb_client)


def test_create_table_refuses_a_number_sort_key_and_changes_nothing(
    ddb_client: Any, number_sk: DynamoDBSemaphore
) -> None:
    with pytest.raises(TableSchemaError) as exc:
        number_sk.create_table()
    assert exc.value.table_name == number_sk.table_name
    assert "its key is pk String HASH + sk Number RANGE" in exc.value.reason
    assert EXPECTED in exc.value.reason
    ttl = ddb_client.describe_time_to_live(TableName=number_sk.table_name)
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"  # TTL not enabled


def test_acquire_on_a_number_sort_key_fails_after_one_request_not_51(
    ddb_client: Any, number_sk: DynamoDBSemaphore
) -> None:
    with count_requests(ddb_client) as sent, pytest.raises(TableSchemaError) as exc:
        number_sk.try_acquire("k", "h", 3)
    # One refused write, then one DescribeTable to say what is wrong; no retries.
    assert sent == {"UpdateItem": 1, "DescribeTable": 1}
    assert not isinstance(exc.value, ContentionError)
    assert "sk Number RANGE" in str(exc.value) and EXPECTED in str(exc.value)
    assert isinstance(exc.value.__cause__, ClientError)
    assert is_transient_error(exc.value) is False
    with count_requests(ddb_client) as sent, pytest.raises(TableSchemaError):
        number_sk.release_slot("k", "h")
    assert sent == {"UpdateItem": 1, "DescribeTable": 1}
    assert items(ddb_client, number_sk.table_name) == []


def test_a_hold_on_a_wrong_table_raises_the_schema_error_at_once_and_quietly(
    ddb_client: Any, number_sk: DynamoDBSemaphore, caplog: pytest.LogCaptureFixture
) -> None:
    """Not "no slot within 2 s" after 10 s of retries, and no warning about leaving a queue
    that was never joined."""
    limiter = DynamoDBLimiter("api", 1, semaphore=number_sk, waker=None)
    with (
        caplog.at_level(logging.WARNING),
        count_requests(ddb_client) as sent,
        pytest.raises(TableSchemaError),
        limiter.hold(timeout=2),
    ):
        pass
    assert sent == {"UpdateItem": 1, "DescribeTable": 1}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert items(ddb_client, number_sk.table_name) == []


def test_every_request_on_a_table_keyed_by_id_raises_the_schema_error(
    ddb_client: Any, id_only: DynamoDBSemaphore
) -> None:
    calls = {
        "acquire": lambda: id_only.acquire("k", "h", 1),
        "release": lambda: id_only.release_slot("k", "h"),
        "entries": lambda: id_only.entries("k"),
        "slot_count": lambda: id_only.slot_count("k"),
        "check_table": id_only.check_table,
        "create_table": id_only.create_table,
    }
    for name, call in calls.items():
        with pytest.raises(
            TableSchemaError, match=re.escape("its key is id String HASH, " + EXPECTED)
        ):
            call()
        assert items(ddb_client, id_only.table_name) == [], name


def test_reaper_fails_on_a_table_that_is_not_a_lease_table(id_only: DynamoDBSemaphore) -> None:
    # Its Scan alone would find nothing and report a clean run.
    reaper = Reaper(
        DynamoDBLimiter(semaphore=id_only, waker=None),
        lambda_client=None,
        logger=logging.getLogger(__name__),
    )
    with pytest.raises(TableSchemaError):
        reaper.reap()
    with pytest.raises(TableSchemaError):
        reaper.reap(dry_run=True)


def test_check_table_passes_on_a_lease_table_with_one_query(
    ddb_client: Any, semaphore: DynamoDBSemaphore
) -> None:
    with count_requests(ddb_client) as sent:
        semaphore.check_table()
    assert sent == {"Query": 1}


def test_an_invalid_request_on_a_right_table_is_not_called_a_schema_problem(
    semaphore: DynamoDBSemaphore,
) -> None:
    # A key without its sort key: DynamoDB refuses it whatever the table, so the store must
    # quote DynamoDB rather than blame the (correct) schema.
    with pytest.raises(DurableSemaphoreError) as exc:
        semaphore.io.call("get_item", TableName=semaphore.table_name, Key={"pk": {"S": "k"}})
    assert not isinstance(exc.value, TableSchemaError)
    assert "its key schema is right" in str(exc.value)
    assert is_transient_error(exc.value) is False


def test_without_describe_table_dynamodbs_own_message_decides(
    ddb_client: Any, number_sk: DynamoDBSemaphore
) -> None:
    """Least-privilege roles may not call DescribeTable: a key error is still a schema error."""

    def deny(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
            "DescribeTable",
        )

    ddb_client.meta.events.register("before-call.dynamodb.DescribeTable", deny)
    try:
        with pytest.raises(TableSchemaError) as exc:
            number_sk.slot_count("k")
    finally:
        ddb_client.meta.events.unregister("before-call.dynamodb.DescribeTable", deny)
    assert "DescribeTable failed: AccessDeniedException" in exc.value.reason
    assert "key" in exc.value.reason and EXPECTED in exc.value.reason


@pytest.mark.parametrize("name", ["bad table!", "ab", "x" * 256, "tab/le", "", "é-table"])
def test_bad_table_names_are_refused_at_construction(ddb_client: Any, name: str) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        DynamoDBSemaphore(name, client=ddb_client)
    assert exc.value.name == "table_name"


@pytest.mark.parametrize(
    "name",
    ["abc", "My_Table-1.v2", "x" * 255, "arn:aws:dynamodb:us-east-1:123456789012:table/leases"],
)
def test_good_table_names_and_arns_are_accepted(ddb_client: Any, name: str) -> None:
    assert DynamoDBSemaphore(name, client=ddb_client).table_name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 2049, "2048-byte"),
        ("é" * 1025, "2048-byte"),  # 2,050 UTF-8 bytes in 1,025 characters
        ("orders-\udc80", "lone surrogate"),
    ],
)
def test_bad_limiter_names_are_refused_at_construction(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=reason) as exc:
        DynamoDBLimiter(name, 1)
    assert exc.value.name == "name"


def test_a_limiter_name_of_exactly_2048_bytes_is_accepted() -> None:
    assert DynamoDBLimiter("x" * 2048, 1).name == "x" * 2048
