"""dsrt_quantum: a simulated statevector QPU (``qpu:0``...) whose state lives on a classical device.

Registers the ``quantum`` backend, the task kernels ``run_circuit``, ``sample`` and ``expectation``,
the ``dsrt quantum`` command and a ``dsrt run`` check (a 12-qubit QFT against the DFT)::

    rt = dsrt.Runtime()
    qpu = rt.device("qpu:0")
    result = qpu.run(Circuit(2, 2).h(0).cx(0, 1).measure_all(), shots=1000, seed=1)
    rt.launch("expectation", qasm_text, device="qpu:0", observable="ZZ")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dsrt
from dsrt.hookspecs import BackendSpec, CliCommand, WorkloadItem
from dsrt.kernels import KernelSpec

from .circuit import Circuit, CircuitError, Instruction
from .device import QpuDevice, as_circuit
from .noise import NoiseModel
from .qasm import QasmError, load_qasm
from .simulator import QuantumResult, Simulator, Timing

__all__ = [
    "Circuit", "CircuitError", "Instruction", "QpuDevice", "NoiseModel", "QasmError", "QuantumResult",
    "Simulator", "Timing", "load_qasm", "as_circuit",
    "dsrt_register_backends", "dsrt_register_kernels", "dsrt_cli_commands", "dsrt_workload_items",
]


def _probe(runtime: dsrt.Runtime) -> list[QpuDevice]:
    return [QpuDevice(0, runtime)]


def _create(runtime: dsrt.Runtime, device_id: str, params: Mapping[str, Any]) -> QpuDevice:
    prefix, _, idx = device_id.partition(":")
    if prefix != "qpu" or not idx.isdigit():
        raise dsrt.ConfigurationError(f"quantum devices are named qpu:N, got '{device_id}'")
    return QpuDevice(int(idx), runtime, params)


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="quantum", device_prefix="qpu", api_version=1, probe=_probe, create_simulated=_create,
        experimental=True, priority=-10,
        description="simulated statevector QPU; gates are C kernels on a host device",
        install_hint="pip install dsrt[quantum] (OpenQASM 3 parser)",
    )]


def _task(inputs: Sequence[Any], params: Mapping[str, Any]) -> None:
    return None


def _ref_run(inputs: Sequence[Any], params: Mapping[str, Any]) -> Any:
    from .reference import reference_state

    return reference_state(as_circuit(inputs[0] if inputs else params["circuit"]))


def _ref_sample(inputs: Sequence[Any], params: Mapping[str, Any]) -> Any:
    from .reference import reference_probabilities

    return reference_probabilities(as_circuit(inputs[0] if inputs else params["circuit"]))


def _ref_expectation(inputs: Sequence[Any], params: Mapping[str, Any]) -> Any:
    from .reference import reference_expectation

    return reference_expectation(as_circuit(inputs[0] if inputs else params["circuit"]), params["observable"])


def _circuit_flops(inputs: Sequence[Any], params: Mapping[str, Any]) -> float:
    c = inputs[0] if inputs else params.get("circuit")
    if not isinstance(c, Circuit):
        return 0.0
    return float(sum(8 * (1 << c.num_qubits) * (1 << len(i.qubits)) for i in c.instructions if i.kind == "gate"))


@dsrt.hookimpl
def dsrt_register_kernels() -> list[KernelSpec]:
    common = {"circuit": None, "seed": None, "method": "statevector"}
    return [
        KernelSpec(name="run_circuit", doc="run a circuit; returns a QuantumResult (counts, final state)",
                   arity=(0, 1), params={**common, "shots": 0, "return_state": True}, infer=_task,
                   reference=_ref_run, dtypes=frozenset(), flops=_circuit_flops),
        KernelSpec(name="sample", doc="shots of a circuit (measuring all qubits if it measures none); returns counts",
                   arity=(0, 1), params={**common, "shots": 1024}, infer=_task, reference=_ref_sample,
                   dtypes=frozenset(), flops=_circuit_flops),
        KernelSpec(name="expectation", doc="<O> of a circuit's final state for a Pauli-sum observable",
                   arity=(0, 1), params={**common, "observable": "Z", "trajectories": 200}, infer=_task,
                   reference=_ref_expectation, dtypes=frozenset(), flops=_circuit_flops),
    ]


@dsrt.hookimpl
def dsrt_cli_commands() -> list[CliCommand]:
    from .cli import COMMAND

    return [COMMAND]


@dsrt.hookimpl
def dsrt_workload_items() -> list[WorkloadItem]:
    from .workload import ITEMS

    return list(ITEMS)
