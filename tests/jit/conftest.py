"""Fixtures of the JIT tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def off(monkeypatch):
    """``off(fn, *args)``: ``fn(*args)`` with ``DSRT_JIT=off`` (everything eager)."""
    def eager(fn, *args):
        monkeypatch.setenv("DSRT_JIT", "off")
        try:
            return fn(*args)
        finally:
            monkeypatch.delenv("DSRT_JIT")
    return eager
