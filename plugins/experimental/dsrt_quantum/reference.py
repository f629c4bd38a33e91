"""A plain numpy statevector simulator: the definition of correct for the quantum kernels.

No fusion, no C: each gate is an ``einsum``-free ``tensordot`` on a ``(2,)*n`` tensor. Measurements
and resets are not modelled (use it on unitary circuits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .circuit import Circuit

__all__ = ["reference_state", "reference_expectation", "reference_probabilities"]


def reference_state(circuit: Circuit) -> np.ndarray:
    """The final state of ``circuit``'s gates from |0...0>, little-endian in the qubits."""
    n = circuit.num_qubits
    psi = np.zeros((2,) * n, dtype=np.complex128)
    psi[(0,) * n] = 1.0
    # Tensor axis a holds qubit n-1-a, so a C-order flatten is little-endian in the qubits.
    for inst in circuit.instructions:
        if inst.kind != "gate":
            continue
        assert inst.matrix is not None
        k = len(inst.qubits)
        g = inst.matrix.reshape((2,) * (2 * k))
        axes = [n - 1 - q for q in inst.qubits]
        psi = np.tensordot(g, psi, axes=(list(range(k, 2 * k)), axes))
        psi = np.moveaxis(psi, list(range(k)), axes)
    return psi.reshape(-1)


def reference_probabilities(circuit: Circuit) -> np.ndarray:
    """``|amplitude|^2`` of :func:`reference_state`."""
    return np.abs(reference_state(circuit)) ** 2


def reference_expectation(circuit: Circuit, observable: Any) -> float:
    """``<O>`` from a dense operator (small circuits only)."""
    from .noise import PAULIS
    from .simulator import parse_observable

    psi = reference_state(circuit)
    total = 0.0
    for c, lbl in parse_observable(observable, circuit.num_qubits):
        op = np.array([[1.0 + 0j]])
        for ch in lbl:  # leftmost character is the highest qubit: kron builds big-endian order
            op = np.kron(op, PAULIS[ch])
        total += float(np.real(c * np.vdot(psi, op @ psi)))
    return total
