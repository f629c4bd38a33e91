"""Fixtures of the neuromorphic backend's tests: skip (with the reason) where it cannot run."""

from __future__ import annotations

from typing import Any

import pytest

import dsrt


@pytest.fixture(scope="module")
def snn(rt: dsrt.Runtime) -> Any:
    st = rt.backends.get("neuromorphic")
    if st is None or st.status != "available":
        pytest.skip(f"neuromorphic backend not available: {st.reason if st else 'not installed'}")
    return rt.device("snn:0")


@pytest.fixture(scope="module")
def make_device(rt: dsrt.Runtime) -> Any:
    """Build a topology-style simulated chip with the given parameters (through create_simulated)."""
    spec = rt.backends["neuromorphic"].spec
    assert spec is not None and spec.create_simulated is not None
    counter = iter(range(100, 10_000))
    return lambda **params: spec.create_simulated(rt, f"snn:{next(counter)}", params)
