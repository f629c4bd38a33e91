"""Inputs and cases for the conformance kit: odd sizes, every kernel, values each dtype can hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import dtypes as dt

__all__ = ["make_inputs", "kernel_cases", "ODD_SIZES", "GEMM_SHAPES"]

#: Element counts that catch off-by-one work-group and tail handling.
ODD_SIZES = (1, 7, 1023, 4097)
#: (M, K, N) including degenerate and non-square shapes.
GEMM_SHAPES = ((1, 1, 1), (7, 5, 3), (64, 33, 17), (129, 65, 257))


def _values(rng: np.random.Generator, shape: Any, dtype: np.dtype, *, low: float = -4.0, high: float = 4.0,
            positive: bool = False) -> np.ndarray:
    if dtype == dt.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype in dt.INTEGER_DTYPES:
        lo = 0 if (positive or dtype == dt.uint8) else -9
        return rng.integers(lo, 10, size=shape).astype(dtype)
    if dtype in (dt.complex64, dt.complex128):
        re = rng.uniform(low, high, size=shape)
        im = rng.uniform(low, high, size=shape)
        return (re + 1j * im).astype(dtype)
    start = 0.25 if positive else low
    return rng.uniform(start, high, size=shape).astype(np.float32).astype(dtype)


def make_inputs(kernel: str, dtype: np.dtype, case: dict[str, Any], seed: int = 0) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Host inputs and params for one case of ``kernel`` in ``dtype``."""
    rng = np.random.default_rng(seed)
    params = dict(case.get("params", {}))
    if kernel in ("gemm", "qgemm_int8"):
        m, k, n = case["mkn"]
        ta, tb = params.get("trans_a", False), params.get("trans_b", False)
        a = _values(rng, (k, m) if ta else (m, k), dtype, low=-1, high=1)
        b = _values(rng, (n, k) if tb else (k, n), dtype, low=-1, high=1)
        inputs = [a, b]
        if params.get("beta", 0) != 0:
            inputs.append(_values(rng, (m, n), dtype, low=-1, high=1))
        return inputs, params
    shape = case["shape"]
    if kernel == "fill":
        return [], {"value": 3, **params}
    if kernel == "cast":
        return [_values(rng, shape, dtype)], params
    if kernel in ("quantize_int8", "dequantize_int8"):
        axis = params.get("axis")
        channels = 1 if axis is None else shape[axis]
        scale = rng.uniform(0.01, 0.1, size=channels).astype(np.float32)
        if kernel == "quantize_int8":
            # Keep x / scale away from exact .5 ties, where rounding conventions may differ.
            x = (rng.integers(-120, 121, size=shape) + rng.uniform(-0.4, 0.4, size=shape)).astype(np.float32)
            if axis is not None:
                others = tuple(i for i in range(len(shape)) if i != axis % len(shape))
                x = x * np.expand_dims(scale, others)
            else:
                x = x * scale
            x = x.astype(dtype)
            return [x, scale], params
        return [rng.integers(-127, 128, size=shape).astype(np.int8), scale], params
    if kernel in ("div",):
        return [_values(rng, shape, dtype), _values(rng, shape, dtype, positive=True)], params
    if kernel == "exp":
        return [_values(rng, shape, dtype, low=-3, high=3)], params
    nin = {"copy": 1, "relu": 1, "scale": 1, "reduce_sum": 1, "reduce_max": 1, "softmax": 1}.get(kernel, 2)
    return [_values(rng, shape, dtype) for _ in range(nin)], params


def kernel_cases(kernel: str) -> Iterator[dict[str, Any]]:
    """The cases the kit runs for a standard kernel (shapes and params)."""
    if kernel == "gemm":
        for mkn in GEMM_SHAPES:
            yield {"mkn": mkn}
        yield {"mkn": (33, 17, 9), "params": {"trans_a": True}}
        yield {"mkn": (33, 17, 9), "params": {"trans_b": True, "alpha": 0.5}}
        yield {"mkn": (33, 17, 9), "params": {"trans_a": True, "trans_b": True, "alpha": 2.0, "beta": 0.5}}
        return
    if kernel == "qgemm_int8":
        for mkn in ((1, 1, 1), (7, 33, 5), (65, 129, 33)):
            yield {"mkn": mkn}
        return
    if kernel in ("reduce_sum", "reduce_max"):
        for n in ODD_SIZES:
            yield {"shape": (n,)}
        yield {"shape": (7, 1023), "params": {"axis": -1}}
        yield {"shape": (3, 5, 7), "params": {"axis": -1}}
        return
    if kernel == "softmax":
        yield {"shape": (1, 1)}
        yield {"shape": (7, 1023)}
        yield {"shape": (5, 4097)}
        return
    if kernel in ("quantize_int8", "dequantize_int8"):
        yield {"shape": (1023,)}
        yield {"shape": (7, 33), "params": {"axis": 0}}
        yield {"shape": (7, 33), "params": {"axis": 1}}
        return
    if kernel == "dot":
        for n in ODD_SIZES:
            yield {"shape": (n,)}
        return
    if kernel == "fill":
        for n in ODD_SIZES:
            yield {"shape": (n,), "params": {"shape": (n,)}}
        return
    if kernel in ("scale", "axpy"):
        for n in ODD_SIZES:
            yield {"shape": (n,), "params": {"alpha": 0.75}}
        return
    for n in ODD_SIZES:
        yield {"shape": (n,)}
    yield {"shape": (3, 5)}
