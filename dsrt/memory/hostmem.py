"""Host memory for devices whose data lives in ordinary RAM (the CPU, simulated devices, any backend).

``HostMemory`` implements a device's memory primitives over numpy buffers: raw allocations are 1-D
``uint8`` arrays aligned to :data:`dsrt.memory.ALIGNMENT` bytes, owned by numpy (a buffer goes when
its last view does), and copies are byte slices run in the calling thread. A device built on it
declares ``host_visible=True`` in its :class:`~dsrt.device.DeviceInfo`.

``host_view`` is the numpy view of an Array over such memory, cached in the Array's ``native`` slot
until the pool moves its allocation (``generation`` changes).

This module sits in the memory layer: it imports nothing from ``dsrt.device`` or ``dsrt.array`` at
run time (they only appear in annotations), so any backend may use it without importing another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OutOfMemoryError
from .base import ALIGNMENT
from .blocks import Block

if TYPE_CHECKING:
    from ..array import Array
    from ..device import Device, Stream

__all__ = ["HostMemory", "host_view"]


def host_view(a: Array) -> np.ndarray:
    """The numpy view of ``a``, an array on a host-memory device (cached until its allocation moves).

    Called on the launching thread by kernels, typically once per operand per launch; the cache makes
    a repeated call two slot reads and a comparison, and a fresh array in a block that last held an
    array of the same dtype and shape reuses that array's view (cached on the pool's block). The view
    shares memory with the device buffer; treat its metadata as read-only (never assign ``.shape``,
    ``.strides`` or flags in place).
    """
    alloc = a.allocation
    native = a.native
    if a.native_generation == alloc.generation and native is not None:
        return native
    shape, dtype, strides = a.shape, a.dtype, a.strides
    offset = alloc.offset + a.byte_offset
    handle = alloc.handle
    block = alloc.pool_data
    # A fresh array in a block reused for the same signature (the quick cache makes this the common
    # case of an allocating launch) takes the view the block's previous tenant made: it describes
    # the same bytes the same way. (So a caller must not change a view's shape, strides or flags
    # in place; reshaping returns a new view and is fine.)
    cached = block.host_view if type(block) is Block else None
    if (cached is not None and cached[0] is handle and cached[1] == offset and cached[2] is dtype
            and cached[3] == shape and cached[4] == strides):
        v = cached[5]
    else:
        if len(shape) == 1 and strides[0] == dtype.itemsize:  # the common case, at a third of the cost
            v = np.frombuffer(handle, dtype, shape[0], offset)
        else:
            v = np.ndarray(shape, dtype, buffer=handle, offset=offset, strides=strides)
        if type(block) is Block:
            block.host_view = (handle, offset, dtype, shape, strides, v)
    a.native = v
    a.native_generation = alloc.generation
    return v


class HostMemory:
    """Mixin: the memory primitives of a device whose memory is host RAM (list it before ``Device``).

    Sizes and offsets are bytes. ``_allocate`` raises :class:`~dsrt.errors.OutOfMemoryError` when
    numpy cannot get the memory; ``_free`` does nothing (numpy owns the buffer).
    """

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

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        """Copy ``nbytes`` bytes between host buffers; ``False`` when ``src_handle`` is not one."""
        if not isinstance(src_handle, np.ndarray):
            return False
        dst_handle[dst_offset:dst_offset + nbytes] = src_handle[src_offset:src_offset + nbytes]
        return True
