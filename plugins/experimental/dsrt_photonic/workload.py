"""``dsrt run`` checks for photonic devices: GEMM and matvec against numpy within the advertised bits."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrt.hookspecs import WorkloadItem

__all__ = ["workload_items", "tolerance"]

#: Margin (bits) between a device's advertised precision and what one check must reach.
MARGIN_BITS = 1.0


def tolerance(device: Any) -> float:
    """Largest acceptable relative (Frobenius) error: ``2 ** -(precision_bits - MARGIN_BITS)``."""
    bits = device.info.precision_bits
    return 2.0 ** -(bits - MARGIN_BITS) if bits is not None else 1e-6


def _is_photonic(device: Any) -> bool:
    return device.info.backend == "photonic"


def _gemm32(device: Any) -> tuple[float, float, float]:
    rng = np.random.default_rng(32)
    a = rng.standard_normal((32, 32)).astype(np.float32)
    b = rng.standard_normal((32, 32)).astype(np.float32)
    res = device.copy_to_host(device.launch("gemm", device.asarray(a), device.asarray(b)))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.linalg.norm(res - ref) / np.linalg.norm(ref))
    return err, tolerance(device), 2.0 * 32 ** 3


def _matvec(device: Any) -> tuple[float, float, float]:
    rng = np.random.default_rng(33)
    a = rng.standard_normal((48, 40)).astype(np.float32)
    x = rng.standard_normal(40).astype(np.float32)
    res = device.copy_to_host(device.launch("matvec", device.asarray(a), device.asarray(x)))
    ref = a.astype(np.float64) @ x.astype(np.float64)
    # One vector is a small sample; allow one more bit than the GEMM check.
    err = float(np.linalg.norm(res - ref) / np.linalg.norm(ref))
    return err, 2.0 * tolerance(device), 2.0 * 48 * 40


def workload_items() -> list[WorkloadItem]:
    return [
        WorkloadItem(name="photonic-gemm-32", applies=_is_photonic, run=_gemm32, tags=("photonic", "gemm")),
        WorkloadItem(name="photonic-matvec-48x40", applies=_is_photonic, run=_matvec, tags=("photonic", "matvec")),
    ]
