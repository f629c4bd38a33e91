"""``PhotonicDevice``: a simulated MZI-mesh matrix engine as one dsrt device.

Memory is host memory (1-D ``uint8`` numpy buffers, as on the CPU backend): the simulated chip's
controller owns the operands. ``gemm`` (float32, ``alpha``/``beta``/``trans_a``/``trans_b`` as in
:mod:`dsrt.kernels`) and ``matvec`` (float32) run through the simulated optics and return the noisy
result the hardware would give. Each launch's modelled time and energy come from
:class:`~dsrt_photonic.cost.CostModel`; they accumulate in :attr:`PhotonicDevice.modelled_time_s`
and appear in the trace as a ``<kernel> (modelled)`` instant event next to the launch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt.array import Array
from dsrt.device import Device, DeviceInfo, KernelImpl, Stream
from dsrt_cpu.hostmem import HostMemory
from dsrt_cpu.hostmem import host_view as _view

from .cost import CostModel, LaunchCost
from .engine import PhotonicEngine
from .kernels import ensure_registered
from .params import PhotonicParams

__all__ = ["PhotonicDevice", "MEMORY_BYTES"]

#: Operand memory the simulated controller offers (a model figure: 1 GiB of host memory).
MEMORY_BYTES = 1 << 30


class PhotonicDevice(HostMemory, Device):
    """One simulated photonic chip (``photonic:<index>``); see :class:`PhotonicParams` for its settings.

    At start-up the device calibrates (unless ``calibrate=False``) and measures the effective bits it
    achieves on random matrices; that figure is ``info.precision_bits``.
    """

    def __init__(self, index: int = 0, params: PhotonicParams | None = None, *, device_id: str | None = None,
                 calibrate: bool = True) -> None:
        ensure_registered()
        self.params = p = params or PhotonicParams()
        self.engine = PhotonicEngine(p)
        self.cost_model = CostModel(p, self.engine.n_phase_shifters)
        self.modelled_time_s = 0.0
        self.modelled_energy_j = 0.0
        self._loaded_tile: bytes | None = None
        bits_raw = self.engine.measure_bits()
        if calibrate:
            self.engine.calibrate()
            self.modelled_time_s += self.cost_model.calibration_s(self.engine.n_phase_shifters + self.engine.n_couplers)
        bits = self.engine.measure_bits()
        n = p.mesh_size
        ident = device_id or f"photonic:{index}"
        info = DeviceInfo(
            id=ident, backend="photonic", index=index, name=f"simulated {n}x{n} MZI mesh (Clements, SVD)",
            vendor="dsrt simulation", memory_bytes=MEMORY_BYTES, compute_units=1,
            dtypes=frozenset({"float32"}), kernels={},
            peak_flops=2.0 * n * n * p.clock_hz, memory_bandwidth=2.0 * n * 4 * p.clock_hz,
            simulated=True, precision_bits=round(bits, 2) if math.isfinite(bits) else 52.0,
            properties={
                "mesh_size": n, "mzis": 2 * self.engine.mesh_v.layout.n_mzis,
                "phase_bits": p.phase_bits, "input_bits": p.input_bits, "output_bits": p.output_bits,
                "phase_error_rad": p.phase_error, "coupler_error_rad": p.coupler_error, "loss_db_per_mzi": p.loss_db,
                "detector_noise": p.detector_noise, "seed": p.seed, "calibrated": calibrate,
                "precision_bits_uncalibrated": round(bits_raw, 2) if math.isfinite(bits_raw) else 52.0,
                "peak_flops_model": "2 N^2 MAC per vector x clock_hz (streaming, programming excluded)",
                **self.cost_model.describe(),
            },
        )
        super().__init__(info)
        object.__setattr__(self.info, "kernels", {name: frozenset(d) for name, (d, _i) in self.kernel_table().items()})

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        f32 = frozenset({"float32"})
        return {"gemm": (f32, self._gemm), "matvec": (f32, self._matvec)}

    def calibrate(self) -> None:
        """Re-run calibration (modelled time is charged) and re-measure ``info.precision_bits``."""
        self.engine.calibrate()
        self._loaded_tile = None
        self.modelled_time_s += self.cost_model.calibration_s(self.engine.n_phase_shifters + self.engine.n_couplers)
        object.__setattr__(self.info, "precision_bits", round(self.engine.measure_bits(), 2))

    def multiply(self, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, LaunchCost]:
        """``w @ x`` (host float arrays, 2-D) through the chip; returns float64 and the modelled cost."""
        y, tiles = self.engine.matmul(np.asarray(w, np.float64), np.asarray(x, np.float64))
        # A single tile already on the mesh needs no reprogramming; anything else reprograms each tile.
        programmed = tiles
        if tiles == 1:
            key = np.ascontiguousarray(w, np.float64).tobytes()
            if key == self._loaded_tile:
                programmed = 0
            self._loaded_tile = key
        else:
            self._loaded_tile = None
        cost = self.cost_model.gemm(w.shape[0], w.shape[1], x.shape[1], programmed=programmed)
        self.modelled_time_s += cost.seconds
        self.modelled_energy_j += cost.energy_j
        return y, cost

    def _record(self, kernel: str, cost: LaunchCost) -> None:
        tracer = self.tracer
        if tracer is not None:
            tracer.instant(f"{kernel} (modelled)", self.id, {**cost.to_dict(), "precision_bits": self.info.precision_bits},
                           at=time.perf_counter())

    def _gemm(self, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        a, b = _view(inputs[0]), _view(inputs[1])
        w = a.T if params["trans_a"] else a
        x = b.T if params["trans_b"] else b
        y, cost = self.multiply(w, x)
        y *= params["alpha"]
        if len(inputs) == 3 and params["beta"] != 0:
            y += params["beta"] * _view(inputs[2]).astype(np.float64)
        _view(out)[...] = y
        self._record("gemm", cost)

    def _matvec(self, inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        a, x = _view(inputs[0]), _view(inputs[1])
        y, cost = self.multiply(a, x[:, None])
        _view(out)[...] = y[:, 0]
        self._record("matvec", cost)
