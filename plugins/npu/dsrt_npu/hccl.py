"""HCCL as the collectives transport between the Ascend NPUs of one process (``libhccl.so`` via ctypes).

The documented C API of CANN's ``libhccl.so`` (``<install>/lib64``): one communicator per NPU, all
created together by ``HcclCommInitAll`` (rank ``i`` is the ``i``-th device of the group, which is the
order of the buffers every collective gets), then ``HcclAllReduce``, ``HcclReduce``,
``HcclBroadcast``, ``HcclReduceScatter`` and ``HcclAllGather``, and ``HcclCommDestroy``.

Calls for the NPUs of one process must be issued concurrently (a rank's call may wait for its peers),
so the transport owns a small thread pool, one worker per NPU: each worker makes its device's ACL
context current and issues that device's call; every call's ``HcclResult`` is checked, and any non-zero
result becomes :class:`HcclError` (a :class:`~dsrt.errors.CollectiveError`) naming the call, the code,
its meaning and the devices. Every call is enqueued on the device's dsrt stream
(``device.default_stream.native``, the ACL stream), so it is ordered after the copies and kernels queued
there before it and before those queued after it; torch_npu work on the device is fenced first, like
every other ACL operation of :class:`~dsrt_npu.device.NpuDevice`.

Dtypes and operators (CANN HCCL API reference, HcclAllReduce / HcclReduce / HcclReduceScatter, Atlas A2
and A3 training series): HCCL reduces int8, int16, int32, int64, float16, float32 and bfloat16 with sum,
prod, max and min, except prod in int16 and bfloat16. complex64 ``sum`` (and so ``avg``) runs as a float32
sum over the interleaved real and imaginary parts, which is the same arithmetic. Every other reduction
(complex prod, complex128, float64, uint8 and so bool, and deterministic mode, since HCCL does not fix its
reduction order) is delegated to the in-process transport, which uses the devices' own copy and kernels;
when the devices lack those kernels the error says both why HCCL was not used and which kernel is
missing. float16, bfloat16 and fp8 normally reach a transport already widened to float32 by the
communicator's plan (:mod:`dsrt.collective.ops`). Data movement (broadcast, all-gather) takes every dtype:
those without an HCCL type move as bytes.

Between processes (one NPU per MPI rank) the multi-process API is used instead: ``HcclGetRootInfo`` and
``HcclCommInitRootInfo``, in :mod:`dsrt_npu.hccl_ranks` (the ``hccl-mpi`` inter transport).

Sizes: counts are elements of the HCCL data type (not bytes); pointers are ACL device addresses.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.collective.base import IntraTransport
from dsrt.collective.buffers import segment
from dsrt.collective.local import InProcessTransport
from dsrt.errors import CollectiveError, ConfigurationError, DeviceUnavailableError, UnsupportedKernelError

from .detect import find_install

__all__ = [
    "HCCL_OPS",
    "HCCL_REDUCIBLE",
    "HCCL_ROOT_INFO_BYTES",
    "HCCL_SUCCESS",
    "HCCL_TYPES",
    "LIBRARY",
    "RESULTS",
    "HcclError",
    "HcclRootInfo",
    "HcclTransport",
    "error_texts",
    "find_hccl",
    "hccl_applies",
    "load_hccl",
    "result_meaning",
]

LIBRARY = "libhccl.so"
HCCL_SUCCESS = 0

#: HcclResult (hccl_types.h) -> (enumerator, meaning).
RESULTS: dict[int, tuple[str, str]] = {
    1: ("HCCL_E_PARA", "parameter error"),
    2: ("HCCL_E_PTR", "empty pointer"),
    3: ("HCCL_E_MEMORY", "memory error"),
    4: ("HCCL_E_INTERNAL", "internal error"),
    5: ("HCCL_E_NOT_SUPPORT", "feature not supported"),
    6: ("HCCL_E_NOT_FOUND", "a required resource was not found"),
    7: ("HCCL_E_UNAVAIL", "resource unavailable"),
    8: ("HCCL_E_SYSCALL", "a system call failed"),
    9: ("HCCL_E_TIMEOUT", "timeout"),
    10: ("HCCL_E_OPEN_FILE_FAILURE", "a file could not be opened"),
    11: ("HCCL_E_TCP_CONNECT", "TCP connection failed"),
    12: ("HCCL_E_ROCE_CONNECT", "RoCE connection failed"),
    13: ("HCCL_E_TCP_TRANSFER", "TCP transfer failed"),
    14: ("HCCL_E_ROCE_TRANSFER", "RoCE transfer failed"),
    15: ("HCCL_E_RUNTIME", "a call to the ACL runtime failed"),
    16: ("HCCL_E_DRV", "a call to the NPU driver failed"),
    17: ("HCCL_E_PROFILING", "a call to the profiling API failed"),
    18: ("HCCL_E_CCE", "a call to the CCE API failed"),
    19: ("HCCL_E_NETWORK", "a call to the network API failed"),
    20: ("HCCL_E_AGAIN", "try again"),
    21: ("HCCL_E_REMOTE", "a remote rank reported an error (error CQE)"),
    22: ("HCCL_E_SUSPENDING", "the communicator is suspending"),
    23: ("HCCL_E_OPRETRY_FAIL", "retrying the operation failed"),
    24: ("HCCL_E_OOM", "out of memory"),
}

# HcclDataType enumerators.
HCCL_DATA_TYPE_INT8, HCCL_DATA_TYPE_INT16, HCCL_DATA_TYPE_INT32, HCCL_DATA_TYPE_FP16 = 0, 1, 2, 3
HCCL_DATA_TYPE_FP32, HCCL_DATA_TYPE_INT64, HCCL_DATA_TYPE_UINT64, HCCL_DATA_TYPE_UINT8 = 4, 5, 6, 7
HCCL_DATA_TYPE_UINT16, HCCL_DATA_TYPE_UINT32, HCCL_DATA_TYPE_FP64, HCCL_DATA_TYPE_BFP16 = 8, 9, 10, 11

#: dsrt dtype -> HcclDataType (the dsrt dtypes HCCL has a type for).
HCCL_TYPES: dict[np.dtype, int] = {
    dt.int8: HCCL_DATA_TYPE_INT8, dt.int16: HCCL_DATA_TYPE_INT16, dt.int32: HCCL_DATA_TYPE_INT32,
    dt.float16: HCCL_DATA_TYPE_FP16, dt.float32: HCCL_DATA_TYPE_FP32, dt.int64: HCCL_DATA_TYPE_INT64,
    dt.uint8: HCCL_DATA_TYPE_UINT8, dt.float64: HCCL_DATA_TYPE_FP64, dt.bfloat16: HCCL_DATA_TYPE_BFP16,
}

#: dsrt reduction kernel -> HcclReduceOp (SUM, PROD, MAX, MIN).
HCCL_OPS: dict[str, int] = {"add": 0, "mul": 1, "maximum": 2, "minimum": 3}

#: dtypes HCCL reduces (Atlas A2/A3 training series).
HCCL_REDUCIBLE: frozenset[np.dtype] = frozenset({dt.int8, dt.int16, dt.int32, dt.int64, dt.float16, dt.float32,
                                                 dt.bfloat16})
#: ... except with prod.
_NO_PROD: frozenset[np.dtype] = frozenset({dt.int16, dt.bfloat16})
#: complex dtype -> the real dtype of its parts (sums only: addition is per part).
_COMPLEX_PARTS: dict[np.dtype, np.dtype] = {dt.complex64: dt.float32}

#: Bytes of ``HcclRootInfo`` (hccl_types.h: ``char internal[HCCL_ROOT_INFO_BYTES]``).
HCCL_ROOT_INFO_BYTES = 4108


class HcclRootInfo(ctypes.Structure):
    """The opaque root information rank 0 creates (``HcclGetRootInfo``) and every rank passes to
    ``HcclCommInitRootInfo``; moved between processes as its :data:`HCCL_ROOT_INFO_BYTES` raw bytes."""

    _fields_ = [("internal", ctypes.c_char * HCCL_ROOT_INFO_BYTES)]


_c_enum = ctypes.c_int  # C enums (HcclResult, HcclDataType, HcclReduceOp) are int-sized
_PROTOTYPES: dict[str, list[Any]] = {
    "HcclCommInitAll": [ctypes.c_uint32, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_void_p)],
    "HcclGetRootInfo": [ctypes.POINTER(HcclRootInfo)],
    "HcclCommInitRootInfo": [ctypes.c_uint32, ctypes.POINTER(HcclRootInfo), ctypes.c_uint32,
                             ctypes.POINTER(ctypes.c_void_p)],
    "HcclAllReduce": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, _c_enum, _c_enum, ctypes.c_void_p,
                      ctypes.c_void_p],
    "HcclBroadcast": [ctypes.c_void_p, ctypes.c_uint64, _c_enum, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p],
    "HcclReduceScatter": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, _c_enum, _c_enum, ctypes.c_void_p,
                          ctypes.c_void_p],
    "HcclAllGather": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, _c_enum, ctypes.c_void_p, ctypes.c_void_p],
    "HcclReduce": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, _c_enum, _c_enum, ctypes.c_uint32,
                   ctypes.c_void_p, ctypes.c_void_p],
    "HcclCommDestroy": [ctypes.c_void_p],
}


def error_texts(lib: Any, codes: Sequence[int]) -> dict[int, str]:
    """``HcclGetErrorString`` of each code, where ``lib`` has it (empty otherwise)."""
    fn = getattr(lib, "HcclGetErrorString", None)
    if fn is None:
        return {}
    out: dict[int, str] = {}
    for code in codes:
        raw = fn(_c_enum(code))
        out[code] = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
    return out


def result_meaning(code: int) -> str:
    """``'HCCL_E_NAME: meaning'`` of an HcclResult."""
    name, meaning = RESULTS.get(code, ("HCCL_E_UNKNOWN", "unknown HCCL result code"))
    return f"{name}: {meaning}"


class HcclError(CollectiveError):
    """An HCCL call returned a non-zero HcclResult.

    ``call``: the C function; ``code`` and ``meaning``: the first failure's result; ``failures``: every
    ``(device id, code)`` that failed; ``devices``: the ids of the devices whose call failed.
    """

    def __init__(self, call: str, failures: Sequence[tuple[str, int]], *, library_text: Mapping[int, str] | None = None,
                 hint: str = "") -> None:
        self.call = call
        self.failures = list(failures)
        self.code = self.failures[0][1]
        self.meaning = result_meaning(self.code)
        self.devices = [d for d, _ in self.failures]
        by_code: dict[int, list[str]] = {}
        for device, code in self.failures:
            by_code.setdefault(code, []).append(device)
        parts = []
        for code, devices in by_code.items():
            text = (library_text or {}).get(code, "")
            extra = f" [libhccl: {text}]" if text and text not in result_meaning(code) else ""
            parts.append(f"{code} ({result_meaning(code)}){extra} on {', '.join(devices)}")
        super().__init__(f"{call} returned {'; '.join(parts)}{hint}")


def find_hccl(env: Mapping[str, str] | None = None) -> Path | None:
    """``<CANN install>/lib64/libhccl.so`` if it exists (install found as in :mod:`dsrt_npu.detect`), else None.

    Only looks at the file system: nothing is loaded.
    """
    try:
        root = find_install(None if env is None else dict(env))
    except DeviceUnavailableError:
        return None
    path = root / "lib64" / LIBRARY
    return path if path.is_file() else None


def load_hccl(path: Path | None = None) -> Any:
    """``libhccl.so`` loaded with ctypes, with the prototypes of the functions the transport calls.

    ``path``: the library (default: :func:`find_hccl`). The handle stays loaded for the process.
    """
    where = path if path is not None else find_hccl()
    if where is None:
        raise CollectiveError(f"{LIBRARY} not found in the CANN install's lib64 (source CANN's set_env.sh, or pass"
                              " transport='inprocess' to the Communicator)")
    try:
        lib = ctypes.CDLL(str(where))
    except OSError as exc:
        raise CollectiveError(f"{where} could not be loaded: {exc}") from None
    for name, argtypes in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise CollectiveError(f"{where} has no {name}: not the HCCL of CANN 7.0 or later?") from None
        fn.restype = _c_enum
        fn.argtypes = argtypes
    if hasattr(lib, "HcclGetErrorString"):
        lib.HcclGetErrorString.restype = ctypes.c_char_p
        lib.HcclGetErrorString.argtypes = [_c_enum]
    return lib


def hccl_applies(devices: Sequence[Any]) -> bool:
    """True for two or more distinct NPUs of one ACL (:class:`~dsrt_npu.device.NpuDevice`) when
    ``libhccl.so`` is in the CANN install. Cheap: attribute checks and a few file-system lookups."""
    if len(devices) < 2 or any(getattr(d.info, "backend", None) != "npu" for d in devices):
        return False
    from .device import NpuDevice

    if not all(isinstance(d, NpuDevice) for d in devices):
        return False
    if len({d.info.index for d in devices}) != len(devices) or len({id(d.acl) for d in devices}) != 1:
        return False
    return find_hccl() is not None


def _ptr(a: Array) -> int:
    """The ACL device address of ``a``'s first element."""
    a.allocation.touch()
    return int(a.handle + a.handle_offset)


