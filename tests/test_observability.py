"""Lease events: EMF metrics and structured logs when enabled, nothing at all when disabled."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from durable_semaphore import DynamoDBSemaphore, observability
from tests.conftest import FakeClock

NAMESPACE = "DurableSemaphoreTest"


@pytest.fixture(autouse=True)
def _restore_observer() -> Iterator[None]:
    previous = observability.get_observer()
    yield
    observability.set_observer(previous)


def _emf_lines(out: str) -> list[dict[str, Any]]:
    docs = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def _dimensions(doc: dict[str, Any]) -> dict[str, str]:
    """The dimension values of one EMF document (every dimension set of every directive)."""
    names = {
        name
        for directive in doc["_aws"]["CloudWatchMetrics"]
        for dimension_set in directive["Dimensions"]
        for name in dimension_set
    }
    return {name: doc[name] for name in names}


def _metrics(out: str) -> list[tuple[str, float, str]]:
    """(metric name, value, key property) of every EMF document printed."""
    found = []
    for doc in _emf_lines(out):
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == NAMESPACE
        assert "key" not in _dimensions(doc)
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            if isinstance(value, list):  # Powertools writes values as a list
                (value,) = value
            found.append((metric["Name"], float(value), doc["key"]))
    return found


def test_disabled_path_emits_nothing(
    semaphore: DynamoDBSemaphore, capsys: pytest.CaptureFixture[str]
) -> None:
    observability.disable()
    assert semaphore.try_acquire("k", "h1", 1) is not None
    assert semaphore.try_acquire("k", "h2", 1) is None  # full: reconciles
    assert semaphore.release("k", "h1")
    observability.lease_waited("k", "h2", 3.0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_store_emits_emf_for_acquire_release_reclaim_and_in_flight(
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sem = make_semaphore(clock)
    capsys.readouterr()
    observability.enable(NAMESPACE, logs=False)
    assert sem.try_acquire("k", "h1", 2, ttl_seconds=10) is not None
    assert sem.try_acquire("k", "h1", 2, ttl_seconds=10) is not None  # idempotent: no event
    assert sem.try_acquire("k", "h2", 2, ttl_seconds=100) is not None
    # Full, and no lease can have expired yet: refused without a reconcile, so no InFlight.
    assert sem.try_acquire("k", "h3", 2, ttl_seconds=100) is None
    clock.advance(50)  # h1 expires
    assert sem.reclaim_expired("k") == 1
    assert sem.release("k", "h2")
    assert not sem.release("k", "h2")  # not held: no event
    metrics = _metrics(capsys.readouterr().out)
    assert metrics == [
        ("LeaseAcquired", 1.0, "k"),
        ("LeaseAcquired", 1.0, "k"),
        ("LeaseReclaimed", 1.0, "k"),
        ("InFlight", 1.0, "k"),
        ("LeaseReleased", 1.0, "k"),
    ]


def test_wait_metric_and_structured_logs_carry_key_and_holder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    observability.enable(NAMESPACE, log_level="DEBUG")
    observability.lease_acquired("orders", "exec-1#op#b1")
    observability.lease_waited("orders", "exec-1#op#b1", 4.0)
    out = capsys.readouterr().out
    assert ("LeaseWaitSeconds", 4.0, "orders") in _metrics(out)
    wait_doc = next(d for d in _emf_lines(out) if "LeaseWaitSeconds" in d)
    units = {m["Name"]: m["Unit"] for m in wait_doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["LeaseWaitSeconds"] == "Seconds"
    logs = [json.loads(line) for line in out.splitlines() if '"message"' in line]
    by_message = {log["message"]: log for log in logs}
    assert by_message["lease acquired"]["key"] == "orders"
    assert by_message["lease acquired"]["holder"] == "exec-1#op#b1"
    assert by_message["lease acquired"]["service"] == "durable-semaphore"
    assert by_message["lease granted after waiting"]["wait_seconds"] == 4.0


def test_configure_from_env() -> None:
    observability.disable()
    assert observability.configure_from_env({}) is None
    assert observability.get_observer() is None
    observer = observability.configure_from_env(
        {observability.METRICS_NAMESPACE_ENV_VAR: "Ns", observability.LOG_LEVEL_ENV_VAR: "WARNING"}
    )
    assert isinstance(observer, observability.PowertoolsObserver)
    assert observability.get_observer() is observer
    assert observer.namespace == "Ns"


def test_a_failing_observer_never_breaks_a_lease(semaphore: DynamoDBSemaphore) -> None:
    class Broken:
        def acquired(self, key: str, holder: str) -> None:
            raise RuntimeError("sink down")

        released = reclaimed = waited = in_flight = acquired  # type: ignore[assignment]

    observability.set_observer(Broken())  # type: ignore[arg-type]
    assert semaphore.try_acquire("k", "h", 1) is not None
    assert semaphore.release("k", "h")


PER_OP_ARN = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST/durable-execution/x/y"
PER_OP_KEY = f"{PER_OP_ARN}#op-1"


def test_per_operation_key_has_a_constant_dimension_and_the_arn_as_properties(
    capsys: pytest.CaptureFixture[str],
) -> None:
    observability.enable(NAMESPACE, logs=False)
    holder = f"{PER_OP_KEY}#branch-1"
    observability.lease_acquired(PER_OP_KEY, holder)
    observability.lease_waited(PER_OP_KEY, holder, 2.0)
    observability.lease_released(PER_OP_KEY, holder)
    observability.lease_reclaimed(PER_OP_KEY, 1, in_flight=0)
    observability.lease_in_flight(PER_OP_KEY, 3)
    docs = _emf_lines(capsys.readouterr().out)
    assert len(docs) == 6
    for doc in docs:
        dimensions = _dimensions(doc)
        assert dimensions == {"service": "durable-semaphore", "scope": "per-operation"}
        assert not any("arn:" in value for value in dimensions.values())
        assert doc["key"] == PER_OP_KEY
        assert doc["execution_arn"] == PER_OP_ARN
        assert doc["operation_id"] == "op-1"
    assert [d.get("holder") for d in docs] == [holder, holder, holder, None, None, None]


def test_named_limiter_keeps_its_name_as_a_dimension(
    capsys: pytest.CaptureFixture[str],
) -> None:
    observability.enable(NAMESPACE, logs=False)
    observability.lease_acquired("orders#eu", "exec-1#op#b1")
    (doc,) = _emf_lines(capsys.readouterr().out)
    assert _dimensions(doc) == {
        "service": "durable-semaphore",
        "scope": "named",
        "limiter": "orders#eu",
    }
    assert doc["key"] == "orders#eu" and doc["holder"] == "exec-1#op#b1"
    assert "execution_arn" not in doc


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (PER_OP_KEY, {"scope": "per-operation"}),
        # The local test runner's execution ARNs are UUIDs; the SDK operation id still tells.
        (f"{'1' * 36}/{'2' * 36}#{'ab' * 32}", {"scope": "per-operation"}),
        ("orders", {"scope": "named", "limiter": "orders"}),
        (
            "arn:aws:sqs:us-east-1:123456789012:q",
            {"scope": "named", "limiter": "arn:aws:sqs:us-east-1:123456789012:q"},
        ),
        ("caf\u00e9\n", {"scope": "named", "limiter": "caf\\xe9\\n"}),
        (" ", {"scope": "named", "limiter": "(blank)"}),
        ("x" * 2048, {"scope": "named", "limiter": "x" * 1024}),
    ],
)
def test_metric_dimensions(key: str, expected: dict[str, str]) -> None:
    assert observability.metric_dimensions(key) == expected


def test_a_rate_reports_each_fresh_booking_and_how_far_ahead_it_starts(
    semaphore: DynamoDBSemaphore, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Admissions and booked delay per rate, the rate's name as the dimension, the holder a
    property; a replay that finds its booking is not a second admission."""
    from durable_semaphore import DynamoDBRateLimiter
    from durable_semaphore.store.rates import DynamoDBRateStore

    store = DynamoDBRateStore(table_name=semaphore.table_name, client=semaphore.client, clock=clock)
    limiter = DynamoDBRateLimiter("partner", 2.0, store=store)
    capsys.readouterr()
    observability.enable(NAMESPACE, logs=False)
    for holder in ("a", "b", "c", "a"):
        limiter.book(holder)
    out = capsys.readouterr().out
    assert _metrics(out) == [
        ("RateAdmissions", 1.0, "rate:partner"),
        ("RateBookedDelaySeconds", 0.0, "rate:partner"),
        ("RateAdmissions", 1.0, "rate:partner"),
        ("RateBookedDelaySeconds", 0.5, "rate:partner"),
        ("RateAdmissions", 1.0, "rate:partner"),
        ("RateBookedDelaySeconds", 1.0, "rate:partner"),
    ]
    (doc, *_) = _emf_lines(out)
    assert _dimensions(doc) == {"service": "durable-semaphore", "scope": "named",
                                "limiter": "rate:partner"}  # fmt: skip
