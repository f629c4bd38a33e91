"""Circuits: a list of instructions on ``num_qubits`` qubits and ``num_clbits`` classical bits.

Qubit ``i`` is bit ``i`` of a statevector index (little-endian, as in OpenQASM and Qiskit), and
classical bit ``i`` is bit ``i`` of a measured integer (printed rightmost in a bitstring).

Build circuits in Python::

    c = Circuit(2, 2)
    c.h(0).cx(0, 1).measure(0, 0).measure(1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsrt.errors import ConfigurationError

from .gates import GATES, gate_matrix

__all__ = ["Instruction", "Circuit", "CircuitError", "MAX_GATE_QUBITS"]

#: The widest gate the kernels apply in one pass.
MAX_GATE_QUBITS = 6


class CircuitError(ConfigurationError):
    """A circuit that cannot be built: bad qubit index, wrong number of angles, unknown gate."""


@dataclass(frozen=True)
class Instruction:
    """One step of a circuit.

    ``kind`` is ``"gate"`` (``matrix`` holds the unitary, big-endian in ``qubits`` order),
    ``"measure"`` (``qubits[0]`` into ``clbits[0]``), ``"reset"`` or ``"barrier"``. ``condition`` is
    ``(clbit indices, value)``: the step runs only when those bits, read as a little-endian integer,
    equal ``value``.
    """

    kind: str
    name: str
    qubits: tuple[int, ...]
    params: tuple[float, ...] = ()
    matrix: np.ndarray | None = None
    clbits: tuple[int, ...] = ()
    condition: tuple[tuple[int, ...], int] | None = None


class Circuit:
    """A quantum circuit; the builder methods return ``self`` so calls chain."""

    def __init__(self, num_qubits: int, num_clbits: int = 0, *, name: str = "circuit") -> None:
        if num_qubits < 1:
            raise CircuitError(f"a circuit needs at least one qubit, got {num_qubits}")
        self.num_qubits = int(num_qubits)
        self.num_clbits = int(num_clbits)
        self.name = name
        self.instructions: list[Instruction] = []

    # ------------------------------------------------------------------ generic
    def _check_qubits(self, qubits: Sequence[int], what: str) -> tuple[int, ...]:
        qs = tuple(int(q) for q in qubits)
        for q in qs:
            if not 0 <= q < self.num_qubits:
                raise CircuitError(f"{what}: qubit {q} out of range (circuit has {self.num_qubits})")
        if len(set(qs)) != len(qs):
            raise CircuitError(f"{what}: repeated qubit in {list(qs)}")
        return qs

    def append(self, inst: Instruction) -> Circuit:
        """Add a prepared instruction (checked against this circuit's sizes)."""
        self._check_qubits(inst.qubits, inst.name)
        for b in inst.clbits + (inst.condition[0] if inst.condition else ()):
            if not 0 <= b < self.num_clbits:
                raise CircuitError(f"{inst.name}: classical bit {b} out of range (circuit has {self.num_clbits})")
        self.instructions.append(inst)
        return self

    def gate(self, name: str, *qubits: int, params: Sequence[float] = (),
             condition: tuple[tuple[int, ...], int] | None = None) -> Circuit:
        """Apply built-in gate ``name`` (see :data:`dsrt_quantum.gates.GATES`) to ``qubits``."""
        gd = GATES.get(name)
        if gd is None:
            raise CircuitError(f"unknown gate '{name}' (known: {', '.join(sorted(GATES))})")
        if len(params) != gd.nparams or len(qubits) != gd.nqubits:
            raise CircuitError(
                f"gate '{name}' takes {gd.nparams} angle(s) and {gd.nqubits} qubit(s),"
                f" got {len(params)} and {len(qubits)}"
            )
        ps = tuple(float(p) for p in params)
        return self.append(Instruction("gate", name, self._check_qubits(qubits, name), ps,
                                       gate_matrix(name, ps), condition=condition))

    def unitary(self, matrix: Any, *qubits: int, name: str = "unitary") -> Circuit:
        """Apply an arbitrary unitary (big-endian in ``qubits`` order)."""
        m = np.asarray(matrix, dtype=np.complex128)
        k = len(qubits)
        if not 1 <= k <= MAX_GATE_QUBITS:
            raise CircuitError(f"{name}: gates act on 1 to {MAX_GATE_QUBITS} qubits, got {k}")
        if m.shape != (1 << k, 1 << k):
            raise CircuitError(f"{name}: a {k}-qubit gate needs a {1 << k}x{1 << k} matrix, got {m.shape}")
        if not np.allclose(m.conj().T @ m, np.eye(1 << k), atol=1e-10):
            raise CircuitError(f"{name}: matrix is not unitary")
        return self.append(Instruction("gate", name, self._check_qubits(qubits, name), (), m))

    def measure(self, qubit: int, clbit: int) -> Circuit:
        """Measure ``qubit`` in the computational basis into classical bit ``clbit``."""
        return self.append(Instruction("measure", "measure", (int(qubit),), clbits=(int(clbit),)))

    def measure_all(self) -> Circuit:
        """Measure every qubit ``i`` into classical bit ``i`` (adding classical bits as needed)."""
        self.num_clbits = max(self.num_clbits, self.num_qubits)
        for q in range(self.num_qubits):
            self.measure(q, q)
        return self

    def reset(self, qubit: int) -> Circuit:
        """Put ``qubit`` back into ``|0>`` (a measurement followed by a conditional flip)."""
        return self.append(Instruction("reset", "reset", (int(qubit),)))

    def barrier(self, *qubits: int) -> Circuit:
        """A fusion boundary; no effect on the state."""
        qs = qubits or tuple(range(self.num_qubits))
        return self.append(Instruction("barrier", "barrier", self._check_qubits(qs, "barrier")))

    # ------------------------------------------------------------------ shorthands
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in GATES:
            raise AttributeError(name)
        gd = GATES[name]

        def call(*args: Any) -> Circuit:
            return self.gate(name, *args[gd.nparams:], params=args[:gd.nparams])

        call.__doc__ = f"Apply '{name}': {gd.nparams} angle(s) first, then {gd.nqubits} qubit(s)."
        return call

    # ------------------------------------------------------------------ queries
    @property
    def has_measurements(self) -> bool:
        return any(i.kind == "measure" for i in self.instructions)

    def gate_count(self) -> int:
        return sum(1 for i in self.instructions if i.kind == "gate")

    def inverse(self) -> Circuit:
        """The adjoint circuit (gates only)."""
        out = Circuit(self.num_qubits, self.num_clbits, name=f"{self.name}_dg")
        for inst in reversed(self.instructions):
            if inst.kind != "gate":
                raise CircuitError(f"cannot invert a circuit containing '{inst.kind}'")
            assert inst.matrix is not None
            out.instructions.append(Instruction("gate", inst.name + "_dg", inst.qubits, inst.params,
                                                inst.matrix.conj().T.copy()))
        return out

    def __len__(self) -> int:
        return len(self.instructions)

    def __repr__(self) -> str:
        return f"<Circuit {self.name}: {self.num_qubits} qubits, {self.num_clbits} clbits, {len(self)} steps>"
