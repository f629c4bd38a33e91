"""``Array``: the handle users hold to data on a device.

An Array is a device, a shape, a dtype, byte strides and a pooled :class:`~dsrt.memory.Allocation`.
Several arrays may view one allocation (``reshape``); the allocation returns to its pool when the
last of them is gone. Arrays speak DLPack both ways: ``np.from_dlpack(arr)`` and
``dsrt.from_dlpack(tensor)`` share memory instead of copying where the memory allows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.dtypes as dt

from .errors import ConfigurationError, ShapeError

if TYPE_CHECKING:
    from .device import Device, Stream
    from .memory import Allocation

__all__ = ["Array", "DLPACK_CPU", "DLPACK_CUDA", "DLPACK_OPENCL", "contiguous_strides", "fresh_array",
           "may_share_memory", "same_elements"]

DLPACK_CPU = 1
DLPACK_CUDA = 2
DLPACK_CUDA_HOST = 3
DLPACK_OPENCL = 4


def contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Byte strides of a C-contiguous array."""
    strides = []
    acc = itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


class Array:
    """``shape``/``dtype``/``strides`` (bytes) on ``device``, backed by ``allocation`` at ``byte_offset``.

    **The backend surface.** What a kernel needs from an Array is public and cheap (slots, or one
    property that reads a slot):

    ``allocation``
        The pooled :class:`~dsrt.memory.Allocation` holding the bytes (shared by views such as
        ``reshape``). Call ``allocation.touch()`` before reading a raw handle: it brings spilled bytes
        back and marks the allocation used.
    ``byte_offset``
        Bytes from the start of ``allocation`` to element 0 of this array.
    ``handle``
        The raw buffer handle the device's ``_allocate`` returned (a numpy buffer, a ``cl.Buffer``, a
        CUDA pointer...); ``None`` while the bytes are spilled (``touch()`` first).
    ``handle_offset``
        Bytes from the start of ``handle`` to element 0: ``allocation.offset + byte_offset``.
    ``generation``
        The allocation's ``generation``. The pool may move an allocation's bytes (compaction,
        spilling to a host tier) and then bumps it; any address or view derived from ``handle`` is
        stale from then on. Launches and collectives keep their operands from moving while they run
        (:data:`dsrt.memory.IN_USE`); code that holds an address longer must use
        :func:`dsrt.memory.in_use` or export the array.
    ``native`` / ``native_generation``
        A slot where the device's backend caches its own view of the data (a numpy view, a CuPy
        array...). The view is valid only while ``native_generation == allocation.generation``; a
        backend checks that before each use and rebuilds the view (storing both slots) otherwise.
        Only the array's own device's backend writes it; it is ``None`` until then.
    """

    __slots__ = ("device", "shape", "dtype", "strides", "allocation", "byte_offset", "native", "native_generation",
                 "__weakref__")

    def __init__(
        self,
        device: Device,
        shape: tuple[int, ...],
        dtype: np.dtype,
        alloc: Allocation,
        *,
        strides: tuple[int, ...] | None = None,
        byte_offset: int = 0,
    ) -> None:
        self.device = device
        self.shape = shape
        self.dtype = dtype
        self.strides = strides if strides is not None else contiguous_strides(shape, dtype.itemsize)
        self.allocation: Allocation = alloc
        self.byte_offset = byte_offset
        self.native: Any = None
        self.native_generation = -1

    # ------------------------------------------------------------------ backend surface
    @property
    def handle(self) -> Any:
        """The raw buffer handle of the allocation (``None`` while spilled: ``allocation.touch()`` first)."""
        return self.allocation.handle

    @property
    def handle_offset(self) -> int:
        """Bytes from the start of :attr:`handle` to element 0 (``allocation.offset + byte_offset``)."""
        return self.allocation.offset + self.byte_offset

    @property
    def generation(self) -> int:
        """The allocation's generation: it changes whenever the pool moves the bytes."""
        return self.allocation.generation

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of data (size times itemsize)."""
        return self.size * self.dtype.itemsize

    @property
    def is_contiguous(self) -> bool:
        return self.strides == contiguous_strides(self.shape, self.dtype.itemsize)

    # ------------------------------------------------------------------ data movement
    def numpy(self) -> np.ndarray:
        """A host copy of the contents (waits for pending work on the default stream)."""
        return self.device.copy_to_host(self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    def to(self, device: Device | str, *, stream: Stream | None = None) -> Array:
        """A copy on ``device`` (a Device or an id such as ``'opencl:0'``); self if already there."""
        if isinstance(device, str):
            resolve = self.device.resolve_device
            if resolve is None:
                raise ConfigurationError(
                    f"{self.device.id}: this device belongs to no runtime, so the id {device!r} cannot be resolved;"
                    " pass the Device itself")
            device = resolve(device)
        if device is self.device:
            return self
        out = device.empty(self.shape, self.dtype, stream=stream)
        device.copy(out, self, stream=stream)
        return out

    def copy(self) -> Array:
        """A new array with the same contents on the same device."""
        return self.device.launch("copy", self)

    def astype(self, dtype: Any) -> Array:
        """A converted copy (the ``cast`` kernel)."""
        return self.device.launch("cast", self, dtype=dt.as_dtype(dtype))

    def reshape(self, *shape: Any) -> Array:
        """A view with a new shape over the same allocation (contiguous arrays only)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        new = list(int(s) for s in shape)
        if new.count(-1) > 1:
            raise ShapeError("reshape: at most one dimension may be -1")
        if -1 in new:
            known = 1
            for s in new:
                if s != -1:
                    known *= s
            new[new.index(-1)] = self.size // known if known else 0
        if int(np.prod(new)) != self.size:
            raise ShapeError(f"reshape: cannot view {self.shape} ({self.size} elements) as {tuple(new)}")
        if not self.is_contiguous:
            raise ShapeError("reshape: only contiguous arrays can be viewed with a new shape")
        return Array(self.device, tuple(new), self.dtype, self.allocation, byte_offset=self.byte_offset)

    def release(self) -> None:
        """Give the memory back to the pool now (the array and its views become unusable)."""
        self.allocation.release()

    # ------------------------------------------------------------------ DLPack
    def __dlpack_device__(self) -> tuple[int, int]:
        code = self.device.info.dlpack_device_type
        if code is None:
            raise ConfigurationError(f"{self.device.id}: arrays on this device have no DLPack device type")
        return (code, self.device.info.index if code != DLPACK_CPU else 0)

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None, copy: Any = None) -> Any:
        self.allocation.touch()
        self.allocation.exported = True  # foreign code holds the address now: never move or spill it
        exporter = self.device._export_dlpack(self, stream)
        kwargs: dict[str, Any] = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        if copy is not None:
            kwargs["copy"] = copy
        try:
            return exporter.__dlpack__(stream=stream, **kwargs)
        except TypeError:
            return exporter.__dlpack__(stream=stream)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """The CUDA array interface, for arrays on devices that offer it (AttributeError otherwise)."""
        provider = getattr(self.device, "cuda_array_interface", None)
        if provider is None:
            raise AttributeError(f"arrays on {self.device.id} have no __cuda_array_interface__")
        self.allocation.touch()
        self.allocation.exported = True  # foreign code holds the address now: never move or spill it
        return provider(self)

    def __repr__(self) -> str:
        return f"dsrt.Array(shape={self.shape}, dtype={dt.dtype_name(self.dtype)}, device={self.device.id})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]


