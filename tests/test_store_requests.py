"""The exact requests the store sends, pinned with botocore's Stubber (no DynamoDB).

Each test queues the responses DynamoDB would give, with the parameters the store must send
(``expected_params``: every key, every expression, every name and value), so a change to a
condition or an attribute shows up here as a diff of the request. Refusals are stubbed too
(``ConditionalCheckFailedException`` with the item as it was), which drives the decision
paths: a holder's own lease in the refusal, the other TTL variant, a release whose answer was
lost. The clock is injected and the random parts are fixed (or matched with ``ANY``), so every
time and number is known. Then the codecs of :mod:`durable_semaphore.store.schema` and
:class:`durable_semaphore.store.expressions.Expr`, on their own.
"""

from __future__ import annotations

import string
import types
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_semaphore import DynamoDBSemaphore
from durable_semaphore.store import core, queueing, releasing, requests
from durable_semaphore.store.model import (
    GRANTED,
    HELD,
    AcquireResult,
    Grant,
    Lease,
    ReclaimResult,
    ReleaseResult,
)
from durable_semaphore.store.overrides import NO_OVERRIDE
from durable_semaphore.store.requests import (
    HANDOFF_ENTRY,
    HANDOFF_MARKER,
    HANDOFF_META,
    NO_LEASE_YET,
    NOBODY_WAITS,
    SLOT_FREE,
    Expr,
)
from durable_semaphore.store.schema import (
    IDLE_GRACE_SECONDS,
    LEASE_PREFIX,
    Meta,
    decode_lease,
    encode_lease,
    slot_name,
)
from tests.conftest import FakeClock

TABLE = "locks"
NOW = 1_700_000_000.25  # a quarter second past: expiries round up, acquired_at keeps it
SKEW = 30.0
TTL = 60
EXP = 1_700_000_061  # ceil(NOW + TTL)
LIFE = EXP + IDLE_GRACE_SECONDS  # the counter item's TTL that covers it
SLOT_H1 = "L#MlES0uVbj8K3"  # slot_name("h1"), pinned below
SLOT_W1 = "L#M6V3UPMIdXK8"  # slot_name("w1")
META_KEY = {"pk": {"S": "k"}, "sk": {"S": "#meta"}}
ZERO_ONE = {":zero": {"N": "0"}, ":one": {"N": "1"}}
#: The common tail of a counter write: bump the version (and, with a lease expiring at
#: :exp, keep the hint a lower bound; raise the item's TTL to :life).
BUMP_VERSION = "#v = if_not_exists(#v, :zero) + :one"
KEEP_HINT_SET = "#xh = if_not_exists(#xh, :exp)"
KEEP_HINT_IF = (
    "((attribute_not_exists(#xh) AND (attribute_not_exists(#c) OR #c <= :zero)) OR #xh <= :exp)"
)
RAISE_LIFE_IF = "(attribute_not_exists(#e) OR #e <= :life)"

_SESSION = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


@pytest.fixture
def stub() -> Iterator[Stubber]:
    """A DynamoDB client with a Stubber: every request must have been queued, in order, and
    every queued one must be used."""
    client = _SESSION.client("dynamodb")
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def sem(stub: Stubber, monkeypatch: pytest.MonkeyPatch) -> DynamoDBSemaphore:
    """A store on the stubbed client, at NOW, with its random parts fixed: a queue number's
    tiebreak is 7, a release's request id ``rid-release0`` and a granted lease's token
    ``grant-token``."""
    monkeypatch.setattr(core, "random", types.SimpleNamespace(randrange=lambda n: 7))
    monkeypatch.setattr(releasing, "new_token", lambda: "rid-release0-and-the-rest")
    monkeypatch.setattr(queueing, "new_token", lambda: "grant-token")
    client: Any = stub.client
    return DynamoDBSemaphore(TABLE, client, clock=FakeClock(NOW), clock_skew_seconds=SKEW)


def _refused(stub: Stubber, method: str, item: dict[str, Any] | None, **expected: Any) -> None:
    """Queue a ConditionalCheckFailedException returning ``item`` (the item as it was)."""
    stub.add_client_error(
        method,
        service_error_code="ConditionalCheckFailedException",
        service_message="The conditional request failed",
        expected_params=expected or None,
        modeled_fields={"Item": item} if item is not None else None,
    )


