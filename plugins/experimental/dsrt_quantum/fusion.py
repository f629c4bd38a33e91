"""Gate fusion: neighbouring gates become one dense block (2 to 5 qubits) or one diagonal table.

Blocks grow greedily along the circuit. Several blocks stay open at once as long as they act on
disjoint qubits (they commute). When a gate arrives, the open blocks it touches (or, for a gate on
untouched qubits, the open block that gains most by taking it) are merged with it
only if the :class:`CostModel` predicts the merged block is no slower than applying those blocks and
the gate one after another; otherwise they are closed (emitted) and the gate opens a new block. So
fusion never makes a circuit slower under the model, and the model is measured on this machine.
Diagonal gates (``rz``, ``cp``, ``cz``, ``t``...) fuse into diagonal blocks of up to
:attr:`CostModel.max_diag` qubits, which cost one pass over the state whatever their width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .gates import is_diagonal

__all__ = ["FusedOp", "CostModel", "fuse", "compose_dense", "compose_diag"]


@dataclass
class FusedOp:
    """A block to apply: ``kind`` is ``"dense"`` (``data`` a matrix, big-endian in ``qubits``) or
    ``"diag"`` (``data`` the diagonal, indexed little-endian over ``qubits`` sorted ascending)."""

    kind: str
    qubits: tuple[int, ...]
    data: np.ndarray
    gates: int = 1


@dataclass
class CostModel:
    """Seconds to apply one block to an ``n``-qubit state: ``launch + 2^n * per_amp``.

    ``dense[k]`` is seconds per amplitude of a dense ``k``-qubit block, ``diag`` of a diagonal block;
    ``launch`` the fixed cost of one kernel call (seconds). ``max_dense`` and ``max_diag`` bound the
    width of fused blocks.
    """

    dense: dict[int, float] = field(default_factory=lambda: {1: 1.0, 2: 1.0, 3: 1.2, 4: 1.8, 5: 3.2, 6: 7.0})
    diag: float = 0.9
    launch: float = 0.0
    max_dense: int = 5
    max_diag: int = 10

    def cost(self, kind: str, k: int, n: int) -> float:
        per = self.diag if kind == "diag" else self.dense[k]
        return self.launch + per * float(1 << n)


@dataclass
class _Block:
    qubits: set[int]
    ops: list[tuple[tuple[int, ...], np.ndarray]]
    diag: bool
    cost: float


def fuse(ops: Sequence[tuple[tuple[int, ...], np.ndarray]], n: int, model: CostModel,
         enabled: bool = True) -> list[FusedOp]:
    """Fuse a run of unitary gates ``(qubits, matrix)`` on an ``n``-qubit state into blocks."""
    out: list[FusedOp] = []
    if not enabled:
        for qs, m in ops:
            out.append(_emit(_Block(set(qs), [(qs, m)], is_diagonal(m), 0.0)))
        return out
    open_blocks: list[_Block] = []
    owner: dict[int, _Block] = {}
    for qs, m in ops:
        diag = is_diagonal(m)
        own_kind = "diag" if diag and len(qs) <= model.max_diag else "dense"
        own_cost = model.cost(own_kind, len(qs), n)
        touched: list[_Block] = []
        for q in qs:
            b = owner.get(q)
            if b is not None and all(b is not t for t in touched):
                touched.append(b)
        if not touched and open_blocks:
            # A gate on free qubits may join any open block (they commute); take the biggest saving.
            best, saving = None, 0.0
            for b in open_blocks:
                kind = "diag" if diag and b.diag else "dense"
                width = len(b.qubits) + len(qs)
                if width <= (model.max_diag if kind == "diag" else model.max_dense):
                    gain = b.cost + own_cost - model.cost(kind, width, n)
                    if gain > saving:
                        best, saving = b, gain
            if best is not None:
                touched = [best]
        union = set(qs).union(*(b.qubits for b in touched))
        merged_diag = diag and all(b.diag for b in touched)
        limit = model.max_diag if merged_diag else model.max_dense
        merged: _Block | None = None
        if touched and len(union) <= limit:
            kind = "diag" if merged_diag else "dense"
            c = model.cost(kind, len(union), n)
            if c <= sum(b.cost for b in touched) + own_cost:
                merged = _Block(union, [op for b in touched for op in b.ops] + [(qs, m)], merged_diag, c)
        for b in touched:
            open_blocks.remove(b)
            for q in b.qubits:
                owner.pop(q, None)
            if merged is None:
                out.append(_emit(b))
        if merged is None:
            merged = _Block(set(qs), [(qs, m)], own_kind == "diag", own_cost)
        open_blocks.append(merged)
        for q in merged.qubits:
            owner[q] = merged
    for b in open_blocks:
        out.append(_emit(b))
    return out


def _emit(b: _Block) -> FusedOp:
    qubits = tuple(sorted(b.qubits))
    if b.diag:
        return FusedOp("diag", qubits, compose_diag(qubits, b.ops), len(b.ops))
    if len(b.ops) == 1:
        qs, m = b.ops[0]
        return FusedOp("dense", qs, m, 1)
    return FusedOp("dense", qubits, compose_dense(qubits, b.ops), len(b.ops))


def compose_dense(qubits: Sequence[int], ops: Sequence[tuple[tuple[int, ...], np.ndarray]]) -> np.ndarray:
    """The product of ``ops`` (first applied first) as a matrix big-endian in ``qubits``."""
    k = len(qubits)
    pos = {q: i for i, q in enumerate(qubits)}
    u = np.eye(1 << k, dtype=np.complex128).reshape((2,) * (2 * k))
    for qs, m in ops:
        mk = len(qs)
        g = m.reshape((2,) * (2 * mk))
        axes = [pos[q] for q in qs]
        u = np.tensordot(g, u, axes=(list(range(mk, 2 * mk)), axes))
        u = np.moveaxis(u, list(range(mk)), axes)
    return u.reshape(1 << k, 1 << k)


def compose_diag(qubits: Sequence[int], ops: Sequence[tuple[tuple[int, ...], np.ndarray]]) -> np.ndarray:
    """The product of diagonal ``ops`` as a table indexed little-endian over ascending ``qubits``."""
    k = len(qubits)
    pos = {q: i for i, q in enumerate(qubits)}
    idx = np.arange(1 << k)
    table = np.ones(1 << k, dtype=np.complex128)
    for qs, m in ops:
        mk = len(qs)
        local = np.zeros(1 << k, dtype=np.int64)
        for s, q in enumerate(qs):
            local |= ((idx >> pos[q]) & 1) << (mk - 1 - s)
        table *= np.diagonal(m)[local]
    return table
