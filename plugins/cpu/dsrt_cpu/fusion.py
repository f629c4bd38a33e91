"""Fused kernels for the CPU: C generated from the JIT's IR (:mod:`dsrt.jit.ir`), compiled with the
system C compiler, cached on disk by :class:`dsrt.kernel_cache.KernelCache` (through
:class:`~dsrt_cpu.compiler.CCompiler`) and called through cffi.

Loops are written so GCC vectorises them (``-O3 -march=native``; ``exp`` is a branch-free polynomial,
:func:`EXP_F32`, accurate to about one float32 ulp) and spread over every core with OpenMP
(``-fopenmp``) above :data:`PARALLEL_MIN` elements; where the compiler has no OpenMP the loops run on
the calling thread. ``-ffp-contract=off`` keeps each operation rounded as numpy rounds it (no fused
multiply-add), so float32 results match the eager kernels except for ``exp``. float16 and bfloat16 are
computed in float32 and rounded to their dtype after every operation, like the references.

Kernels run synchronously on the launching thread; a GEMM group multiplies row panels with numpy's
BLAS into a scratch panel (owned by the kernel object) and applies the generated epilogue to each
panel while it is in cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.errors import KernelCompileError
from dsrt.jit.ir import FusedIR, c_load, c_round16, c_store, compute_type, emit_c_body
from dsrt.memory.hostmem import host_view

if TYPE_CHECKING:
    from .compiler import CCompiler

__all__ = ["CpuFusion", "PARALLEL_MIN", "generate"]

#: Elements below which a generated loop runs on the calling thread (a parallel region costs microseconds).
PARALLEL_MIN = 1 << 15
#: Fixed number of partial sums of a whole-array reduction: the result does not depend on thread count.
REDUCE_CHUNKS = 64

_STORAGE = {"float32": "float", "float64": "double", "float16": "uint16_t", "bfloat16": "uint16_t"}

PRELUDE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float jit_bf16_ld(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t jit_bf16_st(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;          /* round to nearest even */
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : r);  /* NaN stays NaN */
}
static inline float jit_f16_ld(uint16_t h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
static inline uint16_t jit_f16_st(float f) { _Float16 x = (_Float16)f; uint16_t h; memcpy(&h, &x, 2); return h; }
"""

#: e**x in float32 without branches: x = n ln2 + r (|r| <= ln2/2, ln2 split in two so n*ln2_hi is
#: exact), e**r by its degree-7 Taylor polynomial (truncation below 0.05 ulp), times 2**n applied in
#: two halves so results down to the subnormals round once. NaN propagates, overflow gives inf.
EXP_F32 = r"""
static inline float jit_expf(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = (x != x) ? 0.0f : xc;
    float n = __builtin_rintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440054690583e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t h = ni >> 1;
    uint32_t b1 = (uint32_t)(h + 127) << 23, b2 = (uint32_t)(ni - h + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float res = p * s1 * s2;
    return (x != x) ? x : res;
}
"""


_load, _rnd = c_load, c_round16


def _store(ptr: str, idx: str, dtype: str, value: str) -> str:
    return c_store(ptr, idx, dtype, value, _STORAGE)


def _exp(ctype: str, e: str) -> str:
    return f"jit_expf({e})" if ctype == "float" else f"exp({e})"


