"""HCCL between processes: one NPU per MPI rank (the usual Ascend deployment), as an inter transport.

:class:`HcclRankTransport` is an :class:`~dsrt.collective.mpi.MpiTransport` (so every host-staged
operation still runs through MPI) that additionally reduces and broadcasts NPU device arrays directly
with HCCL, through the documented multi-process API of CANN's ``libhccl.so``:

1. rank 0 calls ``HcclGetRootInfo(HcclRootInfo*)`` (an opaque 4108-byte struct);
2. the root info goes to every rank over the transport's own MPI communicator (a nonblocking
   broadcast polled against the collective's deadline, like every MPI operation of the transport;
   rank 0's HcclResult travels with it, so a failure there is reported on every rank);
3. every rank calls ``HcclCommInitRootInfo(nRanks, &rootInfo, rank, &comm)`` with its device's ACL
   context current (HCCL rank = MPI rank);
4. collectives are ``HcclAllReduce`` / ``HcclBroadcast`` on the device's dsrt stream
   (``device.default_stream.native``, the ACL stream), ordered after the copies and kernels queued
   there; torch_npu work on the device is fenced first;
5. :meth:`HcclRankTransport.close` calls ``HcclCommDestroy``.

The HCCL communicator is created lazily, by the first device collective: the inter factory gets only
the mpi4py communicator, and the array names the device. Every HcclResult is checked; a non-zero one
becomes :class:`~dsrt_npu.hccl.HcclError` (code, meaning, the device and rank).

Timeouts: HCCL calls only enqueue work; a rank that never arrives would show up as a stream that never
drains. So before enqueuing, every device collective first waits for all ranks to arrive at it with a
nonblocking MPI barrier polled against the deadline (``MpiTransport.arrive``): a missing rank
produces the usual :class:`~dsrt.errors.CollectiveError` naming it, and nothing is enqueued. The
communicator then waits for the device's stream against the same deadline.

Dtypes and operators: what :func:`dsrt_npu.hccl._reduce_form` says HCCL reduces (int8, int16, int32,
int64, float16, float32, bfloat16 with sum/prod/max/min, except prod in int16 and bfloat16; complex64
sums as float32 pairs). For anything else :meth:`~HcclRankTransport.device_all_reduce` returns None
and the communicator's host-staged MPI path runs. Broadcast moves every dtype (those without an HCCL
type as bytes). The decision depends only on the dtype, operator and size, which every rank shares,
so all ranks take the same path.

Sizes: counts are elements of the HCCL data type; pointers are ACL device addresses; times are
seconds on ``time.perf_counter``.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from dsrt.array import Array
from dsrt.collective.mpi import MpiTransport, mpi_available
from dsrt.errors import ConfigurationError

from . import hccl
from .hccl import (
    HCCL_OPS,
    HCCL_ROOT_INFO_BYTES,
    HCCL_SUCCESS,
    HcclError,
    HcclRootInfo,
    _c_enum,
    _move_form,
    _ptr,
    _reduce_form,
    error_texts,
    find_hccl,
)

__all__ = ["HcclRankTransport", "hccl_ranks_applies"]

_CODE_BYTES = 4  # rank 0's HcclGetRootInfo result, sent ahead of the root info


def hccl_ranks_applies(devices: Sequence[Any]) -> bool:
    """True when mpi4py imports, every device is an :class:`~dsrt_npu.device.NpuDevice` and
    ``libhccl.so`` is in the CANN install. Cheap: an import check and file-system lookups, nothing loaded."""
    if not devices or any(getattr(d.info, "backend", None) != "npu" for d in devices):
        return False
    from .device import NpuDevice

    if not all(isinstance(d, NpuDevice) for d in devices) or not mpi_available():
        return False
    return find_hccl() is not None


def _destroy(lib: Any, comm: ctypes.c_void_p) -> int:
    """HcclCommDestroy's result for ``comm``."""
    return int(lib.HcclCommDestroy(comm))


