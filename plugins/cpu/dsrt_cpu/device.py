"""``CpuDevice``: host memory as numpy buffers (:mod:`dsrt.memory.hostmem`); kernels run synchronously in
the calling thread. An Array's numpy view is cached on the Array, so a launch costs a dictionary
lookup and the numpy call.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import DLPACK_CPU, Array
from dsrt.device import Device, DeviceInfo, KernelImpl, Stream, UserKernel
from dsrt.errors import ConfigurationError, DsrtError, KernelLaunchError, ShapeError
from dsrt.memory import Allocation
from dsrt.memory.hostmem import HostMemory, host_view

from . import kernels

__all__ = ["CpuDevice", "host_view"]


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _cpu_model_and_mhz() -> tuple[str, float]:
    model, mhz = platform.processor() or platform.machine(), 0.0
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    return model, mhz or 2500.0


def _measure_copy_bandwidth(nbytes: int = 8 << 20) -> float:
    """Bytes per second of a host memcpy (read + write counted once), best of three."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


class _KeepAlive:
    """Presents a numpy view through ``__array_interface__`` while holding its Array alive."""

    def __init__(self, view: np.ndarray, owner: Array) -> None:
        self.__array_interface__ = view.__array_interface__
        self.owner = owner


class CpuDevice(HostMemory, Device):
    """The host CPU as one dsrt device (``cpu:0``)."""

    def __init__(self, index: int = 0) -> None:
        cores = os.cpu_count() or 1
        model, mhz = _cpu_model_and_mhz()
        # 32 fp32 FLOP per cycle per core: two 8-wide FMA units (AVX2). An estimate, stated as such.
        peak = cores * mhz * 1e6 * 32.0
        info = DeviceInfo(
            id=f"cpu:{index}", backend="cpu", index=index, name=model, vendor=platform.machine(),
            memory_bytes=_physical_memory(), compute_units=cores,
            dtypes=frozenset(dt.STANDARD_DTYPES),
            peak_flops=peak, memory_bandwidth=_measure_copy_bandwidth(), synchronous=True, host_visible=True,
            languages=frozenset({"c"}), dlpack_device_type=DLPACK_CPU,
            properties={"peak_flops_model": "cores x MHz x 32 fp32 FLOP/cycle (AVX2 FMA)", "mhz": mhz,
                        "hardware": "host-cpu"},
        )
        super().__init__(info)
        self._compiler: Any = None
        self._fusion: Any = None

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        return kernels.TABLE

    # ------------------------------------------------------------------ user kernels (C via cffi)
    def _compile(self, source: str, lang: str, name: str, options: Sequence[str]) -> UserKernel:
        if self._compiler is None:
            from .compiler import CCompiler

            self._compiler = CCompiler()
        native, hit = self._compiler.build(source, name, options)
        return UserKernel(name=name, lang=lang, device=self, native=native, cache_hit=hit)

    def fused_kernel(self, ir: Any) -> Any:
        """The JIT's optional code-generation capability: a C kernel for a fused group
        (:class:`dsrt.jit.ir.FusedIR`), compiled once and cached on disk (see :mod:`dsrt_cpu.fusion`)."""
        if self._fusion is None:
            from .compiler import CCompiler
            from .fusion import CpuFusion

            if self._compiler is None:
                self._compiler = CCompiler()
            self._fusion = CpuFusion(self._compiler)
        return self._fusion(ir)

    def _launch_user(self, kernel: UserKernel, args: Sequence[Any], options: Mapping[str, Any], stream: Stream) -> Any:
        ffi, fn = kernel.native
        params = ffi.typeof(fn).args
        if len(params) != len(args):
            raise ShapeError(f"{self.id}: C kernel '{kernel.name}' takes {len(params)} arguments, got {len(args)}")
        converted = []
        for i, (ctype, arg) in enumerate(zip(params, args, strict=True)):
            if isinstance(arg, Array):
                if arg.device is not self:
                    raise ShapeError(f"{self.id}: argument {i} of '{kernel.name}' lives on {arg.device.id}")
                arg.allocation.touch()
                converted.append(ffi.cast(ctype, ffi.from_buffer(host_view(arg))))
            elif isinstance(arg, np.ndarray):
                converted.append(ffi.cast(ctype, ffi.from_buffer(arg)))
            else:
                converted.append(arg)
        try:
            return fn(*converted)
        except DsrtError:
            raise
        except Exception as exc:
            raise KernelLaunchError(f"{self.id}: C kernel '{kernel.name}' failed: {exc}", kernel=kernel.name,
                                    device=self.id) from exc

    # ------------------------------------------------------------------ DLPack
    def _export_dlpack(self, array: Array, stream: Any) -> np.ndarray:
        if array.dtype not in (dt.bfloat16, dt.float8_e4m3fn, dt.float8_e5m2):
            return np.asarray(_KeepAlive(host_view(array), array))
        raise ConfigurationError(
            f"{self.id}: {dt.dtype_name(array.dtype)} arrays cannot cross DLPack through numpy; cast first"
        )

    def _import_dlpack(self, obj: Any) -> Array:
        host = np.from_dlpack(obj)
        if not host.flags.c_contiguous:
            host = np.ascontiguousarray(host)
        d = dt.as_dtype(host.dtype)
        flat = host.reshape(-1).view(np.uint8) if host.size else np.empty(0, np.uint8)
        # Not pooled (pool=None): the memory belongs to ``obj``, which the flat view keeps alive.
        alloc = Allocation(self, flat, 0, flat.size, None)
        arr = Array(self, tuple(host.shape), d, alloc)
        arr.native, arr.native_generation = host, alloc.generation
        return arr
