"""Spiking networks as data: neuron populations, input channels and synapses.

A :class:`Network` is built once and run on a device at a chosen time step. Times are seconds,
voltages and currents are in the user's units (NIR is unit-free). Model equations follow NIR:

- ``lif``:      tau_mem dv/dt = (v_leak - v) + r (I_bias)          spikes when v > v_threshold
- ``cuba_lif``: tau_syn dI/dt = -I;  tau_mem dv/dt = (v_leak - v) + r (I + I_bias)
- ``if``:       dv/dt = r I_bias                                     spikes when v > v_threshold
- ``li``, ``cuba_li``, ``i``: as ``lif``, ``cuba_lif``, ``if`` without threshold (state read-outs).

Input spikes are instantaneous jumps: a spike of value s through weight w adds ``w_in * w * s`` to
``I`` (``cuba_*``; a second channel with its own ``tau_syn2`` serves e.g. inhibition) or ``r * w * s``
to ``v`` (the others). Discretisation is exact-exponential at the chosen step: input arriving at
step t is added first, then the linear system is integrated exactly over one step, then threshold
and reset; while refractory, ``v`` is held (currents still decay). A spike at step t through a synapse
of delay d (>= 1 step) arrives at step t + d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import NetworkError

__all__ = ["MODELS", "NeuronGroup", "Population", "Network"]

MODELS = ("lif", "cuba_lif", "if", "li", "cuba_li", "i")
SPIKING = frozenset({"lif", "cuba_lif", "if"})
CUBA = frozenset({"cuba_lif", "cuba_li"})
LEAKY = frozenset({"lif", "cuba_lif", "li", "cuba_li"})

F_DIRECT, F_SPIKING, F_GRADED = 1, 2, 4


@dataclass(frozen=True)
class NeuronGroup:
    """Parameters shared by a set of neurons (seconds for times; NIR's unit-free elsewhere).

    ``tau_syn2`` is the time constant of the second input channel (``cuba_*`` only; defaults to
    ``tau_syn``). ``refractory`` is in seconds (rounded to whole steps). ``graded``: spikes carry the
    membrane value at threshold crossing instead of 1.
    """

    model: str
    tau_mem: float = math.inf
    tau_syn: float = 0.0
    tau_syn2: float = 0.0
    r: float = 1.0
    v_leak: float = 0.0
    v_threshold: float = math.inf
    v_reset: float = 0.0
    bias: float = 0.0
    w_in: float = 1.0
    refractory: float = 0.0
    graded: bool = False

    def discretise(self, dt: float) -> np.ndarray:
        """The float-mode parameter row at step ``dt`` seconds (layout of ``GP`` in engine.c)."""
        m = self.model
        flags = (F_SPIKING if m in SPIKING else 0) | (0 if m in CUBA else F_DIRECT) | (F_GRADED if self.graded else 0)
        ref = round(self.refractory / dt)
        if m in LEAKY:
            dm = math.exp(-dt / self.tau_mem)
            vinf, vdrive = self.v_leak + self.r * self.bias, 0.0
        else:  # perfect integrators: no leak, the bias current charges linearly
            dm, vinf, vdrive = 1.0, 0.0, self.r * self.bias * dt
        c0 = c1 = 0.0
        a0 = a1 = 0.0
        if m in CUBA:
            a0, c0 = _coupling(dt, self.tau_mem, self.tau_syn, self.r)
            a1, c1 = _coupling(dt, self.tau_mem, self.tau_syn2 or self.tau_syn, self.r)
        gin = self.w_in if m in CUBA else self.r
        return np.array([vinf, dm, vdrive, c0, c1, a0, a1, self.v_threshold if m in SPIKING else math.inf,
                         self.v_reset, gin, ref, flags], np.float64)


def _coupling(dt: float, tau_m: float, tau_s: float, r: float) -> tuple[float, float]:
    """(current decay, contribution of I(t) to v(t+dt)) for the exact solution of the CUBA pair."""
    a = math.exp(-dt / tau_s)
    dm = math.exp(-dt / tau_m)
    if math.isclose(tau_s, tau_m, rel_tol=1e-12):
        return a, r * (dt / tau_m) * dm
    return a, r * tau_s / (tau_s - tau_m) * (a - dm)


@dataclass(frozen=True)
class Population:
    """A named, contiguous index range: ``kind`` is ``"neurons"`` or ``"input"``."""

    name: str
    kind: str
    start: int
    size: int

    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.size)


@dataclass
class Network:
    """Neurons, input channels and synapses (coordinate lists; the engine builds the CSR).

    ``groups`` is the list of parameter groups, ``group_of[i]`` the group of neuron ``i``. Synapses
    between neurons: ``pre``, ``post``, ``channel`` (0 or 1), ``weight``, ``delay`` (whole steps,
    >= 1). Input synapses from external channels: ``in_pre`` (channel index), ``in_post``,
    ``in_channel``, ``in_weight``, ``in_delay`` (>= 0 steps). ``v0``/``i0`` hold initial state.
    """

    groups: list[NeuronGroup] = field(default_factory=list)
    group_of: list[np.ndarray] = field(default_factory=list)
    populations: dict[str, Population] = field(default_factory=dict)
    n_neurons: int = 0
    n_inputs: int = 0
    _syn: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    _insyn: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    _v0: dict[int, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    #: Derived data (CSR, placement) keyed by name; cleared whenever the network changes.
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ building
    def add_population(self, name: str, size: int, model: str = "lif", *, v0: Any = None, **params: Any) -> Population:
        """Add ``size`` neurons of ``model`` (see :data:`MODELS`); per-neuron parameter arrays allowed."""
        if model not in MODELS:
            raise NetworkError(f"population '{name}': unknown model '{model}' (models: {', '.join(MODELS)})")
        if name in self.populations:
            raise NetworkError(f"population '{name}' already exists")
        if size <= 0:
            raise NetworkError(f"population '{name}': size must be positive, got {size}")
        arrays = {k: np.broadcast_to(np.asarray(v, np.float64), (size,)) for k, v in params.items()
                  if k != "graded"}
        unknown = set(arrays) - set(NeuronGroup.__dataclass_fields__)
        if unknown:
            raise NetworkError(f"population '{name}': unknown parameter(s) {', '.join(sorted(unknown))}")
        _check_params(name, model, arrays)
        keys = sorted(arrays)
        table = np.stack([arrays[k] for k in keys], axis=1) if keys else np.zeros((size, 0))
        uniq, inverse = np.unique(table, axis=0, return_inverse=True)
        first = len(self.groups)
        for row in uniq:
            self.groups.append(NeuronGroup(model=model, graded=bool(params.get("graded", False)),
                                           **{k: float(x) for k, x in zip(keys, row, strict=True)}))
        if len(self.groups) > 65535:
            raise NetworkError(f"population '{name}': more than 65535 distinct parameter sets")
        self.cache.clear()
        self.group_of.append((first + inverse.reshape(-1)).astype(np.uint16))
        pop = Population(name, "neurons", self.n_neurons, size)
        if v0 is not None:
            self._v0[self.n_neurons] = np.broadcast_to(np.asarray(v0, np.float64), (size,)).copy()
        self.populations[name] = pop
        self.n_neurons += size
        return pop

    def add_input(self, name: str, size: int) -> Population:
        """Add ``size`` external input channels (driven by the ``inputs`` array of a run)."""
        if name in self.populations:
            raise NetworkError(f"population '{name}' already exists")
        pop = Population(name, "input", self.n_inputs, size)
        self.cache.clear()
        self.populations[name] = pop
        self.n_inputs += size
        return pop

    def connect(self, src: Population | str, dst: Population | str, weight: Any, *, delay: int = 1,
                channel: int = 0) -> int:
        """Connect with a dense ``(dst.size, src.size)`` weight matrix (``y = W x``); zeros are skipped.

        Returns the number of synapses made.
        """
        s, d = self._pop(src), self._pop(dst)
        w = np.asarray(weight, np.float64)
        if w.ndim == 0:
            w = np.full((d.size, s.size), float(w))
        if w.shape != (d.size, s.size):
            raise NetworkError(f"connect {s.name} -> {d.name}: weight shape {w.shape}, expected {(d.size, s.size)}")
        post, pre = np.nonzero(w)
        return self.connect_sparse(s, d, pre, post, w[post, pre], delay=delay, channel=channel)

    def connect_sparse(self, src: Population | str, dst: Population | str, pre: Any, post: Any, weight: Any, *,
                       delay: Any = 1, channel: Any = 0) -> int:
        """Connect local indices ``pre[k]`` of ``src`` to ``post[k]`` of ``dst`` with ``weight[k]``.

        ``delay`` is in whole steps (>= 1 between neurons, >= 0 from inputs; at most 255).
        """
        s, d = self._pop(src), self._pop(dst)
        if d.kind != "neurons":
            raise NetworkError(f"connect {s.name} -> {d.name}: the target must be a neuron population")
        pre = np.asarray(pre, np.int64).reshape(-1)
        post = np.asarray(post, np.int64).reshape(-1)
        n = pre.size
        w = np.broadcast_to(np.asarray(weight, np.float64), (n,))
        dl = np.broadcast_to(np.asarray(delay, np.int64), (n,))
        ch = np.broadcast_to(np.asarray(channel, np.int64), (n,))
        where = f"connect {s.name} -> {d.name}"
        if n and (pre.min() < 0 or pre.max() >= s.size or post.min() < 0 or post.max() >= d.size):
            raise NetworkError(f"{where}: index out of range (pre < {s.size}, post < {d.size})")
        lo = 0 if s.kind == "input" else 1
        if n and (dl.min() < lo or dl.max() > 255):
            raise NetworkError(f"{where}: delays must be {lo}..255 steps, got {dl.min()}..{dl.max()}")
        if n and not np.isin(ch, (0, 1)).all():
            raise NetworkError(f"{where}: channel must be 0 or 1")
        rec = (pre + s.start, post + d.start, ch.copy(), w.copy(), dl.copy())
        self.cache.clear()
        (self._insyn if s.kind == "input" else self._syn).append(rec)
        return n

    def set_state(self, pop: Population | str, v: Any) -> None:
        """Initial membrane values of a population."""
        p = self._pop(pop)
        self.cache.clear()
        self._v0[p.start] = np.broadcast_to(np.asarray(v, np.float64), (p.size,)).copy()

    def _pop(self, p: Population | str) -> Population:
        if isinstance(p, Population):
            return p
        try:
            return self.populations[p]
        except KeyError:
            raise NetworkError(f"no population '{p}' (have: {', '.join(self.populations) or 'none'})") from None

    # ------------------------------------------------------------------ flattened views
    def group_index(self) -> np.ndarray:
        """uint16 group id of every neuron."""
        return np.concatenate(self.group_of) if self.group_of else np.zeros(0, np.uint16)

    def synapses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pre, post, channel, weight, delay) of every neuron-to-neuron synapse."""
        return _cat(self._syn)

    def input_synapses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input channel, post, channel, weight, delay) of every input synapse."""
        return _cat(self._insyn)

    def initial_v(self) -> np.ndarray:
        """Initial membrane values: those set, else v_leak for leaky models and 0 for integrators."""
        v = np.zeros(self.n_neurons)
        gi = self.group_index()
        for g, grp in enumerate(self.groups):
            v[gi == g] = grp.v_leak if grp.model in LEAKY else 0.0
        for start, vals in self._v0.items():
            v[start:start + vals.size] = vals
        return v

    @property
    def n_synapses(self) -> int:
        return int(sum(r[0].size for r in self._syn))

    def fan_in(self) -> np.ndarray:
        """Synapses (neuron and input) arriving at each neuron."""
        _pre, post, *_ = self.synapses()
        _ip, ipost, *_ = self.input_synapses()
        return np.bincount(np.concatenate([post, ipost]), minlength=self.n_neurons)

    def population_of(self, neuron: int) -> str:
        for p in self.populations.values():
            if p.kind == "neurons" and p.start <= neuron < p.start + p.size:
                return f"{p.name}[{neuron - p.start}]"
        return str(neuron)


def _cat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0), z
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))  # type: ignore[return-value]


def _check_params(name: str, model: str, arrays: dict[str, np.ndarray]) -> None:
    def need(key: str, positive: bool = True) -> None:
        if key not in arrays:
            raise NetworkError(f"population '{name}': model '{model}' needs parameter '{key}'")
        if positive and not (arrays[key] > 0).all():
            raise NetworkError(f"population '{name}': '{key}' must be > 0 seconds")

    if model in LEAKY:
        need("tau_mem")
    if model in CUBA:
        need("tau_syn")
    if model in SPIKING:
        need("v_threshold", positive=False)
    for key in ("tau_syn2", "refractory"):
        if key in arrays and (arrays[key] < 0).any():
            raise NetworkError(f"population '{name}': '{key}' must be >= 0 seconds")
