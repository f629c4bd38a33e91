"""Fixtures for the quantum backend's tests: one runtime and its default QPU per session."""

from __future__ import annotations

import pytest

import dsrt

pytest.importorskip("dsrt_quantum")


@pytest.fixture(scope="session")
def rt() -> dsrt.Runtime:
    return dsrt.Runtime()


@pytest.fixture(scope="session")
def qpu(rt: dsrt.Runtime):  # type: ignore[no-untyped-def]
    return rt.device("qpu:0")
