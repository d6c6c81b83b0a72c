"""durable-semaphore: a DynamoDB-backed semaphore for AWS durable functions.

``from durable_semaphore import DynamoDBSemaphore, Lease`` gives the lease store.
"""

from durable_semaphore.errors import (
    AcquireTimeoutError,
    ConfigurationError,
    ContentionError,
    DurableSemaphoreError,
    InvalidArgumentError,
    NestedLimiterError,
    PrerequisiteError,
    TableNotFoundError,
    TableSchemaError,
    UnsupportedSDKVersionError,
)
from durable_semaphore.limiter import DynamoDBLimiter
from durable_semaphore.rate_limiter import DynamoDBRateLimiter
from durable_semaphore.sdk import MapConfig, ParallelConfig, install
from durable_semaphore.store import (
    DEFAULT_TABLE_NAME,
    DEFAULT_TTL_SECONDS,
    DynamoDBSemaphore,
    Lease,
    SlotCount,
)

# Importing the package makes MapConfig/ParallelConfig(limiter=...) take effect (idempotent).
install()

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_TABLE_NAME",
    "DEFAULT_TTL_SECONDS",
    "AcquireTimeoutError",
    "ConfigurationError",
    "ContentionError",
    "DurableSemaphoreError",
    "DynamoDBLimiter",
    "DynamoDBRateLimiter",
    "DynamoDBSemaphore",
    "InvalidArgumentError",
    "Lease",
    "MapConfig",
    "NestedLimiterError",
    "ParallelConfig",
    "PrerequisiteError",
    "SlotCount",
    "TableNotFoundError",
    "TableSchemaError",
    "UnsupportedSDKVersionError",
    "__version__",
]
