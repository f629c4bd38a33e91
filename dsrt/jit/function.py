"""``jit(fn)``: trace on the first call of each signature, replay the graph on later calls.

The signature of a call is, for every Array argument (at any depth of tuples, lists and dicts), its
device, shape and dtype, plus which arguments share memory; every other argument is static and part
of the signature by value (an unhashable one makes the call run eagerly). Graphs are kept in an LRU
of ``cache_size`` signatures. ``DSRT_JIT=off`` (or ``0``/``false``) runs every call eagerly.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dsrt.jit.capture as _capture

from ..array import Array
from ..device import Device
from ..errors import DsrtError
from .graph import Explanation, Graph

__all__ = ["JitFunction", "CaptureContext", "jit", "capture", "enabled"]

_OFF = ("off", "0", "false", "no")


def enabled() -> bool:
    """False when ``DSRT_JIT`` says off (read on every call, so tests and users can switch it)."""
    return os.environ.get("DSRT_JIT", "").strip().lower() not in _OFF


class _Unhashable(Exception):
    pass


def _walk(obj: Any, leaves: list[Array]) -> Any:
    if isinstance(obj, Array):
        leaves.append(obj)
        return (obj.device, obj.shape, obj.dtype)
    t = type(obj)
    if t is tuple or t is list:
        return (t, tuple(_walk(x, leaves) for x in obj))
    if t is dict:
        return (dict, tuple((k, _walk(v, leaves)) for k, v in obj.items()))
    try:
        hash(obj)
    except TypeError:
        raise _Unhashable(type(obj).__name__) from None
    return (t, obj)


def signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Array]]:
    """``(key, array leaves)`` of a call; raises ``_Unhashable`` for an unhashable static argument."""
    leaves: list[Array] = []
    key: Any = (tuple(_walk(a, leaves) for a in args), tuple((k, _walk(v, leaves)) for k, v in kwargs.items())
                if kwargs else ())
    if len(leaves) > 1:
        allocs = [id(a.allocation) for a in leaves]
        if len(set(allocs)) != len(allocs):
            key = (key, tuple(allocs.index(x) for x in allocs), tuple(leaves.index(a) for a in leaves))
    return key, leaves


class JitFunction:
    """A function whose launches are captured on the first call of each signature and replayed after.

    Calling it returns what ``fn`` returns (fresh arrays on replays). If ``fn`` has no parameter named
    ``out``, ``out=`` (an Array or a sequence, one per returned fresh array) makes a replay write there.
    ``fuse=False`` replays the recorded launches without generating kernels (still planned).
    """

    def __init__(self, fn: Callable[..., Any], *, cache_size: int = 32, fuse: bool = True,
                 devices: Callable[[], Sequence[Device]] | None = None) -> None:
        self.fn = fn
        self.cache_size = max(int(cache_size), 1)
        self.fuse = fuse
        self._devices = devices
        self._graphs: OrderedDict[Any, Graph] = OrderedDict()
        self._lock = threading.Lock()
        try:
            self._takes_out = "out" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._takes_out = True
        #: Counters: traces, replays, eager calls (off, unhashable, not replayable).
        self.stats = {"traces": 0, "replays": 0, "eager": 0}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = None
        if not self._takes_out and "out" in kwargs:
            out = kwargs.pop("out")
        if _capture.active_recorder() is not None or not enabled():
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        try:
            key, leaves = signature(args, kwargs)
        except _Unhashable:
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
        if graph is None:
            result, graph = self._trace(args, kwargs, leaves)
            with self._lock:
                self._graphs[key] = graph
                while len(self._graphs) > self.cache_size:
                    self._graphs.popitem(last=False)
            if out is not None and graph.replayable:
                return graph._replay(leaves, out)
            return result
        if not graph.replayable:
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        self.stats["replays"] += 1
        return graph._replay(leaves, out)

    def _trace(self, args: tuple[Any, ...], kwargs: dict[str, Any], leaves: list[Array]) -> tuple[Any, Graph]:
        self.stats["traces"] += 1
        rec = _capture.Recorder()
        rec.mark_pools(self._pool_devices(leaves))
        for i, a in enumerate(leaves):
            rec.add_input(a, i)
        prev = _capture.start(rec)
        try:
            result = self.fn(*args, **kwargs)
        finally:
            _capture.stop(prev)
        return result, Graph.build(rec, leaves, result, fuse=self.fuse)

    def _pool_devices(self, leaves: Sequence[Array]) -> list[Device]:
        devs: dict[int, Device] = {id(a.device): a.device for a in leaves}
        if self._devices is not None:
            for d in self._devices():
                devs.setdefault(id(d), d)
        return list(devs.values())

    # ------------------------------------------------------------------ introspection
    @property
    def graphs(self) -> list[Graph]:
        """The cached graphs, least recently used first."""
        with self._lock:
            return list(self._graphs.values())

    def graph(self, *args: Any, **kwargs: Any) -> Graph | None:
        """The graph cached for these arguments' signature (``None`` if not traced yet)."""
        key, _ = signature(args, kwargs)
        with self._lock:
            return self._graphs.get(key)

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """:meth:`Graph.explain` of the graph for these arguments (default: the most recent one)."""
        g = self.graph(*args, **kwargs) if args or kwargs else (self.graphs[-1] if self.graphs else None)
        if g is None:
            raise DsrtError(f"jit: {getattr(self.fn, '__name__', 'the function')} has no graph for these"
                            " arguments yet; call it first")
        return g.explain()

    def clear(self) -> None:
        """Drop every cached graph (and its arena)."""
        with self._lock:
            self._graphs.clear()


