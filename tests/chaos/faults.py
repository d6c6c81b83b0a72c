"""Fault injection into a boto3 DynamoDB client, through botocore's own event hooks.

No proxy and no patched library: a ``before-send`` handler decides, per HTTP request, whether
the request meets a fault, and an ``after-call`` handler can make a call that did reach DynamoDB
look failed to its caller. Kinds:

* ``throttle``: DynamoDB answers ``ThrottlingException`` (nothing applied); botocore retries.
* ``connection``: the connection fails before the request is sent (nothing applied); botocore
  retries.
* ``lost``: the request is sent and applied, then the answer is lost (the connection closes);
  botocore retries the same request, so a transaction resends its ``ClientRequestToken``.
* ``surfaced``: a write is applied and answered, but the caller gets a connection error, as when
  every retry of a lost answer is used up: the store and its caller must recover on their own.
"""

from __future__ import annotations

import http.client
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

FAULT_KINDS = ("throttle", "connection", "lost", "surfaced")
#: Only writes can be applied and then have their answer lost in a way that matters.
WRITE_OPERATIONS = frozenset({"TransactWriteItems", "UpdateItem", "DeleteItem", "PutItem"})


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability per request (``throttle``, ``connection``), per write (``lost``), and per
    answered write (``surfaced``)."""

    throttle: float = 0.0
    connection: float = 0.0
    lost: float = 0.0
    surfaced: float = 0.0

    @property
    def any(self) -> bool:
        return any((self.throttle, self.connection, self.lost, self.surfaced))


class _Body:
    """The ``raw`` of a canned AWSResponse: botocore reads it through ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


def _throttled(url: str) -> AWSResponse:
    body = json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "message": "Rate of requests exceeds the allowed throughput (injected)",
        }
    ).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["Content-Length"] = str(len(body))
    return AWSResponse(url, 400, headers, _Body(body))


def _operation(request: Any) -> str:
    target = request.headers.get("X-Amz-Target", b"")
    if isinstance(target, bytes):
        target = target.decode()
    return str(target).rsplit(".", 1)[-1]


def _first_attempt(request: Any) -> bool:
    header = request.headers.get("amz-sdk-request", b"")
    if isinstance(header, bytes):
        header = header.decode()
    return "attempt=1;" in str(header) or not header


def _send(request: Any) -> None:
    """Send ``request`` ourselves and read DynamoDB's answer to the end (so it is applied)."""
    url = urlsplit(request.url)
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=15)
    try:
        conn.request(request.method, url.path or "/", body=body, headers=dict(request.headers))
        conn.getresponse().read()
    finally:
        conn.close()


class FaultInjector:
    """Injects faults into one client at the given rates; ``on_fault`` hears of each one.

    ``enabled`` switches it off and on. With ``first_attempts_only``, botocore's retries of a
    call (its ``amz-sdk-request: attempt=N`` header) pass untouched: at rate 1 every call then
    meets exactly one fault.
    """

    def __init__(
        self,
        client: Any,
        rates: FaultRates,
        *,
        seed: int | None = None,
        on_fault: Callable[[str], None] | None = None,
        first_attempts_only: bool = False,
    ) -> None:
        self.rates = rates
        self.first_attempts_only = first_attempts_only
        self.enabled = True
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._on_fault = on_fault
        client.meta.events.register("before-send.dynamodb", self._before_send)
        client.meta.events.register("after-call.dynamodb", self._after_call)

    def _record(self, kind: str) -> None:
        self.counts[kind] += 1
        if self._on_fault is not None:
            self._on_fault(kind)

    def _before_send(self, request: Any = None, **_: Any) -> AWSResponse | None:
        if not self.enabled or request is None:
            return None
        if self.first_attempts_only and not _first_attempt(request):
            return None
        roll = self._rng.random()
        if roll < self.rates.throttle:
            self._record("throttle")
            return _throttled(request.url)
        roll -= self.rates.throttle
        if roll < self.rates.connection:
            self._record("connection")
            raise EndpointConnectionError(endpoint_url=request.url)
        roll -= self.rates.connection
        if roll < self.rates.lost and _operation(request) in WRITE_OPERATIONS:
            try:
                _send(request)
            except OSError:
                # DynamoDB is down (a restart): the request never arrived.
                self._record("connection")
                raise EndpointConnectionError(endpoint_url=request.url) from None
            self._record("lost")
            raise ConnectionClosedError(endpoint_url=request.url)
        return None

    def _after_call(self, model: Any = None, http_response: Any = None, **_: Any) -> None:
        if not self.enabled or model is None or model.name not in WRITE_OPERATIONS:
            return
        if http_response is None or not self.rates.surfaced:
            return
        if self._rng.random() < self.rates.surfaced:
            self._record("surfaced")
            raise ConnectionClosedError(endpoint_url="injected: answer lost after retries")
