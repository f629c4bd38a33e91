"""Loihi-style fixed-point arithmetic: quantisation of a float network and the per-step rules.

Reference description: the bit-accurate Loihi LIF model published with Intel's Lava framework
(``PyLifModelBitAcc``) and Davies et al., "Loihi: a neuromorphic manycore processor with on-chip
learning", IEEE Micro 38(1), 2018. Per neuron and step, with integer state::

    u[t] = wrap24( rtz(u[t-1] * (4096 - du) / 4096) + (sum of input weights) * 2**6 )
    v[t] = sat24 ( rtz(v[t-1] * (4096 - dv) / 4096) + u[t] + bias )
    spike when v[t] > vth_mant * 2**6; then v = v_reset and refractory steps start

``du``/``dv`` are 12-bit decays (0..4096; 4096 forgets everything each step), ``rtz`` rounds toward
zero (the product's magnitude is shifted right by 12), ``wrap24`` wraps into 24-bit two's complement
(-2**23 .. 2**23 - 1) and ``sat24`` saturates at +-(2**23 - 1). Weights are 8-bit signed mantissas
scaled by one power-of-two exponent per network (``w = mant * 2**wexp``). Differences from the Lava
model, stated: wrap is exact two's complement (Lava leaves +2**23 unwrapped), ``v_reset`` may be
nonzero and synapses may carry delays (both Loihi 2 features).

Quantisation of a float network (:func:`quantize`): voltages are measured from ``v_leak`` in units of
``lsb`` (default: the largest ``v_threshold - v_leak`` over 2**20, 8x headroom below saturation);
``dv = round(4096 (1 - exp(-dt/tau_mem)))``, ``du`` likewise from ``tau_syn`` (4096 for models without
a synaptic current). ``u`` is the per-step voltage increment, so a spike of weight ``w`` contributes
``r w / lsb`` (direct models) or ``r w_in w (dv/4096) / lsb`` per step of current (CUBA), divided by 2**6.
"""

from __future__ import annotations

import math

import numpy as np

from .engine import FixedProgram
from .errors import NetworkError
from .network import CUBA, F_SPIKING, LEAKY, SPIKING, Network

__all__ = ["quantize", "decay12", "wrap24", "quantize_weights"]


def decay12(x: int, d: int) -> int:
    """``x * (4096 - d) / 4096`` rounded toward zero (the hardware's decay)."""
    p = x * (4096 - d)
    return p >> 12 if p >= 0 else -((-p) >> 12)


def wrap24(x: int) -> int:
    """Wrap an integer into 24-bit two's complement."""
    return ((x + (1 << 23)) & ((1 << 24) - 1)) - (1 << 23)


def quantize_weights(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, int]:
    """Round real-valued integer activations to ``bits``-bit signed mantissas times ``2**wexp``.

    Returns ``(weights as int32, wexp)``; ``wexp`` is the smallest exponent that fits the largest weight.
    """
    top = (1 << (bits - 1)) - 1
    m = float(np.max(np.abs(w), initial=0.0))
    wexp = 0 if m <= top else math.ceil(math.log2(m / top))
    while m / 2**wexp > top + 0.5:
        wexp += 1
    mant = np.clip(np.rint(w / 2**wexp), -top - 1, top)
    return (mant * 2**wexp).astype(np.int32), wexp


def quantize(net: Network, dt: float, *, lsb: float | None = None) -> tuple[FixedProgram, dict[str, float]]:
    """Convert ``net`` to Loihi-style integers at step ``dt`` seconds; returns ``(program, report)``.

    ``report`` holds ``lsb``, ``weight_exponent`` and the largest relative weight rounding error.
    """
    groups = net.groups
    for g in groups:
        if g.model in CUBA and g.tau_syn2 and not math.isclose(g.tau_syn2, g.tau_syn):
            raise NetworkError("fixed-point mode has one current per neuron: tau_syn2 must equal tau_syn")
    span = [abs(g.v_threshold - g.v_leak) for g in groups if g.model in SPIKING]
    if lsb is None:
        lsb = (max(span) if span else 1.0) / 2**20
    rows = []
    dvs = []
    for g in groups:
        dv = round(4096 * (1 - math.exp(-dt / g.tau_mem))) if g.model in LEAKY else 0
        du = round(4096 * (1 - math.exp(-dt / g.tau_syn))) if g.model in CUBA else 4096
        off = g.v_leak if g.model in LEAKY else 0.0
        vth = (round((g.v_threshold - off) / lsb / 64) << 6) if g.model in SPIKING else (1 << 23)
        bias = g.r * g.bias * (dv / 4096 if g.model in LEAKY else dt) / lsb
        rows.append([du, dv, vth, round((g.v_reset - off) / lsb), round(bias), round(g.refractory / dt),
                     F_SPIKING if g.model in SPIKING else 0])
        dvs.append(dv)
    ip = np.array(rows or [[4096, 0, 1 << 23, 0, 0, 0, 0]], np.int64)
    gi = net.group_index()

    def activations(post: np.ndarray, w: np.ndarray) -> np.ndarray:
        scale = np.array([g.r * (g.w_in * dvs[k] / 4096 if g.model in CUBA else 1.0) for k, g in enumerate(groups)])
        return w * scale[gi[post]] / lsb / 64 if post.size else np.zeros(0)

    _pre, post, _ch, w, _dl = net.synapses()
    _ipre, ipost, _ich, iw, _idl = net.input_synapses()
    real = np.concatenate([activations(post, w), activations(ipost, iw)])
    q, wexp = quantize_weights(real)
    err = float(np.max(np.abs(q - real) / np.maximum(np.abs(real), 1e-300), initial=0.0))
    offs = np.array([g.v_leak if g.model in LEAKY else 0.0 for g in groups] or [0.0])
    v0 = np.rint((net.initial_v() - offs[gi]) / lsb)
    if np.any(np.abs(ip[:, 2]) >= 1 << 23) and span:
        raise NetworkError("threshold does not fit 24 bits at this lsb")
    prog = FixedProgram(ip=ip.astype(np.int32), weight=q[: w.size], in_weight=q[w.size:],
                        v0=v0.astype(np.int32), lsb=lsb, v_offset=float(offs[0]))
    return prog, {"lsb": lsb, "weight_exponent": float(wexp), "max_weight_rounding": err}
