"""Shared by the tests that run workers under a real mpiexec: finding mpiexec, each rank's
contribution, and the dtype-aware comparison against a numpy reference.

The workers run as scripts, so they put this directory on ``sys.path`` before importing it.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Relative tolerance per dtype name of a reduction over a few ranks (others compare exactly).
TOLERANCE = {"float16": 2e-3, "bfloat16": 1.6e-2, "float8_e4m3fn": 0.13, "float8_e5m2": 0.26, "float32": 1e-5,
             "float64": 1e-12, "complex64": 1e-5, "complex128": 1e-12}


def mpiexec_or_skip() -> str:
    """The mpiexec beside this Python (or on PATH); skips the calling test, with the reason, if none."""
    import pytest

    found = Path(sys.executable).with_name("mpiexec")
    exe = str(found) if found.exists() else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not found (pip install dsrt[mpi])")
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install dsrt[mpi])")
    return exe


def contribution(g: int, dtype: np.dtype, n: int, op: str, *, seed: int = 1000, int_high: int = 20) -> np.ndarray:
    """Participant ``g``'s ``n`` values: small integers for products (nothing overflows), else uniform."""
    rng = np.random.default_rng(seed + g)
    if dtype == np.bool_:
        return rng.random(n) < 0.5
    if dtype.kind in "iu":
        lo, hi = (1, 3) if op == "prod" else (0, int_high)
        return rng.integers(lo, hi, n).astype(dtype)
    x = rng.uniform(0.5, 1.5, n) if op == "prod" else rng.uniform(-4, 4, n)
    if dtype.kind == "c":
        x = x + 1j * rng.uniform(-1, 1, n)
    return x.astype(dtype)


def matches(got: np.ndarray, ref: np.ndarray, name: str, *, same_dtype: bool = False) -> bool:
    """``got`` equals ``ref`` within :data:`TOLERANCE` for dtype ``name`` (exactly for the rest)."""
    if same_dtype and got.dtype != ref.dtype:
        return False
    if name not in TOLERANCE:
        return bool(np.array_equal(got, ref))
    g, r = got.astype(np.complex128), ref.astype(np.complex128)
    return bool(np.all(np.abs(g - r) <= TOLERANCE[name] * (np.abs(r) + 1)))


def run_worker(main: Callable[[], int]) -> None:
    """Run a worker's ``main`` and exit with its code; on an exception, print it and leave at once
    (``os._exit``), so a rank that failed does not hang in ``MPI_Finalize`` waiting for the others."""
    try:
        code = main()
    except Exception:  # noqa: BLE001 - report, then leave
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(3)
    sys.exit(code)
