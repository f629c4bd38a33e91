"""The CUDA backend on CuPy: raw device allocations under the dsrt pool, cuBLAS GEMMs, NVRTC kernels.

CuPy is imported lazily in the probe, so this plugin imports (and ``dsrt devices`` explains what is
missing) on machines without CuPy or without a GPU.
"""

from __future__ import annotations

from typing import Any

import dsrt
from dsrt.errors import DeviceUnavailableError
from dsrt.hookspecs import BackendSpec

__all__ = ["dsrt_register_backends", "dsrt_register_transports", "probe"]

INSTALL_HINT = "pip install dsrt[cuda12] (CUDA 12) or dsrt[cuda13] (CUDA 13)"


def probe(runtime: Any) -> list[Any]:
    """One device per visible GPU, or DeviceUnavailableError saying what is missing.

    Without a usable GPU the backend is *unavailable*, never *failed*: no GPU gives "no CUDA GPU
    visible"; a CUDA runtime that cannot start (no driver, a driver too old) gives the runtime's own
    error text."""
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailableError(f"cupy not installed: {INSTALL_HINT} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - CuPy raises other errors when its CUDA libraries do not load
        raise DeviceUnavailableError(f"cupy does not load: {type(exc).__name__}: {exc}") from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError, missing libcudart, driver too old
        if "cudaErrorNoDevice" in str(exc):
            raise DeviceUnavailableError(f"no CUDA GPU visible ({exc})") from None
        raise DeviceUnavailableError(f"CUDA runtime unusable: {type(exc).__name__}: {exc}") from None
    if count == 0:
        raise DeviceUnavailableError("no CUDA GPU visible (CUDA_VISIBLE_DEVICES?)")
    from .device import CudaDevice

    return [CudaDevice(i) for i in range(count)]


@dsrt.hookimpl
def dsrt_register_transports() -> list[Any]:
    from dsrt.collective import TransportSpec

    from .nccl import NcclTransport, nccl_applies

    return [TransportSpec(name="nccl", kind="intra", applies=nccl_applies, factory=NcclTransport, priority=10,
                          description="NCCL among the CUDA GPUs of one process (cupy.cuda.nccl)")]


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(name="cuda", api_version=1, probe=probe, priority=100,
                        description="NVIDIA GPUs through CuPy (cuBLAS, NVRTC)", install_hint=INSTALL_HINT,
                        nominal_peak_flops=67e12)]  # an H100 SXM, for planning on topologies that declare none
