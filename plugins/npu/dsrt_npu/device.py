"""``NpuDevice``: one Ascend NPU through pyACL.

Memory: ``acl.rt.malloc`` under the dsrt pool (ACL rounds every request up to 32 bytes and adds 32;
the device accounts for that). Copies: ``acl.rt.memcpy`` for host transfers (pageable host memory),
``acl.rt.memcpy_async`` on the stream for device to device. Streams, events and elapsed time map to
ACL's. Every ACL return code is checked and mapped (see :mod:`dsrt_npu.acl_errors`).

Kernels without torch_npu are what CANN runs as single operators: ``copy`` (device-to-device copy),
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
from dsrt.memory import Allocation

from .acl_errors import check
from .ops import ACL_DTYPES, execute

__all__ = ["NpuDevice", "acl_allocation_size"]

ACL_MEM_MALLOC_HUGE_FIRST = 0
ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST, ACL_MEMCPY_DEVICE_TO_DEVICE = 1, 2, 3
ACL_HBM_MEM = 1
ACL_EVENT_RECORDED_STATUS_COMPLETE = 1


def acl_allocation_size(nbytes: int) -> int:
    """Bytes ACL really reserves for a request of ``nbytes``: round up to 32, then add 32."""
    return ((max(nbytes, 1) + 31) // 32) * 32 + 32


class NpuDevice(Device):
    """One Ascend NPU (``npu:N``); owns its ACL context and streams."""

    def __init__(self, acl: Any, index: int) -> None:
        self.acl = acl
        self._index = index
        check(acl.rt.set_device(index), "acl.rt.set_device", device=f"npu:{index}")
        self.context, ret = acl.rt.create_context(index)
        check(ret, "acl.rt.create_context", device=f"npu:{index}")
        free, total, ret = acl.rt.get_mem_info(ACL_HBM_MEM)
        check(ret, "acl.rt.get_mem_info", device=f"npu:{index}")
        soc = acl.get_soc_name() if hasattr(acl, "get_soc_name") else "Ascend"
        info = DeviceInfo(
            id=f"npu:{index}", backend="npu", index=index, name=str(soc), vendor="Huawei",
            memory_bytes=int(total), compute_units=1, dtypes=frozenset(dt.dtype_name(d) for d in ACL_DTYPES),
            kernels={}, peak_flops=0.0, memory_bandwidth=0.0,
            properties={"free_bytes_at_probe": int(free), "kernel_path": "acl.op single operators"},
        )
        self._reserved_by_acl = 0
        super().__init__(info)
        object.__setattr__(self.info, "kernels", {k: frozenset(v) for k, (v, _f) in self.kernel_table().items()})

    def _bind(self) -> None:
        check(self.acl.rt.set_context(self.context), "acl.rt.set_context", device=self.id)

    # ------------------------------------------------------------------ memory
    def _allocate(self, nbytes: int) -> int:
        self._bind()
        ptr, ret = self.acl.rt.malloc(max(nbytes, 1), ACL_MEM_MALLOC_HUGE_FIRST)
        check(ret, "acl.rt.malloc", device=self.id, requested=nbytes, capacity=self.info.memory_bytes)
        self._reserved_by_acl += acl_allocation_size(nbytes)
        return int(ptr)

    def _free(self, handle: int) -> None:
        self._bind()
        check(self.acl.rt.free(handle), "acl.rt.free", device=self.id)

    def _copy_in(self, handle: int, offset: int, src: np.ndarray, stream: Stream) -> None:
        self._bind()
        ret = self.acl.rt.memcpy(handle + offset, src.nbytes, src.ctypes.data, src.nbytes, ACL_MEMCPY_HOST_TO_DEVICE)
        check(ret, "acl.rt.memcpy (host to device)", device=self.id)

    def _copy_out(self, handle: int, offset: int, dst: np.ndarray, stream: Stream) -> None:
        self._bind()
        # Work queued on the stream must land before the host reads.
        check(self.acl.rt.synchronize_stream(stream.native), "acl.rt.synchronize_stream", device=self.id)
        ret = self.acl.rt.memcpy(dst.ctypes.data, dst.nbytes, handle + offset, dst.nbytes, ACL_MEMCPY_DEVICE_TO_HOST)
        check(ret, "acl.rt.memcpy (device to host)", device=self.id)

    def _copy_between(self, dst: Allocation, src: Allocation, nbytes: int, stream: Stream) -> bool:
        if src.device is not self:
            return False
        self._bind()
        ret = self.acl.rt.memcpy_async(dst.handle + dst.offset, nbytes, src.handle + src.offset, nbytes,
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
        self._bind()
        check(self.acl.rt.synchronize_stream(stream.native), "acl.rt.synchronize_stream", device=self.id)

    def _record_event(self, stream: Stream) -> Event:
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
        return {
            "copy": (frozenset(dt.dtype_name(d) for d in ACL_DTYPES), self._k_copy),
            "gemm": (frozenset({"float16"}), self._k_gemm),
            "qgemm_int8": (frozenset({"int8"}), self._k_qgemm),
        }

    def _ptr(self, a: Array) -> int:
        return int(a._alloc.handle + a._alloc.offset + a._byte_offset)

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
        self._impls[kernel](inputs, out, params, stream)

    def close(self) -> None:
        super().close()
        self.acl.rt.destroy_context(self.context)
        self.acl.rt.reset_device(self._index)
