"""The device contract: what a backend implements, and what every device does the same way.

A backend subclasses :class:`Device` and implements the underscored primitives:

=====================  ============================================================================
``_allocate(nbytes)``  reserve ``nbytes`` bytes on the device; return a raw handle
``_free(handle)``      give a raw handle back
``_copy_in``           host bytes -> ``(handle, offset)``
``_copy_out``          ``(handle, offset)`` -> host bytes
``_copy_between``      device-to-device copy on raw handles, where the backend can (see below)
``kernel_table()``     ``{kernel name: (dtype names, implementation)}``; or override ``_launch``
``_synchronize``       wait for all work queued on a stream
=====================  ============================================================================

``_copy_between(dst_handle, dst_offset, src_handle, src_offset, nbytes, stream, src_device)`` copies
``nbytes`` bytes from ``src_handle`` (a raw handle of ``src_device``, which may be this device or
another) at byte ``src_offset`` to this device's ``dst_handle`` at byte ``dst_offset``, ordered on
``stream`` (of this device); it returns ``False`` when the backend cannot reach ``src_device``
directly (the caller then stages through host memory). The caller keeps both allocations from moving
(``dsrt.memory.in_use``) while it runs.

The pool reaches the memory primitives only through :attr:`Device.allocator` (a
:class:`dsrt.memory.allocator.Allocator` adapted from them, which translates vendor errors once).

Optional: ``_create_stream``/``_record_event`` (asynchronous backends), ``_compile`` (user kernels),
``_import_dlpack``/``_export_dlpack`` (zero-copy exchange), ``_translate_error`` (vendor errors), and
for the JIT (found with ``getattr``, see docs/jit.md) ``fused_kernel(ir)`` (generated kernels) and
``graph_replay`` (runs of steps captured once and replayed as one device graph, :mod:`dsrt.jit.replay`).

The public methods (:meth:`Device.launch`, :meth:`Device.empty`, :meth:`Device.asarray`, copies)
validate arguments, turn vendor exceptions into :mod:`dsrt.errors` with the device and sizes in the
message, and record trace events, once, for every backend. Sizes are bytes, times seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.dtypes as dt

from .array import contiguous_strides, may_share_memory, same_elements
from .array import fresh_array as _fresh_array
from .errors import (
    ConfigurationError,
    DeviceError,
    DsrtError,
    KernelLaunchError,
    ShapeError,
    UnsupportedKernelError,
    format_bytes,
)
from .kernels import KERNELS, get_kernel
from .memory import _use_clock
from .memory.allocator import Allocator
from .memory.in_use import IN_USE, in_use
from .memory.pool import fast_paths_enabled

if TYPE_CHECKING:
    from .array import Array
    from .memory import MemoryPool
    from .tracing import Tracer

__all__ = [
    "DeviceInfo",
    "Device",
    "Stream",
    "Event",
    "KernelImpl",
    "UserKernel",
    "current_device",
]

#: ``impl(inputs, out, params, stream)``: run one kernel; ``out`` is preallocated.
KernelImpl = Callable[[Sequence["Array"], "Array", Mapping[str, Any], "Stream"], None]


@dataclass(frozen=True)
class DeviceInfo:
    """Capabilities of one device, as data the scheduler and the CLI read.

    ``memory_bytes``: device memory in bytes. ``peak_flops``: estimated peak float32 operations per
    second *on this host, by the wall clock* (what placement predicts with; for a simulated device,
    the speed of simulating it here). ``modelled_peak_flops``: a simulated device's modelled chip
    throughput (operations per second), reported and used by the virtual clock only (``None`` for
    real devices). ``memory_bandwidth``: estimated bytes per second. ``kernels``: kernel name -> dtype names
    it runs; on a :class:`Device` this is derived from its kernel table (:meth:`Device.kernel_table`
    and :meth:`Device.add_kernel`), so a backend leaves it empty. ``precision_bits``: effective bits
    of result precision for analog or noisy simulated devices (``None``: exact to the dtype).
    ``simulated``: the device is a software model of hardware. ``synchronous``: every launch and copy
    has finished when it returns, so recorded events are always complete (the pool then reuses freed
    blocks at once); ``False``, the safe default, for a device that queues work. ``host_visible``: its
    raw allocations are host memory the CPU reads directly (1-D ``uint8`` numpy buffers, see
    :mod:`dsrt.memory.hostmem`). ``dlpack_device_type``: the DLPack device code of its
    memory (1 = CPU, 2 = CUDA, 4 = OpenCL) or ``None``. ``properties``: anything else, free-form;
    by convention ``properties["hardware"]`` names the physical hardware it runs on, so devices that
    report the same value share silicon (``"host-cpu"`` for the CPU and for CPU OpenCL devices).
    """

    id: str
    backend: str
    index: int
    name: str
    vendor: str = ""
    memory_bytes: int = 0
    compute_units: int = 1
    dtypes: frozenset[str] = frozenset()
    kernels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    peak_flops: float = 0.0
    memory_bandwidth: float = 0.0
    simulated: bool = False
    precision_bits: float | None = None
    modelled_peak_flops: float | None = None
    synchronous: bool = False
    host_visible: bool = False
    languages: frozenset[str] = frozenset()
    dlpack_device_type: int | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def supports(self, kernel: str, dtype: Any = None) -> bool:
        """True if this device runs ``kernel`` (for ``dtype``, when given)."""
        names = self.kernels.get(kernel)
        return names is not None and (dtype is None or dt.dtype_name(dtype) in names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sets become sorted lists)."""
        return {
            "id": self.id,
            "backend": self.backend,
            "index": self.index,
            "name": self.name,
            "vendor": self.vendor,
            "memory_bytes": self.memory_bytes,
            "compute_units": self.compute_units,
            "dtypes": sorted(self.dtypes),
            "kernels": {k: sorted(v) for k, v in sorted(self.kernels.items())},
            "peak_flops": self.peak_flops,
            "memory_bandwidth": self.memory_bandwidth,
            "simulated": self.simulated,
            "precision_bits": self.precision_bits,
            "modelled_peak_flops": self.modelled_peak_flops,
            "synchronous": self.synchronous,
            "host_visible": self.host_visible,
            "languages": sorted(self.languages),
            "properties": {k: v for k, v in self.properties.items() if isinstance(v, (str, int, float, bool, type(None)))},
        }


