"""``NeuromorphicDevice``: a simulated Loihi-like chip (``snn:N``).

Runs are exact simulations of the declared arithmetic (float64 exact-exponential, or Loihi-style
fixed point), executed on the host CPU by the C engine. Reported chip time and energy come from
:mod:`dsrt_neuro.chip`'s stated cost model, labelled as estimates; ``wall_seconds`` is what the
simulation took on this machine. Device memory is host memory sized like the chip's synapse memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt.device import Device, DeviceInfo, KernelImpl
from dsrt.errors import ConfigurationError, DeviceUnavailableError, OutOfMemoryError
from dsrt.memory.hostmem import HostMemory

from . import engine
from .chip import ChipLimits, Placement, estimate, models_from_params, place
from .errors import NetworkError
from .kernels import SNN_RUN, snn_run_impl
from .network import Network

if TYPE_CHECKING:
    from dsrt.runtime import Runtime

__all__ = ["NeuromorphicDevice", "SimResult"]


@dataclass
class SimResult:
    """What a run produced. Times in seconds; ``spike_steps``/``spike_ids`` form the raster.

    ``traces[k, m]`` is ``v`` of neuron ``trace_ids[m]`` after step ``k * trace_every`` (integers in
    fixed mode, also given in user units as ``traces_real``). ``rates_hz`` per neuron.
    """

    dt: float
    steps: int
    spike_steps: np.ndarray
    spike_ids: np.ndarray
    counts: np.ndarray
    traces: np.ndarray
    trace_ids: np.ndarray
    trace_every: int
    wall_seconds: float
    estimator: Callable[[], dict[str, Any]] = field(repr=False)
    arithmetic: str = "float"
    cores_used: int = 0
    weights: np.ndarray | None = None
    traces_real: np.ndarray | None = None
    quantization: dict[str, float] = field(default_factory=dict)

    @cached_property
    def estimate(self) -> dict[str, Any]:
        """Estimated chip seconds and joules from the stated constants (computed on first access)."""
        return self.estimator()

    @property
    def spike_times(self) -> np.ndarray:
        return self.spike_steps.astype(np.float64) * self.dt

    @property
    def rates_hz(self) -> np.ndarray:
        return self.counts / (self.steps * self.dt)

    @property
    def mean_rate_hz(self) -> float:
        return float(self.rates_hz.mean()) if self.counts.size else 0.0

    def save_raster(self, path: str) -> None:
        """Write ``times`` (s), ``steps``, ``ids`` and ``dt`` to an ``.npz`` file."""
        np.savez(path, times=self.spike_times, steps=self.spike_steps, ids=self.spike_ids, dt=self.dt)

    def summary(self, neurons: Any = None) -> dict[str, Any]:
        """JSON-ready summary; ``neurons`` restricts counts and rates to those ids."""
        ids = np.arange(self.counts.size) if neurons is None else np.asarray(neurons)
        return {
            "steps": self.steps, "dt": self.dt, "arithmetic": self.arithmetic, "cores_used": self.cores_used,
            "spike_counts": self.counts[ids].tolist(), "rates_hz": self.rates_hz[ids].tolist(),
            "total_spikes": int(self.spike_ids.size), "wall_seconds": self.wall_seconds,
            "estimate": self.estimate, **({"quantization": self.quantization} if self.quantization else {}),
        }


class NeuromorphicDevice(HostMemory, Device):
    """One simulated chip with declared limits, arithmetic mode and cost constants."""

    def __init__(self, runtime: Runtime, device_id: str, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        self.runtime = runtime
        self.limits = ChipLimits.from_params(params)
        self.energy, self.timing = models_from_params(params)
        index = int(device_id.split(":", 1)[1]) if ":" in device_id else 0
        info = DeviceInfo(
            id=device_id, backend="neuromorphic", index=index,
            name=str(params.get("name", "simulated Loihi-like neuromorphic chip")), vendor="dsrt (simulated)",
            memory_bytes=self.limits.cores * self.limits.synapse_memory_bytes, compute_units=self.limits.cores,
            simulated=True, precision_bits=None if self.limits.arithmetic == "float" else 24.0,
            synchronous=True, host_visible=True,
            properties={**self.limits.to_dict(), "synapse_bytes": self.limits.synapse_bytes,
                        "cost_model": "busiest core per step + barrier; energy per op (estimates)"},
        )
        super().__init__(info)
        self._cpu: Device | None = None

    # ------------------------------------------------------------------ memory (host buffers)
    def _allocate(self, nbytes: int) -> np.ndarray:
        if nbytes > self.info.memory_bytes:
            raise OutOfMemoryError(device=self.id, requested=nbytes, capacity=self.info.memory_bytes,
                                   detail="the chip's memory is its synapse memory")
        return super()._allocate(nbytes)

    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        return {SNN_RUN: (frozenset(), snn_run_impl)}

    # ------------------------------------------------------------------ simulation
    def _host(self) -> Device:
        if self._cpu is None:
            try:
                self._cpu = self.runtime.device("cpu:0")
            except Exception as exc:
                raise DeviceUnavailableError(f"the simulation engine needs the cpu backend: {exc}",
                                             device=self.id) from exc
        return self._cpu

    def map(self, net: Network) -> Placement:
        """Place ``net`` onto cores, or raise :class:`~dsrt_neuro.errors.ChipLimitError`."""
        return place(net, self.limits, self.id)

    def run(self, net: Network, steps: int, dt: float, *, inputs: Any = None, trace: Any = None,
            trace_every: int = 1, learning: engine.Learning | None = None, reward: Any = None,
            v0: Any = None) -> SimResult:
        """Simulate ``steps`` steps of ``dt`` seconds; ``inputs``: ``(steps, n_inputs)`` spikes or payloads."""
        if steps <= 0 or not dt > 0:
            raise NetworkError(f"steps must be positive and dt > 0 seconds, got steps={steps}, dt={dt}")
        if trace_every <= 0:
            raise NetworkError(f"trace_every must be positive, got {trace_every}")
        pl = self.map(net)
        cpu = self._host()
        t0 = time.perf_counter()
        quant: dict[str, float] = {}
        real = None
        if self.limits.arithmetic == "fixed":
            if learning is not None:
                raise ConfigurationError(f"{self.id}: learning runs in float mode only")
            from .fixed import quantize

            prog, quant = quantize(net, dt)
            if v0 is not None:
                prog.v0 = np.rint((np.asarray(v0, np.float64) - prog.v_offset) / prog.lsb).astype(np.int32)
            raw = engine.run_fixed(cpu, net, prog, steps, inputs=inputs, trace=trace, trace_every=trace_every)
            real = raw.traces * prog.lsb + prog.v_offset
        else:
            raw = engine.run_float(cpu, net, steps, dt, inputs=inputs, trace=trace, trace_every=trace_every,
                                   learning=learning, reward=reward,
                                   v0=None if v0 is None else np.asarray(v0, np.float64))
        wall = time.perf_counter() - t0
        energy, timing, nlearn = self.energy, self.timing, raw.synops if learning is not None else 0

        def est() -> dict[str, Any]:
            return estimate(net, pl, steps, raw.spike_steps, raw.spike_ids, raw.input_synops, energy, timing,
                            learning_updates=nlearn)
        counts = np.bincount(raw.spike_ids, minlength=net.n_neurons)
        return SimResult(
            dt=dt, steps=steps, spike_steps=raw.spike_steps, spike_ids=raw.spike_ids, counts=counts,
            traces=raw.traces, trace_ids=np.asarray([] if trace is None else trace, np.int64).reshape(-1),
            trace_every=trace_every, wall_seconds=wall, estimator=est, arithmetic=self.limits.arithmetic,
            cores_used=pl.cores_used, weights=raw.weights, traces_real=real, quantization=quant,
        )

