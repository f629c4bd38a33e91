"""Inputs and cases for the conformance kit: odd sizes, every kernel, values each dtype can hold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..errors import DsrtError
from ..kernels import REQUIRED, KernelSpec

__all__ = ["make_inputs", "kernel_cases", "generic_cases", "GenericCase", "ODD_SIZES", "GEMM_SHAPES"]

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


#: Input shapes :func:`generic_cases` tries for a kernel the kit knows only by its spec, with the number
#: of terms each output element sums (for the tolerance): equal shapes for elementwise kernels, then
#: matrix-vector and matrix-matrix contractions over 33 terms for two-input kernels.
GENERIC_SHAPES: tuple[tuple[int, ...], ...] = (*((n,) for n in ODD_SIZES), (3, 5), (7, 33))
CONTRACTION_SHAPES: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (((7, 33), (33,)), ((7, 33), (33, 5)))


@dataclass(frozen=True)
class GenericCase:
    """One case built from a spec: host ``inputs``, ``params`` (the spec's defaults apply), and
    ``terms``, the number of terms each output element accumulates (1 for elementwise kernels)."""

    inputs: list[np.ndarray]
    params: dict[str, Any]
    terms: int


def generic_cases(spec: KernelSpec, dtype: np.dtype, seed: int = 0) -> tuple[list[GenericCase], str]:
    """Cases for a kernel the kit knows only by its :class:`KernelSpec` (a plugin's own kernel), built
    from the spec alone; or ``([], why not)``.

    Inputs have ``dtype``; there are as many as the spec's minimum arity (at least enough to reach
    ``key_input``). Their shapes are each of :data:`GENERIC_SHAPES` (all inputs alike), then for
    two-input kernels each of :data:`CONTRACTION_SHAPES`; a shape the spec's ``infer`` refuses is left
    out. Params are the spec's defaults. Values are uniform in [-4, 4), or in [0.25, 4) when the
    reference gives non-finite results for mixed signs (a log, a square root...).
    """
    required = sorted(k for k, v in spec.params.items() if v is REQUIRED)
    if required:
        return [], (f"kernel '{spec.name}' has parameter(s) without a default ({', '.join(required)});"
                    " the kit cannot choose their values")
    lo, hi = spec.arity
    nin = max(lo, 1 if spec.key_input is None else spec.key_input + 1)
    if nin == 0 or nin > hi:
        return [], f"kernel '{spec.name}' takes {lo} to {hi} array inputs; the kit cannot choose an output shape"
    rng = np.random.default_rng(seed)
    candidates: list[tuple[tuple[tuple[int, ...], ...], int | None]] = [((s,) * nin, None) for s in GENERIC_SHAPES]
    if nin == 2:
        candidates += [(pair, pair[0][1]) for pair in CONTRACTION_SHAPES]
    cases: list[GenericCase] = []
    refused: list[str] = []
    for shapes, contracted in candidates:
        inputs = [_values(rng, s, dtype) for s in shapes]
        try:
            bound = spec.bind(inputs, {})
            inferred = spec.infer(inputs, bound)
            if inferred is None:
                return [], f"kernel '{spec.name}' returns no array (a task kernel): nothing to compare"
            key = spec.key_dtype(inputs, inferred[1])
            if key != dtype:
                return [], (f"kernel '{spec.name}' selects its implementation by a dtype other than its inputs'"
                            f" ({dt.dtype_name(key)} for {dt.dtype_name(dtype)} inputs)")
            with np.errstate(all="ignore"):
                want = np.asarray(spec.reference(inputs, bound))
                if dt.is_float(want.dtype) and not np.all(np.isfinite(want.astype(np.float64))):
                    inputs = [_values(rng, s, dtype, positive=True) for s in shapes]
        except DsrtError as exc:
            refused.append(f"{' and '.join(str(s) for s in shapes)}: {exc}")
            continue
        out_size = max(1, int(np.prod(inferred[0])))
        terms = contracted if contracted is not None else max(1, int(inputs[0].size) // out_size)
        cases.append(GenericCase(inputs, {}, terms))
    if not cases:
        return [], f"kernel '{spec.name}' refuses every input the kit builds from its spec: " + "; ".join(refused[:3])
    return cases, ""
