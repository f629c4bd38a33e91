"""The dtypes dsrt knows, by name, and the rules kernels use to combine them.

dsrt dtypes *are* ``numpy.dtype`` objects (bfloat16 and the fp8 formats come from ``ml_dtypes``), so
arrays move to and from numpy without translation. Everything here accepts a name (``"bf16"``,
``"bfloat16"``), a numpy dtype, or a scalar type.

Rules:
- ``promote(a, b)``: the smallest standard dtype that holds both (numpy's rule, extended so that
  bfloat16 and fp8 promote to float32 when mixed with anything but themselves).
- ``accumulation_dtype(d)``: what reductions and GEMMs accumulate in: float32 for every float of at
  most 16 bits, int32 for int8/uint8 products (``qgemm_int8``), int64 for other integer sums, and the
  dtype itself otherwise.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from .errors import ConfigurationError

__all__ = [
    "DType",
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "float8_e4m3fn",
    "float8_e5m2",
    "complex64",
    "complex128",
    "STANDARD_DTYPES",
    "FLOAT_DTYPES",
    "INTEGER_DTYPES",
    "as_dtype",
    "dtype_name",
    "promote",
    "accumulation_dtype",
    "is_float",
    "is_integer",
    "is_low_precision",
]

DType = np.dtype

bool_ = np.dtype(np.bool_)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
float16 = np.dtype(np.float16)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
float8_e4m3fn = np.dtype(ml_dtypes.float8_e4m3fn)
float8_e5m2 = np.dtype(ml_dtypes.float8_e5m2)
complex64 = np.dtype(np.complex64)
complex128 = np.dtype(np.complex128)

#: Canonical name -> dtype, in a stable order (used by ``dsrt devices`` and the conformance kit).
STANDARD_DTYPES: dict[str, np.dtype] = {
    "bool": bool_,
    "int8": int8,
    "int16": int16,
    "int32": int32,
    "int64": int64,
    "uint8": uint8,
    "float16": float16,
    "bfloat16": bfloat16,
    "float32": float32,
    "float64": float64,
    "float8_e4m3fn": float8_e4m3fn,
    "float8_e5m2": float8_e5m2,
    "complex64": complex64,
    "complex128": complex128,
}

_ALIASES: dict[str, str] = {
    "bool_": "bool",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "u8": "uint8",
    "half": "float16",
    "fp16": "float16",
    "f16": "float16",
    "bf16": "bfloat16",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "fp64": "float64",
    "f64": "float64",
    "double": "float64",
    "fp8": "float8_e4m3fn",
    "fp8_e4m3": "float8_e4m3fn",
    "float8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
    "c64": "complex64",
    "c128": "complex128",
}

_NAME_OF: dict[np.dtype, str] = {dt: name for name, dt in STANDARD_DTYPES.items()}

FLOAT_DTYPES: frozenset[np.dtype] = frozenset(
    {float16, bfloat16, float32, float64, float8_e4m3fn, float8_e5m2}
)
INTEGER_DTYPES: frozenset[np.dtype] = frozenset({int8, int16, int32, int64, uint8})
_LOW_PRECISION: frozenset[np.dtype] = frozenset({float16, bfloat16, float8_e4m3fn, float8_e5m2})
_ML_FLOATS: frozenset[np.dtype] = frozenset({bfloat16, float8_e4m3fn, float8_e5m2})


def as_dtype(value: Any) -> np.dtype:
    """Return the standard dtype for a name, numpy dtype or scalar type.

    Raises :class:`~dsrt.errors.ConfigurationError` naming the value for anything that is not one of
    :data:`STANDARD_DTYPES`.
    """
    if isinstance(value, np.dtype) and value in _NAME_OF:
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        key = _ALIASES.get(key, key)
        found = STANDARD_DTYPES.get(key)
        if found is not None:
            return found
        raise ConfigurationError(
            f"unknown dtype {value!r}; expected one of: {', '.join(STANDARD_DTYPES)}"
        )
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise ConfigurationError(f"not a dtype: {value!r}") from exc
    if dt.byteorder == ">":
        dt = dt.newbyteorder("=")
    if dt not in _NAME_OF:
        raise ConfigurationError(
            f"dtype {dt} is not a dsrt dtype; expected one of: {', '.join(STANDARD_DTYPES)}"
        )
    return dt


def dtype_name(value: Any) -> str:
    """Canonical name of a dtype (``'bfloat16'``, ``'float32'``)."""
    return _NAME_OF[as_dtype(value)]


def is_float(value: Any) -> bool:
    """True for real floating dtypes, fp8 and bf16 included."""
    return as_dtype(value) in FLOAT_DTYPES


def is_integer(value: Any) -> bool:
    """True for signed and unsigned integer dtypes (not bool)."""
    return as_dtype(value) in INTEGER_DTYPES


def is_low_precision(value: Any) -> bool:
    """True for floats of 16 bits or fewer, which compute through float32."""
    return as_dtype(value) in _LOW_PRECISION


def promote(a: Any, b: Any) -> np.dtype:
    """Result dtype of a binary operation between dtypes ``a`` and ``b``."""
    da, db = as_dtype(a), as_dtype(b)
    if da == db:
        return da
    if da in _ML_FLOATS or db in _ML_FLOATS:
        other = db if da in _ML_FLOATS else da
        if other in (float64, complex64, complex128):
            return np.promote_types(float32, other)
        return float32
    return as_dtype(np.promote_types(da, db))


def accumulation_dtype(value: Any, *, product: bool = False) -> np.dtype:
    """Dtype a reduction (or, with ``product=True``, a dot/GEMM) accumulates in."""
    dt = as_dtype(value)
    if dt in _LOW_PRECISION:
        return float32
    if dt in (int8, uint8) and product:
        return int32
    if dt in INTEGER_DTYPES or dt == bool_:
        return int64
    return dt
