"""A captured launch sequence as a static graph: dead launches dropped, elementwise runs fused into
generated kernels, intermediates placed in one planned arena per device, replayed by one call.

Build steps (:meth:`Graph.build`): keep the launches whose results are returned or written back;
group them (maximal elementwise groups per device and shape, an elementwise prologue closing into a
reduction, an elementwise epilogue opened by a GEMM) without making the group graph cyclic; ask the
device's optional ``fused_kernel(ir)`` capability for each group (see :mod:`dsrt.jit.ir`), splitting a
group it declines; order the steps; plan the intermediates' offsets by liveness
(:mod:`dsrt.jit.plan`) and allocate each arena once. A replay binds the inputs (no copies), allocates
the returned arrays (or takes ``out=``), holds every operand in place (:func:`dsrt.memory.in_use`),
runs the steps, writes values launched with ``out=`` into inputs or constants back, and returns.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import dsrt.dtypes as dt

from ..array import Array, contiguous_strides
from ..device import Device
from ..errors import DsrtError, ShapeError
from ..memory import IN_USE, in_use
from .capture import Node, Recorder, Value
from .ir import ELEMENTWISE, FUSED_DTYPES, SAFE_CASTS, FusedIR, FusedOp, GemmSpec, ReduceSpec
from .plan import Interval, live_peak, plan_best
from .replay import Segment, graphs_enabled, segments

__all__ = ["Graph", "Step", "Explanation", "fused_kernel_for"]

FusedFn = Callable[[Sequence[Array], Sequence[Array], Any], None]

# ---------------------------------------------------------------------------- code generation cache
_codegen: weakref.WeakKeyDictionary[Device, dict[FusedIR, FusedFn | None]] = weakref.WeakKeyDictionary()
_codegen_lock = threading.Lock()


def fused_kernel_for(device: Device, ir: FusedIR) -> tuple[FusedFn | None, str]:
    """The device's generated kernel for ``ir`` (memoised per device), or ``None`` and why not."""
    gen = getattr(device, "fused_kernel", None)
    if gen is None:
        return None, f"{device.id} declares no code generator (fused_kernel)"
    with _codegen_lock:
        per = _codegen.setdefault(device, {})
        if ir in per:
            fn = per[ir]
            return fn, "" if fn is not None else f"{device.id} does not generate {ir.kind} kernels like this one"
    try:
        fn = gen(ir)
    except DsrtError as exc:
        return None, f"{device.id} could not generate {ir.name}: {exc}"
    with _codegen_lock:
        _codegen.setdefault(device, {})[ir] = fn
    if fn is None:
        return None, f"{device.id} does not generate {ir.kind} kernels like this one"
    _dump(ir, fn)
    return fn, ""


def _dump(ir: FusedIR, fn: Any) -> None:
    """Write the IR and the generated source to ``$DSRT_JIT_DUMP`` (a directory), if set."""
    target = os.environ.get("DSRT_JIT_DUMP")
    if not target:
        return
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{ir.name}.ir.json").write_text(json.dumps(ir.to_dict(), indent=1, default=str))
    source = getattr(fn, "source", None)
    if source:
        (path / f"{ir.name}.{getattr(fn, 'language', 'txt')}").write_text(source)


# ---------------------------------------------------------------------------- steps
@dataclass
class Step:
    """One thing a replay runs: a generated kernel (``fused``), one recorded launch, or a write-back.

    ``ins``/``outs`` are value ids; ``nodes`` the recorded launches it stands for."""

    name: str
    device: Device
    nodes: tuple[int, ...]
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    fused: bool
    kind: str
    run: Callable[[dict[int, Any]], None]
    ir: FusedIR | None = None
    reason: str = ""
    source: str | None = None
    kernels: tuple[str, ...] = ()
    unstored_bytes: int = 0


class Explanation(str):
    """What :meth:`Graph.explain` returns: the text (print it), with ``groups`` (one dict per step) and
    ``summary`` (counts and bytes) for programs."""

    groups: list[dict[str, Any]]
    summary: dict[str, Any]

    def __new__(cls, text: str, groups: list[dict[str, Any]], summary: dict[str, Any]) -> Explanation:
        obj = super().__new__(cls, text)
        obj.groups = groups
        obj.summary = summary
        return obj


def _contiguous(v: Value) -> bool:
    return v.kind != "view" or v.strides == contiguous_strides(v.shape, v.dtype.itemsize)


# ---------------------------------------------------------------------------- grouping
@dataclass
class _Group:
    gid: int
    kind: str  # ew, reduce, gemm, single
    device: Device
    shape: tuple[int, ...]
    nodes: list[int] = field(default_factory=list)
    open: bool = True


