"""The in-process transport: collectives among devices of one process.

Data moves with the destination device's own copy primitive (``Device.copy``, direct where the
backend can reach the source) and is combined with the receiving device's own kernels (``add``,
``mul``, ``maximum``, ``minimum``), so an OpenCL device reduces on the device. Every participant's
work buffer is a flat, contiguous array in the plan's compute dtype (see :mod:`.ops`).

Rounds of a schedule run in two phases, all receives into scratch first and then all combines, so
a round reads only values from before it. Deterministic mode replaces every reduction by the left
fold ``((x0 op x1) op x2) ...`` in participant order, whichever algorithm moves the data, so results
are bit-identical run to run and across algorithms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dsrt.collective.algorithms as alg

from ..array import Array
from ..device import Device
from ..errors import CollectiveError
from .base import IntraTransport
from .buffers import segment

__all__ = ["InProcessTransport", "synchronize_devices"]


def synchronize_devices(devices: Sequence[Device], deadline: float | None, what: str) -> None:
    """Wait until every device's default stream is idle; past ``deadline`` (``perf_counter`` seconds)
    raise :class:`CollectiveError` naming the devices that never finished."""
    events = [(d, d.default_stream.record_event()) for d in devices]
    while True:
        pending = [d for d, ev in events if not ev.query()]
        if not pending:
            return
        if deadline is not None and time.perf_counter() > deadline:
            ids = [d.id for d in pending]
            raise CollectiveError(
                f"{what}: timed out waiting for device(s) {', '.join(ids)} (their queued work never finished)",
                missing=ids,
            )
        time.sleep(0.0005)


class InProcessTransport(IntraTransport):
    """Collectives over ``bufs``: one flat work array per participating device of this process."""

    name = "inprocess"

    # ------------------------------------------------------------------ primitives
    @staticmethod
    def _part(buf: Array, bounds: Sequence[int] | None, seg: int) -> Array:
        if seg < 0 or bounds is None:
            return buf
        return segment(buf, bounds[seg], bounds[seg + 1])

    def _run(self, bufs: Sequence[Array], schedule: list[list[alg.Move]], kernel: str,
             bounds: Sequence[int] | None = None) -> None:
        for rnd in schedule:
            received: list[tuple[alg.Move, Array]] = []
            for mv in rnd:
                src = self._part(bufs[mv.src], bounds, mv.seg)
                dst_dev = bufs[mv.dst].device
                if mv.combine:
                    tmp = dst_dev.empty(src.shape, src.dtype)
                    dst_dev.copy(tmp, src)
                    received.append((mv, tmp))
                else:
                    dst_dev.copy(self._part(bufs[mv.dst], bounds, mv.seg), src)
            for mv, tmp in received:
                own = self._part(bufs[mv.dst], bounds, mv.seg)
                # Combine as (lower participant) op (higher participant): both sides of an exchange
                # compute the same bits even for non-associative floating point.
                first, second = (tmp, own) if mv.src < mv.dst else (own, tmp)
                own.device.launch(kernel, first, second, out=own)

    def _fold_into(self, owner: Array, sources: Sequence[Array], kernel: str) -> None:
        """``owner`` := left fold of ``sources`` (participant order) computed on owner's device."""
        dev = owner.device
        acc = dev.empty(owner.shape, owner.dtype)
        dev.copy(acc, sources[0])
        tmp: Array | None = None
        for src in sources[1:]:
            if src.device is not dev:
                if tmp is None:
                    tmp = dev.empty(owner.shape, owner.dtype)
                dev.copy(tmp, src)
                src = tmp
            dev.launch(kernel, acc, src, out=acc)
        dev.copy(owner, acc)

    # ------------------------------------------------------------------ collectives
    def reduce_scatter(self, bufs: Sequence[Array], bounds: Sequence[int], kernel: str, *,
                       deterministic: bool = False) -> None:
        """Afterwards ``bufs[i][bounds[i]:bounds[i+1]]`` holds the reduction of that segment."""
        n = len(bufs)
        if n == 1:
            return
        if not deterministic:
            self._run(bufs, alg.ring_reduce_scatter(n), kernel, bounds)
            return
        results = []
        for j in range(n):
            parts = [segment(b, bounds[j], bounds[j + 1]) for b in bufs]
            dev = bufs[j].device
            acc = dev.empty(parts[j].shape, parts[j].dtype)
            results.append(acc)
            self._fold_into(acc, parts, kernel)
        for j in range(n):
            bufs[j].device.copy(segment(bufs[j], bounds[j], bounds[j + 1]), results[j])

    def all_gather(self, bufs: Sequence[Array], bounds: Sequence[int]) -> None:
        """Every buffer gets segment i from participant i (ring all-gather)."""
        if len(bufs) > 1:
            self._run(bufs, alg.ring_all_gather(len(bufs)), "copy", bounds)

    def all_reduce(self, bufs: Sequence[Array], kernel: str, *, algorithm: str = "auto",
                   deterministic: bool = False) -> str:
        """Every buffer gets the reduction of all; returns the algorithm used."""
        n = len(bufs)
        if n == 1:
            return "none"
        nbytes = bufs[0].nbytes
        chosen = alg.choose_algorithm(nbytes, n, algorithm)
        if chosen == "ring":
            bounds = alg.even_bounds(bufs[0].size, n)
            self.reduce_scatter(bufs, bounds, kernel, deterministic=deterministic)
            self.all_gather(bufs, bounds)
        elif chosen == "tree":
            if deterministic:
                self._fold_into(bufs[0], list(bufs), kernel)
            else:
                self._run(bufs, alg.tree_reduce(n), kernel)
            self._run(bufs, alg.tree_broadcast(n), "copy")
        else:
            if deterministic:
                snapshot = []
                for b in bufs:
                    c = b.device.empty(b.shape, b.dtype)
                    b.device.copy(c, b)
                    snapshot.append(c)
                for b in bufs:
                    self._fold_into(b, snapshot, kernel)
            else:
                self._run(bufs, alg.recursive_doubling(n), kernel)
        return chosen

    def reduce(self, bufs: Sequence[Array], root: int, kernel: str, *, deterministic: bool = False) -> None:
        """``bufs[root]`` gets the reduction of all (the others are scratch afterwards)."""
        if len(bufs) == 1:
            return
        if deterministic:
            self._fold_into(bufs[root], list(bufs), kernel)
        else:
            self._run(bufs, alg.tree_reduce(len(bufs), root), kernel)

    def broadcast(self, bufs: Sequence[Array], root: int) -> None:
        """Every buffer gets ``bufs[root]`` (binomial tree of copies)."""
        if len(bufs) > 1:
            self._run(bufs, alg.tree_broadcast(len(bufs), root), "copy")
