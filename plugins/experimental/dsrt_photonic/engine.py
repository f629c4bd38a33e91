"""The photonic matrix engine: SVD programming, signal chain, tiling, calibration, effective bits.

A real matrix ``A`` (N x N tile) is split by SVD into ``U . Sigma . V^T``. ``V^T`` is programmed onto the
first Clements mesh, ``Sigma / sigma_max`` onto MZI attenuators (amplitude ``sin(theta/2)``, the same
phase DAC), ``U`` onto the second mesh; ``sigma_max`` and the nominal path loss are kept digitally.

Signal chain of one pass (per vector, float64 throughout the simulation):

1. input DAC: the controller scales each vector by its largest magnitude and quantises it to
   ``input_bits`` signed levels; each of the N modulators gets 1/N of the laser power, so the input
   field is ``a / sqrt(N)`` with ``|a| <= 1``;
2. the realised mesh (static errors, quantised phases, path-dependent loss) as one complex matrix;
3. coherent (homodyne) detection of the in-phase component, with additive Gaussian detector noise of
   ``detector_noise`` times each channel's full scale;
4. the ADC: each output channel's full scale is ``adc_headroom`` times its expected rms output (set
   from the programmed matrix and the batch's input power); values beyond it clip, the rest are
   quantised to ``output_bits`` signed levels;
5. digital rescaling by ``sigma_max``, the nominal loss and the input scale; tiles' partial sums are
   added digitally.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .clements import decompose
from .mesh import PhysicalMesh, quantise_phase
from .params import PhotonicParams

__all__ = ["PhotonicEngine", "ProgrammedMatrix", "effective_bits"]


def effective_bits(result: np.ndarray, reference: np.ndarray) -> float:
    """``-log2(||result - reference||_F / ||reference||_F)`` (``inf`` when exact)."""
    ref = np.asarray(reference, dtype=np.float64)
    err = float(np.linalg.norm(np.asarray(result, dtype=np.float64) - ref))
    norm = float(np.linalg.norm(ref))
    if err == 0.0:
        return math.inf
    return -math.log2(err / norm) if norm > 0 else -math.log2(err)


def _quantise_signed(x: np.ndarray, bits: int | None) -> np.ndarray:
    """Round values in [-1, 1] to a signed ``bits``-bit converter (clipping outside)."""
    if bits is None:
        return x
    levels = (1 << (bits - 1)) - 1
    return np.clip(np.rint(x * levels), -levels, levels) / levels


@dataclass
class ProgrammedMatrix:
    """One tile as the chip realises it. ``transfer``: complex N x N field map; ``scale``: digital
    factor (``sigma_max`` / nominal loss amplitude); ``row_rms``: per output channel, the rms of the
    ideal normalised output for a unit-power input spread evenly over the tile's non-zero columns
    (sets the receiver full scale).
    """

    transfer: np.ndarray
    scale: float
    row_rms: np.ndarray


class PhotonicEngine:
    """Two Clements meshes and an attenuator bank on one simulated chip, with its controller.

    Ownership: the engine owns its random streams: static errors (drawn once), calibration
    measurements and detector noise, all derived from ``params.seed``.
    """

    def __init__(self, params: PhotonicParams) -> None:
        self.params = p = params
        n = p.mesh_size
        static, self._cal_rng, self._noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(p.seed).spawn(3))
        kw = dict(phase_error=p.phase_error, coupler_error=p.coupler_error, loss_db=p.loss_db,
                  loss_spread=p.loss_spread, phase_bits=p.phase_bits, rng=static)
        self.mesh_v = PhysicalMesh(n, **kw)  # type: ignore[arg-type]
        self.mesh_u = PhysicalMesh(n, **kw)  # type: ignore[arg-type]
        amp = 10.0 ** (-p.loss_db / 20.0)
        self.att_offset_true = p.phase_error * static.standard_normal(n)
        self.att_amp_true = 10.0 ** (-(p.loss_db * (1.0 + p.loss_spread * static.standard_normal(n))) / 20.0)
        self.att_offset_believed = np.zeros(n)
        self.nominal_amp = amp ** (self.mesh_v.depth + self.mesh_u.depth + 1)
        self.calibrated = False
        self.coupler_compensation = False
        self._cache: OrderedDict[bytes, ProgrammedMatrix] = OrderedDict()
        self.cache_size = 256

    @property
    def n(self) -> int:
        return self.params.mesh_size

    @property
    def n_phase_shifters(self) -> int:
        """Phase shifters on the chip: two per MZI, the two output screens, the attenuators."""
        return 2 * 2 * self.mesh_v.layout.n_mzis + 3 * self.n

    @property
    def n_couplers(self) -> int:
        return 2 * 2 * self.mesh_v.layout.n_mzis

    # ------------------------------------------------------------------ calibration
    def calibrate(self) -> None:
        """Measure every phase offset and coupler angle and program with them from now on.

        Each component is probed ``calibration_shots`` times; each estimate (phase offset and coupler
        angle, rad) carries the detector noise averaged over the shots.
        With no detector noise calibration is exact and the phase DAC's resolution is what remains;
        arm losses cannot be undone with phases and also remain.
        """
        p = self.params
        sigma = p.detector_noise / math.sqrt(p.calibration_shots)
        self.mesh_v.calibrate(sigma, sigma, self._cal_rng)
        self.mesh_u.calibrate(sigma, sigma, self._cal_rng)
        self.att_offset_believed = self.att_offset_true + sigma * self._cal_rng.standard_normal(self.n)
        self.calibrated = True
        # Compensating a coupler that cannot reach the target splitting leaves an in-phase error,
        # while the uncompensated coupler error is mostly in quadrature (which homodyne detection
        # discards); the controller tries both on test matrices and keeps the better.
        scores = {}
        for flag in (True, False):
            self.mesh_v.correct_couplers = self.mesh_u.correct_couplers = flag
            self._cache.clear()
            scores[flag] = self.measure_bits(trials=4, seed=777)
        best = max(scores, key=lambda f: scores[f])
        self.mesh_v.correct_couplers = self.mesh_u.correct_couplers = best
        self.coupler_compensation = best
        self._cache.clear()

    # ------------------------------------------------------------------ programming
    def program(self, tile: np.ndarray) -> ProgrammedMatrix:
        """Program an N x N real tile (float64); cached by content, as the controller would."""
        tile = np.ascontiguousarray(tile, dtype=np.float64)
        key = hashlib.blake2b(tile.tobytes(), digest_size=16).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        prog = self._program(tile)
        self._cache[key] = prog
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prog

    def _program(self, tile: np.ndarray) -> ProgrammedMatrix:
        n = self.n
        u, s, vt = np.linalg.svd(tile)
        smax = float(s[0])
        if smax == 0.0:
            return ProgrammedMatrix(np.zeros((n, n), np.complex128), 0.0, np.zeros(n))
        t = s / smax
        mv = self.mesh_v.program(decompose(vt))
        mu = self.mesh_u.program(decompose(u))
        theta_cmd = quantise_phase(2.0 * np.arcsin(np.clip(t, 0.0, 1.0)) - self.att_offset_believed,
                                   self.params.phase_bits)
        t_real = np.abs(np.sin((theta_cmd + self.att_offset_true) / 2.0)) * self.att_amp_true
        transfer = mu.transfer() @ (t_real[:, None] * mv.transfer())
        # Inputs spread over the tile's non-zero columns only (a padded edge tile has fewer).
        k_eff = max(int(np.count_nonzero(np.any(tile != 0.0, axis=0))), 1)
        row_rms = np.linalg.norm(tile / smax, axis=1) / math.sqrt(k_eff)
        return ProgrammedMatrix(transfer, smax / self.nominal_amp, row_rms)

    # ------------------------------------------------------------------ forward
    def apply(self, prog: ProgrammedMatrix, x: np.ndarray) -> np.ndarray:
        """One tile times vectors: ``x`` is ``(N, batch)`` real; returns ``(N, batch)`` float64."""
        p, n = self.params, self.n
        if prog.scale == 0.0:
            return np.zeros((n, x.shape[1]))
        peak = np.max(np.abs(x), axis=0)
        peak = np.where(peak > 0, peak, 1.0)
        a = _quantise_signed(x / peak, p.input_bits)
        field = a / math.sqrt(n)
        out = (prog.transfer @ field).real
        # Receiver full scale per channel, from the batch's input power and the programmed rows.
        power = float(np.sqrt(np.mean(np.sum(field * field, axis=0))))
        fs = p.adc_headroom * prog.row_rms * self.nominal_amp * max(power, 1e-300)
        fs = np.where(fs > 0, fs, p.adc_headroom * self.nominal_amp * max(power, 1e-300) / n)[:, None]
        if p.detector_noise > 0:
            out = out + p.detector_noise * fs * self._noise_rng.standard_normal(out.shape)
        if p.output_bits is not None:
            out = _quantise_signed(out / fs, p.output_bits) * fs
        return out * (prog.scale * math.sqrt(n)) * peak

    def matmul(self, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
        """``w @ x`` through the chip, tiled N x N; returns the result and the tiles programmed."""
        n = self.n
        m, k = w.shape
        _, b = x.shape
        mt, kt = -(-m // n), -(-k // n)
        wp = np.zeros((mt * n, kt * n))
        wp[:m, :k] = w
        xp = np.zeros((kt * n, b))
        xp[:k] = x
        y = np.zeros((mt * n, b))
        for j in range(kt):
            xs = xp[j * n:(j + 1) * n]
            if not np.any(xs):
                continue
            for i in range(mt):
                y[i * n:(i + 1) * n] += self.apply(self.program(wp[i * n:(i + 1) * n, j * n:(j + 1) * n]), xs)
        return y[:m], mt * kt

    def measure_bits(self, trials: int = 3, batch: int = 64, seed: int = 12345) -> float:
        """Effective bits on random Gaussian N x N matrices and vectors (mean relative error).

        Uses its own random inputs (``seed``) so that every device with the same settings is
        measured the same way; the detector noise stream advances as in any other launch.
        """
        rng = np.random.default_rng(seed)
        errs = []
        for _ in range(trials):
            w = rng.standard_normal((self.n, self.n))
            x = rng.standard_normal((self.n, batch))
            ref = w @ x
            y, _ = self.matmul(w, x)
            errs.append(float(np.linalg.norm(y - ref) / np.linalg.norm(ref)))
        mean = float(np.mean(errs))
        return math.inf if mean == 0 else -math.log2(mean)
