"""Table and environment settings, in one small module.

The CLI and the reaper need the lease table's name but not the limiter's policy, so the name's
resolution lives here rather than in :mod:`durable_semaphore.limiter`.
"""

from __future__ import annotations

import os

from durable_semaphore.store import DEFAULT_TABLE_NAME

__all__ = ["DEFAULT_TABLE_NAME", "TABLE_ENV_VAR", "resolve_table_name"]

#: Environment variable naming the lease table (the SAM template sets it).
TABLE_ENV_VAR = "DURABLE_SEMAPHORE_TABLE"


def resolve_table_name(table_name: str | None = None) -> str:
    """Return the lease table: the explicit name, else ``$DURABLE_SEMAPHORE_TABLE``, else default.

    Read at call time (not import time) so a Lambda's environment and tests can set it late.
    """
    if table_name:
        return table_name
    return os.environ.get(TABLE_ENV_VAR) or DEFAULT_TABLE_NAME
