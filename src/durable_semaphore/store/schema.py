"""The table's layout: key and attribute names, and the codecs between items and values.

One partition per key (per shard of a sharded limit)::

    pk = <key>  sk = "#meta"        the counter item: the leases themselves, one attribute
                                    "L#<slot>" each, and count, ver, wseq, nwait, served, xh,
                                    lim, expires_at (TTL); ol, olt while a limit is set at
                                    run time (store/overrides.py)
    pk = <key>  sk = "h#<holder>"   a waiter's marker (st queued, seq, expires_at): makes
                                    joining the queue idempotent per holder
    pk = <key>  sk = "w#<seq>"      the wait queue, in arrival order: holder, seq, qexp, lttl,
                                    at, cb, cbs, execution_arn, expires_at (TTL)
    pk = <key>  sk = "w#<rank>.<tie>"  an entry with a priority or a group (pri, grp, tag), in
                                    rank order among the plain ones (see ordering.py)
    pk = <key>  sk = "g#<group>"    a group's last virtual tag (last, ve, expires_at (TTL));
                                    the counter then carries vt and ve too

A lease is an attribute of the counter item, so taking or freeing an uncontended slot writes
one item, once (see docs/store.md for the designs measured against this one). Its attribute
name is a digest of the holder id (:func:`slot_name`): fixed width, and addressable by the
holder without reading. Every row carries the TTL attribute, refreshed by the writes that
happen anyway, so a key nobody uses leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_semaphore.store.model import (
    GRANTED,
    HELD,
    ORDERED_BASE,
    QUEUED,
    TIE_SPACE,
    Lease,
    Waiter,
)

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
META_SK = "#meta"
HOLDER_PREFIX = "h#"
QUEUE_PREFIX = "w#"
#: Lease attributes of the counter item start with this; nothing else there does.
LEASE_PREFIX = "L#"
SEQ_WIDTH = 20

# Counter attributes.
COUNT = "count"  # leases in the item (held and granted)
VERSION = "ver"  # bumped by every write: reconciles and repairs check it
WSEQ = "wseq"  # arrivals ever queued (with SERVED, how many are ahead of a newcomer)
NWAIT = "nwait"  # queue entries; a fresh acquire is refused while it is above 0
SERVED = "served"  # queue entries ever served or dropped
HINT = "xh"  # a lower bound of every lease's expiry: a refusal reconciles only past it
LIMIT = "lim"  # the limit the last writer used (what a waiter fills up to)
LAST_RELEASE = "lr"  # the request id of the last plain release (see requests.Fence)
OVERRIDE = "ol"  # a limit set at run time (set-limit): it beats the code's (store/overrides.py)
OVERRIDE_AT = "olt"  # when it was set, epoch seconds

# Fields of a lease attribute (a map); short, because every write pays for the item's size.
F_HOLDER = "h"  # the holder id, less the first F_PREFIX characters it shares with the key
F_PREFIX = "p"
F_TOKEN = "t"
F_EXPIRES = "x"
F_ACQUIRED = "a"
F_GRANTED = "g"  # present (True) while the lease is handed over but not yet claimed
F_ARN = "e"  # the execution ARN, or the length of the holder id's prefix that is the ARN
F_WEIGHT = "w"  # units of the limit the lease holds, when more than 1

# Marker and queue item attributes.
STATE = "st"
SEQ = "seq"
HOLDER = "holder"
ARN = "execution_arn"
QUEUE_WEIGHT = "qw"  # units a waiter waits for, when more than 1
QUEUE_LIMIT = "ql"  # the limit a waiter waits under
QUEUE_PRIORITY = "pri"  # a waiter's priority, when not 0
QUEUE_GROUP = "grp"  # a waiter's group, when it has one
QUEUE_TAG = "tag"  # a grouped waiter's virtual start tag

#: How long an idle counter item outlives the last expiry it covers. Long enough that a key
#: in use is never swept under its users (a waiter checks in far more often), short enough
#: that a key nobody uses again is gone within a day or two.
IDLE_GRACE_SECONDS = 86_400

#: The key schema shared by :meth:`DynamoDBSemaphore.create_table` and template.yaml.
KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": PK, "KeyType": "HASH"},
    {"AttributeName": SK, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS: list[dict[str, str]] = [
    {"AttributeName": PK, "AttributeType": "S"},
    {"AttributeName": SK, "AttributeType": "S"},
]
_TYPE_NAMES = {"S": "String", "N": "Number", "B": "Binary"}


def _key_text(keys: list[tuple[str, str]], types: Mapping[str, str]) -> str:
    """``pk String HASH + sk String RANGE``: a key schema as people read it, HASH first."""
    ordered = sorted(keys, key=lambda k: k[1] != "HASH")
    return " + ".join(
        f"{name} {_TYPE_NAMES.get(types.get(name, ''), 'of unknown type')} {kind}"
        for name, kind in ordered
    )


EXPECTED_KEY = _key_text(
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
    return f"its key is {_key_text(keys, types) or 'unknown'}, expected {EXPECTED_KEY}"


# -- keys --------------------------------------------------------------------------------------


def meta_key(key: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": META_SK}}


def holder_key(key: str, holder: str) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": HOLDER_PREFIX + holder}}


def queue_sk(seq: int) -> str:
    """An entry's sort key from its number: a plain arrival number as it always was, an
    ordered one (priority or group) as ``<rank>.<tie>``, which sorts among the plain ones by
    rank (a plain entry's rank is its arrival number)."""
    if seq < ORDERED_BASE:
        return f"{QUEUE_PREFIX}{seq:0{SEQ_WIDTH}d}"
    rank, tie = divmod(seq - ORDERED_BASE, TIE_SPACE)
    return f"{QUEUE_PREFIX}{rank:0{SEQ_WIDTH}d}.{tie:018d}"


def queue_key(key: str, seq: int) -> dict[str, Any]:
    return {PK: {"S": key}, SK: {"S": queue_sk(seq)}}


def slot_name(holder: str) -> str:
    """The counter item's attribute for ``holder``'s lease: 72 bits of its digest, so at a
    thousand holders per item a collision is about one in 10^15 (and a collision can only
    refuse a slot, never add one: the attribute exists once)."""
    digest = hashlib.blake2b(holder.encode(), digest_size=9).digest()
    return LEASE_PREFIX + base64.urlsafe_b64encode(digest).decode()


# -- values ------------------------------------------------------------------------------------


def num(value: float) -> dict[str, str]:
    if float(value).is_integer():
        return {"N": str(int(value))}
    return {"N": repr(float(value))}


def whole_seconds(value: float) -> int:
    """Expiries are whole epoch seconds (DynamoDB's TTL reads them so), rounded up."""
    return math.ceil(value)


def life_of(expires_at: float) -> int:
    """The counter item's TTL that covers something expiring at ``expires_at``."""
    return math.ceil(expires_at) + IDLE_GRACE_SECONDS


def encode_lease(
    key: str,
    holder: str,
    *,
    token: str,
    expires_at: int,
    acquired_at: float,
    execution_arn: str | None,
    granted: bool = False,
    weight: int = 1,
) -> dict[str, Any]:
    """A lease attribute. The holder id is stored without the part it shares with the key,
    and the ARN as a length when the holder id starts with it (the SDK's holder ids do), so a
    lease of a map's branch costs about 60 bytes more than its branch suffix."""
    shared = len(key) if holder.startswith(key) else 0
    fields: dict[str, Any] = {
        F_HOLDER: {"S": holder[shared:]},
        F_TOKEN: {"S": token},
        F_EXPIRES: num(expires_at),
        F_ACQUIRED: num(round(acquired_at, 3)),
    }
    if shared:
        fields[F_PREFIX] = {"N": str(shared)}
    if execution_arn is not None:
        if holder.startswith(execution_arn):
            fields[F_ARN] = {"N": str(len(execution_arn))}
        else:
            fields[F_ARN] = {"S": execution_arn}
    if granted:
        fields[F_GRANTED] = {"BOOL": True}
    if weight != 1:
        fields[F_WEIGHT] = {"N": str(weight)}
    return {"M": fields}


def decode_lease(key: str, value: Mapping[str, Any]) -> Lease:
    fields = value["M"]
    shared = int(fields[F_PREFIX]["N"]) if F_PREFIX in fields else 0
    holder = key[:shared] + fields[F_HOLDER]["S"]
    arn_field = fields.get(F_ARN)
    arn: str | None = None
    if arn_field is not None:
        arn = holder[: int(arn_field["N"])] if "N" in arn_field else arn_field["S"]
    return Lease(
        key=key,
        holder=holder,
        acquired_at=float(fields.get(F_ACQUIRED, {"N": "0"})["N"]),
        expires_at=float(fields[F_EXPIRES]["N"]),
        execution_arn=arn,
        state=GRANTED if F_GRANTED in fields else HELD,
        token=fields.get(F_TOKEN, {}).get("S"),
        weight=int(fields[F_WEIGHT]["N"]) if F_WEIGHT in fields else 1,
    )


def marker_lease(item: Mapping[str, Any]) -> Lease:
    """A waiter's marker as a :class:`Lease` of state QUEUED (how listings show a waiter)."""
    return Lease(
        key=item[PK]["S"],
        holder=item[SK]["S"][len(HOLDER_PREFIX) :],
        acquired_at=float(item.get("acquired_at", {"N": "0"})["N"]),
        expires_at=float(item[TTL_ATTRIBUTE]["N"]),
        execution_arn=item.get(ARN, {}).get("S"),
        state=QUEUED,
    )


def waiter_from_item(item: Mapping[str, Any]) -> Waiter:
    return Waiter(
        key=item[PK]["S"],
        holder=item[HOLDER]["S"],
        seq=int(item[SEQ]["N"]),
        expires_at=float(item["qexp"]["N"]),
        lease_ttl_seconds=float(item["lttl"]["N"]),
        execution_arn=item.get(ARN, {}).get("S"),
        callback_id=item.get("cb", {}).get("S"),
        spare_callback_ids=tuple(v["S"] for v in item.get("cbs", {}).get("L", [])),
        weight=int(item[QUEUE_WEIGHT]["N"]) if QUEUE_WEIGHT in item else 1,
        limit=int(item[QUEUE_LIMIT]["N"]) if QUEUE_LIMIT in item else None,
        priority=int(item[QUEUE_PRIORITY]["N"]) if QUEUE_PRIORITY in item else 0,
        group=item[QUEUE_GROUP]["S"] if QUEUE_GROUP in item else None,
        tag=int(item[QUEUE_TAG]["N"]) if QUEUE_TAG in item else None,
    )


@dataclass(frozen=True, slots=True)
class Meta:
    """The counter item, parsed; absent attributes read as their neutral value."""

    exists: bool
    #: Units held: the sum of the leases' weights (their number when every weight is 1).
    count: int
    version: int
    wseq: int
    nwait: int
    hint: float | None
    limit: int | None
    served: int = 0
    #: The item's TTL attribute (None when absent).
    expires_at: float | None = None
    last_release: str | None = None
    #: Lease attribute name -> the lease, as stored (expired ones included).
    leases: dict[str, Lease] = field(default_factory=dict)
    #: The limit set at run time (set-limit), and when; None when the code's limit rules.
    override: int | None = None
    override_at: float | None = None

    @classmethod
    def parse(cls, item: Mapping[str, Any] | None) -> Meta:
        if not item:
            return cls(False, 0, 0, 0, 0, None, None)

        def number(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        key = item[PK]["S"] if PK in item else ""
        return cls(
            True,
            number(COUNT),
            number(VERSION),
            number(WSEQ),
            number(NWAIT),
            float(item[HINT]["N"]) if HINT in item else None,
            int(item[LIMIT]["N"]) if LIMIT in item else None,
            number(SERVED),
            float(item[TTL_ATTRIBUTE]["N"]) if TTL_ATTRIBUTE in item else None,
            item.get(LAST_RELEASE, {}).get("S"),
            {name: decode_lease(key, value) for name, value in _lease_attributes(item)},
            int(item[OVERRIDE]["N"]) if OVERRIDE in item else None,
            float(item[OVERRIDE_AT]["N"]) if OVERRIDE_AT in item else None,
        )

    def in_force(self, code_limit: int) -> int:
        """The limit admissions count against: the override if one is set, else the code's."""
        return self.override if self.override is not None else code_limit

    def lease_of(self, holder: str) -> Lease | None:
        return self.leases.get(slot_name(holder))

    def needs_lower_hint(self, expires_at: float) -> bool:
        """Whether a lease expiring at ``expires_at`` must lower the stored hint."""
        if self.hint is None:
            return self.count > 0
        return self.hint > expires_at

    def needs_longer_life(self, expires_at: float) -> bool:
        """Whether the item's TTL must move later (to :func:`life_of`) to outlive something
        expiring at ``expires_at``; False when it already lives longer."""
        return self.expires_at is None or self.expires_at <= life_of(expires_at)

    def fits(self, weight: int, limit: int) -> bool:
        """Whether ``weight`` more units fit under ``limit`` as counted now."""
        return self.count + weight <= limit

    def may_hold_expired(self, now: float) -> bool:
        """Whether a lease counted here can have expired (so a reconcile can free a slot)."""
        if self.count <= 0:
            return False
        return self.hint is None or self.hint <= now


def _lease_attributes(item: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, value in item.items():
        if name.startswith(LEASE_PREFIX):
            yield name, value
