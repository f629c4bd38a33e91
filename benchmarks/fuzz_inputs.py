"""Fuzz every input format dsrt reads, and time the refusal of each known "bomb"; prints JSON.

Per format (YAML topology, OpenQASM 2, OpenQASM 3, NIR): seeded mutants (byte flips, truncation,
duplicated lines, numbers inflated to huge values, bytes that are not UTF-8, deep nesting; NIR:
inflated HDF5 shapes, renamed types, nested graphs...) fed to the reader and run where they load,
in a child process with an address-space cap and a per-mutant alarm (tests/fuzz_common.py).
Reported: mutants, located errors, accepted, unlocated, other (tracebacks: must be 0), hangs (must
be 0) and the slowest mutant in seconds. Then each bomb goes through the real command line in its
own process and the wall seconds to its one-line refusal (exit 2) are reported, with that line.

    python benchmarks/fuzz_inputs.py [--count 2000] [--seed 1] [--formats yaml qasm2 qasm3 nir]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "fuzz_common.py"


def fuzz(fmt: str, count: int, seed: int, per_mutant_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HARNESS), fmt, str(count), str(seed), str(per_mutant_s)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"format": fmt, "error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    tally = json.loads(proc.stdout)
    tally["wall_s"] = round(time.perf_counter() - t0, 2)
    tally["examples"] = tally["examples"][:3]
    return tally


def _bombs(tmp: Path) -> dict[str, list[str]]:
    """Each bomb as the argv of a dsrt command."""
    replicas = tmp / "replicas.yaml"
    replicas.write_text("nodes:\n" + "".join(
        f"  - {{name: n{i}, replicas: 65536, devices: [{{backend: cpu, count: 4096}}]}}\n" for i in range(4)))
    lines = ["x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        lines.append(f"x-{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    laughs = tmp / "laughs.yaml"
    laughs.write_text("\n".join(lines) + "\nnodes: [{devices: [cpu]}]\n")
    zero = tmp / "zero.yaml"
    zero.write_text("nodes:\n  - devices: [cpu]\ninclude: /dev/zero\n")
    gates = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[1];", "gate g0 a { x a; x a; }"]
    gates += [f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 40)]
    qasm = tmp / "gates2e40.qasm"
    qasm.write_text("\n".join([*gates, "g39 q[0];"]) + "\n")
    qzero = tmp / "zero.qasm"
    qzero.write_text('OPENQASM 2.0;\ninclude "/dev/zero";\nqreg q[1];\n')
    bell = tmp / "bell.qasm"
    bell.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
                    "measure q -> c;\n")
    out = {
        "topology_replicas_4x65536x4096": ["topology", "check", str(replicas)],
        "topology_alias_billion_laughs": ["topology", "check", str(laughs)],
        "topology_include_dev_zero": ["topology", "check", str(zero)],
        "qasm_gate_expansion_2e40": ["quantum", "run", str(qasm)],
        "qasm_include_dev_zero": ["quantum", "run", str(qzero)],
        "qasm_shots_1e12": ["quantum", "run", str(bell), "--shots", "1000000000000"],
        "simulate_1e9_chunks": ["simulate", str(ROOT / "specs" / "laptop.yaml"), "--workload", "gemm:1000000000:1MB"],
    }
    try:
        import h5py

        sys.path.insert(0, str(ROOT / "tests"))
        from fuzz_common import _nir_seed

        nir_file = tmp / "w298gib.nir"
        _nir_seed(nir_file)
        with h5py.File(nir_file, "r+") as f:
            node = f["node/nodes/fc1"]
            del node["weight"]
            node.create_dataset("weight", shape=(200_000, 200_000), dtype="f8", chunks=(1, 1024),
                                compression="gzip", fillvalue=0.5)
        out["nir_weight_298GiB"] = ["snn", "run", str(nir_file), "--steps", "10", "--dt", "0.001"]
    except ImportError:
        pass
    return out


def bombs() -> dict[str, Any]:
    report: dict[str, Any] = {}
    startup = _time([sys.executable, "-m", "dsrt", "--help"])
    report["python_and_dsrt_startup_s"] = startup["seconds"]
    with tempfile.TemporaryDirectory(prefix="bombs-") as tmp:
        for name, argv in _bombs(Path(tmp)).items():
            report[name] = _time([sys.executable, "-m", "dsrt", *argv])
    return report


def _time(cmd: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "exit": "timeout"}
    took = time.perf_counter() - t0
    err = proc.stderr.strip().splitlines()
    return {"seconds": round(took, 3), "exit": proc.returncode, "stderr_lines": len(err),
            "message": (err[0] if err else "")[:200]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="mutants per format")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-mutant", type=float, default=10.0, help="seconds before a mutant counts as a hang")
    ap.add_argument("--formats", nargs="+", default=["yaml", "qasm2", "qasm3", "nir"])
    args = ap.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    report: dict[str, Any] = {"count": args.count, "seed": args.seed, "formats": {}}
    for fmt in args.formats:
        report["formats"][fmt] = fuzz(fmt, args.count, args.seed, args.per_mutant)
    report["bombs"] = bombs()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