def _reduce_form(dtype: np.dtype, kernel: str) -> tuple[int, int] | None:
    """``(HcclDataType, HCCL elements per element)`` HCCL reduces ``dtype`` with ``kernel`` in, or None."""
    if kernel not in HCCL_OPS:
        return None
    part = _COMPLEX_PARTS.get(dtype)
    if part is not None:
        return (HCCL_TYPES[part], 2) if kernel == "add" else None
    if dtype not in HCCL_REDUCIBLE or (kernel == "mul" and dtype in _NO_PROD):
        return None
    return HCCL_TYPES[dtype], 1


def _move_form(dtype: np.dtype) -> tuple[int, int]:
    """``(HcclDataType, HCCL elements per element)`` to move ``dtype``: its own type, else bytes."""
    code = HCCL_TYPES.get(dtype)
    return (code, 1) if code is not None else (HCCL_DATA_TYPE_INT8, dtype.itemsize)


def _equal_segments(bounds: Sequence[int]) -> int:
    """The common size of the segments ``bounds`` cuts, 0 when they differ or are empty."""
    sizes = {bounds[j + 1] - bounds[j] for j in range(len(bounds) - 1)}
    return sizes.pop() if len(sizes) == 1 else 0


def _release(lib: Any, comms: list[ctypes.c_void_p], pool: ThreadPoolExecutor) -> list[int]:
    """Stop the workers and destroy the communicators; returns each HcclCommDestroy result."""
    pool.shutdown(wait=True)
    return [int(lib.HcclCommDestroy(c)) for c in comms]


