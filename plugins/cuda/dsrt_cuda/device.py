"""``CudaDevice``: one GPU. Raw memory from ``cudaMalloc`` (the dsrt pool caches it, CuPy's pool is
not under it), copies with ``cudaMemcpyAsync`` on the stream, kernels through CuPy on the stream.

Each Array's CuPy view (cached in ``Array.native``, see :func:`dsrt_cuda.views.cuda_view`) wraps its
pointer with ``UnownedMemory`` owned by the Allocation, so an exported view keeps the allocation out
of the pool until the consumer lets go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cupy as cp
import numpy as np

from dsrt import dtypes as dt
from dsrt.array import DLPACK_CUDA, Array
from dsrt.device import Device, DeviceInfo, Event, KernelImpl, Stream, UserKernel
from dsrt.errors import (
    DeviceError,
    DeviceLostError,
    DsrtError,
    KernelLaunchError,
    OutOfMemoryError,
    ShapeError,
)
from dsrt.memory import Allocation

from . import kernels
from .views import cuda_view

__all__ = ["CudaDevice", "cuda_view"]

_H2D, _D2H, _D2D = 1, 2, 3
# cuBLAS-friendly dtypes held natively; bf16 is held as 16-bit words and computed through fp32.
_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16", "float32",
                     "float64", "complex64", "complex128"})


def _attr(index: int, name: str, default: int = 0) -> int:
    code = getattr(cp.cuda.runtime, name, None)
    if code is None:
        return default
    try:
        return int(cp.cuda.runtime.deviceGetAttribute(code, index))
    except Exception:  # noqa: BLE001 - attribute not offered by this driver
        return default


def _fp32_lanes_per_sm(major: int) -> int:
    """FP32 FMA lanes per SM by architecture (from NVIDIA's architecture whitepapers)."""
    return {6: 64, 7: 64, 8: 128, 9: 128, 10: 128, 12: 128}.get(major, 64)


class CudaDevice(Device):
    """One CUDA GPU (``cuda:N``)."""

    def __init__(self, index: int) -> None:
        self._cp_device = cp.cuda.Device(index)
        props = cp.cuda.runtime.getDeviceProperties(index)
        name = props.get("name", b"GPU")
        name = name.decode() if isinstance(name, bytes) else str(name)
        sms = int(props.get("multiProcessorCount", 0)) or _attr(index, "cudaDevAttrMultiProcessorCount", 1)
        clock_khz = int(props.get("clockRate", 0)) or _attr(index, "cudaDevAttrClockRate", 1_000_000)
        major, minor = int(props.get("major", 0)), int(props.get("minor", 0))
        mem_clock_khz = int(props.get("memoryClockRate", 0)) or _attr(index, "cudaDevAttrMemoryClockRate")
        bus_bits = int(props.get("memoryBusWidth", 0)) or _attr(index, "cudaDevAttrGlobalMemoryBusWidth")
        peak_fp32 = sms * _fp32_lanes_per_sm(major) * 2 * clock_khz * 1e3
        # Tensor cores give dense bf16 roughly 8x (Ampere), 16x (Hopper/Blackwell) the FP32 FMA rate.
        bf16_factor = {8: 8.0, 9: 16.0, 10: 16.0, 12: 16.0}.get(major, 1.0)
        with self._cp_device:
            free, total = cp.cuda.runtime.memGetInfo()
        info = DeviceInfo(
            id=f"cuda:{index}", backend="cuda", index=index, name=name, vendor="NVIDIA",
            memory_bytes=int(total), compute_units=sms, dtypes=_DTYPES, synchronous=False, host_visible=False,
            peak_flops=float(peak_fp32), memory_bandwidth=float(2 * mem_clock_khz * 1e3 * bus_bits / 8),
            languages=frozenset({"cuda"}), dlpack_device_type=DLPACK_CUDA,
            properties={"compute_capability": f"{major}.{minor}", "clock_mhz": clock_khz / 1e3,
                        "peak_bf16_flops": peak_fp32 * bf16_factor, "free_bytes_at_probe": int(free),
                        "peak_model": "SMs x FP32 lanes/SM x 2 x SM clock; bf16 x tensor-core factor"},
        )
        super().__init__(info)
        self._compiler: Any = None
        self._graphs: Any = None

    # ------------------------------------------------------------------ memory
    def _allocate(self, nbytes: int) -> int:
        with self._cp_device:
            try:
                return int(cp.cuda.runtime.malloc(max(nbytes, 1)))
            except cp.cuda.runtime.CUDARuntimeError as exc:
                if "memory" in str(exc).lower():
                    free, total = cp.cuda.runtime.memGetInfo()
                    raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=int(total),
                                           largest_free=int(free), tried=["cudaMalloc"]) from exc
                raise

    def _free(self, handle: int) -> None:
        with self._cp_device:
            cp.cuda.runtime.free(handle)

    def _allocate_pinned(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory for the pool's host tier."""
        mem = cp.cuda.alloc_pinned_memory(max(nbytes, 1))
        return np.frombuffer(mem, np.uint8, nbytes)

    def _copy_in(self, handle: int, offset: int, src: np.ndarray, stream: Stream) -> None:
        with self._cp_device:
            cp.cuda.runtime.memcpyAsync(handle + offset, src.ctypes.data, src.nbytes, _H2D, stream.native.ptr)
            # The host buffer may be a temporary: the copy must finish before the caller returns.
            stream.native.synchronize()

    def _copy_out(self, handle: int, offset: int, dst: np.ndarray, stream: Stream) -> None:
        with self._cp_device:
            cp.cuda.runtime.memcpyAsync(dst.ctypes.data, handle + offset, dst.nbytes, _D2H, stream.native.ptr)

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        other = src_device
        if not isinstance(other, CudaDevice):
            return False
        with self._cp_device:
            if other is self:
                cp.cuda.runtime.memcpyAsync(dst_handle + dst_offset, src_handle + src_offset, nbytes, _D2D,
                                            stream.native.ptr)
                return True
            if not cp.cuda.runtime.deviceCanAccessPeer(self.info.index, other.info.index):
                return False
            try:
                cp.cuda.runtime.deviceEnablePeerAccess(other.info.index)
            except cp.cuda.runtime.CUDARuntimeError:
                pass  # already enabled
            cp.cuda.runtime.memcpyPeerAsync(dst_handle + dst_offset, self.info.index, src_handle + src_offset,
                                            other.info.index, nbytes, stream.native.ptr)
        return True

    # ------------------------------------------------------------------ streams and events
    def _create_stream(self, name: str = "") -> Stream:
        with self._cp_device:
            return Stream(self, cp.cuda.Stream(non_blocking=True), name)

    def _synchronize(self, stream: Stream) -> None:
        stream.native.synchronize()

    def _record_event(self, stream: Stream) -> Event:
        with self._cp_device:
            ev = cp.cuda.Event()
            ev.record(stream.native)
        return Event(stream, ev, None)

    def _query_event(self, event: Event) -> bool:
        return bool(event.native.done)

    def _wait_event(self, event: Event) -> None:
        event.native.synchronize()

    def _elapsed(self, start: Event, end: Event) -> float:
        return float(cp.cuda.get_elapsed_time(start.native, end.native)) / 1e3

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        return kernels.TABLE

    @property
    def graph_replay(self) -> Any:
        """The JIT's optional graph capability: runs of generated kernels captured into CUDA graphs and
        replayed with one launch (see :mod:`dsrt_cuda.graphs`)."""
        if self._graphs is None:
            from .graphs import CudaGraphs

            self._graphs = CudaGraphs(self.id, self._cp_device, self._translate_error)
        return self._graphs

    def fused_kernel(self, ir: Any) -> Any:
        """The JIT's optional code-generation capability: one CUDA C kernel (``cupy.RawKernel``) for an
        elementwise, reduction or GEMM-epilogue group in float32/64, float16 or bfloat16 (GEMMs
        float32/64), or ``None`` for other IR (see :mod:`dsrt_cuda.fusion`)."""
        from .fusion import CudaFusion

        with self._cp_device:
            return CudaFusion(self.info.compute_units)(ir)

    def _launch(self, kernel: str, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        with self._cp_device, stream.native:
            super()._launch(kernel, inputs, out, params, stream)

    def _translate_error(self, exc: BaseException, action: str) -> DsrtError:
        text = f"{self.id}: {action} failed: {type(exc).__name__}: {exc}"
        if isinstance(exc, cp.cuda.memory.OutOfMemoryError):
            return OutOfMemoryError(device=self.id, requested=getattr(exc, "size", 0),
                                    capacity=self.info.memory_bytes, detail=str(exc))
        lowered = str(exc).lower()
        if any(s in lowered for s in ("illegal address", "launch failure", "ecc", "device-side assert", "lost")):
            return DeviceLostError(text, device=self.id)
        if "kernel" in action:
            return KernelLaunchError(text, device=self.id)
        return DeviceError(text, device=self.id)

    # ------------------------------------------------------------------ user kernels (NVRTC)
    def _compile(self, source: str, lang: str, name: str, options: Sequence[str]) -> UserKernel:
        if self._compiler is None:
            from .compiler import NvrtcCompiler

            self._compiler = NvrtcCompiler(self)
        fn, hit = self._compiler.build(source, name, options)
        return UserKernel(name=name, lang=lang, device=self, native=fn, cache_hit=hit)

    def _launch_user(self, kernel: UserKernel, args: Sequence[Any], options: Mapping[str, Any], stream: Stream) -> Any:
        grid, block = options.get("grid"), options.get("block")
        if grid is None or block is None:
            raise ShapeError(f"{self.id}: CUDA kernel '{kernel.name}' needs grid= and block= (tuples)")
        converted = []
        for arg in args:
            if isinstance(arg, Array):
                arg.allocation.touch()
                converted.append(cuda_view(arg))
            else:
                converted.append(arg)
        with self._cp_device:
            kernel.native(tuple(grid), tuple(block), tuple(converted), stream=stream.native,
                          shared_mem=int(options.get("shared_mem", 0)))
        return None

    # ------------------------------------------------------------------ DLPack / CUDA array interface
    def _export_dlpack(self, array: Array, stream: Any) -> Any:
        if array.dtype == dt.bfloat16:
            raise DeviceError(f"{self.id}: bfloat16 cannot be exported through CuPy's DLPack; cast first",
                              device=self.id)
        return cuda_view(array)

    def _import_dlpack(self, obj: Any) -> Array:
        native = cp.from_dlpack(obj) if hasattr(obj, "__dlpack__") else cp.asarray(obj)
        return self.wrap_cupy(native)

    def wrap_cupy(self, native: cp.ndarray) -> Array:
        """An Array over CuPy memory without copying; the Array keeps ``native`` alive."""
        if native.device.id != self.info.index:
            raise ShapeError(f"{self.id}: CuPy array lives on GPU {native.device.id}")
        if not native.flags.c_contiguous:
            native = cp.ascontiguousarray(native)
        alloc = Allocation(self, int(native.data.ptr), 0, int(native.nbytes), None, pool_data=native)
        arr = Array(self, tuple(native.shape), dt.as_dtype(native.dtype), alloc)
        arr.native, arr.native_generation = native, alloc.generation
        return arr

    def cuda_array_interface(self, array: Array) -> dict[str, Any]:
        """``__cuda_array_interface__`` (version 3) of an Array on this GPU."""
        array.allocation.touch()
        return cuda_view(array).__cuda_array_interface__
