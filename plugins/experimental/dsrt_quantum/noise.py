"""Noise models: depolarizing and amplitude-damping channels after gates, and readout error.

Parameters are probabilities per gate and qubit (dimensionless):

- ``depolarizing``: after every gate, each qubit it touched suffers ``X``, ``Y`` or ``Z`` with
  probability ``p/3`` each (``rho -> (1-p) rho + p/3 (X rho X + Y rho Y + Z rho Z)``);
- ``amplitude_damping``: after every gate, each touched qubit decays ``|1> -> |0>`` with probability
  ``gamma`` (Kraus ``K0 = diag(1, sqrt(1-gamma))``, ``K1 = sqrt(gamma) |0><1|``);
- ``readout_error``: a measured bit is reported flipped with this probability (one number), or
  ``[p(1 read as 0), p(0 read as 1)]``.

The statevector engine samples these channels by quantum trajectories; the density-matrix engine
applies them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsrt.errors import ConfigurationError

__all__ = ["NoiseModel", "PAULIS"]

PAULIS = {
    "I": np.eye(2, dtype=np.complex128),
    "X": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "Z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
}


@dataclass(frozen=True)
class NoiseModel:
    """Per-gate channel strengths and readout error (probabilities in [0, 1])."""

    depolarizing: float = 0.0
    amplitude_damping: float = 0.0
    readout_error: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | NoiseModel | None, where: str = "noise") -> NoiseModel:
        """Build from a mapping (a topology's ``noise:`` section); unknown keys are an error."""
        if params is None:
            return cls()
        if isinstance(params, NoiseModel):
            return params
        known = {"depolarizing", "amplitude_damping", "readout_error"}
        extra = set(params) - known
        if extra:
            raise ConfigurationError(f"{where}: unknown noise parameter(s) {sorted(extra)} (known: {sorted(known)})")
        ro = params.get("readout_error", 0.0)
        ro_pair = (float(ro), float(ro)) if isinstance(ro, (int, float)) else (float(ro[0]), float(ro[1]))
        model = cls(float(params.get("depolarizing", 0.0)), float(params.get("amplitude_damping", 0.0)), ro_pair)
        for name, p in (("depolarizing", model.depolarizing), ("amplitude_damping", model.amplitude_damping),
                        ("readout_error", ro_pair[0]), ("readout_error", ro_pair[1])):
            if not 0.0 <= p <= 1.0 or math.isnan(p):
                raise ConfigurationError(f"{where}: {name} must be a probability in [0, 1], got {p}")
        return model

    @property
    def active(self) -> bool:
        """True when any channel does something."""
        return bool(self.depolarizing or self.amplitude_damping or any(self.readout_error))

    @property
    def gate_noise(self) -> bool:
        return bool(self.depolarizing or self.amplitude_damping)

    def kraus(self) -> list[list[np.ndarray]]:
        """The single-qubit channels applied after each gate, each as its Kraus operators."""
        out: list[list[np.ndarray]] = []
        p = self.depolarizing
        if p:
            out.append([math.sqrt(1 - p) * PAULIS["I"]] + [math.sqrt(p / 3) * PAULIS[s] for s in "XYZ"])
        g = self.amplitude_damping
        if g:
            out.append([np.array([[1, 0], [0, math.sqrt(1 - g)]], dtype=np.complex128),
                        np.array([[0, math.sqrt(g)], [0, 0]], dtype=np.complex128)])
        return out

    def flip_readout(self, bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply readout error to an array of 0/1 outcomes (any shape); returns a new array."""
        p10, p01 = self.readout_error
        if not (p10 or p01):
            return bits
        u = rng.random(bits.shape)
        flip = np.where(bits == 1, u < p10, u < p01)
        return np.where(flip, 1 - bits, bits)

    def to_dict(self) -> dict[str, Any]:
        return {"depolarizing": self.depolarizing, "amplitude_damping": self.amplitude_damping,
                "readout_error": list(self.readout_error)}
