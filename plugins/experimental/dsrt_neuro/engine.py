"""Runs a :class:`~dsrt_neuro.network.Network` through the C engine (``engine.c``).

The C source is compiled once by the CPU device's compiler (cffi; cached on disk by the source hash)
and each run is one call that advances every step, so Python costs nothing per step. This module
owns the conversion from coordinate lists to compressed sparse rows and the learning rules' state.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from dsrt.device import Device, UserKernel

from .errors import NetworkError
from .network import Network

__all__ = ["Compiled", "Learning", "RawResult", "build_csr", "run_float", "run_fixed", "FixedProgram"]

_lock = threading.Lock()
_kernels: dict[tuple[int, str], UserKernel] = {}


def _kernel(cpu: Device, name: str) -> UserKernel:
    key = (id(cpu), name)
    with _lock:
        k = _kernels.get(key)
        if k is None:
            src = resources.files(__package__).joinpath("engine.c").read_text()
            k = cpu.compile(src, lang="c", name=name, options=["-ffp-contract=off"])
            _kernels[key] = k
    return k


@dataclass(frozen=True)
class Learning:
    """Plasticity of the neuron-to-neuron synapses.

    ``rule``: ``"stdp"`` (pair-based, all-to-all traces) or ``"three_factor"`` (the same pairings
    accumulate into an eligibility trace per synapse, decaying with ``tau_elig``; the weight moves by
    ``lr * reward[t] * eligibility`` on steps with a nonzero reward). Trace time constants in seconds;
    weights are clipped to ``[w_min, w_max]`` after every change.
    """

    rule: str = "stdp"
    a_plus: float = 0.01
    a_minus: float = 0.012
    tau_plus: float = 0.02
    tau_minus: float = 0.02
    w_min: float = 0.0
    w_max: float = 1.0
    tau_elig: float = 0.2
    lr: float = 1.0

    def vector(self, dt: float) -> np.ndarray:
        return np.array([math.exp(-dt / self.tau_plus), math.exp(-dt / self.tau_minus), self.a_plus, self.a_minus,
                         self.w_min, self.w_max, math.exp(-dt / self.tau_elig), self.lr], np.float64)


@dataclass
class Compiled:
    """CSR form of a network's synapses. ``order`` maps CSR position -> original synapse index."""

    rowptr: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    delay: np.ndarray
    order: np.ndarray
    in_ptr: np.ndarray
    in_tgt: np.ndarray
    in_w: np.ndarray
    in_delay: np.ndarray
    dslots: int


def build_csr(net: Network, *, merge_channels: bool = False) -> Compiled:
    """Sort synapses by presynaptic neuron (input synapses by channel) into CSR arrays (cached on ``net``)."""
    key = f"csr-{merge_channels}"
    if key not in net.cache:
        net.cache[key] = _build_csr(net, merge_channels)
    return net.cache[key]  # type: ignore[no-any-return]


def _build_csr(net: Network, merge_channels: bool) -> Compiled:
    pre, post, ch, w, dl = net.synapses()
    tgt = post if merge_channels else 2 * post + ch
    order = np.argsort(pre, kind="stable")
    rowptr = np.zeros(net.n_neurons + 1, np.int64)
    np.cumsum(np.bincount(pre, minlength=net.n_neurons), out=rowptr[1:])
    ipre, ipost, ich, iw, idl = net.input_synapses()
    itgt = ipost if merge_channels else 2 * ipost + ich
    iorder = np.argsort(ipre, kind="stable")
    in_ptr = np.zeros(net.n_inputs + 1, np.int64)
    np.cumsum(np.bincount(ipre, minlength=net.n_inputs), out=in_ptr[1:])
    if rowptr[-1] >= 2**31 or in_ptr[-1] >= 2**31:
        raise NetworkError(f"{rowptr[-1] + in_ptr[-1]} synapses exceed the engine's 2**31 limit")
    maxd = int(max(dl.max(initial=1), idl.max(initial=0)))
    return Compiled(
        rowptr=rowptr.astype(np.int32), target=tgt[order].astype(np.int32), weight=w[order],
        delay=dl[order].astype(np.uint8), order=order, in_ptr=in_ptr.astype(np.int32),
        in_tgt=itgt[iorder].astype(np.int32), in_w=iw[iorder].copy(), in_delay=idl[iorder].astype(np.uint8),
        dslots=maxd + 1,
    )


