from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrt.topology.units import parse_bandwidth, parse_latency, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("25 GB/s", 25e9), ("200 Gbit/s", 25e9), ("64 GiB/s", 64 * 1024**3), ("10Gbps", 1.25e9),
    ("1.5 MB/s", 1.5e6), ("8 b/s", 1.0), (1e9, 1e9), (3, 3.0),
])
def test_bandwidth_units(text: object, expected: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("2us", 2e-6), ("2 µs", 2e-6), ("1.5 ms", 1.5e-3), ("800 ns", 8e-7), ("1s", 1.0), (0, 0.0), (3e-6, 3e-6),
])
def test_latency_units(text: object, expected: float) -> None:
    assert parse_latency(text) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("64GiB", 64 * 1024**3), ("2 TB", 2 * 10**12), ("512 MiB", 512 * 1024**2), (4096, 4096), ("10 bytes", 10),
])
def test_size_units(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("parse", "bad", "needle"), [
    (parse_bandwidth, "-3 GB/s", "negative bandwidth"),
    (parse_bandwidth, "0 GB/s", "zero bandwidth"),
    (parse_bandwidth, "25 GB", "unknown bandwidth unit"),
    (parse_bandwidth, True, "boolean"),
    (parse_bandwidth, float("inf"), "finite"),
    (parse_latency, "2 parsec", "unknown time unit"),
    (parse_latency, -1, "negative latency"),
    (parse_size, "12 GiB/s", "unknown size unit"),
    (parse_size, "fast", "expected a size"),
])
def test_unit_errors(parse: object, bad: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse(bad)  # type: ignore[operator]


@settings(max_examples=60, deadline=1000)
@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), st.sampled_from(
    [("GB/s", 1e9), ("Gbit/s", 1.25e8), ("MiB/s", 1024.0**2), ("kB/s", 1e3), ("TB/s", 1e12)]))
def test_bandwidth_scales(value: float, unit: tuple[str, float]) -> None:
    got = parse_bandwidth(f"{value!r} {unit[0]}")
    assert math.isclose(got, value * unit[1], rel_tol=1e-12)
