"""Fixtures for the SDK 3.x integration tests (testing library >= 1.3).

These tests need SDK >= 2.1: under SDK 1.x this folder is not collected (see collect_ignore_glob)
and ``tests/sdk1`` covers that line instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_durable_execution_sdk_python.__about__ import __version__ as SDK_VERSION

_MAJOR = int(SDK_VERSION.split(".")[0])
if _MAJOR < 2:
    # Not a silent skip: this whole folder targets SDK >= 2; run tests/sdk1 in the 1.x venv.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def limiter_env(
    ddb_endpoint: str,
    semaphore: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """Point ``limiter="dynamodb"`` at this test's fresh table in DynamoDB Local.

    Uses the real default path (env var table name, a boto3 client built by the library) with
    boto3's per-service endpoint variable, so nothing in the library is patched.
    """
    from durable_semaphore import limiter as limiter_module

    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    limiter_module._default_limiters.clear()
    yield semaphore
    limiter_module._default_limiters.clear()


@pytest.fixture
def leases_left(semaphore: Any) -> Callable[[], list[Any]]:
    """Every lease item still in the table (expired or not)."""

    def scan() -> list[Any]:
        return list(semaphore.scan_leases())

    return scan
