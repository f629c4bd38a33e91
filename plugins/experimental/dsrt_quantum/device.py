"""``QpuDevice``: a simulated quantum processor whose statevector lives on a classical dsrt device.

The QPU itself allocates no memory: every state is an ``Array`` on its ``host`` (``cpu:0`` by
default), resolved lazily on first use so that probing the backend does no work. It implements the
task kernels ``run_circuit``, ``sample`` and ``expectation``, which take a circuit (a
:class:`~dsrt_quantum.circuit.Circuit` or OpenQASM 2/3 text) as their one input or as ``circuit=``.

Topology parameters (``create_simulated``): ``qubits`` (register size, default 24), ``precision``
(``complex64``/``complex128``), ``noise`` (see :mod:`dsrt_quantum.noise`), ``host`` (device id),
``fusion`` (bool), ``max_fused`` (2..6), ``memory_limit`` (bytes), ``timing`` (see
:class:`~dsrt_quantum.simulator.Timing`, seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt.device import Device, DeviceInfo, KernelImpl, Stream
from dsrt.errors import ConfigurationError

from .circuit import Circuit
from .noise import NoiseModel
from .simulator import QuantumResult, Simulator, Timing

if TYPE_CHECKING:
    from dsrt.runtime import Runtime

__all__ = ["QpuDevice", "as_circuit", "KNOWN_PARAMS"]

KNOWN_PARAMS = frozenset({"qubits", "precision", "noise", "host", "fusion", "max_fused", "memory_limit", "timing"})


def as_circuit(obj: Any) -> Circuit:
    """A :class:`Circuit` from a circuit, OpenQASM 2 or 3 source text, or a ``.qasm`` path."""
    if isinstance(obj, Circuit):
        return obj
    if isinstance(obj, str):
        from .qasm import load_qasm

        return load_qasm(obj)
    raise ConfigurationError(f"expected a Circuit or OpenQASM text, got {type(obj).__name__}")


class QpuDevice(Device):
    """A statevector QPU (``qpu:N``) on ``host``; see the module docstring for parameters."""

    def __init__(self, index: int, runtime: Runtime | None, params: Mapping[str, Any] | None = None) -> None:
        p = dict(params or {})
        dev_id = f"qpu:{index}"
        unknown = set(p) - KNOWN_PARAMS
        if unknown:
            raise ConfigurationError(f"{dev_id}: unknown parameter(s) {sorted(unknown)} (known: {sorted(KNOWN_PARAMS)})")
        self.qubits = int(p.get("qubits", 24))
        if not 1 <= self.qubits <= 62:
            raise ConfigurationError(f"{dev_id}: qubits must be 1 to 62, got {self.qubits}")
        precision = str(p.get("precision", "complex128"))
        if precision not in ("complex64", "complex128"):
            raise ConfigurationError(f"{dev_id}: precision must be complex64 or complex128, got '{precision}'")
        self.noise = NoiseModel.from_params(p.get("noise"), where=f"{dev_id} noise")
        self._runtime = runtime
        self._host_id = str(p.get("host", "cpu:0"))
        self._host: Device | None = p.get("host") if isinstance(p.get("host"), Device) else None
        if self._host is not None:
            self._host_id = self._host.id
        timing = p.get("timing") or {}
        try:
            self.timing = Timing(**timing)
        except TypeError as exc:
            raise ConfigurationError(f"{dev_id} timing: {exc}") from None
        self._sim_options = {"fusion": bool(p.get("fusion", True)), "max_fused": int(p.get("max_fused", 5)),
                             "memory_limit": p.get("memory_limit")}
        self.dtype = np.dtype(precision)
        info = DeviceInfo(
            id=dev_id, backend="quantum", index=index, name=f"statevector QPU ({self.qubits} qubits, {precision})",
            vendor="dsrt (simulated)", simulated=True, compute_units=1, synchronous=True, host_visible=False,
            precision_bits=None if self.dtype == np.complex128 else 24.0,
            properties={"qubits": self.qubits, "precision": precision, "host": self._host_id,
                        "noise": str(self.noise.to_dict()) if self.noise.active else "none",
                        "cost_model": "critical path of gate durations + per-shot overhead (Timing)",
                        "gate_1q_s": self.timing.gate_1q, "gate_2q_s": self.timing.gate_2q},
        )
        super().__init__(info)

    # ------------------------------------------------------------------ host and simulator
    @property
    def host(self) -> Device:
        """The classical device holding the statevector (resolved on first use)."""
        if self._host is None:
            if self._runtime is None:
                import dsrt

                self._runtime = dsrt.default_runtime()
            self._host = self._runtime.device(self._host_id)
        return self._host

    def simulator(self, **overrides: Any) -> Simulator:
        """A :class:`Simulator` with this device's settings (``overrides`` replace them)."""
        opts: dict[str, Any] = dict(self._sim_options)
        opts.update({k: v for k, v in overrides.items() if k in ("fusion", "max_fused", "memory_limit")})
        noise = overrides.get("noise")
        return Simulator(self.host, self.dtype, noise=self.noise if noise is None else NoiseModel.from_params(noise),
                         timing=self.timing, device_id=self.id, **opts)

    def _check_width(self, circuit: Circuit) -> None:
        if circuit.num_qubits > self.qubits:
            raise ConfigurationError(
                f"{self.id}: circuit '{circuit.name}' uses {circuit.num_qubits} qubits, this QPU has {self.qubits}")

    # ------------------------------------------------------------------ user API
    def run(self, circuit: Any, *, shots: int = 0, seed: int | None = None, return_state: bool = True,
            method: str = "statevector", **overrides: Any) -> QuantumResult:
        """Run a circuit (or OpenQASM text); see :meth:`Simulator.run`."""
        c = as_circuit(circuit)
        self._check_width(c)
        return self.simulator(**overrides).run(c, shots=shots, seed=seed, return_state=return_state, method=method)

    def expectation(self, circuit: Any, observable: Any, *, seed: int | None = None, trajectories: int = 200,
                    method: str = "statevector", **overrides: Any) -> float:
        """``<O>`` of the circuit's final state; see :meth:`Simulator.expectation`."""
        c = as_circuit(circuit)
        self._check_width(c)
        return self.simulator(**overrides).expectation(c, observable, seed=seed, trajectories=trajectories,
                                                       method=method)

    # ------------------------------------------------------------------ task kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        # Task kernels return their result instead of filling ``out``, so they are not KernelImpls to mypy.
        table: dict[str, Any] = {"run_circuit": (frozenset(), self._k_run), "sample": (frozenset(), self._k_sample),
                                 "expectation": (frozenset(), self._k_expectation)}
        return table

    @staticmethod
    def _circuit_of(inputs: Sequence[Any], params: Mapping[str, Any]) -> Any:
        if inputs:
            return inputs[0]
        if params.get("circuit") is None:
            raise ConfigurationError("quantum kernels need a circuit: pass it as the input or as circuit=")
        return params["circuit"]

    def _k_run(self, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Stream) -> QuantumResult:
        return self.run(self._circuit_of(inputs, params), shots=int(params["shots"]), seed=params["seed"],
                        return_state=bool(params["return_state"]), method=str(params["method"]))

    def _k_sample(self, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Stream) -> dict[str, int]:
        c = as_circuit(self._circuit_of(inputs, params))
        if not c.has_measurements:
            c2 = Circuit(c.num_qubits, c.num_clbits, name=c.name)
            c2.instructions = list(c.instructions)
            c = c2.measure_all()
        return self.run(c, shots=int(params["shots"]), seed=params["seed"], return_state=False,
                        method=str(params["method"])).counts

    def _k_expectation(self, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Stream) -> float:
        return self.expectation(self._circuit_of(inputs, params), params["observable"], seed=params["seed"],
                                trajectories=int(params["trajectories"]), method=str(params["method"]))

    # ------------------------------------------------------------------ memory: none of its own
    def _allocate(self, nbytes: int) -> Any:
        raise ConfigurationError(f"{self.id} holds no arrays; its statevectors live on {self._host_id}")
