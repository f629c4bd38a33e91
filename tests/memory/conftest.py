"""Fixtures for the memory pool tests (the fake devices live in ``_fakes.py``)."""

from __future__ import annotations

import pytest
from _fakes import AsyncDevice, FakeDevice


@pytest.fixture
def fake() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def async_device() -> AsyncDevice:
    return AsyncDevice()
