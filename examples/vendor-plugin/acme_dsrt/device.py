"""``AcmeDevice``: memory in bytearrays addressed by integer handles; a few kernels.

A real vendor would call its driver where this calls numpy; the shape of the code is the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt import Array, Device, DeviceInfo, OutOfMemoryError, Stream

_FLOATS = frozenset({"float32", "float64"})
MEMORY_BYTES = 256 << 20


class AcmeDevice(Device):
    """The acme accelerator, emulated on the host. Owns its handle table."""

    def __init__(self, index: int) -> None:
        self._memory: dict[int, bytearray] = {}
        self._handles = itertools.count(1)
        self._used = 0
        info = DeviceInfo(
            id=f"acme:{index}", backend="acme", index=index, name="Acme A1 (emulated)", vendor="Acme",
            memory_bytes=MEMORY_BYTES, compute_units=1, dtypes=frozenset({"float32", "float64", "int32"}),
            peak_flops=1e9, memory_bandwidth=5e9, synchronous=True, host_visible=False,
        )
        super().__init__(info)  # info.kernels comes from kernel_table()

    # memory primitives: handles are integers into a table of bytearrays
    def _allocate(self, nbytes: int) -> int:
        if self._used + nbytes > MEMORY_BYTES:
            raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=MEMORY_BYTES,
                                   largest_free=MEMORY_BYTES - self._used, tried=["acme driver allocation"])
        handle = next(self._handles)
        self._memory[handle] = bytearray(nbytes)
        self._used += nbytes
        return handle

    def _free(self, handle: int) -> None:
        self._used -= len(self._memory.pop(handle))

    def _copy_in(self, handle: int, offset: int, src: np.ndarray, stream: Stream) -> None:
        self._memory[handle][offset:offset + src.nbytes] = src.tobytes()

    def _copy_out(self, handle: int, offset: int, dst: np.ndarray, stream: Stream) -> None:
        dst.reshape(-1).view(np.uint8)[...] = np.frombuffer(self._memory[handle], np.uint8, dst.nbytes, offset)

    def _view(self, a: Array) -> np.ndarray:
        return np.frombuffer(self._memory[a.handle], a.dtype, a.size, a.handle_offset).reshape(a.shape)

    # kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], Any]]:
        def binary(fn: Any) -> Any:
            def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
                fn(self._view(inputs[0]), self._view(inputs[1]), out=self._view(out))
            return impl

        def scale(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            np.multiply(self._view(inputs[0]), params["alpha"], out=self._view(out), casting="unsafe")

        def reduce_sum(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            self._view(out)[...] = np.sum(self._view(inputs[0]), axis=params["axis"])

        def copy(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            self._view(out)[...] = self._view(inputs[0])

        return {
            "add": (_FLOATS, binary(np.add)),
            "mul": (_FLOATS, binary(np.multiply)),
            "scale": (_FLOATS, scale),
            "reduce_sum": (_FLOATS, reduce_sum),
            "copy": (_FLOATS | {"int32"}, copy),
        }