class HcclTransport(IntraTransport):
    """Intra-process collectives among NPUs over HCCL (the methods of the in-process transport).

    - ``devices``: the participating :class:`~dsrt_npu.device.NpuDevice`; rank ``i`` is ``devices[i]``.
    - ``lib``: the HCCL library handle (default: :func:`load_hccl`); anything with the C API's function
      names taking ctypes arguments and returning HcclResult ints (the tests pass an emulation).
    - ``timeout``: seconds to wait for the workers' calls to return before raising CollectiveError
      (HCCL calls only enqueue work, so this guards against a hung library, not slow collectives).

    Owns its HCCL communicators and one worker thread per device; :meth:`close` (or garbage collection)
    releases both. Buffers are borrowed for the duration of a call.
    """

    name = "hccl"

    def __init__(self, devices: Sequence[Any], lib: Any = None, *, timeout: float = 300.0) -> None:
        self.devices = list(devices)
        if not self.devices:
            raise ConfigurationError("an HCCL transport needs at least one NPU")
        if len({d.info.index for d in self.devices}) != len(self.devices):
            raise ConfigurationError(f"HCCL needs distinct NPUs, got {[d.id for d in self.devices]}")
        self._lib = lib if lib is not None else load_hccl()
        self.timeout = float(timeout)
        n = len(self.devices)
        ids = (ctypes.c_int32 * n)(*[int(d.info.index) for d in self.devices])
        handles = (ctypes.c_void_p * n)()
        ret = int(self._lib.HcclCommInitAll(ctypes.c_uint32(n), ids, handles))
        if ret != HCCL_SUCCESS:
            raise HcclError("HcclCommInitAll", [(d.id, ret) for d in self.devices], library_text=self._texts([ret]),
                            hint="; pass transport='inprocess' to the Communicator to work without HCCL")
        self._comms = [ctypes.c_void_p(h) for h in handles]
        self._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="dsrt-hccl")
        self._fallback = InProcessTransport()
        self._finalizer = weakref.finalize(self, _release, self._lib, self._comms, self._executor)
        # At interpreter exit ACL may already be finalized; the process teardown frees HCCL's resources.
        self._finalizer.atexit = False

    # ------------------------------------------------------------------ plumbing
    def _texts(self, codes: Sequence[int]) -> dict[int, str]:
        """HcclGetErrorString of each code, where the library has it."""
        return error_texts(self._lib, codes)

    def _round(self, call: str, args: Sequence[tuple[Any, ...]]) -> None:
        """Issue ``call(*args[rank], comm, stream)`` for every rank at once, each from its own worker thread
        with its device's context current; raise for any failure once every call has returned."""
        fn: Callable[..., Any] = getattr(self._lib, call)
        for d in self.devices:
            d._fence()  # torch_npu work on these buffers lands before HCCL reads them

        def issue(rank: int) -> int:
            dev = self.devices[rank]
            dev._bind()
            stream = ctypes.c_void_p(int(dev.default_stream.native))
            return int(fn(*args[rank], self._comms[rank], stream))

        futures: list[Future[int]] = [self._executor.submit(issue, r) for r in range(len(self.devices))]
        _done, pending = wait_all(futures, timeout=self.timeout)
        if pending:
            ids = [self.devices[r].id for r, f in enumerate(futures) if f in pending]
            raise CollectiveError(f"{call}: the calls for {', '.join(ids)} did not return within {self.timeout} s",
                                  missing=ids)
        failures: list[tuple[str, int]] = []
        for rank, f in enumerate(futures):
            exc = f.exception()
            if exc is not None:
                raise exc
            if (ret := f.result()) != HCCL_SUCCESS:
                failures.append((self.devices[rank].id, ret))
        if failures:
            raise HcclError(call, failures, library_text=self._texts([c for _, c in failures]))

    def _delegate(self, what: str, why: str, run: Callable[[], Any]) -> Any:
        """Run ``run`` (the in-process transport); explain a missing device kernel."""
        try:
            return run()
        except UnsupportedKernelError as exc:
            raise CollectiveError(f"{what} on {', '.join(d.id for d in self.devices)}: {why}, so it falls back to the "
                                  f"devices' own kernels, and: {exc}") from exc

    @staticmethod
    def _why(dtype: np.dtype, kernel: str, deterministic: bool) -> str:
        if deterministic:
            return "deterministic mode (HCCL does not fix its reduction order)"
        return (f"HCCL cannot reduce {dt.dtype_name(dtype)} with '{kernel}' (it reduces "
                f"{', '.join(sorted(dt.dtype_name(d) for d in HCCL_REDUCIBLE))}, not 'mul' in int16 or bfloat16, "
                "and complex64 sums)")

    def _check(self, bufs: Sequence[Array]) -> None:
        if len(bufs) != len(self.devices):
            raise ConfigurationError(f"HCCL transport of {len(self.devices)} NPUs given {len(bufs)} buffers")
        for b, d in zip(bufs, self.devices, strict=True):
            if b.device is not d:
                raise ConfigurationError(f"HCCL rank {self.devices.index(d)} is {d.id}; its buffer is on {b.device.id}")

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, bufs: Sequence[Array], kernel: str, *, algorithm: str = "auto",
                   deterministic: bool = False) -> str:
        """Every buffer (in place) gets the reduction of all; returns ``"hccl"`` (or the fallback's algorithm)."""
        self._check(bufs)
        form = _reduce_form(bufs[0].dtype, kernel)
        if deterministic or form is None:
            why = self._why(bufs[0].dtype, kernel, deterministic)
            return str(self._delegate("all_reduce", why, lambda: self._fallback.all_reduce(
                bufs, kernel, algorithm=algorithm, deterministic=deterministic)))
        htype, per = form
        count = bufs[0].size * per
        if count:
            self._round("HcclAllReduce", [(ctypes.c_void_p(p), ctypes.c_void_p(p), ctypes.c_uint64(count),
                                           _c_enum(htype), _c_enum(HCCL_OPS[kernel])) for p in map(_ptr, bufs)])
        return "hccl"

    def reduce(self, bufs: Sequence[Array], root: int, kernel: str, *, deterministic: bool = False) -> None:
        """``bufs[root]`` gets the reduction of all (in place); the others are left as they were."""
        self._check(bufs)
        form = _reduce_form(bufs[0].dtype, kernel)
        if deterministic or form is None:
            why = self._why(bufs[0].dtype, kernel, deterministic)
            self._delegate("reduce", why, lambda: self._fallback.reduce(bufs, root, kernel, deterministic=deterministic))
            return
        htype, per = form
        count = bufs[0].size * per
        if count:
            self._round("HcclReduce", [(ctypes.c_void_p(p), ctypes.c_void_p(p), ctypes.c_uint64(count), _c_enum(htype),
                                        _c_enum(HCCL_OPS[kernel]), ctypes.c_uint32(root)) for p in map(_ptr, bufs)])

    def broadcast(self, bufs: Sequence[Array], root: int) -> None:
        """Every buffer gets ``bufs[root]`` (any dtype: those without an HCCL type move as bytes)."""
        self._check(bufs)
        htype, per = _move_form(bufs[0].dtype)
        count = bufs[0].size * per
        if count:
            self._round("HcclBroadcast", [(ctypes.c_void_p(p), ctypes.c_uint64(count), _c_enum(htype),
                                           ctypes.c_uint32(root)) for p in map(_ptr, bufs)])

    def reduce_scatter(self, bufs: Sequence[Array], bounds: Sequence[int], kernel: str, *,
                       deterministic: bool = False) -> None:
        """Afterwards ``bufs[i][bounds[i]:bounds[i+1]]`` holds the reduction of that segment.

        Equal segments: one ``HcclReduceScatter`` into a scratch buffer per device, then a copy into
        place on the same stream. Unequal ones: one in-place ``HcclReduce`` per segment to its owner.
        """
        self._check(bufs)
        dtype = bufs[0].dtype
        form = _reduce_form(dtype, kernel)
        if deterministic or form is None:
            why = self._why(dtype, kernel, deterministic)
            self._delegate("reduce_scatter", why, lambda: self._fallback.reduce_scatter(
                bufs, bounds, kernel, deterministic=deterministic))
            return
        htype, per = form
        op = _c_enum(HCCL_OPS[kernel])
        k = _equal_segments(bounds)
        if k:
            scratch = [b.device.empty((k,), dtype) for b in bufs]
            first = bounds[0] * dtype.itemsize
            self._round("HcclReduceScatter", [
                (ctypes.c_void_p(_ptr(b) + first), ctypes.c_void_p(_ptr(s)), ctypes.c_uint64(k * per), _c_enum(htype), op)
                for b, s in zip(bufs, scratch, strict=True)])
            for i, (b, s) in enumerate(zip(bufs, scratch, strict=True)):
                b.device.copy(segment(b, bounds[i], bounds[i + 1]), s)
            return
        for j in range(len(bounds) - 1):
            lo, n = bounds[j], bounds[j + 1] - bounds[j]
            if n:
                ptrs = [_ptr(b) + lo * dtype.itemsize for b in bufs]
                self._round("HcclReduce", [(ctypes.c_void_p(p), ctypes.c_void_p(p), ctypes.c_uint64(n * per),
                                            _c_enum(htype), op, ctypes.c_uint32(j)) for p in ptrs])

    def all_gather(self, bufs: Sequence[Array], bounds: Sequence[int]) -> None:
        """Every buffer gets segment ``i`` (``bounds[i]:bounds[i+1]``) from participant ``i``.

        Equal segments: each device's own segment is copied to a scratch buffer (on its stream), then one
        ``HcclAllGather`` into place. Unequal ones: one ``HcclBroadcast`` per segment from its owner.
        """
        self._check(bufs)
        dtype = bufs[0].dtype
        htype, per = _move_form(dtype)
        k = _equal_segments(bounds)
        if k:
            scratch = [b.device.empty((k,), dtype) for b in bufs]
            for i, (b, s) in enumerate(zip(bufs, scratch, strict=True)):
                b.device.copy(s, segment(b, bounds[i], bounds[i + 1]))
            first = bounds[0] * dtype.itemsize
            self._round("HcclAllGather", [
                (ctypes.c_void_p(_ptr(s)), ctypes.c_void_p(_ptr(b) + first), ctypes.c_uint64(k * per), _c_enum(htype))
                for b, s in zip(bufs, scratch, strict=True)])
            return
        for j in range(len(bounds) - 1):
            lo, n = bounds[j], bounds[j + 1] - bounds[j]
            if n:
                ptrs = [_ptr(b) + lo * dtype.itemsize for b in bufs]
                self._round("HcclBroadcast", [(ctypes.c_void_p(p), ctypes.c_uint64(n * per), _c_enum(htype),
                                               ctypes.c_uint32(j)) for p in ptrs])

    def copy(self, dst: Array, src: Array) -> None:
        """``dst`` := ``src`` (any two devices; the destination device's copy)."""
        dst.device.copy(dst, src)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the worker threads and destroy the communicators (once); raise for a failed destroy."""
        results = self._finalizer()
        if results:
            failures = [(d.id, r) for d, r in zip(self.devices, results, strict=True) if r != HCCL_SUCCESS]
            if failures:
                raise HcclError("HcclCommDestroy", failures)

    def __repr__(self) -> str:
        return f"<HcclTransport {[d.id for d in self.devices]}>"
