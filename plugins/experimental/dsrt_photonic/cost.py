"""The photonic cost model: an analytical MODEL of the chip's time and energy, not a measurement.

Constants come from :class:`~dsrt_photonic.params.PhotonicParams` (seconds, hertz, joules, watts):

- programming one N x N tile: ``reprogram_s`` (thermo-optic phase shifters settle; default 10 us);
- streaming ``v`` vectors through a programmed tile: ``v / clock_hz + pipeline_s`` (one vector per
  modulator/ADC sample; default 10 GHz and 2 ns);
- energy: ``energy_per_sample_j`` per DAC and per ADC sample (N of each per vector per tile), plus
  ``laser_power_w`` while streaming, plus ``shifter_power_w`` per phase shifter while the launch lasts.

A GEMM ``(m x k) @ (k x v)`` programs ``ceil(m/N) * ceil(k/N)`` tiles and streams ``v`` vectors through
each; a matvec is the same with ``v = 1``. The simulator's own wall time is never reported as the
device's time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsrt.errors import ShapeError

from .params import PhotonicParams

__all__ = ["CostModel", "LaunchCost"]


@dataclass(frozen=True)
class LaunchCost:
    """Modelled cost of one launch: seconds, joules, tiles programmed, vectors streamed per tile."""

    seconds: float
    energy_j: float
    tiles: int
    vectors: int
    program_s: float
    stream_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"modelled_s": self.seconds, "energy_j": self.energy_j, "tiles": self.tiles,
                "vectors": self.vectors, "program_s": self.program_s, "stream_s": self.stream_s,
                "cost_model": "photonic analytical model"}


class CostModel:
    """Predicts the modelled time (seconds) and energy (joules) of photonic launches."""

    label = "MODEL (analytical; constants stated, not measured)"

    def __init__(self, params: PhotonicParams, n_phase_shifters: int) -> None:
        self.params = params
        self.n_phase_shifters = n_phase_shifters

    def gemm(self, m: int, k: int, v: int, *, programmed: int | None = None) -> LaunchCost:
        """Cost of ``(m x k) @ (k x v)``; ``programmed`` tiles to reprogram (default: all)."""
        p, n = self.params, self.params.mesh_size
        tiles = math.ceil(m / n) * math.ceil(k / n) if m and k else 0
        reprog = tiles if programmed is None else programmed
        program_s = reprog * p.reprogram_s
        stream_s = tiles * (v / p.clock_hz + p.pipeline_s) if v else 0.0
        seconds = program_s + stream_s
        energy = (2 * tiles * v * n * p.energy_per_sample_j + p.laser_power_w * stream_s
                  + self.n_phase_shifters * p.shifter_power_w * seconds)
        return LaunchCost(seconds, energy, tiles, v, program_s, stream_s)

    def launch(self, kernel: str, shapes: Sequence[Sequence[int]], params: Mapping[str, Any] | None = None,
               *, programmed: int | None = None) -> LaunchCost:
        """Cost of a ``gemm`` or ``matvec`` launch from its input shapes (and gemm's trans flags)."""
        params = params or {}
        if kernel == "matvec":
            if len(shapes) < 1 or len(shapes[0]) != 2:
                raise ShapeError(f"photonic cost model: matvec needs a 2-D matrix shape, got {list(shapes)}")
            m, k = shapes[0]
            return self.gemm(int(m), int(k), 1, programmed=programmed)
        if kernel == "gemm":
            if len(shapes) < 2 or len(shapes[0]) != 2 or len(shapes[1]) != 2:
                raise ShapeError(f"photonic cost model: gemm needs two 2-D shapes, got {list(shapes)}")
            a, b = shapes[0], shapes[1]
            m, k = (a[1], a[0]) if params.get("trans_a") else (a[0], a[1])
            v = b[0] if params.get("trans_b") else b[1]
            return self.gemm(int(m), int(k), int(v), programmed=programmed)
        raise ShapeError(f"photonic cost model: no model for kernel '{kernel}' (models: gemm, matvec)")

    def predict(self, kernel: str, shapes: Sequence[Sequence[int]], params: Mapping[str, Any] | None = None) -> float:
        """Modelled seconds of a launch (every tile reprogrammed); for the scheduler's virtual clock."""
        return self.launch(kernel, shapes, params).seconds

    def calibration_s(self, components: int) -> float:
        """Modelled seconds to calibrate ``components`` phase shifters and couplers."""
        p = self.params
        return components * (p.reprogram_s + p.calibration_shots / p.clock_hz)

    def describe(self) -> dict[str, Any]:
        """The model's constants, for ``DeviceInfo.properties`` and reports."""
        p = self.params
        return {"cost_model": self.label, "reprogram_s": p.reprogram_s, "clock_hz": p.clock_hz,
                "pipeline_s": p.pipeline_s, "energy_per_sample_j": p.energy_per_sample_j,
                "laser_power_w": p.laser_power_w, "shifter_power_w": p.shifter_power_w,
                "phase_shifters": self.n_phase_shifters}