def _lease_value(holder: str, token: str, expires_at: float, **extra: Any) -> dict[str, Any]:
    return encode_lease(
        "k",
        holder,
        token=token,
        expires_at=int(expires_at),
        acquired_at=NOW - 100,
        execution_arn=None,
        **extra,
    )


def _counter_item(
    leases: dict[str, dict[str, Any]],
    *,
    count: int | None = None,
    version: int = 4,
    nwait: int = 0,
    hint: float | None = None,
    life: float | None = None,
    limit: int = 3,
    **more: dict[str, Any],
) -> dict[str, Any]:
    """A counter item as DynamoDB would return it; ``leases`` maps holder -> lease value."""
    item: dict[str, Any] = {
        **META_KEY,
        "count": {"N": str(len(leases) if count is None else count)},
        "ver": {"N": str(version)},
        "nwait": {"N": str(nwait)},
        "lim": {"N": str(limit)},
        **more,
    }
    if hint is not None:
        item["xh"] = {"N": str(int(hint))}
    if life is not None:
        item["expires_at"] = {"N": str(int(life))}
    item.update({slot_name(holder): value for holder, value in leases.items()})
    return item


def _acquire_params(
    *,
    hint: str = "keep",
    life: str = "raise",
    holder: str = "h1",
    limit: int = 3,
    token: str = "tok-1",
) -> dict[str, Any]:
    """The single-item acquire of ``holder`` (token ``token``) on key ``k``."""
    sets = ["#l = :lease", "#c = if_not_exists(#c, :zero) + :w", "#lim = :limit", BUMP_VERSION]
    conditions = [SLOT_FREE, NOBODY_WAITS, NO_LEASE_YET, NO_OVERRIDE]
    if hint == "keep":
        sets.append(KEEP_HINT_SET)
        conditions.append(KEEP_HINT_IF)
    else:
        sets.append("#xh = :exp")
        conditions.append("(attribute_not_exists(#xh) OR #xh > :exp)")
    if life == "raise":
        sets.append("#e = :life")
        conditions.append(RAISE_LIFE_IF)
    else:
        conditions.append("#e >= :life")
    return {
        "TableName": TABLE,
        "Key": META_KEY,
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeNames": {
            "#l": {"h1": SLOT_H1, "w1": SLOT_W1}[holder],
            "#c": "count",
            "#nw": "nwait",
            "#lim": "lim",
            "#ol": "ol",
            "#v": "ver",
            "#xh": "xh",
            "#e": "expires_at",
        },
        "ExpressionAttributeValues": {
            ":lease": {
                "M": {
                    "h": {"S": holder},
                    "t": {"S": token},
                    "x": {"N": str(EXP)},
                    "a": {"N": "1700000000.25"},
                }
            },
            ":limit": {"N": str(limit)},
            ":room": {"N": str(limit - 1)},
            ":w": {"N": "1"},
            **ZERO_ONE,
            ":exp": {"N": str(EXP)},
            ":life": {"N": str(LIFE)},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _renew_params(*, expires_at: int, token: str | None, life: str = "raise") -> dict[str, Any]:
    """A renew of ``h1``'s lease to ``expires_at``, fenced by ``token`` when given."""
    conditions = ["attribute_exists(#l)", "#l.#lx > :now", "#l.#lx < :newexp"]
    names = {"#l": SLOT_H1, "#lx": "x", "#v": "ver", "#e": "expires_at"}
    values: dict[str, Any] = {
        ":newexp": {"N": str(expires_at)},
        ":now": {"N": "1700000000.25"},
        **ZERO_ONE,
        ":life": {"N": str(expires_at + IDLE_GRACE_SECONDS)},
    }
    if token is not None:
        conditions.append("#l.#lt = :tok")
        names["#lt"] = "t"
        values[":tok"] = {"S": token}
    sets = ["#l.#lx = :newexp", BUMP_VERSION]
    if life == "raise":
        sets.append("#e = :life")
        conditions.append(RAISE_LIFE_IF)
    else:
        conditions.append("#e >= :life")
    return {
        "TableName": TABLE,
        "Key": META_KEY,
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        "ReturnValues": "ALL_NEW",
    }


def _release_params(request_id: str = "rid-release0") -> dict[str, Any]:
    """The plain release of ``h1``'s lease of token ``tok-1``."""
    return {
        "TableName": TABLE,
        "Key": META_KEY,
        "UpdateExpression": (
            f"SET #c = #c - if_not_exists(#l.#lw, :one), #lr = :rid, {BUMP_VERSION} REMOVE #l"
        ),
        "ConditionExpression": (
            "#c > :zero AND (attribute_not_exists(#nw) OR #nw <= :zero) AND attribute_exists(#l)"
            " AND #l.#lx > :now AND #l.#lt = :tok"
        ),
        "ExpressionAttributeNames": {
            "#l": SLOT_H1,
            "#c": "count",
            "#nw": "nwait",
            "#lr": "lr",
            "#lw": "w",
            "#lx": "x",
            "#lt": "t",
            "#v": "ver",
        },
        "ExpressionAttributeValues": {
            ":rid": {"S": request_id},
            ":now": {"N": "1700000000.25"},
            ":tok": {"S": "tok-1"},
            **ZERO_ONE,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _h1_lease(expires_at: float = EXP, token: str = "tok-1") -> Lease:
    return Lease("k", "h1", NOW, float(expires_at), None, HELD, token)


# -- taking a slot -----------------------------------------------------------------------------


def test_an_uncontended_acquire_is_one_update_of_the_counter(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    stub.add_response("update_item", {}, _acquire_params())
    result = sem.acquire("k", "h1", 3, ttl_seconds=TTL, token="tok-1")
    assert result == AcquireResult(_h1_lease())


def test_a_refused_acquire_that_finds_its_own_live_lease_renews_it_and_takes_no_slot(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """A replay (or an overlapping invocation): NO_LEASE_YET refuses the acquire, the refusal
    carries the holder's lease, and the store renews that lease (no token: any live lease of
    the holder) instead of counting the holder twice; the lease keeps its own token."""
    mine = _lease_value("h1", "tok-0", NOW + 30)
    item = _counter_item(
        {"h1": mine, "other": _lease_value("other", "x", NOW + 500)}, hint=NOW + 30
    )
    _refused(stub, "update_item", item, **_acquire_params())
    renewed = {**item, slot_name("h1"): _lease_value("h1", "tok-0", EXP)}
    stub.add_response(
        "update_item",
        {"Attributes": renewed},
        _renew_params(expires_at=EXP, token=None),  # no count, no limit: no slot taken
    )
    result = sem.acquire("k", "h1", 3, ttl_seconds=TTL, token="tok-1")
    assert result == AcquireResult(Lease("k", "h1", NOW - 100, float(EXP), None, HELD, "tok-0"))


def test_an_acquire_refused_for_its_ttl_variant_retries_with_the_other_one(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """A slot is free, but the item already lives longer than this lease needs (another lease
    expires later): the write that raises the item's TTL is refused, and the store sends the
    variant that only checks the TTL covers the new lease. The hint variant stays."""
    item = _counter_item(
        {"a": _lease_value("a", "x", NOW + 10), "b": _lease_value("b", "y", NOW + 7_200)},
        hint=NOW + 10,
        life=NOW + 7_200 + IDLE_GRACE_SECONDS,
    )
    _refused(stub, "update_item", item, **_acquire_params())
    stub.add_response("update_item", {}, _acquire_params(life="check"))
    result = sem.acquire("k", "h1", 3, ttl_seconds=TTL, token="tok-1")
    assert result == AcquireResult(_h1_lease())


def test_an_acquire_refused_for_its_hint_variant_lowers_the_hint(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """Every lease in the item expires after the new one: the hint must come down to it."""
    item = _counter_item(
        {"a": _lease_value("a", "x", NOW + 3_600)}, hint=NOW + 3_600, life=NOW + 3_600
    )
    _refused(stub, "update_item", item, **_acquire_params())
    stub.add_response("update_item", {}, _acquire_params(hint="lower"))
    assert sem.acquire("k", "h1", 3, ttl_seconds=TTL, token="tok-1").lease == _h1_lease()


def test_renew_is_one_update_that_only_moves_the_expiry_later(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    out = _counter_item({"h1": _lease_value("h1", "tok-1", 1_700_000_121)})
    stub.add_response(
        "update_item", {"Attributes": out}, _renew_params(expires_at=1_700_000_121, token="tok-1")
    )
    lease = sem.renew("k", "h1", 120, token="tok-1")
    assert lease == Lease("k", "h1", NOW - 100, 1_700_000_121.0, None, HELD, "tok-1")


def test_renew_switches_the_ttl_variant_once_and_then_reads_the_refusal(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """The item lives longer than the renewed lease needs: one retry with the checking
    variant. When that is refused too (the lease meanwhile released), nothing more is sent."""
    long_lived = _counter_item(
        {"h1": _lease_value("h1", "tok-1", NOW + 5)}, life=NOW + 10 * IDLE_GRACE_SECONDS
    )
    first = _renew_params(expires_at=EXP, token="tok-1")
    _refused(stub, "update_item", long_lived, **first)
    second = _renew_params(expires_at=EXP, token="tok-1", life="check")
    released = _counter_item({}, life=NOW + 10 * IDLE_GRACE_SECONDS)
    _refused(stub, "update_item", released, **second)
    assert sem.renew("k", "h1", TTL, token="tok-1") is None


# -- freeing a slot ----------------------------------------------------------------------------


def test_a_plain_release_is_one_update_of_the_counter(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    stub.add_response("update_item", {}, _release_params())
    assert sem.release("k", "h1", token="tok-1") is True


def test_a_release_whose_answer_was_lost_is_reported_released(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """botocore resent the release after its answer was lost: the resend is refused (the
    lease is gone), but the counter's ``lr`` is this release's request id, so the lease was
    freed by this very call."""
    after = _counter_item({}, version=5, lr={"S": "rid-release0"})
    _refused(stub, "update_item", after, **_release_params())
    assert sem.release("k", "h1", token="tok-1") is True


def test_a_release_refused_after_another_release_is_not_reported_released(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """The same refusal with another release's id in ``lr``: this call freed nothing, and a
    fenced release asks nothing more."""
    after = _counter_item({}, version=5, lr={"S": "rid-another0"})
    _refused(stub, "update_item", after, **_release_params())
    assert sem.release("k", "h1", token="tok-1") is False


SEQ = 1_700_000_000_250_000_007  # NOW in microseconds, times 1,000, plus the tiebreak 7
QUEUE_EXP = 1_700_000_901  # ceil(NOW + 900), the default queue TTL
ENTRY_KEY = {"pk": {"S": "k"}, "sk": {"S": f"w#{SEQ:020d}"}}
MARKER_KEY = {"pk": {"S": "k"}, "sk": {"S": "h#w1"}}


def _queue_entry(holder: str = "w1", seq: int = SEQ) -> dict[str, Any]:
    return {
        "pk": {"S": "k"},
        "sk": {"S": f"w#{seq:020d}"},
        "holder": {"S": holder},
        "seq": {"N": str(seq)},
        "qexp": {"N": str(QUEUE_EXP)},
        "lttl": {"N": str(TTL)},
        "at": {"N": "1700000000"},
        "cb": {"S": "cb-1"},
        "cbs": {"L": []},
        "expires_at": {"N": str(QUEUE_EXP + IDLE_GRACE_SECONDS)},
        "ql": {"N": "3"},
    }


def test_a_release_with_waiters_hands_the_slot_over_in_one_transaction(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    stub.add_response(
        "query",
        {"Items": [_queue_entry()]},
        {
            "TableName": TABLE,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :p)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {":pk": {"S": "k"}, ":p": {"S": "w#"}},
            "ConsistentRead": True,
            "Limit": 4,
        },
    )
    items: list[Any] = [None, None, None]
    items[HANDOFF_META] = {
        "Update": {
            "TableName": TABLE,
            "Key": META_KEY,
            "UpdateExpression": (
                "SET #w = :grant, #nw = #nw - :one, #sv = if_not_exists(#sv, :zero) + :one, "
                f"{BUMP_VERSION}, {KEEP_HINT_SET}, #e = :life REMOVE #l"
            ),
            "ConditionExpression": (
                "#nw > :zero AND attribute_not_exists(#w) AND #c <= :room AND attribute_exists(#l)"
                " AND #l.#lx > :now AND #l.#lt = :tok AND attribute_not_exists(#l.#lw)"
                f" AND {NO_OVERRIDE} AND {KEEP_HINT_IF} AND {RAISE_LIFE_IF}"
            ),
            "ExpressionAttributeNames": {
                "#w": SLOT_W1,
                "#nw": "nwait",
                "#sv": "served",
                "#c": "count",
                "#l": SLOT_H1,
                "#lx": "x",
                "#lt": "t",
                "#lw": "w",
                "#ol": "ol",
                "#v": "ver",
                "#xh": "xh",
                "#e": "expires_at",
            },
            "ExpressionAttributeValues": {
                ":room": {"N": "3"},
                ":grant": {
                    "M": {
                        "h": {"S": "w1"},
                        "t": {"S": "grant-token"},
                        "x": {"N": str(EXP)},
                        "a": {"N": "1700000000.25"},
                        "g": {"BOOL": True},
                    }
                },
                **ZERO_ONE,
                ":now": {"N": "1700000000.25"},
                ":tok": {"S": "tok-1"},
                ":exp": {"N": str(EXP)},
                ":life": {"N": str(LIFE)},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    items[HANDOFF_ENTRY] = {
        "Delete": {
            "TableName": TABLE,
            "Key": ENTRY_KEY,
            "ConditionExpression": "attribute_exists(#sk)",
            "ExpressionAttributeNames": {"#sk": "sk"},
        }
    }
    items[HANDOFF_MARKER] = {
        "Delete": {
            "TableName": TABLE,
            "Key": MARKER_KEY,
            "ConditionExpression": "#st = :queued AND #seq = :seq",
            "ExpressionAttributeNames": {"#st": "st", "#seq": "seq"},
            "ExpressionAttributeValues": {":queued": {"S": "queued"}, ":seq": {"N": str(SEQ)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    stub.add_response(
        "transact_write_items", {}, {"TransactItems": items, "ClientRequestToken": ANY}
    )
    result = sem.release_slot("k", "h1", waiters_likely=True, token="tok-1")
    assert result == ReleaseResult(True, (Grant("k", "w1", None, "cb-1", (), "grant-token"),))


# -- the queue ---------------------------------------------------------------------------------


def test_a_refused_acquire_joins_the_queue_in_one_transaction(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """Full of live leases: the refusal's item says so (no reconcile), and the holder joins
    the queue: the counter (arrivals, waiters), its marker and its entry, in one transaction."""
    full = _counter_item(
        {"a": _lease_value("a", "x", NOW + 600)},
        limit=1,
        hint=NOW + 600,
        life=NOW + 600 + IDLE_GRACE_SECONDS,
        wseq={"N": "5"},
        served={"N": "3"},
        nwait=2,
    )
    _refused(stub, "update_item", full, **_acquire_params(holder="w1", limit=1, token="tok-w"))
    queue_life = QUEUE_EXP + IDLE_GRACE_SECONDS
    meta_update = {
        "TableName": TABLE,
        "Key": META_KEY,
        "UpdateExpression": (
            "SET #ws = if_not_exists(#ws, :zero) + :one, #nw = if_not_exists(#nw, :zero) + :one,"
            f" #lim = :limit, {BUMP_VERSION}, #e = :life"
        ),
        "ConditionExpression": (
            "attribute_exists(#c) AND (#c >= :need OR #nw > :zero) AND attribute_not_exists(#l)"
            f" AND {NO_OVERRIDE} AND {RAISE_LIFE_IF}"
        ),
        "ExpressionAttributeNames": {
            "#c": "count",
            "#nw": "nwait",
            "#ws": "wseq",
            "#lim": "lim",
            "#l": SLOT_W1,
            "#ol": "ol",
            "#v": "ver",
            "#e": "expires_at",
        },
        "ExpressionAttributeValues": {
            ":limit": {"N": "1"},
            ":need": {"N": "1"},
            **ZERO_ONE,
            ":life": {"N": str(queue_life)},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    marker = {
        "pk": {"S": "k"},
        "sk": {"S": "h#w1"},
        "st": {"S": "queued"},
        "seq": {"N": str(SEQ)},
        "acquired_at": {"N": "1700000000.25"},
        "expires_at": {"N": str(QUEUE_EXP)},
    }
    entry = {
        **_queue_entry(),
        "at": {"N": "1700000000.25"},
        "lttl": {"N": str(TTL)},
        "ql": {"N": "1"},
    }
    put_if_new = {
        "ConditionExpression": "attribute_not_exists(#sk)",
        "ExpressionAttributeNames": {"#sk": "sk"},
    }
    stub.add_response(
        "transact_write_items",
        {},
        {
            "TransactItems": [
                {"Update": meta_update},
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": marker,
                        **put_if_new,
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {"Put": {"TableName": TABLE, "Item": entry, **put_if_new}},
            ],
            "ClientRequestToken": ANY,
        },
    )
    result = sem.acquire("k", "w1", 1, ttl_seconds=TTL, callback_id="cb-1", token="tok-w")
    assert result == AcquireResult(None, SEQ, ahead=2)
    assert result.queued


def test_a_waiter_checks_in_with_one_transaction_that_also_checks_the_key(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """Marker and entry refreshed (their TTL too), the callback recorded, and the counter
    checked to be full of leases live past the reclaim cutoff (NOW less the skew margin)."""
    stub.add_response(
        "transact_write_items",
        {},
        {
            "TransactItems": [
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": MARKER_KEY,
                        "UpdateExpression": "SET #e = :qexp",
                        "ConditionExpression": "#st = :queued AND #seq = :seq",
                        "ExpressionAttributeNames": {
                            "#e": "expires_at",
                            "#st": "st",
                            "#seq": "seq",
                        },
                        "ExpressionAttributeValues": {
                            ":qexp": {"N": str(QUEUE_EXP)},
                            ":queued": {"S": "queued"},
                            ":seq": {"N": str(SEQ)},
                        },
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": ENTRY_KEY,
                        "UpdateExpression": "SET #q = :qexp, #e = :qlife, #cb = :cb, #cbs = :cbs",
                        "ConditionExpression": "attribute_exists(#sk)",
                        "ExpressionAttributeNames": {
                            "#sk": "sk",
                            "#q": "qexp",
                            "#e": "expires_at",
                            "#cb": "cb",
                            "#cbs": "cbs",
                        },
                        "ExpressionAttributeValues": {
                            ":qexp": {"N": str(QUEUE_EXP)},
                            ":qlife": {"N": str(QUEUE_EXP + IDLE_GRACE_SECONDS)},
                            ":cb": {"S": "cb-2"},
                            ":cbs": {"L": [{"S": "cb-3"}]},
                        },
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": META_KEY,
                        "ConditionExpression": (
                            f"{requests.KEY_FULL_OF_LIVE_LEASES} AND {NO_OVERRIDE}"
                        ),
                        "ExpressionAttributeNames": {"#c": "count", "#xh": "xh", "#ol": "ol"},
                        "ExpressionAttributeValues": {
                            ":lim": {"N": "1"},
                            ":cutoff": {"N": "1699999970.25"},
                        },
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ],
            "ClientRequestToken": ANY,
        },
    )
    result = sem.acquire(
        "k",
        "w1",
        1,
        ttl_seconds=TTL,
        position=SEQ,
        callback_id="cb-2",
        spare_callback_ids=("cb-3",),
    )
    assert result == AcquireResult(None, SEQ)


# -- repairs -----------------------------------------------------------------------------------


def test_a_reconcile_reads_the_counter_once_and_removes_expired_leases_in_one_write(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    """Two leases expired past the skew margin, one live: one GetItem, then one write,
    checked against the version read, removing them earliest first and setting the count to
    the leases left and the hint to the earliest of those."""
    item = _counter_item(
        {
            "old": _lease_value("old", "a", NOW - 40),
            "older": _lease_value("older", "b", NOW - 400),
            "within-margin": _lease_value("within-margin", "c", NOW - 10),
        },
        version=9,
        hint=NOW - 400,
        life=NOW + IDLE_GRACE_SECONDS,
    )
    stub.add_response(
        "get_item", {"Item": item}, {"TableName": TABLE, "Key": META_KEY, "ConsistentRead": True}
    )
    stub.add_response(
        "update_item",
        {},
        {
            "TableName": TABLE,
            "Key": META_KEY,
            "UpdateExpression": "SET #c = :n, #v = :nv, #xh = :xh REMOVE #r0, #r1",
            "ConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {
                "#c": "count",
                "#v": "ver",
                "#r0": slot_name("older"),
                "#r1": slot_name("old"),
                "#xh": "xh",
            },
            "ExpressionAttributeValues": {
                ":n": {"N": "1"},
                ":nv": {"N": "10"},
                ":v": {"N": "9"},
                ":xh": {"N": str(int(NOW - 10))},
            },
        },
    )
    assert sem.reclaim("k") == ReclaimResult(2, 2, ())


def test_a_reconcile_of_a_key_with_nothing_left_deletes_the_counter(
    stub: Stubber, sem: DynamoDBSemaphore
) -> None:
    item = _counter_item({"old": _lease_value("old", "a", NOW - 40)}, version=9)
    stub.add_response(
        "get_item", {"Item": item}, {"TableName": TABLE, "Key": META_KEY, "ConsistentRead": True}
    )
    stub.add_response(
        "delete_item",
        {},
        {
            "TableName": TABLE,
            "Key": META_KEY,
            "ConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {"#v": "ver"},
            "ExpressionAttributeValues": {":v": {"N": "9"}},
        },
    )
    assert sem.reclaim("k") == ReclaimResult(1, 1, ())


# -- the codecs --------------------------------------------------------------------------------

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/run/1"


def test_a_lease_shares_the_key_prefix_of_its_holder_id() -> None:
    value = encode_lease(
        "orders",
        "orders#b1",
        token="t1",
        expires_at=2_000,
        acquired_at=1_000.12345,
        execution_arn=None,
    )
    assert value == {
        "M": {
            "h": {"S": "#b1"},
            "p": {"N": "6"},
            "t": {"S": "t1"},
            "x": {"N": "2000"},
            "a": {"N": "1000.123"},  # milliseconds are enough
        }
    }
    assert decode_lease("orders", value) == Lease(
        "orders", "orders#b1", 1_000.123, 2_000.0, None, HELD, "t1"
    )


def test_a_lease_stores_an_arn_its_holder_id_starts_with_as_a_length() -> None:
    holder = f"{ARN}#map#0"
    value = encode_lease(
        "orders", holder, token="t", expires_at=2_000, acquired_at=1_000, execution_arn=ARN
    )
    assert value["M"]["h"] == {"S": holder} and "p" not in value["M"]
    assert value["M"]["e"] == {"N": str(len(ARN))}
    assert decode_lease("orders", value).execution_arn == ARN
    # Another ARN is stored as it is.
    other = encode_lease(
        "orders", "b1", token="t", expires_at=2_000, acquired_at=1_000, execution_arn=ARN
    )
    assert other["M"]["e"] == {"S": ARN}
    assert decode_lease("orders", other).execution_arn == ARN


def test_a_lease_compresses_both_the_key_and_the_arn_and_marks_a_grant() -> None:
    key = ARN  # a key that is itself a prefix of the ARN and of the holder id
    arn = f"{ARN}/x"
    holder = f"{arn}#m#2"
    value = encode_lease(
        key, holder, token="t", expires_at=5, acquired_at=1, execution_arn=arn, granted=True
    )
    assert value["M"]["h"] == {"S": "/x#m#2"}
    assert value["M"]["p"] == {"N": str(len(key))}
    assert value["M"]["e"] == {"N": str(len(arn))}
    assert value["M"]["g"] == {"BOOL": True}
    assert decode_lease(key, value) == Lease(key, holder, 1.0, 5.0, arn, GRANTED, "t")


_text = st.text(alphabet=string.ascii_letters + string.digits + "#:/-_$ é", max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    key=_text.filter(bool),
    suffix=_text,
    shares_key=st.booleans(),
    arn=st.none() | _text.filter(bool),
    arn_prefix=st.booleans(),
    granted=st.booleans(),
    expires_at=st.integers(0, 10**11),
    acquired_ms=st.integers(0, 10**14),
)
def test_encode_and_decode_lease_round_trip(
    key: str,
    suffix: str,
    shares_key: bool,
    arn: str | None,
    arn_prefix: bool,
    granted: bool,
    expires_at: int,
    acquired_ms: int,
) -> None:
    holder = (key if shares_key else "") + ((arn or "") if arn_prefix else "") + suffix
    if not holder:
        holder = "h"
    value = encode_lease(
        key,
        holder,
        token="tok",
        expires_at=expires_at,
        acquired_at=acquired_ms / 1000,
        execution_arn=arn,
        granted=granted,
    )
    lease = decode_lease(key, value)
    assert lease == Lease(
        key, holder, acquired_ms / 1000, float(expires_at), arn, GRANTED if granted else HELD, "tok"
    )
    # The stored holder id is never longer than the holder id.
    assert len(value["M"]["h"]["S"]) <= len(holder)


def test_slot_names_are_stable_fixed_width_and_distinct() -> None:
    # Pinned: a changed digest would orphan every lease already stored.
    assert slot_name("h1") == SLOT_H1
    assert slot_name("w1") == SLOT_W1
    assert slot_name("k#h1") == "L#fOV2HNFASYU4"
    assert slot_name(f"{ARN}#map#0") == "L#uAwPaEGEJcJ_"
    names = {slot_name(f"{ARN}#map#{i}") for i in range(5_000)}
    assert len(names) == 5_000
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for name in names:
        assert name.startswith(LEASE_PREFIX) and len(name) == 14
        assert set(name[2:]) <= alphabet


def test_a_counter_item_parses_its_leases_and_nothing_else() -> None:
    item = _counter_item(
        {"h1": _lease_value("h1", "tok-1", EXP), "k#b": _lease_value("k#b", "tok-2", EXP + 1)},
        version=4,
        hint=EXP,
        life=LIFE,
        lr={"S": "rid"},
    )
    meta = Meta.parse(item)
    assert (meta.exists, meta.count, meta.version, meta.nwait, meta.hint) == (True, 2, 4, 0, EXP)
    assert (meta.limit, meta.expires_at, meta.last_release) == (3, LIFE, "rid")
    assert meta.lease_of("h1") == Lease("k", "h1", NOW - 100, float(EXP), None, HELD, "tok-1")
    b = meta.lease_of("k#b")
    assert b is not None and (b.holder, b.token, b.expires_at) == ("k#b", "tok-2", EXP + 1)
    assert meta.lease_of("absent") is None
    assert set(meta.leases) == {slot_name("h1"), slot_name("k#b")}
    assert Meta.parse(None) == Meta(False, 0, 0, 0, 0, None, None)


# -- Expr --------------------------------------------------------------------------------------


def test_expr_builds_update_arguments() -> None:
    expr = Expr(
        sets=["#a = :a", "#b = #b + :one"],
        removes=["#r0", "#r1"],
        conditions=["attribute_exists(#a)", "#b < :max"],
        names={"#a": "a", "#b": "b", "#r0": "L#x", "#r1": "L#y"},
        values={":a": {"S": "v"}, ":one": {"N": "1"}, ":max": {"N": "9"}},
    )
    key = {"pk": {"S": "k"}, "sk": {"S": "#meta"}}
    update = expr.update(key)
    assert update == {
        "Key": key,
        "UpdateExpression": "SET #a = :a, #b = #b + :one REMOVE #r0, #r1",
        "ConditionExpression": "attribute_exists(#a) AND #b < :max",
        "ExpressionAttributeNames": {"#a": "a", "#b": "b", "#r0": "L#x", "#r1": "L#y"},
        "ExpressionAttributeValues": {":a": {"S": "v"}, ":one": {"N": "1"}, ":max": {"N": "9"}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    assert "ReturnValuesOnConditionCheckFailure" not in expr.update(key, return_old=False)
    # The arguments are copies: changing them leaves the expression as it was.
    update["ExpressionAttributeNames"]["#z"] = "z"
    update["ExpressionAttributeValues"].clear()
    assert "#z" not in expr.names and len(expr.values) == 3


def test_expr_builds_check_arguments_and_leaves_out_what_is_empty() -> None:
    key = {"pk": {"S": "k"}, "sk": {"S": "h#a"}}
    assert Expr().check(key) == {"Key": key}
    assert Expr(sets=["#a = :a"], names={"#a": "a"}, values={":a": {"N": "1"}}).update(
        key, return_old=False
    ) == {
        "Key": key,
        "UpdateExpression": "SET #a = :a",
        "ExpressionAttributeNames": {"#a": "a"},
        "ExpressionAttributeValues": {":a": {"N": "1"}},
    }
    assert Expr(removes=["#a"], names={"#a": "a"}).update(key, return_old=False) == {
        "Key": key,
        "UpdateExpression": "REMOVE #a",
        "ExpressionAttributeNames": {"#a": "a"},
    }
    check = Expr(conditions=["attribute_exists(#sk)"], names={"#sk": "sk"}).check(key)
    assert check == {
        "Key": key,
        "ConditionExpression": "attribute_exists(#sk)",
        "ExpressionAttributeNames": {"#sk": "sk"},
    }
