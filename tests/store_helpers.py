"""Small helpers shared by the store tests."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


READS = ("GetItem", "Query")
WRITES = ("UpdateItem", "DeleteItem", "TransactWriteItems")


@dataclass
class Traffic:
    """What a client sent inside a ``traffic`` block: calls by operation, and the capacity
    DynamoDB reported (read units summed; write units summed and, per write, in order)."""

    calls: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0
    units_per_write: list[float] = field(default_factory=list)


@contextlib.contextmanager
def traffic(client: Any) -> Iterator[Traffic]:
    """Count ``client``'s calls by operation and the capacity they consume
    (``ReturnConsumedCapacity=TOTAL`` added to every read and write)."""
    seen = Traffic()

    def on_call(model: Any, **_: Any) -> None:
        seen.calls[model.name] += 1

    def want_capacity(params: dict[str, Any], **_: Any) -> None:
        params["ReturnConsumedCapacity"] = "TOTAL"

    def on_result(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        consumed = parsed.get("ConsumedCapacity", {})
        if isinstance(consumed, list):  # a transaction reports one entry per table
            units = sum(float(c.get("CapacityUnits", 0)) for c in consumed)
        else:
            units = float(consumed.get("CapacityUnits", 0))
        if model.name in READS:
            seen.read_units += units
        elif model.name in WRITES:
            seen.write_units += units
            seen.units_per_write.append(units)

    hooks: list[tuple[str, Callable[..., None]]] = [("before-call.dynamodb", on_call)]
    hooks += [(f"provide-client-params.dynamodb.{op}", want_capacity) for op in READS + WRITES]
    hooks.append(("after-call.dynamodb", on_result))
    for event, handler in hooks:
        client.meta.events.register(event, handler)
    try:
        yield seen
    finally:
        for event, handler in hooks:
            client.meta.events.unregister(event, handler)
