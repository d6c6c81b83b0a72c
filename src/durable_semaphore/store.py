"""The lease store: a counting semaphore in DynamoDB with a FIFO wait queue and hand-off.

Data model (one partition per semaphore key)::

    pk = <key>  sk = "#meta"        count, ver, wseq, nwait, xh, lim      the slot counter
    pk = <key>  sk = "h#<holder>"   holder, st, acquired_at,              one item per holder:
                                    expires_at (TTL), execution_arn,      a lease (st held or
                                    seq                                   granted) or a queue
                                                                          marker (st queued)
    pk = <key>  sk = "w#<seq>"      holder, seq, qexp, lttl, cb, cbs,     the wait queue, in
                                    execution_arn                         arrival order

Why this shape:

* The counter makes "fewer than ``limit`` holders" a single-item condition, which DynamoDB can
  check atomically, and the holder items make the state *derivable from identities*: acquire
  puts the holder item and bumps the counter in one transaction, so the same holder can never
  be counted twice (``attribute_not_exists`` on its item) and a release that does not find its
  item changes nothing.
* The wait queue is FIFO across every client of the key. A waiter's ``w#<seq>`` item is
  numbered by its arrival time (``wseq`` counts arrivals), so it sorts by arrival and the oldest
  waiter is one ``Query ... Limit`` away; waiters arriving together never race for a number. Its
  ``h#<holder>`` marker (st ``queued``) makes enqueueing idempotent per holder: a replay or an
  overlapping invocation finds the marker and never queues twice.
* **Hand-off.** Releasing a slot while someone waits gives it to the oldest live waiter in the
  same transaction (delete the releaser's lease, delete the waiter's queue item, turn its marker
  into a ``granted`` lease, leave ``count`` alone), so the count never dips and no newcomer can
  barge in: a new acquire is refused while ``nwait > 0``. The caller gets a :class:`Grant` back
  and wakes the waiter (see :mod:`durable_semaphore.wake`); the waiter then finds the lease
  already its own.
* **Cheap refusals.** ``xh`` is a lower bound on the earliest lease expiry. A refused acquire
  reads the counter item from the cancellation (``ALL_OLD``) and reconciles (a Query over all
  holders) only when ``xh`` says a lease can actually have expired; otherwise a refusal costs one
  request and an enqueue one more, whatever the number of holders.
* Writes stay constant-size: every operation touches a handful of small items.

Expiry has one-second granularity because ``expires_at`` doubles as the table's TTL attribute,
which DynamoDB reads as whole epoch seconds. Queue items (``w#``) carry no TTL attribute: only
this module removes them, so a live waiter can never silently drop out of the order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    InvalidRegionError,
    NoRegionError,
)

from durable_semaphore import observability, retry
from durable_semaphore.errors import (
    ConfigurationError,
    ContentionError,
    DurableSemaphoreError,
    InvalidArgumentError,
    TableNotFoundError,
    TableSchemaError,
)
from durable_semaphore.retry import client_config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

DEFAULT_TABLE_NAME = "durable-semaphore"
DEFAULT_TTL_SECONDS = 86_400
#: How long a queue entry lives without its waiter checking in. A waiter refreshes it on every
#: check; one that stops (its branch or execution ended) drops out after this.
DEFAULT_QUEUE_TTL_SECONDS = 900

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
META_SK = "#meta"
HOLDER_PREFIX = "h#"
QUEUE_PREFIX = "w#"
_SEQ_WIDTH = 20

#: States of an ``h#`` item. A missing ``st`` reads as HELD (items written before the queue).
HELD = "held"
QUEUED = "queued"
GRANTED = "granted"
#: The fencing token of a lease: fresh for every grant (a generation), so an owner can tell its
#: lease from a later one under the same holder id. Items written before tokens have none.
TOKEN_ATTRIBUTE = "tok"
#: Others reclaim a lease only once it is expired by more than this (clocks differ).
DEFAULT_CLOCK_SKEW_SECONDS = 30.0

#: The key schema shared by :meth:`DynamoDBSemaphore.create_table` and template.yaml.
KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": PK, "KeyType": "HASH"},
    {"AttributeName": SK, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS: list[dict[str, str]] = [
    {"AttributeName": PK, "AttributeType": "S"},
    {"AttributeName": SK, "AttributeType": "S"},
]
#: DynamoDB's rule for table names, or a table ARN (which DynamoDB accepts as TableName too).
_TABLE_NAME_RE = re.compile(
    r"(?:arn:[a-z0-9-]+:dynamodb:[a-z0-9-]+:\d{12}:table/)?[A-Za-z0-9_.-]{3,255}"
)
_TYPE_NAMES = {"S": "String", "N": "Number", "B": "Binary"}


def _key_text(keys: list[tuple[str, str]], types: Mapping[str, str]) -> str:
    """``pk String HASH + sk String RANGE``: a key schema as people read it, HASH first."""
    ordered = sorted(keys, key=lambda k: k[1] != "HASH")
    return " + ".join(
        f"{name} {_TYPE_NAMES.get(types.get(name, ''), 'of unknown type')} {kind}"
        for name, kind in ordered
    )


_EXPECTED_KEY = _key_text(
    [(k["AttributeName"], k["KeyType"]) for k in KEY_SCHEMA],
    {a["AttributeName"]: a["AttributeType"] for a in ATTRIBUTE_DEFINITIONS},
)


def table_schema_problem(description: Mapping[str, Any]) -> str | None:
    """What keeps a table (DescribeTable's ``Table``) from being a lease table, or None.

    Key names, key types and the key attributes' types must all match :data:`KEY_SCHEMA` and
    :data:`ATTRIBUTE_DEFINITIONS`: a table that differs in any of them refuses every request
    of ours as invalid.
    """
    keys = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
    types = {
        a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])
    }
    expected_types = {a["AttributeName"]: a["AttributeType"] for a in ATTRIBUTE_DEFINITIONS}
    if sorted(keys) == sorted((k["AttributeName"], k["KeyType"]) for k in KEY_SCHEMA) and all(
        types.get(name) == kind for name, kind in expected_types.items()
    ):
        return None
    return f"its key is {_key_text(keys, types) or 'unknown'}, expected {_EXPECTED_KEY}"


# DynamoDB's own limits on key attributes, in UTF-8 bytes.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
MAX_HOLDER_BYTES = MAX_SORT_KEY_BYTES - len(HOLDER_PREFIX)
MAX_EXECUTION_ARN_BYTES = 2048
MAX_CALLBACK_ID_BYTES = 4096
#: Accepted ranges: DynamoDB numbers carry at most 38 digits, and an expiry must stay a sane
#: epoch second for the TTL sweeper; a century and a billion slots are far beyond real use.
MAX_LIMIT = 1_000_000_000
MAX_TTL_SECONDS = 100 * 366 * 86_400
# A transaction holds at most 100 items; one is the counter.
_MAX_DELETES_PER_RECONCILE = 99
# Bounded retries when transactions collide (TransactionConflict) or a reconcile loses a race.
_MAX_ATTEMPTS = retry.CONFLICT.attempts
# How many queue heads one Query reads: enough to skip a few dead waiters in one round trip.
_HEADS_PER_QUERY = 4


def default_client_config() -> Config:
    """The library's client: botocore's standard retry mode rides out throttling, 5xx and
    connection resets (:data:`durable_semaphore.retry.STORE`)."""
    return client_config(retry.STORE)


def admin_client_config() -> Config:
    """For commands a person waits on (the CLI): an unreachable endpoint fails in seconds
    (:data:`durable_semaphore.retry.ADMIN`)."""
    return client_config(retry.ADMIN)


#: What a malformed endpoint URL is told; the example is what DynamoDB Local listens on.
ENDPOINT_URL_HINT = "must be a URL like http://localhost:8000"


def endpoint_url_problem(url: object) -> str | None:
    """Why ``url`` cannot be a DynamoDB endpoint (None if it can): http(s), a host, a port.

    Stricter than botocore, which rejects ``localhost:8000`` with a bare ``ValueError`` at
    client creation but lets ``ftp://host`` or ``http://host:abc`` through to fail per request.
    """
    if not isinstance(url, str) or not url:
        return ENDPOINT_URL_HINT
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return ENDPOINT_URL_HINT
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        return ENDPOINT_URL_HINT
    return None


def _configured_endpoint_source(url: str) -> str:
    """Where boto3 found an endpoint URL nobody passed (its precedence order)."""
    for var in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        if os.environ.get(var) == url:
            return f"${var}"
    return "the AWS config file (endpoint_url)"


_NO_REGION = (
    "no AWS region configured for DynamoDB; set AWS_REGION or AWS_DEFAULT_REGION (or region in "
    "the AWS config file), or pass region_name"
)


def create_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    config: Config | None = None,
    session: boto3.session.Session | None = None,
    **kwargs: Any,
) -> DynamoDBClient:
    """A DynamoDB client, or our error instead of botocore's for what makes one impossible.

    botocore raises ``NoRegionError`` or a bare ``ValueError("Invalid endpoint")`` here, which
    name no remedy (and end the CLI in a traceback). A bad ``endpoint_url``/``region_name``
    argument raises :class:`InvalidArgumentError`; a missing or bad region or endpoint from the
    environment or config file, :class:`ConfigurationError`. Nothing is sent to DynamoDB.

    botocore reads ``AWS_DEFAULT_REGION`` but not ``AWS_REGION``, which the other AWS SDKs and
    the Lambda runtime set; when nothing else names a region, ``AWS_REGION`` is used, so the
    variable our error names works.
    """
    if endpoint_url is not None and (problem := endpoint_url_problem(endpoint_url)):
        raise InvalidArgumentError("endpoint_url", endpoint_url, problem)
    if region_name is not None and not region_name.strip():
        raise InvalidArgumentError("region_name", region_name, "must not be empty")
    if session is None:  # what boto3.client() uses
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
    region_from_env = False
    if region_name is None and not session.region_name:
        region_name = os.environ.get("AWS_REGION", "").strip() or None
        region_from_env = region_name is not None
        if region_name is None and session.region_name == "":
            # botocore would build the endpoint "dynamodb..amazonaws.com" and call it invalid.
            raise ConfigurationError("region", f"{_NO_REGION} (the configured region is empty)")
    try:
        client = session.client(
            "dynamodb",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=config if config is not None else default_client_config(),
            **kwargs,
        )
    except NoRegionError:
        raise ConfigurationError("region", _NO_REGION) from None
    except InvalidRegionError as exc:
        if region_name is not None and not region_from_env:
            raise InvalidArgumentError("region_name", region_name, str(exc)) from None
        raise ConfigurationError(
            "region",
            f"the configured AWS region is malformed: {exc}; fix AWS_REGION or "
            "AWS_DEFAULT_REGION (or region in the AWS config file)",
        ) from None
    except ValueError as exc:
        if not str(exc).startswith("Invalid endpoint"):
            raise
        if endpoint_url is not None:  # one botocore refuses that passed our check
            raise InvalidArgumentError("endpoint_url", endpoint_url, ENDPOINT_URL_HINT) from None
        url = str(exc).partition(": ")[2]
        raise ConfigurationError(
            "endpoint_url",
            f"the DynamoDB endpoint {url!r} from {_configured_endpoint_source(url)} "
            f"{ENDPOINT_URL_HINT}; fix or unset it",
        ) from None
    configured = client.meta.endpoint_url
    if endpoint_url is None and (problem := endpoint_url_problem(configured)):
        raise ConfigurationError(
            "endpoint_url",
            f"the DynamoDB endpoint {configured!r} from "
            f"{_configured_endpoint_source(configured)} {problem}; fix or unset it",
        )
    return client


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """One held slot (or, with ``state == QUEUED``, a queue marker). Times are epoch seconds."""

    key: str
    holder: str
    acquired_at: float
    expires_at: float
    execution_arn: str | None = None
    state: str = HELD
    #: The lease's generation: pass it to ``release``/``renew`` so that a lease you no longer
    #: own (expired and granted again under the same holder id) is never touched by you.
    token: str | None = None

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    @property
    def holds_slot(self) -> bool:
        """True for a held or granted lease, False for a queue marker."""
        return self.state != QUEUED


@dataclass(frozen=True, slots=True)
class Waiter:
    """One entry of a key's wait queue, oldest first by ``seq``."""

    key: str
    holder: str
    seq: int
    expires_at: float
    lease_ttl_seconds: float
    execution_arn: str | None = None
    callback_id: str | None = None
    #: Callbacks to try, in order, when ``callback_id`` has already timed out.
    spare_callback_ids: tuple[str, ...] = ()

    def is_live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot this call handed to a waiter. The caller wakes it (callback or local signal)."""

    key: str
    holder: str
    execution_arn: str | None
    callback_id: str | None
    spare_callback_ids: tuple[str, ...] = ()
    #: The fencing token of the granted lease (the waiter may be told it with the wake-up).
    token: str | None = None


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """What :meth:`DynamoDBSemaphore.acquire` did.

    ``lease`` is set when the holder owns a slot; otherwise ``position`` is its queue sequence
    number when it waits (None when it was refused without queueing). ``grants`` are slots this
    call handed to *other* waiters while repairing the key; wake them.
    """

    lease: Lease | None
    position: int | None = None
    grants: tuple[Grant, ...] = ()
    #: On joining the queue: about how many waiters are ahead (None when not just queued).
    ahead: int | None = None

    @property
    def held(self) -> bool:
        return self.lease is not None

    @property
    def queued(self) -> bool:
        return self.lease is None and self.position is not None


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What :meth:`DynamoDBSemaphore.release_slot` did.

    ``released`` is True only if this call freed a live slot. ``grant`` names the waiter that
    received it (wake it); ``left_queue`` is True when the holder was a waiter and its queue
    entry was removed instead.
    """

    released: bool
    grant: Grant | None = None
    left_queue: bool = False


@dataclass(frozen=True, slots=True)
class SlotCount:
    """The counter item as stored: ``count`` includes expired leases not yet reclaimed."""

    count: int
    version: int
    waiters: int = 0


@dataclass(frozen=True, slots=True)
class _Meta:
    """The counter item, parsed; absent attributes read as their neutral value."""

    exists: bool
    count: int
    version: int
    wseq: int
    nwait: int
    hint: float | None
    limit: int | None
    served: int = 0

    @classmethod
    def parse(cls, item: Mapping[str, Any] | None) -> _Meta:
        if not item:
            return cls(False, 0, 0, 0, 0, None, None)

        def number(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        hint = float(item["xh"]["N"]) if "xh" in item else None
        limit = int(item["lim"]["N"]) if "lim" in item else None
        return cls(
            True,
            number("count"),
            number("ver"),
            number("wseq"),
            number("nwait"),
            hint,
            limit,
            number("served"),
        )

    def needs_lower_hint(self, expires_at: float) -> bool:
        """Whether a lease expiring at ``expires_at`` must lower the stored hint."""
        if self.hint is None:
            return self.count > 0
        return self.hint > expires_at

    def may_hold_expired(self, now: float) -> bool:
        """Whether a lease counted here can have expired (so a reconcile can free a slot)."""
        if self.count <= 0:
            return False
        return self.hint is None or self.hint <= now


# -- validation --------------------------------------------------------------------------------


def _utf8(name: str, value: str) -> bytes:
    """Encode for DynamoDB; a lone surrogate cannot be stored, so it is bad input, not a crash."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            name, value, "is not valid Unicode text (it contains a lone surrogate)"
        ) from None


def _validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError("key", key, "must be a non-empty string")
    if len(_utf8("key", key)) > MAX_PARTITION_KEY_BYTES:
        raise InvalidArgumentError(
            "key", key, f"is over DynamoDB's {MAX_PARTITION_KEY_BYTES}-byte partition key limit"
        )
    return key


def _validate_holder(holder: object) -> str:
    if not isinstance(holder, str) or not holder:
        raise InvalidArgumentError("holder", holder, "must be a non-empty string")
    if len(_utf8("holder", holder)) > MAX_HOLDER_BYTES:
        raise InvalidArgumentError(
            "holder",
            holder,
            f"is over {MAX_HOLDER_BYTES} bytes (DynamoDB's sort key limit less our prefix)",
        )
    return holder


def _validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError("limit", limit, f"must be an integer from 1 to {MAX_LIMIT:,}")
    return limit


def _validate_ttl(ttl_seconds: object, name: str = "ttl_seconds") -> float:
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not math.isfinite(ttl_seconds)
        or not 0 < ttl_seconds <= MAX_TTL_SECONDS
    ):
        raise InvalidArgumentError(
            name, ttl_seconds, f"must be a number of seconds in (0, {MAX_TTL_SECONDS:,}]"
        )
    return float(ttl_seconds)


def validate_clock_skew(clock_skew_seconds: object) -> float:
    """The skew margin: a finite number of seconds >= 0 (0 trusts every clock exactly)."""
    if (
        isinstance(clock_skew_seconds, bool)
        or not isinstance(clock_skew_seconds, int | float)
        or not math.isfinite(clock_skew_seconds)
        or not 0 <= clock_skew_seconds <= MAX_TTL_SECONDS
    ):
        raise InvalidArgumentError(
            "clock_skew_seconds",
            clock_skew_seconds,
            f"must be a number of seconds in [0, {MAX_TTL_SECONDS:,}]",
        )
    return float(clock_skew_seconds)


def _validate_token(token: object) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token or len(token) > 128:
        raise InvalidArgumentError("token", token, "must be a lease's token (a string) or None")
    _utf8("token", token)
    return token


def _validate_arn(execution_arn: object) -> str | None:
    if execution_arn is None:
        return None
    if not isinstance(execution_arn, str) or not execution_arn:
        raise InvalidArgumentError("execution_arn", execution_arn, "must be a non-empty string")
    if len(_utf8("execution_arn", execution_arn)) > MAX_EXECUTION_ARN_BYTES:
        raise InvalidArgumentError(
            "execution_arn", execution_arn, f"is over {MAX_EXECUTION_ARN_BYTES} bytes"
        )
    return execution_arn


def _validate_callback_id(callback_id: object) -> str | None:
    if callback_id is None:
        return None
    if not isinstance(callback_id, str) or not callback_id:
        raise InvalidArgumentError("callback_id", callback_id, "must be a non-empty string")
    if len(_utf8("callback_id", callback_id)) > MAX_CALLBACK_ID_BYTES:
        raise InvalidArgumentError("callback_id", callback_id, f"is over {MAX_CALLBACK_ID_BYTES}")
    return callback_id


def _validate_position(position: object) -> int | None:
    if position is None:
        return None
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise InvalidArgumentError("position", position, "must be an integer >= 1 or None")
    return position


# -- item codecs -------------------------------------------------------------------------------


def _num(value: float) -> dict[str, str]:
    if float(value).is_integer():
        return {"N": str(int(value))}
    return {"N": repr(float(value))}


def _state(item: Mapping[str, Any]) -> str:
    return str(item.get("st", {}).get("S", HELD))


def _lease_from_item(item: Mapping[str, Any]) -> Lease:
    arn = item.get("execution_arn", {}).get("S")
    return Lease(
        key=item[PK]["S"],
        holder=item[SK]["S"][len(HOLDER_PREFIX) :],
        acquired_at=float(item.get("acquired_at", {"N": "0"})["N"]),
        expires_at=float(item[TTL_ATTRIBUTE]["N"]),
        execution_arn=arn,
        state=_state(item),
        token=item.get(TOKEN_ATTRIBUTE, {}).get("S"),
    )


def new_token() -> str:
    """A fresh fencing token (128 random bits)."""
    return uuid.uuid4().hex


def _waiter_from_item(item: Mapping[str, Any]) -> Waiter:
    return Waiter(
        key=item[PK]["S"],
        holder=item["holder"]["S"],
        seq=int(item["seq"]["N"]),
        expires_at=float(item["qexp"]["N"]),
        lease_ttl_seconds=float(item["lttl"]["N"]),
        execution_arn=item.get("execution_arn", {}).get("S"),
        callback_id=item.get("cb", {}).get("S"),
        spare_callback_ids=tuple(v["S"] for v in item.get("cbs", {}).get("L", [])),
    )


def _queue_sk(seq: int) -> str:
    return f"{QUEUE_PREFIX}{seq:0{_SEQ_WIDTH}d}"


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", "")) or str(err)


def _failed(reason: Mapping[str, Any]) -> bool:
    return reason.get("Code") == "ConditionalCheckFailed"


# -- transaction builders ----------------------------------------------------------------------
#
# Each returns the TransactItems of one step of the protocol, so they can be read (and tested)
# on their own. Conditions are named for what they guard.


def _meta_key(key: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": META_SK}}


def _holder_key(key: str, holder: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": HOLDER_PREFIX + holder}}


def _queue_key(key: str, seq: int) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": _queue_sk(seq)}}


def _put_new(table: str, item: dict[str, Any], *, return_old: bool = True) -> dict[str, Any]:
    """Put ``item`` only if its key is free; the existing item comes back on refusal."""
    put: dict[str, Any] = {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(#sk)",
        "ExpressionAttributeNames": {"#sk": SK},
    }
    if return_old:
        put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {"Put": put}


def _hint_clause(lower_hint: bool) -> tuple[str, str]:
    """(SET fragment, condition) keeping ``xh`` a lower bound of every lease's expiry.

    The common case keeps the hint (the new lease expires no earlier than it); only a lease
    that expires sooner than every other lowers it, in a second variant of the same write.
    """
    if lower_hint:
        return "#xh = :exp", "(attribute_not_exists(#xh) OR #xh > :exp)"
    no_leases = "(attribute_not_exists(#xh) AND (attribute_not_exists(#c) OR #c <= :zero))"
    return "#xh = if_not_exists(#xh, :exp)", f"({no_leases} OR #xh <= :exp)"


def acquire_ops(
    table: str, key: str, item: dict[str, Any], limit: int, expires_at: int, lower_hint: bool
) -> list[dict[str, Any]]:
    """Take a new slot: count below the limit, nobody queued, and the holder has no item yet."""
    hint_set, hint_cond = _hint_clause(lower_hint)
    slot_free = "(attribute_not_exists(#c) OR #c < :limit)"
    nobody_waits = "(attribute_not_exists(#nw) OR #nw <= :zero)"
    return [
        {
            "Update": {
                "TableName": table,
                "Key": _meta_key(key),
                "UpdateExpression": (
                    "SET #c = if_not_exists(#c, :zero) + :one, "
                    "#v = if_not_exists(#v, :zero) + :one, #lim = :limit, " + hint_set
                ),
                "ConditionExpression": f"{slot_free} AND {nobody_waits} AND {hint_cond}",
                "ExpressionAttributeNames": {
                    "#c": "count",
                    "#v": "ver",
                    "#nw": "nwait",
                    "#xh": "xh",
                    "#lim": "lim",
                },
                "ExpressionAttributeValues": {
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":exp": _num(expires_at),
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        _put_new(table, item),
    ]


def enqueue_ops(
    table: str,
    key: str,
    limit: int,
    marker: dict[str, Any],
    entry: dict[str, Any],
) -> list[dict[str, Any]]:
    """Join the queue under the entry's own number: only while the key is full or others
    already wait (so a waiter never sits behind a free slot). Arrivals are counted in
    ``wseq``; nothing here depends on another arrival's number, so waiters that arrive
    together all get in at their first attempt."""
    must_wait = "(#c >= :limit OR #nw > :zero)"
    return [
        {
            "Update": {
                "TableName": table,
                "Key": _meta_key(key),
                "UpdateExpression": (
                    "SET #ws = if_not_exists(#ws, :zero) + :one, "
                    "#nw = if_not_exists(#nw, :zero) + :one, "
                    "#v = if_not_exists(#v, :zero) + :one, #lim = :limit"
                ),
                "ConditionExpression": f"attribute_exists(#c) AND {must_wait}",
                "ExpressionAttributeNames": {
                    "#c": "count",
                    "#v": "ver",
                    "#nw": "nwait",
                    "#ws": "wseq",
                    "#lim": "lim",
                },
                "ExpressionAttributeValues": {
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        _put_new(table, marker),
        _put_new(table, entry, return_old=False),
    ]


def _lease_delete(
    table: str,
    key: str,
    holder: str,
    now: float,
    *,
    only_granted: bool,
    token: str | None = None,
    seen_expiry: float | None = None,
) -> dict[str, Any]:
    """Delete a live lease item (held or granted; with ``only_granted``, an unclaimed grant).

    ``token`` fences: only that generation of the lease is deleted. ``seen_expiry`` deletes an
    owner's lease that has expired on its own clock but is still counted (others wait for the
    skew margin before reclaiming it), as long as it is still the item the owner saw.
    """
    if only_granted:
        state_ok, state = "#st = :state", GRANTED
    else:
        state_ok, state = "(attribute_not_exists(#st) OR #st <> :state)", QUEUED
    names = {"#sk": SK, "#e": TTL_ATTRIBUTE, "#st": "st"}
    values: dict[str, Any] = {":state": {"S": state}}
    if seen_expiry is None:
        alive = "#e > :now"
        values[":now"] = _num(now)
    else:
        alive = "#e = :seen"
        values[":seen"] = _num(seen_expiry)
    condition = f"attribute_exists(#sk) AND {alive} AND {state_ok}"
    if token is not None:
        condition += " AND #tok = :tok"
        names["#tok"] = TOKEN_ATTRIBUTE
        values[":tok"] = {"S": token}
    return {
        "Delete": {
            "TableName": table,
            "Key": _holder_key(key, holder),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def release_ops(
    table: str,
    key: str,
    holder: str,
    now: float,
    *,
    only_granted: bool = False,
    token: str | None = None,
    seen_expiry: float | None = None,
) -> list[dict[str, Any]]:
    """Free a slot when nobody waits: delete the lease, count down."""
    names = {"#c": "count", "#v": "ver", "#nw": "nwait"}
    values: dict[str, Any] = {":zero": {"N": "0"}, ":one": {"N": "1"}}
    return [
        _lease_delete(
            table,
            key,
            holder,
            now,
            only_granted=only_granted,
            token=token,
            seen_expiry=seen_expiry,
        ),
        {
            "Update": {
                "TableName": table,
                "Key": _meta_key(key),
                "UpdateExpression": "SET #c = #c - :one, #v = #v + :one",
                "ConditionExpression": "#c > :zero AND (attribute_not_exists(#nw) OR #nw <= :zero)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
    ]


def handoff_ops(
    table: str,
    key: str,
    releaser: str | None,
    waiter: Waiter,
    now: float,
    *,
    limit: int | None = None,
    lower_hint: bool = False,
    only_granted: bool = False,
    grant_token: str,
    releaser_token: str | None = None,
    seen_expiry: float | None = None,
) -> list[dict[str, Any]]:
    """Pass a slot to ``waiter`` (the oldest live one) in one transaction.

    With ``releaser``, its lease is deleted and the count stays: the slot moves, it is never
    free for a newcomer. Without one, a free slot (count below ``limit``) is filled instead.
    The waiter's marker becomes a ``granted`` lease living ``lease_ttl_seconds`` from now, of
    generation ``grant_token``.
    Items, in order: [releaser delete], queue item delete, marker update, counter update.
    """
    expires_at = math.ceil(now + waiter.lease_ttl_seconds)
    hint_set, hint_cond = _hint_clause(lower_hint)
    ops: list[dict[str, Any]] = []
    if releaser is not None:
        ops.append(
            _lease_delete(
                table,
                key,
                releaser,
                now,
                only_granted=only_granted,
                token=releaser_token,
                seen_expiry=seen_expiry,
            )
        )
    ops.append(
        {
            "Delete": {
                "TableName": table,
                "Key": _queue_key(key, waiter.seq),
                "ConditionExpression": "attribute_exists(#sk)",
                "ExpressionAttributeNames": {"#sk": SK},
            }
        }
    )
    ops.append(
        {
            "Update": {
                "TableName": table,
                "Key": _holder_key(key, waiter.holder),
                "UpdateExpression": "SET #st = :granted, #e = :exp, #at = :now, #tok = :tok",
                "ConditionExpression": "#st = :queued AND #seq = :seq",
                "ExpressionAttributeNames": {
                    "#st": "st",
                    "#e": TTL_ATTRIBUTE,
                    "#at": "acquired_at",
                    "#seq": "seq",
                    "#tok": TOKEN_ATTRIBUTE,
                },
                "ExpressionAttributeValues": {
                    ":granted": {"S": GRANTED},
                    ":queued": {"S": QUEUED},
                    ":exp": _num(expires_at),
                    ":now": _num(now),
                    ":seq": {"N": str(waiter.seq)},
                    ":tok": {"S": grant_token},
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    )
    names = {"#c": "count", "#v": "ver", "#nw": "nwait", "#xh": "xh", "#sv": "served"}
    values: dict[str, Any] = {":zero": {"N": "0"}, ":one": {"N": "1"}, ":exp": _num(expires_at)}
    served = ", #sv = if_not_exists(#sv, :zero) + :one"
    if releaser is not None:
        update = "SET #nw = #nw - :one, #v = #v + :one, " + hint_set + served
        condition = f"#nw > :zero AND #c > :zero AND {hint_cond}"
    else:
        update = "SET #nw = #nw - :one, #c = #c + :one, #v = #v + :one, " + hint_set + served
        condition = f"#nw > :zero AND #c < :limit AND {hint_cond}"
        values[":limit"] = {"N": str(limit if limit is not None else 0)}
    ops.append(
        {
            "Update": {
                "TableName": table,
                "Key": _meta_key(key),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    )
    return ops


def leave_queue_ops(table: str, key: str, holder: str | None, seq: int) -> list[dict[str, Any]]:
    """Remove queue entry ``seq`` (and, if given, ``holder``'s marker for that same entry)."""
    ops: list[dict[str, Any]] = [
        {
            "Delete": {
                "TableName": table,
                "Key": _queue_key(key, seq),
                "ConditionExpression": "attribute_exists(#sk)",
                "ExpressionAttributeNames": {"#sk": SK},
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": _meta_key(key),
                "UpdateExpression": (
                    "SET #nw = #nw - :one, #v = #v + :one, #sv = if_not_exists(#sv, :zero) + :one"
                ),
                "ConditionExpression": "#nw > :zero",
                "ExpressionAttributeNames": {"#nw": "nwait", "#v": "ver", "#sv": "served"},
                "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"}},
            }
        },
    ]
    if holder is not None:
        ops.append(
            {
                "Delete": {
                    "TableName": table,
                    "Key": _holder_key(key, holder),
                    "ConditionExpression": "attribute_not_exists(#sk) OR "
                    "(#st = :queued AND #seq = :seq)",
                    "ExpressionAttributeNames": {"#sk": SK, "#st": "st", "#seq": "seq"},
                    "ExpressionAttributeValues": {
                        ":queued": {"S": QUEUED},
                        ":seq": {"N": str(seq)},
                    },
                }
            }
        )
    return ops


