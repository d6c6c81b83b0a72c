"""Fixtures for the SDK 3.x integration tests (testing library >= 1.3).

These tests need SDK >= 2.1: under SDK 1.x this folder is not collected (see collect_ignore_glob)
and ``tests/sdk1`` covers that line instead.
"""

from __future__ import annotations

from aws_durable_execution_sdk_python.__about__ import __version__ as SDK_VERSION

_MAJOR = int(SDK_VERSION.split(".")[0])
if _MAJOR < 2:
    # Not a silent skip: this whole folder targets SDK >= 2; run tests/sdk1 in the 1.x venv.
    collect_ignore_glob = ["test_*.py"]
