"""``PhotonicDevice``: a simulated MZI-mesh matrix engine as one dsrt device.

Memory is host memory (1-D ``uint8`` numpy buffers, as on the CPU backend): the simulated chip's
controller owns the operands. ``gemm`` (float32, ``alpha``/``beta``/``trans_a``/``trans_b`` as in
:mod:`dsrt.kernels`) and ``matvec`` (float32) run through the simulated optics and return the noisy
result the hardware would give. Each launch's modelled time and energy come from
:class:`~dsrt_photonic.cost.CostModel`; they accumulate in :attr:`PhotonicDevice.modelled_time_s`
and appear in the trace as a ``<kernel> (modelled)`` instant event next to the launch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt.array import Array
from dsrt.device import Device, DeviceInfo, KernelImpl, Stream
from dsrt.memory.hostmem import HostMemory
from dsrt.memory.hostmem import host_view as _view

from .cost import CostModel, LaunchCost
from .engine import PhotonicEngine
from .kernels import ensure_registered
from .params import PhotonicParams

__all__ = ["PhotonicDevice", "MEMORY_BYTES"]

#: Operand memory the simulated controller offers (a model figure: 1 GiB of host memory).
MEMORY_BYTES = 1 << 30


class PhotonicDevice(HostMemory, Device):
    """One simulated photonic chip (``photonic:<index>``); see :class:`PhotonicParams` for its settings.

    At start-up the device calibrates (unless ``calibrate=False``) and measures the worst relative
    error it makes on random Gaussian and non-negative operands, in the kit's metric; ``-log2`` of that,
    less one bit of margin for launch-to-launch noise, is ``info.precision_bits`` (``measure_bits``
    keeps the norm-based effective bits of the benchmark).
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
        n = p.mesh_size
        # Placement predicts wall-clock time on this host, so the peak it is told is the speed of
        # simulating the chip here (timed on the precision measurement); the chip's modelled
        # throughput is reported apart and drives only the virtual clock.
        started = time.perf_counter()
        bits = self._declared_bits()
        simulated_flops = 2 * 2.0 * n * n * 64 / max(time.perf_counter() - started, 1e-9)
        ident = device_id or f"photonic:{index}"
        info = DeviceInfo(
            id=ident, backend="photonic", index=index, name=f"simulated {n}x{n} MZI mesh (Clements, SVD)",
            vendor="dsrt simulation", memory_bytes=MEMORY_BYTES, compute_units=1,
            dtypes=frozenset({"float32"}), synchronous=True, host_visible=True,
            peak_flops=simulated_flops, modelled_peak_flops=2.0 * n * n * p.clock_hz,
            memory_bandwidth=2.0 * n * 4 * p.clock_hz, simulated=True,
            precision_bits=round(bits, 2) if math.isfinite(bits) else 52.0,
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

    # ------------------------------------------------------------------ kernels
    def kernel_table(self) -> Mapping[str, tuple[frozenset[str], KernelImpl]]:
        f32 = frozenset({"float32"})
        return {"gemm": (f32, self._gemm), "matvec": (f32, self._matvec)}

    def modelled_cost(self) -> tuple[float, float]:
        """Modelled chip seconds and joules charged so far (calibration and every launch)."""
        return self.modelled_time_s, self.modelled_energy_j

    def calibrate(self) -> None:
        """Re-run calibration (modelled time is charged) and re-measure ``info.precision_bits``."""
        self.engine.calibrate()
        self._loaded_tile = None
        self.modelled_time_s += self.cost_model.calibration_s(self.engine.n_phase_shifters + self.engine.n_couplers)
        self.info = dataclasses.replace(self.info, precision_bits=round(self._declared_bits(), 2))

    def _declared_bits(self, batch: int = 64, seed: int = 12345) -> float:
        """The precision placement trusts: ``-log2`` of the worst relative error, measured as the
        conformance kit measures it (max abs error / max abs of the exact result), over zero-mean
        Gaussian and non-negative uniform operands (the second is where analog errors, which scale
        with the operands' norms rather than the result's, hurt most)."""
        rng = np.random.default_rng(seed)
        n = self.params.mesh_size
        worst = 0.0
        for draw in (rng.standard_normal, rng.random):
            w, x = draw((n, n)), draw((n, batch))
            y, _tiles = self.engine.matmul(w, x)
            ref = w @ x
            worst = max(worst, float(np.max(np.abs(y - ref)) / np.max(np.abs(ref))))
        # Detector and phase noise differ from launch to launch: one bit of margin on the worst seen.
        return math.inf if worst == 0 else -math.log2(worst) - 1.0

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
