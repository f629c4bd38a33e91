"""Accuracy rules shared by the conformance kit and the scheduler (base layer: dtypes only).

:func:`tolerance` is the largest relative error a result of a dtype may carry and still count as
exact to that dtype; placement uses it as the default accuracy a task needs, the kit as its pass
mark. :func:`relative_error` is how both measure it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import dsrt.dtypes as dt

__all__ = ["tolerance", "relative_error"]


def tolerance(dtype: Any, *, accumulate: int = 1) -> float:
    """Largest acceptable relative error for results of ``dtype`` summing ``accumulate`` terms."""
    d = dt.as_dtype(dtype)
    if d in dt.INTEGER_DTYPES or d == dt.bool_:
        return 0.0
    eps = {
        dt.float64: 2.0**-52, dt.complex128: 2.0**-52, dt.float32: 2.0**-23, dt.complex64: 2.0**-23,
        dt.float16: 2.0**-10, dt.bfloat16: 2.0**-7, dt.float8_e4m3fn: 2.0**-3, dt.float8_e5m2: 2.0**-2,
    }[d]
    # Rounding of the output (one ulp) plus accumulation error that grows like sqrt(K) in practice.
    return float(4 * eps * (1 + math.sqrt(accumulate)))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(|want|), computed in float64 (0 for exact integer equality)."""
    g = np.asarray(got).astype(np.complex128 if np.iscomplexobj(want) else np.float64)
    w = np.asarray(want).astype(g.dtype)
    if g.shape != w.shape:
        return math.inf
    if g.size == 0:
        return 0.0
    diff = np.max(np.abs(g - w))
    scale = np.max(np.abs(w))
    if diff == 0:
        return 0.0
    return float(diff / scale) if scale > 0 else float(diff)
