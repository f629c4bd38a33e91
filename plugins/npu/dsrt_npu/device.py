"""``NpuDevice``: one Ascend NPU through pyACL.

Memory: ``acl.rt.malloc`` under the dsrt pool (ACL rounds every request up to 32 bytes and adds 32;
the device accounts for that). Copies: ``acl.rt.memcpy`` for host transfers (pageable host memory),
``acl.rt.memcpy_async`` on the stream for device to device. Streams, events and elapsed time map to
ACL's. Every ACL return code is checked and mapped (see :mod:`dsrt_npu.acl_errors`).

Kernels: with torch_npu installed and an NPU visible to it, the standard set runs as torch
operations on zero-copy views of the same ACL memory (:mod:`dsrt_npu.torch_kernels`), and arrays
and torch tensors are exchanged without copies (:meth:`NpuDevice.to_torch`, :meth:`NpuDevice.from_torch`).
Without it, kernels are what CANN runs as single operators: ``copy`` (device-to-device copy),
``gemm`` in float16 (MatMul, then Muls/Axpy for alpha and beta) and ``qgemm_int8`` (MatMul int8 ->
int32). Every other kernel/dtype pair is declared unsupported, not faked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.device import Device, DeviceInfo, Event, KernelImpl, Stream
from dsrt.errors import ConfigurationError, ShapeError
from dsrt.memory import Allocation

from .acl_errors import check
from .ops import ACL_DTYPES, execute
from .torch_kernels import TorchNpu, find_torch_npu, torch_kernel_table

__all__ = ["NpuDevice", "acl_allocation_size"]

ACL_MEM_MALLOC_HUGE_FIRST = 0
ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST, ACL_MEMCPY_DEVICE_TO_DEVICE = 1, 2, 3
ACL_HBM_MEM = 1
ACL_EVENT_RECORDED_STATUS_COMPLETE = 1


def acl_allocation_size(nbytes: int) -> int:
    """Bytes ACL really reserves for a request of ``nbytes``: round up to 32, then add 32."""
    return ((max(nbytes, 1) + 31) // 32) * 32 + 32


class NpuDevice(Device):
    """One Ascend NPU (``npu:N``); owns its ACL context and streams.

    ``torch``: the torch module to run kernels through (torch_npu loaded), ``None`` for ACL single
    operators only, or ``"auto"`` to use torch_npu when it imports and sees an NPU.
    """

    def __init__(self, acl: Any, index: int, torch: Any = "auto") -> None:
        self.acl = acl
        self._index = index
        reason = "not asked for"
        if isinstance(torch, str):
            torch, reason = find_torch_npu()
        self.torch_npu: TorchNpu | None = None if torch is None else TorchNpu(torch, index)
        check(acl.rt.set_device(index), "acl.rt.set_device", device=f"npu:{index}")
        self.context, ret = acl.rt.create_context(index)
        check(ret, "acl.rt.create_context", device=f"npu:{index}")
        free, total, ret = acl.rt.get_mem_info(ACL_HBM_MEM)
        check(ret, "acl.rt.get_mem_info", device=f"npu:{index}")
        soc = acl.get_soc_name() if hasattr(acl, "get_soc_name") else "Ascend"
        info = DeviceInfo(
            id=f"npu:{index}", backend="npu", index=index, name=str(soc), vendor="Huawei",
            memory_bytes=int(total), compute_units=1, dtypes=frozenset(dt.dtype_name(d) for d in ACL_DTYPES),
            peak_flops=0.0, memory_bandwidth=0.0, synchronous=False, host_visible=False,
            properties={"free_bytes_at_probe": int(free),
                        "kernel_path": "torch_npu" if self.torch_npu else f"acl.op single operators ({reason})"},
        )
        self._reserved_by_acl = 0
        super().__init__(info)

    def _bind(self) -> None:
        check(self.acl.rt.set_context(self.context), "acl.rt.set_context", device=self.id)

    # ------------------------------------------------------------------ memory
    def _allocate(self, nbytes: int) -> int:
        self._bind()
        ptr, ret = self.acl.rt.malloc(max(nbytes, 1), ACL_MEM_MALLOC_HUGE_FIRST)
        check(ret, "acl.rt.malloc", device=self.id, requested=nbytes, capacity=self.info.memory_bytes)
        self._reserved_by_acl += acl_allocation_size(nbytes)
        return int(ptr)

    def _fence(self) -> None:
        """Wait for queued torch work before ACL reads, writes or frees the memory it may use."""
        if self.torch_npu is not None and self.torch_npu.dirty:
            self.torch_npu.fence()

    def _free(self, handle: int) -> None:
        self._fence()
        self._bind()
        check(self.acl.rt.free(handle), "acl.rt.free", device=self.id)

    def _copy_in(self, handle: int, offset: int, src: np.ndarray, stream: Stream) -> None:
        self._fence()
        self._bind()
        ret = self.acl.rt.memcpy(handle + offset, src.nbytes, src.ctypes.data, src.nbytes, ACL_MEMCPY_HOST_TO_DEVICE)
        check(ret, "acl.rt.memcpy (host to device)", device=self.id)

    def _copy_out(self, handle: int, offset: int, dst: np.ndarray, stream: Stream) -> None:
        self._fence()
        self._bind()
        # Work queued on the stream must land before the host reads.
        check(self.acl.rt.synchronize_stream(stream.native), "acl.rt.synchronize_stream", device=self.id)
        ret = self.acl.rt.memcpy(dst.ctypes.data, dst.nbytes, handle + offset, dst.nbytes, ACL_MEMCPY_DEVICE_TO_HOST)
        check(ret, "acl.rt.memcpy (device to host)", device=self.id)

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        if src_device is not self:
            return False
        self._fence()
        self._bind()
        ret = self.acl.rt.memcpy_async(dst_handle + dst_offset, nbytes, src_handle + src_offset, nbytes,
                                       ACL_MEMCPY_DEVICE_TO_DEVICE, stream.native)
        check(ret, "acl.rt.memcpy_async (device to device)", device=self.id)
        return True

    # ------------------------------------------------------------------ streams and events
    def _create_stream(self, name: str = "") -> Stream:
        self._bind()
        native, ret = self.acl.rt.create_stream()
        check(ret, "acl.rt.create_stream", device=self.id)
        return Stream(self, native, name)

    def _synchronize(self, stream: Stream) -> None:
        self._fence()
        self._bind()
        check(self.acl.rt.synchronize_stream(stream.native), "acl.rt.synchronize_stream", device=self.id)

    def _record_event(self, stream: Stream) -> Event:
        self._fence()
        self._bind()
        event, ret = self.acl.rt.create_event()
        check(ret, "acl.rt.create_event", device=self.id)
        check(self.acl.rt.record_event(event, stream.native), "acl.rt.record_event", device=self.id)
        return Event(stream, event, None)

    def _query_event(self, event: Event) -> bool:
        status, ret = self.acl.rt.query_event_status(event.native)
        check(ret, "acl.rt.query_event_status", device=self.id)
        return int(status) == ACL_EVENT_RECORDED_STATUS_COMPLETE

    def _wait_event(self, event: Event) -> None:
        check(self.acl.rt.synchronize_event(event.native), "acl.rt.synchronize_event", device=self.id)

    def _elapsed(self, start: Event, end: Event) -> float:
        ms, ret = self.acl.rt.event_elapsed_time(start.native, end.native)
        check(ret, "acl.rt.event_elapsed_time", device=self.id)
        return float(ms) / 1e3

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        if self.torch_npu is not None:
            return torch_kernel_table(self.torch_npu, self._ptr, self._drain_acl_stream)
        return {
            "copy": (frozenset(dt.dtype_name(d) for d in ACL_DTYPES), self._k_copy),
            "gemm": (frozenset({"float16"}), self._k_gemm),
            "qgemm_int8": (frozenset({"int8"}), self._k_qgemm),
        }

    def _drain_acl_stream(self, stream: Stream) -> None:
        """Copies queued on dsrt's ACL stream land before torch (on its own stream) reads the memory."""
        check(self.acl.rt.synchronize_stream(stream.native), "acl.rt.synchronize_stream", device=self.id)

    # ------------------------------------------------------------------ torch exchange
    def to_torch(self, a: Array) -> Any:
        """``a`` as a torch NPU tensor over the same memory (no copy).

        The tensor borrows the bytes: keep ``a`` alive while the tensor is in use. Work queued on
        dsrt's stream for ``a`` is finished first.
        """
        bridge = self._need_torch("to_torch")
        a.allocation.touch()
        a.allocation.exported = True  # torch holds the address now: the pool never moves or spills it
        self._drain_acl_stream(a.allocation.stream or self.default_stream)
        bridge.dirty = True  # the caller's torch work must land before ACL touches the bytes again
        return bridge.view(a, self._ptr(a))

    def from_torch(self, tensor: Any) -> Array:
        """A dsrt array over a torch NPU tensor's memory (no copy); the array keeps the tensor alive."""
        bridge = self._need_torch("from_torch")
        if tensor.device.type != bridge.device.type or tensor.device.index not in (None, bridge.device.index):
            raise ShapeError(f"{self.id}: from_torch needs a tensor on {bridge.device}, got one on {tensor.device}")
        np_dtype = next((d for d, t in bridge._dtypes.items() if t == tensor.dtype), None)
        if np_dtype is None:
            raise ShapeError(f"{self.id}: torch dtype {tensor.dtype} has no dsrt equivalent here")
        item = tensor.element_size()
        alloc = Allocation(self, int(tensor.data_ptr()), 0, tensor.untyped_storage().nbytes()
                           - tensor.storage_offset() * item, None, self.default_stream, pool_data=tensor)
        bridge.dirty = True  # torch may still be writing it
        return Array(self, tuple(tensor.shape), np_dtype, alloc, strides=tuple(s * item for s in tensor.stride()))

    def _need_torch(self, what: str) -> TorchNpu:
        if self.torch_npu is None:
            raise ConfigurationError(f"{self.id}: {what} needs torch_npu ({self.info.properties['kernel_path']})")
        return self.torch_npu

    def _ptr(self, a: Array) -> int:
        return int(a.handle + a.handle_offset)

    def _operand(self, a: Array) -> tuple[int, np.dtype, Sequence[int]]:
        return self._ptr(a), a.dtype, a.shape

    def _k_copy(self, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        x = inputs[0]
        ret = self.acl.rt.memcpy_async(self._ptr(out), out.nbytes, self._ptr(x), x.nbytes,
                                       ACL_MEMCPY_DEVICE_TO_DEVICE, stream.native)
        check(ret, "acl.rt.memcpy_async (device to device)", device=self.id)

    def _k_gemm(self, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        a, b = inputs[0], inputs[1]
        attrs = {"transpose_x1": bool(params["trans_a"]), "transpose_x2": bool(params["trans_b"])}
        execute(self.acl, "MatMul", [self._operand(a), self._operand(b)], [self._operand(out)], attrs,
                stream.native, self.id)
        if params["alpha"] != 1:
            execute(self.acl, "Muls", [self._operand(out)], [self._operand(out)], {"value": float(params["alpha"])},
                    stream.native, self.id)
        if len(inputs) == 3 and params["beta"] != 0:
            execute(self.acl, "Axpy", [self._operand(out), self._operand(inputs[2])], [self._operand(out)],
                    {"alpha": float(params["beta"])}, stream.native, self.id)

    def _k_qgemm(self, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        execute(self.acl, "MatMul", [self._operand(inputs[0]), self._operand(inputs[1])], [self._operand(out)],
                {"transpose_x1": False, "transpose_x2": False}, stream.native, self.id)

    def _launch(self, kernel: str, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        self._bind()
        super()._launch(kernel, inputs, out, params, stream)

    def close(self) -> None:
        super().close()
        self.acl.rt.destroy_context(self.context)
        self.acl.rt.reset_device(self._index)
