"""The OpenCL backend: one dsrt device per OpenCL device on every platform (``opencl:0``, ...).

pyopencl is imported inside the probe, so this plugin imports (and registers) without it; the probe
then says what to install. Install with ``pip install dsrt[opencl]`` (pyopencl and PoCL's CPU driver).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dsrt
from dsrt.errors import DeviceUnavailableError
from dsrt.hookspecs import BackendSpec

if TYPE_CHECKING:
    from .device import OpenCLDevice

__all__ = ["dsrt_register_backends", "probe", "INSTALL_HINT"]

INSTALL_HINT = "pip install dsrt[opencl]"


def _import_cl() -> Any:
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise DeviceUnavailableError(f"pyopencl not installed: {INSTALL_HINT}") from exc
    return cl


def probe(runtime: Any = None) -> list[OpenCLDevice]:
    """Every device of every OpenCL platform, one context per platform (so its devices copy directly).

    Raises :class:`~dsrt.errors.DeviceUnavailableError` when pyopencl is missing or no platform or
    device is found.
    """
    cl = _import_cl()
    from .device import OpenCLDevice

    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:
        raise DeviceUnavailableError(f"no OpenCL platform found ({exc}); install a driver, e.g. {INSTALL_HINT}") \
            from exc
    if not platforms:
        raise DeviceUnavailableError(f"no OpenCL platform found; install a driver, e.g. {INSTALL_HINT}")
    devices: list[OpenCLDevice] = []
    problems: list[str] = []
    for platform in platforms:
        try:
            found = platform.get_devices()
        except cl.Error as exc:
            problems.append(f"{platform.name.strip()}: {exc}")
            continue
        if not found:
            continue
        context = cl.Context(found)
        for d in found:
            devices.append(OpenCLDevice(cl, context, d, len(devices)))
    if not devices:
        detail = f" ({'; '.join(problems)})" if problems else ""
        names = ", ".join(p.name.strip() for p in platforms)
        raise DeviceUnavailableError(f"no OpenCL device found on platform(s) {names}{detail}")
    return devices


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    # Below the native cpu backend: on machines without a vendor GPU runtime the OpenCL device is
    # the host CPU again (PoCL). Name an OpenCL GPU explicitly or set DSRT_DEFAULT_DEVICE.
    return [BackendSpec(
        name="opencl", api_version=1, probe=probe, priority=-1, install_hint=INSTALL_HINT,
        description="OpenCL devices through pyopencl; kernels in OpenCL C, binaries cached on disk",
        nominal_peak_flops=10e12,  # a mid-range OpenCL GPU, for planning on topologies that declare none
    )]
