"""Replaying runs of a graph's steps as one captured device graph (the optional ``graph_replay`` capability).

A device that can record a sequence of enqueued work once and launch it again as one unit (a CUDA
graph) declares ``device.graph_replay``: an object with

* ``accepts(step) -> str``: ``""`` when ``step`` (a :class:`dsrt.jit.Step`) may be captured, else why
  not (for ``explain()``). Called once per step when the graph is built, on the building thread.
* ``address(array) -> Hashable``: what of ``array`` captured work bakes in (its device address).
  Called on the replaying thread, with ``array`` resident and held (:func:`dsrt.memory.in_use`).
* ``capture(run, stream) -> launch``: put ``stream`` in capture mode, call ``run()`` once (it enqueues
  the steps' work on ``stream``; nothing executes), end the capture and return ``launch()``, which
  enqueues the captured work on ``stream`` without waiting. Raise a :class:`~dsrt.errors.DsrtError`
  when the work cannot be captured (a step synchronised the host, allocated, or the driver refused):
  the capture must then be ended and nothing has run; the JIT replays that run of steps plainly from
  then on and says why in ``explain()``. ``launch`` must not keep ``run`` (it holds the arrays of one
  replay); the JIT keeps the steps, and so the kernels the captured work calls, alive as long as it
  keeps ``launch``. ``launch`` raises ``DsrtError`` when the launch fails.
* optionally ``max_graphs`` (int): how many captured graphs to keep per run of steps (default
  :data:`GRAPH_CACHE_SIZE`).

Captured work bakes device addresses, while a replay substitutes its inputs and results without
copies. The JIT therefore keys each captured graph by the addresses of every operand of the run
(inputs, results, arena, constants) and keeps a small LRU of them per run of steps: a training loop
that hands the same pool blocks back on every call replays a cached graph; a new address captures a
new one (the least recently used beyond the bound is dropped). ``DSRT_JIT_GRAPHS=off`` replays every
step plainly.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..device import Device
from ..errors import DsrtError

if TYPE_CHECKING:
    from .graph import Step

__all__ = ["GRAPH_CACHE_SIZE", "Segment", "graphs_enabled", "segments"]

#: Captured graphs kept per run of steps unless the capability says otherwise (``max_graphs``).
GRAPH_CACHE_SIZE = 8

_OFF = ("off", "0", "false", "no")


def graphs_enabled() -> bool:
    """False when ``DSRT_JIT_GRAPHS`` says off (read on every replay)."""
    return os.environ.get("DSRT_JIT_GRAPHS", "").strip().lower() not in _OFF


@dataclass
class Segment:
    """A run of consecutive steps on one device, replayed either as one captured graph (``capability``
    set and ``reason`` empty) or step by step (``reason`` says why)."""

    device: Device
    first: int
    steps: list[Step]
    capability: Any = None
    reason: str = ""
    #: Value ids of every operand of the run, in a fixed order: the cache key is their addresses.
    operands: tuple[int, ...] = ()
    limit: int = GRAPH_CACHE_SIZE
    cache: OrderedDict[tuple[Hashable, ...], Callable[[], None]] = field(default_factory=OrderedDict)
    captures: int = 0
    hits: int = 0
    evictions: int = 0

    @property
    def captured(self) -> bool:
        return self.capability is not None and not self.reason

    def run_plain(self, buf: dict[int, Any]) -> None:
        for s in self.steps:
            s.run(buf)

    def run(self, buf: dict[int, Any]) -> None:
        """Run the steps on the values in ``buf``: one launch of a cached graph, a capture and a launch,
        or plainly. Called on the replaying thread with every operand held."""
        cap = self.capability
        if cap is None or self.reason:
            self.run_plain(buf)
            return
        address = cap.address
        key = tuple(address(buf[v]) for v in self.operands)
        launch = self.cache.get(key)
        if launch is None:
            steps = self.steps

            def run() -> None:
                for s in steps:
                    s.run(buf)

            try:
                launch = cap.capture(run, self.device.default_stream)
            except DsrtError as exc:
                self.reason = f"capture failed, replayed plainly from now on: {exc}"
                self.cache.clear()
                self.run_plain(buf)
                return
            self.captures += 1
            self.cache[key] = launch
            while len(self.cache) > self.limit:
                self.cache.popitem(last=False)
                self.evictions += 1
        else:
            self.cache.move_to_end(key)
            self.hits += 1
        try:
            launch()
        except BaseException:
            self.cache.pop(key, None)  # never launch a graph that failed again
            raise

    def describe(self) -> dict[str, Any]:
        last = self.first + len(self.steps) - 1
        return {"steps": [self.first, last], "device": self.device.id, "captured": self.captured,
                "reason": self.reason, "cached": len(self.cache), "limit": self.limit,
                "captures": self.captures, "hits": self.hits, "evictions": self.evictions}


def _operands(steps: Sequence[Step]) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for s in steps:
        for v in (*s.ins, *s.outs):
            seen.setdefault(v, None)
    return tuple(seen)


def segments(steps: Sequence[Step]) -> list[Segment]:
    """``steps`` cut into maximal runs on one device: consecutive steps its ``graph_replay`` accepts
    become one captured segment; consecutive steps it does not accept, for one reason, a plain one."""
    out: list[Segment] = []
    for i, s in enumerate(steps):
        cap = getattr(s.device, "graph_replay", None)
        why = f"{s.device.id} declares no graph capture (graph_replay)" if cap is None else cap.accepts(s)
        prev = out[-1] if out else None
        if prev is not None and prev.device is s.device and prev.reason == why and (prev.captured or why):
            prev.steps.append(s)  # extend a captured run, or a plain run with the same reason
            continue
        if why:
            out.append(Segment(s.device, i, [s], None, why))
        else:
            limit = int(getattr(cap, "max_graphs", GRAPH_CACHE_SIZE))
            out.append(Segment(s.device, i, [s], cap, "", limit=max(limit, 1)))
    for seg in out:
        if seg.captured:
            seg.operands = _operands(seg.steps)
    return out
