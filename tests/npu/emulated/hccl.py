"""An emulated libhccl for dsrt's tests. It lives in the test suite only.

``EmulatedHccl(acl)`` has the C API's function names (``HcclCommInitAll``, ``HcclAllReduce``,
``HcclBroadcast``, ``HcclReduceScatter``, ``HcclAllGather``, ``HcclReduce``, ``HcclCommDestroy``,
``HcclGetErrorString``), takes what ctypes passes (each argument as its declared ctypes type or a plain
int, arrays for ``HcclCommInitAll``) and returns HcclResult ints, working on the emulated acl's device
memory and streams. It is written from the CANN HCCL API reference, not from dsrt's transport.

Semantics:

- It emulates an Atlas A2 (Ascend 910B): reductions in int8, int16, int32, int64, fp16, fp32 and bfp16,
  ``prod`` not in int16 or bfp16 (others return HCCL_E_NOT_SUPPORT); broadcast and all-gather in every
  HcclDataType. ReduceScatter and AllGather need disjoint send and receive buffers.
- The communicators of one ``HcclCommInitAll`` form a group. A collective happens once every rank of
  the group has made the call, each from its own thread with the context of the comm's device current
  and on a stream of that device; the k-th call of every rank must be the same function with the same
  count, data type, op and root. A rank waits for its peers up to ``timeout`` seconds, then every waiting
  rank fails with AssertionError naming the ranks that never came (so calls made one after the other
  from one thread fail loudly).
- The last rank to arrive first runs every participant's stream up to this point (earlier queued
  copies land: stream order), reads all send buffers, computes in rank order in the data type, and
  queues the writes of the results on each participant's stream; like the emulated acl's other
  asynchronous work, they land when that stream is synchronized.
- Anything it does not know (a function, an argument type, a handle, a pointer outside device memory)
  fails loudly with AssertionError.
- ``_inject(call, code, rank=None)`` makes the next ``call`` return ``code``: on every rank of that
  collective, or, with ``rank``, on that rank only; then the peers' calls return HCCL_SUCCESS and the
  collective never happens (on hardware their streams would stall until HCCL's execution timeout).

``calls`` records ``(function, rank, arguments)`` of every collective call; each is also appended to the
acl's ``state.calls`` as ``"hccl.<function>"``, one timeline with the ACL calls.

Between processes (one NPU per process, under a real mpiexec; mpi4py is imported only here):

- ``HcclGetRootInfo(HcclRootInfo*)`` fills the 4108 bytes with fresh random bytes (after a marker) and
  remembers them; ``HcclCommInitRootInfo(nRanks, HcclRootInfo*, rank, HcclComm*)`` is collective over
  the processes of ``world`` (default COMM_WORLD): ``nRanks`` must be their number, the ranks given must
  be 0..nRanks-1 once each, and every process's root info must be exactly the bytes the rank-0 process
  produced (and has not used for another communicator yet), else AssertionError on every process. The
  calling thread needs a current ACL context; its device is the communicator's.
- ``HcclAllReduce`` and ``HcclBroadcast`` on such a communicator check their arguments like the
  intra-process ones (same codes for count 0, unsupported reductions and bad roots; in place or disjoint
  buffers), then run the stream's queued work so far (stream order), check that every process made the
  same call with the same count, data type, op and root, move the data with mpi4py on a private
  duplicate of ``world`` (reductions fold in HCCL rank order in the data type, as above) and queue the
  write of the result on the stream. A process that waits more than ``timeout`` seconds for its peers
  fails with AssertionError. The other collectives are not emulated for these communicators.
- ``_inject`` works per process (``rank``: the HCCL rank of this process's communicator).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

SUCCESS, E_PARA, E_PTR, E_NOT_SUPPORT = 0, 1, 2, 5
_NAMES = {0: "HCCL_SUCCESS", 1: "HCCL_E_PARA", 2: "HCCL_E_PTR", 3: "HCCL_E_MEMORY", 4: "HCCL_E_INTERNAL",
          5: "HCCL_E_NOT_SUPPORT", 6: "HCCL_E_NOT_FOUND", 7: "HCCL_E_UNAVAIL", 8: "HCCL_E_SYSCALL",
          9: "HCCL_E_TIMEOUT", 10: "HCCL_E_OPEN_FILE_FAILURE", 11: "HCCL_E_TCP_CONNECT", 12: "HCCL_E_ROCE_CONNECT",
          13: "HCCL_E_TCP_TRANSFER", 14: "HCCL_E_ROCE_TRANSFER", 15: "HCCL_E_RUNTIME", 16: "HCCL_E_DRV",
          17: "HCCL_E_PROFILING", 18: "HCCL_E_CCE", 19: "HCCL_E_NETWORK", 20: "HCCL_E_AGAIN", 21: "HCCL_E_REMOTE",
          22: "HCCL_E_SUSPENDING", 23: "HCCL_E_OPRETRY_FAIL", 24: "HCCL_E_OOM"}
#: HcclDataType -> numpy dtype.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.int8), 1: np.dtype(np.int16), 2: np.dtype(np.int32), 3: np.dtype(np.float16),
    4: np.dtype(np.float32), 5: np.dtype(np.int64), 6: np.dtype(np.uint64), 7: np.dtype(np.uint8),
    8: np.dtype(np.uint16), 9: np.dtype(np.uint32), 10: np.dtype(np.float64), 11: np.dtype(ml_dtypes.bfloat16),
}
#: HcclReduceOp -> ufunc.
OPS = {0: np.add, 1: np.multiply, 2: np.maximum, 3: np.minimum}
_REDUCIBLE = {0, 1, 2, 3, 4, 5, 11}
_NO_PROD = {1, 11}
_FUNCTIONS = ("HcclCommInitAll", "HcclAllReduce", "HcclBroadcast", "HcclReduceScatter", "HcclAllGather",
              "HcclReduce", "HcclCommDestroy", "HcclGetErrorString", "HcclGetRootInfo", "HcclCommInitRootInfo")
#: sizeof(HcclRootInfo) (hccl_types.h: char internal[HCCL_ROOT_INFO_BYTES], 4108).
ROOT_INFO_BYTES = 4108
_ROOT_MARK = b"emulated-hccl-root-info:"
#: Call numbers in the per-collective header processes compare.
_RANK_CALLS = {"HcclAllReduce": 1, "HcclBroadcast": 2}


def _fold(values: list[np.ndarray], op: int, dtype: np.dtype) -> np.ndarray:
    """``values`` combined with HcclReduceOp ``op`` in list order, every step rounded to ``dtype``."""
    acc = values[0].copy()
    for v in values[1:]:
        acc = OPS[op](acc, v).astype(dtype)
    return acc


def _pointee(arg: Any, size: int, what: str) -> Any:
    """The object a ctypes pointer argument points to, which must be ``size`` bytes."""
    assert isinstance(arg, ctypes._Pointer), \
        f"emulated hccl: {what} must be a ctypes pointer, got {type(arg).__name__} {arg!r}"
    assert ctypes.sizeof(arg._type_) == size, \
        f"emulated hccl: {what} points to {ctypes.sizeof(arg._type_)} bytes, expected {size}"
    return arg.contents


def _value(arg: Any, ctype: type, what: str) -> int:
    """What ctypes would pass for an argument declared ``ctype``: an instance of it or a plain int."""
    if isinstance(arg, ctype):
        v = arg.value  # type: ignore[attr-defined]
        return 0 if v is None else int(v)
    if type(arg) is int:
        return arg
    raise AssertionError(f"emulated hccl: {what} must be {ctype.__name__} or int, got {type(arg).__name__} {arg!r}")


def _unsigned(arg: Any, ctype: type, bits: int, what: str) -> int:
    v = _value(arg, ctype, what)
    assert 0 <= v < 1 << bits, f"emulated hccl: {what}={v} out of range for {ctype.__name__}"
    return v


@dataclass
class _Part:
    call: str
    rank: int
    stream: int
    params: tuple[Any, ...]
    send: int
    recv: int


@dataclass
class _Collective:
    call: str
    size: int
    parts: dict[int, _Part] = field(default_factory=dict)
    left: int = 0
    done: bool = False
    aborted: bool = False
    failed: str = ""
    fail: tuple[int, int | None] | None = None


@dataclass
class _RankComm:
    """One process's communicator from HcclCommInitRootInfo."""

    rank: int
    size: int
    device: int
    mpi: Any  # private duplicate of the world communicator (owned)
    order: list[int]  # order[hccl rank] = that process's rank in ``mpi``
    alive: bool = True


