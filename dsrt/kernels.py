"""The standard kernel set: names, signatures, dtype rules and the numpy reference of each.

A kernel is described by a :class:`KernelSpec`; backends implement the specs they can, for the dtypes
they declare in ``DeviceInfo.kernels``. The numpy reference is the definition of correct: the
conformance kit compares every backend against it. Users add kernels with :func:`register_kernel`,
and backends add implementations for them with ``Device.add_kernel``.

Conventions shared by every standard kernel:

- Inputs of an elementwise kernel have equal shapes and equal dtypes (no implicit broadcasting or
  promotion; ``cast`` first). Arrays are C-contiguous unless a device says it accepts strides.
- float16, bfloat16 and fp8 compute in float32 and round once to the output dtype; reductions and
  GEMMs accumulate in :func:`dsrt.dtypes.accumulation_dtype`.
- ``reduce_sum``/``reduce_max`` take ``axis=None`` (everything, result shape ``()``) or ``axis=-1``
  (the last axis). ``softmax`` works over the last axis.
- ``quantize_int8`` is symmetric: ``q = clip(rint(x / scale), -127, 127)``; ``scale`` is a float32
  array of one element (per tensor) or of ``x.shape[axis]`` elements (per channel along ``axis``).
- ``qgemm_int8`` multiplies int8 matrices and accumulates exactly in int32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

import dsrt.dtypes as dt

from .errors import ConfigurationError, ShapeError

__all__ = [
    "KernelSpec",
    "ArrayLike",
    "KERNELS",
    "STANDARD_KERNELS",
    "register_kernel",
    "get_kernel",
    "reference",
]


class ArrayLike(Protocol):
    """Anything with a shape and a dtype (a dsrt Array or a numpy array)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...


InferFn = Callable[[Sequence[Any], Mapping[str, Any]], "tuple[tuple[int, ...], np.dtype] | None"]
ReferenceFn = Callable[[Sequence[np.ndarray], Mapping[str, Any]], np.ndarray]


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel is, independent of any device.

    ``arity`` is the accepted number of array inputs (min, max). ``params`` maps each keyword
    parameter to its default (:data:`REQUIRED` for none). ``infer(inputs, params)`` validates
    shapes/dtypes and returns the output ``(shape, dtype)``, raising :class:`ShapeError` with what
    is wrong. ``reference(inputs, params)`` computes the result with numpy. ``dtypes`` are the dtype
    names the kernel is defined for; ``key_input`` is the input whose dtype selects the
    implementation (``None``: the output's dtype, as for ``fill``). ``flops(inputs, params)``
    estimates floating-point (or integer) operations, for throughput figures and cost models.
    ``elementwise``: each output element depends only on the inputs' elements at its own index, so
    ``out=`` may be exactly one of the inputs (same memory, same layout); any other overlap of
    ``out`` with an input runs through a temporary (see :meth:`dsrt.Device.launch`).
    """

    name: str
    doc: str
    arity: tuple[int, int]
    params: Mapping[str, Any]
    infer: InferFn
    reference: ReferenceFn
    dtypes: frozenset[str]
    key_input: int | None = 0
    flops: Callable[[Sequence[ArrayLike], Mapping[str, Any]], float] = field(
        default=lambda inputs, params: float(np.prod(inputs[0].shape)) if inputs else 0.0
    )
    elementwise: bool = False

    def bind(self, inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> dict[str, Any]:
        """Check arity and parameter names; return params with defaults filled in."""
        lo, hi = self.arity
        if not lo <= len(inputs) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ShapeError(f"kernel '{self.name}' takes {want} array inputs, got {len(inputs)}")
        bound = dict(self.params)
        for key, value in params.items():
            if key not in bound:
                known = ", ".join(self.params) or "none"
                raise ConfigurationError(f"kernel '{self.name}' has no parameter '{key}' (parameters: {known})")
            bound[key] = value
        missing = [k for k, v in bound.items() if v is REQUIRED]
        if missing:
            raise ConfigurationError(f"kernel '{self.name}' needs parameter(s): {', '.join(missing)}")
        return bound

    @property
    def is_task(self) -> bool:
        """True for task kernels (results that are not arrays; support checked by name only)."""
        return not self.dtypes

    def key_dtype(self, inputs: Sequence[ArrayLike], out_dtype: np.dtype) -> np.dtype:
        """The dtype whose support decides whether a device can run this launch."""
        return out_dtype if self.key_input is None else inputs[self.key_input].dtype


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

KERNELS: dict[str, KernelSpec] = {}


def register_kernel(spec: KernelSpec, *, replace: bool = False) -> KernelSpec:
    """Add a kernel to the registry (users and plugins). Refuses to shadow a name unless ``replace``."""
    if spec.name in KERNELS and not replace:
        raise ConfigurationError(f"kernel '{spec.name}' is already registered")
    KERNELS[spec.name] = spec
    return spec


def get_kernel(name: str) -> KernelSpec:
    """Look up a kernel spec by name; the error lists the known names."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown kernel '{name}'; known kernels: {', '.join(sorted(KERNELS))}"
        ) from None


