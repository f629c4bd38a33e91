"""CuPy views of dsrt arrays on a CUDA device.

Kept apart from :mod:`dsrt_cuda.device` so that the kernels (which the device imports) and the device
both import it without an import cycle.
"""

from __future__ import annotations

import cupy as cp
import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array

__all__ = ["cuda_view"]


def cuda_view(a: Array) -> cp.ndarray:
    """The CuPy view of a device-resident array (bf16 appears as uint16 words).

    Cached in ``a.native`` until the pool moves the allocation (``generation`` changes). The view's
    memory is ``UnownedMemory`` owned by the Allocation, so an exported view keeps the allocation out
    of the pool until the consumer lets go. The caller has touched the allocation (it is resident).
    """
    alloc = a.allocation
    native = a.native
    if a.native_generation == alloc.generation and native is not None:
        return native
    storage = np.dtype(np.uint16) if a.dtype == dt.bfloat16 else a.dtype
    ptr = alloc.handle + alloc.offset + a.byte_offset
    mem = cp.cuda.UnownedMemory(ptr, max(a.nbytes, 1), alloc, a.device.info.index)
    v = cp.ndarray(a.shape, storage, cp.cuda.MemoryPointer(mem, 0), strides=a.strides)
    a.native, a.native_generation = v, alloc.generation
    return v
