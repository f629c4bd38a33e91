"""One physical Clements mesh with the static imperfections of a fabricated chip, and its programming.

Every MZI is ``B(a2) . diag(exp(i theta) t_top, t_bot) . B(a1) . diag(exp(i phi), 1)`` with couplers
``B(a) = [[cos a, i sin a], [i sin a, cos a]]`` (ideal ``a = pi/4``), arm amplitude transmissions
``t_top``, ``t_bot`` (insertion loss with a per-arm spread, so loss depends on the path) and phase
shifters whose static offsets are drawn once per device from the seed. Edge modes that skip an MZI in
a column pass a loss-balancing section with the nominal MZI loss (the rectangular layout's balanced
design), so only the spread makes paths differ.

Programming sweeps the columns in propagation order. For each MZI it solves, with the coupler angles
and phase offsets the controller *believes* (ideal before calibration, measured after), for the
internal phase that gives the target splitting and the external phase that gives the target relative
phase; the output phases left over are pushed forward and absorbed by the next MZIs and finally by
the output phase screen. Commanded phases are quantised to the phase DAC; the realised phases are the
quantised ones plus the true offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .clements import Decomposition, MeshLayout, layout

__all__ = ["MeshErrors", "PhysicalMesh", "ProgrammedMesh", "quantise_phase"]

_QUARTER = math.pi / 4


def quantise_phase(phase: np.ndarray, bits: int | None) -> np.ndarray:
    """Round phases (rad) to a ``bits``-bit DAC spanning [0, 2 pi); ``None`` leaves them exact."""
    if bits is None:
        return phase
    step = 2 * math.pi / (1 << bits)
    return np.round(np.mod(phase, 2 * math.pi) / step) * step


def _unit(z: np.ndarray) -> np.ndarray:
    """``z / |z|``, with 1 where ``z`` is zero."""
    mag = np.abs(z)
    return np.where(mag > 0, z / np.where(mag > 0, mag, 1.0), 1.0)


@dataclass
class MeshErrors:
    """Per-component values (true, or as believed by the controller), in propagation order.

    ``theta_offset``/``phi_offset``/``screen_offset``: static phase offsets (rad); ``a1``/``a2``: input
    and output coupler angles (rad); ``t_top``/``t_bot``: arm amplitude transmissions.
    """

    theta_offset: np.ndarray
    phi_offset: np.ndarray
    screen_offset: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    t_top: np.ndarray
    t_bot: np.ndarray

    @classmethod
    def ideal(cls, lay: MeshLayout, amp: float) -> MeshErrors:
        k, n = lay.n_mzis, lay.n
        return cls(np.zeros(k), np.zeros(k), np.zeros(n), np.full(k, _QUARTER), np.full(k, _QUARTER),
                   np.full(k, amp), np.full(k, amp))


@dataclass
class ProgrammedMesh:
    """The realised coefficients of a programmed mesh; ``propagate`` pushes fields through it.

    Per column ``j``: MZIs start at mode ``starts[j]`` every second mode (``counts[j]`` of them), with
    2x2 coefficients ``coef[j]`` of shape ``(4, count)``; ``bypass[j]`` lists modes passing a
    loss-balancing section of amplitude ``bypass_amp``. ``screen`` is the output phase screen.
    """

    n: int
    starts: list[int]
    counts: list[int]
    coef: list[np.ndarray]
    bypass: list[np.ndarray]
    bypass_amp: float
    screen: np.ndarray

    def propagate(self, fields: np.ndarray) -> np.ndarray:
        """Fields ``(n, batch)`` complex in, fields out; column operations batched over vectors."""
        x = np.array(fields, dtype=np.complex128, copy=True)
        for start, count, c, byp in zip(self.starts, self.counts, self.coef, self.bypass, strict=True):
            top_s = slice(start, start + 2 * count, 2)
            bot_s = slice(start + 1, start + 2 * count + 1, 2)
            top = x[top_s]
            bot = x[bot_s]
            new_top = c[0][:, None] * top + c[1][:, None] * bot
            x[bot_s] = c[2][:, None] * top + c[3][:, None] * bot
            x[top_s] = new_top
            if byp.size and self.bypass_amp != 1.0:
                x[byp] *= self.bypass_amp
        x *= self.screen[:, None]
        return x

    def transfer(self) -> np.ndarray:
        """The realised ``n x n`` complex transfer matrix (the identity propagated column by column)."""
        return self.propagate(np.eye(self.n, dtype=np.complex128))


class PhysicalMesh:
    """The MZIs of one mesh on one chip: true imperfections, believed ones, and programming."""

    def __init__(self, n: int, *, phase_error: float, coupler_error: float, loss_db: float, loss_spread: float,
                 phase_bits: int | None, rng: np.random.Generator) -> None:
        self.layout = lay = layout(n)
        self.n = n
        self.phase_bits = phase_bits
        k = lay.n_mzis
        self.nominal_amp = 10.0 ** (-loss_db / 20.0)

        def arm() -> np.ndarray:
            return 10.0 ** (-(loss_db * (1.0 + loss_spread * rng.standard_normal(k))) / 20.0)

        # Draw order is fixed so the same seed always builds the same chip.
        self.true = MeshErrors(
            theta_offset=phase_error * rng.standard_normal(k),
            phi_offset=phase_error * rng.standard_normal(k),
            screen_offset=phase_error * rng.standard_normal(n),
            a1=_QUARTER + coupler_error * rng.standard_normal(k),
            a2=_QUARTER + coupler_error * rng.standard_normal(k),
            t_top=arm(),
            t_bot=arm(),
        )
        self.believed = MeshErrors.ideal(lay, self.nominal_amp)
        self._ideal_a = np.full(k, _QUARTER)
        #: Solve MZI settings with the believed coupler angles (after calibration, when it helps).
        self.correct_couplers = True
        self._starts: list[int] = []
        self._counts: list[int] = []
        self._bypass: list[np.ndarray] = []
        for idx in lay.layers:
            modes = lay.modes[idx]
            start, count = int(modes[0]), int(modes.size)
            if not np.array_equal(modes, start + 2 * np.arange(count)):
                raise AssertionError(f"Clements column is not regular: {modes}")
            self._starts.append(start)
            self._counts.append(count)
            covered = np.zeros(n, dtype=bool)
            covered[modes] = covered[modes + 1] = True
            self._bypass.append(np.flatnonzero(~covered))

    @property
    def depth(self) -> int:
        """Columns every path crosses (MZI or loss-balancing section)."""
        return self.layout.n_layers

    def calibrate(self, phase_sigma: float, coupler_sigma: float, rng: np.random.Generator) -> None:
        """Measure phase offsets and coupler angles with the given measurement noise (rad); believe them."""
        t = self.true
        self.believed = MeshErrors(
            theta_offset=t.theta_offset + phase_sigma * rng.standard_normal(t.theta_offset.size),
            phi_offset=t.phi_offset + phase_sigma * rng.standard_normal(t.phi_offset.size),
            screen_offset=t.screen_offset + phase_sigma * rng.standard_normal(t.screen_offset.size),
            a1=t.a1 + coupler_sigma * rng.standard_normal(t.a1.size),
            a2=t.a2 + coupler_sigma * rng.standard_normal(t.a2.size),
            # Arm losses are not compensated: no phase setting undoes an amplitude imbalance well
            # (solving for the splitting with measured arm losses was tried and made meshes worse).
            t_top=self.believed.t_top, t_bot=self.believed.t_bot,
        )

    def program(self, dec: Decomposition) -> ProgrammedMesh:
        """Set the phases for ``dec`` (ideal phases of the target unitary); return the realised mesh."""
        bel, tru, bits = self.believed, self.true, self.phase_bits
        # Everything but the external phases is independent per MZI: solve all MZIs at once.
        th0, ph0 = dec.theta, dec.phi
        s0, c0 = np.sin(th0 / 2), np.cos(th0 / 2)
        g = 1j * np.exp(0.5j * th0)
        e = np.exp(1j * ph0)
        t00, t01, t10, t11 = g * e * s0, g * c0, g * e * c0, -g * s0
        # Internal phase giving the target splitting ratio with the believed couplers and arm losses.
        a1, a2 = (bel.a1, bel.a2) if self.correct_couplers else (self._ideal_a, self._ideal_a)
        ca1, sa1, ca2, sa2 = np.cos(a1), np.sin(a1), np.cos(a2), np.sin(a2)
        tt, tb = bel.t_top, bel.t_bot
        cb, sb = ca1 * ca2, sa1 * sa2
        bar0 = (tt * cb) ** 2 + (tb * sb) ** 2
        cross0 = (tt * sa1 * ca2) ** 2 + (tb * sa2 * ca1) ** 2
        cos_t = np.clip((s0 * s0 * (bar0 + cross0) - bar0) / (-2 * tt * tb * cb * sb), -1.0, 1.0)
        ideal = (a1 == _QUARTER) & (a2 == _QUARTER) & (tt == tb)
        th = np.where(ideal, th0, np.arccos(cos_t))
        ei = np.exp(1j * th) * tt
        k00 = ei * cb - tb * sb
        k01 = 1j * (ei * sa1 * ca2 + tb * sa2 * ca1)
        k10 = 1j * (ei * ca1 * sa2 + tb * sa1 * ca2)
        k11 = tb * cb - ei * sb
        # Phases with T0 = diag(l0, l1) K diag(r0, 1) (up to the magnitudes the chip cannot match).
        # Decide from the target which entries carry phase: a tiny target entry has no usable phase.
        tol = 1e-9
        cross = np.abs(s0) < tol
        bar = np.abs(c0) < tol
        l0 = np.where(bar, _unit(t00 * np.conj(k00)), _unit(t01 * np.conj(k01)))
        r0 = np.where(cross | bar, 1.0 + 0j, _unit(t00 * np.conj(k00) * np.conj(l0)))
        l1 = np.where(bar, _unit(t11 * np.conj(k11)),
                      np.where(cross, _unit(t10 * np.conj(k10)), _unit(t10 * np.conj(k10) * np.conj(r0))))
        # External phases: sweep the columns, pushing left-over output phases forward.
        phi = np.empty_like(th0)
        pending = np.ones(self.n, dtype=np.complex128)
        for j, idx in enumerate(self.layout.layers):
            start, count = self._starts[j], self._counts[j]
            top_s = slice(start, start + 2 * count, 2)
            bot_s = slice(start + 1, start + 2 * count + 1, 2)
            p_t, p_b = pending[top_s], pending[bot_s]
            phi[idx] = np.angle(p_b * r0[idx] / p_t)
            pending[top_s] = p_b * np.conj(l0[idx])
            pending[bot_s] = p_b * np.conj(l1[idx])
        # What the chip really does with the quantised commands.
        th_r = quantise_phase(th - bel.theta_offset, bits) + tru.theta_offset
        ph_r = quantise_phase(phi - bel.phi_offset, bits) + tru.phi_offset
        c1, s1, c2, s2 = np.cos(tru.a1), np.sin(tru.a1), np.cos(tru.a2), np.sin(tru.a2)
        et = np.exp(1j * th_r) * tru.t_top
        tbr = tru.t_bot
        ep = np.exp(1j * ph_r)
        coef_all = np.stack([
            (et * c1 * c2 - tbr * s1 * s2) * ep,
            1j * (et * s1 * c2 + tbr * s2 * c1),
            1j * (et * c1 * s2 + tbr * s1 * c2) * ep,
            tbr * c1 * c2 - et * s1 * s2,
        ])
        coefs = [coef_all[:, idx] for idx in self.layout.layers]
        screen_cmd = np.angle(np.exp(1j * dec.out_phase) / pending) - bel.screen_offset
        screen = np.exp(1j * (quantise_phase(screen_cmd, bits) + tru.screen_offset))
        return ProgrammedMesh(n=self.n, starts=self._starts, counts=self._counts, coef=coefs,
                              bypass=self._bypass, bypass_amp=self.nominal_amp, screen=screen)