def reference(name: str, *inputs: np.ndarray, **params: Any) -> np.ndarray:
    """Run the numpy reference of kernel ``name`` (defaults filled in)."""
    spec = get_kernel(name)
    return spec.reference(inputs, spec.bind(inputs, params))


# --- dtype groups ---------------------------------------------------------------------------------

_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"})
_COMPLEX = frozenset({"complex64", "complex128"})
_INTS = frozenset({"int8", "int16", "int32", "int64", "uint8"})
_SIGNED_INTS = frozenset({"int8", "int16", "int32", "int64"})
_ALL = frozenset(dt.STANDARD_DTYPES)
_NUMERIC = _FLOATS | _COMPLEX | _INTS


def _compute_dtype(d: np.dtype) -> np.dtype:
    return dt.float32 if dt.is_low_precision(d) else d


def _up(x: np.ndarray) -> np.ndarray:
    """Widen low-precision floats to float32 for computing."""
    return x.astype(np.float32) if dt.is_low_precision(x.dtype) else x


def _check_dtype(spec_name: str, allowed: frozenset[str], d: np.dtype, what: str = "input") -> None:
    if dt.dtype_name(d) not in allowed:
        raise ShapeError(
            f"kernel '{spec_name}' does not accept {what} dtype {dt.dtype_name(d)}"
            f" (accepted: {', '.join(sorted(allowed))})"
        )


def _same(name: str, allowed: frozenset[str]) -> InferFn:
    def infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
        first = inputs[0]
        _check_dtype(name, allowed, first.dtype)
        for other in inputs[1:]:
            if tuple(other.shape) != tuple(first.shape):
                raise ShapeError(f"kernel '{name}': shapes {tuple(first.shape)} and {tuple(other.shape)} differ")
            if other.dtype != first.dtype:
                raise ShapeError(
                    f"kernel '{name}': dtypes {dt.dtype_name(first.dtype)} and {dt.dtype_name(other.dtype)}"
                    " differ; cast one first"
                )
        return tuple(first.shape), first.dtype

    return infer


def _elementwise(name: str, fn: Callable[..., np.ndarray], allowed: frozenset[str], doc: str, **params: Any) -> None:
    nin = fn.__code__.co_argcount - (1 if params else 0)

    def ref(inputs: Sequence[np.ndarray], p: Mapping[str, Any]) -> np.ndarray:
        out_dtype = inputs[0].dtype
        args = [_up(np.asarray(x)) for x in inputs]
        res = fn(*args, p) if params else fn(*args)
        return np.asarray(res).astype(out_dtype)

    register_kernel(
        KernelSpec(name=name, doc=doc, arity=(nin, nin), params=params, infer=_same(name, allowed),
                   reference=ref, dtypes=allowed, elementwise=True)
    )


# --- elementwise ----------------------------------------------------------------------------------

