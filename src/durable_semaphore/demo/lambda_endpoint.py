"""The testing library's durable-execution Lambda API, served locally for one runner.

Executions that share a limit wake each other the way deployed functions are woken: the branch
that frees a slot completes the waiter's callback with ``SendDurableExecutionCallbackSuccess``.
In the local runner that call goes to this server, which the testing library ships; the waker is
the library's own :class:`~durable_semaphore.wake.LambdaCallbackWaker`, pointed here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import boto3

from durable_semaphore.wake import LambdaCallbackWaker, _lambda_config


@contextlib.contextmanager
def local_lambda_endpoint(runner: Any, port: int) -> Iterator[str]:
    """Serve the testing library's durable-execution Lambda API for ``runner``'s executions.

    The waker completes callbacks through it (``SendDurableExecutionCallbackSuccess``), the
    same API call it makes against AWS. Attaching the server needs the runner's executor, which
    is private: with the progress reader in :mod:`.running` and the testing 1.2.1 workaround in
    :mod:`.local_runner`, the demo's only reach into the testing library's internals.
    """
    from aws_durable_execution_sdk_python_testing.web.server import (
        WebServer,
        WebServiceConfig,
    )

    root = logging.getLogger()
    handlers = list(root.handlers)
    server = WebServer(
        WebServiceConfig(host="127.0.0.1", port=port, log_level=logging.WARNING),
        runner._executor,
    )
    # The server calls logging.basicConfig(); keep the caller's logging as it was.
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-lambda-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def local_lambda_client(endpoint: str) -> Any:
    """A boto3 ``lambda`` client for the testing library's local durable-execution API server
    (callbacks, ``GetDurableExecution``), with dummy credentials."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-west-2",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=_lambda_config(),
    )


def local_waker(endpoint: str) -> LambdaCallbackWaker:
    """A :class:`~durable_semaphore.wake.LambdaCallbackWaker` for the local API server."""
    return LambdaCallbackWaker(local_lambda_client(endpoint))
