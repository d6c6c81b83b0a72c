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


class ConfigurationError(DurableSemaphoreError):
    """The AWS configuration this process sees cannot make a DynamoDB client: no region, or a
    malformed region or endpoint URL in the environment or the AWS config file.

    Raised when the client is created, before any request, instead of botocore's
    ``NoRegionError`` or ``ValueError`` (whose messages do not say what to set). ``setting``
    names what is wrong (``"region"`` or ``"endpoint_url"``), so tooling can phrase its own
    remedy (the CLI says ``--region``) without parsing the message.
    """

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(message)


class TableNotFoundError(DurableSemaphoreError):
    """The lease table does not exist (or is not visible with these credentials and region)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        super().__init__(
            f"DynamoDB table {table_name!r} does not exist; create it with "
            "`durable-semaphore create-table` or deploy template.yaml"
        )


class TableSchemaError(DurableSemaphoreError):
    """The table exists but is not a lease table: its key names, key types or key attribute
    types differ from ``pk`` (String, HASH) + ``sk`` (String, RANGE).

    No request can succeed on such a table, so this is never retried (and never a
    :class:`ContentionError`); nothing is written. ``table_name`` is the table and ``reason``
    says what differs from the expected key, so tooling can show it without parsing.
    """

    def __init__(self, table_name: str, reason: str) -> None:
        self.table_name = table_name
        self.reason = reason
        super().__init__(
            f"DynamoDB table {table_name!r} is not a lease table: {reason}; point --table "
            "(or $DURABLE_SEMAPHORE_TABLE) at a lease table, or create one under a new name "
            "with `durable-semaphore create-table`"
        )


class UnsupportedSDKVersionError(DurableSemaphoreError):
    """The installed durable execution SDK is outside the range this library supports."""


class ContentionError(DurableSemaphoreError):
    """A store operation kept losing races with other writers and gave up.

    This is not "the semaphore is full" (that is ``try_acquire`` returning None); it means the
    bounded internal retries for reconciling the slot count were exhausted.
    """


class DeadlineExceededError(DurableSemaphoreError):
    """A call ran out of its time budget (see :mod:`durable_semaphore.deadline`): DynamoDB did
    not answer in time, or a retry would have been sent past the deadline."""


class AcquireTimeoutError(DurableSemaphoreError):
    """No slot was had within the timeout of a blocking hold; its queue place was given up.

    ``key`` is the semaphore key, ``timeout`` the seconds waited, ``position`` the queue
    sequence number the waiter last had (None if it never had to queue; it orders the queue,
    it is not a count), ``ahead`` about how many waited ahead of it when it joined, and
    ``cause`` why no slot came when that was not just a full key: DynamoDB unreachable, not
    answering, throttling or failing. The exception's ``__cause__`` is the last store error.
    """

    def __init__(
        self,
        key: str,
        timeout: float,
        position: int | None,
        *,
        ahead: int | None = None,
        cause: str | None = None,
    ) -> None:
        self.key = key
        self.timeout = timeout
        self.position = position
        self.ahead = ahead
        self.cause = cause
        if cause is not None:
            why = f": {cause}"
        elif ahead is not None:
            why = f" (the key stayed full; {ahead} waited ahead of this holder when it queued)"
        elif position is not None:
            why = " (the key stayed full; it waited in the queue)"
        else:
            why = " (the key stayed full)"
        super().__init__(f"no slot on {key!r} within {timeout:g} s{why}")


class NestedLimiterError(DurableSemaphoreError):
    """A map/parallel asked for a key that the branch calling it already holds.

    Waiting for a second slot on a key you hold deadlocks once every slot is held by a parent
    waiting for its children, so the nested call is refused instead (deterministically, before
    any durable operation starts).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"nested map/parallel uses limiter key {key!r}, which the enclosing branch already "
            "holds; this could deadlock. Use a different named limiter (or limiter='dynamodb', "
            "whose key is per operation) for the inner map, or limit only one level"
        )


class PrerequisiteError(DurableSemaphoreError):
    """Something a command needs locally is missing or did not start (an optional extra such as
    ``demo``, the embedded DynamoDB). The CLI maps it to its prerequisite exit code."""


class EmbeddedDynamoDBError(PrerequisiteError):
    """The embedded DynamoDB of the demo and ``local-dynamodb`` could not be started, or
    stopped on its own."""


class PlottingUnavailableError(PrerequisiteError):
    """matplotlib is not installed (it is part of the ``demo`` extra): the demo carries on
    without its picture."""
