"""``OpenCLDevice``: one dsrt device per OpenCL device, memory in ``cl.Buffer``, in-order queues.

Ownership: the device owns its command queues (one per stream, profiling enabled so event times come
from the device) and its program cache; the memory pool owns the buffers. Arrays are ``(buffer, byte
offset)`` pairs inside pooled buffers; kernels receive element offsets, never sub-buffers (whose base
alignment rules differ per device). Sizes are bytes, times seconds.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt.array import Array
from dsrt.device import Device, DeviceInfo, Event, KernelImpl, Stream, UserKernel
from dsrt.errors import (
    ConfigurationError,
    DeviceError,
    DsrtError,
    KernelLaunchError,
    OutOfMemoryError,
    ShapeError,
    format_bytes,
)

from . import kernels as K
from .cache import ProgramCache, disable_pyopencl_disk_caches
from .source import Tuning

__all__ = ["OpenCLDevice", "device_info"]

#: Dtypes every OpenCL device runs (bf16 and fp8 are stored as 16/8-bit integers, computed in fp32).
_ALWAYS_STORED = ("bool", "int8", "int16", "int32", "int64", "uint8", "float32", "bfloat16",
                   "float8_e4m3fn", "float8_e5m2")


def _pow2_floor(n: int) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p


def _extensions(d: Any) -> frozenset[str]:
    return frozenset(d.extensions.split())


def device_dtypes(d: Any, fp16: bool | None = None) -> frozenset[str]:
    """Dtypes the device runs: fp16 only with ``cl_khr_fp16``, fp64 only with ``cl_khr_fp64``."""
    ext = _extensions(d)
    names = set(_ALWAYS_STORED)
    has_fp16 = "cl_khr_fp16" in ext if fp16 is None else fp16
    if has_fp16:
        names.add("float16")
    if "cl_khr_fp64" in ext:
        names.add("float64")
    return frozenset(names)


def device_info(cl: Any, d: Any, index: int, dtypes: frozenset[str]) -> DeviceInfo:
    """``DeviceInfo`` from the device's own queries. Peak FLOP/s is an estimate: compute units x clock
    x SIMD width (preferred float vector width) x 2 (multiply-add)."""
    ext = _extensions(d)
    mhz = float(d.max_clock_frequency)
    simd = max(int(d.preferred_vector_width_float), 1)
    props: dict[str, Any] = {
        "platform": d.platform.name,
        "platform_version": d.platform.version,
        "opencl_version": d.version,
        "driver_version": d.driver_version,
        "device_type": cl.device_type.to_string(d.type),
        # Devices reporting the same `hardware` share silicon (PoCL runs on the host's own cores).
        "hardware": "host-cpu" if d.type & cl.device_type.CPU else f"opencl:{d.vendor}:{d.name}",
        "max_work_group_size": int(d.max_work_group_size),
        "local_memory_bytes": int(d.local_mem_size),
        "max_alloc_bytes": int(d.max_mem_alloc_size),
        "clock_mhz": mhz,
        "simd_width_fp32": simd,
        "fp16": "cl_khr_fp16" in ext,
        "fp64": "cl_khr_fp64" in ext,
        "extensions": " ".join(sorted(ext)),
        "peak_flops_model": "compute units x clock MHz x preferred float vector width x 2",
    }
    return DeviceInfo(
        id=f"opencl:{index}", backend="opencl", index=index, name=d.name.strip(), vendor=d.vendor.strip(),
        memory_bytes=int(d.global_mem_size), compute_units=int(d.max_compute_units), dtypes=dtypes,
        peak_flops=float(d.max_compute_units) * mhz * 1e6 * simd * 2.0, synchronous=False, host_visible=False,
        languages=frozenset({"opencl"}), dlpack_device_type=None, properties=props,
    )


class OpenCLDevice(Device):
    """One OpenCL device. ``context`` may be shared by devices of one platform (direct copies).

    ``fp16``: override the ``cl_khr_fp16`` check (``True`` claims float16 through the core
    ``vload_half``/``vstore_half`` storage functions; used to test those paths on devices without it).
    """

    def __init__(self, cl: Any, context: Any, cl_device: Any, index: int, *, fp16: bool | None = None) -> None:
        disable_pyopencl_disk_caches(cl)  # before any launch: no pickled pyopencl cache is ever read
        self.cl = cl
        self.context = context
        self.cl_device = cl_device
        self._launch_lock = threading.Lock()
        #: (program family, kernel name) -> cl.Kernel, and id(cl.Kernel) -> chosen work-group size.
        self.kernel_objects: dict[tuple[Any, str], Any] = {}
        self.work_group_sizes: dict[int, int] = {}
        dtypes = device_dtypes(cl_device, fp16)
        info = device_info(cl, cl_device, index, dtypes)
        max_wg = int(cl_device.max_work_group_size)
        local = int(cl_device.local_mem_size)
        # The A panel (K x GEMM_RM values) may use at most a quarter of local memory.
        kc = _pow2_floor(max(local // 4 // (6 * 8), 16))
        # Reductions use a power-of-two work-group within the device limit. On a CPU device one
        # work-group runs in one thread, where wider groups only add barrier overhead.
        is_cpu = bool(cl_device.type & cl.device_type.CPU)
        rwg = min(_pow2_floor(max_wg), 64 if is_cpu else 256)
        # Elementwise: on a CPU one work-item sweeps a contiguous chunk (the loop vectorises), a few
        # chunks per compute unit; elsewhere a work-group sweeps it with coalesced accesses.
        ewl = 1 if is_cpu else min(_pow2_floor(max_wg), 256)
        self.ew_groups = int(cl_device.max_compute_units) * (8 if is_cpu else 64)
        self.tuning = Tuning(rwg=rwg, kc=min(kc, 4096), fp64="float64" in dtypes, ewl=ewl)
        self.programs = ProgramCache(cl, context, cl_device, info.id)
        self.build_options: tuple[str, ...] = ("-cl-mad-enable",)
        fp_cfg = getattr(cl_device, "single_fp_config", 0)
        rounded = getattr(cl.device_fp_config, "CORRECTLY_ROUNDED_DIVIDE_SQRT", 0)
        if fp_cfg & rounded:
            self.build_options += ("-cl-fp32-correctly-rounded-divide-sqrt",)
        self.max_alloc = int(cl_device.max_mem_alloc_size)
        super().__init__(info)
        self.info = dataclasses.replace(self.info, memory_bandwidth=self._measure_bandwidth())

    # ------------------------------------------------------------------ memory primitives
    def _allocate(self, nbytes: int) -> Any:
        cl = self.cl
        if nbytes > self.max_alloc:
            raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=self.info.memory_bytes,
                                   largest_free=self.max_alloc, tried=["cl.Buffer"],
                                   detail=f"CL_DEVICE_MAX_MEM_ALLOC_SIZE is {format_bytes(self.max_alloc)}")
        try:
            return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, size=max(int(nbytes), 1))
        except (cl.MemoryError, cl.Error) as exc:
            raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=self.info.memory_bytes,
                                   tried=["cl.Buffer"], detail=str(exc)) from exc

    def _free(self, handle: Any) -> None:
        # Dropping the last reference releases the cl_mem (pyopencl's finaliser); the driver keeps it
        # alive until enqueued commands that use it have finished. An explicit release() here would
        # be repeated by that finaliser.
        del handle

    def _copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        if src.nbytes:
            self.cl.enqueue_copy(stream.native, handle, src.reshape(-1).view(np.uint8), dst_offset=offset,
                                 is_blocking=True)

    def _copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        if dst.nbytes:
            self.cl.enqueue_copy(stream.native, dst.reshape(-1).view(np.uint8), handle, src_offset=offset,
                                 is_blocking=True)

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        other = src_device
        if not isinstance(other, OpenCLDevice) or other.context != self.context:
            return False
        if other is not self:
            other.synchronize()
        if nbytes:
            self.cl.enqueue_copy(stream.native, dst_handle, src_handle, byte_count=nbytes, src_offset=src_offset,
                                 dst_offset=dst_offset)
        return True

    # ------------------------------------------------------------------ streams and events
    def _create_stream(self, name: str = "") -> Stream:
        cl = self.cl
        queue = cl.CommandQueue(self.context, self.cl_device,
                                properties=cl.command_queue_properties.PROFILING_ENABLE)
        return Stream(self, queue, name)

    def _synchronize(self, stream: Stream) -> None:
        stream.native.finish()

    def _record_event(self, stream: Stream) -> Event:
        return Event(stream, self.cl.enqueue_marker(stream.native))

    def _query_event(self, event: Event) -> bool:
        return bool(event.native.command_execution_status == self.cl.command_execution_status.COMPLETE)

    def _wait_event(self, event: Event) -> None:
        event.native.wait()

    def _elapsed(self, start: Event, end: Event) -> float:
        start.native.wait()
        end.native.wait()
        return (end.native.profile.end - start.native.profile.end) * 1e-9

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        return K.table(self.info.dtypes)

    def enqueue(self, kern: Any, stream: Stream, gsize: Sequence[int], lsize: Sequence[int] | None,
                *args: Any) -> Any:
        """Set ``args`` on ``kern`` and enqueue it; returns the event. Kernel objects are shared, so
        setting arguments and enqueueing happen under one lock."""
        if any(g == 0 for g in gsize):
            return None
        with self._launch_lock:
            kern.set_args(*args)
            return self.cl.enqueue_nd_range_kernel(stream.native, kern, tuple(gsize),
                                                   None if lsize is None else tuple(lsize))

    def fused_kernel(self, ir: Any) -> Any:
        """The JIT's optional code-generation capability: an OpenCL C kernel for a fused group
        (:class:`dsrt.jit.ir.FusedIR`: elementwise, reduction with its prologue, GEMM with its
        epilogue), or ``None`` for IR it does not generate (see :mod:`dsrt_opencl.fusion`)."""
        from .fusion import OpenCLFusion

        return OpenCLFusion(self)(ir)

    # ------------------------------------------------------------------ user kernels
    def _compile(self, source: str, lang: str, name: str, options: Sequence[str]) -> UserKernel:
        prg, hit = self.programs.build(source, tuple(options), name=name)
        try:
            kern = self.cl.Kernel(prg, name)
        except self.cl.Error as exc:
            raise ConfigurationError(f"{self.id}: the OpenCL program defines no kernel '{name}': {exc}") from exc
        return UserKernel(name=name, lang=lang, device=self, native=kern, cache_hit=hit)

    def _launch_user(self, kernel: UserKernel, args: Sequence[Any], options: Mapping[str, Any],
                     stream: Stream) -> Any:
        """``args``: Arrays on this device (passed as their buffer; arrays at a nonzero offset inside
        their buffer are passed as a sub-buffer), numpy scalars, or Python ints (``int32``) and floats
        (``float32``). ``options``: ``global_size`` (required), ``local_size``."""
        gsize = options.get("global_size")
        if gsize is None:
            raise ConfigurationError(f"{self.id}: OpenCL kernel '{kernel.name}' needs global_size=")
        unknown = set(options) - {"global_size", "local_size"}
        if unknown:
            raise ConfigurationError(f"{self.id}: unknown launch options {sorted(unknown)} for '{kernel.name}'"
                                     " (known: global_size, local_size)")
        gs = (int(gsize),) if isinstance(gsize, (int, np.integer)) else tuple(int(g) for g in gsize)
        ls = options.get("local_size")
        if ls is not None:
            ls = (int(ls),) if isinstance(ls, (int, np.integer)) else tuple(int(v) for v in ls)
        converted = [self._user_arg(kernel.name, i, a) for i, a in enumerate(args)]
        try:
            return self.enqueue(kernel.native, stream, gs, ls, *converted)
        except DsrtError:
            raise
        except self.cl.Error as exc:
            raise KernelLaunchError(f"{self.id}: OpenCL kernel '{kernel.name}' with global size {gs}, local size"
                                    f" {ls}: {exc}", kernel=kernel.name, device=self.id) from exc

    def _user_arg(self, name: str, i: int, arg: Any) -> Any:
        if isinstance(arg, Array):
            if arg.device is not self:
                raise ShapeError(f"{self.id}: argument {i} of '{name}' lives on {arg.device.id}")
            arg.allocation.touch()
            offset = arg.handle_offset
            if offset == 0:
                return arg.handle
            align = int(self.cl_device.mem_base_addr_align) // 8
            if offset % align:
                raise ConfigurationError(
                    f"{self.id}: argument {i} of '{name}' starts {offset} bytes into its buffer, not a multiple of"
                    f" the device's {align}-byte sub-buffer alignment; pass a fresh array")
            return arg.handle.get_sub_region(offset, max(arg.nbytes, 1))
        if isinstance(arg, bool):
            return np.int32(arg)
        if isinstance(arg, int):
            return np.int32(arg)
        if isinstance(arg, float):
            return np.float32(arg)
        return arg

    # ------------------------------------------------------------------ errors and lifetime
    def _translate_error(self, exc: BaseException, action: str) -> DsrtError:
        cl = self.cl
        if isinstance(exc, cl.MemoryError):
            return OutOfMemoryError(device=self.id, requested=0, capacity=self.info.memory_bytes,
                                    tried=["OpenCL driver"], detail=f"{action}: {exc}")
        if isinstance(exc, cl.LogicError):
            return KernelLaunchError(f"{self.id}: {action} was rejected by the OpenCL driver: {exc}", device=self.id)
        if isinstance(exc, cl.Error):
            return DeviceError(f"{self.id}: {action} failed in the OpenCL driver: {exc}", device=self.id)
        return super()._translate_error(exc, action)

    def close(self) -> None:
        try:
            self.default_stream.native.finish()
        finally:
            super().close()

    def _measure_bandwidth(self, nbytes: int = 8 << 20) -> float:
        """Bytes per second of a device-side buffer copy (read + write counted once), best of three."""
        cl = self.cl
        q = self.default_stream.native
        try:
            a = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
            b = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                cl.enqueue_copy(q, b, a, byte_count=nbytes)
                q.finish()
                best = min(best, time.perf_counter() - t0)
            del a, b
        except cl.Error:
            return 0.0
        return nbytes / best

