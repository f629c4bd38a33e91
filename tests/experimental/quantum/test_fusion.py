"""Fusion: blocks compose correctly, diagonal gates take the diagonal path, and the cost model never
predicts a fused plan slower than the unfused one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from quantum_helpers import dense_unitary, random_circuit

from dsrt_quantum import Circuit
from dsrt_quantum.fusion import CostModel, FusedOp, fuse
from dsrt_quantum.simulator import Simulator


def _ops(c: Circuit) -> list[tuple[tuple[int, ...], np.ndarray]]:
    return [(i.qubits, i.matrix) for i in c.instructions]  # type: ignore[misc]


def _fused_unitary(n: int, ops: list[FusedOp]) -> np.ndarray:
    """The unitary of a fused plan. Diagonal blocks (which may span more qubits than a dense gate)
    multiply the rows directly; their table is little-endian over ascending qubits."""
    index = np.arange(2**n)
    u = np.eye(2**n, dtype=complex)
    for op in ops:
        if op.kind == "dense":
            u = dense_unitary(Circuit(n).unitary(op.data, *op.qubits)) @ u
        else:
            entry = sum(((index >> q) & 1) << j for j, q in enumerate(sorted(op.qubits)))
            u = np.asarray(op.data)[entry][:, None] * u
    return u


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 8), seed=st.integers(0, 2**31), max_dense=st.integers(2, 6))
def test_fused_blocks_equal_the_circuit(n, seed, max_dense):  # type: ignore[no-untyped-def]
    c = random_circuit(n, 5 * n, seed)
    model = CostModel(max_dense=max_dense, launch=1e-6, dense={1: 1e-9, 2: 1e-9, 3: 1.1e-9, 4: 1.3e-9,
                                                                5: 2e-9, 6: 4e-9}, diag=1e-9)
    ops = fuse(_ops(c), n, model)
    assert all(len(op.qubits) <= max(max_dense, 3) or op.kind == "diag" for op in ops)
    np.testing.assert_allclose(_fused_unitary(n, ops), dense_unitary(c), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 24), seed=st.integers(0, 2**31), launch=st.floats(0, 1e-4),
       per5=st.floats(1.0, 10.0))
def test_fusion_never_predicted_slower(n, seed, launch, per5):  # type: ignore[no-untyped-def]
    dense = {k: 1e-9 * (1 + (per5 - 1) * (k - 1) / 4) for k in range(1, 7)}
    model = CostModel(dense=dense, diag=0.8e-9, launch=launch)
    c = random_circuit(min(n, 10), 40, seed)
    unfused = fuse(_ops(c), n, model, enabled=False)
    fused = fuse(_ops(c), n, model)

    def cost(ops: list[FusedOp]) -> float:
        return sum(model.cost(o.kind, len(o.qubits), n) for o in ops)

    assert cost(fused) <= cost(unfused) * (1 + 1e-12)


def test_diagonal_gates_take_the_diagonal_path() -> None:
    c = Circuit(6)
    for q in range(6):
        c.rz(0.1 * q, q).t(q)
    c.cz(0, 5).cp(0.3, 1, 4).rzz(0.2, 2, 3)
    ops = fuse(_ops(c), 6, CostModel())
    assert [o.kind for o in ops] == ["diag"]
    assert ops[0].gates == len(c)
    np.testing.assert_allclose(np.diag(dense_unitary(c)), ops[0].data, atol=1e-14)


def test_fusion_reduces_launches_on_a_layered_circuit(qpu) -> None:  # type: ignore[no-untyped-def]
    c = random_circuit(12, 200, 3, names=("h", "rx", "ry", "cx", "cz", "rz"))
    sim = qpu.simulator()
    fused = sim.plan(c)
    assert 0 < len(fused) < c.gate_count()
    plain = Simulator(qpu.host, fusion=False).plan(c)
    assert len(plain) == c.gate_count()
