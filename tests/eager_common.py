"""Running a jitted function's body eagerly, for comparison with its replay."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def run_eager(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with ``DSRT_JIT=off`` (every launch eager), the variable restored afterwards."""
    before = os.environ.get("DSRT_JIT")
    os.environ["DSRT_JIT"] = "off"
    try:
        return fn(*args)
    finally:
        if before is None:
            del os.environ["DSRT_JIT"]
        else:
            os.environ["DSRT_JIT"] = before
