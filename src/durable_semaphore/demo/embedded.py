"""An embedded local DynamoDB: ministack, pure Python, no Java and no npm.

The demo starts one on a free loopback port and stops it at the end; ``durable-semaphore
local-dynamodb`` starts one for the user and keeps it until Ctrl-C. ministack passed the same
linearizability checks as DynamoDB Local on this project's machines (docs/), so the demo shows
real limiting without Amazon's jar. Its data lives in memory only. Tests use DynamoDB Local.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from durable_semaphore.demo import INSTALL_HINT
from durable_semaphore.demo.quiet import track_child, untrack_child
from durable_semaphore.errors import EmbeddedDynamoDBError

#: The address the server listens on: loopback only (ministack's own default is every interface).
HOST = "127.0.0.1"
#: Dummy credentials and a region for a local endpoint: it accepts any, boto3 needs some.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
LOCAL_REGION = "us-east-1"


def free_port() -> int:
    """A free TCP port on loopback (racy by nature; the server fails loudly if taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already listens on ``port`` of loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def endpoint_answers(endpoint: str) -> bool:
    """DynamoDB answers any POST (even an unsigned one) with an HTTP status once it is up."""
    request = urllib.request.Request(endpoint, data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=1)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def _command() -> list[str]:
    exe = shutil.which("ministack", path=os.path.dirname(sys.executable)) or shutil.which(
        "ministack"
    )
    if exe is None:
        raise EmbeddedDynamoDBError(f"ministack is not installed; {INSTALL_HINT}")
    return [exe]


@dataclass
class EmbeddedDynamoDB:
    """A running ministack: its endpoint, process and log (for the error when it dies)."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:].strip()

    def check_alive(self) -> None:
        """Raise :class:`EmbeddedDynamoDBError`, with its log's tail, if it has exited."""
        if self.process.poll() is not None:
            raise EmbeddedDynamoDBError(
                f"ministack exited with {self.process.returncode}: {self.log_tail()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        untrack_child(self.process)


def _start(port: int, log: IO[bytes], timeout: float) -> EmbeddedDynamoDB:
    """Start ministack's DynamoDB on ``port`` and wait until it answers."""
    endpoint = f"http://{HOST}:{port}"
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_PORT": str(port),
            "SERVICES": "dynamodb",
            "MINISTACK_HOST": HOST,
            "BIND_HOST": HOST,
        }
    )
    # A session of its own: the terminal's Ctrl-C reaches only us, and we stop it in order.
    process = subprocess.Popen(
        _command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    track_child(process)
    server = EmbeddedDynamoDB(endpoint, process, log)
    try:
        deadline = time.monotonic() + timeout
        while not endpoint_answers(endpoint):
            server.check_alive()
            if time.monotonic() > deadline:
                raise EmbeddedDynamoDBError(f"ministack did not answer on {endpoint}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def embedded_dynamodb(port: int | None = None, timeout: float = 30.0) -> Iterator[EmbeddedDynamoDB]:
    """Start ministack's DynamoDB on ``port`` (default: a free one) of loopback; yield it; stop it.

    A port that is already taken fails at once, before anything starts.
    """
    if port is None or port == 0:
        port = free_port()
    elif port_in_use(port):
        raise EmbeddedDynamoDBError(
            f"port {port} on {HOST} is already in use; pass --port N, or --port 0 for a free one"
        )
    with tempfile.TemporaryFile() as log:
        server = _start(port, log, timeout)
        try:
            yield server
        finally:
            server.stop()
