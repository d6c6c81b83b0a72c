"""An embedded local DynamoDB for the demo: ministack, pure Python, no Java and no npm.

ministack passed the same linearizability checks as DynamoDB Local on this project's machines
(see docs/), so the demo can show real limiting without Amazon's jar. Tests use DynamoDB Local.
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

from durable_semaphore.errors import DurableSemaphoreError


class EmbeddedDynamoDBError(DurableSemaphoreError):
    """The embedded DynamoDB could not be started."""


def free_port() -> int:
    """A free TCP port on loopback (racy by nature; the server fails loudly if taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        raise EmbeddedDynamoDBError(
            "ministack is not installed; install the demo extra: "
            "pip install 'durable-semaphore[demo]'"
        )
    return [exe]


@contextlib.contextmanager
def embedded_dynamodb(timeout: float = 30.0) -> Iterator[str]:
    """Start ministack's DynamoDB on a free loopback port; yield its endpoint; stop it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_PORT": str(port),
            "SERVICES": "dynamodb",
            "MINISTACK_HOST": "127.0.0.1",
        }
    )
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            _command(),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while not endpoint_answers(endpoint):
                if proc.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise EmbeddedDynamoDBError(f"ministack exited with {proc.returncode}: {tail}")
                if time.monotonic() > deadline:
                    raise EmbeddedDynamoDBError(f"ministack did not answer on {endpoint}")
                time.sleep(0.05)
            yield endpoint
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
