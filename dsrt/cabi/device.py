"""``CDevice``: a :class:`~dsrt.device.Device` whose primitives call a C backend library.

The public ``Device`` methods do the validation, the pool, tracing and error wrapping exactly as
for a Python backend; this class only implements the primitives, each one a call through the
library's API table. A non-NULL error object becomes a :class:`~dsrt.errors.DsrtError` naming the
device, the entry, the library's message and code (:meth:`CLibrary.error`).

Launches pack their operands into ``DsrtOperand`` structs. The shape/stride/dtype part of an
operand depends only on the array's layout, so it is built once per layout and copied in; only
the handle and offset are written per launch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.dtypes as dt

from ..device import Device, DeviceInfo, Event, KernelImpl, Stream
from ..errors import ConfigurationError, DsrtError, PluginError
from ..kernels import KERNELS
from .loader import ERR_UNSUPPORTED, CLibrary

if TYPE_CHECKING:
    from ..array import Array

__all__ = ["CDevice", "CStreamDevice", "CQueuedDevice", "make_devices"]

#: DSRT_DEVICE_SYNCHRONOUS
FLAG_SYNCHRONOUS = 1
_PARAM_NONE, _PARAM_BOOL, _PARAM_INT, _PARAM_FLOAT, _PARAM_STRING, _PARAM_INTS = range(6)
_CACHE_LIMIT = 4096
#: Operands (inputs + the output) one launch passes at most.
_MAX_OPERANDS = 8


class _CStream(Stream):
    """A stream made by the library's ``stream_create``; destroyed when the last reference goes."""

    __slots__ = ()

    def __del__(self) -> None:
        dev = self.device
        if isinstance(dev, CDevice) and not dev.lib.closed and self.native:
            fn = dev.lib.entries["stream_destroy"]
            err = fn(dev.index, self.native)
            if err:
                dev.lib.take_error(err)  # nothing to report to from a finalizer


class _CEvent(Event):
    """An event made by the library's ``event_record``; destroyed when the last reference goes."""

    __slots__ = ()

    def __del__(self) -> None:
        dev = self.stream.device
        if isinstance(dev, CDevice) and not dev.lib.closed and self.native is not None:
            err = dev.lib.entries["event_destroy"](dev.index, self.native)
            if err:
                dev.lib.take_error(err)


