"""NCCL as the collectives transport for CUDA devices inside one process (``cupy.cuda.nccl``).

One NCCL communicator per GPU, created together with ``NcclCommunicator.initAll``; every collective
is a ``groupStart``/``groupEnd`` block with one call per GPU on that device's dsrt stream. Segments of
unequal size (``bounds``) run as per-segment ``reduce``/``broadcast`` calls, so no padding is needed.
Deterministic mode is delegated to the in-process transport: NCCL does not fix its reduction order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.collective.base import IntraTransport
from dsrt.errors import CollectiveError

__all__ = ["NcclTransport", "nccl_applies", "NCCL_OPS"]

#: dsrt reduction kernel -> NCCL op code (ncclSum, ncclProd, ncclMax, ncclMin).
NCCL_OPS = {"add": 0, "mul": 1, "maximum": 2, "minimum": 3}
#: dtype -> ncclDataType_t.
_NCCL_TYPES = {dt.int8: 0, dt.uint8: 1, dt.int32: 2, dt.int64: 4, dt.float16: 6, dt.float32: 7, dt.float64: 8,
               dt.bfloat16: 9}


def nccl_applies(devices: Sequence[Any]) -> bool:
    """True for two or more distinct CUDA GPUs (DLPack device type 2) when NCCL can be imported."""
    if len(devices) < 2 or any(d.info.dlpack_device_type != 2 for d in devices):
        return False
    if len({d.info.index for d in devices}) != len(devices):
        return False
    try:
        from cupy.cuda import nccl

        return bool(nccl.available) if hasattr(nccl, "available") else True
    except ImportError:
        return False


def _ptr(a: Array) -> int:
    a.allocation.touch()
    return int(a.handle + a.handle_offset)


class NcclTransport(IntraTransport):
    """Intra-process collectives over NCCL (same methods as the in-process transport)."""

    name = "nccl"

    def __init__(self, devices: Sequence[Any]) -> None:
        from cupy.cuda import nccl

        from dsrt.collective.local import InProcessTransport

        self._nccl = nccl
        self.devices = list(devices)
        self._comms = nccl.NcclCommunicator.initAll([d.info.index for d in self.devices])
        self._fallback = InProcessTransport()

    def _type(self, a: Array) -> int:
        code = _NCCL_TYPES.get(a.dtype)
        if code is None:
            raise CollectiveError(f"NCCL cannot reduce {dt.dtype_name(a.dtype)} (devices {[d.id for d in self.devices]})")
        return code

    def _each(self, bufs: Sequence[Array], call: Callable[[Any, Array, int], None]) -> None:
        """``call(comm, buffer, stream pointer)`` for every GPU, inside one NCCL group."""
        import cupy as cp

        self._nccl.groupStart()
        try:
            for comm, buf in zip(self._comms, bufs, strict=True):
                with cp.cuda.Device(buf.device.info.index):
                    call(comm, buf, buf.device.default_stream.native.ptr)
        finally:
            self._nccl.groupEnd()

    def all_reduce(self, bufs: Sequence[Array], kernel: str, *, algorithm: str = "auto",
                   deterministic: bool = False) -> str:
        if deterministic:
            return self._fallback.all_reduce(bufs, kernel, algorithm=algorithm, deterministic=True)
        op = NCCL_OPS[kernel]
        self._each(bufs, lambda c, b, s: c.allReduce(_ptr(b), _ptr(b), b.size, self._type(b), op, s))
        return "nccl"

    def reduce(self, bufs: Sequence[Array], root: int, kernel: str, *, deterministic: bool = False) -> None:
        if deterministic:
            self._fallback.reduce(bufs, root, kernel, deterministic=True)
            return
        op = NCCL_OPS[kernel]
        self._each(bufs, lambda c, b, s: c.reduce(_ptr(b), _ptr(b), b.size, self._type(b), op, root, s))

    def broadcast(self, bufs: Sequence[Array], root: int) -> None:
        self._each(bufs, lambda c, b, s: c.bcast(_ptr(b), b.size, self._type(b), root, s))

    def _segments(self, bounds: Sequence[int]) -> list[tuple[int, int, int]]:
        """``(owner, first element, element count)`` of every non-empty segment."""
        return [(j, bounds[j], bounds[j + 1] - bounds[j]) for j in range(len(bounds) - 1) if bounds[j + 1] > bounds[j]]

    def reduce_scatter(self, bufs: Sequence[Array], bounds: Sequence[int], kernel: str, *,
                       deterministic: bool = False) -> None:
        if deterministic:
            self._fallback.reduce_scatter(bufs, bounds, kernel, deterministic=True)
            return
        op = NCCL_OPS[kernel]
        for j, lo, n in self._segments(bounds):
            def call(c: Any, b: Array, s: int, j: int = j, lo: int = lo, n: int = n) -> None:
                p = _ptr(b) + lo * b.dtype.itemsize
                c.reduce(p, p, n, self._type(b), op, j, s)
            self._each(bufs, call)

    def all_gather(self, bufs: Sequence[Array], bounds: Sequence[int]) -> None:
        for j, lo, n in self._segments(bounds):
            def call(c: Any, b: Array, s: int, j: int = j, lo: int = lo, n: int = n) -> None:
                c.bcast(_ptr(b) + lo * b.dtype.itemsize, n, self._type(b), j, s)
            self._each(bufs, call)
