"""The standard kernel set on CUDA through CuPy, on the launch's stream (``_launch`` enters it).

- float32/float64/complex GEMM: ``cupy.matmul`` (cuBLAS); float16 and bfloat16 GEMM: cuBLAS
  ``gemmEx`` with float32 compute (bf16 is held as 16-bit words, CUDA_R_16BF).
- bfloat16 elementwise and reductions: widen to float32 with a conversion kernel, compute, round to
  nearest even once.
- ``qgemm_int8``: exact int32 accumulation (int32 matmul).
fp8 is not claimed: CuPy has no fp8 dtype, and we do not fake it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cupy as cp
import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.device import KernelImpl, Stream
from dsrt.kernels import KERNELS

from .views import cuda_view as _v

__all__ = ["TABLE"]

_bf16_to_f32 = cp.ElementwiseKernel("uint16 x", "float32 y", "y = __uint_as_float(((unsigned int)x) << 16)",
                                    "dsrt_bf16_to_f32")
_f32_to_bf16 = cp.ElementwiseKernel(
    "float32 x", "uint16 y",
    """
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) { y = (unsigned short)((u >> 16) | 0x0040u); }
    else { u += 0x7fffu + ((u >> 16) & 1u); y = (unsigned short)(u >> 16); }
    """,
    "dsrt_f32_to_bf16",
)

_CUDA_R_32F, _CUDA_R_16F, _CUDA_R_16BF = 0, 2, 14
_CUBLAS_COMPUTE_32F = 68
_CUBLAS_GEMM_DEFAULT = -1


def _up(a: Array) -> cp.ndarray:
    """float32 values of an array (widening bf16/fp16), else the view itself."""
    v = _v(a)
    if a.dtype == dt.bfloat16:
        return _bf16_to_f32(v)
    if a.dtype == dt.float16:
        return v.astype(cp.float32)
    return v


def _store(out: Array, value: cp.ndarray) -> None:
    o = _v(out)
    if out.dtype == dt.bfloat16:
        _f32_to_bf16(value.astype(cp.float32, copy=False), o)
    else:
        o[...] = value.astype(o.dtype, copy=False)


def _elementwise(fn: Callable[..., cp.ndarray]) -> KernelImpl:
    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        _store(out, fn(*[_up(a) for a in inputs], params))
    return impl


def _fast_binary(ufunc: Any) -> KernelImpl:
    slow = _elementwise(lambda a, b, p: ufunc(a, b))

    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        if dt.is_low_precision(inputs[0].dtype):
            slow(inputs, out, params, stream)
        else:
            ufunc(_v(inputs[0]), _v(inputs[1]), out=_v(out))
    return impl


def _gemm_ex(a: Array, b: Array, out: Array, params: Mapping[str, Any]) -> None:
    """out = alpha op(a) op(b) for fp16/bf16 with fp32 compute, row-major through column-major cuBLAS."""
    from cupy_backends.cuda.libs import cublas

    kind = _CUDA_R_16BF if a.dtype == dt.bfloat16 else _CUDA_R_16F
    m, n = out.shape
    k = a.shape[0] if params["trans_a"] else a.shape[1]
    # Row-major C = A B is column-major C^T = B^T A^T: swap operands, keep the transposes.
    op_b = cublas.CUBLAS_OP_T if params["trans_b"] else cublas.CUBLAS_OP_N
    op_a = cublas.CUBLAS_OP_T if params["trans_a"] else cublas.CUBLAS_OP_N
    alpha = np.array(params["alpha"], np.float32)
    beta = np.array(0.0, np.float32)
    handle = cp.cuda.device.get_cublas_handle()
    cublas.gemmEx(handle, op_b, op_a, n, m, k, alpha.ctypes.data,
                  _v(b).data.ptr, kind, b.shape[1], _v(a).data.ptr, kind, a.shape[1],
                  beta.ctypes.data, _v(out).data.ptr, kind, n, _CUBLAS_COMPUTE_32F, _CUBLAS_GEMM_DEFAULT)


def _gemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    a, b = inputs[0], inputs[1]
    has_c = len(inputs) == 3 and params["beta"] != 0
    if a.dtype in (dt.float16, dt.bfloat16):
        if has_c:
            av = _up(a).T if params["trans_a"] else _up(a)
            bv = _up(b).T if params["trans_b"] else _up(b)
            _store(out, params["alpha"] * (av @ bv) + params["beta"] * _up(inputs[2]))
        else:
            _gemm_ex(a, b, out, params)
        return
    av = _v(a).T if params["trans_a"] else _v(a)
    bv = _v(b).T if params["trans_b"] else _v(b)
    o = _v(out)
    if has_c:
        o[...] = params["alpha"] * cp.matmul(av, bv) + params["beta"] * _v(inputs[2])
        return
    cp.matmul(av, bv, out=o)
    if params["alpha"] != 1:
        o *= o.dtype.type(params["alpha"])


def _reduce(kind: str) -> KernelImpl:
    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        x = inputs[0]
        acc = dt.accumulation_dtype(x.dtype)
        v = _up(x)
        if kind == "sum":
            res = cp.sum(v.astype(acc if acc != dt.float32 or v.dtype != cp.float32 else v.dtype, copy=False),
                         axis=params["axis"])
        else:
            res = cp.max(v, axis=params["axis"])
        _store(out, cp.asarray(res))
    return impl


def _softmax(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    x = _up(inputs[0]).astype(cp.float32 if dt.is_low_precision(inputs[0].dtype) else _v(inputs[0]).dtype)
    e = cp.exp(x - cp.max(x, axis=-1, keepdims=True))
    _store(out, e / cp.sum(e, axis=-1, keepdims=True))


def _scale_shape(x: Array, scale: cp.ndarray, axis: Any) -> cp.ndarray:
    if axis is None:
        return scale.reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return scale.reshape(shape)


def _quantize(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    x, scale = inputs
    s = _scale_shape(x, _v(scale), params["axis"])
    _v(out)[...] = cp.clip(cp.rint(_up(x).astype(cp.float32) / s), -127, 127).astype(cp.int8)


def _dequantize(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    q, scale = inputs
    _v(out)[...] = _v(q).astype(cp.float32) * _scale_shape(q, _v(scale), params["axis"])


def _qgemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    cp.matmul(_v(inputs[0]).astype(cp.int32), _v(inputs[1]).astype(cp.int32), out=_v(out))


def _fill(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    if out.dtype == dt.bfloat16:
        _store(out, cp.full(out.shape, params["value"], cp.float32))
    else:
        _v(out).fill(params["value"])


def _cast(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    _store(out, _up(inputs[0]))


def _copy(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    _v(out)[...] = _v(inputs[0])


_HELD = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16", "float32", "float64",
                   "complex64", "complex128"})


def _claim(name: str) -> frozenset[str]:
    return KERNELS[name].dtypes & _HELD


TABLE: dict[str, tuple[frozenset[str], KernelImpl]] = {
    "copy": (_claim("copy"), _copy),
    "fill": (_claim("fill"), _fill),
    "cast": (_claim("cast") - {"complex64", "complex128"}, _cast),
    "add": (_claim("add"), _fast_binary(cp.add)),
    "sub": (_claim("sub"), _fast_binary(cp.subtract)),
    "mul": (_claim("mul"), _fast_binary(cp.multiply)),
    "div": (_claim("div"), _fast_binary(cp.true_divide)),
    "maximum": (_claim("maximum"), _fast_binary(cp.maximum)),
    "minimum": (_claim("minimum"), _fast_binary(cp.minimum)),
    "exp": (_claim("exp"), _elementwise(lambda x, p: cp.exp(x))),
    "relu": (_claim("relu"), _elementwise(lambda x, p: cp.maximum(x, 0).astype(x.dtype))),
    "scale": (_claim("scale"), _elementwise(lambda x, p: x * p["alpha"])),
    "axpy": (_claim("axpy"), _elementwise(lambda x, y, p: p["alpha"] * x + y)),
    "reduce_sum": (_claim("reduce_sum"), _reduce("sum")),
    "reduce_max": (_claim("reduce_max"), _reduce("max")),
    "dot": (_claim("dot"), _elementwise(lambda x, y, p: cp.dot(x, y))),
    "gemm": (_claim("gemm"), _gemm),
    "softmax": (_claim("softmax"), _softmax),
    "quantize_int8": (_claim("quantize_int8"), _quantize),
    "dequantize_int8": (_claim("dequantize_int8"), _dequantize),
    "qgemm_int8": (_claim("qgemm_int8"), _qgemm),
}