class CDevice(Device):
    """A device of a C backend library whose work has finished when each call returns.

    ``lib`` is the negotiated library, ``index`` the library's device number. Handles are the
    library's ``DsrtHandle`` integers; the pool sub-allocates inside them at byte offsets.
    """

    def __init__(self, lib: CLibrary, index: int, desc: Mapping[str, Any], prefix: str) -> None:
        self.lib = lib
        self.index = index
        self.ffi = lib.ffi
        e = lib.entries
        self._c_allocate, self._c_free = e["allocate"], e["free"]
        self._c_h2d, self._c_d2h, self._c_d2d = e["copy_h2d"], e["copy_d2h"], e["copy_d2d"]
        self._c_sync, self._c_launch = e["synchronize"], e["launch"]
        self._c_handle_out = threading.local()
        self._c_tls = threading.local()
        self._c_layouts: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self._c_params: dict[tuple[Any, ...], tuple[Any, int, list[Any]]] = {}
        self._c_kernel_names: dict[str, Any] = {}
        self._c_dtype_names: dict[np.dtype, Any] = {}
        self._c_claims = {k: frozenset(v) for k, v in desc["kernels"].items()}
        unknown = sorted(k for k in self._c_claims if k not in KERNELS)
        if unknown:
            raise PluginError(f"backend '{lib.backend}': {lib.path} claims kernels dsrt does not define:"
                              f" {', '.join(unknown)} (register their KernelSpec first)", plugin=lib.backend)
        self._c_flags = int(desc["flags"])
        self._c_synchronous = _is_synchronous(lib, self._c_flags)
        info = DeviceInfo(
            id=f"{prefix}:{index}", backend=lib.backend, index=index, name=desc["name"], vendor=desc["vendor"],
            memory_bytes=desc["memory_bytes"], compute_units=desc["compute_units"],
            dtypes=frozenset(desc["dtypes"]), peak_flops=desc["peak_flops"], memory_bandwidth=desc["memory_bandwidth"],
            synchronous=_is_synchronous(lib, self._c_flags),
            properties={"library": lib.path, "c_abi": f"{lib.abi[0]}.{lib.abi[1]}"},
        )
        try:
            super().__init__(info)
        except ConfigurationError as exc:
            raise PluginError(f"backend '{lib.backend}': {lib.path}: {exc}", plugin=lib.backend, cause=exc) from None

    # ------------------------------------------------------------------ helpers
    def _stream_id(self, stream: Stream) -> int:
        native = stream.native
        return native if native is not None else 0

    def _fail(self, err: Any, call: str, **extra: Any) -> DsrtError:
        return self.lib.error(err, self.id, call, **extra)

    # ------------------------------------------------------------------ memory
    def _allocate(self, nbytes: int) -> int:
        out = getattr(self._c_handle_out, "p", None)
        if out is None:
            out = self._c_handle_out.p = self.ffi.new("DsrtHandle*")
        err = self._c_allocate(self.index, nbytes, out)
        if err:
            raise self._fail(err, "allocate", requested=nbytes, capacity=self.info.memory_bytes)
        return int(out[0])

    def _free(self, handle: int) -> None:
        if self.lib.closed:
            return  # the library has shut down and freed everything itself
        err = self._c_free(self.index, handle)
        if err:
            raise self._fail(err, "free")

    def _copy_in(self, handle: int, offset: int, src: np.ndarray, stream: Stream) -> None:
        n = src.nbytes
        if n == 0:
            return
        err = self._c_h2d(self.index, self._stream_id(stream), handle, offset, self.ffi.from_buffer(src), n)
        if err:
            raise self._fail(err, "copy_h2d")

    def _copy_out(self, handle: int, offset: int, dst: np.ndarray, stream: Stream) -> None:
        n = dst.nbytes
        if n == 0:
            return
        err = self._c_d2h(self.index, self._stream_id(stream), self.ffi.from_buffer(dst, require_writable=True),
                          handle, offset, n)
        if err:
            raise self._fail(err, "copy_d2h")

    def _copy_between(self, dst_handle: int, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                      stream: Stream, src_device: Device) -> bool:
        if self._c_d2d is None or not isinstance(src_device, CDevice) or src_device.lib is not self.lib:
            return False
        if nbytes == 0:
            return True
        err = self._c_d2d(self.index, self._stream_id(stream), dst_handle, dst_offset, src_device.index, src_handle,
                          src_offset, nbytes)
        if err:
            exc = self._fail(err, "copy_d2d")
            if getattr(exc, "code", None) == ERR_UNSUPPORTED:
                return False
            raise exc
        return True

    def _synchronize(self, stream: Stream) -> None:
        fn = self._c_sync
        if fn is None or self._c_synchronous:
            return
        err = fn(self.index, self._stream_id(stream))
        if err:
            raise self._fail(err, "synchronize")

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        table: dict[str, tuple[frozenset[str], KernelImpl]] = {}
        for name, dtype_names in self._c_claims.items():
            table[name] = (dtype_names, self._impl_for(name))
        return table

    def _impl_for(self, kernel: str) -> KernelImpl:
        cname = self._c_kernel_names[kernel] = self.ffi.new("char[]", kernel.encode())

        def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            self._c_run(kernel, cname, inputs, out, params, stream)

        return impl

    def _operand(self, a: Array) -> Any:
        """A filled ``DsrtOperand*`` for ``a``, kept in the array's ``native`` slot for its generation.

        Handle and offset only change when the pool moves the bytes, which bumps the allocation's
        generation; the shape/strides/dtype part is shared by every array of the same layout.
        """
        al = a.allocation
        key = (a.shape, a.strides, a.dtype)
        layout = self._c_layouts.get(key)
        ffi = self.ffi
        if layout is None:
            dname = self._c_dtype_names.get(a.dtype)
            if dname is None:
                dname = self._c_dtype_names[a.dtype] = ffi.new("char[]", dt.dtype_name(a.dtype).encode())
            shape = ffi.new("int64_t[]", list(a.shape) or [0])
            strides = ffi.new("int64_t[]", list(a.strides) or [0])
            if len(self._c_layouts) >= _CACHE_LIMIT:
                self._c_layouts.clear()
            layout = self._c_layouts[key] = (shape, strides, dname)
        op = ffi.new("DsrtOperand*")
        op.handle = al.handle
        op.offset = al.offset + a.byte_offset
        op.ndim = len(a.shape)
        op.shape, op.strides, op.dtype = layout
        a.native = (op, layout)  # the layout's arrays live as long as the operand that points into them
        a.native_generation = al.generation
        return a.native

    def _pack_params(self, kernel: str, params: Mapping[str, Any]) -> tuple[Any, int, list[Any]]:
        """``(DsrtParam array, count, keep-alive list)`` for ``params`` (cached when hashable)."""
        if not params:
            return self.ffi.NULL, 0, []
        try:
            key: tuple[Any, ...] | None = (kernel, *params.items())
            hit = self._c_params.get(key)  # type: ignore[arg-type]
            if hit is not None:
                return hit
        except TypeError:
            key = None
        ffi = self.ffi
        arr = ffi.new("DsrtParam[]", len(params))
        keep: list[Any] = [arr]
        for i, (name, value) in enumerate(params.items()):
            p = arr[i]
            cname = ffi.new("char[]", name.encode())
            keep.append(cname)
            p.name = cname
            if value is None:
                p.kind = _PARAM_NONE
            elif isinstance(value, (bool, np.bool_)):
                p.kind, p.i = _PARAM_BOOL, int(bool(value))
            elif isinstance(value, (int, np.integer)):
                p.kind, p.i = _PARAM_INT, int(value)
            elif isinstance(value, (float, np.floating)):
                p.kind, p.f = _PARAM_FLOAT, float(value)
            elif isinstance(value, (str, np.dtype, type)):
                text = ffi.new("char[]", (value if isinstance(value, str) else dt.dtype_name(value)).encode())
                keep.append(text)
                p.kind, p.s = _PARAM_STRING, text
            elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in value):
                ints = ffi.new("int64_t[]", [int(v) for v in value] or [0])
                keep.append(ints)
                p.kind, p.ints, p.count = _PARAM_INTS, ints, len(value)
            else:
                raise ConfigurationError(
                    f"{self.id}: kernel '{kernel}' parameter '{name}' = {value!r} ({type(value).__name__})"
                    " cannot be passed through the dsrt C ABI (None, bool, int, float, str/dtype or a tuple of ints)")
        packed = (arr, len(params), keep)
        if key is not None:
            if len(self._c_params) >= _CACHE_LIMIT:
                self._c_params.clear()
            self._c_params[key] = packed
        return packed

    def _c_scratch(self) -> tuple[Any, list[Any]]:
        """This thread's operand array (cffi releases the GIL, so threads may launch at once)."""
        ops = self.ffi.new("DsrtOperand[]", _MAX_OPERANDS)
        ptrs = [ops + i for i in range(_MAX_OPERANDS)]
        self._c_tls.scratch = (ops, ptrs)
        return ops, ptrs

    def _c_run(self, kernel: str, cname: Any, inputs: Sequence[Array], out: Array, params: Mapping[str, Any],
               stream: Stream) -> None:
        n = len(inputs)
        if n >= _MAX_OPERANDS:
            raise ConfigurationError(f"{self.id}: kernel '{kernel}' has {n} inputs; the C ABI loader passes at most"
                                     f" {_MAX_OPERANDS - 1}")
        try:
            ops, ptrs = self._c_tls.scratch
        except AttributeError:
            ops, ptrs = self._c_scratch()
        i = 0
        for a in (*inputs, out):
            nat = a.native
            if nat is None or a.native_generation != a.allocation.generation:
                nat = self._operand(a)
            ops[i] = nat[0][0]
            i += 1
        if params:
            pp, np_, _keep = self._pack_params(kernel, params)
        else:
            pp, np_ = self.ffi.NULL, 0
        err = self._c_launch(self.index, self._stream_id(stream), cname, ops, n, ptrs[n], pp, np_)
        if err:
            raise self.lib.error(err, self.id, f"launch of kernel '{kernel}'", kernel=kernel)