def generate(ir: FusedIR) -> str:
    """The C source of ``ir``: one exported function named ``ir.name`` taking one ``void *`` per input
    buffer, then per output buffer, then the extents (``n`` elements; a reduction: ``rows``, ``cols``;
    a GEMM epilogue: the panel of GEMM values as its last pointer)."""
    name = ir.name
    params = [f"void *a{k}" for k in range(len(ir.inputs))] + [f"void *o{j}" for j in range(len(ir.output_dtypes))]
    decls = []
    first_load = 2 if ir.gemm is not None else 0
    for k, d in enumerate(ir.inputs):
        if k >= first_load:
            decls.append(f"const {_STORAGE[d]} *restrict p{k} = (const {_STORAGE[d]} *)a{k};")
    for j, d in enumerate(ir.output_dtypes):
        decls.append(f"{_STORAGE[d]} *restrict q{j} = ({_STORAGE[d]} *)o{j};")
    gexpr: Any = None
    if ir.gemm is not None:
        params.append("void *gp")
        g = _STORAGE[ir.gemm.dtype]
        decls.append(f"const {g} *restrict gv = (const {g} *)gp;")
        def gexpr(c: str) -> str:
            return "gv[i]"
    body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp, gemm=gexpr)
    stores = [_store(f"q{j}", "i", ir.output_dtypes[j], f"t{t}") for j, t in enumerate(ir.outputs)]
    inner = "\n            ".join(body + stores)
    src = [PRELUDE, EXP_F32]
    # A GEMM epilogue runs on row panels right after BLAS, whose threads still spin: stay serial.
    par_min = PARALLEL_MIN if ir.gemm is None else 1 << 62
    if ir.reduce is None:
        params.append("int64_t n")
        src.append(f"""
void {name}({', '.join(params)}) {{
    {' '.join(decls)}
    if (n >= {par_min}) {{
        #pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) {{
            {inner}
        }}
    }} else {{
        for (int64_t i = 0; i < n; ++i) {{
            {inner}
        }}
    }}
}}
""")
        return "".join(src)
    red = ir.reduce
    rj = len(ir.output_dtypes) - 1
    t = f"t{red.arg}"
    ct = compute_type(ir.ops[red.arg].dtype)
    if red.kernel == "reduce_sum":
        acc_t, init, combine, merge = "double", "0.0", f"acc += (double){t};", "acc += part[ch];"
        pragma = "#pragma omp simd reduction(+:acc)"
    else:
        acc_t, init = ct, f"(({ct})-INFINITY)"
        combine = f"acc = ({t} > acc) ? {t} : ((acc >= {t}) ? acc : ({t} + acc));"  # NaN sticks
        merge = "acc = (part[ch] > acc) ? part[ch] : ((acc >= part[ch]) ? acc : (part[ch] + acc));"
        pragma = ""
    result = _store(f"q{rj}", "r", red.dtype, "acc")
    params += ["int64_t rows", "int64_t cols"]
    if red.axis is None:
        src.append(f"""
void {name}({', '.join(params)}) {{
    {' '.join(decls)}
    int64_t n = rows * cols;
    int64_t nch = n >= {PARALLEL_MIN} ? {REDUCE_CHUNKS} : 1;
    {acc_t} part[{REDUCE_CHUNKS}];
    #pragma omp parallel for schedule(static) if (nch > 1)
    for (int64_t ch = 0; ch < nch; ++ch) {{
        int64_t lo = n * ch / nch, hi = n * (ch + 1) / nch;
        {acc_t} acc = {init};
        {pragma}
        for (int64_t i = lo; i < hi; ++i) {{
            {inner}
            {combine}
        }}
        part[ch] = acc;
    }}
    {acc_t} acc = {init};
    for (int64_t ch = 0; ch < nch; ++ch) {{ {merge} }}
    int64_t r = 0;
    {result}
}}
""")
    else:
        src.append(f"""
void {name}({', '.join(params)}) {{
    {' '.join(decls)}
    #pragma omp parallel for schedule(static) if (rows * cols >= {PARALLEL_MIN} && rows > 1)
    for (int64_t r = 0; r < rows; ++r) {{
        {acc_t} acc = {init};
        {pragma}
        for (int64_t i = r * cols; i < (r + 1) * cols; ++i) {{
            {inner}
            {combine}
        }}
        {result}
    }}
}}
""")
    return "".join(src)


