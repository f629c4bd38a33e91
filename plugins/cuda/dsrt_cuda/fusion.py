"""Fused kernels for CUDA GPUs: CUDA C generated from the JIT's IR (:mod:`dsrt.jit.ir`), compiled by
CuPy (``cupy.RawKernel``, NVRTC, CuPy's own kernel cache) and launched on the stream's CuPy stream.

Every IR kind is one ``RawKernel`` launch, asynchronous on the stream:

* ``elementwise``: a grid-stride loop over the elements;
* ``reduce``: the prologue computed per element inside the reduction loop. ``axis=-1``: one block per
  row (grid-stride over rows), a shared-memory tree per row. ``axis=None``: a fixed number of blocks
  (a function of the size only, so the result does not depend on the GPU) write partial results to
  a scratch buffer owned by the kernel object; the last block to finish (an atomic counter it resets)
  combines them in a fixed order. Sums accumulate in double, maxima propagate NaN like numpy.
* ``gemm``: a 16x16 shared-memory tiled GEMM (one output element per thread, ``fma`` accumulation in
  the compute type) whose epilogue runs on the value while it is in a register: the GEMM result is
  never written to memory unless the IR stores it.

float16 and bfloat16 are held as 16-bit words, computed in float32 and rounded to their dtype after
every operation (PTX ``cvt.rn`` for float16, round-to-nearest-even on the bits for bfloat16), exactly
as the references store them. ``--fmad=false`` keeps each ``a * b + c`` rounded twice, as numpy does.
Operands are the arrays' CuPy views (:func:`dsrt_cuda.views.cuda_view`). The kernels allocate nothing
when launched and never wait on the host, so a CUDA graph may capture them (:mod:`dsrt_cuda.graphs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cupy as cp
import numpy as np

from dsrt.array import Array
from dsrt.jit.ir import FusedIR, c_load, c_round16, c_store, compute_type, emit_c_body

from .views import cuda_view

__all__ = ["CudaFusion", "NVCC_OPTIONS", "generate", "launch_shape"]

_STORAGE = {"float32": "float", "float64": "double", "float16": "unsigned short", "bfloat16": "unsigned short"}
_BLOCK = 256
_TILE = 16
#: Blocks of a whole-array reduction: at most this many, fixed by the size alone.
REDUCE_PARTS = 256
#: NVRTC options of every generated kernel (no contraction into fused multiply-add).
NVCC_OPTIONS = ("--fmad=false",)

PRELUDE = r"""
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif
__device__ __forceinline__ float jit_bf16_ld(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short jit_bf16_st(float f) {
    unsigned int u = __float_as_uint(f);
    unsigned int r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  /* round to nearest even */
    return (unsigned short)(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : r);  /* NaN stays NaN */
}
__device__ __forceinline__ float jit_f16_ld(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short jit_f16_st(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
"""


_load, _rnd = c_load, c_round16


def _store(ptr: str, idx: str, dtype: str, value: str) -> str:
    return c_store(ptr, idx, dtype, value, _STORAGE)


def _exp(ctype: str, e: str) -> str:
    return f"expf({e})" if ctype == "float" else f"exp({e})"


def _max(a: str, b: str) -> str:
    """``a`` becomes max(a, b); NaN in either sticks (both comparisons false, the sum is NaN)."""
    return f"{a} = ({b} > {a}) ? {b} : (({a} >= {b}) ? {a} : ({b} + {a}));"


def _rows_cols(ir: FusedIR) -> tuple[int, int]:
    n = ir.size
    if ir.reduce is None or ir.reduce.axis is None:
        return 1, n
    cols = ir.shape[-1]
    return (n // cols if cols else 0), cols


def launch_shape(ir: FusedIR, sms: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(grid, block)`` of the kernel of ``ir`` on a GPU with ``sms`` multiprocessors."""
    if ir.gemm is not None:
        g = ir.gemm
        return (-(-g.n // _TILE), -(-g.m // _TILE)), (_TILE, _TILE)
    if ir.reduce is None:
        return (max(1, min(-(-ir.size // _BLOCK), sms * 32)),), (_BLOCK,)
    rows = _rows_cols(ir)[0]
    if ir.reduce.axis is None:
        return (max(1, min(REDUCE_PARTS, -(-ir.size // _BLOCK))),), (_BLOCK,)
    return (max(1, min(rows, sms * 8)),), (_BLOCK,)


def _signature(ir: FusedIR) -> list[str]:
    params = [f"const {_STORAGE[d]}* __restrict__ p{k}" for k, d in enumerate(ir.inputs)]
    params += [f"{_STORAGE[d]}* __restrict__ q{j}" for j, d in enumerate(ir.output_dtypes)]
    return params


def generate(ir: FusedIR) -> str:
    """CUDA C of ``ir``: one ``extern "C"`` kernel named ``ir.name`` taking one pointer per input buffer,
    then per output buffer, then (elementwise) ``n``; (reduce) ``rows, cols`` and, for ``axis=None``, the
    scratch partials and counter; (gemm) nothing more. Launch with :func:`launch_shape`."""
    params = _signature(ir)
    gexpr: Any = None
    if ir.gemm is not None:
        g = ir.gemm
        ct = compute_type(g.dtype)

        def gexpr(c: str) -> str:
            return f"(({c})({float(g.alpha)!r}) * acc)"

        body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp, gemm=gexpr)
        stores = [_store(f"q{j}", "i", ir.output_dtypes[j], f"t{t}") for j, t in enumerate(ir.outputs)]
        a_at = f"p0[(long long)(ka) * {g.m} + row]" if g.trans_a else f"p0[row * {g.k} + (ka)]"
        b_at = f"p1[(long long)(col) * {g.k} + (kb)]" if g.trans_b else f"p1[(long long)(kb) * {g.n} + col]"
        fma = "fmaf" if ct == "float" else "fma"
        inner = "\n        ".join(body + stores)
        return PRELUDE + f"""
extern "C" __global__ void {ir.name}({', '.join(params)}) {{
    __shared__ {ct} As[{_TILE}][{_TILE} + 1];
    __shared__ {ct} Bs[{_TILE}][{_TILE} + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long row = (long long)blockIdx.y * {_TILE} + ty, col = (long long)blockIdx.x * {_TILE} + tx;
    {ct} acc = ({ct})0;
    for (long long k0 = 0; k0 < {g.k}; k0 += {_TILE}) {{
        const long long ka = k0 + tx, kb = k0 + ty;
        As[ty][tx] = (row < {g.m} && ka < {g.k}) ? ({ct}){a_at} : ({ct})0;
        Bs[ty][tx] = (kb < {g.k} && col < {g.n}) ? ({ct}){b_at} : ({ct})0;
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < {_TILE}; ++kk) acc = {fma}(As[ty][kk], Bs[kk][tx], acc);
        __syncthreads();
    }}
    if (row < {g.m} && col < {g.n}) {{
        const long long i = row * {g.n} + col;
        {inner}
    }}
}}
"""
    body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp)
    stores = [_store(f"q{j}", "i", ir.output_dtypes[j], f"t{t}") for j, t in enumerate(ir.outputs)]
    if ir.reduce is None:
        inner = "\n        ".join(body + stores)
        return PRELUDE + f"""
extern "C" __global__ void {ir.name}({', '.join(params)}, long long n) {{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {{
        {inner}
    }}
}}
"""
    red = ir.reduce
    rj = len(ir.output_dtypes) - 1
    t = f"t{red.arg}"
    if red.kernel == "reduce_sum":
        acc_t, init = "double", "0.0"
        combine, merge = f"acc += (double){t};", "sh[tid] += sh[tid + s];"
        merge_part = "acc += part[p];"
    else:
        acc_t = compute_type(ir.ops[red.arg].dtype)
        init = f"(({acc_t})-INFINITY)"
        combine, merge = _max("acc", t), _max("sh[tid]", "sh[tid + s]")
        merge_part = _max("acc", "part[p]")
    inner = "\n            ".join(body + stores)
    tree = f"""sh[tid] = acc;
        __syncthreads();
        for (int s = {_BLOCK // 2}; s > 0; s >>= 1) {{
            if (tid < s) {{ {merge} }}
            __syncthreads();
        }}"""
    if red.axis is not None:
        return PRELUDE + f"""
extern "C" __global__ void {ir.name}({', '.join(params)}, long long rows, long long cols) {{
    __shared__ {acc_t} sh[{_BLOCK}];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {{
        {acc_t} acc = {init};
        for (long long c = tid; c < cols; c += {_BLOCK}) {{
            const long long i = r * cols + c;
            {inner}
            {combine}
        }}
        {tree}
        if (tid == 0) {{ {_store(f"q{rj}", "r", red.dtype, "sh[0]")} }}
        __syncthreads();
    }}
}}
"""
    return PRELUDE + f"""
extern "C" __global__ void {ir.name}({', '.join(params)}, long long rows, long long cols,
                                     {acc_t}* __restrict__ part, unsigned int* __restrict__ count) {{
    __shared__ {acc_t} sh[{_BLOCK}];
    __shared__ bool last;
    const int tid = threadIdx.x;
    const long long n = rows * cols;
    {acc_t} acc = {init};
    for (long long i = (long long)blockIdx.x * {_BLOCK} + tid; i < n; i += (long long)gridDim.x * {_BLOCK}) {{
        {inner}
        {combine}
    }}
    {tree}
    if (tid == 0) {{
        part[blockIdx.x] = sh[0];
        __threadfence();
        last = (atomicAdd(count, 1u) == gridDim.x - 1);
    }}
    __syncthreads();
    if (!last) return;
    __threadfence();
    acc = {init};
    for (unsigned int p = tid; p < gridDim.x; p += {_BLOCK}) {{ {merge_part} }}
    {tree}
    if (tid == 0) {{
        const long long r = 0;
        {_store(f"q{rj}", "r", red.dtype, "sh[0]")}
        *count = 0u;  /* ready for the next launch (launches on one stream are ordered) */
    }}
}}
"""


class _Kernel:
    """A compiled fused kernel: ``run(inputs, outputs, stream)`` enqueues one launch on ``stream``."""

    language = "cu"

    def __init__(self, ir: FusedIR, source: str, kern: Any, sms: int) -> None:
        self.ir, self.source, self.kern, self.name = ir, source, kern, ir.name
        self.grid, self.block = launch_shape(ir, sms)
        self.rows, self.cols = _rows_cols(ir)
        self.extra: tuple[Any, ...] = ()
        if ir.gemm is None:
            self.extra = (np.int64(self.rows), np.int64(self.cols)) if ir.reduce is not None else (np.int64(ir.size),)
        if ir.reduce is not None and ir.reduce.axis is None:
            acc = np.float64 if ir.reduce.kernel == "reduce_sum" or compute_type(ir.ops[ir.reduce.arg].dtype) == \
                "double" else np.float32
            # scratch owned by this kernel object, allocated here (never while a CUDA graph captures)
            self.part = cp.zeros(REDUCE_PARTS, acc)
            self.count = cp.zeros(1, np.uint32)
            self.extra = (*self.extra, self.part, self.count)

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        if self.ir.reduce is not None and self.rows == 0:
            return  # rows of nothing: an empty result
        args = [cuda_view(a) for a in (*inputs, *outputs)]
        with stream.native:
            self.kern(self.grid, self.block, (*args, *self.extra))


class CudaFusion:
    """The CUDA device's ``fused_kernel`` capability: elementwise, reduction and GEMM-epilogue IR in
    float32, float64, float16 and bfloat16 (GEMMs float32/float64), ``None`` for anything else."""

    def __init__(self, sms: int) -> None:
        self.sms = sms

    def __call__(self, ir: FusedIR) -> _Kernel | None:
        dtypes = {*ir.inputs, *ir.output_dtypes, *(o.dtype for o in ir.ops)}
        if not dtypes <= set(_STORAGE):
            return None
        if ir.gemm is not None and ir.gemm.dtype not in ("float32", "float64"):
            return None
        if ir.reduce is not None and ir.reduce.kernel not in ("reduce_sum", "reduce_max"):
            return None
        source = generate(ir)
        kern = cp.RawKernel(source, ir.name, options=NVCC_OPTIONS)
        kern.compile()  # compile and load now: never for the first time inside a graph capture
        return _Kernel(ir, source, kern, self.sms)
