"""The independent observer: peak overlap of downstream operations in an execution history.

Shared by the SDK 3.x and 1.7 suites. It reads only what the local runner recorded (operation
start and end timestamps), never the limiter's own bookkeeping, so it can catch the limiter
lying.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def all_operations(result: Any) -> list[Any]:
    """Every operation of a test result, children included, de-duplicated by operation id."""
    seen: dict[str, Any] = {}
    for op in result.get_all_operations():
        seen.setdefault(op.operation_id, op)
    return list(seen.values())


def intervals(results: Iterable[Any], kind: str) -> list[tuple[float, float]]:
    """(start, end) of every ``kind`` operation (e.g. "WaitOperation") across results."""
    out: list[tuple[float, float]] = []
    for result in results:
        for op in all_operations(result):
            if type(op).__name__ != kind:
                continue
            assert op.start_timestamp is not None, op
            assert op.end_timestamp is not None, f"{kind} {op.operation_id} never ended"
            out.append((op.start_timestamp.timestamp(), op.end_timestamp.timestamp()))
    return out


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant; an interval ending when another starts is not open."""
    events = [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans]
    events.sort(key=lambda e: (e[0], e[1]))  # ends (-1) before starts (+1) at equal times
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def peak_of(results: Any, kind: str) -> int:
    """Peak overlap of ``kind`` operations in one result or a list of results."""
    if not isinstance(results, list | tuple):
        results = [results]
    return peak_overlap(intervals(results, kind))


def op_signature(result: Any) -> list[tuple[str, str | None, str, str | None, str | None, str]]:
    """Operations as comparable tuples (id, parent, type, sub type, name, status), sorted."""
    return sorted(
        (
            op.operation_id,
            op.parent_id,
            str(op.operation_type),
            op.sub_type,
            op.name,
            str(op.status),
        )
        for op in all_operations(result)
    )