#: A waiter's check-in passes only while this holds on the counter: every slot is taken and the
#: earliest lease expiry (``xh``) is past the reclaim cutoff. Otherwise a slot is free behind
#: the queue, or a holder may be dead: the waiter reconciles instead of waiting on (a missing
#: hint fails the comparison, so it is read as "may have expired").
KEY_FULL_OF_LIVE_LEASES = "#c >= :lim AND #xh > :cutoff"


def touch_ops(
    table: str,
    key: str,
    holder: str,
    seq: int,
    queue_expires_at: int,
    callback_id: str | None,
    spare_callback_ids: tuple[str, ...] = (),
    *,
    limit: int,
    reclaim_cutoff: float | None,
) -> list[dict[str, Any]]:
    """A waiter checks in: keep its entry alive and record where to wake it.

    The third item checks that the key is still full of live leases: every slot counted and
    no lease possibly expired by ``reclaim_cutoff`` (the counter's expiry hint is above it).
    When that fails the waiter reconciles and fills free slots itself, so a queue whose
    holders died is served by its own waiters, without a newcomer or the reaper, at the same
    one request per check. Without ``reclaim_cutoff`` the check is left out (a waiter that
    has just served the queue).
    """
    entry_set = "SET #q = :qexp"
    names: dict[str, str] = {"#sk": SK, "#q": "qexp"}
    values: dict[str, Any] = {":qexp": _num(queue_expires_at)}
    if callback_id is not None:
        entry_set += ", #cb = :cb, #cbs = :cbs"
        names["#cb"] = "cb"
        names["#cbs"] = "cbs"
        values[":cb"] = {"S": callback_id}
        values[":cbs"] = {"L": [{"S": spare} for spare in spare_callback_ids]}
    ops: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": table,
                "Key": _holder_key(key, holder),
                "UpdateExpression": "SET #e = :qexp",
                "ConditionExpression": "#st = :queued AND #seq = :seq",
                "ExpressionAttributeNames": {"#e": TTL_ATTRIBUTE, "#st": "st", "#seq": "seq"},
                "ExpressionAttributeValues": {
                    ":qexp": _num(queue_expires_at),
                    ":queued": {"S": QUEUED},
                    ":seq": {"N": str(seq)},
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": _queue_key(key, seq),
                "UpdateExpression": entry_set,
                "ConditionExpression": "attribute_exists(#sk)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        },
    ]
    if reclaim_cutoff is not None:
        ops.append(
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": _meta_key(key),
                    "ConditionExpression": KEY_FULL_OF_LIVE_LEASES,
                    "ExpressionAttributeNames": {"#c": "count", "#xh": "xh"},
                    "ExpressionAttributeValues": {
                        ":lim": {"N": str(limit)},
                        ":cutoff": _num(reclaim_cutoff),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        )
    return ops


# -- the store ---------------------------------------------------------------------------------


class DynamoDBSemaphore:
    """A counting semaphore per key, with idempotent, identity-based leases and a FIFO queue.

    Thread-safe as far as boto3 clients are (a client may be shared between threads).
    ``clock`` returns epoch seconds; inject one to test expiry without sleeping.

    Clocks differ between clients, so expiry is judged with a margin: an owner treats its
    lease as ending at ``expires_at`` (its renew and release use its own clock), but others
    reclaim it only once it is expired by more than ``clock_skew_seconds``. No slot is ever
    over-admitted while the clocks of the clients sharing a key differ by less than that.
    """

    def __init__(
        self,
        table_name: str = DEFAULT_TABLE_NAME,
        client: DynamoDBClient | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        clock: Callable[[], float] = time.time,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
    ) -> None:
        if not isinstance(table_name, str) or not _TABLE_NAME_RE.fullmatch(table_name):
            # DynamoDB would refuse it at the first request, with a less helpful message.
            raise InvalidArgumentError(
                "table_name",
                table_name,
                "must be 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.' "
                "(DynamoDB's rule), or a table ARN",
            )
        self.clock_skew_seconds = validate_clock_skew(clock_skew_seconds)
        self.table_name = table_name
        if client is None:
            # Our errors, not botocore's, for no region or a malformed endpoint URL.
            client = create_client(endpoint_url=endpoint_url, region_name=region_name)
        self.client: DynamoDBClient = client
        self._clock = clock
        self._seq_lock = threading.Lock()
        self._last_seq = 0

    # ------------------------------------------------------------------ table

    def create_table(self, *, wait: bool = True) -> bool:
        """Create the lease table if missing; returns True if this call created it.

        Idempotent. Raises :class:`TableSchemaError` for an existing table whose key names,
        key types or key attribute types are not ours (no request of ours could succeed on it;
        it is left untouched), and enables TTL on ``expires_at`` (the template does the same),
        so expired leases are eventually deleted.
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
        problem = table_schema_problem(desc)
        if problem is not None:
            raise TableSchemaError(self.table_name, problem)
        self._enable_ttl()
        return created

    def check_table(self) -> None:
        """Raise :class:`TableNotFoundError` or :class:`TableSchemaError` unless the table
        exists and takes lease keys; one Query that reads nothing on a lease table.

        For callers whose own requests cannot tell: a Scan filters on ``sk`` without checking
        the key schema, so on a table of another schema it finds nothing and looks like
        success. The Query names both keys with their types, which DynamoDB checks against
        the schema; it needs only ``dynamodb:Query``, which every role of the table has.
        """
        self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :p)",
            ExpressionAttributeNames={"#pk": PK, "#sk": SK},
            ExpressionAttributeValues={":pk": {"S": META_SK}, ":p": {"S": HOLDER_PREFIX}},
            Limit=1,
        )

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

    # ------------------------------------------------------------ acquiring

    def try_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        execution_arn: str | None = None,
    ) -> Lease | None:
        """Take a slot for ``holder`` under ``key`` if fewer than ``limit`` live leases exist
        and nobody waits in the queue; never queues.

        Idempotent per ``(key, holder)``: a holder that already holds a live lease gets it back,
        with its expiry extended to at least now + ``ttl_seconds``; it never takes a second slot.
        A holder that was handed a slot while queued gets it. Returns None when the semaphore is
        full (or others wait ahead).
        """
        return self.acquire(
            key, holder, limit, ttl_seconds, execution_arn=execution_arn, enqueue=False
        ).lease

    def acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        execution_arn: str | None = None,
        enqueue: bool = True,
        position: int | None = None,
        callback_id: str | None = None,
        spare_callback_ids: tuple[str, ...] = (),
        queue_ttl_seconds: float = DEFAULT_QUEUE_TTL_SECONDS,
        token: str | None = None,
        queue_first: bool = False,
    ) -> AcquireResult:
        """Take a slot, or join the key's FIFO queue and wait for one to be handed over.

        Idempotent per ``(key, holder)`` whatever state the holder is in: a live lease is
        renewed and returned, a granted slot is claimed and returned, a queued holder keeps its
        place (its entry is refreshed for ``queue_ttl_seconds`` and ``callback_id`` recorded,
        so a releaser can wake it; ``spare_callback_ids`` are tried in order when that one has
        timed out). ``position``, the sequence number a previous call returned,
        saves a round trip for a holder that knows it waits. ``token`` is the fencing token a
        fresh lease gets (default: a new random one); a caller that records nothing can derive
        it again on replay. ``queue_first`` (a caller that was just refused) tries to join the
        queue before trying for a slot: one request instead of two when the key is still full.
        Nothing is written on bad input.
        """
        _validate_key(key)
        _validate_holder(holder)
        _validate_limit(limit)
        ttl = _validate_ttl(ttl_seconds)
        _validate_arn(execution_arn)
        _validate_callback_id(callback_id)
        for spare in spare_callback_ids:
            _validate_callback_id(spare)
        if spare_callback_ids and callback_id is None:
            raise InvalidArgumentError(
                "spare_callback_ids", spare_callback_ids, "need a callback_id to follow"
            )
        callbacks = (callback_id, *spare_callback_ids) if callback_id is not None else ()
        _validate_position(position)
        queue_ttl = _validate_ttl(queue_ttl_seconds, "queue_ttl_seconds")
        chosen_token = _validate_token(token)

        grants: list[Grant] = []
        lower_hint = False
        # Arrival order is the order of first tries: the queue number is stamped once, before
        # the first attempt to join, and every retry of this call (ours or botocore's) joins
        # under it, so a retried enqueue keeps the place its first try had.
        arrival = self._next_seq(self._clock())
        if queue_first and position is None and enqueue:
            queued = self._enqueue(
                key,
                holder,
                limit,
                _Meta.parse(None),
                self._clock(),
                ttl,
                queue_ttl,
                execution_arn,
                callbacks,
                arrival,
                grants,
            )
            if queued is not None:
                # Else a slot is free (or we hold one): the usual way below.
                return _with_grants(queued, grants)
        for attempt in range(_MAX_ATTEMPTS):
            now = self._clock()
            if position is not None:
                touched = self._touch(
                    key, holder, limit, position, now, queue_ttl, callbacks, ttl, grants
                )
                if touched is not None:
                    return _with_grants(touched, grants)
                position = None  # the entry is gone: acquire or queue afresh
            expires_at = math.ceil(now + ttl)
            token = chosen_token or new_token()
            item: dict[str, Any] = {
                PK: {"S": key},
                SK: {"S": HOLDER_PREFIX + holder},
                "holder": {"S": holder},
                "st": {"S": HELD},
                "acquired_at": _num(now),
                TTL_ATTRIBUTE: _num(expires_at),
                TOKEN_ATTRIBUTE: {"S": token},
            }
            if execution_arn is not None:
                item["execution_arn"] = {"S": execution_arn}
            try:
                self._transact(
                    acquire_ops(self.table_name, key, item, limit, expires_at, lower_hint)
                )
                lease = Lease(key, holder, now, float(expires_at), execution_arn, HELD, token)
                if not lease.is_live(self._clock()):
                    # The answer came back after the lease ended (botocore retried across an
                    # outage longer than the TTL): never hand out a lease that is already over.
                    seen = {TTL_ATTRIBUTE: _num(expires_at), TOKEN_ATTRIBUTE: {"S": token}}
                    revived = self._revive(key, holder, seen, self._clock(), ttl)
                    if revived is None:
                        continue  # reclaimed meanwhile: compete again
                    return AcquireResult(revived, None, tuple(grants))
                observability.lease_acquired(key, holder)
                return AcquireResult(lease, None, tuple(grants))
            except _Cancelled as cancelled:
                meta_reason, holder_reason = cancelled.reasons
                if _failed(holder_reason):
                    existing = holder_reason.get("Item")
                    mine = self._own_item(
                        key, holder, limit, existing, now, ttl, queue_ttl, callbacks, grants
                    )
                    if mine is not None:
                        return _with_grants(mine, grants)
                    continue  # it changed meanwhile, or our expired lease was cleared: retry
                if not _failed(meta_reason):
                    _backoff(attempt)  # TransactionConflict and the like
                    continue
                meta = _Meta.parse(meta_reason.get("Item"))
                if meta.count < limit and meta.nwait <= 0:
                    # A slot is free: only the expiry hint refused us. Pick the variant the
                    # stored hint needs; if it already was that one, the key moved on: retry.
                    wanted = meta.needs_lower_hint(expires_at)
                    if wanted == lower_hint:
                        _backoff(attempt)
                    lower_hint = wanted
                    continue
                if meta.may_hold_expired(now - self.clock_skew_seconds):
                    outcome = self._reconcile(key)
                    if outcome is None:
                        _backoff(attempt)
                        continue
                    grants.extend(outcome.grants)
                    if outcome.freed > 0 or outcome.deleted > 0:
                        continue
                if meta.count < limit and meta.nwait > 0:
                    # Free slots behind a queue (an expiry or a dead waiter): fill them first.
                    grants.extend(self._fill(key, limit))
                if not enqueue:
                    return AcquireResult(None, None, tuple(grants))
                queued = self._enqueue(
                    key,
                    holder,
                    limit,
                    meta,
                    now,
                    ttl,
                    queue_ttl,
                    execution_arn,
                    callbacks,
                    arrival,
                    grants,
                )
                if queued is None:
                    _backoff(attempt)
                    continue
                return _with_grants(queued, grants)
        raise ContentionError(f"acquire({key!r}, {holder!r}) lost {_MAX_ATTEMPTS} races")

    def _own_item(
        self,
        key: str,
        holder: str,
        limit: int,
        existing: Mapping[str, Any] | None,
        now: float,
        ttl: float,
        queue_ttl: float,
        callbacks: tuple[str, ...],
        grants: list[Grant],
    ) -> AcquireResult | None:
        """The holder already has an item: return what it means, or None to retry. Slots it
        hands to others on the way are appended to ``grants``."""
        if existing is None:
            return None
        state = _state(existing)
        if state == QUEUED:
            seq = int(existing["seq"]["N"])
            return self._touch(key, holder, limit, seq, now, queue_ttl, callbacks, ttl, grants)
        expires_at = float(existing[TTL_ATTRIBUTE]["N"])
        if expires_at <= now:
            if expires_at + self.clock_skew_seconds > now:
                # Our own lease expired, but within the skew margin nobody else may reclaim
                # it, so its slot is still ours to take again (as a new generation).
                revived = self._revive(key, holder, existing, now, ttl)
                return AcquireResult(revived) if revived is not None else None
            self._reconcile(key)  # reclaimable by anyone: clear it, then compete as a newcomer
            return None
        if state == GRANTED:
            claimed = self._claim(key, holder, now, ttl)
            return AcquireResult(claimed) if claimed is not None else None
        renewed = self.renew(key, holder, ttl)
        return AcquireResult(renewed) if renewed is not None else None

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

    def _revive(
        self, key: str, holder: str, existing: Mapping[str, Any], now: float, ttl: float
    ) -> Lease | None:
        """Renew the holder's expired-but-counted lease item as a fresh lease (new token).

        Safe whatever the clocks say: the item still exists, so its slot is still counted and
        nobody else can have been admitted to it. None when the item changed meanwhile (the
        condition includes the token when ``existing`` has one).
        """
        condition = "#e = :seen AND #st <> :queued"
        extra: dict[str, Any] = {}
        if TOKEN_ATTRIBUTE in existing:
            condition += " AND #tok = :seen_tok"
            extra[":seen_tok"] = existing[TOKEN_ATTRIBUTE]
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_holder_key(key, holder),
                UpdateExpression="SET #st = :held, #e = :exp, #at = :now, #tok = :tok",
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    "#st": "st",
                    "#e": TTL_ATTRIBUTE,
                    "#at": "acquired_at",
                    "#tok": TOKEN_ATTRIBUTE,
                },
                ExpressionAttributeValues={
                    ":held": {"S": HELD},
                    ":queued": {"S": QUEUED},
                    ":exp": _num(math.ceil(now + ttl)),
                    ":now": _num(now),
                    ":tok": {"S": new_token()},
                    ":seen": existing[TTL_ATTRIBUTE],
                    **extra,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            return None
        observability.lease_acquired(key, holder)
        return _lease_from_item(out["Attributes"])

    def _enqueue(
        self,
        key: str,
        holder: str,
        limit: int,
        meta: _Meta,
        now: float,
        ttl: float,
        queue_ttl: float,
        execution_arn: str | None,
        callbacks: tuple[str, ...],
        seq: int,
        grants: list[Grant],
    ) -> AcquireResult | None:
        """Join the queue under ``seq``, the number of this call's first try; None when a slot
        freed meanwhile. A number another waiter already has (a tie of clock and tiebreak,
        vanishingly rare) is replaced by a fresh one."""
        queue_expires = math.ceil(now + queue_ttl)
        marker: dict[str, Any] = {
            PK: {"S": key},
            SK: {"S": HOLDER_PREFIX + holder},
            "holder": {"S": holder},
            "st": {"S": QUEUED},
            "seq": {"N": str(seq)},
            "acquired_at": _num(now),
            TTL_ATTRIBUTE: _num(queue_expires),
        }
        entry: dict[str, Any] = {
            PK: {"S": key},
            SK: {"S": _queue_sk(seq)},
            "holder": {"S": holder},
            "seq": {"N": str(seq)},
            "qexp": _num(queue_expires),
            "lttl": _num(ttl),
            "at": _num(now),
        }
        if execution_arn is not None:
            marker["execution_arn"] = {"S": execution_arn}
            entry["execution_arn"] = {"S": execution_arn}
        if callbacks:
            entry["cb"] = {"S": callbacks[0]}
            entry["cbs"] = {"L": [{"S": spare} for spare in callbacks[1:]]}
        try:
            self._transact(enqueue_ops(self.table_name, key, limit, marker, entry))
        except _Cancelled as cancelled:
            _meta_reason, holder_reason, entry_reason = cancelled.reasons
            if _failed(holder_reason) and holder_reason.get("Item") is not None:
                existing = holder_reason.get("Item")
                return self._own_item(
                    key, holder, limit, existing, now, ttl, queue_ttl, callbacks, grants
                )
            if _failed(entry_reason):
                fresh = self._next_seq(self._clock())
                return self._enqueue(
                    key,
                    holder,
                    limit,
                    meta,
                    now,
                    ttl,
                    queue_ttl,
                    execution_arn,
                    callbacks,
                    fresh,
                    grants,
                )
            return None
        return AcquireResult(None, seq, ahead=max(0, meta.wseq - meta.served))

    def _touch(
        self,
        key: str,
        holder: str,
        limit: int,
        seq: int,
        now: float,
        queue_ttl: float,
        callbacks: tuple[str, ...],
        ttl: float,
        grants: list[Grant],
    ) -> AcquireResult | None:
        """A queued holder checks in. Returns its state, or None when its entry is gone.

        A check-in that finds the key not full of live leases reconciles (freeing expired
        slots and handing free ones to the queue's head, which may be this waiter), then
        checks in again; the grants it made are appended to ``grants`` for the caller to wake.
        One reconcile per call: a key whose stored limit differs from ``limit`` cannot loop.
        """
        queue_expires = math.ceil(now + queue_ttl)
        check_key = True
        for attempt in range(_MAX_ATTEMPTS):
            try:
                self._transact(
                    touch_ops(
                        self.table_name,
                        key,
                        holder,
                        seq,
                        queue_expires,
                        callbacks[0] if callbacks else None,
                        callbacks[1:],
                        limit=limit,
                        reclaim_cutoff=(
                            self._clock() - self.clock_skew_seconds if check_key else None
                        ),
                    )
                )
                return AcquireResult(None, seq)
            except _Cancelled as cancelled:
                marker_reason, entry_reason, *rest = cancelled.reasons
                if _failed(marker_reason):
                    existing = marker_reason.get("Item")
                    if existing is None:
                        return None
                    state = _state(existing)
                    if state == QUEUED:
                        other = int(existing["seq"]["N"])
                        if other == seq:
                            continue  # raced with a concurrent touch
                        seq = other  # an overlapping invocation knows a newer entry
                        continue
                    if float(existing[TTL_ATTRIBUTE]["N"]) <= now:
                        return None
                    if state == GRANTED:
                        claimed = self._claim(key, holder, now, ttl)
                        if claimed is None:
                            return None
                        return AcquireResult(claimed)
                    renewed = self.renew(key, holder, ttl)
                    return AcquireResult(renewed) if renewed is not None else None
                if _failed(entry_reason):
                    # Our queue item was dropped (judged dead) but the marker stayed: leave
                    # cleanly and let the caller queue again.
                    self._remove_marker(key, holder, seq)
                    return None
                if rest and _failed(rest[0]):
                    # The key is not full of live leases: serve the queue, then check in.
                    check_key = False
                    grants.extend(self._serve_queue(key, limit, rest[0].get("Item")))
                    continue
                _backoff(attempt)
        raise ContentionError(f"touch({key!r}, {holder!r}) lost {_MAX_ATTEMPTS} races")

    def _serve_queue(
        self, key: str, limit: int, meta_item: Mapping[str, Any] | None
    ) -> list[Grant]:
        """Free the slots of expired leases and hand free slots to the oldest waiters.

        What a refused newcomer does (see :meth:`acquire`), done by a waiter whose check-in
        found the key not full of live leases, so that waiters alone keep the queue moving.
        """
        outcome = self._reconcile(key)
        if outcome is not None and (outcome.grants or outcome.freed or outcome.deleted):
            return list(outcome.grants)
        meta = _Meta.parse(meta_item)
        if meta.count < limit and meta.nwait > 0:
            return self._fill(key, limit)
        return list(outcome.grants) if outcome is not None else []

    def _claim(self, key: str, holder: str, now: float, ttl: float) -> Lease | None:
        """Turn a slot handed to ``holder`` into its own (a revoke can no longer take it),
        living ``ttl`` from now (a grant whose wake-up failed may have been shortened)."""
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_holder_key(key, holder),
                UpdateExpression="SET #st = :held, #e = :exp",
                ConditionExpression="#st = :granted AND #e > :now",
                ExpressionAttributeNames={"#st": "st", "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":held": {"S": HELD},
                    ":granted": {"S": GRANTED},
                    ":now": _num(now),
                    ":exp": _num(math.ceil(now + ttl)),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return _lease_from_item(out["Attributes"])
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
            if old is not None and _state(old) == HELD and float(old[TTL_ATTRIBUTE]["N"]) > now:
                return _lease_from_item(old)  # claimed already (a replay)
            return None

    def shorten_grant(self, key: str, holder: str, expires_at: float) -> bool:
        """Let a slot handed to ``holder`` (not yet claimed) expire at ``expires_at``.

        For a waiter whose wake-up found its callback gone while its execution still runs:
        it keeps the slot if it claims it in time, and a reconcile hands it on otherwise.
        The counter's expiry hint is lowered with it, so the next refusal notices.
        """
        _validate_key(key)
        _validate_holder(holder)
        deadline = math.ceil(expires_at)
        grant_update: dict[str, Any] = {
            "Update": {
                "TableName": self.table_name,
                "Key": _holder_key(key, holder),
                "UpdateExpression": "SET #e = :exp",
                "ConditionExpression": "#st = :granted AND #e > :exp",
                "ExpressionAttributeNames": {"#st": "st", "#e": TTL_ATTRIBUTE},
                "ExpressionAttributeValues": {":granted": {"S": GRANTED}, ":exp": _num(deadline)},
            }
        }
        hint_update: dict[str, Any] = {
            "Update": {
                "TableName": self.table_name,
                "Key": _meta_key(key),
                "UpdateExpression": "SET #xh = :exp",
                "ConditionExpression": "attribute_exists(#c) AND "
                "(attribute_not_exists(#xh) OR #xh > :exp)",
                "ExpressionAttributeNames": {"#xh": "xh", "#c": "count"},
                "ExpressionAttributeValues": {":exp": _num(deadline)},
            }
        }
        for ops in ([grant_update, hint_update], [grant_update]):
            try:
                self._transact(ops)
                return True
            except _Cancelled as cancelled:
                if _failed(cancelled.reasons[0]):
                    return False  # claimed, released or already shorter
        return False

    def renew(
        self,
        key: str,
        holder: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        token: str | None = None,
    ) -> Lease | None:
        """Extend a live lease to at least now + ``ttl_seconds``; never takes a new slot.

        Returns the lease, or None if ``holder`` holds no live lease on ``key`` (a queue entry
        is not a lease), or, with ``token``, none of that generation. Expiry is only ever moved
        later, so a short-TTL renew cannot cut a longer lease short. Without ``token`` any live
        lease of the holder is extended (admin use).
        """
        _validate_key(key)
        _validate_holder(holder)
        ttl = _validate_ttl(ttl_seconds)
        _validate_token(token)
        now = self._clock()
        expires_at = math.ceil(now + ttl)
        condition = (
            "attribute_exists(#sk) AND #e > :now AND #e < :exp AND "
            "(attribute_not_exists(#st) OR #st <> :queued)"
        )
        names = {"#e": TTL_ATTRIBUTE, "#sk": SK, "#st": "st"}
        values: dict[str, Any] = {
            ":exp": _num(expires_at),
            ":now": _num(now),
            ":queued": {"S": QUEUED},
        }
        if token is not None:
            condition += " AND #tok = :tok"
            names["#tok"] = TOKEN_ATTRIBUTE
            values[":tok"] = {"S": token}
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_holder_key(key, holder),
                UpdateExpression="SET #e = :exp",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return _lease_from_item(out["Attributes"])
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
            if (
                old is not None
                and _state(old) != QUEUED
                and float(old[TTL_ATTRIBUTE]["N"]) > now
                and (token is None or old.get(TOKEN_ATTRIBUTE, {}).get("S") == token)
            ):
                return _lease_from_item(old)  # already lives at least that long
            return None

    # ------------------------------------------------------------ releasing

    def release(self, key: str, holder: str, *, token: str | None = None) -> bool:
        """Free ``holder``'s slot (handing it to the oldest waiter, if any). Idempotent: True
        only if this call released a live lease.

        Pass the lease's ``token``: a lease you no longer own is never freed by you. With it,
        a lease of another generation under the same holder id (yours expired, and the holder
        id acquired again) is left alone and False returned. Without it (admin use, as
        ``durable-semaphore release`` does) whatever the holder id holds now is released.

        Releasing a lease that is not held or was already released returns False and leaves
        the count right; an owner's lease that expired on its own clock is still removed (it
        is counted until then) but reported False. A queued holder leaves the queue (also
        False: it held no slot). Use :meth:`release_slot` to learn which waiter received the
        slot, so it can be woken.
        """
        return self.release_slot(key, holder, token=token).released

    def release_slot(
        self,
        key: str,
        holder: str,
        *,
        waiters_likely: bool = False,
        token: str | None = None,
    ) -> ReleaseResult:
        """Free ``holder``'s slot; with waiters, hand it to the oldest live one.

        ``token`` fences as in :meth:`release`. ``waiters_likely`` (the caller had to wait
        itself, say) starts with the queue read instead of the optimistic no-waiter release:
        2 requests instead of 3 under contention.
        """
        _validate_key(key)
        _validate_holder(holder)
        _validate_token(token)
        return self._release(
            key, holder, waiters_likely=waiters_likely, only_granted=False, token=token
        )

    def revoke(self, key: str, holder: str) -> ReleaseResult:
        """Take back a slot handed to ``holder`` that it has not claimed yet, passing it on.

        For a releaser whose wake-up found the waiter's callback gone (timed out, or its
        execution ended). A claimed lease is never touched, so a waiter that woke and claimed
        its slot at the same moment keeps it.
        """
        _validate_key(key)
        _validate_holder(holder)
        return self._release(key, holder, waiters_likely=True, only_granted=True)

    def _release(
        self,
        key: str,
        holder: str,
        *,
        waiters_likely: bool,
        only_granted: bool,
        token: str | None = None,
    ) -> ReleaseResult:
        counted_waiters = False
        # Set once the holder's lease turns out expired (on our clock) but still counted: it
        # is then removed by exactly that expiry, and the result says it was not live.
        seen_expiry: float | None = None
        for attempt in range(_MAX_ATTEMPTS):
            now = self._clock()
            if waiters_likely:
                heads = self._queue_heads(key)
                if not heads:
                    if counted_waiters:
                        self._recount_queue(key)  # nwait > 0 over an empty queue: repair
                    waiters_likely = counted_waiters = False
                    continue
                if not heads[0].is_live(now):
                    self._drop_waiter(key, heads[0])
                    continue
                if heads[0].holder == holder:
                    # The "releaser" is itself the oldest waiter: it holds no slot, so it just
                    # leaves the queue (a hand-off to itself would touch its item twice).
                    if token is not None or only_granted:
                        return ReleaseResult(False)
                    self._leave_queue(key, holder, heads[0].seq)
                    return ReleaseResult(False, left_queue=True)
                outcome = self._handoff(
                    key,
                    holder,
                    heads[0],
                    now,
                    only_granted=only_granted,
                    token=token,
                    seen_expiry=seen_expiry,
                )
                if isinstance(outcome, float):
                    seen_expiry = outcome
                    continue
                if outcome is not None:
                    return outcome
                continue
            try:
                self._transact(
                    release_ops(
                        self.table_name,
                        key,
                        holder,
                        now,
                        only_granted=only_granted,
                        token=token,
                        seen_expiry=seen_expiry,
                    )
                )
                observability.lease_released(key, holder)
                return ReleaseResult(seen_expiry is None)
            except _Cancelled as cancelled:
                lease_reason, meta_reason = cancelled.reasons
                if _failed(lease_reason):
                    result = self._not_released(
                        key,
                        holder,
                        lease_reason.get("Item"),
                        now,
                        only_granted=only_granted,
                        token=token,
                    )
                    if isinstance(result, float):
                        seen_expiry = result
                        continue
                    return result
                if _failed(meta_reason):
                    meta = _Meta.parse(meta_reason.get("Item"))
                    if meta.nwait > 0:
                        waiters_likely = counted_waiters = True
                        continue
                    # A lease item exists but the counter says 0: only possible after manual
                    # edits. Rebuild the counter from the holder items and try again.
                    self._reconcile(key, force=True)
                    continue
                _backoff(attempt)
        raise ContentionError(f"release({key!r}, {holder!r}) lost {_MAX_ATTEMPTS} races")

    def _not_released(
        self,
        key: str,
        holder: str,
        existing: Mapping[str, Any] | None,
        now: float,
        *,
        only_granted: bool,
        token: str | None,
    ) -> ReleaseResult | float:
        """The holder's item was not a (releasable) lease: explain and tidy what it was.

        Returns the item's expiry instead when it is the caller's own lease, expired on our
        clock but still counted: the caller then removes it by that expiry.
        """
        if existing is None or only_granted:
            return ReleaseResult(False)  # a revoke never touches a claimed lease or a waiter
        if token is not None and existing.get(TOKEN_ATTRIBUTE, {}).get("S") != token:
            return ReleaseResult(False)  # another generation: not ours to free (nor to dequeue)
        if _state(existing) == QUEUED:
            seq = int(existing["seq"]["N"])
            self._leave_queue(key, holder, seq)
            return ReleaseResult(False, left_queue=True)
        expires_at = float(existing[TTL_ATTRIBUTE]["N"])
        if expires_at <= now:
            return expires_at
        return ReleaseResult(False)

    def _handoff(
        self,
        key: str,
        releaser: str,
        waiter: Waiter,
        now: float,
        *,
        only_granted: bool,
        token: str | None = None,
        seen_expiry: float | None = None,
    ) -> ReleaseResult | float | None:
        """One hand-off from ``releaser`` to ``waiter``; None means "read the queue again",
        a float "remove the releaser's expired lease by this expiry" (see ``_not_released``)."""
        lower_hint = False
        grant_token = new_token()
        for _ in range(2):
            ops = handoff_ops(
                self.table_name,
                key,
                releaser,
                waiter,
                now,
                lower_hint=lower_hint,
                only_granted=only_granted,
                grant_token=grant_token,
                releaser_token=token,
                seen_expiry=seen_expiry,
            )
            try:
                self._transact(ops)
            except _Cancelled as cancelled:
                lease_reason, entry_reason, marker_reason, meta_reason = cancelled.reasons
                if _failed(lease_reason):
                    return self._not_released(
                        key,
                        releaser,
                        lease_reason.get("Item"),
                        now,
                        only_granted=only_granted,
                        token=token,
                    )
                if _failed(entry_reason):
                    return None  # someone else served this waiter
                if _failed(marker_reason):
                    self._drop_waiter(key, waiter)  # its marker is gone: an orphan entry
                    return None
                if _failed(meta_reason):
                    meta = _Meta.parse(meta_reason.get("Item"))
                    expires_at = math.ceil(now + waiter.lease_ttl_seconds)
                    if meta.nwait > 0 and meta.count > 0:
                        wanted = meta.needs_lower_hint(expires_at)
                        if wanted != lower_hint:
                            lower_hint = wanted  # only the expiry hint refused us
                            continue
                        return None  # the key moved on meanwhile: look again
                    if meta.nwait <= 0:
                        self._recount_queue(key)
                    if meta.count <= 0:
                        self._reconcile(key, force=True)
                return None
            observability.lease_released(key, releaser)
            observability.lease_acquired(key, waiter.holder)
            return ReleaseResult(seen_expiry is None, _grant_of(waiter, grant_token))
        return None

    def _fill(self, key: str, limit: int) -> list[Grant]:
        """Hand free slots (count below ``limit``) to the oldest live waiters."""
        grants: list[Grant] = []
        lower_hint = False
        for _ in range(_MAX_ATTEMPTS):
            now = self._clock()
            heads = self._queue_heads(key)
            if not heads:
                self._recount_queue(key)
                return grants
            waiter = heads[0]
            if not waiter.is_live(now):
                self._drop_waiter(key, waiter)
                continue
            grant_token = new_token()
            ops = handoff_ops(
                self.table_name,
                key,
                None,
                waiter,
                now,
                limit=limit,
                lower_hint=lower_hint,
                grant_token=grant_token,
            )
            try:
                self._transact(ops)
            except _Cancelled as cancelled:
                _entry_reason, marker_reason, meta_reason = cancelled.reasons
                if _failed(marker_reason):
                    self._drop_waiter(key, waiter)
                elif _failed(meta_reason):
                    meta = _Meta.parse(meta_reason.get("Item"))
                    if meta.count >= limit or meta.nwait <= 0:
                        return grants
                    wanted = meta.needs_lower_hint(math.ceil(now + waiter.lease_ttl_seconds))
                    if wanted == lower_hint:
                        _backoff(1)
                    lower_hint = wanted  # the expiry hint refused us
                continue
            lower_hint = False
            observability.lease_acquired(key, waiter.holder)
            grants.append(_grant_of(waiter, grant_token))
        return grants

    def _drop_waiter(self, key: str, waiter: Waiter) -> None:
        """Remove a dead waiter's entry (and its marker, if it still belongs to that entry)."""
        try:
            self._transact(leave_queue_ops(self.table_name, key, waiter.holder, waiter.seq))
        except _Cancelled as cancelled:
            entry_reason, _meta_reason, marker_reason = cancelled.reasons
            if _failed(marker_reason) and not _failed(entry_reason):
                # The holder has moved on (a lease, or a newer entry): drop only the entry.
                with contextlib.suppress(_Cancelled):
                    self._transact(leave_queue_ops(self.table_name, key, None, waiter.seq))

    def _leave_queue(self, key: str, holder: str, seq: int) -> None:
        try:
            self._transact(leave_queue_ops(self.table_name, key, holder, seq))
        except _Cancelled as cancelled:
            entry_reason = cancelled.reasons[0]
            if _failed(entry_reason):
                self._remove_marker(key, holder, seq)

    def _remove_marker(self, key: str, holder: str, seq: int) -> None:
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=_holder_key(key, holder),
                ConditionExpression="#st = :queued AND #seq = :seq",
                ExpressionAttributeNames={"#st": "st", "#seq": "seq"},
                ExpressionAttributeValues={":queued": {"S": QUEUED}, ":seq": {"N": str(seq)}},
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise

    def _recount_queue(self, key: str) -> None:
        """``nwait`` says someone waits but the queue is empty: set it to what is there."""
        meta = _Meta.parse(
            self._call(
                "get_item", TableName=self.table_name, Key=_meta_key(key), ConsistentRead=True
            ).get("Item")
        )
        actual = sum(1 for _ in self._query_items(key, QUEUE_PREFIX, keys_only=True))
        if not meta.exists or meta.nwait == actual:
            return
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_meta_key(key),
                UpdateExpression="SET #nw = :n, #v = :nv",
                ConditionExpression="#v = :v",
                ExpressionAttributeNames={"#nw": "nwait", "#v": "ver"},
                ExpressionAttributeValues={
                    ":n": {"N": str(actual)},
                    ":v": {"N": str(meta.version)},
                    ":nv": {"N": str(meta.version + 1)},
                },
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise

    # ------------------------------------------------------------ reading

    def holders(self, key: str, prefix: str | None = None) -> list[Lease]:
        """Live (unexpired) leases on ``key`` (held or granted, not queued), strongly read.

        ``prefix`` narrows to holder ids starting with it (the SDK integration names holders
        ``<execution>#<map op>#<branch op>``, so a prefix selects one map's leases).
        """
        return [lease for lease in self.entries(key, prefix) if lease.holds_slot]

    def entries(self, key: str, prefix: str | None = None) -> list[Lease]:
        """Live holder items on ``key``: leases and queue markers (``state == QUEUED``)."""
        _validate_key(key)
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidArgumentError("prefix", prefix, "must be a string or None")
        now = self._clock()
        return [
            _lease_from_item(item)
            for item in self._query_items(key, HOLDER_PREFIX + (prefix or ""), keys_only=False)
            if float(item[TTL_ATTRIBUTE]["N"]) > now
        ]

    def waiters(self, key: str) -> list[Waiter]:
        """The wait queue of ``key``, oldest first (dead entries included until dropped)."""
        _validate_key(key)
        return [
            _waiter_from_item(item)
            for item in self._query_items(key, QUEUE_PREFIX, keys_only=False)
        ]

    def reclaim_expired(self, key: str) -> int:
        """Free the slots of expired leases of ``key`` and fix its counter. Returns the number
        of slots freed.

        That counts leases this call deleted and leases DynamoDB's TTL sweeper deleted before
        the counter learned of it. A lease counts as expired here only once it is expired by
        more than ``clock_skew_seconds``. Slots freed while others wait are handed to them;
        :meth:`reclaim` also returns those grants so the caller can wake the waiters.
        """
        return self.reclaim(key).freed

    def reclaim(self, key: str) -> ReclaimResult:
        """Like :meth:`reclaim_expired`, with the slots freed and the waiters granted.

        One read of the key, then a transaction per 99 deletes; it reads again only when
        another writer cut the chain short.
        """
        _validate_key(key)
        total = ReclaimResult(0, 0, ())
        for attempt in range(_MAX_ATTEMPTS):
            outcome = self._reconcile_pass(key, force=False)
            if outcome is not None:
                done = outcome.result
                total = ReclaimResult(
                    total.deleted + done.deleted,
                    total.freed + done.freed,
                    total.grants + done.grants,
                )
                if outcome.complete:
                    return total
            _backoff(attempt)
        raise ContentionError(f"reclaim_expired({key!r}) lost {_MAX_ATTEMPTS} races")

    def slot_count(self, key: str) -> SlotCount:
        """The stored counter, for diagnostics and tests: it includes unreclaimed expired leases."""
        _validate_key(key)
        out = self._call(
            "get_item", TableName=self.table_name, Key=_meta_key(key), ConsistentRead=True
        )
        meta = _Meta.parse(out.get("Item"))
        return SlotCount(meta.count, meta.version, meta.nwait)

    def scan_leases(self, *, page_size: int | None = None) -> Iterator[Lease]:
        """Every holder item in the table, expired ones and queue markers included (for the
        reaper and the CLI).

        ``page_size`` caps the items DynamoDB reads per Scan request (before the filter drops
        counter and queue items), which bounds the read capacity one request consumes; None
        lets DynamoDB fill 1 MB pages.
        """
        for item in self._scan_items(HOLDER_PREFIX, page_size):
            yield _lease_from_item(item)

    def scan_waiters(self, *, page_size: int | None = None) -> Iterator[Waiter]:
        """Every queue entry in the table (for the CLI, the reaper and the demo's final check)."""
        for item in self._scan_items(QUEUE_PREFIX, page_size):
            yield _waiter_from_item(item)

    def _scan_items(self, prefix: str, page_size: int | None) -> Iterator[dict[str, Any]]:
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
                ExpressionAttributeValues={":p": {"S": prefix}},
                ConsistentRead=True,
                PaginationConfig={"PageSize": page_size} if page_size is not None else {},
            ):
                yield from page.get("Items", [])
        except ClientError as err:
            self._raise_table_missing(err)
            raise

    def now(self) -> float:
        """The store's clock, so callers judge expiry the same way the store does."""
        return self._clock()

    # --------------------------------------------------------------- helpers

    def _queue_heads(self, key: str) -> list[Waiter]:
        out = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :p)",
            ExpressionAttributeNames={"#pk": PK, "#sk": SK},
            ExpressionAttributeValues={":pk": {"S": key}, ":p": {"S": QUEUE_PREFIX}},
            ConsistentRead=True,
            Limit=_HEADS_PER_QUERY,
        )
        return [_waiter_from_item(item) for item in out.get("Items", [])]

    def _query_items(self, key: str, prefix: str, *, keys_only: bool) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {":pk": {"S": key}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        if keys_only:
            # The reconcile needs only identity, state and expiry; the rest is read for nothing.
            kwargs["ProjectionExpression"] = "#sk, #e, #st, #seq"
            kwargs["ExpressionAttributeNames"].update(
                {"#e": TTL_ATTRIBUTE, "#st": "st", "#seq": "seq"}
            )
        try:
            for page in self.client.get_paginator("query").paginate(**kwargs):
                yield from page.get("Items", [])
        except ClientError as err:
            self._raise_table_missing(err)
            raise

    def _reconcile(self, key: str, *, force: bool = False) -> ReclaimResult | None:
        """Make the counter equal the live leases, deleting every expired item.

        Expired queue markers go too, with their queue entries. Returns what it did, or None
        when another writer changed the semaphore before anything was written (the caller
        retries); a writer that intervenes between batches only ends it early with what was
        done so far. Slots can be freed without deleting anything when DynamoDB's TTL sweeper
        deleted expired items behind the counter's back. Freed slots go to live waiters first.
        """
        outcome = self._reconcile_pass(key, force=force)
        return None if outcome is None else outcome.result

    def _reconcile_pass(self, key: str, *, force: bool) -> _ReclaimPass | None:
        """One read of the key (the counter, then its holder items), then every batch that
        read calls for, so a reclaim costs one read plus one transaction per 99 deletes.

        The version check makes it safe against concurrent writers: each one bumps ``ver``,
        which cancels the next batch; None if that happened to the first.
        """
        now = self._clock()
        # Another client's lease is expired only by more than the skew margin on our clock;
        # queue markers are judged without it (a waiter dropped early only loses its place).
        cutoff = now - self.clock_skew_seconds
        meta = _Meta.parse(
            self._call(
                "get_item", TableName=self.table_name, Key=_meta_key(key), ConsistentRead=True
            ).get("Item")
        )
        items = list(self._query_items(key, HOLDER_PREFIX, keys_only=True))
        if not items and meta.exists and meta.count == 0 and meta.nwait <= 0:
            self._delete_idle_counter(key, meta)
            return _ReclaimPass(ReclaimResult(0, 0, ()), complete=True)
        plan = _plan_reclaim(self.table_name, key, meta, items, now=now, cutoff=cutoff)
        if plan.settled and not force:
            return _ReclaimPass(self._settle(key, meta, plan.hint), complete=True)
        return self._run_batches(key, meta, plan.batches)

    def _settle(self, key: str, meta: _Meta, hint: float | None) -> ReclaimResult:
        """Nothing to delete and the count is right: hand free slots to waiters and raise a
        stale expiry hint, so refusals stop reconciling for nothing."""
        observability.lease_in_flight(key, meta.count)
        grants: list[Grant] = []
        if meta.nwait > 0 and meta.limit and meta.count < meta.limit:
            grants = self._fill(key, meta.limit)
        if meta.hint != hint and hint is not None:
            self._set_hint(key, meta, hint)
        return ReclaimResult(0, 0, tuple(grants))

    def _run_batches(
        self, key: str, meta: _Meta, batches: list[_ReclaimBatch]
    ) -> _ReclaimPass | None:
        """Write the planned batches in order, without reading between them, until one is
        cancelled (another writer moved the key: the caller reads again); then hand the freed
        slots to waiters, once, after the deletes."""
        done: list[_ReclaimBatch] = []
        for batch in batches:
            try:
                self._transact(batch.ops)
            except _Cancelled:
                break
            done.append(batch)
            observability.lease_reclaimed(key, batch.deleted, in_flight=batch.count)
        if not done:
            return None
        count = done[-1].count
        grants: list[Grant] = []
        waiting = meta.nwait - sum(batch.markers for batch in done)
        if waiting > 0 and meta.limit and count < meta.limit:
            grants = self._fill(key, meta.limit)
        deleted = sum(batch.deleted for batch in done)
        result = ReclaimResult(deleted, max(0, meta.count - count), tuple(grants))
        return _ReclaimPass(result, complete=len(done) == len(batches))

    def forget_if_idle(self, key: str) -> bool:
        """Delete the counter item of ``key`` if no lease is counted and nobody waits.

        One conditional request. A key's counter outlives its last lease (deleting it with the
        last release would cost every release that empties a key a second request); call this
        when a key's users are done with it (the SDK integration does, when a map or parallel
        with a per-operation key returns), so finished keys leave nothing for the reaper's
        Scan to read. Harmless if the key is in use again: an acquire recreates the counter.
        """
        _validate_key(key)
        return self._delete_idle_counter(key, None)

    def _delete_idle_counter(self, key: str, meta: _Meta | None) -> bool:
        condition = "#c <= :zero AND (attribute_not_exists(#nw) OR #nw <= :zero)"
        names = {"#c": "count", "#nw": "nwait"}
        values: dict[str, Any] = {":zero": {"N": "0"}}
        if meta is not None:
            condition += " AND #v = :v"
            names["#v"] = "ver"
            values[":v"] = {"N": str(meta.version)}
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=_meta_key(key),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _set_hint(self, key: str, meta: _Meta, hint: float) -> None:
        """Raise a stale expiry hint to the true earliest expiry (version-checked)."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_meta_key(key),
                UpdateExpression="SET #xh = :xh",
                ConditionExpression="#v = :v",
                ExpressionAttributeNames={"#xh": "xh", "#v": "ver"},
                ExpressionAttributeValues={":xh": _num(hint), ":v": {"N": str(meta.version)}},
            )
        except ClientError as err:
            if _error_code(err) != "ConditionalCheckFailedException":
                raise

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems with a fresh idempotency token.

        botocore resends the same token when it retries a timed-out request, so a write that
        landed but whose answer was lost is not applied twice, and reports success.

        A cancellation with a ``ValidationError`` reason is not a lost race: the request can
        never succeed (typically the table's key types differ from ours), so it is raised as
        a configuration error at once instead of a :class:`_Cancelled` that callers retry.
        """
        try:
            self.client.transact_write_items(
                TransactItems=items,  # type: ignore[arg-type]
                ClientRequestToken=uuid.uuid4().hex,
            )
        except ClientError as err:
            if _error_code(err) == "TransactionCanceledException":
                reasons = err.response.get("CancellationReasons") or [{} for _ in items]
                for reason in reasons:
                    if reason.get("Code") == "ValidationError":
                        self._raise_invalid(err, str(reason.get("Message") or _message(err)))
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
        """Raise ours for the errors that mean the table cannot serve us: it is missing, or it
        called a request invalid (:meth:`_raise_invalid`). Anything else is left to the caller."""
        code = _error_code(err)
        if code == "ResourceNotFoundException":
            raise TableNotFoundError(self.table_name) from err
        if code == "ValidationException":
            self._raise_invalid(err, _message(err))

    def _raise_invalid(self, err: ClientError, message: str) -> NoReturn:
        """DynamoDB called a request of ours invalid: say whether the table is the cause.

        Our requests are well-formed for a lease table, so the usual cause is a table of
        another schema. One DescribeTable tells which key differs (:class:`TableSchemaError`);
        a table whose schema is right gets a plain :class:`DurableSemaphoreError` with
        DynamoDB's message instead of a false schema claim. When the table cannot be described
        (least-privilege roles have no ``dynamodb:DescribeTable``), DynamoDB's own message
        decides: one about keys or the schema is a schema error. Never retried: an invalid
        request stays invalid.
        """
        try:
            desc = self.client.describe_table(TableName=self.table_name)["Table"]
        except ClientError as describe_err:
            if _error_code(describe_err) == "ResourceNotFoundException":
                raise TableNotFoundError(self.table_name) from err
            unchecked = f"DescribeTable failed: {_error_code(describe_err)}"
        except BotoCoreError as describe_err:
            unchecked = f"DescribeTable failed: {describe_err}"
        else:
            problem = table_schema_problem(desc)
            if problem is not None:
                raise TableSchemaError(self.table_name, problem) from err
            raise DurableSemaphoreError(
                f"DynamoDB refused a request on table {self.table_name!r} as invalid, though "
                f"its key schema is right ({_EXPECTED_KEY}): {message}"
            ) from err
        if re.search(r"\bkey|schema", message, re.IGNORECASE):
            raise TableSchemaError(
                self.table_name,
                f"DynamoDB refused our key ({message}; {unchecked}, so the table's key is not "
                f"known), expected {_EXPECTED_KEY}",
            ) from err
        raise DurableSemaphoreError(
            f"DynamoDB refused a request on table {self.table_name!r} as invalid: {message} "
            f"({unchecked}; a lease table's key is {_EXPECTED_KEY})"
        ) from err


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    """What :meth:`DynamoDBSemaphore.reclaim` did: expired leases deleted, slots freed (also
    those whose items DynamoDB's TTL sweeper deleted first), and slots handed to waiters."""

    deleted: int
    freed: int
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class _ReclaimBatch:
    """One transaction of a reclaim: the counter write first, then up to 99 deletes."""

    ops: list[dict[str, Any]]
    #: The counter after this batch: the leases still present (expired ones not yet deleted
    #: included), so no reader between batches sees fewer counted than there are.
    count: int
    #: Leases deleted; queue markers are counted apart, each deleted with its queue entry.
    deleted: int
    markers: int


@dataclass(frozen=True, slots=True)
class _ReclaimPlan:
    """What one read of a key calls for."""

    batches: list[_ReclaimBatch]
    #: The earliest expiry among the leases that stay (the expiry hint ``xh``).
    hint: float | None
    #: Nothing to delete and the counter already right: no write needed.
    settled: bool


@dataclass(frozen=True, slots=True)
class _ReclaimPass:
    """A reconcile's result, and whether it wrote every batch its read called for."""

    result: ReclaimResult
    complete: bool


def _expiry(item: Mapping[str, Any]) -> float:
    return float(item[TTL_ATTRIBUTE]["N"])


def _plan_reclaim(
    table: str,
    key: str,
    meta: _Meta,
    items: list[dict[str, Any]],
    *,
    now: float,
    cutoff: float,
) -> _ReclaimPlan:
    """Turn one read of a key (its counter and its ``h#`` items) into the chain of
    transactions that deletes its expired items, keeping the counter right after each.

    Pure, so the whole chain is known up front: batch ``i`` expects the version batch
    ``i - 1`` wrote (``meta.version + i``), and no batch needs a read of its own. Leases
    count as expired at ``cutoff`` (the skew margin), queue markers at ``now``.
    """
    expired = [i for i in items if _expiry(i) <= (now if _state(i) == QUEUED else cutoff)]
    leases = [i for i in items if _state(i) != QUEUED]
    live = [_expiry(i) for i in leases if _expiry(i) > cutoff]
    hint = min(live, default=None)
    chunks = _chunk_deletes(expired)
    hints = _hints_after(chunks, hint)
    batches: list[_ReclaimBatch] = []
    count, left = len(leases), len(items)
    for n, chunk in enumerate(chunks):
        markers = sum(1 for i in chunk if _state(i) == QUEUED)
        count -= len(chunk) - markers
        left -= len(chunk)
        exists = meta.exists or n > 0  # the first batch creates a missing counter
        version = meta.version + n
        if left == 0 and exists:
            # Nothing is left on the key: delete its counter instead of keeping a zero.
            counter = _counter_delete(table, key, version)
        else:
            counter = _counter_update(table, key, version, exists, count, markers, hints[n])
        deletes = _reclaim_deletes(table, key, chunk, now=now, cutoff=cutoff)
        batches.append(_ReclaimBatch([counter, *deletes], count, len(chunk) - markers, markers))
    settled = not expired and meta.count == len(live)
    return _ReclaimPlan(batches, hint, settled)


def _chunk_deletes(expired: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split expired items into transactions of at most 99 deletes, in the order read; a
    queue marker costs two (its queue entry goes with it). There is always one batch: with
    nothing to delete, it still corrects the counter."""
    chunks: list[list[dict[str, Any]]] = [[]]
    room = _MAX_DELETES_PER_RECONCILE
    for item in expired:
        cost = 2 if _state(item) == QUEUED else 1
        if cost > room:
            chunks.append([])
            room = _MAX_DELETES_PER_RECONCILE
        chunks[-1].append(item)
        room -= cost
    return chunks


def _hints_after(chunks: list[list[dict[str, Any]]], live_hint: float | None) -> list[float | None]:
    """The expiry hint to write with each batch: the earliest expiry among the leases still
    present after it. Expired leases that later batches delete keep it low, so should the
    chain stop halfway, a refused acquire still sees that a reconcile can free a slot."""
    hints: list[float | None] = []
    hint = live_hint
    for chunk in reversed(chunks):
        hints.append(hint)
        for item in chunk:
            if _state(item) != QUEUED and (hint is None or _expiry(item) < hint):
                hint = _expiry(item)
    return hints[::-1]


def _counter_update(
    table: str,
    key: str,
    version: int,
    exists: bool,
    count: int,
    markers: int,
    hint: float | None,
) -> dict[str, Any]:
    """Set ``count`` and take ``markers`` off ``nwait``, if the counter is still at
    ``version`` (or still absent): a writer in between cancels the batch."""
    set_clause = "SET #c = :n, #v = :nv"
    names = {"#c": "count", "#v": "ver"}
    values: dict[str, Any] = {":n": {"N": str(count)}, ":nv": {"N": str(version + 1)}}
    if markers:
        set_clause += ", #nw = if_not_exists(#nw, :zero) - :dq"
        names["#nw"] = "nwait"
        values[":dq"] = {"N": str(markers)}
        values[":zero"] = {"N": "0"}
    if hint is not None:
        set_clause += ", #xh = :xh"
        names["#xh"] = "xh"
        values[":xh"] = _num(hint)
    if exists:
        condition = "#v = :v"
        values[":v"] = {"N": str(version)}
    else:
        condition = "attribute_not_exists(#v)"
    return {
        "Update": {
            "TableName": table,
            "Key": _meta_key(key),
            "UpdateExpression": set_clause,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _counter_delete(table: str, key: str, version: int) -> dict[str, Any]:
    return {
        "Delete": {
            "TableName": table,
            "Key": _meta_key(key),
            "ConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {"#v": "ver"},
            "ExpressionAttributeValues": {":v": {"N": str(version)}},
        }
    }


def _reclaim_deletes(
    table: str, key: str, chunk: list[dict[str, Any]], *, now: float, cutoff: float
) -> list[dict[str, Any]]:
    """Delete each item only if still expired (a renewal in between cancels the batch); a
    queue marker takes its queue entry with it."""
    ops: list[dict[str, Any]] = []
    for item in chunk:
        queued = _state(item) == QUEUED
        ops.append(
            {
                "Delete": {
                    "TableName": table,
                    "Key": {PK: {"S": key}, SK: item[SK]},
                    "ConditionExpression": "#e <= :deadline",
                    "ExpressionAttributeNames": {"#e": TTL_ATTRIBUTE},
                    "ExpressionAttributeValues": {":deadline": _num(now if queued else cutoff)},
                }
            }
        )
        if queued:
            entry = _queue_key(key, int(item["seq"]["N"]))
            ops.append({"Delete": {"TableName": table, "Key": entry}})
    return ops


class _Cancelled(Exception):
    """A cancelled transaction, with DynamoDB's per-item reasons in request order.

    Only for outcomes a retry can change (failed conditions, conflicts): a ``ValidationError``
    reason is raised by :meth:`DynamoDBSemaphore._transact` as a configuration error instead.
    """

    def __init__(self, reasons: list[Mapping[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


def _grant_of(waiter: Waiter, token: str) -> Grant:
    return Grant(
        waiter.key,
        waiter.holder,
        waiter.execution_arn,
        waiter.callback_id,
        waiter.spare_callback_ids,
        token,
    )


def _with_grants(result: AcquireResult, grants: list[Grant]) -> AcquireResult:
    if not grants:
        return result
    return dataclasses.replace(result, grants=tuple(grants) + result.grants)


def _backoff(attempt: int) -> None:
    """The store's pause before retrying a lost race (:data:`durable_semaphore.retry.CONFLICT`)."""
    retry.CONFLICT.pause(attempt)
