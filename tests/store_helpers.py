"""Small helpers shared by the store tests."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def count_requests(client: Any) -> Iterator[Counter[str]]:
    """Count the DynamoDB requests ``client`` sends inside the block, by operation name."""
    seen: Counter[str] = Counter()

    def on_send(request: Any = None, **_: Any) -> None:
        target = str(request.headers.get("X-Amz-Target", b"") or "") if request else ""
        seen[target.rsplit(".", 1)[-1].strip("'") or "unknown"] += 1

    client.meta.events.register("before-send.dynamodb", on_send)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-send.dynamodb", on_send)


def meta_rows(sem: Any) -> list[dict[str, Any]]:
    """The counter rows (``sk = #meta``) of ``sem``'s table, read strongly consistent."""
    out = sem.client.scan(
        TableName=sem.table_name,
        FilterExpression="sk = :m",
        ExpressionAttributeValues={":m": {"S": "#meta"}},
        ConsistentRead=True,
    )
    return list(out["Items"])
