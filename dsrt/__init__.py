"""dsrt: a hardware abstraction runtime built as a microkernel.

The core knows no hardware: backends (cpu, opencl, cuda, npu, and simulated photonic, neuromorphic
and quantum devices) are plugins found through the ``dsrt`` entry-point group.

    import dsrt, numpy as np
    rt = dsrt.Runtime()
    a = rt.asarray(np.ones((256, 256), np.float32))
    c = rt.launch("gemm", a, a)
    print(c.device.id, c.numpy()[0, 0])
"""

from __future__ import annotations

from . import dtypes
from . import jit as _jit_package  # noqa: F401 - loaded first, so the name below stays the function
from .array import Array
from .cabi import header_path as c_header_path
from .device import Device, DeviceInfo, Event, Stream, UserKernel, current_device
from .dtypes import as_dtype
from .errors import (
    BackendNotFoundError,
    CollectiveError,
    ConfigurationError,
    DeviceError,
    DeviceLostError,
    DeviceUnavailableError,
    DsrtError,
    DsrtOutOfMemoryError,
    KernelCompileError,
    KernelError,
    KernelLaunchError,
    OutOfMemoryError,
    PluginError,
    PluginVersionError,
    PoisonedChunkError,
    SchedulingError,
    ShapeError,
    TopologyError,
    TransientDeviceError,
    UnsupportedKernelError,
)
from .hookspecs import PLUGIN_API_VERSION, BackendSpec, CliCommand, WorkloadItem, hookimpl, hookspec
from .kernels import KERNELS, STANDARD_KERNELS, KernelSpec, get_kernel, register_kernel
from .runtime import Runtime, asarray, default_runtime, from_dlpack, jit, set_default_runtime

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Array",
    "BackendNotFoundError",
    "BackendSpec",
    "CliCommand",
    "CollectiveError",
    "ConfigurationError",
    "Device",
    "DeviceError",
    "DeviceInfo",
    "DeviceLostError",
    "DeviceUnavailableError",
    "DsrtError",
    "DsrtOutOfMemoryError",
    "Event",
    "KERNELS",
    "KernelCompileError",
    "KernelError",
    "KernelLaunchError",
    "KernelSpec",
    "OutOfMemoryError",
    "PLUGIN_API_VERSION",
    "PluginError",
    "PluginVersionError",
    "PoisonedChunkError",
    "Runtime",
    "STANDARD_KERNELS",
    "SchedulingError",
    "ShapeError",
    "Stream",
    "TopologyError",
    "TransientDeviceError",
    "UnsupportedKernelError",
    "UserKernel",
    "WorkloadItem",
    "as_dtype",
    "c_header_path",
    "asarray",
    "current_device",
    "default_runtime",
    "dtypes",
    "from_dlpack",
    "get_kernel",
    "hookimpl",
    "hookspec",
    "jit",
    "register_kernel",
    "set_default_runtime",
]