@dataclass
class _Group:
    devices: list[int]
    comms: list[int]
    alive: list[bool]
    next_seq: list[int]
    pending: dict[int, _Collective] = field(default_factory=dict)


class EmulatedHccl:
    """libhccl over the emulated ``acl`` module given (see the module docstring)."""

    def __init__(self, acl: Any, *, timeout: float = 10.0, world: Any = None) -> None:
        self.acl = acl
        self.timeout = timeout
        self._world = world
        self._rank_comms: dict[int, _RankComm] = {}
        #: Root infos this process made with HcclGetRootInfo and no communicator has used yet.
        self.root_infos: list[bytes] = []
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        self.inject: dict[str, tuple[int, int | None]] = {}
        self._cond = threading.Condition()
        self._handles = itertools.count(0x4C0000)
        self._comms: dict[int, tuple[_Group, int]] = {}
        self.groups: list[_Group] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AssertionError(f"emulated hccl: unknown function {name}")

    def _inject(self, call: str, code: int, rank: int | None = None) -> None:
        """Make the next ``call`` (e.g. 'HcclAllReduce') return ``code`` (on ``rank`` only, if given)."""
        assert call in _FUNCTIONS, f"emulated hccl: cannot inject into unknown function {call}"
        self.inject[call] = (code, rank)

    # ------------------------------------------------------------------ communicators
    def HcclCommInitAll(self, ndev: Any, devices: Any, comms: Any) -> int:
        n = _unsigned(ndev, ctypes.c_uint32, 32, "ndev")
        assert isinstance(devices, ctypes.Array) and devices._type_ is ctypes.c_int32 and len(devices) >= n, \
            f"emulated hccl: devices must be an int32_t[{n}] array, got {devices!r}"
        assert isinstance(comms, ctypes.Array) and comms._type_ is ctypes.c_void_p and len(comms) >= n, \
            f"emulated hccl: comms must be an HcclComm[{n}] array, got {comms!r}"
        with self._cond:
            self.acl.state.calls.append("hccl.HcclCommInitAll")
            injected = self.inject.pop("HcclCommInitAll", None)
            if injected is not None:
                return injected[0]
            ids = [int(devices[i]) for i in range(n)]
            if n == 0 or len(set(ids)) != n or any(not 0 <= i < self.acl.state.devices for i in ids):
                return E_PARA
            handles = [next(self._handles) * 0x100 for _ in range(n)]
            group = _Group(ids, handles, [True] * n, [0] * n)
            self.groups.append(group)
            for rank, h in enumerate(handles):
                self._comms[h] = (group, rank)
                comms[rank] = h
            return SUCCESS

    def HcclCommDestroy(self, comm: Any) -> int:
        handle = _value(comm, ctypes.c_void_p, "comm")
        with self._cond:
            self.acl.state.calls.append("hccl.HcclCommDestroy")
            if (injected := self.inject.pop("HcclCommDestroy", None)) is not None:
                return injected[0]
            rc = self._rank_comms.get(handle)
            if rc is not None:
                assert rc.alive, f"emulated hccl: HcclComm {handle:#x} was destroyed"
                rc.alive = False
                rc.mpi.Free()
                return SUCCESS
            group, rank = self._group(handle)
            group.alive[rank] = False
            return SUCCESS

    def HcclGetErrorString(self, code: Any) -> bytes:
        c = _value(code, ctypes.c_int, "code")
        return (_NAMES.get(c, "HCCL_E_RESERVED") + " (emulated)").encode()

    def _group(self, handle: int) -> tuple[_Group, int]:
        assert handle not in self._rank_comms, \
            f"emulated hccl: HcclComm {handle:#x} is from HcclCommInitRootInfo: only HcclAllReduce and HcclBroadcast " \
            "are emulated on it"
        found = self._comms.get(handle)
        assert found is not None, f"emulated hccl: unknown HcclComm {handle:#x}"
        group, rank = found
        assert group.alive[rank], f"emulated hccl: HcclComm {handle:#x} was destroyed"
        return group, rank

    # ------------------------------------------------------------------ collectives
    def HcclAllReduce(self, send: Any, recv: Any, count: Any, dtype: Any, op: Any, comm: Any,
                      stream: Any) -> int:
        n, d, o = self._count(count), self._dtype(dtype), self._op(op)
        if (rc := self._rank_comm(comm)) is not None:
            return self._rank_call("HcclAllReduce", rc, stream, (n, d, o, 0), send, recv, reduce=(d, o))
        return self._call("HcclAllReduce", comm, stream, (n, d, o), send, recv, n, n, reduce=(d, o))

    def HcclReduce(self, send: Any, recv: Any, count: Any, dtype: Any, op: Any, root: Any,
                   comm: Any, stream: Any) -> int:
        n, d, o = self._count(count), self._dtype(dtype), self._op(op)
        r = _unsigned(root, ctypes.c_uint32, 32, "root")
        return self._call("HcclReduce", comm, stream, (n, d, o, r), send, recv, n, n, reduce=(d, o), root=r)

    def HcclBroadcast(self, buf: Any, count: Any, dtype: Any, root: Any, comm: Any, stream: Any) -> int:
        n, d = self._count(count), self._dtype(dtype)
        r = _unsigned(root, ctypes.c_uint32, 32, "root")
        if (rc := self._rank_comm(comm)) is not None:
            return self._rank_call("HcclBroadcast", rc, stream, (n, d, -1, r), buf, buf, root=r)
        return self._call("HcclBroadcast", comm, stream, (n, d, r), buf, buf, n, n, root=r)

    def HcclReduceScatter(self, send: Any, recv: Any, recv_count: Any, dtype: Any, op: Any, comm: Any,
                          stream: Any) -> int:
        n, d, o = self._count(recv_count), self._dtype(dtype), self._op(op)
        return self._call("HcclReduceScatter", comm, stream, (n, d, o), send, recv, -n, n, reduce=(d, o), disjoint=True)

    def HcclAllGather(self, send: Any, recv: Any, send_count: Any, dtype: Any, comm: Any,
                      stream: Any) -> int:
        n, d = self._count(send_count), self._dtype(dtype)
        return self._call("HcclAllGather", comm, stream, (n, d), send, recv, n, -n, disjoint=True)

    @staticmethod
    def _count(arg: Any) -> int:
        return _unsigned(arg, ctypes.c_uint64, 64, "count")

    @staticmethod
    def _dtype(arg: Any) -> int:
        v = _value(arg, ctypes.c_int, "HcclDataType")
        assert v in DTYPES, f"emulated hccl: unknown HcclDataType {v}"
        return v

    @staticmethod
    def _op(arg: Any) -> int:
        v = _value(arg, ctypes.c_int, "HcclReduceOp")
        assert v in OPS, f"emulated hccl: unknown HcclReduceOp {v}"
        return v

    def _call(self, call: str, comm: Any, stream: Any, params: tuple[Any, ...], send: Any, recv: Any,
              send_count: int, recv_count: int, *, reduce: tuple[int, int] | None = None, root: int | None = None,
              disjoint: bool = False) -> int:
        """Check one rank's call, wait for its peers, and let the last one run the collective.

        ``send_count``/``recv_count``: elements of each buffer; negative means that many times the group size.
        """
        handle = _value(comm, ctypes.c_void_p, "comm")
        s = _value(stream, ctypes.c_void_p, "stream")
        send_ptr = _value(send, ctypes.c_void_p, "send buffer")
        recv_ptr = _value(recv, ctypes.c_void_p, "recv buffer")
        with self._cond:
            group, rank = self._group(handle)
            size = len(group.devices)
            self.calls.append((call, rank, {"params": params, "send": send_ptr, "recv": recv_ptr, "stream": s}))
            self.acl.state.calls.append(f"hccl.{call}")
            device = group.devices[rank]
            here = self.acl._thread_device()
            assert here == device, (f"emulated hccl: {call} for rank {rank} (device {device}) issued from a thread "
                                    f"whose current ACL context is {'none' if here is None else f'on device {here}'}")
            assert s in self.acl.state.streams, f"emulated hccl: {call}: unknown stream {s}"
            assert self.acl._stream_device(s) == device, \
                f"emulated hccl: {call}: stream {s} is not a stream of device {device}"
            if params[0] == 0:
                return E_PARA
            if reduce is not None and (reduce[0] not in _REDUCIBLE or (reduce[1] == 1 and reduce[0] in _NO_PROD)):
                return E_NOT_SUPPORT
            if root is not None and root >= size:
                return E_PARA
            item = DTYPES[params[1]].itemsize
            send_bytes = (send_count if send_count > 0 else -send_count * size) * item
            recv_bytes = (recv_count if recv_count > 0 else -recv_count * size) * item
            if not send_ptr or not recv_ptr:
                return E_PTR
            self.acl._device_view(send_ptr, send_bytes)  # asserts both lie in device memory
            self.acl._device_view(recv_ptr, recv_bytes)
            overlap = send_ptr < recv_ptr + recv_bytes and recv_ptr < send_ptr + send_bytes
            assert not overlap or (not disjoint and send_ptr == recv_ptr), \
                f"emulated hccl: {call}: send and receive buffers overlap"

            seq = group.next_seq[rank]
            group.next_seq[rank] += 1
            coll = group.pending.get(seq)
            if coll is None:
                coll = group.pending[seq] = _Collective(call, size)
                if call in self.inject:
                    coll.fail = self.inject.pop(call)
            try:
                return self._join(group, seq, coll, _Part(call, rank, s, params, send_ptr, recv_ptr))
            finally:
                coll.left += 1
                if coll.left == size:
                    del group.pending[seq]

    def _join(self, group: _Group, seq: int, coll: _Collective, part: _Part) -> int:
        """Called with the lock held: this rank's part of collective number ``seq`` of ``group``."""
        if coll.call != part.call:
            coll.failed = (f"emulated hccl: collective #{seq} is {coll.call} on rank(s) {sorted(coll.parts)} "
                           f"but {part.call} on rank {part.rank}")
        if coll.fail is not None:
            code, only = coll.fail
            if only is None or only == part.rank:
                if only is not None:
                    coll.aborted = True
                    self._cond.notify_all()
                return code
        if coll.aborted:
            return SUCCESS
        first = next(iter(coll.parts.values()), None)
        if not coll.failed and first is not None and first.params != part.params:
            coll.failed = (f"emulated hccl: collective #{seq} is {coll.call}{first.params} on rank {first.rank} "
                           f"but {coll.call}{part.params} on rank {part.rank}")
        coll.parts[part.rank] = part
        if not coll.failed and len(coll.parts) == coll.size:
            try:
                self._run(coll)
            except AssertionError as exc:
                coll.failed = str(exc)
            coll.done = True
            self._cond.notify_all()
        deadline = time.monotonic() + self.timeout
        while not (coll.done or coll.aborted or coll.failed):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(coll.size)) - set(coll.parts))
                coll.failed = (f"emulated hccl: {coll.call} (collective #{seq}) waited {self.timeout} s for rank(s) "
                               f"{missing} of devices {[group.devices[r] for r in missing]}: the calls of one "
                               "process's NPUs must be issued concurrently, one thread per device")
                self._cond.notify_all()
                break
            self._cond.wait(left)
        if coll.failed:
            self._cond.notify_all()
            raise AssertionError(coll.failed)
        return SUCCESS

    def _run(self, coll: _Collective) -> None:
        """Every rank is here: earlier stream work lands, results are computed and queued on the streams."""
        parts = [coll.parts[r] for r in range(coll.size)]
        for p in parts:
            self.acl._drain(p.stream)
        params = parts[0].params
        count, dtype = params[0], DTYPES[params[1]]
        size = coll.size

        def read(ptr: int, n: int) -> np.ndarray:
            return self.acl._device_view(ptr, n * dtype.itemsize).view(dtype).copy()

        def fold(values: list[np.ndarray], op: int) -> np.ndarray:
            return _fold(values, op, dtype)

        results: dict[int, np.ndarray] = {}
        if coll.call == "HcclAllReduce":
            out = fold([read(p.send, count) for p in parts], params[2])
            results = {p.rank: out for p in parts}
        elif coll.call == "HcclReduce":
            results = {params[3]: fold([read(p.send, count) for p in parts], params[2])}
        elif coll.call == "HcclBroadcast":
            data = read(parts[params[2]].send, count)
            results = {p.rank: data for p in parts}
        elif coll.call == "HcclReduceScatter":
            total = fold([read(p.send, count * size) for p in parts], params[2])
            results = {p.rank: total[p.rank * count:(p.rank + 1) * count] for p in parts}
        elif coll.call == "HcclAllGather":
            data = np.concatenate([read(p.send, count) for p in parts])
            results = {p.rank: data for p in parts}
        else:
            raise AssertionError(f"emulated hccl: no semantics for {coll.call}")
        for rank, value in results.items():
            p = coll.parts[rank]
            self.acl._enqueue(p.stream, self._writer(p.recv, np.ascontiguousarray(value)))

    def _writer(self, ptr: int, value: np.ndarray) -> Any:
        def write() -> None:
            self.acl._device_view(ptr, value.nbytes)[...] = value.view(np.uint8).reshape(-1)
        return write

    # ------------------------------------------------------------------ between processes
    def _mpi(self) -> tuple[Any, Any]:
        """``(MPI, world)``: mpi4py, imported on first use, and the process group of rank communicators."""
        from mpi4py import MPI

        if self._world is None:
            self._world = MPI.COMM_WORLD
        return MPI, self._world

    def _poll(self, reqs: list[Any], what: str) -> None:
        """Wait for mpi4py requests up to ``timeout`` seconds, then fail loudly."""
        MPI, _ = self._mpi()
        deadline = time.monotonic() + self.timeout
        while not MPI.Request.Testall(reqs):
            if time.monotonic() > deadline:
                raise AssertionError(f"emulated hccl: {what}: waited {self.timeout} s for the other processes "
                                     "(a rank that never made the call: nothing guarded against it)")
            time.sleep(0.0002)

    def _rank_comm(self, comm: Any) -> _RankComm | None:
        rc = self._rank_comms.get(_value(comm, ctypes.c_void_p, "comm"))
        assert rc is None or rc.alive, "emulated hccl: HcclComm was destroyed"
        return rc

    def HcclGetRootInfo(self, root_info: Any) -> int:
        target = _pointee(root_info, ROOT_INFO_BYTES, "rootInfo")
        with self._cond:
            self.acl.state.calls.append("hccl.HcclGetRootInfo")
            if (injected := self.inject.pop("HcclGetRootInfo", None)) is not None:
                return injected[0]
            assert self.acl._thread_device() is not None, \
                "emulated hccl: HcclGetRootInfo from a thread without a current ACL context"
            data = _ROOT_MARK + os.urandom(ROOT_INFO_BYTES - len(_ROOT_MARK))
            ctypes.memmove(ctypes.addressof(target), data, ROOT_INFO_BYTES)
            self.root_infos.append(data)
            return SUCCESS

    def HcclCommInitRootInfo(self, n_ranks: Any, root_info: Any, rank: Any, comm: Any) -> int:
        n = _unsigned(n_ranks, ctypes.c_uint32, 32, "nRanks")
        r = _unsigned(rank, ctypes.c_uint32, 32, "rank")
        got = ctypes.string_at(ctypes.addressof(_pointee(root_info, ROOT_INFO_BYTES, "rootInfo")), ROOT_INFO_BYTES)
        out = _pointee(comm, ctypes.sizeof(ctypes.c_void_p), "comm")
        assert isinstance(out, ctypes.c_void_p), f"emulated hccl: comm must point to an HcclComm, got {out!r}"
        with self._cond:
            self.acl.state.calls.append("hccl.HcclCommInitRootInfo")
            if (injected := self.inject.pop("HcclCommInitRootInfo", None)) is not None:
                return injected[0]
            device = self.acl._thread_device()
            assert device is not None, "emulated hccl: HcclCommInitRootInfo from a thread without a current ACL context"
            if n == 0 or r >= n:
                return E_PARA
            _MPI, world = self._mpi()
            assert n == world.Get_size(), f"emulated hccl: nRanks={n}, but {world.Get_size()} processes take part"
            private, req = world.Idup()
            self._poll([req], "HcclCommInitRootInfo (duplicating the process group)")
            made = self.root_infos[-1] if r == 0 and self.root_infos else bytes(ROOT_INFO_BYTES)
            mine = np.frombuffer(np.array([r, n, r == 0 and bool(self.root_infos)], np.int64).tobytes()
                                 + got + made, np.uint8)
            table = np.empty((n, mine.size), np.uint8)
            self._poll([private.Iallgather(mine, table)], "HcclCommInitRootInfo")
            heads = table[:, :24].copy().view(np.int64)
            ranks = [int(h[0]) for h in heads]
            assert sorted(ranks) == list(range(n)) and all(int(h[1]) == n for h in heads), \
                f"emulated hccl: HcclCommInitRootInfo ranks {ranks} / nRanks {[int(h[1]) for h in heads]}"
            root = ranks.index(0)
            assert heads[root][2], "emulated hccl: rank 0 never called HcclGetRootInfo (or used its root info up)"
            produced = table[root, 24 + ROOT_INFO_BYTES:].tobytes()
            wrong = [ranks[p] for p in range(n) if table[p, 24:24 + ROOT_INFO_BYTES].tobytes() != produced]
            if wrong:
                private.Free()
                raise AssertionError(f"emulated hccl: HcclCommInitRootInfo on rank(s) {wrong} got a root info that is not "
                                     "the one rank 0's HcclGetRootInfo produced")
            if r == 0:
                self.root_infos.pop()  # one communicator per root info
            handle = next(self._handles) * 0x100
            order = [ranks.index(k) for k in range(n)]
            self._rank_comms[handle] = _RankComm(r, n, device, private, order)
            out.value = handle
            return SUCCESS

    def _rank_call(self, call: str, rc: _RankComm, stream: Any, params: tuple[int, int, int, int], send: Any,
                   recv: Any, *, reduce: tuple[int, int] | None = None, root: int | None = None) -> int:
        """One process's collective on a rank communicator; ``params`` = (count, dtype, op or -1, root)."""
        s = _value(stream, ctypes.c_void_p, "stream")
        send_ptr = _value(send, ctypes.c_void_p, "send buffer")
        recv_ptr = _value(recv, ctypes.c_void_p, "recv buffer")
        with self._cond:
            self.calls.append((call, rc.rank, {"params": params, "send": send_ptr, "recv": recv_ptr, "stream": s}))
            self.acl.state.calls.append(f"hccl.{call}")
            here = self.acl._thread_device()
            assert here == rc.device, (f"emulated hccl: {call} for rank {rc.rank} (device {rc.device}) issued from a "
                                       f"thread whose current ACL context is {'none' if here is None else f'on device {here}'}")
            assert s in self.acl.state.streams, f"emulated hccl: {call}: unknown stream {s}"
            assert self.acl._stream_device(s) == rc.device, \
                f"emulated hccl: {call}: stream {s} is not a stream of device {rc.device}"
            count, dtype_code = params[0], params[1]
            if count == 0:
                return E_PARA
            if reduce is not None and (reduce[0] not in _REDUCIBLE or (reduce[1] == 1 and reduce[0] in _NO_PROD)):
                return E_NOT_SUPPORT
            if root is not None and root >= rc.size:
                return E_PARA
            if not send_ptr or not recv_ptr:
                return E_PTR
            dtype = DTYPES[dtype_code]
            nbytes = count * dtype.itemsize
            self.acl._device_view(send_ptr, nbytes)  # asserts both lie in device memory
            self.acl._device_view(recv_ptr, nbytes)
            assert send_ptr == recv_ptr or send_ptr + nbytes <= recv_ptr or recv_ptr + nbytes <= send_ptr, \
                f"emulated hccl: {call}: send and receive buffers overlap"
            injected = self.inject.get(call)
            if injected is not None and injected[1] in (None, rc.rank):
                del self.inject[call]
                return injected[0]
            self.acl._drain(s)  # stream order: what was queued before this call has landed
            head = np.array([_RANK_CALLS[call], *params], np.int64)
            heads = np.empty((rc.size, head.size), np.int64)
            self._poll([rc.mpi.Iallgather(head, heads)], call)
            by_rank = [heads[rc.order[k]] for k in range(rc.size)]
            assert all(np.array_equal(h, by_rank[0]) for h in by_rank), \
                f"emulated hccl: processes disagree on the collective: (call, count, dtype, op, root) by rank {by_rank}"
            data = self.acl._device_view(send_ptr, nbytes).copy()
            if call == "HcclAllReduce":
                table = np.empty((rc.size, nbytes), np.uint8)
                self._poll([rc.mpi.Iallgather(data, table)], call)
                result = _fold([table[rc.order[k]].view(dtype) for k in range(rc.size)], params[2], dtype)
            elif call == "HcclBroadcast":
                assert root is not None
                self._poll([rc.mpi.Ibcast(data, root=rc.order[root])], call)
                result = data.view(dtype)
            else:
                raise AssertionError(f"emulated hccl: no semantics for {call} between processes")
            self.acl._enqueue(s, self._writer(recv_ptr, np.ascontiguousarray(result)))
            return SUCCESS
