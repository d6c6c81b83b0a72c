"""Shared fixtures: one DynamoDB Local per test session, a fresh table per test.

Every concurrency and integration test runs against Amazon DynamoDB Local (linearizable
conditional writes). moto is only for single-threaded unit tests: it loses updates under
concurrent conditional writes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import TTL_ATTRIBUTE, default_client_config

ROOT = Path(__file__).resolve().parent.parent

# Dummy credentials and a region: DynamoDB Local accepts any, and no test may reach AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


def _load_infra() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dynamodb_local", ROOT / "infra" / "dynamodb_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dynamodb_local"] = module
    spec.loader.exec_module(module)
    return module


dynamodb_local = _load_infra()


@pytest.fixture(scope="session")
def ddb_endpoint() -> Iterator[str]:
    """The endpoint URL of a DynamoDB Local started for this test session."""
    with dynamodb_local.running() as endpoint:
        yield endpoint


def local_dynamodb_client(endpoint: str) -> Any:
    """A DynamoDB client for DynamoDB Local, with the library's client config and dummy
    credentials (also for worker processes, which do not see this module's env defaults)."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=default_client_config(),
    )


@pytest.fixture(scope="session")
def ddb_client(ddb_endpoint: str) -> Any:
    return local_dynamodb_client(ddb_endpoint)


@pytest.fixture
def table_name(ddb_client: Any) -> Iterator[str]:
    """A fresh, empty table name per test; the table is created by the fixture that needs it."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(ddb_client.exceptions.ResourceNotFoundException):
        ddb_client.delete_table(TableName=name)


@pytest.fixture
def make_semaphore(ddb_client: Any, table_name: str) -> Callable[..., DynamoDBSemaphore]:
    """Build semaphores on this test's table (created once), e.g. with an injected clock."""
    created: list[bool] = []

    def build(clock: Callable[[], float] | None = None) -> DynamoDBSemaphore:
        kwargs: dict[str, Any] = {"table_name": table_name, "client": ddb_client}
        if clock is not None:
            kwargs["clock"] = clock
        sem = DynamoDBSemaphore(**kwargs)
        if not created:
            sem.create_table()
            created.append(True)
        return sem

    return build


@pytest.fixture
def semaphore(make_semaphore: Callable[..., DynamoDBSemaphore]) -> DynamoDBSemaphore:
    """A DynamoDBSemaphore on a fresh table in DynamoDB Local."""
    return make_semaphore()


@pytest.fixture
def limiter_env(
    ddb_endpoint: str, semaphore: DynamoDBSemaphore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DynamoDBSemaphore]:
    """Point ``limiter="dynamodb"`` (and limiters built with this table's name) at this test's
    fresh table in DynamoDB Local.

    Uses the real default path (env var table name, a boto3 client built by the library) with
    boto3's per-service endpoint variable, so nothing in the library is patched.
    """
    from durable_semaphore import spec as spec_module

    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    monkeypatch.delenv("DURABLE_SEMAPHORE_WAKER", raising=False)
    spec_module._default_limiters.clear()
    yield semaphore
    spec_module._default_limiters.clear()


@pytest.fixture
def leases_left(semaphore: DynamoDBSemaphore) -> Callable[[], list[Any]]:
    """Every lease still in the table (expired or not). Also checks that every row of the
    table carries the TTL attribute, so that whatever key kinds the test used, nothing is
    left that DynamoDB would keep forever once idle."""

    def scan() -> list[Any]:
        rows = semaphore.client.scan(TableName=semaphore.table_name, ConsistentRead=True)
        forever = [row for row in rows["Items"] if TTL_ATTRIBUTE not in row]
        assert forever == [], f"rows without {TTL_ATTRIBUTE}: {forever}"
        return list(semaphore.scan_leases())

    return scan


class FakeClock:
    """A settable clock, so expiry tests need no sleeps.

    It starts at the real time: DynamoDB Local runs a real TTL sweeper, which would delete
    leases whose ``expires_at`` lies in the real past while a test still expects them.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
