"""Chip limits, placement of neurons onto cores, and the stated time and energy cost models.

Default limits are Loihi-2-like (128 neuron cores, up to 8192 neurons per core, 128 KiB of synapse
memory per core, a fan-in of 4096 per neuron); they are round figures, not a data sheet, and every
one is configurable in a topology's ``simulated`` entry. Synapses live on the core of their
*postsynaptic* neuron, as on Loihi; each costs ``synapse_bytes`` there (4 in fixed point: 8-bit
weight, delay and index; 8 in float mode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dsrt.errors import format_bytes

from .errors import ChipLimitError, NetworkError
from .network import Network

__all__ = ["ChipLimits", "Placement", "place", "EnergyModel", "TimingModel", "estimate"]


@dataclass(frozen=True)
class ChipLimits:
    """Capacity of one simulated chip. ``synapse_memory_bytes`` is per core, in bytes."""

    cores: int = 128
    neurons_per_core: int = 8192
    fan_in: int = 4096
    synapse_memory_bytes: int = 128 * 1024
    arithmetic: str = "float"

    @property
    def synapse_bytes(self) -> int:
        return 4 if self.arithmetic == "fixed" else 8

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ChipLimits:
        known = {k: params[k] for k in ("cores", "neurons_per_core", "fan_in", "synapse_memory_bytes", "arithmetic")
                 if k in params}
        values: dict[str, Any] = {k: (v if k == "arithmetic" else int(v)) for k, v in known.items()}
        lim = cls(**values)
        if lim.arithmetic not in ("float", "fixed"):
            raise NetworkError(f"arithmetic must be 'float' or 'fixed', got '{lim.arithmetic}'")
        for k in ("cores", "neurons_per_core", "fan_in", "synapse_memory_bytes"):
            if getattr(lim, k) <= 0:
                raise NetworkError(f"chip limit '{k}' must be positive, got {getattr(lim, k)}")
        return lim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Placement:
    """``core_of[i]``: the core of neuron ``i``; per-core neuron counts and synapse bytes."""

    core_of: np.ndarray
    neurons: np.ndarray
    synapse_bytes: np.ndarray

    @property
    def cores_used(self) -> int:
        return int(self.neurons.size)


def place(net: Network, limits: ChipLimits, device: str) -> Placement:
    """Fill cores in neuron order; refuse with the broken limit and by how much (cached per limits)."""
    key = f"placement-{limits}"
    if key not in net.cache:
        net.cache[key] = _place(net, limits, device)
    return net.cache[key]  # type: ignore[no-any-return]


def _place(net: Network, limits: ChipLimits, device: str) -> Placement:
    fan = net.fan_in()
    n = net.n_neurons
    if n and fan.max() > limits.fan_in:
        i = int(np.argmax(fan))
        raise ChipLimitError(
            f"{device}: neuron {net.population_of(i)} has fan-in {fan[i]}, the chip allows {limits.fan_in}"
            f" (over by {fan[i] - limits.fan_in} synapses)",
            device=device, limit="fan_in", required=int(fan[i]), available=limits.fan_in)
    need = fan.astype(np.int64) * limits.synapse_bytes
    if n and need.max() > limits.synapse_memory_bytes:
        i = int(np.argmax(need))
        raise ChipLimitError(
            f"{device}: neuron {net.population_of(i)} needs {format_bytes(need[i])} of synapse memory, a core has"
            f" {format_bytes(limits.synapse_memory_bytes)} (over by {format_bytes(need[i] - limits.synapse_memory_bytes)})",
            device=device, limit="synapse_memory_bytes", required=int(need[i]), available=limits.synapse_memory_bytes)
    core_of = np.empty(n, np.int32)
    counts: list[int] = []
    mem: list[int] = []
    core = 0
    cum = np.cumsum(need)
    i = 0
    # Greedy packing, vectorised per core: take the longest prefix that fits both limits.
    while i < n:
        base = cum[i - 1] if i else 0
        by_mem = int(np.searchsorted(cum, base + limits.synapse_memory_bytes, side="right")) - i
        take = max(1, min(limits.neurons_per_core, by_mem, n - i))
        core_of[i:i + take] = core
        counts.append(take)
        mem.append(int(cum[i + take - 1] - base))
        i += take
        core += 1
    if core > limits.cores:
        raise ChipLimitError(
            f"{device}: the network needs {core} cores ({n} neurons, {int(fan.sum())} synapses), the chip has"
            f" {limits.cores} (over by {core - limits.cores} cores; limits: {limits.neurons_per_core} neurons and"
            f" {format_bytes(limits.synapse_memory_bytes)} of synapse memory per core)",
            device=device, limit="cores", required=core, available=limits.cores)
    return Placement(core_of, np.array(counts, np.int64), np.array(mem, np.int64))


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation, joules. An *estimate*: round figures after the Loihi (1) measurements of
    Davies et al., IEEE Micro 2018 (synaptic op ~24 pJ, neuron update ~52 pJ, spike ~2 pJ, plasticity
    update ~120 pJ) plus a static power; override any of them in the device parameters."""

    synop_j: float = 23.6e-12
    neuron_update_j: float = 52e-12
    spike_j: float = 1.7e-12
    learning_update_j: float = 120e-12
    static_w: float = 0.03


