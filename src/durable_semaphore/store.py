"""The lease store: a counting semaphore in DynamoDB built from conditional writes.

Data model (one partition per semaphore key)::

    pk = <key>   sk = "#meta"          count, ver            the slot counter
    pk = <key>   sk = "h#<holder>"     holder, acquired_at,  one item per lease
                                       expires_at (TTL), execution_arn

Why this shape:

* The counter makes "fewer than ``limit`` holders" a single-item condition, which DynamoDB can
  check atomically. The holder items make the state *derivable from identities*: acquire puts
  the holder item and bumps the counter in one transaction, so the same holder can never be
  counted twice (``attribute_not_exists`` on its item) and a release that does not find its item
  changes nothing. The counter can never go negative and never drifts from the holder items,
  except upward when DynamoDB's TTL sweeper deletes an expired item behind our back; a
  version-checked reconcile (``ver``) repairs that the next time the semaphore looks full.
* Writes stay constant-size: an acquire or release touches one small counter item and one small
  lease item, whatever the number of holders (a single item with a map of holders grows with
  every holder: about 8 WCU per write at 100 holders, and it cannot exceed 400 KB).

Expiry has one-second granularity because ``expires_at`` doubles as the table's TTL attribute,
which DynamoDB reads as whole epoch seconds.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from durable_semaphore import observability
from durable_semaphore.errors import (
    ContentionError,
    DurableSemaphoreError,
    InvalidArgumentError,
    TableNotFoundError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

DEFAULT_TABLE_NAME = "durable-semaphore"
DEFAULT_TTL_SECONDS = 86_400

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
META_SK = "#meta"
HOLDER_PREFIX = "h#"

#: The key schema shared by :meth:`DynamoDBSemaphore.create_table` and template.yaml.
KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": PK, "KeyType": "HASH"},
    {"AttributeName": SK, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS: list[dict[str, str]] = [
    {"AttributeName": PK, "AttributeType": "S"},
    {"AttributeName": SK, "AttributeType": "S"},
]

# DynamoDB's own limits on key attributes, in UTF-8 bytes.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
MAX_HOLDER_BYTES = MAX_SORT_KEY_BYTES - len(HOLDER_PREFIX)
MAX_EXECUTION_ARN_BYTES = 2048
# A transaction holds at most 100 items; one is the counter.
_MAX_DELETES_PER_RECONCILE = 99
# Bounded retries when transactions collide (TransactionConflict) or a reconcile loses a race.
_MAX_ATTEMPTS = 50


def default_client_config() -> Config:
    """Botocore's standard retry mode: it retries throttling, 5xx and connection resets."""
    return Config(
        retries={"mode": "standard", "max_attempts": 10},
        connect_timeout=5,
        read_timeout=15,
    )


@dataclass(frozen=True, slots=True)
class Lease:
    """One held slot. Times are epoch seconds."""

    key: str
    holder: str
    acquired_at: float
    expires_at: float
    execution_arn: str | None = None

    def is_live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True, slots=True)
class SlotCount:
    """The counter item as stored: ``count`` includes expired leases not yet reclaimed."""

    count: int
    version: int


def _validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError("key", key, "must be a non-empty string")
    if len(key.encode("utf-8")) > MAX_PARTITION_KEY_BYTES:
        raise InvalidArgumentError(
            "key", key, f"is over DynamoDB's {MAX_PARTITION_KEY_BYTES}-byte partition key limit"
        )
    return key


def _validate_holder(holder: object) -> str:
    if not isinstance(holder, str) or not holder:
        raise InvalidArgumentError("holder", holder, "must be a non-empty string")
    if len(holder.encode("utf-8")) > MAX_HOLDER_BYTES:
        raise InvalidArgumentError(
            "holder",
            holder,
            f"is over {MAX_HOLDER_BYTES} bytes (DynamoDB's sort key limit less our prefix)",
        )
    return holder


def _validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgumentError("limit", limit, "must be an integer >= 1")
    return limit


def _validate_ttl(ttl_seconds: object) -> float:
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not math.isfinite(ttl_seconds)
        or ttl_seconds <= 0
    ):
        raise InvalidArgumentError("ttl_seconds", ttl_seconds, "must be a finite number > 0")
    return float(ttl_seconds)