_new = object.__new__


def fresh_array(device: Device, shape: tuple[int, ...], dtype: np.dtype, alloc: Allocation,
                strides: tuple[int, ...]) -> Array:
    """``Array(device, shape, dtype, alloc, strides=strides)`` at element 0, built without the call
    machinery of ``__init__`` (the allocation path of every launch). The caller has validated
    everything: ``shape`` a tuple of ints, ``dtype`` a numpy dtype, ``strides`` its byte strides."""
    a = _new(Array)
    a.device = device
    a.shape = shape
    a.dtype = dtype
    a.strides = strides
    a.allocation = alloc
    a.byte_offset = 0
    a.native = None
    a.native_generation = -1
    return a


def may_share_memory(a: Array, b: Array) -> bool:
    """Whether ``a`` and ``b`` may hold some of the same bytes: one allocation (views such as
    ``reshape`` share theirs), or two allocations in one device buffer whose byte ranges
    (``offset``, ``nbytes``) intersect. Conservative: two views of one allocation count even where
    their elements do not meet. A spilled allocation has no buffer; two spilled ones compare their
    ranges, which can only say yes where it need not."""
    x, y = a.allocation, b.allocation
    if x is y:
        return True
    hx, hy = x.handle, y.handle
    if hx is not hy and not (type(hx) is int and type(hy) is int and hx == hy):
        return False
    return bool(x.offset < y.offset + y.nbytes and y.offset < x.offset + x.nbytes)


def same_elements(a: Array, b: Array) -> bool:
    """Whether ``a`` and ``b`` are the same elements of the same memory, laid out alike (so an
    elementwise kernel may read one while it writes the other)."""
    return (a.allocation is b.allocation and a.byte_offset == b.byte_offset and a.shape == b.shape
            and a.strides == b.strides and a.dtype == b.dtype)
