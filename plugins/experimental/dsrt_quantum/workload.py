"""``dsrt run`` checks for QPUs: a 12-qubit QFT of a basis state against numpy's DFT."""

from __future__ import annotations

import numpy as np

from dsrt.device import Device
from dsrt.hookspecs import WorkloadItem

from .circuit import Circuit

__all__ = ["ITEMS", "qft"]


def qft(n: int, *, swaps: bool = True) -> Circuit:
    """The quantum Fourier transform on ``n`` qubits (qubit 0 least significant), as in textbooks."""
    c = Circuit(n, name=f"qft{n}")
    for j in reversed(range(n)):
        c.h(j)
        for k in reversed(range(j)):
            c.cp(np.pi / (1 << (j - k)), k, j)
    if swaps:
        for q in range(n // 2):
            c.swap(q, n - 1 - q)
    return c


def _run_qft(device: Device, n: int = 12, basis: int = 1234) -> tuple[float, float, float]:
    c = Circuit(n, name="qft-input")
    for q in range(n):
        if (basis >> q) & 1:
            c.x(q)
    c.instructions.extend(qft(n).instructions)
    res = device.run(c)  # type: ignore[attr-defined]
    e = np.zeros(1 << n, dtype=np.complex128)
    e[basis] = 1.0
    want = np.fft.ifft(e, norm="ortho")
    err = float(np.max(np.abs(res.statevector - want)))
    tol = 1e-12 * n if res.statevector.dtype == np.complex128 else 1e-5 * n
    flops = float(8 * (1 << n) * 4 * c.gate_count())
    return err, tol, flops


ITEMS = [WorkloadItem(name="qft-12", applies=lambda d: d.info.backend == "quantum" and
                      int(d.info.properties.get("qubits", 0)) >= 12, run=_run_qft, tags=("quantum",))]
