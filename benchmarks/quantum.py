"""Statevector QPU vs Qiskit Aer: QFT, a random depth-20 circuit and quantum volume at 20 and 24 qubits.

Each circuit runs through dsrt's ``qpu`` device (complex128, gates as C kernels on ``cpu:0``) and
through Qiskit Aer's statevector method (complex128) with fusion on and with fusion off; Aer's
figure is the better of the two. Times are end-to-end wall seconds (best of ``--repeat`` runs) of a
run that returns the final state to the caller; the final states must agree to a fidelity of at
least ``1 - 1e-9``. Prints JSON with ``--json``.

    python benchmarks/quantum.py --json [--qubits 20 24] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import dsrt
from dsrt_quantum import Circuit
from dsrt_quantum.workload import qft

FIDELITY_MIN = 1.0 - 1e-9


def random_circuit(n: int, depth: int, seed: int) -> Circuit:
    """``depth`` layers: a random rotation (rx, ry or rz, random angle) on every qubit, then CNOTs on
    neighbouring pairs (even pairs on even layers, odd pairs on odd layers)."""
    rng = np.random.default_rng(seed)
    c = Circuit(n, name=f"random{n}x{depth}")
    for layer in range(depth):
        for q in range(n):
            c.gate(("rx", "ry", "rz")[rng.integers(3)], q, params=[float(rng.uniform(0, 2 * np.pi))])
        for q in range(layer % 2, n - 1, 2):
            c.cx(q, q + 1)
    return c


def haar_unitary(dim: int, rng: np.random.Generator) -> np.ndarray:
    z = (rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))) / np.sqrt(2)
    q, r = np.linalg.qr(z)
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


def quantum_volume(n: int, seed: int) -> Circuit:
    """The quantum-volume model circuit: ``n`` layers, each a random permutation of the qubits
    followed by Haar-random SU(4) blocks on consecutive pairs."""
    rng = np.random.default_rng(seed)
    c = Circuit(n, name=f"qv{n}")
    for _ in range(n):
        perm = rng.permutation(n)
        for i in range(n // 2):
            c.unitary(haar_unitary(4, rng), int(perm[2 * i]), int(perm[2 * i + 1]), name="su4")
    return c


def to_qiskit(c: Circuit) -> Any:
    """The same circuit in Qiskit (argument order reversed for raw unitaries: Qiskit is little-endian)."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(c.num_qubits)
    for inst in c.instructions:
        qs = list(inst.qubits)
        if inst.name in ("h", "x", "swap", "cx"):
            getattr(qc, inst.name)(*qs)
        elif inst.name in ("rx", "ry", "rz", "cp"):
            getattr(qc, inst.name)(*inst.params, *qs)
        else:
            qc.unitary(inst.matrix, qs[::-1])
    qc.save_statevector()
    return qc


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--qubits", type=int, nargs="+", default=[20, 24])
    ap.add_argument("--repeat", type=int, default=None,
                    help="best of this many runs (default: 2 up to 20 qubits, 1 above, to keep the run short)")
    args = ap.parse_args()
    try:
        from qiskit_aer import AerSimulator
    except ImportError:
        print("qiskit-aer is not installed: pip install 'dsrt[bench]'", file=sys.stderr)
        return 2

    rt = dsrt.Runtime()
    qpu = rt.device("qpu:0")
    qpu.run(qft(10))  # compile the kernels and measure the fusion cost model outside the timings
    threads = os.cpu_count() or 1
    aer = {f: AerSimulator(method="statevector", precision="double", fusion_enable=f,
                           max_parallel_threads=threads) for f in (True, False)}
    rows = []
    for n in args.qubits:
        for circ in (qft(n), random_circuit(n, 20, seed=n), quantum_volume(n, seed=n)):
            qc = to_qiskit(circ)
            repeat = args.repeat or (2 if n <= 20 else 1)
            t_dsrt, res = best_of(lambda c=circ: qpu.run(c), repeat)
            mine = res.statevector
            del res
            aer_times: dict[str, float] = {}
            theirs = None
            for f, sim in aer.items():
                t, out = best_of(lambda s=sim, q=qc: np.asarray(s.run(q).result().get_statevector()), repeat)
                aer_times["fusion_on" if f else "fusion_off"] = t
                theirs = out
            fid = float(abs(np.vdot(theirs, mine)) ** 2)
            t_aer = min(aer_times.values())
            rows.append({
                "circuit": circ.name, "qubits": n, "gates": circ.gate_count(),
                "seconds_dsrt": round(t_dsrt, 4), "seconds_aer": round(t_aer, 4),
                "seconds_aer_fusion_on": round(aer_times["fusion_on"], 4),
                "seconds_aer_fusion_off": round(aer_times["fusion_off"], 4),
                "ratio": round(t_dsrt / t_aer, 3), "fidelity": fid, "fidelity_ok": fid >= FIDELITY_MIN,
            })
            del mine, theirs
            if not args.json:
                print(rows[-1], file=sys.stderr)
    import qiskit
    import qiskit_aer

    report = {
        "benchmark": "quantum statevector: dsrt qpu vs Qiskit Aer (best of fusion on/off)",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": threads},
        "peer": f"qiskit-aer {qiskit_aer.__version__} (qiskit {qiskit.__version__})",
        "precision": "complex128", "repeat": args.repeat or "2 up to 20 qubits, else 1",
        "fidelity_min": FIDELITY_MIN, "load_average": os.getloadavg()[0],
        "circuits": rows,
        "max_ratio": max(r["ratio"] for r in rows),
        "all_fidelity_ok": all(r["fidelity_ok"] for r in rows),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["all_fidelity_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