class Event:
    """A point in a stream. Synchronous backends record events that are already complete.

    ``timestamp`` is the host ``perf_counter`` time (seconds) at which the point was reached, where
    known; backends with device timers override :meth:`elapsed_time`.
    """

    __slots__ = ("stream", "native", "timestamp")

    def __init__(self, stream: Stream, native: Any = None, timestamp: float | None = None) -> None:
        self.stream = stream
        self.native = native
        self.timestamp = time.perf_counter() if timestamp is None and native is None else timestamp

    def query(self) -> bool:
        """True once all work before this event has finished."""
        return self.stream.device._query_event(self)

    def synchronize(self) -> None:
        """Block until all work before this event has finished."""
        self.stream.device._wait_event(self)

    def elapsed_time(self, later: Event) -> float:
        """Seconds between this event and ``later`` (both must have completed)."""
        return self.stream.device._elapsed(self, later)


class Stream:
    """An ordered queue of work on one device. ``native`` is the backend's queue object."""

    __slots__ = ("device", "native", "name")

    def __init__(self, device: Device, native: Any = None, name: str = "") -> None:
        self.device = device
        self.native = native
        self.name = name

    def synchronize(self) -> None:
        """Block until every launch and copy queued on this stream has finished."""
        self.device.synchronize(self)

    def record_event(self) -> Event:
        """An event that completes when all work queued so far has finished."""
        return self.device._record_event(self)

    def __repr__(self) -> str:
        return f"<Stream {self.name or hex(id(self))} on {self.device.id}>"


@dataclass(frozen=True)
class UserKernel:
    """A kernel compiled from user source by ``Runtime.compile``; call ``launch`` to run it.

    ``native`` is the backend's compiled object. ``cache_hit`` says whether it came from the disk
    cache instead of the compiler.
    """

    name: str
    lang: str
    device: Device
    native: Any
    cache_hit: bool = False

    def launch(self, *args: Any, stream: Stream | None = None, **options: Any) -> Any:
        """Run with backend-specific arguments (arrays, scalars, global size...). Array arguments
        are listed in :data:`dsrt.memory.IN_USE` while the launch runs (no pool moves them)."""
        with in_use(a for a in args if hasattr(a, "allocation")):
            return self.device._launch_user(self, args, options, stream or self.device.default_stream)


_local = threading.local()

#: Set by :mod:`dsrt.jit` while some thread captures launches, else ``None`` (eager launches pay one
#: global test). Called after every array launch as ``(device, kernel, inputs, out, params, fresh)``
#: (``fresh``: ``out`` was allocated by the launch) and after every task launch with ``out=None``.
launch_observer: Callable[..., None] | None = None


