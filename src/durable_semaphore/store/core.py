"""The store's common ground: its table, clock and reads, shared by the layers above.

The decision logic is layered as a chain of classes, each in its own module and each using
only the ones below it: :mod:`.queueing` (hand-off and the queue), :mod:`.reconciling`
(repairs), :mod:`.releasing`, :mod:`.acquiring`, :mod:`.limits` (limits set at run time),
then :class:`~.semaphore.DynamoDBSemaphore`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from durable_semaphore import retry
from durable_semaphore.store import requests
from durable_semaphore.store.client import ConditionFailed, StoreIO
from durable_semaphore.store.model import Waiter
from durable_semaphore.store.ordering import DEFAULT_AGING
from durable_semaphore.store.schema import (
    PK,
    QUEUE_PREFIX,
    SK,
    Meta,
    meta_key,
    waiter_from_item,
)

#: Bounded retries when writers collide or a reconcile loses a race.
MAX_ATTEMPTS = retry.CONFLICT.attempts
#: How many queue heads one Query reads: enough to skip a few dead waiters in one round trip.
HEADS_PER_QUERY = 4

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any


def backoff(attempt: int) -> None:
    """The store's pause before retrying a lost race (:data:`durable_semaphore.retry.CONFLICT`)."""
    retry.CONFLICT.pause(attempt)


class StoreCore:
    """Table, client, clock and skew margin, and the reads every layer needs."""

    #: Rank units one priority level is worth in the queue's order (store/ordering.py).
    aging: int = DEFAULT_AGING

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        clock: Callable[[], float],
        clock_skew_seconds: float,
    ) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client
        self.clock_skew_seconds = clock_skew_seconds
        self.io = StoreIO(client, table_name)
        self._clock = clock
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        #: Key -> the override this object last saw on its counter (store/overrides.py).
        #: Only keys with one are kept: a key absent here is believed to have none, so the
        #: map stays as small as the set of keys whose limit was set at run time.
        self._overrides: dict[str, int] = {}

    def now(self) -> float:
        """The store's clock, so callers judge expiry the same way the store does."""
        return self._clock()

    def _next_seq(self, now: float) -> int:
        """A waiter's queue number: its arrival time in microseconds, times 1,000, plus a
        random tiebreak; strictly increasing within this store object.

        Time-based, so concurrent arrivals never compete for one number (a shared counter
        made all but one of them retry). The order is arrival order up to the clients' clock
        differences: a client whose clock is behind joins ahead of waiters that arrived
        within that difference, which costs fairness, never safety.
        """
        base = int(now * 1_000_000) * 1000 + random.randrange(1000)
        with self._seq_lock:
            self._last_seq = max(base, self._last_seq + 1)
            return self._last_seq

    def _read_meta(self, key: str) -> Meta:
        meta = Meta.parse(self.io.get(meta_key(key)))
        self._learn(key, meta)
        return meta

    # -- limits set at run time ------------------------------------------------------------

    def _believed(self, key: str) -> int | None:
        """The override this object believes ``key`` has (None: none); admission writes
        carry it in their condition, so a wrong belief costs one refused write, never a
        slot counted against the wrong limit."""
        return self._overrides.get(key)

    def _learn(self, key: str, meta: Meta) -> bool:
        """Believe what ``meta`` (a read, or a refusal's item) says of the override; True
        when that changed the belief (the refused write is worth retrying at once)."""
        before = self._overrides.get(key)
        if meta.override is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = meta.override
        return before != meta.override

    def _in_force(self, key: str, code_limit: int) -> int:
        """The limit this object believes admissions on ``key`` count against."""
        believed = self._overrides.get(key)
        return believed if believed is not None else code_limit

    def _pinned(self, key: str) -> bool:
        """Whether ``key``'s counter is believed to have its TTL pinned (an override is set):
        writes then start with the variant that leaves the TTL alone."""
        return key in self._overrides

    def _queue_heads(self, key: str) -> list[Waiter]:
        out = self.io.call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :p)",
            ExpressionAttributeNames={"#pk": PK, "#sk": SK},
            ExpressionAttributeValues={":pk": {"S": key}, ":p": {"S": QUEUE_PREFIX}},
            ConsistentRead=True,
            Limit=HEADS_PER_QUERY,
        )
        return [waiter_from_item(item) for item in out.get("Items", [])]

    def _query_items(
        self, key: str, prefix: str, *, projection: str | None = None
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {":pk": {"S": key}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        if projection is not None:
            kwargs["ProjectionExpression"] = projection
        for page in self.io.call_pages("query", **kwargs):
            yield from page.get("Items", [])

    def _update_counter(
        self, build: Callable[[bool], dict[str, Any]], expires_at: float, key: str = ""
    ) -> dict[str, Any]:
        """A counter write that moves the item's TTL later when it must: try the variant the
        item is likely to need (raise it, unless ``key``'s TTL is believed pinned), and switch
        once if the refusal says the other one was needed. Any other refusal raises
        :class:`ConditionFailed`."""
        longer, switched = not self._pinned(key), False
        while True:
            try:
                return self.io.update(**build(longer))
            except ConditionFailed as refused:
                wanted = Meta.parse(refused.item).needs_longer_life(expires_at)
                if wanted == longer or switched:
                    raise
                longer, switched = wanted, True

    def _update_or_none(self, kwargs: dict[str, Any]) -> bool:
        """A repair write that may lose to another writer: True if it was applied."""
        try:
            self.io.update(**kwargs)
        except ConditionFailed:
            return False
        return True


__all__ = ["MAX_ATTEMPTS", "StoreCore", "backoff", "requests"]
