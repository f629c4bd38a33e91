"""Recording launches: the observer the device's launch path calls while a capture is active.

:data:`dsrt.device.launch_observer` is ``None`` unless some thread is capturing, so an eager launch
pays one module-global test. While set, every validated array launch (``Device._run``) reports
``(device, kernel, inputs, out, bound params, fresh)`` after it ran; the observer finds this thread's
:class:`Recorder` (other threads' launches are ignored) and appends a :class:`Node`.

Values are identified by the Array objects (weak references, so the trace keeps nothing alive that
the eager run would have freed): an input of the captured function, a constant (an array made before
the capture, e.g. weights in a closure), the output of a recorded launch, or a view (``reshape``) of
one of those, found through its allocation. A launch with ``out=`` makes a new version of that value;
writes into an input or a constant are written back at the end of every replay.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dsrt.device as _device_module

from ..array import Array
from ..device import Device
from ..memory import ALIGNMENT

__all__ = ["Value", "Node", "Recorder", "active_recorder", "start", "stop"]


@dataclass
class Value:
    """One array value of the graph. ``kind``: ``input`` (argument ``index``), ``const`` (``array``),
    ``node`` (output of node ``producer``) or ``view`` (of value ``base`` at ``delta`` bytes)."""

    vid: int
    kind: str
    device: Device
    shape: tuple[int, ...]
    dtype: np.dtype
    index: int = -1
    array: Array | None = None
    producer: int = -1
    base: int = -1
    delta: int = 0
    strides: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n


@dataclass
class Node:
    """One recorded launch: ``kernel`` on value ids ``inputs`` writing value ``output``."""

    index: int
    kernel: str
    device: Device
    inputs: tuple[int, ...]
    output: int
    params: Mapping[str, Any]
    inplace: bool = False
    #: For an ``out=`` launch (``inplace``): the value whose buffer it overwrote (the eager run allocates
    #: nothing for it; the memory plan uses this to know which buffer a version lives in).
    overwrites: int = -1


@dataclass
class Recorder:
    """What one capture saw. ``reason`` is set when the sequence cannot be replayed as a graph (it
    then runs eagerly every time) and says why."""

    values: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    reason: str = ""
    #: id(Array) -> (weakref to it, value id): the latest value each live Array object holds.
    by_array: dict[int, tuple[Any, int]] = field(default_factory=dict)
    #: id(Allocation) -> (weakref, value id, byte offset) of the latest value living in it.
    by_alloc: dict[int, tuple[Any, int, int]] = field(default_factory=dict)
    #: Pool allocation counts when the capture began, per pool id (arrays born later are not constants).
    pool_marks: dict[int, int] = field(default_factory=dict)
    #: (input or constant value id) -> the value written into its buffer last.
    writebacks: dict[int, int] = field(default_factory=dict)
    #: Weak references to the fresh outputs of launches, with their bytes (for the eager peak).
    produced: list[tuple[Any, int]] = field(default_factory=list)
    eager_peak_bytes: int = 0
    #: Per device id, the most bytes of launch outputs Python held at once, each rounded up to
    #: ALIGNMENT as the pool reserves it (the JIT's memory plan stays within it); device of each produced.
    eager_device_peak: dict[str, int] = field(default_factory=dict)
    produced_on: list[str] = field(default_factory=list)
    #: Task kernels or other launches that cannot be replayed.
    opaque: list[str] = field(default_factory=list)
    thread: int = field(default_factory=threading.get_ident)

    # ------------------------------------------------------------------ values
    def _new(self, **kw: Any) -> Value:
        v = Value(vid=len(self.values), **kw)
        self.values.append(v)
        return v

    def _bind(self, arr: Array, vid: int) -> None:
        self.by_array[id(arr)] = (weakref.ref(arr), vid)
        alloc = arr.allocation
        self.by_alloc[id(alloc)] = (weakref.ref(alloc), vid, arr.byte_offset)

    def add_input(self, arr: Array, index: int) -> int:
        """Register argument ``index``; the same Array passed twice is one value."""
        known = self.lookup(arr)
        if known is not None:
            return known
        v = self._new(kind="input", device=arr.device, shape=arr.shape, dtype=arr.dtype, index=index)
        self._bind(arr, v.vid)
        return v.vid

    def mark_pools(self, devices: Sequence[Device]) -> None:
        for dev in devices:
            pool = getattr(dev, "_pool", None)
            counters = getattr(pool, "counters", None)
            if counters is not None:
                self.pool_marks[id(pool)] = int(counters.num_allocs)

    def lookup(self, arr: Array) -> int | None:
        """The value ``arr`` holds, if the trace knows this Array object."""
        hit = self.by_array.get(id(arr))
        if hit is not None and hit[0]() is arr:
            return hit[1]
        return None

    def _born_during_capture(self, arr: Array) -> bool:
        alloc = arr.allocation
        pool = alloc.pool
        born = getattr(alloc.pool_data, "born", None)
        if pool is None or born is None:
            return False
        mark = self.pool_marks.get(id(pool))
        return mark is None or born >= mark

    def resolve(self, arr: Array, *, where: str) -> int:
        """The value of ``arr`` as an operand: known, a view of a known value, or a new constant."""
        vid = self.lookup(arr)
        if vid is not None:
            return vid
        hit = self.by_alloc.get(id(arr.allocation))
        if hit is not None and hit[0]() is arr.allocation:
            base = self.values[hit[1]]
            if not arr.is_contiguous:
                self.fail(f"{where}: a strided view of a traced array cannot be replayed")
            v = self._new(kind="view", device=arr.device, shape=arr.shape, dtype=arr.dtype, base=base.vid,
                          delta=arr.byte_offset - hit[2], strides=arr.strides)
            self.by_array[id(arr)] = (weakref.ref(arr), v.vid)
            return v.vid
        if self._born_during_capture(arr):
            self.fail(f"{where}: an array made inside the captured code by something other than a launch"
                      f" ({arr!r}: asarray, empty, .to() or a copy); pass it as an argument or make it with a"
                      " launch (fill, copy, cast)")
        v = self._new(kind="const", device=arr.device, shape=arr.shape, dtype=arr.dtype, array=arr)
        self._bind(arr, v.vid)
        return v.vid

    def fail(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    # ------------------------------------------------------------------ launches
    def record(self, device: Device, kernel: str, inputs: Sequence[Array], out: Array, params: Mapping[str, Any],
               fresh: bool) -> None:
        where = f"launch #{len(self.nodes)} ('{kernel}' on {device.id})"
        ins = tuple(self.resolve(a, where=where) for a in inputs)
        prev: int | None = None
        if not fresh:
            prev = self.lookup(out)
            if prev is None:
                prev = self.resolve(out, where=where)
            pv = self.values[prev]
            if pv.kind == "view" or any(v.kind == "view" and v.base == prev for v in self.values):
                self.fail(f"{where}: out= writes into an array that has views (reshape); not replayable")
        v = self._new(kind="node", device=device, shape=out.shape, dtype=out.dtype, producer=len(self.nodes))
        self.nodes.append(Node(len(self.nodes), kernel, device, ins, v.vid, dict(params), inplace=not fresh,
                               overwrites=-1 if prev is None else prev))
        if prev is not None:
            root = self.values[prev]
            if root.kind in ("input", "const"):
                self.writebacks[prev] = v.vid
            elif root.kind == "node":
                # an input/constant written earlier keeps pointing at its latest version
                for ext, last in list(self.writebacks.items()):
                    if last == prev:
                        self.writebacks[ext] = v.vid
        self._bind(out, v.vid)
        if fresh:
            self.produced.append((weakref.ref(out), out.nbytes))
            self.produced_on.append(device.id)
            live = 0
            per: dict[str, int] = {}
            for (ref, nbytes), dev_id in zip(self.produced, self.produced_on, strict=True):
                if ref() is not None:
                    live += nbytes
                    per[dev_id] = per.get(dev_id, 0) + (max(nbytes, 1) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
            if live > self.eager_peak_bytes:
                self.eager_peak_bytes = live
            for dev_id, n in per.items():
                if n > self.eager_device_peak.get(dev_id, 0):
                    self.eager_device_peak[dev_id] = n

    def record_task(self, device: Device, kernel: str) -> None:
        self.fail(f"task kernel '{kernel}' on {device.id} returns no array; it is not replayable")


# ---------------------------------------------------------------------------- the observer
_local = threading.local()
_active_lock = threading.Lock()
_active = 0


def active_recorder() -> Recorder | None:
    """This thread's recorder, if it is capturing."""
    return getattr(_local, "rec", None)


def _observe(device: Device, kernel: str, inputs: Sequence[Any], out: Any, params: Mapping[str, Any],
             fresh: bool) -> None:
    rec = getattr(_local, "rec", None)
    if rec is None:
        return
    if out is None:
        rec.record_task(device, kernel)
    else:
        rec.record(device, kernel, inputs, out, params, fresh)


def start(rec: Recorder) -> Recorder | None:
    """Make ``rec`` this thread's recorder (returns the previous one) and switch the observer on."""
    global _active
    prev = getattr(_local, "rec", None)
    _local.rec = rec
    with _active_lock:
        _active += 1
        _device_module.launch_observer = _observe
    return prev


def stop(prev: Recorder | None) -> None:
    """Restore the previous recorder; the observer goes off when no thread captures."""
    global _active
    _local.rec = prev
    with _active_lock:
        _active -= 1
        if _active == 0:
            _device_module.launch_observer = None
