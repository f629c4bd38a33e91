"""Fixtures of the JIT tests."""

from __future__ import annotations

import pytest
from eager_common import run_eager


@pytest.fixture()
def off():
    """``off(fn, *args)``: ``fn(*args)`` with ``DSRT_JIT=off`` (everything eager)."""
    return run_eager
