"""The independent observer: what ran, read from the execution histories and the wire.

The demo's verdict never comes from the limiter's own bookkeeping: the peak in flight is the
largest overlap of the downstream operations' intervals in the histories
(``res.get_all_operations()``), waits are measured from each branch's start to its downstream
operation's start, and DynamoDB requests are counted by a botocore hook on the limiter's client.
So the demo would catch the limiter lying. Nothing here imports the SDK or its testing library:
the functions take the runner's result objects and read their attributes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from durable_semaphore.waiting import POLL_OPERATION_NAME, WAIT_OPERATION_NAME

#: The names of the limiter's own wait operations: a branch whose history holds one waited.
LIMITER_WAIT_NAMES = frozenset({WAIT_OPERATION_NAME, POLL_OPERATION_NAME})


def all_operations(result: Any) -> list[Any]:
    """Every operation of a runner result, children included, de-duplicated by operation id."""
    seen: dict[str, Any] = {}
    for op in result.get_all_operations():
        seen.setdefault(op.operation_id, op)
    return list(seen.values())


def _is_task(op: Any, kind: str, name: str | None) -> bool:
    return type(op).__name__ == kind and (name is None or getattr(op, "name", None) == name)


def operation_intervals(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every ``kind`` operation (named ``name``, if given);
    unfinished ones raise."""
    spans: list[tuple[float, float]] = []
    for op in all_operations(result):
        if not _is_task(op, kind, name):
            continue
        if op.start_timestamp is None or op.end_timestamp is None:
            raise RuntimeError(f"{kind} {op.operation_id} has no start or end in the history")
        spans.append((op.start_timestamp.timestamp(), op.end_timestamp.timestamp()))
    return spans


def _branch_waits(
    result: Any, kind: str, name: str | None
) -> list[tuple[str | None, float, float]]:
    """(branch id, branch start, ``kind`` start) for each task, from the history (the branch
    is the task's parent context), never from the limiter."""
    ops = {op.operation_id: op for op in all_operations(result)}
    out: list[tuple[str | None, float, float]] = []
    for op in ops.values():
        if not _is_task(op, kind, name) or op.start_timestamp is None:
            continue
        parent_id = getattr(op, "parent_id", None)
        parent = ops.get(parent_id or "")
        if parent is None or parent.start_timestamp is None:
            continue
        out.append((parent_id, parent.start_timestamp.timestamp(), op.start_timestamp.timestamp()))
    return out


def branch_waits(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[float]:
    """Seconds each branch waited for its slot: from the branch's start to its ``kind`` start."""
    return [max(0.0, end - start) for _b, start, end in _branch_waits(result, kind, name)]


def wait_spans(
    result: Any, kind: str = "InvokeOperation", name: str | None = None
) -> list[tuple[float, float]]:
    """(start, end) of each wait for a slot, as :func:`branch_waits` measures it, for the
    branches whose history holds a wait of the limiter (a callback or a poll). A branch that
    got its slot at once spent that time on one acquire, not waiting."""
    waited = {
        getattr(op, "parent_id", None)
        for op in all_operations(result)
        if (op.name or "") in LIMITER_WAIT_NAMES
    }
    return [
        (start, end) for branch, start, end in _branch_waits(result, kind, name) if branch in waited
    ]


def busy_while_waiting(
    tasks: Iterable[tuple[float, float]], waits: Iterable[tuple[float, float]], limit: int
) -> float | None:
    """The time-averaged number of tasks in flight, over the moments when at least one branch
    waited for a slot, as a share of ``limit``. None when nobody waited."""
    events = sorted(
        [(s, 0, 1) for s, _ in tasks]
        + [(e, 0, -1) for _, e in tasks]
        + [(s, 1, 1) for s, _ in waits]
        + [(e, 1, -1) for _, e in waits],
        key=lambda ev: (ev[0], ev[2]),
    )
    busy = waiting = 0
    covered = integral = 0.0
    last: float | None = None
    for at, which, delta in events:
        if last is not None and waiting > 0:
            covered += at - last
            integral += (at - last) * busy
        last = at
        if which == 0:
            busy += delta
        else:
            waiting += delta
    if covered <= 0:
        return None
    return integral / covered / limit


def jain_fairness(values: Sequence[float]) -> float:
    """Jain's index (sum x)^2 / (n * sum x^2): 1.0 when all are equal, 1/n at worst."""
    if not values:
        return 1.0
    squares = sum(x * x for x in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def overlap_steps(spans: Iterable[tuple[float, float]]) -> list[tuple[float, int]]:
    """The open-interval count after each event time, as (time, count), in time order.

    An interval that ends exactly when another starts does not overlap it (ends sort first).
    """
    events = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda e: (e[0], e[1]),
    )
    steps: list[tuple[float, int]] = []
    current = 0
    for at, delta in events:
        current += delta
        if steps and steps[-1][0] == at:
            steps[-1] = (at, current)
        else:
            steps.append((at, current))
    return steps


def peak_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    return max((count for _, count in overlap_steps(spans)), default=0)


# -- counting DynamoDB requests ----------------------------------------------------------------


class RequestCounter:
    """Counts the HTTP requests a boto3 client sends, retries included, by operation.

    Hooked on botocore's ``before-send`` event, so it sees exactly what goes on the wire.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_operation: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send.dynamodb", self._on_send)

    def detach(self, client: Any) -> None:
        """Stop counting (``--compare`` runs twice on one client)."""
        client.meta.events.unregister("before-send.dynamodb", self._on_send)

    def _on_send(self, request: Any = None, **_: Any) -> None:
        target = ""
        if request is not None:
            target = str(request.headers.get("X-Amz-Target", b"") or "")
        name = target.rsplit(".", 1)[-1].strip("'") or "unknown"
        with self._lock:
            self.by_operation[name] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_operation.values())
