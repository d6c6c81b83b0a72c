"""Table administration and whole-table reads: creating the table, checking it, and the
scans the reaper and the CLI use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from durable_semaphore.errors import InvalidArgumentError, TableSchemaError
from durable_semaphore.store.client import StoreIO, error_code
from durable_semaphore.store.model import Lease, Waiter
from durable_semaphore.store.schema import (
    ATTRIBUTE_DEFINITIONS,
    HOLDER_PREFIX,
    KEY_SCHEMA,
    META_SK,
    PK,
    QUEUE_PREFIX,
    SK,
    TTL_ATTRIBUTE,
    Meta,
    marker_lease,
    table_schema_problem,
    waiter_from_item,
)


def create_table(io: StoreIO, *, wait: bool = True) -> bool:
    """Create the lease table if missing, check its key and enable TTL; True if created."""
    created = False
    try:
        io.client.create_table(
            TableName=io.table_name,
            KeySchema=KEY_SCHEMA,  # type: ignore[arg-type]
            AttributeDefinitions=ATTRIBUTE_DEFINITIONS,  # type: ignore[arg-type]
            BillingMode="PAY_PER_REQUEST",
        )
        created = True
    except ClientError as err:
        if error_code(err) != "ResourceInUseException":
            raise
    if wait:
        io.client.get_waiter("table_exists").wait(
            TableName=io.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
    desc = io.client.describe_table(TableName=io.table_name)["Table"]
    problem = table_schema_problem(desc)
    if problem is not None:
        raise TableSchemaError(io.table_name, problem)
    enable_ttl(io)
    return created


def enable_ttl(io: StoreIO) -> None:
    """TTL on ``expires_at``, as the template sets it: idle rows are deleted by DynamoDB."""
    try:
        current = io.client.describe_time_to_live(TableName=io.table_name)
        status = current.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status in ("ENABLED", "ENABLING"):
            return
        io.client.update_time_to_live(
            TableName=io.table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as err:
        # Enabling twice races harmlessly; anything else is real.
        if "already enabled" not in str(err).lower():
            raise


def check_table(io: StoreIO) -> None:
    """One Query that reads nothing on a lease table and is refused by any other key schema
    (a Scan would not be: it filters without checking the key). Needs only ``dynamodb:Query``,
    which every role of the table has."""
    io.call(
        "query",
        TableName=io.table_name,
        KeyConditionExpression="#pk = :pk AND begins_with(#sk, :p)",
        ExpressionAttributeNames={"#pk": PK, "#sk": SK},
        ExpressionAttributeValues={":pk": {"S": META_SK}, ":p": {"S": HOLDER_PREFIX}},
        Limit=1,
    )


def _page_size(page_size: int | None) -> dict[str, Any]:
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise InvalidArgumentError("page_size", page_size, "must be an integer >= 1 or None")
    return {"PageSize": page_size} if page_size is not None else {}


def scan_leases(io: StoreIO, page_size: int | None) -> Iterator[Lease]:
    """Every lease in the table (expired ones included) and every waiter's marker."""
    pages = io.call_pages(
        "scan",
        TableName=io.table_name,
        FilterExpression="#sk = :meta OR begins_with(#sk, :p)",
        ExpressionAttributeNames={"#sk": SK},
        ExpressionAttributeValues={":meta": {"S": META_SK}, ":p": {"S": HOLDER_PREFIX}},
        ConsistentRead=True,
        PaginationConfig=_page_size(page_size),
    )
    for page in pages:
        for item in page.get("Items", []):
            if item[SK]["S"] == META_SK:
                yield from Meta.parse(item).leases.values()
            else:
                yield marker_lease(item)


def scan_waiters(io: StoreIO, page_size: int | None) -> Iterator[Waiter]:
    """Every queue entry in the table."""
    pages = io.call_pages(
        "scan",
        TableName=io.table_name,
        FilterExpression="begins_with(#sk, :p)",
        ExpressionAttributeNames={"#sk": SK},
        ExpressionAttributeValues={":p": {"S": QUEUE_PREFIX}},
        ConsistentRead=True,
        PaginationConfig=_page_size(page_size),
    )
    for page in pages:
        for item in page.get("Items", []):
            yield waiter_from_item(item)
