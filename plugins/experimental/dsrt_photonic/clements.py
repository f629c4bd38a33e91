"""Clements decomposition of a unitary into a rectangular mesh of N(N-1)/2 Mach-Zehnder interferometers.

One ideal MZI on modes ``(m, m+1)`` is ``T(theta, phi) = BS . P(theta) . BS . P(phi)`` with the 50:50
coupler ``BS = [[1, i], [i, 1]] / sqrt(2)`` and ``P(a) = diag(exp(i a), 1)``, which gives::

    T = i exp(i theta/2) [[exp(i phi) sin(theta/2),  cos(theta/2)],
                          [exp(i phi) cos(theta/2), -sin(theta/2)]]

The decomposition (Clements et al., Optica 3, 1460, 2016) nulls the sub-diagonal of ``U`` diagonal by
diagonal, alternating column operations (``U T^-1`` from the right) and row operations (``T U`` from
the left), leaving a diagonal ``D``; the left-hand MZIs are then moved through ``D``. The result is
``U = D . T_K ... T_1`` where ``T_1`` is the first MZI light meets. All arithmetic is float64/complex128.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["MeshLayout", "Decomposition", "decompose", "mzi_matrix", "layout", "reconstruct"]


def mzi_matrix(theta: float, phi: float) -> np.ndarray:
    """The ideal 2x2 transfer matrix of one MZI (complex128)."""
    s, c = math.sin(theta / 2), math.cos(theta / 2)
    g = 1j * cmath.exp(1j * theta / 2)
    e = cmath.exp(1j * phi)
    return g * np.array([[e * s, c], [e * c, -s]], dtype=np.complex128)


def _mzi(theta: float, phi: float) -> np.ndarray:
    """``mzi_matrix`` with scalar arithmetic (the decomposition's inner loop)."""
    s, c = math.sin(theta / 2), math.cos(theta / 2)
    g = 1j * cmath.exp(0.5j * theta)
    ge = g * cmath.exp(1j * phi)
    return np.array(((ge * s, g * c), (ge * c, -g * s)))


def _mzi_inverse(theta: float, phi: float) -> np.ndarray:
    """The conjugate transpose of ``mzi_matrix(theta, phi)``."""
    s, c = math.sin(theta / 2), math.cos(theta / 2)
    g = -1j * cmath.exp(-0.5j * theta)
    ge = g * cmath.exp(-1j * phi)
    return np.array(((ge * s, ge * c), (g * c, -g * s)))


@dataclass(frozen=True)
class MeshLayout:
    """Where each MZI sits: ``modes[k]`` is the upper mode of MZI ``k`` (in propagation order),
    ``layer[k]`` its column. ``layers`` lists MZI indices per column; ``n_layers`` is the optical depth.
    """

    n: int
    modes: np.ndarray
    layer: np.ndarray
    layers: tuple[np.ndarray, ...]

    @property
    def n_mzis(self) -> int:
        return int(self.modes.size)

    @property
    def n_layers(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Decomposition:
    """Ideal phases of one unitary: MZI ``k`` has ``theta[k]``, ``phi[k]`` on modes ``(modes[k], +1)``;
    ``out_phase`` is the output phase screen (radians) applied after the last MZI.
    """

    layout: MeshLayout
    theta: np.ndarray
    phi: np.ndarray
    out_phase: np.ndarray


def _null_order(n: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The nulling schedule: column operations ``(row, col)`` and row operations ``(row, col)``.

    Each entry is ``(row, col, index in the combined sequence)``; the sequence order is the order in
    which elements are nulled.
    """
    right: list[tuple[int, int, int]] = []
    left: list[tuple[int, int, int]] = []
    k = 0
    for i in range(1, n):
        if i % 2 == 1:
            for j in range(i):
                right.append((n - 1 - j, i - 1 - j, k))
                k += 1
        else:
            for j in range(1, i + 1):
                left.append((n + j - i - 1, j - 1, k))
                k += 1
    return right, left


@lru_cache(maxsize=64)
def layout(n: int) -> MeshLayout:
    """The MZI placement of an ``n``-mode Clements mesh (independent of the matrix programmed)."""
    right, left = _null_order(n)
    # Propagation order: right-hand MZIs in the order they were found, then left-hand ones reversed.
    modes = [c for (_r, c, _k) in right] + [r - 1 for (r, _c, _k) in reversed(left)]
    depth = np.zeros(n, dtype=np.int64)
    layer_of = []
    for m in modes:
        lay = int(max(depth[m], depth[m + 1]))
        layer_of.append(lay)
        depth[m] = depth[m + 1] = lay + 1
    mode_arr = np.asarray(modes, dtype=np.int64)
    layer_arr = np.asarray(layer_of, dtype=np.int64)
    n_layers = int(layer_arr.max()) + 1 if layer_arr.size else 0
    layers = tuple(np.flatnonzero(layer_arr == lay) for lay in range(n_layers))
    return MeshLayout(n=n, modes=mode_arr, layer=layer_arr, layers=layers)


def decompose(u: np.ndarray) -> Decomposition:
    """Decompose unitary ``u`` (n x n) into MZI phases; exact to machine precision.

    Raises ``ValueError`` when ``u`` is not square; unitarity is the caller's promise.
    """
    n = u.shape[0]
    if u.ndim != 2 or u.shape[1] != n:
        raise ValueError(f"decompose needs a square matrix, got shape {u.shape}")
    w = np.array(u, dtype=np.complex128, copy=True)
    lay = layout(n)
    right_thetas: list[tuple[float, float]] = []
    left_thetas: list[tuple[float, float]] = []
    for i in range(1, n):
        if i % 2 == 1:
            for j in range(i):
                r, c = n - 1 - j, i - 1 - j
                a, b = complex(w[r, c]), complex(w[r, c + 1])
                theta = 2.0 * math.atan2(abs(b), abs(a))
                phi = cmath.phase(a) - cmath.phase(-b) if abs(a) > 0 and abs(b) > 0 else 0.0
                rows = slice(0, r + 1)  # rows below r are already zero in both columns
                w[rows, c:c + 2] = w[rows, c:c + 2] @ _mzi_inverse(theta, phi)
                w[r, c] = 0.0
                right_thetas.append((theta, phi))
        else:
            for j in range(1, i + 1):
                r, c = n + j - i - 1, j - 1
                a, b = complex(w[r - 1, c]), complex(w[r, c])
                theta = 2.0 * math.atan2(abs(a), abs(b))
                phi = cmath.phase(b) - cmath.phase(a) if abs(a) > 0 and abs(b) > 0 else 0.0
                cols = slice(c, n)  # columns left of c are already zero in both rows
                w[r - 1:r + 1, cols] = _mzi(theta, phi) @ w[r - 1:r + 1, cols]
                w[r, c] = 0.0
                left_thetas.append((theta, phi))
    d = np.diag(w).copy()
    # Move each left-hand T^dagger through the diagonal: T(th, ph)^dagger D = D' T(th, ph').
    moved: list[tuple[float, float]] = []
    left_modes = [r - 1 for (r, _c, _k) in _null_order(n)[1]]
    for (theta, phi), m in zip(reversed(left_thetas), reversed(left_modes), strict=True):
        d1, d2 = d[m], d[m + 1]
        phase = cmath.exp(-1j * theta)
        d[m] = -phase * cmath.exp(-1j * phi) * d2
        d[m + 1] = -phase * d2
        moved.append((theta, cmath.phase(d1) - cmath.phase(d2)))
    # U = D_final . T'_1 ... T'_L . R_M ... R_1; light meets R_1 first, T'_L right after R_M, T'_1 last.
    # ``moved`` was built from T'_L down to T'_1, which is already propagation order.
    ordered = right_thetas + moved
    theta_arr = np.array([t for t, _ in ordered], dtype=np.float64)
    phi_arr = np.array([p for _, p in ordered], dtype=np.float64)
    return Decomposition(layout=lay, theta=theta_arr, phi=phi_arr, out_phase=np.angle(d))


def reconstruct(dec: Decomposition) -> np.ndarray:
    """Multiply the ideal MZIs back together (a reference for tests; O(N^3))."""
    n = dec.layout.n
    u = np.eye(n, dtype=np.complex128)
    for m, theta, phi in zip(dec.layout.modes, dec.theta, dec.phi, strict=True):
        u[m:m + 2, :] = mzi_matrix(float(theta), float(phi)) @ u[m:m + 2, :]
    return np.exp(1j * dec.out_phase)[:, None] * u