@dataclass(frozen=True)
class TimingModel:
    """Seconds per operation on one core, and the per-step barrier (an estimate, after the same paper).

    A step takes the busiest core's time (neuron updates + synaptic ops) plus the barrier.
    """

    synop_s: float = 3.5e-9
    neuron_update_s: float = 8.4e-9
    barrier_s: float = 0.5e-6


def models_from_params(params: dict[str, Any]) -> tuple[EnergyModel, TimingModel]:
    e = {k: float(params[k]) for k in EnergyModel.__dataclass_fields__ if k in params}
    t = {k: float(params[k]) for k in TimingModel.__dataclass_fields__ if k in params}
    return EnergyModel(**e), TimingModel(**t)


def _core_fanout(net: Network, pl: Placement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per presynaptic neuron (CSR ``ptr``), the cores its synapses land on and how many on each."""
    key = f"fanout-{id(pl.core_of)}"
    hit = net.cache.get(key)
    if hit is None:
        pre, post, *_ = net.synapses()
        ncores = max(pl.cores_used, 1)
        uniq, cnt = np.unique(pre * ncores + pl.core_of[post], return_counts=True)
        ptr = np.zeros(net.n_neurons + 1, np.int64)
        np.cumsum(np.bincount(uniq // ncores, minlength=net.n_neurons), out=ptr[1:])
        hit = net.cache[key] = (ptr, uniq % ncores, cnt)
    return hit  # type: ignore[no-any-return]


def estimate(net: Network, pl: Placement, steps: int, spike_steps: np.ndarray, spike_ids: np.ndarray,
             in_synops: int, energy: EnergyModel, timing: TimingModel, learning_updates: int = 0) -> dict[str, Any]:
    """Estimated chip time (seconds) and energy (joules) of a run, with the constants used."""
    ncores = max(pl.cores_used, 1)
    ptr, core, cnt = _core_fanout(net, pl)
    starts = ptr[spike_ids]
    per = ptr[spike_ids + 1] - starts
    rep = np.repeat(np.arange(spike_ids.size), per)
    pos = np.arange(rep.size) - np.repeat(np.cumsum(per) - per, per) + np.repeat(starts, per)
    key = spike_steps[rep].astype(np.int64) * ncores + core[pos]
    load = np.bincount(key, weights=cnt[pos], minlength=steps * ncores).reshape(steps, ncores)
    busiest_syn = load.max(axis=1) if load.size else np.zeros(steps)
    neuron_time = float(pl.neurons.max(initial=0)) * timing.neuron_update_s
    seconds = float(steps * (neuron_time + timing.barrier_s) + busiest_syn.sum() * timing.synop_s)
    synops = int(cnt[pos].sum()) + in_synops
    updates = net.n_neurons * steps
    joules_dyn = (synops * energy.synop_j + updates * energy.neuron_update_j + spike_ids.size * energy.spike_j
                  + learning_updates * energy.learning_update_j)
    return {
        "estimate": True,
        "chip_seconds": seconds,
        "energy_joules": joules_dyn + energy.static_w * seconds,
        "dynamic_joules": joules_dyn,
        "synaptic_ops": synops,
        "neuron_updates": updates,
        "spikes": int(spike_ids.size),
        "energy_constants": {k: getattr(energy, k) for k in EnergyModel.__dataclass_fields__},
        "timing_constants": {k: getattr(timing, k) for k in TimingModel.__dataclass_fields__},
        "note": "estimate from stated per-operation constants, not a measurement",
    }
