"""Host memory for devices whose data lives in ordinary RAM (the CPU, and simulated devices).

``HostMemory`` implements the device memory primitives over numpy buffers: raw allocations are 1-D
``uint8`` arrays aligned to :data:`dsrt.memory.ALIGNMENT` bytes, and copies are byte slices.
``host_view`` is the numpy view of an Array over such memory, cached on the Array until its
allocation moves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrt.array import Array
from dsrt.device import Stream
from dsrt.errors import OutOfMemoryError
from dsrt.memory import ALIGNMENT, Allocation

__all__ = ["HostMemory", "host_view"]


def host_view(a: Array) -> np.ndarray:
    """The numpy view of a host-resident array (cached until its allocation moves)."""
    alloc = a._alloc
    if a._native_gen == alloc.generation and a._native is not None:
        return a._native
    v = np.ndarray(a.shape, a.dtype, buffer=alloc.handle, offset=alloc.offset + a._byte_offset, strides=a.strides)
    a._native = v
    a._native_gen = alloc.generation
    return v


class HostMemory:
    """Mixin: the memory primitives of a device whose memory is host RAM (put before ``Device``)."""

    id: str
    info: Any

    def _allocate(self, nbytes: int) -> np.ndarray:
        try:
            raw = np.empty(nbytes + ALIGNMENT, np.uint8)
        except MemoryError:
            raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=self.info.memory_bytes,
                                   tried=["numpy.empty"]) from None
        start = (-raw.ctypes.data) % ALIGNMENT
        return raw[start:start + nbytes]

    def _free(self, handle: Any) -> None:
        return None  # numpy owns the buffer; it goes when the last view does

    def _copy_in(self, handle: np.ndarray, offset: int, src: np.ndarray, stream: Stream) -> None:
        flat = src.reshape(-1).view(np.uint8)
        handle[offset:offset + flat.size] = flat

    def _copy_out(self, handle: np.ndarray, offset: int, dst: np.ndarray, stream: Stream) -> None:
        flat = dst.reshape(-1).view(np.uint8)
        flat[...] = handle[offset:offset + flat.size]

    def _copy_between(self, dst: Allocation, src: Allocation, nbytes: int, stream: Stream) -> bool:
        if not isinstance(src.handle, np.ndarray):
            return False
        dst.handle[dst.offset:dst.offset + nbytes] = src.handle[src.offset:src.offset + nbytes]
        return True