class CQueuedDevice(CDevice):
    """A device of a library that queues work (no DSRT_DEVICE_SYNCHRONOUS) but has no events:
    recording or querying an event waits for its stream."""

    def _record_event(self, stream: Stream) -> Event:
        self._synchronize(stream)
        return Event(stream)

    def _query_event(self, event: Event) -> bool:
        return True


class CStreamDevice(CDevice):
    """A device of a library with streams and events (the optional stream/event entries)."""

    def __init__(self, lib: CLibrary, index: int, desc: Mapping[str, Any], prefix: str) -> None:
        e = lib.entries
        self._c_stream_create = e["stream_create"]
        self._c_event_record, self._c_event_query = e["event_record"], e["event_query"]
        self._c_event_sync, self._c_event_elapsed = e["event_synchronize"], e["event_elapsed"]
        super().__init__(lib, index, desc, prefix)

    def _create_stream(self, name: str = "") -> Stream:
        if getattr(self, "default_stream", None) is None:
            return Stream(self, 0, name)  # the library's default stream, created by Device.__init__
        out = self.ffi.new("DsrtStream*")
        err = self._c_stream_create(self.index, out)
        if err:
            raise self._fail(err, "stream_create")
        return _CStream(self, int(out[0]), name)

    def _record_event(self, stream: Stream) -> Event:
        out = self.ffi.new("DsrtEvent*")
        err = self._c_event_record(self.index, self._stream_id(stream), out)
        if err:
            raise self._fail(err, "event_record")
        return _CEvent(stream, int(out[0]))

    def _query_event(self, event: Event) -> bool:
        out = self.ffi.new("int32_t*")
        err = self._c_event_query(self.index, event.native, out)
        if err:
            raise self._fail(err, "event_query")
        return bool(out[0])

    def _wait_event(self, event: Event) -> None:
        err = self._c_event_sync(self.index, event.native)
        if err:
            raise self._fail(err, "event_synchronize")

    def _elapsed(self, start: Event, end: Event) -> float:
        out = self.ffi.new("double*")
        err = self._c_event_elapsed(self.index, start.native, end.native, out)
        if err:
            raise self._fail(err, "event_elapsed")
        return float(out[0])


def _is_synchronous(lib: CLibrary, flags: int) -> bool:
    """A device without streams whose library says DSRT_DEVICE_SYNCHRONOUS or has no synchronize."""
    return not lib.has_streams and bool(flags & FLAG_SYNCHRONOUS or lib.entries["synchronize"] is None)


def make_devices(lib: CLibrary, prefix: str) -> list[CDevice]:
    """One device per library device, of the class that fits what the library has."""
    devices: list[CDevice] = []
    for index in range(lib.device_count()):
        desc = lib.describe(index)
        if lib.has_streams:
            cls: type[CDevice] = CStreamDevice
        elif _is_synchronous(lib, int(desc["flags"])):
            cls = CDevice
        else:
            cls = CQueuedDevice
        devices.append(cls(lib, index, desc, prefix))
    return devices
