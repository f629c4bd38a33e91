"""Views of device arrays that collectives slice, and host access for transports between processes.

``segment(arr, start, stop)`` is a flat view of elements ``[start, stop)`` of a contiguous array with
its own :class:`~dsrt.memory.Allocation` record (not pooled; it keeps the parent allocation alive
through ``pool_data``) at byte offset 0, so ``Device.copy`` takes the backend's direct path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..array import Array
from ..errors import ShapeError
from ..memory import Allocation

__all__ = ["flat", "segment", "retype", "host_view", "HostStage"]


def flat(arr: Array) -> Array:
    """The array as 1-D (contiguous arrays only)."""
    if arr.ndim == 1 and arr.strides[0] == arr.dtype.itemsize:
        return arr
    if not arr.is_contiguous:
        raise ShapeError(f"collectives need contiguous arrays; got strides {arr.strides} on {arr.device.id}")
    return arr if arr.ndim == 1 else arr.reshape(-1)


def segment(arr: Array, start: int, stop: int) -> Array:
    """Elements ``[start, stop)`` of the flat contiguous ``arr``, as an array of its own (no copy)."""
    parent = arr.allocation
    parent.touch()
    size = arr.dtype.itemsize
    offset = parent.offset + arr.byte_offset + start * size
    alloc = Allocation(arr.device, parent.handle, offset, (stop - start) * size, None, parent.stream, pool_data=parent)
    return Array(arr.device, (stop - start,), arr.dtype, alloc)


def retype(arr: Array, dtype: np.dtype) -> Array:
    """The same bytes seen as another dtype of equal item size (bool as uint8)."""
    if dtype.itemsize != arr.dtype.itemsize:
        raise ShapeError(f"cannot view {arr.dtype} as {dtype}: item sizes differ")
    return Array(arr.device, arr.shape, dtype, arr.allocation, strides=arr.strides, byte_offset=arr.byte_offset)


def host_view(arr: Array) -> np.ndarray | None:
    """A numpy view of ``arr``'s memory when it lives in host memory (CPU backends); else ``None``."""
    alloc = arr.allocation
    alloc.touch()
    cached = arr.native
    if type(cached) is np.ndarray and arr.native_generation == alloc.generation:
        return cached  # a host backend's own numpy view of exactly this array
    handle: Any = alloc.handle
    if not isinstance(handle, np.ndarray):
        return None
    view = np.ndarray(arr.shape, arr.dtype, buffer=handle, offset=alloc.offset + arr.byte_offset, strides=arr.strides)
    if cached is None or type(cached) is np.ndarray:
        # The host backends' convention: _native is this numpy view, valid for _native_gen.
        arr.native = view
        arr.native_generation = alloc.generation
    return view


class HostStage:
    """Host memory for one device array while MPI works on it.

    ``array`` is a numpy view of the device memory when the device is host-resident, else a host copy
    (``load=True`` fills it); :meth:`store` writes a copy back to the device (a no-op for views).
    """

    __slots__ = ("source", "array", "is_view")

    def __init__(self, source: Array, *, load: bool = True) -> None:
        self.source = source
        view = host_view(source)
        self.is_view = view is not None
        if view is not None:
            self.array = view
        elif load:
            self.array = source.device.copy_to_host(source)
        else:
            self.array = np.empty(source.shape, source.dtype)

    def store(self) -> None:
        """Write the host copy back to the device (nothing to do for a view)."""
        if not self.is_view:
            self.source.device.copy_from_host(self.source, self.array)