def jit(fn: Callable[..., Any] | None = None, *, cache_size: int = 32, fuse: bool = True,
        devices: Callable[[], Sequence[Device]] | None = None) -> Any:
    """``jit(fn)`` or ``@jit`` / ``@jit(cache_size=...)``: a :class:`JitFunction`. ``devices`` lists the
    devices whose arrays could appear as constants (so arrays made inside ``fn`` are told apart)."""
    if fn is None:
        return lambda f: JitFunction(f, cache_size=cache_size, fuse=fuse, devices=devices)
    return JitFunction(fn, cache_size=cache_size, fuse=fuse, devices=devices)


class CaptureContext:
    """``with capture(*inputs) as g:`` records the launches in the block (run eagerly) into ``g``, a
    :class:`Graph`; ``g.output(...)`` inside the block marks the results (default: every array the
    block launched that is still referenced at its end, in launch order). After the block,
    ``g.replay(*new_inputs)`` runs the graph on other arrays of the same shapes, dtypes and devices."""

    def __init__(self, inputs: Sequence[Array], *, fuse: bool = True,
                 devices: Callable[[], Sequence[Device]] | None = None) -> None:
        self.inputs = list(inputs)
        self.fuse = fuse
        self.graph = Graph()
        self._rec = _capture.Recorder()
        devs: dict[int, Device] = {id(a.device): a.device for a in self.inputs}
        if devices is not None:
            for d in devices():
                devs.setdefault(id(d), d)
        self._rec.mark_pools(list(devs.values()))
        self._prev: _capture.Recorder | None = None

    def __enter__(self) -> Graph:
        for i, a in enumerate(self.inputs):
            if not isinstance(a, Array):
                raise DsrtError(f"capture: input {i} is a {type(a).__name__}, not a dsrt Array")
            self._rec.add_input(a, i)
        self._prev = _capture.start(self._rec)
        return self.graph

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _capture.stop(self._prev)
        if exc_type is not None:
            self.graph.reason = f"the captured block raised {exc_type.__name__}"
            return
        marked = self.graph._marked
        if marked:
            result: Any = marked[0] if len(marked) == 1 else tuple(marked)
        else:
            alive: dict[int, Array] = {}
            for ref, _n in self._rec.produced:
                a = ref()
                if a is not None:
                    alive.setdefault(id(a), a)
            result = tuple(alive.values())
        self.graph._build(self._rec, self.inputs, result, fuse=self.fuse)
        self.graph._marked = []


def capture(*inputs: Array, fuse: bool = True, devices: Callable[[], Sequence[Device]] | None = None
            ) -> CaptureContext:
    """A :class:`CaptureContext` over the input arrays ``inputs``."""
    return CaptureContext(inputs, fuse=fuse, devices=devices)


def iter_graph_sources(graph: Graph) -> Iterator[tuple[str, str]]:
    """``(kernel name, generated source)`` of each fused step that has a source."""
    for s in graph.steps:
        if s.fused and s.source:
            yield s.name, s.source
