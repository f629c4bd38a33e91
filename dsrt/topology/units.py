"""Quantities with units in topology files (private to :mod:`dsrt.topology`).

- bandwidth: a number (bytes per second) or ``"25 GB/s"``, ``"200 Gbit/s"``, ``"64 GiB/s"``, ``"10 Gbps"``;
- latency: a number (seconds) or ``"2us"``, ``"1.5 ms"``, ``"800 ns"``, ``"2 µs"``;
- size: an integer (bytes) or ``"64GiB"``, ``"2 TB"``.

Decimal prefixes (k, M, G, T, P) are powers of 1000, binary ones (Ki, Mi, Gi, Ti, Pi) powers of 1024.
``B`` is a byte, ``b``/``bit`` a bit. Each parser returns a float (int for sizes) or raises
``ValueError`` whose message names what was expected; the caller adds the location.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_bandwidth", "parse_latency", "parse_size", "format_bandwidth", "format_latency"]

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-zµμ/]*)\s*$")

_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4, "Pi": 1024.0**5}
_BW_UNIT = re.compile(r"^(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P|)(B/s|Bps|b/s|bps|bit/s|bits/s)$")
_SIZE_UNIT = re.compile(r"^(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P|)(B|bytes?)?$")
_TIME_UNIT = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9,
              "ps": 1e-12}

BANDWIDTH_HINT = "a bandwidth: bytes/s as a number, or a string like '25 GB/s', '200 Gbit/s' or '64 GiB/s'"
LATENCY_HINT = "a latency: seconds as a number, or a string like '2us', '1.5 ms' or '800 ns'"
SIZE_HINT = "a size: bytes as an integer, or a string like '64GiB' or '2 TB'"


def _split(value: object, hint: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"expected {hint}, got a boolean")
    if isinstance(value, (int, float)):
        try:
            return float(value), ""
        except OverflowError:  # an integer past the float range
            raise ValueError(f"expected {hint}, got a number of {len(str(value))} digits (too large)") from None
    if not isinstance(value, str):
        raise ValueError(f"expected {hint}, got {type(value).__name__}")
    m = _QUANTITY.match(value)
    if m is None:
        raise ValueError(f"expected {hint}, got {value!r}")
    return float(m.group(1)), m.group(2)


def _finite(number: float, what: str, raw: object) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {raw!r}")
    return number


def parse_bandwidth(value: object) -> float:
    """Bytes per second. Raises ``ValueError`` for unknown units and non-positive values."""
    number, unit = _split(value, BANDWIDTH_HINT)
    if unit:
        m = _BW_UNIT.match(unit)
        if m is None:
            raise ValueError(f"unknown bandwidth unit '{unit}' in {value!r}; expected {BANDWIDTH_HINT}")
        scale = _PREFIX[m.group(1)] * (1.0 if m.group(2) in ("B/s", "Bps") else 0.125)
        number *= scale
    _finite(number, "bandwidth", value)
    if number < 0:
        raise ValueError(f"negative bandwidth {value!r}; a bandwidth must be positive (bytes/s)")
    if number == 0:
        raise ValueError(f"zero bandwidth {value!r}; a bandwidth must be positive (bytes/s)")
    return number


def parse_latency(value: object) -> float:
    """Seconds. Raises ``ValueError`` for unknown units and negative values."""
    number, unit = _split(value, LATENCY_HINT)
    if unit not in _TIME_UNIT:
        raise ValueError(f"unknown time unit '{unit}' in {value!r}; expected {LATENCY_HINT}")
    number *= _TIME_UNIT[unit]
    _finite(number, "latency", value)
    if number < 0:
        raise ValueError(f"negative latency {value!r}; a latency must be zero or more (seconds)")
    return number


def parse_size(value: object) -> int:
    """Bytes (an integer). Raises ``ValueError`` for unknown units and negative values."""
    number, unit = _split(value, SIZE_HINT)
    if unit:
        m = _SIZE_UNIT.match(unit)
        if m is None:
            raise ValueError(f"unknown size unit '{unit}' in {value!r}; expected {SIZE_HINT}")
        number *= _PREFIX[m.group(1)]
    _finite(number, "size", value)
    if number < 0:
        raise ValueError(f"negative size {value!r}; a size must be zero or more (bytes)")
    return round(number)


def format_bandwidth(bps: float) -> str:
    """``450e9`` -> ``'450 GB/s'`` (decimal prefixes, for display)."""
    for scale, name in ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if bps >= scale:
            return f"{bps / scale:.4g} {name}"
    return f"{bps:.4g} B/s"


def format_latency(seconds: float) -> str:
    """``2e-6`` -> ``'2 us'`` (for display)."""
    if seconds == 0:
        return "0 s"
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {name}"
    return f"{seconds / 1e-9:.4g} ns"
