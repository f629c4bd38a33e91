"""Settings of one simulated photonic device, as declared in a topology's ``simulated`` section.

Units: angles in radians, loss in dB per MZI, noise as a fraction of the receiver's full scale, clock
in hertz (vectors per second through the mesh), times in seconds, energies in joules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsrt.errors import ConfigurationError

__all__ = ["PhotonicParams", "IDEAL", "REALISTIC"]


@dataclass(frozen=True)
class PhotonicParams:
    """Physical and cost settings of one MZI-mesh device (``None`` bits: an ideal converter).

    - ``mesh_size``: N, the number of optical modes; each mesh holds N(N-1)/2 MZIs.
    - ``phase_bits``: resolution of the phase-shifter DACs (bits over 2 pi).
    - ``input_bits`` / ``output_bits``: modulator DAC and detector ADC resolution (signed, bits).
    - ``phase_error``: standard deviation of the static phase offset of every phase shifter (rad).
    - ``coupler_error``: standard deviation of every directional coupler's splitting angle around
      pi/4 (rad).
    - ``loss_db``: insertion loss per MZI (dB); ``loss_spread``: relative standard deviation of each
      arm's loss around it, which makes the loss depend on the optical path.
    - ``detector_noise``: standard deviation of additive detector noise, as a fraction of the
      receiver's full scale.
    - ``adc_headroom``: receiver full scale in units of the expected rms output of each channel.
    - ``calibration_shots``: probe repetitions averaged per calibrated component.
    - ``clock_hz``: vectors per second streamed through the mesh (modulator/ADC sample rate).
    - ``reprogram_s``: settling time of the phase shifters after reprogramming (thermo-optic).
    - ``pipeline_s``: fixed latency of one pass (DAC + optical path + ADC).
    - ``energy_per_sample_j``: DAC or ADC energy per sample; ``laser_power_w``: optical source
      wall-plug power; ``shifter_power_w``: holding power of one phase shifter.
    - ``seed``: draws the static errors (the same seed gives the same device) and the noise stream.
    """

    mesh_size: int = 32
    phase_bits: int | None = 12
    input_bits: int | None = 8
    output_bits: int | None = 8
    phase_error: float = 2e-3
    coupler_error: float = 5e-3
    loss_db: float = 0.1
    loss_spread: float = 0.1
    detector_noise: float = 1e-3
    adc_headroom: float = 4.0
    calibration_shots: int = 256
    clock_hz: float = 10e9
    reprogram_s: float = 10e-6
    pipeline_s: float = 2e-9
    energy_per_sample_j: float = 1e-12
    laser_power_w: float = 0.1
    shifter_power_w: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ConfigurationError(f"photonic device setting '{name}' = {getattr(self, name)!r}: {why}")

        if not isinstance(self.mesh_size, int) or not 2 <= self.mesh_size <= 512:
            fail("mesh_size", "must be an integer from 2 to 512")
        for name in ("phase_bits", "input_bits", "output_bits"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not 2 <= v <= 32):
                fail(name, "must be an integer from 2 to 32, or null for an ideal converter")
        for name in ("phase_error", "coupler_error", "loss_db", "loss_spread", "detector_noise"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                fail(name, "must be a finite number >= 0")
        for name in ("adc_headroom", "clock_hz", "reprogram_s", "pipeline_s", "energy_per_sample_j",
                     "laser_power_w", "shifter_power_w"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                fail(name, "must be a finite number > 0")
        if not isinstance(self.calibration_shots, int) or self.calibration_shots < 1:
            fail("calibration_shots", "must be a positive integer")
        if not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "must be a non-negative integer")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "photonic device") -> PhotonicParams:
        """Build from a topology mapping; unknown keys are an error that names ``where``.

        Accepts the aliases ``n`` for ``mesh_size`` and ``clock`` for ``clock_hz``.
        """
        aliases = {"n": "mesh_size", "clock": "clock_hz", "noise": "detector_noise"}
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = aliases.get(key, key)
            if name not in known:
                raise ConfigurationError(
                    f"{where}: unknown photonic setting '{key}' (known: {', '.join(sorted(known))})"
                )
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> PhotonicParams:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


#: Every error source off and every converter ideal: the mesh reproduces the matrix to float64 precision.
IDEAL = PhotonicParams(
    phase_bits=None, input_bits=None, output_bits=None, phase_error=0.0, coupler_error=0.0,
    loss_db=0.0, loss_spread=0.0, detector_noise=0.0,
)
#: The issue's realistic setting (8-bit I/O, 12-bit phase DAC, 2 mrad, 5 mrad, 0.1 dB/MZI, 1e-3 noise).
REALISTIC = PhotonicParams()
