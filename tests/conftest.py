"""Shared fixtures: a runtime per session and a fresh DSRT_CACHE_DIR per test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

import dsrt

# Keep test runs from writing to (or reading stale entries from) the user's cache.
os.environ.setdefault("DSRT_CACHE_DIR", tempfile.mkdtemp(prefix="dsrt-test-cache-"))


@pytest.fixture(scope="session")
def rt() -> Iterator[dsrt.Runtime]:
    runtime = dsrt.default_runtime()
    yield runtime


@pytest.fixture(scope="session")
def cpu(rt: dsrt.Runtime) -> dsrt.Device:
    return rt.device("cpu:0")
