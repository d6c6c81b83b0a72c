"""The lease store: a counting semaphore per key in DynamoDB, with a FIFO wait queue and
hand-off, and sharding for limits one item cannot carry; and GCRA rate bookings
(:mod:`.rates`, :class:`DynamoDBRateStore`), one conditional write per booked start.

Layers, each a module: :mod:`.model` (values), :mod:`.schema` (layout and codecs),
:mod:`.validate` (input checks), :mod:`.requests` (every request, each condition named),
:mod:`.client` (calls and errors), :mod:`.admin` (the table and scans), :mod:`.reconcile`
(the pure repair planner), :mod:`.shards`; and the decision logic, from :mod:`.queueing` up
to :class:`DynamoDBSemaphore` (:mod:`.semaphore`). docs/store.md describes the data model,
the condition on each write and what each operation costs.
"""

from durable_semaphore.store.client import (
    ENDPOINT_URL_HINT,
    admin_client_config,
    create_client,
    default_client_config,
    endpoint_url_problem,
)
from durable_semaphore.store.model import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    DEFAULT_QUEUE_TTL_SECONDS,
    DEFAULT_TABLE_NAME,
    DEFAULT_TTL_SECONDS,
    GRANTED,
    HELD,
    QUEUED,
    AcquireResult,
    Grant,
    Lease,
    ReclaimResult,
    ReleaseResult,
    SlotCount,
    Waiter,
    new_token,
)
from durable_semaphore.store.rates import (
    RATE_SK,
    Booking,
    DynamoDBRateStore,
    RateState,
    reserve,
    skew_window_bound,
    window_bound,
)
from durable_semaphore.store.requests import KEY_FULL_OF_LIVE_LEASES
from durable_semaphore.store.schema import (
    ATTRIBUTE_DEFINITIONS,
    HOLDER_PREFIX,
    KEY_SCHEMA,
    LEASE_PREFIX,
    META_SK,
    PK,
    QUEUE_PREFIX,
    SK,
    TTL_ATTRIBUTE,
    table_schema_problem,
)
from durable_semaphore.store.semaphore import DynamoDBSemaphore
from durable_semaphore.store.validate import MAX_LIMIT, validate_clock_skew, validate_rate

__all__ = [
    "ATTRIBUTE_DEFINITIONS",
    "DEFAULT_CLOCK_SKEW_SECONDS",
    "DEFAULT_QUEUE_TTL_SECONDS",
    "DEFAULT_TABLE_NAME",
    "DEFAULT_TTL_SECONDS",
    "ENDPOINT_URL_HINT",
    "GRANTED",
    "HELD",
    "HOLDER_PREFIX",
    "KEY_FULL_OF_LIVE_LEASES",
    "KEY_SCHEMA",
    "LEASE_PREFIX",
    "MAX_LIMIT",
    "META_SK",
    "PK",
    "QUEUED",
    "QUEUE_PREFIX",
    "RATE_SK",
    "SK",
    "TTL_ATTRIBUTE",
    "AcquireResult",
    "Booking",
    "DynamoDBRateStore",
    "DynamoDBSemaphore",
    "Grant",
    "Lease",
    "RateState",
    "ReclaimResult",
    "ReleaseResult",
    "SlotCount",
    "Waiter",
    "admin_client_config",
    "create_client",
    "default_client_config",
    "endpoint_url_problem",
    "new_token",
    "reserve",
    "skew_window_bound",
    "table_schema_problem",
    "validate_clock_skew",
    "validate_rate",
    "window_bound",
]
