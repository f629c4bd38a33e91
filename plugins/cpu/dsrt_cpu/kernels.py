"""numpy implementations of the standard kernel set, writing into preallocated outputs.

Hot dtypes (float32, float64, complex, integers) call numpy ufuncs and BLAS with ``out=`` so no
temporary is made; float16, bfloat16 and fp8 compute in float32 and round once, like the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.device import KernelImpl, Stream
from dsrt.kernels import KERNELS
from dsrt.memory import Allocation
from dsrt.memory.hostmem import host_view as _v
from dsrt.memory.pool import fast_paths_enabled

__all__ = ["TABLE"]


def _by_reference(name: str) -> KernelImpl:
    """Any kernel through its numpy reference (used for low-precision dtypes and rare kernels)."""
    ref = KERNELS[name].reference

    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        _v(out)[...] = ref([_v(a) for a in inputs], params)

    return impl


def _c_ufuncs() -> Any:
    """The C ufunc kernels (``dsrt_cpu._ufunc``, an optional extension) where built and enabled, else None."""
    if not fast_paths_enabled():
        return None
    try:
        from . import _ufunc
    except ImportError:
        return None
    _ufunc.configure(Array, Allocation)
    return _ufunc


_C_UFUNCS = _c_ufuncs()


def _ufunc(name: str, fn: Callable[..., Any]) -> KernelImpl:
    """``fn`` (a numpy ufunc) on the operands' host views; low-precision dtypes through the numpy
    reference. In C where ``dsrt_cpu._ufunc`` is built (same behaviour), else in Python."""
    slow = _by_reference(name)
    low = frozenset({dt.float16, dt.bfloat16, dt.float8_e4m3fn, dt.float8_e5m2})
    nin = 1 if name in ("exp",) else 2
    if _C_UFUNCS is not None:
        return cast(KernelImpl, _C_UFUNCS.UfuncKernel(fn, nin, slow, low, _v))
    if nin == 1:
        def unary(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            x = inputs[0]
            if x.dtype in low:
                slow(inputs, out, params, stream)
            else:
                fn(_v(x), out=_v(out))
        return unary

    def binary(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        a = inputs[0]
        if a.dtype in low:
            slow(inputs, out, params, stream)
        else:
            fn(_v(a), _v(inputs[1]), out=_v(out))
    return binary


_SCALARS: dict[tuple[Any, np.dtype], np.ndarray] = {}


def _scalar_of(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as a read-only 0-d array of the floating or complex ``dtype``, cached: numpy
    converts a Python scalar on every call, which costs more than a small product's scaling."""
    key = (value, dtype)
    s = _SCALARS.get(key)
    if s is None:
        if len(_SCALARS) >= 256:
            _SCALARS.clear()
        s = np.array(value, dtype)
        s.flags.writeable = False
        _SCALARS[key] = s
    return s


def _matmul_into(av: np.ndarray, bv: np.ndarray, o: np.ndarray) -> None:
    """``o[...] = av @ bv`` for matrices (gemm's spec admits only 2-D operands). ``np.dot``'s call
    costs about 60% of ``np.matmul``'s on small operands (same BLAS routine); it refuses an ``out``
    that is not C-contiguous or not of the product's dtype, and then ``np.matmul`` does it."""
    try:
        np.dot(av, bv, out=o)
    except ValueError:
        np.matmul(av, bv, out=o)


def _gemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    a = inputs[0]
    if dt.is_low_precision(a.dtype):
        _by_reference("gemm")(inputs, out, params, stream)
        return
    av = _v(a).T if params["trans_a"] else _v(a)
    bv = _v(inputs[1]).T if params["trans_b"] else _v(inputs[1])
    o = _v(out)
    alpha, beta = params["alpha"], params["beta"]
    if len(inputs) == 3 and beta != 0:
        c = _v(inputs[2])
        prod = np.matmul(av, bv)
        np.multiply(prod, alpha, out=o, casting="unsafe")
        o += (beta * c).astype(o.dtype, copy=False)
        return
    _matmul_into(av, bv, o)
    if alpha != 1:
        # A Python int or float is a weak scalar: numpy converts it to o's dtype, as the cached
        # 0-d array is. A numpy scalar (np.float64(0.1)) keeps its own precision, so it is passed on.
        weak = type(alpha) is float or type(alpha) is int
        scale = _scalar_of(alpha, o.dtype) if weak and o.dtype.kind in "fc" else alpha
        np.multiply(o, scale, out=o, casting="unsafe")


def _qgemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    # int8 x int8 products summed over K fit int32 exactly for K < 2**17; numpy's integer matmul is
    # exact, BLAS in float32 would not be, so widen to int32 and let numpy do it.
    np.matmul(_v(inputs[0]).astype(np.int32), _v(inputs[1]).astype(np.int32), out=_v(out))


def _fill(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    _v(out)[...] = np.asarray(params["value"]).astype(out.dtype)


_ALL = KERNELS["copy"].dtypes


def _table() -> dict[str, tuple[frozenset[str], KernelImpl]]:
    table: dict[str, tuple[frozenset[str], KernelImpl]] = {}
    fast = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
            "maximum": np.maximum, "minimum": np.minimum, "exp": np.exp}
    for name, spec in KERNELS.items():
        if spec.is_task:
            continue
        if name in fast:
            table[name] = (spec.dtypes, _ufunc(name, fast[name]))
        else:
            table[name] = (spec.dtypes, _by_reference(name))
    table["gemm"] = (KERNELS["gemm"].dtypes, _gemm)
    table["qgemm_int8"] = (KERNELS["qgemm_int8"].dtypes, _qgemm)
    table["fill"] = (_ALL, _fill)
    return table


TABLE = _table()