class HcclRankTransport(MpiTransport):
    """MPI between ranks, plus HCCL for NPU device arrays (one NPU per rank).

    - ``comm``: the mpi4py communicator (``None``: the world); duplicated and owned as by MpiTransport.
    - ``lib``: the HCCL library handle; default :func:`dsrt_npu.hccl.load_hccl`, called when the first
      device collective needs it (anything with the C API's function names works: the tests pass an
      emulation).

    Owns its HCCL communicator (created by the first device collective, bound to that array's NPU) and
    the MPI duplicates; :meth:`close` releases both. Buffers are borrowed for the duration of a call.
    """

    name = "hccl-mpi"

    def __init__(self, comm: Any = None, lib: Any = None) -> None:
        super().__init__(comm)
        self._lib = lib
        self._hccl: ctypes.c_void_p | None = None
        self._device: Any = None
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------ plumbing
    def _library(self) -> Any:
        if self._lib is None:
            self._lib = hccl.load_hccl()  # looked up at call time: tests replace it
        return self._lib

    def _raise(self, call: str, code: int, where: str) -> None:
        raise HcclError(call, [(where, code)], library_text=error_texts(self._library(), [code]))

    def _where(self, device: Any) -> str:
        return f"{device.id} (rank {self.rank})"

    def _take(self, device: Any) -> bool:
        """True when ``device`` is an NPU this transport can run HCCL on (the one it is bound to, once bound)."""
        from .device import NpuDevice

        if not isinstance(device, NpuDevice):
            return False
        if self._device is not None and device is not self._device:
            raise ConfigurationError(f"the HCCL communicator of this transport is bound to {self._device.id}; "
                                     f"a collective on {device.id} needs a transport of its own")
        return True

    def _communicator(self, device: Any, deadline: float | None, what: str) -> ctypes.c_void_p:
        """The HCCL communicator, created on first use by every rank together (see the module docstring)."""
        if self._hccl is not None:
            return self._hccl
        lib = self._library()
        setup = f"{what}: HCCL communicator setup (root info from rank 0)"
        packet = np.zeros(_CODE_BYTES + HCCL_ROOT_INFO_BYTES, np.uint8)
        if self.rank == 0:
            info = HcclRootInfo()
            device._bind()
            code = int(lib.HcclGetRootInfo(ctypes.pointer(info)))
            packet[:_CODE_BYTES].view(np.int32)[0] = code
            if code == HCCL_SUCCESS:
                packet[_CODE_BYTES:] = np.frombuffer(ctypes.string_at(ctypes.addressof(info), HCCL_ROOT_INFO_BYTES),
                                                     np.uint8)
        self.wait([self.comm.Ibcast(packet, root=0)], deadline, setup)
        code = int(packet[:_CODE_BYTES].view(np.int32)[0])
        if code != HCCL_SUCCESS:
            self._raise("HcclGetRootInfo", code, "rank 0")
        info = HcclRootInfo.from_buffer_copy(packet[_CODE_BYTES:].tobytes())
        handle = ctypes.c_void_p()
        device._bind()
        code = int(lib.HcclCommInitRootInfo(ctypes.c_uint32(self.size), ctypes.pointer(info),
                                            ctypes.c_uint32(self.rank), ctypes.pointer(handle)))
        if code != HCCL_SUCCESS:
            self._raise("HcclCommInitRootInfo", code, self._where(device))
        self._hccl = handle
        self._device = device
        self._finalizer = weakref.finalize(self, _destroy, lib, handle)
        # At interpreter exit ACL may already be finalized; the process teardown frees HCCL's resources.
        self._finalizer.atexit = False
        return handle

    def _enqueue(self, call: str, device: Any, args: tuple[Any, ...]) -> None:
        """``call(*args, comm, stream)`` on ``device``'s stream with its context current; checked."""
        comm = self._hccl
        assert comm is not None
        device._fence()  # torch_npu work on these buffers lands before HCCL reads them
        device._bind()
        stream = ctypes.c_void_p(int(device.default_stream.native))
        code = int(getattr(self._library(), call)(*args, comm, stream))
        if code != HCCL_SUCCESS:
            self._raise(call, code, self._where(device))

    # ------------------------------------------------------------------ device collectives
    def device_all_reduce(self, send: Array | None, recv: Array, kernel: str, *, deadline: float | None,
                          what: str) -> str | None:
        """``recv`` := the reduction over ranks of ``send`` (``None``: in place, of ``recv``), with HCCL.

        Both are flat, contiguous arrays on this rank's NPU, in the dtype the reduction runs in.
        Returns ``"hccl"`` once the call is enqueued on the device's stream (the caller waits for the
        stream), or ``None``, having done nothing, when HCCL cannot take it: not an NPU array, a
        dtype/operator HCCL does not reduce, or no elements. Waits for every rank first (a missing one
        raises :class:`~dsrt.errors.CollectiveError` naming it).
        """
        device = recv.device
        if not self._take(device) or (send is not None and send.device is not device):
            return None
        form = _reduce_form(recv.dtype, kernel)
        if form is None or recv.size == 0:
            return None
        htype, per = form
        self.arrive(deadline, what)
        self._communicator(device, deadline, what)
        src = _ptr(recv if send is None else send)
        self._enqueue("HcclAllReduce", device, (ctypes.c_void_p(src), ctypes.c_void_p(_ptr(recv)),
                                                ctypes.c_uint64(recv.size * per), _c_enum(htype),
                                                _c_enum(HCCL_OPS[kernel])))
        return "hccl"

    def device_broadcast(self, buf: Array, root: int, *, deadline: float | None, what: str) -> str | None:
        """``buf`` := rank ``root``'s ``buf`` (flat, contiguous, on this rank's NPU, any dtype), with HCCL.

        Returns ``"hccl"`` once enqueued on the device's stream, or ``None`` (nothing done) for an array
        that is not on an NPU or has no elements. Waits for every rank first, like :meth:`device_all_reduce`.
        """
        device = buf.device
        if not self._take(device) or buf.size == 0:
            return None
        htype, per = _move_form(buf.dtype)
        self.arrive(deadline, what)
        self._communicator(device, deadline, what)
        self._enqueue("HcclBroadcast", device, (ctypes.c_void_p(_ptr(buf)), ctypes.c_uint64(buf.size * per),
                                                _c_enum(htype), ctypes.c_uint32(root)))
        return "hccl"

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Destroy the HCCL communicator (once; raises HcclError for a failed destroy), then free the MPI
        duplicates."""
        try:
            code = self._finalizer() if self._finalizer is not None else None
            if code is not None and code != HCCL_SUCCESS:
                self._raise("HcclCommDestroy", code, self._where(self._device))
        finally:
            super().close()

    def __repr__(self) -> str:
        bound = self._device.id if self._device is not None else "no HCCL communicator yet"
        return f"<HcclRankTransport rank {self.rank}/{self.size}, {bound}>"