class Graph:
    """A replayable graph (see the module docstring). Made by :func:`dsrt.jit.jit` on a first call, or
    by ``with rt.capture(*inputs) as g:`` (then :meth:`output` marks what :meth:`replay` returns).

    Thread-safe: replays of one graph are serialised (they share its arena)."""

    def __init__(self) -> None:
        self.values: list[Value] = []
        self.nodes: list[Node] = []
        self.steps: list[Step] = []
        self.reason = ""
        self.input_vids: list[int] = []
        self.input_specs: list[tuple[Device, tuple[int, ...], np.dtype]] = []
        self.fresh: list[int] = []
        self.out_tree: Any = None
        self.writebacks: dict[int, int] = {}
        self.arenas: dict[str, Any] = {}
        self.arena_bytes: dict[str, int] = {}
        self.eager_peak_bytes = 0
        self.planned_peak_bytes = 0
        #: Bytes of launch outputs the traced run held at once (as Python held them), plus inputs/constants.
        self.eager_held_bytes = 0
        #: How intermediates are served: ``arena`` (planned offsets), ``pool`` (allocated from the pool
        #: per replay, freed after their last use) or ``eager`` (pool, unfused, in eager order).
        self.plan_mode = "arena"
        self.plan_note = ""
        self.placement = ""
        #: Per device id: the eager run's and the plan's peak bytes of launch outputs (ALIGNMENT-rounded).
        self.eager_device_peak: dict[str, int] = {}
        self.planned_device_peak: dict[str, int] = {}
        self.segments: list[Segment] = []
        self._live: list[int] = []
        self._alloc_at: list[list[int]] = []
        self._free_after: list[list[int]] = []
        self._alias: dict[int, int] = {}
        self._views_of: dict[int, list[Value]] = {}
        self._fresh_buffer: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}
        self._held_device_peak: dict[str, int] = {}
        self.eager_launches = 0
        self.replays = 0
        self._template: dict[int, Any] = {}
        self._views: list[Value] = []
        self._fresh_values: list[Value] = []
        self._held: list[Any] = []
        self._step_devices: list[Device] = []
        self._lock = threading.Lock()
        self._marked: list[Array] = []
        self._recorder: Recorder | None = None

    # ------------------------------------------------------------------ explicit capture
    def output(self, *arrays: Array) -> None:
        """Mark arrays made inside ``with rt.capture(...)`` as what :meth:`replay` returns, in order."""
        self._marked.extend(arrays)

    @property
    def replayable(self) -> bool:
        """False when the captured code cannot be replayed (:attr:`reason` says why)."""
        return not self.reason

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, rec: Recorder, inputs: Sequence[Array], result: Any, *, fuse: bool = True) -> Graph:
        g = cls()
        g._build(rec, inputs, result, fuse=fuse)
        return g

    def _build(self, rec: Recorder, inputs: Sequence[Array], result: Any, *, fuse: bool) -> None:
        self.values, self.nodes = rec.values, rec.nodes
        self.eager_launches = len(rec.nodes)
        self.writebacks = dict(rec.writebacks)
        self.input_specs = [(a.device, a.shape, a.dtype) for a in inputs]
        self.input_vids = list(self._input_vids(rec, inputs))
        fresh: dict[int, None] = {}
        self.out_tree = self._out_tree(rec, inputs, result, fresh)
        self.reason = rec.reason
        if self.reason:
            return
        self.fresh = list(fresh)
        ext_bytes = sum(v.nbytes for v in self.values if v.kind in ("input", "const"))
        self.eager_held_bytes = ext_bytes + rec.eager_peak_bytes
        self._held_device_peak = dict(rec.eager_device_peak)
        live = self._live_nodes()
        self._live = live
        groups = self._partition(live, fuse)
        steps: list[Step] = []
        for grp in groups:
            steps.extend(self._lower(grp, fuse))
        self.steps = self._order(steps)
        self._plan()

    @staticmethod
    def _input_vids(rec: Recorder, inputs: Sequence[Array]) -> list[int]:
        out = []
        for i, a in enumerate(inputs):
            vid = next((v.vid for v in rec.values if v.kind == "input" and v.index == i), None)
            if vid is None:  # the same Array passed twice: one value
                first = next(j for j, b in enumerate(inputs) if b is a)
                vid = next(v.vid for v in rec.values if v.kind == "input" and v.index == first)
            out.append(vid)
        return out

    def _out_tree(self, rec: Recorder, inputs: Sequence[Array], obj: Any, fresh: dict[int, None]) -> Any:
        if isinstance(obj, Array):
            for i, a in enumerate(inputs):
                if a is obj:
                    return ("arg", i)
            vid = rec.lookup(obj)
            if vid is None:
                vid = rec.resolve(obj, where="the returned value")
            v = self.values[vid]
            if v.kind == "const":
                return ("const", v.array)
            if v.kind == "view":
                base = self.values[v.base]
                if base.kind == "node":
                    fresh[base.vid] = None
                elif base.kind == "input" and base.vid in self.writebacks:
                    rec.fail("a view of an input written with out= is returned; not replayable")
                return ("view", vid)
            if v.kind == "input":
                return ("arg", v.index)
            fresh[vid] = None
            return ("fresh", vid)
        if isinstance(obj, tuple):
            return ("tuple", [self._out_tree(rec, inputs, x, fresh) for x in obj])
        if isinstance(obj, list):
            return ("list", [self._out_tree(rec, inputs, x, fresh) for x in obj])
        if isinstance(obj, dict):
            return ("dict", [(k, self._out_tree(rec, inputs, x, fresh)) for k, x in obj.items()])
        if obj is None or isinstance(obj, (int, float, str, bool, complex)):
            return ("py", obj)
        rec.fail(f"the captured code returned a {type(obj).__name__}; only Arrays, Python scalars and"
                 " tuples/lists/dicts of them can be replayed")
        return ("py", None)

    def _needed_values(self) -> set[int]:
        need: set[int] = set(self.fresh) | set(self.writebacks.values())

        def walk(tree: Any) -> None:
            tag = tree[0]
            if tag == "view":
                need.add(tree[1])
            elif tag in ("tuple", "list"):
                for t in tree[1]:
                    walk(t)
            elif tag == "dict":
                for _k, t in tree[1]:
                    walk(t)

        walk(self.out_tree)
        return need

    def _root(self, vid: int) -> int:
        v = self.values[vid]
        while v.kind == "view":
            v = self.values[v.base]
        return v.vid

    def _live_nodes(self) -> list[int]:
        """Indices of the launches whose results are used (program order); the rest are dropped."""
        need = {self._root(v) for v in self._needed_values()}
        live: list[int] = []
        for node in reversed(self.nodes):
            if node.output in need:
                live.append(node.index)
                need.update(self._root(v) for v in node.inputs)
        live.reverse()
        # consumers of each value (views count as their base), and what must be stored regardless
        self._consumers: dict[int, set[int]] = {}
        for i in live:
            for v in self.nodes[i].inputs:
                self._consumers.setdefault(self._root(v), set()).add(i)
                if self.values[v].kind == "view":
                    self._consumers.setdefault(self._root(v), set()).add(-1)  # read through a view
        self._external = {self._root(v) for v in self._needed_values()}
        return live

    def _classify(self, node: Node) -> str:
        out = self.values[node.output]
        name = dt.dtype_name(out.dtype)
        ins = [self.values[v] for v in node.inputs]
        if name not in FUSED_DTYPES or not all(_contiguous(v) for v in ins):
            return "single"
        if any(dt.dtype_name(v.dtype) not in FUSED_DTYPES for v in ins):
            return "single"
        k = node.kernel
        if k in ELEMENTWISE:
            if any(v.shape != out.shape for v in ins):
                return "single"
            if k == "cast" and (dt.dtype_name(ins[0].dtype), name) not in SAFE_CASTS:
                return "single"
            if k == "fill" and not isinstance(node.params.get("value"), (int, float, np.integer, np.floating)):
                return "single"
            return "ew"
        if k in ("reduce_sum", "reduce_max") and node.params.get("axis") in (None, -1) and ins[0].shape:
            return "reduce"
        if k == "gemm" and len(ins) == 2 and name in ("float32", "float64") and not node.params.get("beta"):
            return "gemm"
        return "single"

    def _partition(self, live: list[int], fuse: bool) -> list[_Group]:
        groups: list[_Group] = []
        group_of: dict[int, int] = {}  # node index -> gid
        anc: dict[int, set[int]] = {}

        def deps_of(node: Node) -> tuple[set[int], set[int]]:
            deps: set[int] = set()
            hard: set[int] = set()
            for v in node.inputs:
                root = self.values[self._root(v)]
                if root.kind == "node" and root.producer in group_of:
                    g = group_of[root.producer]
                    deps.add(g)
                    deps |= anc[g]
                    if self.values[v].kind == "view":
                        hard.add(g)
            return deps, hard

        def acyclic(g: int, deps: set[int]) -> bool:
            return all(d == g or g not in anc[d] for d in deps)

        def join(g: _Group, node: Node, deps: set[int]) -> None:
            g.nodes.append(node.index)
            group_of[node.index] = g.gid
            anc[g.gid] |= deps - {g.gid}
            for a in anc.values():
                if g.gid in a:
                    a |= anc[g.gid]

        def new(kind: str, node: Node, shape: tuple[int, ...], deps: set[int]) -> _Group:
            g = _Group(len(groups), kind, node.device, shape)
            groups.append(g)
            anc[g.gid] = set()
            join(g, node, deps)
            return g

        for i in live:
            node = self.nodes[i]
            kind = self._classify(node) if fuse else "single"
            deps, hard = deps_of(node)
            out = self.values[node.output]
            if kind == "ew":
                producers = {group_of.get(self.values[self._root(v)].producer, -1) for v in node.inputs}
                best = None
                for g in reversed(groups):
                    if (g.open and g.kind in ("ew", "gemm") and g.device is node.device and g.shape == out.shape
                            and g.gid not in hard and acyclic(g.gid, deps)):
                        if g.gid in producers:
                            best = g
                            break
                        if best is None:
                            best = g
                if best is not None:
                    join(best, node, deps)
                else:
                    new("ew", node, out.shape, deps)
            elif kind == "reduce":
                src = self.values[node.inputs[0]]
                pg = groups[group_of[src.producer]] if src.kind == "node" and src.producer in group_of else None
                if (pg is not None and pg.open and pg.kind == "ew" and pg.device is node.device
                        and pg.shape == src.shape and pg.gid not in hard and acyclic(pg.gid, deps)):
                    join(pg, node, deps)
                    pg.kind, pg.open = "reduce", False
                else:
                    new("single", node, out.shape, deps).open = False
            elif kind == "gemm":
                new("gemm", node, out.shape, deps)
            else:
                new("single", node, out.shape, deps).open = False
        return groups

    # ------------------------------------------------------------------ lowering
    def _stored(self, vid: int, unit: set[int]) -> bool:
        if vid in self._external:
            return True
        return any(c not in unit for c in self._consumers.get(vid, ()))

    def _unfused(self, i: int, reason: str = "") -> Step:
        node = self.nodes[i]
        dev, kernel, ins, out, params = node.device, node.kernel, node.inputs, node.output, node.params
        stream = dev.default_stream
        launch = dev._launch

        def run(buf: dict[int, Any]) -> None:
            launch(kernel, [buf[v] for v in ins], buf[out], params, stream)

        return Step(name=kernel, device=dev, nodes=(i,), ins=ins, outs=(out,), fused=False, kind="launch",
                    run=run, reason=reason, kernels=(kernel,))

    def _lower(self, grp: _Group, fuse: bool) -> list[Step]:
        nodes = grp.nodes
        if grp.kind == "single" or len(nodes) == 1 or not fuse:
            why = "" if len(nodes) == 1 else "fusion is off"
            return [self._unfused(i, why) for i in nodes]
        ir, ins, outs = self._ir(grp)
        fn, reason = fused_kernel_for(grp.device, ir)
        if fn is None:
            head, tail = [], list(nodes)
            if grp.kind == "gemm":
                head, tail = [self._unfused(nodes[0], reason)], nodes[1:]
            elif grp.kind == "reduce":
                head, tail = [], nodes[:-1]
            rest: list[Step] = []
            if grp.kind in ("gemm", "reduce") and len(tail) > 1:
                sub = _Group(grp.gid, "ew", grp.device, grp.shape, list(tail))
                rest = self._lower(sub, fuse)
            else:
                rest = [self._unfused(i, reason) for i in tail]
            if grp.kind == "reduce":
                rest.append(self._unfused(nodes[-1], reason))
            return head + rest
        dev = grp.device
        stream = dev.default_stream

        def run(buf: dict[int, Any]) -> None:
            fn([buf[v] for v in ins], [buf[v] for v in outs], stream)

        unit = set(nodes)
        unstored = sum(self.values[self.nodes[i].output].nbytes for i in nodes
                       if not self._stored(self.nodes[i].output, unit))
        return [Step(name=ir.name, device=dev, nodes=tuple(nodes), ins=tuple(ins), outs=tuple(outs), fused=True,
                     kind=ir.kind, run=run, ir=ir, source=getattr(fn, "source", None),
                     kernels=tuple(self.nodes[i].kernel for i in nodes), unstored_bytes=unstored)]

    def _ir(self, grp: _Group) -> tuple[FusedIR, list[int], list[int]]:
        """The IR of a fusable group, its input value ids and the value ids its outputs store."""
        unit = set(grp.nodes)
        ops: list[FusedOp] = []
        temp: dict[int, int] = {}
        ins: list[int] = []
        gemm: GemmSpec | None = None
        reduce: ReduceSpec | None = None
        reduce_out = -1

        def operand(vid: int) -> int:
            if vid not in temp:
                ins.append(vid)
                ops.append(FusedOp("load", (len(ins) - 1,), dt.dtype_name(self.values[vid].dtype)))
                temp[vid] = len(ops) - 1
            return temp[vid]

        for i in grp.nodes:
            node = self.nodes[i]
            out = self.values[node.output]
            name = dt.dtype_name(out.dtype)
            p = node.params
            if node.kernel == "gemm":
                a = self.values[node.inputs[0]]
                m, n = out.shape
                k = a.shape[0] if p.get("trans_a") else a.shape[1]
                gemm = GemmSpec(m, n, int(k), float(p.get("alpha", 1.0)), bool(p.get("trans_a")),
                                bool(p.get("trans_b")), name)
                ins.extend(node.inputs)
                ops.append(FusedOp("gemm", (), name))
                temp[node.output] = len(ops) - 1
            elif node.kernel in ("reduce_sum", "reduce_max"):
                reduce = ReduceSpec(node.kernel, operand(node.inputs[0]), p.get("axis"), name)
                reduce_out = node.output
            else:
                params: tuple[tuple[str, Any], ...] = ()
                if "alpha" in p:
                    params = (("alpha", float(p["alpha"])),)
                elif node.kernel == "fill":
                    params = (("value", float(p["value"])),)
                args = tuple(operand(v) for v in node.inputs)
                ops.append(FusedOp(node.kernel, args, name, params))
                temp[node.output] = len(ops) - 1
        outs = [self.nodes[i].output for i in grp.nodes
                if self.nodes[i].output != reduce_out and self._stored(self.nodes[i].output, unit)]
        out_temps = tuple(temp[v] for v in outs)
        if reduce_out >= 0:
            outs.append(reduce_out)
        ir = FusedIR(kind="reduce" if reduce else ("gemm" if gemm else "elementwise"), shape=grp.shape,
                     inputs=tuple(dt.dtype_name(self.values[v].dtype) for v in ins), ops=tuple(ops),
                     outputs=out_temps, output_dtypes=tuple(dt.dtype_name(self.values[v].dtype) for v in outs),
                     reduce=reduce, gemm=gemm, kernels=tuple(self.nodes[i].kernel for i in grp.nodes))
        return ir, ins, outs

    def _order(self, steps: list[Step]) -> list[Step]:
        """Steps in an order that respects every data dependency, earliest launches first."""
        producer: dict[int, int] = {}
        for s_i, s in enumerate(steps):
            for n in s.nodes:
                producer[self.nodes[n].output] = s_i
        needs: list[set[int]] = []
        for s_i, s in enumerate(steps):
            deps = set()
            for n in s.nodes:
                for v in self.nodes[n].inputs:
                    p = producer.get(self._root(v))
                    if p is not None and p != s_i:
                        deps.add(p)
            needs.append(deps)
        done: set[int] = set()
        order: list[Step] = []
        pending = sorted(range(len(steps)), key=lambda s_i: min(steps[s_i].nodes))
        while pending:
            for s_i in pending:
                if needs[s_i] <= done:
                    order.append(steps[s_i])
                    done.add(s_i)
                    pending.remove(s_i)
                    break
            else:  # cannot happen: grouping keeps the step graph acyclic
                raise DsrtError("jit: the fused step graph has a cycle")
        return order

    # ------------------------------------------------------------------ memory plan
    def _storage(self, vid: int) -> int:
        """The value that first occupied the buffer holding ``vid``: a launch output, an input or a
        constant (an ``out=`` version lives in the buffer it overwrote; a view in its base's)."""
        v = self.values[self._root(vid)]
        while v.kind == "node" and self.nodes[v.producer].inplace and self.nodes[v.producer].overwrites >= 0:
            v = self.values[self._root(self.nodes[v.producer].overwrites)]
        return v.vid

    def _buffer(self, vid: int) -> int | None:
        """The launch output whose buffer holds value ``vid``, or ``None`` for an input's or constant's."""
        st = self._storage(vid)
        return st if self.values[st].kind == "node" else None

    def _eager_buffers(self) -> list[Interval]:
        """The eager run's launch-output buffers, live from the launch that made each one to the last
        launch that reads or overwrites it (the end, ``len(nodes)``, when it is returned or written back).
        Every recorded launch counts, dead ones too: the eager run made them. A lower bound of what the
        eager run held, whatever Python kept alive."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for node in self.nodes:
            i = node.index
            b = self._buffer(node.output)
            if b is not None:
                first.setdefault(b, i)
                last[b] = i
            for v in node.inputs:
                r = self._buffer(v)
                if r is not None:
                    last[r] = max(last.get(r, i), i)
        end = len(self.nodes)
        for v in self._needed_values():
            b = self._buffer(v)
            if b is not None:
                last[b] = end
        return [Interval(b, self.values[b].nbytes, first[b], last[b]) for b in first]

    def _schedule(self, steps: Sequence[Step], times: Sequence[int], end: int,
                  alias: bool) -> tuple[list[Interval], list[list[int]], list[list[int]], dict[int, int]]:
        """Pool service of the values ``steps`` write: ``(intervals in time points, allocate before step,
        release after step, alias)``. A buffer is allocated before the first step that writes it and
        released after the last step that reads or writes it, never when it is returned or written back
        (time ``end``). With ``alias`` an ``out=`` version shares the buffer it overwrote (eager order
        only); otherwise every stored value is its own buffer."""
        buffer: dict[int, int | None] = {}

        def buf_of(vid: int) -> int | None:
            if vid not in buffer:
                buffer[vid] = self._buffer(vid) if alias else (self._root(vid) if self.values[self._root(vid)].kind
                                                                == "node" else None)
            return buffer[vid]

        first: dict[int, int] = {}
        last: dict[int, int] = {}
        writes: dict[int, list[int]] = {}  # step -> values it writes that need a binding before it runs
        aliases: dict[int, int] = {}
        for s_i, s in enumerate(steps):
            for v in s.outs:
                b = buf_of(v)
                if self.values[v].kind != "node":
                    continue
                if b is None:  # an out= version of an input/constant: written in place (eager order)
                    aliases[v] = self._storage(v)
                    writes.setdefault(s_i, []).append(v)
                    continue
                if b != v:
                    aliases[v] = b
                if b not in first:
                    first[b] = s_i
                    writes.setdefault(s_i, []).append(b)
                if b != v:
                    writes.setdefault(s_i, []).append(v)
                last[b] = s_i
            for v in s.ins:
                b = buf_of(v)
                if b is not None and b in first:
                    last[b] = max(last[b], s_i)
        needed = {buf_of(v) for v in self._needed_values()}
        alloc: list[list[int]] = [writes.get(s_i, []) for s_i in range(len(steps))]
        free: list[list[int]] = [[] for _ in steps]
        intervals = []
        for b, f in first.items():
            if b in needed:
                stop = end
            else:
                stop = times[last[b]]
                free[last[b]].append(b)
            intervals.append(Interval(b, self.values[b].nbytes, times[f], stop))
        return intervals, alloc, free, aliases

    @staticmethod
    def _peaks(intervals: Sequence[Interval], device_of: Callable[[int], str],
               constant: Mapping[str, int] | None = None) -> tuple[dict[str, int], int]:
        """Per device and in total, the most ALIGNMENT-rounded bytes live at one point, plus ``constant``
        bytes held throughout (an arena)."""
        by_dev: dict[str, list[Interval]] = {}
        for iv in intervals:
            by_dev.setdefault(device_of(iv.key), []).append(iv)
        peaks = {d: live_peak(ivs, aligned=True) for d, ivs in by_dev.items()}
        extra = dict(constant or {})
        for d, n in extra.items():
            peaks[d] = peaks.get(d, 0) + n
        return peaks, live_peak(intervals, aligned=True) + sum(extra.values())

    def _plan(self) -> None:
        """Choose how intermediates are served so that a replay's peak never exceeds the eager run's.

        The eager peak, per device and in total, is the larger of what the traced run held (the
        recorder's figure) and the liveness of :meth:`_eager_buffers`, in ALIGNMENT-rounded bytes of
        launch outputs (inputs and constants are the same on both sides). Tried in order, the
        first within it on every device and in total wins: an arena per device (the smaller of the
        placements of :mod:`dsrt.jit.plan`) plus the results; intermediates and results allocated from
        the pool per replay around the fused steps; the recorded launches unfused in eager order with
        pool allocations (within the eager peak by construction: the same buffers, live no longer)."""
        fresh = set(self.fresh)

        def dev_of(vid: int) -> str:
            return self.values[vid].device.id

        live_peaks, live_total = self._peaks(self._eager_buffers(), dev_of)
        held = self._held_device_peak
        self.eager_device_peak = {d: max(live_peaks.get(d, 0), held.get(d, 0)) for d in {*live_peaks, *held}}
        # the traced run held at least its largest device's peak at once (a bound on its total)
        eager_total = max(live_total, max(held.values(), default=0))

        def fits(peaks: Mapping[str, int], total: int) -> bool:
            return total <= eager_total and all(n <= self.eager_device_peak.get(d, 0) for d, n in peaks.items())

        # 1. one arena per device, results allocated by the replay
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for s_i, s in enumerate(self.steps):
            for v in s.outs:
                first.setdefault(v, s_i)
                last.setdefault(v, s_i)
            for v in s.ins:
                r = self._root(v)
                last[r] = max(last.get(r, s_i), s_i)
        end = len(self.steps)
        for v in self.writebacks.values():
            last[self._root(v)] = end
        for v in self._views_needed():
            last[self._root(v)] = end
        temps = [v for v in first if v not in fresh and self.values[v].kind == "node"]
        by_dev: dict[str, list[Interval]] = {}
        devices: dict[str, Device] = {}
        for v in temps:
            val = self.values[v]
            devices[val.device.id] = val.device
            by_dev.setdefault(val.device.id, []).append(Interval(v, val.nbytes, first[v], last[v]))
        plans = {d: plan_best(ivs) for d, ivs in by_dev.items()}
        arena = {d: pl[1] for d, pl in plans.items()}
        results = [Interval(v, self.values[v].nbytes, 0, 0) for v in self.fresh]
        arena_peaks, arena_total = self._peaks(results, dev_of, arena)
        self.placement = ",".join(sorted({pl[2] for d, pl in plans.items() if pl[1]}))
        template: dict[int, Any] = {}  # value id -> Array, only for the values a replay touches
        for val in self.values:
            if val.kind == "const":
                template[val.vid] = val.array
        self.temps = temps
        if fits(arena_peaks, arena_total):
            self.plan_mode, self.planned_device_peak, planned_total = "arena", arena_peaks, arena_total
            for dev_id, intervals in by_dev.items():
                offsets, total, _name = plans[dev_id]
                dev = devices[dev_id]
                alloc = dev.pool.allocate(total)
                self.arenas[dev_id] = alloc
                self.arena_bytes[dev_id] = total
                for iv in intervals:
                    val = self.values[iv.key]
                    template[iv.key] = Array(dev, val.shape, val.dtype, alloc, byte_offset=offsets[iv.key])
        else:
            over = (f"an arena of {sum(arena.values())} bytes plus the results would peak at {arena_total} bytes,"
                    f" above the eager run's {eager_total}")
            # 2. the fused steps, intermediates from the pool per replay
            ivs, alloc_at, free_after, aliases = self._schedule(self.steps, range(len(self.steps)), end, alias=False)
            peaks, total = self._peaks(ivs, dev_of)
            self.plan_mode, self.plan_note = "pool", over
            if not fits(peaks, total):
                eager_steps = [self._unfused(i, "memory plan: replayed in eager order") for i in self._live]
                times = list(self._live)
                e_ivs, e_alloc, e_free, e_aliases = self._schedule(eager_steps, times, len(self.nodes), alias=True)
                e_peaks, e_total = self._peaks(e_ivs, dev_of)
                fresh_buffers = [self._buffer(v) for v in self.fresh]
                if None not in fresh_buffers and len(set(fresh_buffers)) == len(fresh_buffers):
                    self.plan_mode = "eager"
                    self.plan_note = (f"{over}; intermediates from the pool around the fused steps would peak at"
                                      f" {total} bytes")
                    self.steps = eager_steps
                    ivs, alloc_at, free_after, aliases, peaks, total = (e_ivs, e_alloc, e_free, e_aliases, e_peaks,
                                                                         e_total)
                else:
                    self.plan_note = f"{over}; no plan within it (a result shares an input's buffer)"
            self.planned_device_peak, planned_total = peaks, total
            self._alloc_at, self._free_after, self._alias = alloc_at, free_after, aliases
            self._fresh_buffer = {v: self._alias.get(v, v) for v in self.fresh}
            self._members = {}
            for a, b in self._alias.items():
                self._members.setdefault(b, [b]).append(a)
        self._template = template
        self._views = [v for v in self.values if v.kind == "view"]
        self._views_of = {}
        for view in self._views:
            self._views_of.setdefault(view.base, []).append(view)
        self._fresh_values = [self.values[v] for v in self.fresh]
        self._held = [*self.arenas.values(), *(v.array for v in self.values if v.kind == "const")]
        self._step_devices = list({id(s.device): s.device for s in self.steps}.values())
        ext = sum(v.nbytes for v in self.values if v.kind in ("input", "const"))
        self.eager_peak_bytes = ext + eager_total
        self.planned_peak_bytes = ext + planned_total
        self.segments = segments(self.steps) if self.plan_mode == "arena" else \
            [Segment(s.device, i, [s], None, f"intermediates come from the pool ({self.plan_mode} plan)")
             for i, s in enumerate(self.steps)]

    def _views_needed(self) -> list[int]:
        return [v.vid for v in self.values if v.kind == "view"]

    # ------------------------------------------------------------------ replay
    def check_inputs(self, arrays: Sequence[Array]) -> None:
        """Raise :class:`ShapeError` unless ``arrays`` match the captured inputs."""
        if len(arrays) != len(self.input_specs):
            raise ShapeError(f"jit replay: the graph takes {len(self.input_specs)} input arrays, got {len(arrays)}")
        for i, (a, (dev, shape, dtype)) in enumerate(zip(arrays, self.input_specs, strict=True)):
            if not isinstance(a, Array) or a.device is not dev or a.shape != shape or a.dtype != dtype:
                got = f"{dt.dtype_name(a.dtype)}{a.shape} on {a.device.id}" if isinstance(a, Array) else repr(a)
                raise ShapeError(f"jit replay: input {i} must be {dt.dtype_name(dtype)}{shape} on {dev.id},"
                                 f" got {got}")

    def replay(self, *arrays: Array, out: Any = None) -> Any:
        """Run the graph on ``arrays`` (the captured inputs' shapes, dtypes and devices); returns fresh
        arrays shaped like the captured result, or writes into ``out`` (an Array or a sequence of them, one
        per fresh result in order) and returns those."""
        if self.reason:
            raise DsrtError(f"jit: this graph cannot be replayed: {self.reason}")
        self.check_inputs(arrays)
        return self._replay(arrays, out)

    def _replay(self, arrays: Sequence[Array], out: Any) -> Any:
        buf = self._template.copy()
        vids = self.input_vids
        for i, a in enumerate(arrays):
            buf[vids[i]] = a
        pooled = self.plan_mode != "arena"
        outs = self._outputs(out, arrays, allocate=not pooled)
        if not pooled:
            for vid, a in zip(self.fresh, outs, strict=True):
                buf[vid] = a
        for v in self._views:
            base = buf.get(v.base)
            if base is not None:
                buf[v.vid] = Array(v.device, v.shape, v.dtype, base.allocation, strides=v.strides,
                                   byte_offset=base.byte_offset + v.delta)
        with self._lock, in_use((*arrays, *outs, *self._held)):
            tracing = any(d.tracer is not None for d in self._step_devices)
            if pooled:
                given = {self._fresh_buffer[v]: a for v, a in zip(self.fresh, outs, strict=True)} if outs else {}
                self._run_pooled(buf, given, tracing)
            elif tracing or not graphs_enabled():
                for s in self.steps:
                    self._run_step(s, buf, tracing)
            else:
                for seg in self.segments:
                    seg.run(buf)
            for ext, final in self.writebacks.items():
                dst, src = buf[ext], buf[final]
                if dst is not src:
                    dst.device._launch("copy", [src], dst, {}, dst.device.default_stream)
        self.replays += 1
        return self._rebuild(self.out_tree, buf, arrays)

    @staticmethod
    def _run_step(s: Step, buf: dict[int, Any], tracing: bool) -> None:
        if not tracing:
            s.run(buf)
            return
        t0 = time.perf_counter()
        s.run(buf)
        tracer = s.device.tracer
        if tracer is not None:
            tracer.complete(s.name, s.device.id, t0, time.perf_counter(),
                            {"jit": True, "launches": len(s.nodes), "fused": s.fused})

    def _bind(self, vid: int, buf: dict[int, Any], given: Mapping[int, Array]) -> None:
        """Give value ``vid`` its array before the step that writes it (pool plans)."""
        target = self._alias.get(vid)
        if target is not None:
            arr = buf[target]
        else:
            arr = given.get(vid)
            if arr is None:
                v = self.values[vid]
                arr = v.device._new_output(v.shape, v.dtype, v.device.default_stream)
        buf[vid] = arr
        for view in self._views_of.get(vid, ()):
            buf[view.vid] = Array(view.device, view.shape, view.dtype, arr.allocation, strides=view.strides,
                                  byte_offset=arr.byte_offset + view.delta)

    def _run_pooled(self, buf: dict[int, Any], given: Mapping[int, Array], tracing: bool) -> None:
        """Run the steps allocating each intermediate and result from the pool before the step that first
        writes it and dropping each intermediate after its last use, as the eager run does. Each step
        holds its operands (:func:`in_use`) like an eager launch."""
        members = self._members
        for s_i, s in enumerate(self.steps):
            for vid in self._alloc_at[s_i]:
                self._bind(vid, buf, given)
            # in_use() of the step's operands, inlined (a context manager per step costs more than the
            # step): list them, then hold them in the step device's pool, where they all live.
            held = tuple([buf[v] for v in s.ins] + [buf[v] for v in s.outs])
            key = id(held)
            IN_USE[key] = held
            try:
                s.device.pool.hold(held)
                self._run_step(s, buf, tracing)
            finally:
                del IN_USE[key]
            del held  # the last references to what dies here are buf's (the peak must match eager's)
            for b in self._free_after[s_i]:
                for vid in members.get(b, (b,)):
                    buf.pop(vid, None)
                    for view in self._views_of.get(vid, ()):
                        buf.pop(view.vid, None)

    def _outputs(self, out: Any, arrays: Sequence[Array], allocate: bool = True) -> list[Array]:
        if out is None:
            if not allocate:
                return []
            # the launch path's own output allocation (layout cached per shape and dtype)
            return [v.device._new_output(v.shape, v.dtype, v.device.default_stream) for v in self._fresh_values]
        given = [out] if isinstance(out, Array) else list(out)
        if len(given) != len(self.fresh):
            raise ShapeError(f"jit replay: out= needs {len(self.fresh)} arrays, got {len(given)}")
        held = {id(a.allocation) for a in arrays}
        for j, (a, vid) in enumerate(zip(given, self.fresh, strict=True)):
            v = self.values[vid]
            if not isinstance(a, Array) or a.device is not v.device or a.shape != v.shape or a.dtype != v.dtype \
                    or not a.is_contiguous:
                raise ShapeError(f"jit replay: out[{j}] must be a contiguous {dt.dtype_name(v.dtype)}{v.shape} on"
                                 f" {v.device.id}, got {a!r}")
            if id(a.allocation) in held:
                raise ShapeError(f"jit replay: out[{j}] shares memory with an input; pass a separate array")
        return given

    def _rebuild(self, tree: Any, buf: dict[int, Any], arrays: Sequence[Array]) -> Any:
        tag, body = tree
        if tag == "fresh":
            return buf[body]
        if tag == "arg":
            return arrays[body]
        if tag == "const":
            return body
        if tag == "view":
            return buf[body]
        if tag == "tuple":
            return tuple(self._rebuild(t, buf, arrays) for t in body)
        if tag == "list":
            return [self._rebuild(t, buf, arrays) for t in body]
        if tag == "dict":
            return {k: self._rebuild(t, buf, arrays) for k, t in body}
        return body

    # ------------------------------------------------------------------ seeing it
    def explain(self) -> Explanation:
        """The steps: which launches fused into which generated kernel, on which device, and the bytes
        of intermediates never written; then memory (arena, eager and planned peaks)."""
        groups: list[dict[str, Any]] = []
        lines: list[str] = []
        if self.reason:
            text = f"jit graph: not replayable (runs eagerly): {self.reason}"
            return Explanation(text, [], {"replayable": False, "reason": self.reason})
        for n, s in enumerate(self.steps):
            entry = {
                "step": n, "name": s.name, "device": s.device.id, "fused": s.fused, "kind": s.kind,
                "launches": list(s.nodes), "kernels": list(s.kernels), "bytes_not_materialized": s.unstored_bytes,
                "reason": s.reason,
            }
            groups.append(entry)
            what = ", ".join(f"#{i} {self.nodes[i].kernel}" for i in s.nodes)
            if s.fused:
                lines.append(f"  [{n}] {s.name} on {s.device.id}: fused {len(s.nodes)} launches ({what});"
                             f" {s.unstored_bytes} bytes of intermediates never materialized")
            else:
                why = f" ({s.reason})" if s.reason else ""
                lines.append(f"  [{n}] {s.name} on {s.device.id}: unfused launch #{s.nodes[0]}{why}")
        dropped = self.eager_launches - sum(len(s.nodes) for s in self.steps)
        summary = {
            "replayable": True, "eager_launches": self.eager_launches, "steps": len(self.steps),
            "fused_kernels": sum(1 for s in self.steps if s.fused), "dropped_launches": dropped,
            "writebacks": len(self.writebacks), "arena_bytes": dict(self.arena_bytes),
            "eager_peak_bytes": self.eager_peak_bytes, "planned_peak_bytes": self.planned_peak_bytes,
            "eager_held_bytes": self.eager_held_bytes, "plan": self.plan_mode, "plan_note": self.plan_note,
            "placement": self.placement, "eager_device_peak": dict(self.eager_device_peak),
            "planned_device_peak": dict(self.planned_device_peak),
            "bytes_not_materialized": sum(s.unstored_bytes for s in self.steps),
            "replay": [seg.describe() for seg in self.segments],
        }
        head = (f"jit graph: {self.eager_launches} launches -> {len(self.steps)} steps"
                f" ({summary['fused_kernels']} fused kernels, {dropped} dead launches dropped,"
                f" {len(self.writebacks)} write-backs)")
        if self.plan_mode == "arena":
            how = f"arena {sum(self.arena_bytes.values())} bytes" + (f" ({self.placement} placement)"
                                                                      if self.placement else "")
        elif self.plan_mode == "pool":
            how = f"intermediates from the pool per replay around the fused steps, because {self.plan_note}"
        else:
            how = f"launches replayed unfused in eager order, intermediates from the pool, because {self.plan_note}"
        mem = (f"  memory: {how}; planned peak {self.planned_peak_bytes} bytes vs eager peak"
               f" {self.eager_peak_bytes} bytes (inputs, constants and launch outputs while live)")
        replay = []
        for seg in self.segments:
            d = seg.describe()
            where = f"step {d['steps'][0]}" if d["steps"][0] == d["steps"][1] else f"steps {d['steps'][0]}-{d['steps'][1]}"
            if seg.captured:
                replay.append(f"  replay: {where} on {seg.device.id} as one captured graph ({d['cached']} of"
                              f" {d['limit']} cached by operand addresses; {d['captures']} captures,"
                              f" {d['hits']} hits, {d['evictions']} evicted)")
            else:
                replay.append(f"  replay: {where} on {seg.device.id} step by step ({seg.reason})")
        return Explanation("\n".join([head, *lines, mem, *replay]), groups, summary)

    def __repr__(self) -> str:
        if self.reason:
            return f"<dsrt.jit.Graph not replayable: {self.reason}>"
        return f"<dsrt.jit.Graph {self.eager_launches} launches -> {len(self.steps)} steps>"


def describe(graph: Graph) -> Mapping[str, Any]:
    """The explanation's summary (a plain dict)."""
    return graph.explain().summary