@dataclass
class RawResult:
    """Spike raster (step index, neuron id), traces and operation counts of one run."""

    spike_steps: np.ndarray
    spike_ids: np.ndarray
    traces: np.ndarray
    synops: int
    input_synops: int
    weights: np.ndarray | None = None


def _inputs(net: Network, steps: int, inputs: Any, dtype: Any) -> np.ndarray:
    if net.n_inputs == 0:
        if inputs is not None and np.size(inputs):
            raise NetworkError("inputs given, but the network declares no input channels")
        return np.zeros(1, dtype)
    if inputs is None:
        return np.zeros((steps, net.n_inputs), dtype)
    x = np.asarray(inputs)
    if x.shape != (steps, net.n_inputs):
        raise NetworkError(f"inputs must have shape (steps, channels) = {(steps, net.n_inputs)}, got {x.shape}")
    if np.dtype(dtype).kind == "i" and not np.array_equal(x, np.round(x)):
        raise NetworkError("fixed-point mode takes integer input spikes (graded payloads are integers)")
    return np.ascontiguousarray(x, dtype)


def _trace_args(trace: Any, steps: int, every: int, n: int) -> tuple[np.ndarray, int]:
    idx = np.zeros(0, np.int32) if trace is None else np.asarray(trace, np.int32).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise NetworkError(f"trace indices must be in 0..{n - 1}")
    rows = (steps + every - 1) // every if idx.size else 0
    return idx, rows


