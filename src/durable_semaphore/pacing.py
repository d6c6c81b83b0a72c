"""A paced branch: it books its start under a rate limit, waits durably until then, then runs.

Two durable operations at most: the booking is a step (``durable-semaphore-book``), so a
replay reads the start from the execution's history and never books again; the wait (only
when the start is at least a second ahead) is the SDK's own ``ctx.wait``, whose length comes
from that record, so every replay asks for the same one. Durable waits have whole seconds, so
the branch waits the whole seconds durably and the rest (under a second) in-process: it never
starts before its booked instant, and never a second later than it needs to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python.context import DurableContext

from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.rate_limiter import DynamoDBRateLimiter

__all__ = ["BOOK_OPERATION_NAME", "Pace", "run_paced"]

R = TypeVar("R")

#: The step that books a paced branch's start.
BOOK_OPERATION_NAME = "durable-semaphore-book"
#: Longest in-process sleep before a start: anything longer is a durable wait.
_MAX_SLEEP_SECONDS = 1.0


@dataclass(frozen=True)
class Pace:
    """Everything the branches of one paced map/parallel call share."""

    limiter: DynamoDBRateLimiter
    execution_arn: str
    operation_id: str

    def holder(self, index: int) -> str:
        """The branch's holder id: the same shape as a lease's, so one branch is one booking
        on every replay and in every overlapping invocation."""
        return DynamoDBLimiter.holder_id(self.execution_arn, self.operation_id, str(index))


def run_paced(
    pace: Pace,
    ctx: DurableContext,
    index: int,
    body: Callable[[], R],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """Book, wait until the booked start, then run ``body``."""
    holder = pace.holder(index)

    def book(_step_ctx: Any) -> dict[str, float]:
        booking = pace.limiter.book(holder)
        return {"start": booking.start, "booked_at": booking.booked_at}

    record = ctx.step(book, name=BOOK_OPERATION_NAME)
    start, booked_at = float(record["start"]), float(record["booked_at"])
    whole = math.floor(start - booked_at)
    if whole >= 1:
        ctx.wait(Duration.from_seconds(whole))
    # The rest in-process: under a second after a durable wait, or the whole delay when it
    # was short; nothing at all on a replay that resumes after the start.
    remaining = start - clock()
    if remaining > 0:
        sleep(min(remaining, _MAX_SLEEP_SECONDS + 1.0))
    return body()
