"""Exception types of durable-semaphore.

Every error the library raises on purpose derives from :class:`DurableSemaphoreError`, so callers
can tell our refusals (bad input, missing table) from DynamoDB or SDK failures.
"""

from __future__ import annotations

from typing import Any


class DurableSemaphoreError(Exception):
    """Base class of every error raised by durable-semaphore on purpose."""


class InvalidArgumentError(DurableSemaphoreError, ValueError):
    """An argument is out of range or malformed. Raised before anything is written.

    ``name`` is the parameter and ``value`` the offending value, so that tooling (the CLI, logs)
    can show them without parsing the message.
    """

    def __init__(self, name: str, value: Any, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"invalid {name}={shown}: {reason}")


class TableNotFoundError(DurableSemaphoreError):
    """The lease table does not exist (or is not visible with these credentials and region)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        super().__init__(
            f"DynamoDB table {table_name!r} does not exist; create it with "
            "`durable-semaphore create-table` or deploy template.yaml"
        )


class UnsupportedSDKVersionError(DurableSemaphoreError):
    """The installed durable execution SDK is outside the range this library supports."""


class ContentionError(DurableSemaphoreError):
    """A store operation kept losing races with other writers and gave up.

    This is not "the semaphore is full" (that is ``try_acquire`` returning None); it means the
    bounded internal retries for reconciling the slot count were exhausted.
    """


class AcquireTimeoutError(DurableSemaphoreError):
    """No slot was free within the timeout of a blocking hold; its queue place was given up.

    ``key`` is the semaphore key, ``timeout`` the seconds waited, and ``position`` the queue
    sequence number the waiter last had (None if it never had to queue), so a caller can log
    how far it got without parsing the message.
    """

    def __init__(self, key: str, timeout: float, position: int | None) -> None:
        self.key = key
        self.timeout = timeout
        self.position = position
        where = f" (queue position {position})" if position is not None else ""
        super().__init__(f"no slot on {key!r} within {timeout:g} s{where}")
