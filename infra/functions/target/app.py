"""The invoked target: a plain (non-durable) function that works a while, then doubles its input.

``WORK_SECONDS`` sets how long each call takes, so the in-flight peak is visible in the
example function's execution history and in the target's ConcurrentExecutions metric.
"""

from __future__ import annotations

import os
import time
from typing import Any


def handler(event: Any, context: Any) -> Any:
    time.sleep(float(os.environ.get("WORK_SECONDS", "1")))
    return event * 2 if isinstance(event, int | float) else event
