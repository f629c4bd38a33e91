"""Checks at the plugin boundary: what a plugin hands the core is validated before the core uses it.

A plugin can only ever hurt itself. A probe that returns something that is not a :class:`Device`, a
device whose ``info`` is malformed, or a device id outside the backend's own prefix (or one that
another device already holds) fails that backend with the reason; every other backend keeps working.
Each check returns ``None`` when the value is fine, else one line saying what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .device import Device, DeviceInfo
from .kernels import KernelSpec

__all__ = ["check_device", "check_device_info", "check_kernel_spec"]

_NUMBER = (int, float)


def check_device_info(info: Any) -> str | None:
    """What is malformed in a ``DeviceInfo`` (types and ranges of the fields the core reads)."""
    if not isinstance(info, DeviceInfo):
        return f"info is a {type(info).__name__}, not a DeviceInfo"
    problems = []
    if not isinstance(info.id, str) or not info.id:
        problems.append(f"id {info.id!r} is not a non-empty string")
    if not isinstance(info.backend, str) or not info.backend:
        problems.append(f"backend {info.backend!r} is not a non-empty string")
    if not isinstance(info.name, str):
        problems.append(f"name {info.name!r} is not a string")
    for field in ("index", "memory_bytes", "compute_units"):
        value = getattr(info, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{field}={value!r} is not an integer >= 0")
    for field in ("peak_flops", "memory_bandwidth"):
        value = getattr(info, field)
        if not isinstance(value, _NUMBER) or isinstance(value, bool) or not (value >= 0 and math.isfinite(value)):
            problems.append(f"{field}={value!r} is not a finite number >= 0 (operations or bytes per second)")
    for field in ("precision_bits", "modelled_peak_flops"):
        value = getattr(info, field, None)
        if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool) or not value > 0):
            problems.append(f"{field}={value!r} is neither None nor a number > 0")
    if not isinstance(info.dtypes, (frozenset, set)) or not all(isinstance(d, str) for d in info.dtypes):
        problems.append(f"dtypes={info.dtypes!r} is not a set of dtype names")
    if not isinstance(info.kernels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (frozenset, set)) for k, v in info.kernels.items()):
        problems.append("kernels is not a mapping of kernel name -> set of dtype names")
    if not isinstance(info.properties, Mapping):
        problems.append(f"properties is a {type(info.properties).__name__}, not a mapping")
    if not isinstance(info.simulated, bool):
        problems.append(f"simulated={info.simulated!r} is not a bool")
    return "; ".join(problems) or None


def check_device(device: Any, *, backend: str, prefix: str, taken: Mapping[str, Any]) -> str | None:
    """What is wrong with a device a backend's probe returned.

    ``prefix``: the device-id prefix the backend owns (``cpu`` -> ``cpu:0``); ``taken``: ids already
    held by other devices of this runtime.
    """
    if not isinstance(device, Device):
        return f"the probe returned a {type(device).__name__}, not a dsrt.Device"
    info = getattr(device, "info", None)
    bad = check_device_info(info)
    if bad:
        return f"device {getattr(device, 'id', '?')!r}: {bad}"
    assert isinstance(info, DeviceInfo)
    if device.id != info.id:
        return f"device id {device.id!r} differs from its info.id {info.id!r}"
    if not re.fullmatch(rf"{re.escape(prefix)}:[A-Za-z0-9_.\-]+", info.id):
        return f"device id {info.id!r} is outside the backend's own prefix '{prefix}:' (backend '{backend}')"
    if info.id in taken and taken[info.id] is not device:
        return f"device id {info.id!r} is already held by another device; a backend cannot replace it"
    return None


def check_kernel_spec(spec: Any) -> str | None:
    """What is wrong with a ``KernelSpec`` a plugin registers."""
    if not isinstance(spec, KernelSpec):
        return f"dsrt_register_kernels returned a {type(spec).__name__}, not a KernelSpec"
    if not isinstance(spec.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", spec.name):
        return f"kernel name {spec.name!r} is not an identifier"
    return None