_elementwise("copy", lambda x: x.copy(), _ALL, "out = x")
_elementwise("add", lambda a, b: a + b, _NUMERIC, "out = a + b")
_elementwise("sub", lambda a, b: a - b, _NUMERIC, "out = a - b")
_elementwise("mul", lambda a, b: a * b, _NUMERIC, "out = a * b")
_elementwise("div", lambda a, b: a / b, _FLOATS | _COMPLEX, "out = a / b (floating dtypes only)")
_elementwise("maximum", lambda a, b: np.maximum(a, b), _FLOATS | _INTS, "out = max(a, b), NaN propagates")
_elementwise("minimum", lambda a, b: np.minimum(a, b), _FLOATS | _INTS, "out = min(a, b), NaN propagates")
_elementwise("exp", lambda x: np.exp(x), _FLOATS | _COMPLEX, "out = e ** x")
_elementwise("relu", lambda x: np.maximum(x, np.zeros((), x.dtype)), _FLOATS | _SIGNED_INTS, "out = max(x, 0)")
_elementwise("scale", lambda x, p: x * p["alpha"], _FLOATS | _COMPLEX, "out = alpha * x", alpha=REQUIRED)
_elementwise("axpy", lambda x, y, p: p["alpha"] * x + y, _FLOATS | _COMPLEX, "out = alpha * x + y", alpha=REQUIRED)


# --- fill and cast --------------------------------------------------------------------------------

def _fill_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    if params["shape"] is None or params["dtype"] is None:
        raise ShapeError("kernel 'fill' needs out=, or shape= and dtype=")
    shape = params["shape"]
    dims = () if shape == () else tuple(int(s) for s in np.atleast_1d(shape))
    return dims, dt.as_dtype(params["dtype"])


def _fill_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    shape, d = _fill_infer(inputs, params)
    return np.full(shape, params["value"], dtype=d)


register_kernel(KernelSpec(
    name="fill", doc="out[...] = value", arity=(0, 0), params={"value": REQUIRED, "shape": None, "dtype": None},
    infer=_fill_infer, reference=_fill_ref, dtypes=_ALL, key_input=None,
    flops=lambda inputs, params: 0.0,
))


def _cast_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(inputs[0].shape), dt.as_dtype(params["dtype"])


def _cast_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    target = dt.as_dtype(params["dtype"])
    x = inputs[0]
    # ml_dtypes casts between two of its own formats through float32 exactly like a device would.
    if dt.is_low_precision(x.dtype) and dt.is_low_precision(target):
        return x.astype(np.float32).astype(target)
    return x.astype(target)


register_kernel(KernelSpec(
    name="cast", doc="out = x converted to dtype (round to nearest even; saturation is numpy's)",
    arity=(1, 1), params={"dtype": REQUIRED}, infer=_cast_infer, reference=_cast_ref, dtypes=_ALL,
))


# --- reductions -----------------------------------------------------------------------------------

def _axis(name: str, x: ArrayLike, axis: Any) -> tuple[int, ...]:
    if axis is None:
        return ()
    if axis not in (-1, len(x.shape) - 1) or len(x.shape) == 0:
        raise ShapeError(f"kernel '{name}': axis must be None or -1 (the last axis), got {axis!r}")
    return tuple(x.shape[:-1])


def _reduce_infer(name: str, allowed: frozenset[str]) -> InferFn:
    def infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
        x = inputs[0]
        _check_dtype(name, allowed, x.dtype)
        if int(np.prod(x.shape)) == 0 and name == "reduce_max":
            raise ShapeError("kernel 'reduce_max' of an empty array has no result")
        shape = _axis(name, x, params["axis"])
        out = x.dtype
        if name == "reduce_sum" and x.dtype in dt.INTEGER_DTYPES:
            out = dt.int64
        return shape, out

    return infer


def _reduce_sum_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    x = inputs[0]
    acc = dt.accumulation_dtype(x.dtype)
    out_dtype = dt.int64 if x.dtype in dt.INTEGER_DTYPES else x.dtype
    return np.asarray(np.sum(x.astype(acc), axis=params["axis"])).astype(out_dtype)


def _reduce_max_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    x = inputs[0]
    return np.asarray(np.max(_up(x), axis=params["axis"])).astype(x.dtype)