def run_float(cpu: Device, net: Network, steps: int, dt: float, *, inputs: Any = None, trace: Any = None,
              trace_every: int = 1, learning: Learning | None = None, reward: Any = None,
              v0: np.ndarray | None = None) -> RawResult:
    """Simulate ``steps`` steps of ``dt`` seconds in float64 (exact-exponential discretisation)."""
    n = net.n_neurons
    c = build_csr(net)
    gp = np.ascontiguousarray(np.stack([g.discretise(dt) for g in net.groups]) if net.groups else np.zeros((1, 12)))
    grp = np.ascontiguousarray(net.group_index())
    v = (net.initial_v() if v0 is None else np.asarray(v0, np.float64)).copy()
    cur = np.zeros(2 * n)
    ref = np.zeros(n, np.int32)
    buf = np.zeros(c.dslots * 2 * n)
    xin = _inputs(net, steps, inputs, np.float64)
    idx, rows = _trace_args(trace, steps, trace_every, n)
    tr = np.zeros(max(rows * idx.size, 1))
    learn, lp = 0, np.zeros(8)
    syn_pre = csc_ptr = csc_syn = np.zeros(1, np.int32)
    x_pre = x_post = elig = np.zeros(1)
    rew = np.zeros(1)
    if learning is not None:
        if learning.rule not in ("stdp", "three_factor"):
            raise NetworkError(f"unknown learning rule '{learning.rule}' (stdp, three_factor)")
        learn = 1 if learning.rule == "stdp" else 2
        lp = learning.vector(dt)
        syn_pre = np.repeat(np.arange(n, dtype=np.int32), np.diff(c.rowptr))
        post = c.target >> 1
        corder = np.argsort(post, kind="stable")
        csc_syn = corder.astype(np.int32)
        csc_ptr = np.zeros(n + 1, np.int32)
        np.cumsum(np.bincount(post, minlength=n), out=csc_ptr[1:])
        x_pre, x_post, elig = np.zeros(n), np.zeros(n), np.zeros(c.weight.size)
        if learn == 2:
            rew = np.zeros(steps) if reward is None else np.ascontiguousarray(reward, np.float64).reshape(-1)
            if rew.size != steps:
                raise NetworkError(f"reward must hold one value per step ({steps}), got {rew.size}")
    weight = c.weight
    cap = int(min(n * steps, max(1 << 16, n * steps // 20)))
    while True:
        st, si = np.empty(max(cap, 1), np.int32), np.empty(max(cap, 1), np.int32)
        counters = np.zeros(3, np.int64)
        scratch, payload = np.empty(max(n, 1), np.int32), np.empty(max(n, 1))
        w_run = weight.copy() if learn else weight
        args = (n, steps, 0, v, cur, ref, grp, gp, c.rowptr, c.target, w_run, c.delay, c.dslots, buf,
                net.n_inputs, xin, c.in_ptr, c.in_tgt, c.in_w, c.in_delay, st, si, cap, idx.size, idx,
                trace_every if idx.size else 0, tr, learn, lp, syn_pre, csc_ptr, csc_syn, x_pre, x_post, elig, rew,
                scratch, payload, counters)
        state = (v.copy(), cur.copy(), ref.copy(), buf.copy(), x_pre.copy(), x_post.copy(), elig.copy())
        total = int(_kernel(cpu, "snn_float").launch(*args))
        if total <= cap:
            break
        # The raster outgrew its buffer: restore the initial state and rerun with the exact size.
        cap = total
        v[...], cur[...], ref[...], buf[...], x_pre[...], x_post[...], elig[...] = state
    w_out = None
    if learn:
        w_out = np.empty_like(w_run)
        w_out[c.order] = w_run
    return RawResult(st[:total].copy(), si[:total].copy(), tr[: rows * idx.size].reshape(rows, idx.size),
                     int(counters[1]), int(counters[2]), w_out)


@dataclass
class FixedProgram:
    """A network in Loihi-style integers (see :mod:`dsrt_neuro.fixed` for the rules).

    ``ip``: int32 ``(groups, 7)`` rows ``du dv vth_shifted v_reset bias refractory_steps flags``;
    ``weight``/``in_weight``: integer activations (before the hardware's left shift by 6), in the
    order of ``network.synapses()`` / ``network.input_synapses()``; ``lsb``: volts (user units) per
    integer step of ``v``, ``v_offset``: the user value of ``v = 0`` (the leak potential).
    """

    ip: np.ndarray
    weight: np.ndarray
    in_weight: np.ndarray
    v0: np.ndarray
    lsb: float = 1.0
    v_offset: float = 0.0


def run_fixed(cpu: Device, net: Network, prog: FixedProgram, steps: int, *, inputs: Any = None, trace: Any = None,
              trace_every: int = 1) -> RawResult:
    """Simulate ``steps`` steps in Loihi-style fixed point; traces hold integer ``v``."""
    n = net.n_neurons
    c = build_csr(net, merge_channels=True)
    pre, *_ = net.synapses()
    order = np.argsort(pre, kind="stable")
    w = np.ascontiguousarray(np.asarray(prog.weight, np.int32)[order])
    ipre, *_ = net.input_synapses()
    in_w = np.ascontiguousarray(np.asarray(prog.in_weight, np.int32)[np.argsort(ipre, kind="stable")])
    ip = np.ascontiguousarray(prog.ip, np.int32)
    v = np.asarray(prog.v0, np.int32).copy()
    u = np.zeros(n, np.int32)
    ref = np.zeros(n, np.int32)
    buf = np.zeros(c.dslots * n, np.int32)
    xin = _inputs(net, steps, inputs, np.int32)
    idx, rows = _trace_args(trace, steps, trace_every, n)
    tr = np.zeros(max(rows * idx.size, 1), np.int32)
    cap = int(min(n * steps, max(1 << 16, n * steps // 20)))
    st, si = np.empty(max(cap, 1), np.int32), np.empty(max(cap, 1), np.int32)
    counters = np.zeros(3, np.int64)
    scratch = np.empty(max(n, 1), np.int32)
    grp = np.ascontiguousarray(net.group_index())
    state = (v.copy(), u.copy(), ref.copy(), buf.copy())
    fn = _kernel(cpu, "snn_fixed")
    while True:
        total = int(fn.launch(n, steps, 0, v, u, ref, grp, ip, c.rowptr, c.target, w, c.delay, c.dslots, buf,
                              net.n_inputs, xin, c.in_ptr, c.in_tgt, in_w, c.in_delay, st, si, cap, idx.size, idx,
                              trace_every if idx.size else 0, tr, scratch, counters))
        if total <= cap:
            break
        cap = total
        st, si = np.empty(cap, np.int32), np.empty(cap, np.int32)
        v[...], u[...], ref[...], buf[...] = state
    return RawResult(st[:total].copy(), si[:total].copy(), tr[: rows * idx.size].reshape(rows, idx.size),
                     int(counters[1]), int(counters[2]))
