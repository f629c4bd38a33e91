"""``StateVector``: 2^n amplitudes in a dsrt ``Array`` on a host device, changed by C kernels.

The state is owned by this object (its Array returns to the host's memory pool when the object is
gone). Qubit ``q`` is bit ``q`` of an amplitude's index. Matrices handed to :meth:`apply_dense` are
big-endian in the order of the qubits given (the first qubit is the most significant bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dsrt.device import Device

from .ckernels import kernel_set
from .fusion import FusedOp

__all__ = ["StateVector"]


class StateVector:
    """An ``n``-qubit state of ``dtype`` (complex64 or complex128) on ``host``, initialised to |0...0>."""

    def __init__(self, host: Device, n: int, dtype: np.dtype) -> None:
        self.host = host
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        self.kernels = kernel_set(host, self.dtype)
        self.array = host.empty((1 << self.n,), self.dtype)
        self.real = self.kernels.real
        self.reset_to(0)

    @property
    def nbytes(self) -> int:
        """Bytes of the amplitudes."""
        return (1 << self.n) * self.dtype.itemsize

    def reset_to(self, index: int = 0) -> None:
        """Set the state to the basis state ``|index>``."""
        self.kernels.qs_init(self.array, self.n, int(index))

    def apply_dense(self, qubits: Sequence[int], matrix: np.ndarray) -> None:
        """Multiply by ``matrix`` (any 2^k x 2^k, big-endian in ``qubits`` order), k = 1..6."""
        k = len(qubits)
        m = np.asarray(matrix, dtype=np.complex128)
        mt = m.T
        planes = np.ascontiguousarray(np.stack([mt.real, mt.imag]).astype(self.real))
        sq = np.array(sorted(qubits), dtype=np.int64)
        j = np.arange(1 << k, dtype=np.int64)
        off = np.zeros(1 << k, dtype=np.int64)
        for t, q in enumerate(qubits):
            off |= ((j >> (k - 1 - t)) & 1) << q
        if k == 1:
            sq = np.array([qubits[0]], dtype=np.int64)
        rc = self.kernels.qs_dense(self.array, self.n, k, sq, off, planes)
        if rc != 0:
            raise ValueError(f"dense kernel refused a {k}-qubit block on {self.n} qubits")

    def apply_diag(self, qubits: Sequence[int], diag: np.ndarray) -> None:
        """Multiply amplitude ``i`` by ``diag[bits of i at ascending qubits]``."""
        qs = sorted(qubits)
        mask = 0
        for q in qs:
            mask |= 1 << q
        d = np.asarray(diag, dtype=np.complex128)
        planes = np.ascontiguousarray(np.stack([d.real, d.imag]).astype(self.real))
        self.kernels.qs_diag(self.array, self.n, len(qs), mask, planes)

    def apply(self, op: FusedOp) -> None:
        """Apply one fused block."""
        if op.kind == "diag":
            self.apply_diag(op.qubits, op.data)
        else:
            self.apply_dense(op.qubits, op.data)

    def prob_one(self, qubit: int) -> float:
        """Probability that ``qubit`` reads 1 (of the state as it is, normalised or not)."""
        return float(self.kernels.qs_prob1(self.array, self.n, int(qubit)))

    def collapse(self, qubit: int, outcome: int, scale: float) -> None:
        """Project ``qubit`` onto ``outcome`` and multiply what is left by ``scale``."""
        self.kernels.qs_collapse(self.array, self.n, int(qubit), int(outcome), float(scale))

    def probabilities(self) -> np.ndarray:
        """``|amplitude|^2`` of every basis state, as a new float64 host array (8 x 2^n bytes)."""
        out = np.empty(1 << self.n, dtype=np.float64)
        self.kernels.qs_probs(self.array, self.n, out)
        return out

    def pauli(self, xmask: int, zmask: int) -> complex:
        """``sum_i conj(psi[i ^ xmask]) (-1)^popcount(i & zmask) psi[i]``."""
        out = np.zeros(2, dtype=np.float64)
        self.kernels.qs_pauli(self.array, self.n, int(xmask), int(zmask), out)
        return complex(out[0], out[1])

    def to_numpy(self) -> np.ndarray:
        """A host copy of the amplitudes (little-endian qubit order)."""
        return self.host.copy_to_host(self.array)

    def load(self, amplitudes: np.ndarray) -> None:
        """Overwrite the state with ``amplitudes`` (2^n entries)."""
        self.host.copy_from_host(self.array, np.ascontiguousarray(amplitudes, dtype=self.dtype))