def _validate_arn(execution_arn: object) -> str | None:
    if execution_arn is None:
        return None
    if not isinstance(execution_arn, str) or not execution_arn:
        raise InvalidArgumentError("execution_arn", execution_arn, "must be a non-empty string")
    if len(execution_arn.encode("utf-8")) > MAX_EXECUTION_ARN_BYTES:
        raise InvalidArgumentError(
            "execution_arn", execution_arn, f"is over {MAX_EXECUTION_ARN_BYTES} bytes"
        )
    return execution_arn


def _num(value: float) -> dict[str, str]:
    if float(value).is_integer():
        return {"N": str(int(value))}
    return {"N": repr(float(value))}


def _lease_from_item(item: Mapping[str, Any]) -> Lease:
    arn = item.get("execution_arn", {}).get("S")
    return Lease(
        key=item[PK]["S"],
        holder=item[SK]["S"][len(HOLDER_PREFIX) :],
        acquired_at=float(item["acquired_at"]["N"]),
        expires_at=float(item[TTL_ATTRIBUTE]["N"]),
        execution_arn=arn,
    )


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class DynamoDBSemaphore:
    """A counting semaphore per key, with idempotent, identity-based leases.

    Thread-safe as far as boto3 clients are (a client may be shared between threads).
    ``clock`` returns epoch seconds; inject one to test expiry without sleeping.
    """

    def __init__(
        self,
        table_name: str = DEFAULT_TABLE_NAME,
        client: DynamoDBClient | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(table_name, str) or not (3 <= len(table_name) <= 255):
            raise InvalidArgumentError("table_name", table_name, "must be 3 to 255 characters")
        self.table_name = table_name
        if client is None:
            client = boto3.client(
                "dynamodb",
                endpoint_url=endpoint_url,
                region_name=region_name,
                config=default_client_config(),
            )
        self.client: DynamoDBClient = client
        self._clock = clock

    # ------------------------------------------------------------------ table

    def create_table(self, *, wait: bool = True) -> bool:
        """Create the lease table if missing; returns True if this call created it.

        Idempotent. Verifies that an existing table has our key schema, and enables TTL on
        ``expires_at`` (the template does the same), so expired leases are eventually deleted.
        """
        created = False
        try:
            self.client.create_table(
                TableName=self.table_name,
                KeySchema=KEY_SCHEMA,  # type: ignore[arg-type]
                AttributeDefinitions=ATTRIBUTE_DEFINITIONS,  # type: ignore[arg-type]
                BillingMode="PAY_PER_REQUEST",
            )
            created = True
        except ClientError as err:
            if _error_code(err) != "ResourceInUseException":
                raise
        if wait:
            self.client.get_waiter("table_exists").wait(
                TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        desc = self.client.describe_table(TableName=self.table_name)["Table"]
        schema = sorted((k["AttributeName"], k["KeyType"]) for k in desc.get("KeySchema", []))
        if schema != sorted((k["AttributeName"], k["KeyType"]) for k in KEY_SCHEMA):
            raise DurableSemaphoreError(
                f"table {self.table_name!r} exists with key schema {schema}, expected "
                f"{PK} (HASH) + {SK} (RANGE)"
            )
        self._enable_ttl()
        return created

    def _enable_ttl(self) -> None:
        try:
            current = self.client.describe_time_to_live(TableName=self.table_name)
            status = current.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
            if status in ("ENABLED", "ENABLING"):
                return
            self.client.update_time_to_live(
                TableName=self.table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except ClientError as err:
            # Enabling twice races harmlessly; anything else is real.
            if "already enabled" not in str(err).lower():
                raise

    # ------------------------------------------------------------ operations

    def try_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        execution_arn: str | None = None,
    ) -> Lease | None:
        """Take a slot for ``holder`` under ``key`` if fewer than ``limit`` live leases exist.

        Idempotent per ``(key, holder)``: a holder that already holds a live lease gets it back,
        with its expiry extended to at least now + ``ttl_seconds``; it never takes a second slot.
        Returns None when the semaphore is full.
        """
        _validate_key(key)
        _validate_holder(holder)
        _validate_limit(limit)
        ttl = _validate_ttl(ttl_seconds)
        _validate_arn(execution_arn)

        for attempt in range(_MAX_ATTEMPTS):
            now = self._clock()
            expires_at = math.ceil(now + ttl)
            item: dict[str, Any] = {
                PK: {"S": key},
                SK: {"S": HOLDER_PREFIX + holder},
                "holder": {"S": holder},
                "acquired_at": _num(now),
                TTL_ATTRIBUTE: _num(expires_at),
            }
            if execution_arn is not None:
                item["execution_arn"] = {"S": execution_arn}
            try:
                self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": self._meta_key(key),
                                "UpdateExpression": (
                                    "SET #c = if_not_exists(#c, :zero) + :one, "
                                    "#v = if_not_exists(#v, :zero) + :one"
                                ),
                                "ConditionExpression": "attribute_not_exists(#c) OR #c < :limit",
                                "ExpressionAttributeNames": {"#c": "count", "#v": "ver"},
                                "ExpressionAttributeValues": {
                                    ":zero": {"N": "0"},
                                    ":one": {"N": "1"},
                                    ":limit": {"N": str(limit)},
                                },
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table_name,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(#sk)",
                                "ExpressionAttributeNames": {"#sk": SK},
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                    ]
                )
                observability.lease_acquired(key, holder)
                return Lease(key, holder, now, float(expires_at), execution_arn)
            except _Cancelled as cancelled:
                meta_reason, lease_reason = cancelled.reasons
                if lease_reason.get("Code") == "ConditionalCheckFailed":
                    existing = lease_reason.get("Item")
                    if existing is not None and float(existing[TTL_ATTRIBUTE]["N"]) > now:
                        renewed = self.renew(key, holder, ttl)
                        if renewed is not None:
                            return renewed
                        continue  # it expired or was released meanwhile: start over
                    # Our own expired lease still occupies its item: clear it, then retry.
                    self._reconcile(key)
                    continue
                if meta_reason.get("Code") == "ConditionalCheckFailed":
                    # Full by the counter, which may still include expired leases.
                    outcome = self._reconcile(key)
                    if outcome is None:
                        _backoff(attempt)
                        continue
                    if outcome[1] > 0:
                        continue
                    return None
                # TransactionConflict and the like: someone else is mid-transaction.
                _backoff(attempt)
        raise ContentionError(f"try_acquire({key!r}, {holder!r}) lost {_MAX_ATTEMPTS} races")

    def renew(
        self, key: str, holder: str, ttl_seconds: float = DEFAULT_TTL_SECONDS
    ) -> Lease | None:
        """Extend a live lease to at least now + ``ttl_seconds``; never takes a new slot.

        Returns the lease, or None if ``holder`` holds no live lease on ``key``. Expiry is only
        ever moved later, so a short-TTL renew cannot cut a longer lease short.
        """
        _validate_key(key)
        _validate_holder(holder)
        ttl = _validate_ttl(ttl_seconds)
        now = self._clock()
        expires_at = math.ceil(now + ttl)
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=self._lease_key(key, holder),
                UpdateExpression="SET #e = :exp",
                ConditionExpression="attribute_exists(#sk) AND #e > :now AND #e < :exp",
                ExpressionAttributeNames={"#e": TTL_ATTRIBUTE, "#sk": SK},
                ExpressionAttributeValues={":exp": _num(expires_at), ":now": _num(now)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return _lease_from_item(out["Attributes"])
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
            if old is not None and float(old[TTL_ATTRIBUTE]["N"]) > now:
                return _lease_from_item(old)  # already lives at least that long
            return None

    def release(self, key: str, holder: str) -> bool:
        """Free ``holder``'s slot. Idempotent: True only if this call released a live lease.

        Releasing a lease that is not held, was already released, or has expired returns False
        and leaves the count right (an expired lease's item is cleaned up on the way).
        """
        _validate_key(key)
        _validate_holder(holder)
        for attempt in range(_MAX_ATTEMPTS):
            now = self._clock()
            try:
                self._transact(
                    [
                        {
                            "Delete": {
                                "TableName": self.table_name,
                                "Key": self._lease_key(key, holder),
                                "ConditionExpression": "attribute_exists(#sk) AND #e > :now",
                                "ExpressionAttributeNames": {"#sk": SK, "#e": TTL_ATTRIBUTE},
                                "ExpressionAttributeValues": {":now": _num(now)},
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": self._meta_key(key),
                                "UpdateExpression": "SET #c = #c - :one, #v = #v + :one",
                                "ConditionExpression": "#c > :zero",
                                "ExpressionAttributeNames": {"#c": "count", "#v": "ver"},
                                "ExpressionAttributeValues": {
                                    ":zero": {"N": "0"},
                                    ":one": {"N": "1"},
                                },
                            }
                        },
                    ]
                )
                observability.lease_released(key, holder)
                return True
            except _Cancelled as cancelled:
                lease_reason, meta_reason = cancelled.reasons
                if lease_reason.get("Code") == "ConditionalCheckFailed":
                    if lease_reason.get("Item") is not None:
                        # Expired but still present: not held any more, but clear it now.
                        self._reconcile(key)
                    return False
                if meta_reason.get("Code") == "ConditionalCheckFailed":
                    # A lease item exists but the counter says 0: only possible after manual
                    # edits. Rebuild the counter from the holder items and try again.
                    self._reconcile(key, force=True)
                    continue
                _backoff(attempt)
        raise ContentionError(f"release({key!r}, {holder!r}) lost {_MAX_ATTEMPTS} races")

    def holders(self, key: str, prefix: str | None = None) -> list[Lease]:
        """Live (unexpired) leases on ``key``, read with strong consistency.

        ``prefix`` narrows to holder ids starting with it (the SDK integration names holders
        ``<execution>#<map op>#<branch op>``, so a prefix selects one map's leases).
        """
        _validate_key(key)
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidArgumentError("prefix", prefix, "must be a string or None")
        now = self._clock()
        return [lease for lease in self._query_leases(key, prefix or "") if lease.is_live(now)]

    def reclaim_expired(self, key: str) -> int:
        """Delete the expired leases of ``key`` and fix its counter. Returns leases removed."""
        _validate_key(key)
        total = 0
        for attempt in range(_MAX_ATTEMPTS):
            outcome = self._reconcile(key)
            if outcome is None:
                _backoff(attempt)
                continue
            total += outcome[0]
            if outcome[0] < _MAX_DELETES_PER_RECONCILE:
                return total
        raise ContentionError(f"reclaim_expired({key!r}) lost {_MAX_ATTEMPTS} races")

    def slot_count(self, key: str) -> SlotCount:
        """The stored counter, for diagnostics and tests: it includes unreclaimed expired leases."""
        _validate_key(key)
        out = self._call(
            "get_item", TableName=self.table_name, Key=self._meta_key(key), ConsistentRead=True
        )
        item = out.get("Item")
        if not item:
            return SlotCount(0, 0)
        return SlotCount(
            int(item.get("count", {"N": "0"})["N"]), int(item.get("ver", {"N": "0"})["N"])
        )

    def scan_leases(self, *, page_size: int | None = None) -> Iterator[Lease]:
        """Every lease item in the table, expired ones included (for the reaper and the CLI).

        ``page_size`` caps the items DynamoDB reads per Scan request (before the filter drops
        counter items), which bounds the read capacity one request consumes; None lets DynamoDB
        fill 1 MB pages.
        """
        if page_size is not None and (
            isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
        ):
            raise InvalidArgumentError("page_size", page_size, "must be an integer >= 1 or None")
        paginator = self.client.get_paginator("scan")
        try:
            for page in paginator.paginate(
                TableName=self.table_name,
                FilterExpression="begins_with(#sk, :p)",
                ExpressionAttributeNames={"#sk": SK},
                ExpressionAttributeValues={":p": {"S": HOLDER_PREFIX}},
                ConsistentRead=True,
                PaginationConfig={"PageSize": page_size} if page_size is not None else {},
            ):
                for item in page.get("Items", []):
                    yield _lease_from_item(item)
        except ClientError as err:
            self._raise_table_missing(err)
            raise

    def now(self) -> float:
        """The store's clock, so callers judge expiry the same way the store does."""
        return self._clock()

    # --------------------------------------------------------------- helpers

    def _meta_key(self, key: str) -> dict[str, Any]:
        return {PK: {"S": key}, SK: {"S": META_SK}}

    def _lease_key(self, key: str, holder: str) -> dict[str, Any]:
        return {PK: {"S": key}, SK: {"S": HOLDER_PREFIX + holder}}

    def _query_leases(self, key: str, prefix: str) -> Iterator[Lease]:
        for item in self._query_lease_items(key, prefix, keys_only=False):
            yield _lease_from_item(item)

    def _query_lease_items(
        self, key: str, prefix: str, *, keys_only: bool
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": key},
                ":p": {"S": HOLDER_PREFIX + prefix},
            },
            "ConsistentRead": True,
        }
        if keys_only:
            # The reconcile needs only identity and expiry; the rest is read for nothing.
            kwargs["ProjectionExpression"] = "#sk, #e"
            kwargs["ExpressionAttributeNames"]["#e"] = TTL_ATTRIBUTE
        try:
            for page in self.client.get_paginator("query").paginate(**kwargs):
                yield from page.get("Items", [])
        except ClientError as err:
            self._raise_table_missing(err)
            raise

    def _reconcile(self, key: str, *, force: bool = False) -> tuple[int, int] | None:
        """Make the counter equal the lease items, deleting (up to 99) expired ones.

        Returns (leases deleted, slots freed), or None when another writer changed the
        semaphore meanwhile (the caller retries). Slots can be freed without deleting anything
        when DynamoDB's TTL sweeper deleted expired items behind the counter's back. The version
        check makes it safe against concurrent acquires and releases: each one bumps ``ver``.
        """
        now = self._clock()
        meta = self._call(
            "get_item", TableName=self.table_name, Key=self._meta_key(key), ConsistentRead=True
        ).get("Item")
        count = int(meta["count"]["N"]) if meta and "count" in meta else 0
        version = int(meta["ver"]["N"]) if meta and "ver" in meta else 0
        items = list(self._query_lease_items(key, "", keys_only=True))
        expired = [i for i in items if float(i[TTL_ATTRIBUTE]["N"]) <= now]
        if not expired and count == len(items) and not force:
            observability.lease_in_flight(key, count)
            return (0, 0)
        doomed = expired[:_MAX_DELETES_PER_RECONCILE]
        new_count = len(items) - len(doomed)
        meta_update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._meta_key(key),
            "UpdateExpression": "SET #c = :n, #v = :nv",
            "ExpressionAttributeNames": {"#c": "count", "#v": "ver"},
            "ExpressionAttributeValues": {
                ":n": {"N": str(new_count)},
                ":nv": {"N": str(version + 1)},
            },
        }
        if meta is None:
            meta_update["ConditionExpression"] = "attribute_not_exists(#v)"
        else:
            meta_update["ConditionExpression"] = "#v = :v"
            meta_update["ExpressionAttributeValues"][":v"] = {"N": str(version)}
        ops: list[dict[str, Any]] = [{"Update": meta_update}]
        for item in doomed:
            ops.append(
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {PK: {"S": key}, SK: item[SK]},
                        "ConditionExpression": "#e <= :now",
                        "ExpressionAttributeNames": {"#e": TTL_ATTRIBUTE},
                        "ExpressionAttributeValues": {":now": _num(now)},
                    }
                }
            )
        try:
            self._transact(ops)
        except _Cancelled:
            return None
        observability.lease_reclaimed(key, len(doomed), in_flight=new_count)
        return (len(doomed), max(0, count - new_count))

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems with a fresh idempotency token.

        botocore resends the same token when it retries a timed-out request, so a write that
        landed but whose answer was lost is not applied twice, and reports success.
        """
        try:
            self.client.transact_write_items(
                TransactItems=items,  # type: ignore[arg-type]
                ClientRequestToken=uuid.uuid4().hex,
            )
        except ClientError as err:
            if _error_code(err) == "TransactionCanceledException":
                reasons = err.response.get("CancellationReasons") or [{} for _ in items]
                raise _Cancelled(list(reasons)) from None
            self._raise_table_missing(err)
            raise

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, method)(**kwargs)
            return result
        except ClientError as err:
            self._raise_table_missing(err)
            raise

    def _raise_table_missing(self, err: ClientError) -> None:
        if _error_code(err) == "ResourceNotFoundException":
            raise TableNotFoundError(self.table_name) from err


class _Cancelled(Exception):
    """A cancelled transaction, with DynamoDB's per-item reasons in request order."""

    def __init__(self, reasons: list[Mapping[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


def _backoff(attempt: int) -> None:
    """Full-jitter backoff for transaction conflicts: they clear in milliseconds."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * (2 ** min(attempt, 6)))))
