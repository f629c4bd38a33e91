"""``dsrt quantum run FILE.qasm [--shots N] [--seed S] [--statevector OUT.npy] [--json] [--device qpu:0]``.

Prints the counts (one ``bitstring count`` line each, classical bit 0 rightmost), or a JSON object
with ``--json``. ``--statevector`` saves the final state as a complex numpy array, amplitude ``i``
for basis state ``i`` (qubit 0 least significant, the OpenQASM/Qiskit order).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dsrt.errors import ConfigurationError, check_output_file
from dsrt.hookspecs import CliCommand

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="quantum_command", metavar="{run}")
    run = sub.add_parser("run", help="run an OpenQASM 2/3 file and print the counts")
    run.add_argument("file", help="an OpenQASM 2.0 or 3 program")
    run.add_argument("--shots", type=int, default=1024, help="measurement shots (default 1024)")
    run.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    run.add_argument("--statevector", metavar="OUT.npy", default=None, help="save the final state here")
    run.add_argument("--json", action="store_true", help="print a JSON object")
    run.add_argument("--device", default="qpu:0", help="the QPU to run on (default qpu:0)")
    run.add_argument("--method", choices=("statevector", "density_matrix"), default="statevector")


def _run(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    if getattr(args, "quantum_command", None) != "run":
        print("usage: dsrt quantum run FILE.qasm [--shots N] [--seed S] [--statevector OUT.npy] [--json]")
        return 2
    from .device import QpuDevice
    from .qasm import load_qasm

    if args.statevector is not None:
        check_output_file(args.statevector, "--statevector")
    # Whatever its name, FILE is a file: read it as one (bounded, UTF-8, regular files only).
    circuit = load_qasm(Path(args.file))
    rt = make()
    dev = rt.device(args.device)
    if not isinstance(dev, QpuDevice):
        raise ConfigurationError(f"{dev.id} is not a QPU (use --device qpu:N)")
    shots = args.shots if circuit.has_measurements else 0
    res = dev.run(circuit, shots=shots, seed=args.seed, return_state=args.statevector is not None,
                  method=args.method)
    if args.statevector is not None:
        state = res.statevector if res.statevector is not None else res.density_matrix
        if state is not None:
            try:
                np.save(args.statevector, state)
            except OSError as exc:
                raise ConfigurationError(f"--statevector {args.statevector}: cannot write: {exc.strerror or exc}") from None
    if args.json:
        out = res.to_dict()
        out["file"] = args.file
        if args.statevector is not None:
            out["statevector_file"] = args.statevector
        print(json.dumps(out, indent=2))
    else:
        if not res.counts:
            print(f"# {args.file}: no measurements; {circuit.num_qubits} qubits, {circuit.gate_count()} gates")
        for bits, n in sorted(res.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"{bits or '-'} {n}")
        print(f"# {res.shots} shots on {res.device} in {res.seconds:.3f} s host time,"
              f" {res.modelled_seconds:.6f} s modelled QPU time")
    return 0



COMMAND = CliCommand(name="quantum", help="simulated quantum processor: run OpenQASM programs",
                     configure=_configure, run=_run)
