"""Gate matrices of OpenQASM 2's ``qelib1.inc`` and OpenQASM 3's ``stdgates.inc``.

Convention: a gate on qubits ``(q0, q1, ...)`` has a ``2^k x 2^k`` matrix whose row/column index is
big-endian in the argument order (``q0`` is the most significant bit), as in textbooks; so
``cx(c, t)`` is ``[[1,0,0,0],[0,1,0,0],[0,0,0,1],[0,0,1,0]]``. The simulator maps argument order to
qubit positions itself. Single-qubit rotations follow the usual ``exp(-i theta P / 2)`` definitions
(the same matrices as Qiskit), so statevectors agree with Qiskit's up to nothing at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["GATES", "GateDef", "gate_matrix", "controlled", "is_diagonal"]

_I2 = np.eye(2, dtype=np.complex128)


def u3(theta: float, phi: float, lam: float) -> np.ndarray:
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([
        [c, -np.exp(1j * lam) * s],
        [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c],
    ], dtype=np.complex128)


def phase(lam: float) -> np.ndarray:
    return np.array([[1, 0], [0, np.exp(1j * lam)]], dtype=np.complex128)


def rx(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -1j * s], [-1j * s, c]], dtype=np.complex128)


def ry(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -s], [s, c]], dtype=np.complex128)


def rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)]).astype(np.complex128)


def controlled(u: np.ndarray, controls: int = 1) -> np.ndarray:
    """``u`` controlled on ``controls`` leading qubits (all must be 1)."""
    n = u.shape[0]
    dim = n << controls
    out = np.eye(dim, dtype=np.complex128)
    out[dim - n:, dim - n:] = u
    return out


def _const(m: list[list[Any]]) -> Callable[..., np.ndarray]:
    arr = np.array(m, dtype=np.complex128)
    arr.setflags(write=False)
    return lambda: arr


_X = [[0, 1], [1, 0]]
_Y = [[0, -1j], [1j, 0]]
_Z = [[1, 0], [0, -1]]
_H = (np.array([[1, 1], [1, -1]]) / math.sqrt(2)).tolist()
_SX = [[0.5 + 0.5j, 0.5 - 0.5j], [0.5 - 0.5j, 0.5 + 0.5j]]
_SWAP = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]


def _rxx(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    m = np.eye(4, dtype=np.complex128) * c
    for i, j in ((0, 3), (1, 2), (2, 1), (3, 0)):
        m[i, j] = -1j * s
    return m


def _ryy(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    m = np.eye(4, dtype=np.complex128) * c
    m[0, 3] = m[3, 0] = 1j * s
    m[1, 2] = m[2, 1] = -1j * s
    return m


def _rzz(t: float) -> np.ndarray:
    a, b = np.exp(-0.5j * t), np.exp(0.5j * t)
    return np.diag([a, b, b, a]).astype(np.complex128)


def _cu(theta: float, phi: float, lam: float, gamma: float) -> np.ndarray:
    return controlled(np.exp(1j * gamma) * u3(theta, phi, lam))


class GateDef:
    """A named gate: ``nparams`` angles, ``nqubits`` qubits, ``build(*angles)`` -> its matrix."""

    __slots__ = ("name", "nparams", "nqubits", "build")

    def __init__(self, name: str, nparams: int, nqubits: int, build: Callable[..., np.ndarray]) -> None:
        self.name = name
        self.nparams = nparams
        self.nqubits = nqubits
        self.build = build


def _defs() -> dict[str, GateDef]:
    table: list[tuple[str, int, int, Callable[..., np.ndarray]]] = [
        ("U", 3, 1, u3), ("u3", 3, 1, u3), ("u", 3, 1, u3),
        ("u2", 2, 1, lambda phi, lam: u3(math.pi / 2, phi, lam)),
        ("u1", 1, 1, phase), ("p", 1, 1, phase), ("phase", 1, 1, phase),
        ("u0", 1, 1, lambda _t: _I2), ("id", 0, 1, lambda: _I2),
        ("x", 0, 1, _const(_X)), ("y", 0, 1, _const(_Y)), ("z", 0, 1, _const(_Z)), ("h", 0, 1, _const(_H)),
        ("s", 0, 1, lambda: phase(math.pi / 2)), ("sdg", 0, 1, lambda: phase(-math.pi / 2)),
        ("t", 0, 1, lambda: phase(math.pi / 4)), ("tdg", 0, 1, lambda: phase(-math.pi / 4)),
        ("sx", 0, 1, _const(_SX)), ("sxdg", 0, 1, lambda: np.conj(np.array(_SX, dtype=np.complex128)).T.copy()),
        ("rx", 1, 1, rx), ("ry", 1, 1, ry), ("rz", 1, 1, rz),
        ("CX", 0, 2, lambda: controlled(np.array(_X, dtype=np.complex128))),
        ("cx", 0, 2, lambda: controlled(np.array(_X, dtype=np.complex128))),
        ("cnot", 0, 2, lambda: controlled(np.array(_X, dtype=np.complex128))),
        ("cy", 0, 2, lambda: controlled(np.array(_Y, dtype=np.complex128))),
        ("cz", 0, 2, lambda: controlled(np.array(_Z, dtype=np.complex128))),
        ("ch", 0, 2, lambda: controlled(np.array(_H, dtype=np.complex128))),
        ("csx", 0, 2, lambda: controlled(np.array(_SX, dtype=np.complex128))),
        ("swap", 0, 2, _const(_SWAP)),
        ("crx", 1, 2, lambda t: controlled(rx(t))), ("cry", 1, 2, lambda t: controlled(ry(t))),
        ("crz", 1, 2, lambda t: controlled(rz(t))),
        ("cu1", 1, 2, lambda t: controlled(phase(t))), ("cp", 1, 2, lambda t: controlled(phase(t))),
        ("cphase", 1, 2, lambda t: controlled(phase(t))),
        ("cu3", 3, 2, lambda a, b, c: controlled(u3(a, b, c))), ("cu", 4, 2, _cu),
        ("rxx", 1, 2, _rxx), ("ryy", 1, 2, _ryy), ("rzz", 1, 2, _rzz),
        ("ccx", 0, 3, lambda: controlled(np.array(_X, dtype=np.complex128), 2)),
        ("ccz", 0, 3, lambda: controlled(np.array(_Z, dtype=np.complex128), 2)),
        ("cswap", 0, 3, lambda: controlled(np.array(_SWAP, dtype=np.complex128))),
        ("c3x", 0, 4, lambda: controlled(np.array(_X, dtype=np.complex128), 3)),
        ("c4x", 0, 5, lambda: controlled(np.array(_X, dtype=np.complex128), 4)),
    ]
    return {name: GateDef(name, npar, nq, fn) for name, npar, nq, fn in table}


#: Every built-in gate by name.
GATES: dict[str, GateDef] = _defs()


def gate_matrix(name: str, params: tuple[float, ...] = ()) -> np.ndarray:
    """The matrix of built-in gate ``name`` with angles ``params`` (radians)."""
    return GATES[name].build(*params)


def is_diagonal(m: np.ndarray) -> bool:
    """True when every off-diagonal entry of ``m`` is exactly zero."""
    return not np.any(m[~np.eye(m.shape[0], dtype=bool)])
