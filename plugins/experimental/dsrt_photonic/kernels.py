"""The ``matvec`` kernel spec (registered through ``dsrt_register_kernels``) and the photonic launches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.errors import ShapeError
from dsrt.kernels import KERNELS, ArrayLike, KernelSpec, register_kernel

__all__ = ["MATVEC", "ensure_registered"]

_FLOATS = frozenset({"float32", "float64"})


def _matvec_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    a, x = inputs
    if dt.dtype_name(a.dtype) not in _FLOATS:
        raise ShapeError(f"kernel 'matvec' takes float32 or float64, got {dt.dtype_name(a.dtype)}")
    if len(a.shape) != 2 or len(x.shape) != 1:
        raise ShapeError(f"kernel 'matvec' needs a 2-D matrix and a 1-D vector, got {tuple(a.shape)} and {tuple(x.shape)}")
    if a.shape[1] != x.shape[0]:
        raise ShapeError(f"kernel 'matvec': matrix {a.shape[0]}x{a.shape[1]} cannot multiply a vector of {x.shape[0]}")
    if a.dtype != x.dtype:
        raise ShapeError("kernel 'matvec': dtypes of a and x differ; cast one first")
    return (int(a.shape[0]),), a.dtype


def _matvec_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    a, x = inputs
    return (a.astype(np.float64) @ x.astype(np.float64)).astype(a.dtype)


MATVEC = KernelSpec(
    name="matvec", doc="y = a @ x for a 2-D matrix a (m x k) and a 1-D vector x (k)", arity=(2, 2), params={},
    infer=_matvec_infer, reference=_matvec_ref, dtypes=_FLOATS,
    flops=lambda inputs, params: 2.0 * inputs[0].shape[0] * inputs[0].shape[1],
)


def ensure_registered() -> None:
    """Register ``matvec`` if no runtime has yet (devices built directly, e.g. in tests)."""
    if "matvec" not in KERNELS:
        register_kernel(MATVEC)
