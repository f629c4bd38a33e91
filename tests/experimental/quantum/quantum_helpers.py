"""Reference helpers for the quantum tests: a dense numpy unitary and random circuits."""

from __future__ import annotations

import numpy as np

from dsrt_quantum import Circuit
from dsrt_quantum.gates import GATES


def dense_unitary(circuit: Circuit) -> np.ndarray:
    """The circuit's full 2^n x 2^n unitary (little-endian), applying each gate to all columns at once."""
    n = circuit.num_qubits
    u = np.eye(1 << n, dtype=np.complex128).reshape((2,) * n + (1 << n,))
    for inst in circuit.instructions:
        assert inst.kind == "gate" and inst.matrix is not None
        k = len(inst.qubits)
        axes = [n - 1 - q for q in inst.qubits]
        u = np.tensordot(inst.matrix.reshape((2,) * (2 * k)), u, axes=(list(range(k, 2 * k)), axes))
        u = np.moveaxis(u, list(range(k)), axes)
    return u.reshape(1 << n, 1 << n)


def random_circuit(n: int, ngates: int, seed: int, names: tuple[str, ...] | None = None) -> Circuit:
    """Random gates from the built-in set (1 to min(n, 3) qubits) with random angles."""
    rng = np.random.default_rng(seed)
    pool = [g for g in (names or tuple(GATES)) if GATES[g].nqubits <= n and GATES[g].nqubits <= 3]
    c = Circuit(n, name=f"random{seed}")
    for _ in range(ngates):
        g = GATES[pool[rng.integers(len(pool))]]
        qs = [int(q) for q in rng.choice(n, g.nqubits, replace=False)]
        c.gate(g.name, *qs, params=[float(a) for a in rng.uniform(-np.pi, np.pi, g.nparams)])
    return c
