"""Ambiguous outcomes: the write landed but its answer was lost.

A loopback HTTP proxy between the client and DynamoDB Local forwards a request, lets DynamoDB
apply it, then drops the connection instead of answering. botocore's standard retry mode resends
the request, and the store must end in the same state as if the first answer had arrived:
exactly one slot per holder, a count that matches the holders, never a double release.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
from botocore.config import Config

from durable_semaphore import DynamoDBSemaphore


class DroppingProxy:
    """Forwards DynamoDB calls; drops the answer of the next N calls to a given target."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.drop: dict[str, int] = {}
        self.applied_then_dropped: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                target = self.headers.get("X-Amz-Target", "").split(".")[-1]
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                conn.close()
                with proxy.lock:
                    if proxy.drop.get(target, 0) > 0:
                        proxy.drop[target] -= 1
                        proxy.applied_then_dropped.append(target)
                        self.close_connection = True
                        return  # DynamoDB applied it; the client never hears back
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(ddb_endpoint: str) -> Iterator[DroppingProxy]:
    p = DroppingProxy(ddb_endpoint)
    yield p
    p.close()


@pytest.fixture
def proxied(proxy: DroppingProxy, semaphore: DynamoDBSemaphore) -> DynamoDBSemaphore:
    client = boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=5),
    )
    return DynamoDBSemaphore(table_name=semaphore.table_name, client=client)


def test_lost_answer_to_acquire_takes_one_slot(
    proxy: DroppingProxy, proxied: DynamoDBSemaphore, semaphore: DynamoDBSemaphore
) -> None:
    proxy.drop["UpdateItem"] = 1
    lease = proxied.try_acquire("k", "h", 2)
    assert proxy.applied_then_dropped == ["UpdateItem"]
    assert lease is not None and lease.holder == "h"
    assert [x.holder for x in semaphore.holders("k")] == ["h"]
    assert semaphore.slot_count("k").count == 1
    assert semaphore.try_acquire("k", "other", 2) is not None
    assert semaphore.try_acquire("k", "third", 2) is None


def test_lost_answer_to_release_frees_one_slot_once(
    proxy: DroppingProxy, proxied: DynamoDBSemaphore, semaphore: DynamoDBSemaphore
) -> None:
    semaphore.try_acquire("k", "a", 3)
    semaphore.try_acquire("k", "b", 3)
    proxy.drop["UpdateItem"] = 1
    released = proxied.release("k", "a")
    assert proxy.applied_then_dropped == ["UpdateItem"]
    # The retry carries the same ClientRequestToken, so DynamoDB reports the first success.
    assert released is True
    assert [x.holder for x in semaphore.holders("k")] == ["b"]
    assert semaphore.slot_count("k").count == 1
    assert proxied.release("k", "a") is False
    assert semaphore.slot_count("k").count == 1


def test_lost_answers_twice_in_a_row(
    proxy: DroppingProxy, proxied: DynamoDBSemaphore, semaphore: DynamoDBSemaphore
) -> None:
    proxy.drop["UpdateItem"] = 2
    assert proxied.try_acquire("k", "h", 1) is not None
    assert semaphore.slot_count("k").count == 1
    proxy.drop["UpdateItem"] = 2
    assert proxied.release("k", "h") is True
    assert semaphore.slot_count("k").count == 0
    assert semaphore.holders("k") == []