register_kernel(KernelSpec(
    name="reduce_sum", doc="sum over all elements (axis=None) or the last axis (axis=-1)",
    arity=(1, 1), params={"axis": None}, infer=_reduce_infer("reduce_sum", _NUMERIC),
    reference=_reduce_sum_ref, dtypes=_NUMERIC,
))
register_kernel(KernelSpec(
    name="reduce_max", doc="maximum over all elements (axis=None) or the last axis (axis=-1)",
    arity=(1, 1), params={"axis": None}, infer=_reduce_infer("reduce_max", _FLOATS | _INTS),
    reference=_reduce_max_ref, dtypes=_FLOATS | _INTS,
))


def _dot_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    x, y = inputs
    _check_dtype("dot", _FLOATS | _COMPLEX, x.dtype)
    if len(x.shape) != 1 or tuple(x.shape) != tuple(y.shape):
        raise ShapeError(f"kernel 'dot' needs two 1-D arrays of equal length, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise ShapeError("kernel 'dot': dtypes differ; cast one first")
    return (), x.dtype


def _dot_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    x, y = inputs
    acc = dt.accumulation_dtype(x.dtype, product=True)
    return np.asarray(np.dot(x.astype(acc), y.astype(acc))).astype(x.dtype)


register_kernel(KernelSpec(
    name="dot", doc="sum(x * y) of two vectors (no conjugation)", arity=(2, 2), params={},
    infer=_dot_infer, reference=_dot_ref, dtypes=_FLOATS | _COMPLEX,
    flops=lambda inputs, params: 2.0 * inputs[0].shape[0],
))


# --- GEMM -----------------------------------------------------------------------------------------

def _gemm_dims(name: str, inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[int, int, int]:
    a, b = inputs[0], inputs[1]
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ShapeError(f"kernel '{name}' needs 2-D matrices, got {tuple(a.shape)} and {tuple(b.shape)}")
    m, k = (a.shape[1], a.shape[0]) if params.get("trans_a") else (a.shape[0], a.shape[1])
    k2, n = (b.shape[1], b.shape[0]) if params.get("trans_b") else (b.shape[0], b.shape[1])
    if k != k2:
        raise ShapeError(f"kernel '{name}': inner dimensions differ ({m}x{k} times {k2}x{n})")
    return int(m), int(k), int(n)


def _gemm_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    a, b = inputs[0], inputs[1]
    _check_dtype("gemm", _FLOATS | _COMPLEX, a.dtype)
    if a.dtype != b.dtype:
        raise ShapeError("kernel 'gemm': dtypes of a and b differ; cast one first")
    m, _, n = _gemm_dims("gemm", inputs, params)
    if len(inputs) == 3:
        c = inputs[2]
        if tuple(c.shape) != (m, n) or c.dtype != a.dtype:
            raise ShapeError(f"kernel 'gemm': c must be {m}x{n} {dt.dtype_name(a.dtype)}, got {tuple(c.shape)}")
    elif params["beta"] != 0:
        raise ShapeError("kernel 'gemm': beta != 0 needs a third input c")
    return (m, n), a.dtype


def _gemm_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    a, b = inputs[0], inputs[1]
    acc = dt.accumulation_dtype(a.dtype, product=True)
    aa = a.astype(acc).T if params["trans_a"] else a.astype(acc)
    bb = b.astype(acc).T if params["trans_b"] else b.astype(acc)
    res = params["alpha"] * (aa @ bb)
    if len(inputs) == 3 and params["beta"] != 0:
        res = res + params["beta"] * inputs[2].astype(acc)
    return np.asarray(res).astype(a.dtype)


def _gemm_flops(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> float:
    m, k, n = _gemm_dims("gemm", inputs, params)
    return 2.0 * m * n * k


register_kernel(KernelSpec(
    name="gemm", doc="out = alpha * op(a) @ op(b) + beta * c, op = transpose when trans_a/trans_b",
    arity=(2, 3), params={"alpha": 1.0, "beta": 0.0, "trans_a": False, "trans_b": False},
    infer=_gemm_infer, reference=_gemm_ref, dtypes=_FLOATS | _COMPLEX, flops=_gemm_flops,
))


def _softmax_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    x = inputs[0]
    _check_dtype("softmax", _FLOATS, x.dtype)
    _axis("softmax", x, params["axis"] if params["axis"] is not None else -1)
    return tuple(x.shape), x.dtype


def _softmax_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    x = _up(inputs[0])
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return (e / np.sum(e, axis=-1, keepdims=True)).astype(inputs[0].dtype)


register_kernel(KernelSpec(
    name="softmax", doc="exp(x - max) / sum(exp(x - max)) over the last axis", arity=(1, 1),
    params={"axis": -1}, infer=_softmax_infer, reference=_softmax_ref, dtypes=_FLOATS,
    flops=lambda inputs, params: 5.0 * float(np.prod(inputs[0].shape)),
))


# --- int8 quantization ----------------------------------------------------------------------------

def _scale_shape(name: str, x: ArrayLike, scale: ArrayLike, axis: Any) -> None:
    if scale.dtype != dt.float32:
        raise ShapeError(f"kernel '{name}': scale must be float32, got {dt.dtype_name(scale.dtype)}")
    n = int(np.prod(scale.shape))
    if axis is None:
        if n != 1:
            raise ShapeError(f"kernel '{name}': per-tensor scale must have 1 element, got {n} (pass axis= for per-channel)")
        return
    if not -len(x.shape) <= axis < len(x.shape):
        raise ShapeError(f"kernel '{name}': axis {axis} out of range for shape {tuple(x.shape)}")
    if n != x.shape[axis]:
        raise ShapeError(f"kernel '{name}': per-channel scale has {n} elements, axis {axis} has {x.shape[axis]}")


def _broadcast_scale(x: np.ndarray, scale: np.ndarray, axis: Any) -> np.ndarray:
    if axis is None:
        return scale.reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return scale.reshape(shape)


def _quant_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    x, scale = inputs
    _check_dtype("quantize_int8", _FLOATS, x.dtype)
    _scale_shape("quantize_int8", x, scale, params["axis"])
    return tuple(x.shape), dt.int8


def _quant_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    x, scale = inputs
    s = _broadcast_scale(x, scale.astype(np.float32), params["axis"])
    return np.clip(np.rint(_up(x).astype(np.float32) / s), -127, 127).astype(np.int8)


def _dequant_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    q, scale = inputs
    _check_dtype("dequantize_int8", frozenset({"int8"}), q.dtype)
    _scale_shape("dequantize_int8", q, scale, params["axis"])
    return tuple(q.shape), dt.float32


def _dequant_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    q, scale = inputs
    return (q.astype(np.float32) * _broadcast_scale(q, scale.astype(np.float32), params["axis"])).astype(np.float32)


register_kernel(KernelSpec(
    name="quantize_int8", doc="q = clip(rint(x / scale), -127, 127) as int8; scale per tensor or per channel",
    arity=(2, 2), params={"axis": None}, infer=_quant_infer, reference=_quant_ref, dtypes=_FLOATS,
))
register_kernel(KernelSpec(
    name="dequantize_int8", doc="x = q * scale as float32; scale per tensor or per channel",
    arity=(2, 2), params={"axis": None}, infer=_dequant_infer, reference=_dequant_ref,
    dtypes=frozenset({"int8"}),
))


def _qgemm_infer(inputs: Sequence[ArrayLike], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    a, b = inputs
    if a.dtype != dt.int8 or b.dtype != dt.int8:
        raise ShapeError("kernel 'qgemm_int8' needs int8 inputs")
    m, _, n = _gemm_dims("qgemm_int8", inputs, {})
    return (m, n), dt.int32


def _qgemm_ref(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    a, b = inputs
    return (a.astype(np.int32) @ b.astype(np.int32)).astype(np.int32)


register_kernel(KernelSpec(
    name="qgemm_int8", doc="out = a @ b for int8 a, b with exact int32 accumulation", arity=(2, 2), params={},
    infer=_qgemm_infer, reference=_qgemm_ref, dtypes=frozenset({"int8"}),
    flops=lambda inputs, params: 2.0 * inputs[0].shape[0] * inputs[0].shape[1] * inputs[1].shape[1],
))

#: The names every backend is measured against (user kernels are added to KERNELS, not here).
STANDARD_KERNELS: tuple[str, ...] = tuple(KERNELS)