def current_device() -> Device | None:
    """The device made current by ``with device:`` in this thread, or ``None``."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class Device:
    """Base class of every device. Subclasses pass their ``info`` to ``__init__`` and implement primitives.

    Ownership: the device owns its memory pool (created on first use) and its default stream.
    Capabilities are declared once: the kernel table. ``info.kernels`` is derived from it whenever
    ``info`` is set or a kernel is added, so ``dev.supports(k, d) == dev.info.supports(k, d)``. A
    backend that changes a measured figure later sets ``self.info = dataclasses.replace(self.info, ...)``.
    """

    _info: DeviceInfo

    def __init__(self, info: DeviceInfo) -> None:
        self._supported: dict[str, frozenset[np.dtype]] = {}
        self._kernel_names: dict[str, frozenset[str]] = {}
        self.info = info
        self.id = info.id
        self.tracer: Tracer | None = None
        # ``device id -> Device`` of the runtime that adopted this device (set by the runtime), so
        # ids given to arrays on it resolve in the same runtime; None for a device no runtime adopted.
        self.resolve_device: Callable[[str], Device] | None = None
        self._pool: MemoryPool | None = None
        self._pool_lock = threading.Lock()
        self.default_stream = self._create_stream("default")
        table = self.kernel_table()
        self._impls: dict[str, KernelImpl] = {}
        # (kernel, device/shape/dtype of each input[, (name, type, value) of each parameter]) ->
        # (out shape, out dtype, bound params, out bytes, out byte strides, impl or None); see launch
        self._signatures: dict[Any, tuple[Any, ...]] = {}
        # (shape, dtype) -> (bytes, contiguous byte strides) of launch outputs
        self._layouts: dict[tuple[tuple[int, ...], np.dtype], tuple[int, tuple[int, ...]]] = {}
        # empty()'s (shape, dtype) arguments -> (shape, dtype, bytes, byte strides)
        self._empties: dict[tuple[Any, Any], tuple[tuple[int, ...], np.dtype, int, tuple[int, ...]]] = {}
        for name, (dtype_names, impl) in table.items():
            self._register(name, dtype_names, impl)
        self.info = self._info

    @property
    def info(self) -> DeviceInfo:
        """What this device is and can do; ``kernels`` always mirrors the kernel table."""
        return self._info

    @info.setter
    def info(self, value: DeviceInfo) -> None:
        self._info = replace(value, kernels=dict(getattr(self, "_kernel_names", {})))

    @property
    def synchronous(self) -> bool:
        """True when every launch and copy has finished by the time it returns (``info.synchronous``)."""
        return self._info.synchronous

    # ------------------------------------------------------------------ primitives (backend)
    def _allocate(self, nbytes: int) -> Any:
        """Reserve ``nbytes`` bytes of device memory; return its raw handle (anything but ``None``).

        Called by the pool (through :attr:`allocator`) when it needs a new segment, with the pool's
        lock held, on the thread that is allocating (a user thread, a scheduler worker, a fetch of
        spilled bytes); it must not call back into the pool. Requests are large segments, not
        arrays. The pool owns the handle until it passes it to :meth:`_free`, once. Raise
        :class:`~dsrt.errors.OutOfMemoryError` (bytes requested and capacity) when the device has no
        room: the pool then frees its cache, spills, and retries. A ``MemoryError`` becomes one;
        other vendor exceptions go through :meth:`_translate_error`.
        """
        raise NotImplementedError

    def _free(self, handle: Any) -> None:
        """Give back a handle :meth:`_allocate` returned; called once per handle.

        Called by the pool (through :attr:`allocator`) when it trims an idle segment, with the pool's
        lock held: on the thread that is allocating, on the one calling ``empty_cache``/``trim``/
        :meth:`close`, or on the idle reaper thread (``dsrt-memory-reaper``). Nothing in the segment
        is live, and on an asynchronous device the work queued on it has finished. Vendor exceptions
        go through :meth:`_translate_error`.
        """
        raise NotImplementedError

    def _copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        """Copy the ``src.nbytes`` bytes of C-contiguous host array ``src`` to ``handle`` at byte
        ``offset``, ordered on ``stream``.

        Called on the caller's thread by :meth:`copy_from_host`/:meth:`asarray` and host-staged
        copies (the allocation held in place), and by the pool when it fetches spilled bytes (pool
        lock held; do not call back into the pool). ``src`` belongs to the caller and may be reused
        as soon as this returns: read it (or stage it) before returning. Vendor exceptions go
        through :meth:`_translate_error`.
        """
        raise NotImplementedError

    def _copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        """Copy ``dst.nbytes`` bytes from ``handle`` at byte ``offset`` into C-contiguous host array
        ``dst``, ordered on ``stream``.

        Called on the caller's thread by :meth:`copy_to_host` (the allocation held in place), and by
        the pool when it spills (pool lock held; do not call back into the pool). ``dst`` belongs to
        the caller, who calls :meth:`_synchronize` on ``stream`` before reading it, so a queuing
        device may return before the copy ends. Vendor exceptions go through :meth:`_translate_error`.
        """
        raise NotImplementedError

    def _copy_between(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        """Copy ``nbytes`` bytes from ``src_handle`` at byte ``src_offset`` (memory of ``src_device``,
        this device or another) to ``dst_handle`` at byte ``dst_offset`` (this device), ordered on
        ``stream``, without the host.

        Called by :meth:`copy` and by the pool's compaction (through :attr:`allocator`), on the
        calling thread, with both allocations held in place. Return ``False`` when this backend
        cannot reach ``src_device`` directly; the caller then stages the bytes through host memory.
        Vendor exceptions may propagate: the caller translates them.
        """
        return False

    def _copy_raw(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                  stream: Stream, src_device: Device) -> bool:
        """Call :meth:`_copy_between`, also for a backend still written against the old form
        ``_copy_between(dst: Allocation, src: Allocation, nbytes, stream)`` (given throwaway
        Allocation records; to be removed once every backend takes raw handles)."""
        if not _legacy_copy_between(type(self)):
            return self._copy_between(dst_handle, dst_offset, src_handle, src_offset, nbytes, stream, src_device)
        from .memory import Allocation

        dst = Allocation(self, dst_handle, dst_offset, nbytes, None)
        src = Allocation(src_device, src_handle, src_offset, nbytes, None)
        return bool(self._copy_between(dst, src, nbytes, stream))  # type: ignore[call-arg,arg-type]

    @property
    def allocator(self) -> Allocator:
        """The :class:`~dsrt.memory.allocator.Allocator` the pool uses: this device's memory
        primitives, adapted (created on first use). A backend with an allocator of its own
        overrides this property."""
        alloc = self.__dict__.get("_allocator")
        if alloc is None:
            alloc = self.__dict__["_allocator"] = _DeviceAllocator(self)
        return alloc

    def _synchronize(self, stream: Stream) -> None:
        """Block until everything queued on ``stream`` has finished. Synchronous backends need not
        override (this does nothing).

        Called from any thread: by :meth:`synchronize` and :meth:`Stream.synchronize`, after
        :meth:`_copy_out` in :meth:`copy_to_host`, and by the pool after a spill, fetch or move and
        before compacting (pool lock held; do not call back into the pool). Vendor exceptions go
        through :meth:`_translate_error`.
        """

    def _create_stream(self, name: str = "") -> Stream:
        """A new :class:`Stream` whose ``native`` is the backend's in-order queue (``None`` here).

        Called once by ``Device.__init__`` for :attr:`default_stream` (so whatever it needs must
        exist before ``super().__init__``), then by :meth:`create_stream` on the caller's thread.
        The device owns the queue; release it when the Stream goes away.
        """
        return Stream(self, None, name)

    def _record_event(self, stream: Stream) -> Event:
        """An :class:`Event` that completes when the work queued on ``stream`` so far has finished.

        Called by :meth:`Stream.record_event`, and by the pool when an allocation is freed on an
        asynchronous device, with the pool's lock held, on whichever thread dropped the last
        reference (a garbage-collector finaliser included): it must not block or allocate.
        Synchronous devices keep this default (an event already complete).
        """
        return Event(stream)

    def _query_event(self, event: Event) -> bool:
        """``True`` once the work before ``event`` has finished; never blocks.

        Called by :meth:`Event.query` and by the pool (lock held, any thread) to decide whether
        freed bytes may be reused on another stream.
        """
        return True

    def _wait_event(self, event: Event) -> None:
        """Block until ``event`` has completed.

        Called by :meth:`Event.synchronize` and by the pool before it returns a segment that queued
        work still uses (lock held; any thread, the idle reaper included).
        """
        return None

    def _elapsed(self, start: Event, end: Event) -> float:
        """Seconds between two completed events. Called by :meth:`Event.elapsed_time` on the
        caller's thread. Backends with device timers override this; the default uses the host
        timestamps and raises :class:`~dsrt.errors.DeviceError` for events that carry none."""
        if start.timestamp is None or end.timestamp is None:
            raise DeviceError("these events carry no timestamps", device=self.id)
        return end.timestamp - start.timestamp

    def kernel_table(self) -> Mapping[str, tuple[frozenset[str] | set[str], KernelImpl]]:
        """``{kernel name: (dtype names, impl)}`` this device implements: its one declaration of
        capabilities (``info.kernels`` is derived from it).

        Called once, by ``Device.__init__`` on the thread building the device (the probe), so
        whatever it uses must exist before ``super().__init__``. Every name must be a registered
        kernel and every dtype one it is defined for, else ``Device.__init__`` raises
        :class:`~dsrt.errors.ConfigurationError`. Each ``impl(inputs, out, params, stream)`` is
        called on the launching thread (a user thread or a scheduler worker) after validation,
        with ``params`` bound (defaults filled in), ``out`` allocated and every operand held in place
        (:data:`dsrt.memory.IN_USE`); the arrays belong to the caller. An asynchronous device may
        enqueue on ``stream`` and return. Vendor exceptions go through :meth:`_translate_error` and
        become :class:`~dsrt.errors.KernelLaunchError` unless a ``DeviceError``.
        """
        return {}

    def _launch(self, kernel: str, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        """Run a validated launch: by default the kernel table's implementation. A backend that
        dispatches itself overrides this; it is called exactly as a table implementation is (see
        :meth:`kernel_table`: launching thread, operands held, errors translated)."""
        self._impls[kernel](inputs, out, params, stream)

    def _compile(self, source: str, lang: str, name: str, options: Sequence[str]) -> UserKernel:
        """Build user kernel ``name`` from ``source`` in ``lang``; return a :class:`UserKernel`.

        Called by :meth:`compile` on the caller's thread, after ``lang`` was checked against
        ``info.languages``. Raise :class:`~dsrt.errors.KernelCompileError` with the compiler log on
        a build failure (not translated for you).
        """
        raise ConfigurationError(f"{self.id}: this device compiles no user kernels")

    def _launch_user(self, kernel: UserKernel, args: Sequence[Any], options: Mapping[str, Any], stream: Stream) -> Any:
        """Run a user kernel with backend-specific ``args`` and ``options`` on ``stream``.

        Called by :meth:`UserKernel.launch` on the caller's thread, with every Array argument held in
        place (:data:`dsrt.memory.IN_USE`) for the call. Errors are not translated for you: raise
        :class:`~dsrt.errors.ShapeError`, :class:`~dsrt.errors.ConfigurationError` or
        :class:`~dsrt.errors.KernelLaunchError` naming the device and the kernel.
        """
        raise ConfigurationError(f"{self.id}: this device runs no user kernels")

    def _export_dlpack(self, array: Array, stream: Any) -> Any:
        """An object with ``__dlpack__`` for ``array`` (DLPack's ``stream`` passed through).

        Called by ``Array.__dlpack__`` on the consumer's thread, after the allocation was touched
        (resident) and marked ``exported`` (never moved or spilled again). The capsule must keep
        ``array`` (or its allocation) alive as long as the consumer holds it. Raise
        :class:`~dsrt.errors.ConfigurationError` for a dtype that cannot cross.
        """
        raise ConfigurationError(f"{self.id}: arrays on this device cannot be exported through DLPack")

    def _import_dlpack(self, obj: Any) -> Array:
        """Wrap a DLPack producer's memory as an Array on this device, without copying where possible.

        Called by ``Runtime.from_dlpack`` on the caller's thread. The Array's
        :class:`~dsrt.memory.Allocation` has ``pool=None`` and keeps ``obj`` alive; it is never
        returned to a pool. Raise :class:`~dsrt.errors.ConfigurationError` when ``obj`` cannot be
        imported.
        """
        raise ConfigurationError(f"{self.id}: this device cannot import DLPack tensors")

    def _translate_error(self, exc: BaseException, action: str) -> DsrtError:
        """Return (do not raise) the dsrt error for vendor exception ``exc``; backends refine this.

        Called on the thread where a primitive or kernel raised something that is not a
        ``DsrtError``: by the public methods, by the allocator (pool lock held) and by launches.
        ``action`` says what failed, with sizes (``"copy of 4.0 KiB to device"``). Return the most
        precise subclass (:class:`~dsrt.errors.OutOfMemoryError`, ``DeviceLostError``,
        ``TransientDeviceError``, ``KernelLaunchError``, else ``DeviceError``) with the device id in
        its message.
        """
        return DeviceError(f"{self.id}: {action} failed: {type(exc).__name__}: {exc}", device=self.id)

    def modelled_cost(self) -> tuple[float, float] | None:
        """Simulated devices: the modelled chip time (seconds) and energy (joules) charged so far.

        Cumulative since the device was created; the scheduler reads it before and after each chunk
        (on the device's worker thread) to report what a chunk cost the modelled chip. Real devices
        return ``None``: their cost is the wall clock.
        """
        return None

    def close(self) -> None:
        """Release cached memory and backend resources. The device is unusable afterwards."""
        if self._pool is not None:
            self._pool.empty_cache()

    # ------------------------------------------------------------------ kernels
    def add_kernel(self, name: str, dtype_names: Any, impl: KernelImpl) -> None:
        """Add (or replace) the implementation of kernel ``name`` for ``dtype_names`` on this device.

        ``info`` is replaced by a copy whose ``kernels`` include it (holders of the old ``info`` keep a
        snapshot)."""
        self._register(name, dtype_names, impl)
        self.info = self._info

    def _register(self, name: str, dtype_names: Any, impl: KernelImpl) -> None:
        spec = get_kernel(name)
        wanted = frozenset(dt.dtype_name(d) for d in dtype_names)
        unknown = wanted - spec.dtypes if not spec.is_task else frozenset()
        if unknown:
            raise ConfigurationError(
                f"{self.id}: kernel '{name}' is not defined for {', '.join(sorted(unknown))}"
            )
        self._impls[name] = impl
        self._supported[name] = frozenset(dt.as_dtype(d) for d in wanted)
        self._kernel_names[name] = wanted
        self._signatures.clear()

    def supports(self, kernel: str, dtype: Any = None) -> bool:
        """True if ``kernel`` runs here (for ``dtype``, when given)."""
        found = self._supported.get(kernel)
        if found is None:
            return False
        return dtype is None or dt.as_dtype(dtype) in found

    # ------------------------------------------------------------------ memory
    @property
    def pool(self) -> MemoryPool:
        """This device's memory pool (created on first use)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from .memory import create_pool

                    self._pool = create_pool(self)
                pool = self._pool
        return pool

    @pool.setter
    def pool(self, value: MemoryPool) -> None:
        self._pool = value

    def empty(self, shape: Any, dtype: Any = "float32", *, stream: Stream | None = None) -> Array:
        """An uninitialised array on this device."""
        try:
            layout = self._empties.get((shape, dtype))
        except TypeError:  # a list as shape...: unhashable, not cached
            layout = None
        if layout is None:
            shp = _as_shape(shape)
            d = dt.as_dtype(dtype)
            layout = (shp, d, _prod(shp) * d.itemsize, contiguous_strides(shp, d.itemsize))
            if type(shape) in (int, tuple) and isinstance(dtype, (str, type, np.dtype)):
                if len(self._empties) >= 1024:
                    self._empties.clear()
                self._empties[(shape, dtype)] = layout
        return _fresh_array(self, layout[0], layout[1], self.pool.allocate(layout[2], stream), layout[3])

    def asarray(self, obj: Any, dtype: Any = None, *, stream: Stream | None = None) -> Array:
        """Copy host data (anything numpy accepts) onto this device: any layout and byte order,
        kept as its shape (a 0-d array stays 0-d) and converted to the native byte order."""
        src = np.asarray(obj, dtype=None if dtype is None else dt.as_dtype(dtype))
        d = dt.as_dtype(src.dtype)
        src = _c_order_native(src)
        arr = self.empty(src.shape, d, stream=stream)
        self.copy_from_host(arr, src, stream=stream)
        return arr

    def copy_from_host(self, dst: Array, src: np.ndarray, *, stream: Stream | None = None) -> None:
        """Copy host array ``src`` (same shape and dtype, any layout and byte order) into device array ``dst``."""
        src = _c_order_native(src)
        if tuple(src.shape) != dst.shape or src.dtype != dst.dtype:
            raise ShapeError(
                f"{self.id}: cannot copy host {src.dtype}{tuple(src.shape)} into {dst.dtype}{dst.shape}"
            )
        alloc = dst.allocation
        try:
            with in_use((alloc,)):  # no spill or compaction moves the bytes while they are written
                self._copy_in(alloc.handle, alloc.offset + dst.byte_offset, src, stream or self.default_stream)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._translate_error(exc, f"copy of {format_bytes(src.nbytes)} to device") from exc

    def copy_to_host(
        self, src: Array, *, stream: Stream | None = None, out: np.ndarray | None = None, start: int = 0
    ) -> np.ndarray:
        """The contents of ``src`` in host memory (waits for the copy).

        Without ``out``: a new numpy array of ``src``'s shape and dtype. With ``out`` (a C-contiguous
        host array the caller owns and may reuse between copies): bytes ``[start, start + out.nbytes)``
        of contiguous ``src`` are copied into it as they are, and ``out`` is returned.
        """
        if out is None:
            if start:
                raise ShapeError(f"{self.id}: copy_to_host(start={start}) needs an out buffer")
            out = np.empty(src.shape, src.dtype)
        elif not out.flags.c_contiguous or start < 0 or start + out.nbytes > src.nbytes:
            raise ShapeError(
                f"{self.id}: cannot copy bytes [{start}, {start + out.nbytes}) of a {format_bytes(src.nbytes)} array"
                f" into a{'' if out.flags.c_contiguous else ' non-contiguous'} host buffer of {format_bytes(out.nbytes)}"
            )
        alloc = src.allocation
        s = stream or self.default_stream
        try:
            with in_use((alloc,)):  # no spill or compaction moves the bytes while they are read
                self._copy_out(alloc.handle, alloc.offset + src.byte_offset + start, out, s)
                self._synchronize(s)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._translate_error(exc, f"copy of {format_bytes(out.nbytes)} to host") from exc
        return out

    def copy(self, dst: Array, src: Array, *, stream: Stream | None = None) -> None:
        """Copy ``src`` (on any device) into ``dst`` on this device; direct where the backend can."""
        if src.shape != dst.shape or src.dtype != dst.dtype:
            raise ShapeError(f"{self.id}: cannot copy {src.dtype}{src.shape} into {dst.dtype}{dst.shape}")
        s = stream or self.default_stream
        tracer = self.tracer
        t0 = time.perf_counter() if tracer is not None else 0.0
        direct = False
        if src.is_contiguous and dst.is_contiguous:
            sa, da = src.allocation, dst.allocation
            try:
                with in_use((sa, da)):  # neither moves while the device copies
                    direct = self._copy_raw(da.handle, da.offset + dst.byte_offset, sa.handle,
                                            sa.offset + src.byte_offset, src.nbytes, s, src.device)
            except DsrtError:
                raise
            except Exception as exc:
                raise self._translate_error(exc, f"copy of {format_bytes(src.nbytes)} from {src.device.id}") from exc
        if not direct:
            self.copy_from_host(dst, src.device.copy_to_host(src), stream=s)
        if tracer is not None:
            tracer.complete("copy", self.id, t0, time.perf_counter(), {
                "bytes": src.nbytes, "from": src.device.id, "direct": direct})

    # ------------------------------------------------------------------ launch
    def launch(
        self,
        kernel: str,
        *inputs: Array,
        out: Array | None = None,
        stream: Stream | None = None,
        **params: Any,
    ) -> Array:
        """Run ``kernel`` on ``inputs`` (arrays on this device); returns ``out`` (allocated if None).

        The first launch of a signature (kernel, device/shape/dtype of each input, and the names,
        types and values of hashable scalar parameters) binds the parameters, checks the inputs'
        device, infers the output and checks support (:meth:`_validate`); later launches of that
        signature look it up. Launches with unhashable parameters (a list, an array...) are
        validated every time. What depends on the call itself is checked on every launch: ``out``'s
        shape, dtype and device, and the operands' registration in :data:`dsrt.memory.IN_USE`.

        ``out`` may share memory with the inputs; the result is as if every input were read before
        ``out`` is written. An elementwise kernel (``KernelSpec.elementwise``) writing exactly over an
        input runs in place; any other overlap runs into a temporary that is then copied into ``out``
        (:meth:`_launch_through_temporary`), so no implementation ever sees it.
        """
        n = len(inputs)
        try:
            if n == 2:
                x, y = inputs
                sig: Any = (kernel, x.device, x.shape, x.dtype, y.device, y.shape, y.dtype)
            elif n == 1:
                x = inputs[0]
                sig = (kernel, x.device, x.shape, x.dtype)
            else:
                sig = (kernel, n, *[(a.device, a.shape, a.dtype) for a in inputs])
            if params:
                sig = _param_key(sig, params)
            entry = self._signatures.get(sig) if sig is not None else None
        except (AttributeError, TypeError):  # an input that is no array, an unhashable parameter
            sig = entry = None
        if entry is not None:
            # The key's parameter values equal the caller's and have the same types, but the
            # caller's own values are passed (0.0 and -0.0 are one key).
            bound = {**entry[2], **params} if params else entry[2]
        else:
            entry = self._validate(kernel, inputs, params, sig)
            bound = entry[2]
            if entry[0] is None:  # a task kernel: its result is no array
                return self._launch_task(kernel, inputs, bound, stream or self.default_stream)
        s = stream or self.default_stream
        pool = self._pool if self._pool is not None else self.pool
        if out is None:
            fresh = True
            tick = next(_use_clock)  # one tick for all: they are used together
            for a in inputs:  # most recently used: allocating the output spills others first
                a.allocation.last_use = tick
            out = _fresh_array(self, entry[0], entry[1], pool.allocate(entry[3], s), entry[4])
        else:
            fresh = False
            if out.shape != entry[0] or out.dtype != entry[1] or out.device is not self:
                raise ShapeError(
                    f"kernel '{kernel}': out must be {dt.dtype_name(entry[1])}{entry[0]} on {self.id},"
                    f" got {dt.dtype_name(out.dtype)}{out.shape} on {out.device.id}"
                )
            if _reads_what_it_writes(kernel, inputs, out):
                return self._launch_through_temporary(kernel, inputs, out, stream, params)
        tracer = self.tracer
        t0 = time.perf_counter() if tracer is not None else 0.0
        # Listed in IN_USE while the kernel runs, so no pool moves or spills the operands under it
        # (another thread, or the kernel itself, may allocate meanwhile); the pool's hold then waits
        # out a move that began before the listing and fetches operands spilled meanwhile, so the
        # handles the kernel reads are current (see dsrt.memory.in_use for the protocol).
        held = (*inputs, out)
        key = id(held)
        IN_USE[key] = held
        try:
            pool.hold(held)
            impl = entry[5]
            if impl is not None:
                impl(inputs, out, bound, s)
            else:
                self._launch(kernel, inputs, out, bound, s)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._launch_error(kernel, inputs, exc) from exc
        finally:
            del IN_USE[key]
        if tracer is not None:
            tracer.complete(kernel, self.id, t0, time.perf_counter(), {"shape": list(entry[0])})
        if launch_observer is not None:
            launch_observer(self, kernel, inputs, out, bound, fresh)
        return out

    def _launch_through_temporary(self, kernel: str, inputs: Sequence[Array], out: Array, stream: Stream | None,
                                  params: Mapping[str, Any]) -> Array:
        """``kernel`` into a fresh array, then that copied into ``out``: ``out`` shares memory with an
        input in a way the kernel may not survive (it could read bytes it has already written). Two
        launches, so a capture records both; where this device has no ``copy`` kernel for the dtype,
        :meth:`copy` moves the bytes and the capture is told of a ``copy`` all the same."""
        result = self.launch(kernel, *inputs, stream=stream, **params)
        copyable = self._supported.get("copy")
        if copyable is not None and result.dtype in copyable:
            return self.launch("copy", result, out=out, stream=stream)
        self.copy(out, result, stream=stream)
        if launch_observer is not None:
            launch_observer(self, "copy", (result,), out, {}, False)
        return out

    def _launch_error(self, kernel: str, inputs: Sequence[Array], exc: Exception) -> DsrtError:
        """The error a launch raises for ``exc``, a vendor exception its kernel raised."""
        err = self._translate_error(exc, f"kernel '{kernel}' on {', '.join(f'{a.dtype}{a.shape}' for a in inputs)}")
        if not isinstance(err, (KernelLaunchError, DeviceError)):
            err = KernelLaunchError(str(err), kernel=kernel, device=self.id)
        return err

    def _validate(self, kernel: str, inputs: Sequence[Array], params: Mapping[str, Any], sig: Any) -> tuple[Any, ...]:
        """Check a launch whose signature is not cached and return its entry: (out shape, out
        dtype, bound parameters, out bytes, out byte strides, the implementation to call or ``None``
        for :meth:`_launch`); the shape is ``None`` for a task kernel. Cached under ``sig`` unless
        that is ``None`` or the kernel is a task."""
        spec = KERNELS.get(kernel) or get_kernel(kernel)
        bound = spec.bind(inputs, params)
        for a in inputs:
            where = getattr(a, "device", self)
            if where is not self:
                if where.id == self.id:
                    raise ShapeError(f"kernel '{kernel}': an input belongs to another Runtime's {where.id};"
                                     " arrays cannot cross runtimes (create them with the runtime that launches)")
                raise ShapeError(
                    f"kernel '{kernel}': input on {where.id} passed to a launch on {self.id}; move it with .to()"
                )
        inferred = spec.infer(inputs, bound)
        if inferred is None:
            return (None, None, bound, 0, (), None)
        shape, out_dtype = inferred
        key = spec.key_dtype(inputs, out_dtype)
        supported = self._supported.get(kernel)
        if supported is None or key not in supported:
            raise UnsupportedKernelError(
                kernel=kernel, device=self.id, dtype=dt.dtype_name(key),
                supported=sorted(dt.dtype_name(d) for d in supported) if supported else (),
            )
        # The base _launch calls the table's implementation: call it directly then.
        impl = self._impls.get(kernel) if type(self)._launch is Device._launch else None
        entry = (shape, out_dtype, bound, _prod(shape) * out_dtype.itemsize,
                 contiguous_strides(shape, out_dtype.itemsize), impl)
        if sig is not None:
            if len(self._signatures) >= 4096:
                self._signatures.clear()
            self._signatures[sig] = entry
        return entry

    def _new_output(self, shape: tuple[int, ...], dtype: np.dtype, stream: Stream) -> Array:
        """A fresh output array of an already validated shape and dtype (layout cached per signature)."""
        layout = self._layouts.get((shape, dtype))
        if layout is None:
            if len(self._layouts) >= 4096:
                self._layouts.clear()
            layout = self._layouts[(shape, dtype)] = (_prod(shape) * dtype.itemsize, contiguous_strides(shape, dtype.itemsize))
        return _fresh_array(self, shape, dtype, self.pool.allocate(layout[0], stream), layout[1])

    def _launch_task(self, kernel: str, inputs: Sequence[Any], params: Mapping[str, Any], stream: Stream) -> Any:
        """Run a task kernel (one whose result is not an array); return the implementation's result."""
        impl = self._impls.get(kernel)
        if impl is None:
            raise UnsupportedKernelError(kernel=kernel, device=self.id)
        tracer = self.tracer
        t0 = time.perf_counter() if tracer is not None else 0.0
        try:
            with in_use(a for a in inputs if hasattr(a, "allocation")):  # array operands stay in place
                result = impl(inputs, None, params, stream)  # type: ignore[arg-type]
        except DsrtError:
            raise
        except Exception as exc:
            err = self._translate_error(exc, f"kernel '{kernel}'")
            if not isinstance(err, (KernelLaunchError, DeviceError)):
                err = KernelLaunchError(str(err), kernel=kernel, device=self.id)
            raise err from exc
        if tracer is not None:
            tracer.complete(kernel, self.id, t0, time.perf_counter(), {})
        if launch_observer is not None:
            launch_observer(self, kernel, inputs, None, params, False)
        return result

    def synchronize(self, stream: Stream | None = None) -> None:
        """Block until ``stream`` (default: the default stream) has finished its work."""
        try:
            self._synchronize(stream or self.default_stream)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._translate_error(exc, "synchronize") from exc

    def create_stream(self, name: str = "") -> Stream:
        """A new stream (ordered queue of work) on this device."""
        return self._create_stream(name)

    def compile(self, source: str, *, lang: str, name: str, options: Sequence[str] = ()) -> UserKernel:
        """Compile a user kernel written in ``lang`` (see ``info.languages``)."""
        if lang not in self.info.languages:
            raise ConfigurationError(
                f"{self.id} compiles {', '.join(sorted(self.info.languages)) or 'no languages'}, not '{lang}'"
            )
        return self._compile(source, lang, name, tuple(options))

    # ------------------------------------------------------------------ current device
    def __enter__(self) -> Device:
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _local.stack.pop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}: {self.info.name}>"


class _DeviceAllocator(Allocator):
    """The allocator every :class:`Device` gets: its ``_allocate``/``_free``/``_copy_in``/
    ``_copy_out``/``_copy_between``/``_synchronize`` primitives (and ``_allocate_pinned``/
    ``_free_pinned`` where it has them), with its ``_translate_error`` for vendor exceptions.
    Capabilities are read from the device when the allocator is made (on the pool's creation); the
    capacity each time (``info`` may be replaced with a measured figure)."""

    def __init__(self, device: Device) -> None:
        super().__init__(device.id, device.info.memory_bytes, device.default_stream)
        self.device = device
        self.synchronous = device.synchronous
        self.host_visible = bool(getattr(device.info, "host_visible", False))
        self.peer_transfer = type(device)._copy_between is not Device._copy_between
        self.pinned_host = callable(getattr(device, "_allocate_pinned", None))

    @property
    def memory_bytes(self) -> int:
        return int(self.device.info.memory_bytes)

    def _allocate(self, nbytes: int) -> Any:
        return self.device._allocate(nbytes)

    def _free(self, handle: Any) -> None:
        self.device._free(handle)

    def _copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        self.device._copy_in(handle, offset, src, stream)

    def _copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        self.device._copy_out(handle, offset, dst, stream)

    def _transfer(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                  stream: Stream) -> bool:
        return self.device._copy_raw(dst_handle, dst_offset, src_handle, src_offset, nbytes, stream, self.device)

    def _synchronize(self, stream: Stream) -> None:
        self.device._synchronize(stream)

    def _allocate_pinned(self, nbytes: int) -> Any:
        return self.device._allocate_pinned(nbytes)  # type: ignore[attr-defined]

    def _free_pinned(self, buffer: Any) -> None:
        free = getattr(self.device, "_free_pinned", None)
        if callable(free):
            free(buffer)

    def _translate(self, exc: BaseException, action: str) -> DsrtError:
        return self.device._translate_error(exc, action)


_LEGACY: dict[type, bool] = {}


def _legacy_copy_between(cls: type) -> bool:
    """True if ``cls._copy_between`` still takes ``(dst, src, nbytes, stream)`` Allocations."""
    found = _LEGACY.get(cls)
    if found is None:
        import inspect

        params = inspect.signature(cls._copy_between).parameters  # type: ignore[attr-defined]
        found = _LEGACY[cls] = len(params) == 5
    return found


#: Parameter value types whose equality and hash are exact enough to key the signature cache (with
#: the type in the key, ``1``, ``1.0`` and ``True`` are three keys); numpy dtypes and scalars too.
_KEYED = frozenset({bool, int, float, str, type(None), type})


def _param_key(sig: tuple[Any, ...], params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``sig`` extended with ``(name, type, value)`` of each parameter, or ``None`` if a value is of a
    type not keyed (containers, arrays...: such launches are validated every time)."""
    key: list[Any] = [sig]
    for name, value in params.items():
        t = type(value)
        if t not in _KEYED and not isinstance(value, (np.dtype, np.number, np.bool_)):
            return None
        key.append((name, t, value))
    return tuple(key)


def _as_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shp = tuple(int(s) for s in shape)
    except TypeError:
        raise ShapeError(f"not a shape: {shape!r}") from None
    if any(s < 0 for s in shp):
        raise ShapeError(f"negative dimension in shape {shp}")
    return shp


def _c_order_native(src: np.ndarray) -> np.ndarray:
    """``src`` C-contiguous and in the native byte order, copied only where it is not already
    (``np.ascontiguousarray`` would also turn a 0-d array into a 1-d one)."""
    if not src.dtype.isnative:
        src = src.astype(src.dtype.newbyteorder("="))
    return src if src.flags.c_contiguous else np.asarray(src, order="C")


def _reads_what_it_writes(kernel: str, inputs: Sequence[Any], out: Array) -> bool:
    """Whether ``out`` shares memory with an input in a way ``kernel`` may not survive: any overlap,
    unless the kernel is elementwise and each input it shares with is exactly ``out``'s elements."""
    shared = [a for a in inputs if getattr(a, "allocation", None) is not None and may_share_memory(a, out)]
    if not shared:
        return False
    spec = KERNELS.get(kernel) or get_kernel(kernel)
    return not (spec.elementwise and all(same_elements(a, out) for a in shared))


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------------------------------------- C hit path
def _raise_launch_error(device: Device, kernel: str, inputs: Sequence[Array], exc: BaseException) -> None:
    """Raise what :meth:`Device.launch` raises when its kernel raised ``exc`` (called by the C path)."""
    if isinstance(exc, DsrtError) or not isinstance(exc, Exception):
        raise exc
    raise device._launch_error(kernel, inputs, exc) from exc


#: The launch written in Python: the reference the C hit path hands every other case to.
python_launch = Device.launch


def _install_fast_launch() -> bool:
    """Make ``Device.launch`` the C hit path of ``dsrt._fastlaunch`` where it was built (an optional
    extension; ``DSRT_FASTPATH=off`` keeps the Python launch). The C path runs a launch whose
    signature is cached, on a device with a pool, with an implementation in its table and neither a
    tracer nor a launch observer, doing exactly what the Python launch does minus the interpreter;
    it calls :data:`python_launch` for everything else. Returns whether it is installed."""
    if not fast_paths_enabled():
        return False
    try:
        import dsrt._fastlaunch as _fastlaunch
    except ImportError:
        return False
    from .array import Array
    from .memory import Allocation
    from .memory.blocks import Block
    from .memory.pool import CachingPool

    descriptor = _fastlaunch.configure(Device, Array, Allocation, Block, CachingPool, IN_USE, _use_clock, globals(),
                                       python_launch, _raise_launch_error, _KEYED, KERNELS, python_launch.__doc__ or "")
    setattr(Device, "launch", descriptor)  # noqa: B010 - mypy keeps the Python signature
    return True


#: True when launches take the C hit path (see _install_fast_launch).
FAST_LAUNCH = _install_fast_launch()