class _Kernel:
    """A compiled fused kernel: ``run(inputs, outputs, stream)`` (synchronous, calling thread)."""

    language = "c"

    def __init__(self, ir: FusedIR, source: str, ffi: Any, fn: Any) -> None:
        self.ir, self.source, self.name = ir, source, ir.name
        self._fb = ffi.from_buffer
        self._fn = fn
        self._lock = threading.Lock()
        self._scratch: np.ndarray | None = None

    def _ptr(self, a: Array, byte_offset: int = 0) -> Any:
        return self._fb(a.allocation.handle) + (a.allocation.offset + a.byte_offset + byte_offset)

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        ir = self.ir
        if ir.gemm is not None:
            self._gemm(inputs, outputs)
            return
        ptrs = [self._ptr(a) for a in inputs] + [self._ptr(o) for o in outputs]
        if ir.reduce is None:
            self._fn(*ptrs, ir.size)
            return
        n = ir.size
        cols = ir.shape[-1] if ir.reduce.axis is not None else n
        rows = n // cols if cols else 0
        if ir.reduce.axis is None:
            rows, cols = 1, n
        self._fn(*ptrs, rows, cols)

    def _gemm(self, inputs: Sequence[Array], outputs: Sequence[Array]) -> None:
        g = self.ir.gemm
        assert g is not None
        a = host_view(inputs[0])
        b = host_view(inputs[1])
        a = a.T if g.trans_a else a
        b = b.T if g.trans_b else b
        dtype = dt.as_dtype(g.dtype)
        rows = max(1, min(g.m, (1 << 18) // max(g.n * dtype.itemsize, 1)))
        with self._lock:
            if self._scratch is None or self._scratch.shape[0] < rows:
                self._scratch = np.empty((rows, g.n), dtype)
            scratch = self._scratch
            gp = self._fb(scratch)
            rest = inputs[2:]
            for r0 in range(0, g.m, rows):
                r1 = min(g.m, r0 + rows)
                panel = scratch[: r1 - r0]
                np.matmul(a[r0:r1], b, out=panel)
                if g.alpha != 1.0:
                    np.multiply(panel, dtype.type(g.alpha), out=panel)
                ptrs = [self._ptr(x, r0 * g.n * x.dtype.itemsize) for x in rest]
                ptrs += [self._ptr(o, r0 * g.n * o.dtype.itemsize) for o in outputs]
                # inputs 0 and 1 (A, B) are not read by the epilogue: pass the panel in their slots
                self._fn(gp, gp, *ptrs, gp, (r1 - r0) * g.n)


class CpuFusion:
    """The CPU's ``fused_kernel`` capability: IR -> compiled :class:`_Kernel` (or ``None`` for IR it does
    not generate). Thread-safe; compiled kernels are memoised by the JIT and cached on disk."""

    def __init__(self, compiler: CCompiler) -> None:
        self.compiler = compiler
        self._openmp: bool | None = None
        self._lock = threading.Lock()

    def options(self) -> tuple[str, ...]:
        """Extra compiler options: ``-fopenmp`` where the compiler supports it (checked once)."""
        base = ("-ffp-contract=off", "-fno-trapping-math")
        with self._lock:
            if self._openmp is None:
                probe = "#include <stdint.h>\nvoid jit_openmp_probe(int64_t n) {\n#pragma omp parallel for\n" \
                        "for (int64_t i = 0; i < n; ++i) {}\n}\n"
                try:
                    self.compiler.build(probe, "jit_openmp_probe", ("-fopenmp",))
                    self._openmp = True
                except KernelCompileError:
                    self._openmp = False
        return (*base, "-fopenmp") if self._openmp else base

    def __call__(self, ir: FusedIR) -> _Kernel | None:
        if ir.gemm is not None and ir.gemm.dtype not in ("float32", "float64"):
            return None
        source = generate(ir)
        (ffi, fn), _hit = self.compiler.build(source, ir.name, self.options())
        return _Kernel(ir, source, ffi, fn)
