"""Fixtures for the chaos suite: a DynamoDB Local of its own, on disk, that tests may restart.

The session's shared server stays untouched: a restart here would break every other test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import default_client_config
from tests.chaos.run import RestartableDynamoDB
from tests.conftest import dynamodb_local


@pytest.fixture(scope="session")
def chaos_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableDynamoDB]:
    server = RestartableDynamoDB(dynamodb_local, tmp_path_factory.mktemp("chaos-db"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def chaos_client(chaos_db: RestartableDynamoDB) -> Any:
    """A client without faults, for set-up and the end-of-run checks."""
    return boto3.client(
        "dynamodb",
        endpoint_url=chaos_db.endpoint,
        region_name="us-east-1",
        config=default_client_config(),
    )


@pytest.fixture
def chaos_table(chaos_client: Any) -> Iterator[str]:
    """A fresh lease table on the chaos server."""
    name = f"chaos-{uuid.uuid4().hex[:12]}"
    DynamoDBSemaphore(table_name=name, client=chaos_client).create_table()
    yield name
    with contextlib.suppress(chaos_client.exceptions.ResourceNotFoundException):
        chaos_client.delete_table(TableName=name)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path / "logs"
