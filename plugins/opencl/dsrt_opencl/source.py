"""OpenCL C source of the standard kernel set, generated per dtype from small templates.

One program per dtype holds its elementwise kernels, reductions (local-memory tree), softmax,
quantize and GEMM (pack kernels plus a register-blocked micro-kernel that stages the A panel in local
memory). ``cast_program`` holds the conversions from one dtype to every other; ``bits_program`` the
dtype-blind copy and fill for one element size. Every kernel takes element offsets (``ulong``) next to
each buffer, because arrays live at offsets inside pooled buffers.

Tuning constants (``Tuning``) come from the device's limits and are part of the source text, so the
program cache key covers them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from .cltypes import CTYPES, CType, type_min, unsigned_of

__all__ = ["Tuning", "header", "dtype_program", "cast_program", "bits_program", "gemm_micro", "GEMM_RM",
           "BITS_TYPES"]

#: Rows of C each GEMM work-item computes (register blocking); columns are two compute vectors.
GEMM_RM = 6
#: Element size in bytes -> the unsigned C type copy and fill move.
BITS_TYPES = {1: "uchar", 2: "ushort", 4: "uint", 8: "ulong"}


@dataclass(frozen=True)
class Tuning:
    """``rwg``: work-group size of reductions and softmax (a power of two within the device limit);
    ``kc``: K elements of the A panel one GEMM work-group stages in local memory; ``ewl``: work-group
    size of elementwise kernels, whose groups each sweep one contiguous chunk with stride ``ewl``
    (1 on CPU devices, where the sweep then vectorises; coalesced on GPUs)."""

    rwg: int
    kc: int
    fp64: bool
    ewl: int = 1


def header(t: Tuning) -> str:
    """Extensions and the bf16/fp8 conversion functions every program starts with."""
    ext = "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n" if t.fp64 else ""
    common = resources.files(__package__).joinpath("common.cl").read_text()
    return f"{ext}#define RWG {t.rwg}\n#define EWL {t.ewl}\n{common}\n"


# --------------------------------------------------------------------------- elementwise
#: Group g handles elements [g * chunk, (g + 1) * chunk), its items interleaved with stride EWL.
_EW_HEAD = ("ulong s_ = get_group_id(0) * chunk, e_ = min(s_ + chunk, n);\n"
            "    for (ulong i = s_ + get_local_id(0); i < e_; i += EWL)")
def _binary_expr(name: str, c: CType) -> str | None:
    ct = c.compute
    if name in ("add", "sub", "mul"):
        op = {"add": "+", "sub": "-", "mul": "*"}[name]
        if c.is_float:
            return f"x {op} y"
        u = unsigned_of(ct)
        return f"({ct})(({u})x {op} ({u})y)"
    if name == "div":
        return "x / y" if c.is_float else None
    if name == "maximum":
        return "(isnan(x) || x >= y) ? x : y" if c.is_float else "x > y ? x : y"
    if name == "minimum":
        return "(isnan(x) || x <= y) ? x : y" if c.is_float else "x < y ? x : y"
    return None


def _elementwise(names: set[str], c: CType) -> str:
    ct, st = c.compute, c.storage
    out = []
    head = _EW_HEAD
    for name in ("add", "sub", "mul", "div", "maximum", "minimum"):
        expr = _binary_expr(name, c)
        if name in names and expr:
            out.append(f"""
__kernel void {name}(__global const {st}* a, ulong ao, __global const {st}* b, ulong bo,
                     __global {st}* o, ulong oo, ulong n, ulong chunk) {{
    {head} {{
    {ct} x = {c.ld('a', 'ao + i')}; {ct} y = {c.ld('b', 'bo + i')};
    {c.st('o', 'oo + i', expr)}
    }}
}}""")
    unary = {"exp": "exp(x)", "relu": f"x < ({ct})0 ? ({ct})0 : x"}
    for name, expr in unary.items():
        if name in names:
            out.append(f"""
__kernel void {name}(__global const {st}* a, ulong ao, __global {st}* o, ulong oo, ulong n, ulong chunk) {{
    {head} {{
    {ct} x = {c.ld('a', 'ao + i')};
    {c.st('o', 'oo + i', expr)}
    }}
}}""")
    if "scale" in names:
        out.append(f"""
__kernel void scale(__global const {st}* a, ulong ao, __global {st}* o, ulong oo, ulong n, ulong chunk, {ct} alpha) {{
    {head} {{
    {ct} x = {c.ld('a', 'ao + i')};
    {c.st('o', 'oo + i', 'x * alpha')}
    }}
}}""")
    if "axpy" in names:
        out.append(f"""
__kernel void axpy(__global const {st}* a, ulong ao, __global const {st}* b, ulong bo,
                   __global {st}* o, ulong oo, ulong n, ulong chunk, {ct} alpha) {{
    {head} {{
    {ct} x = {c.ld('a', 'ao + i')}; {ct} y = {c.ld('b', 'bo + i')};
    {c.st('o', 'oo + i', 'alpha * x + y')}
    }}
}}""")
    return "\n".join(out)


# --------------------------------------------------------------------------- reductions
def _reduction(kname: str, inputs: list[str], load: str, acc: str, ident: str, combine: str,
               out_store: str) -> str:
    """One work-group reduces ``chunk`` elements of one row: a strided private pass, then a tree in
    local memory. Group (seg, row) writes element ``row * nseg + seg`` of the output."""
    params = ", ".join(inputs)
    comb = combine.format(a="acc", b="v")
    tree = combine.format(a="sh[lid]", b="sh[lid + s]")
    return f"""
__kernel __attribute__((reqd_work_group_size(RWG, 1, 1)))
void {kname}({params}, ulong cols, ulong chunk) {{
    ulong row = get_group_id(1), seg = get_group_id(0), nseg = get_num_groups(0);
    uint lid = get_local_id(0);
    ulong start = seg * chunk, end = min(start + chunk, cols), base = row * cols;
    {acc} acc = {ident};
    for (ulong j = start + lid; j < end; j += RWG) {{
        {acc} v = {load};
        acc = {comb};
    }}
    __local {acc} sh[RWG];
    sh[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RWG / 2; s > 0; s >>= 1) {{
        if (lid < s) sh[lid] = {tree};
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    if (lid == 0) {{ {out_store.format(v='sh[0]', i='oo + row * nseg + seg')} }}
}}"""


def _acc_sum(c: CType) -> str:
    return "long" if not c.is_float else c.compute


def _reductions(names: set[str], c: CType) -> str:
    ct, st = c.compute, c.storage
    out = []
    x_in = [f"__global const {st}* x", "ulong xo"]
    if "reduce_sum" in names:
        acc = _acc_sum(c)
        add = "{a} + {b}" if c.is_float else "(long)((ulong)({a}) + (ulong)({b}))"
        out_c = c if c.is_float else CTYPES["int64"]
        ld = f"({acc}){c.ld('x', 'xo + base + j')}"
        to_out = [f"__global {out_c.storage}* o", "ulong oo"]
        to_acc = [f"__global {acc}* o", "ulong oo"]
        fin = out_c.store.replace("{p}", "o").replace("{i}", "{i}")
        plain = "o[{i}] = {v};"
        out.append(_reduction("reduce_sum_fin", x_in + to_out, ld, acc, "0", add, fin))
        out.append(_reduction("reduce_sum_s1", x_in + to_acc, ld, acc, "0", add, plain))
        out.append(_reduction("reduce_sum_s2", [f"__global const {acc}* x", "ulong xo", *to_out],
                              "x[xo + base + j]", acc, "0", add, fin))
    if "reduce_max" in names:
        mx = "(isnan({a}) || {a} >= {b}) ? {a} : {b}" if c.is_float else "{a} > {b} ? {a} : {b}"
        ld = c.ld("x", "xo + base + j")
        fin = c.store.replace("{p}", "o")
        out.append(_reduction("reduce_max_fin", [*x_in, f"__global {st}* o", "ulong oo"], ld, ct, type_min(ct),
                              mx, fin))
        out.append(_reduction("reduce_max_s1", [*x_in, f"__global {ct}* o", "ulong oo"], ld, ct, type_min(ct),
                              mx, "o[{i}] = {v};"))
        out.append(_reduction("reduce_max_s2", [f"__global const {ct}* x", "ulong xo", f"__global {st}* o",
                                                "ulong oo"], "x[xo + base + j]", ct, type_min(ct), mx, fin))
    if "dot" in names:
        ld = f"{c.ld('x', 'xo + base + j')} * {c.ld('y', 'yo + base + j')}"
        xy = [*x_in, f"__global const {st}* y", "ulong yo"]
        fin = c.store.replace("{p}", "o")
        out.append(_reduction("dot_fin", [*xy, f"__global {st}* o", "ulong oo"], ld, ct, "0", "{a} + {b}", fin))
        out.append(_reduction("dot_s1", [*xy, f"__global {ct}* o", "ulong oo"], ld, ct, "0", "{a} + {b}",
                              "o[{i}] = {v};"))
        out.append(_reduction("dot_s2", [f"__global const {ct}* x", "ulong xo", f"__global {st}* o", "ulong oo"],
                              "x[xo + base + j]", ct, "0", "{a} + {b}", fin))
    return "\n".join(out)


def _softmax(c: CType) -> str:
    ct, st = c.compute, c.storage
    x = c.ld("x", "xo + base + j")
    return f"""
__kernel __attribute__((reqd_work_group_size(RWG, 1, 1)))
void softmax(__global const {st}* x, ulong xo, __global {st}* o, ulong oo, ulong cols) {{
    ulong base = get_group_id(0) * cols;
    uint lid = get_local_id(0);
    __local {ct} sh[RWG];
    {ct} m = -INFINITY;
    for (ulong j = lid; j < cols; j += RWG) {{ {ct} v = {x}; m = (isnan(m) || m >= v) ? m : v; }}
    sh[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RWG / 2; s > 0; s >>= 1) {{
        if (lid < s) {{ {ct} a = sh[lid], b = sh[lid + s]; sh[lid] = (isnan(a) || a >= b) ? a : b; }}
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    m = sh[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    {ct} sum = 0;
    for (ulong j = lid; j < cols; j += RWG) sum += exp({x} - m);
    sh[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RWG / 2; s > 0; s >>= 1) {{
        if (lid < s) sh[lid] += sh[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    sum = sh[0];
    for (ulong j = lid; j < cols; j += RWG) {{ {c.st('o', 'oo + base + j', f'exp({x} - m) / sum')} }}
}}"""


def _quantize(c: CType) -> str:
    return f"""
__kernel void quantize_int8(__global const {c.storage}* x, ulong xo, __global const float* s, ulong so,
                            __global char* o, ulong oo, ulong n, ulong chunk, ulong inner, ulong ch) {{
    {_EW_HEAD} {{
        float v = (float){c.ld('x', 'xo + i')};
        float q = rint(v / s[so + (i / inner) % ch]);
        o[oo + i] = (char)clamp(q, -127.0f, 127.0f);
    }}
}}"""


_DEQUANTIZE = """
__kernel void dequantize_int8(__global const char* q, ulong qo, __global const float* s, ulong so,
                              __global float* o, ulong oo, ulong n, ulong chunk, ulong inner, ulong ch) {
    """ + _EW_HEAD + """
        o[oo + i] = (float)q[qo + i] * s[so + (i / inner) % ch];
}"""


# --------------------------------------------------------------------------- GEMM
def _gemm(c: CType, out: CType, prefix: str, epilogue: bool) -> str:
    """Pack A into row panels ``[M/RM][K][RM]`` and B into column panels ``[N/NR][K][NR]`` (converted
    to the compute type, transposes and zero padding applied), then a micro-kernel: each work-item
    owns an RM x NR block of C in registers; a work-group's items share one A panel, staged through
    local memory ``KC`` values of K at a time."""
    ct, st = c.compute, c.storage
    nr = 2 * c.vector
    rm = GEMM_RM
    if epilogue:
        cargs = f", __global const {out.storage}* cc, ulong co, {ct} alpha, {ct} beta, int has_c"
        value = f"alpha * t[q] + (has_c ? beta * ({ct}){out.ld('cc', 'co + (ulong)gi * N + gj')} : ({ct})0)"
    else:
        cargs = ""
        value = "t[q]"
    micro = gemm_micro(c, out.st("o", "oo + (ulong)gi * N + gj", value))
    return f"""
__kernel void {prefix}pack_a(__global const {st}* a, ulong ao, ulong sai, ulong sak, __global {ct}* ap, ulong apo,
                            uint M, uint K) {{
    uint k = get_global_id(0), i = get_global_id(1);
    if (k >= K) return;
    ap[apo + ((ulong)(i / {rm}) * K + k) * {rm} + i % {rm}] = i < M ? ({ct}){c.ld('a', 'ao + i * sai + k * sak')} : ({ct})0;
}}
__kernel void {prefix}pack_b(__global const {st}* b, ulong bo, ulong sbk, ulong sbj, __global {ct}* bp, ulong bpo,
                            uint K, uint N) {{
    uint j = get_global_id(0), k = get_global_id(1);
    if (k >= K) return;
    bp[bpo + ((ulong)(j / {nr}) * K + k) * {nr} + j % {nr}] = j < N ? ({ct}){c.ld('b', 'bo + k * sbk + j * sbj')} : ({ct})0;
}}
__kernel void {prefix}gemm(__global const {ct}* ap, ulong apo, __global const {ct}* bp, ulong bpo,
                          __global {out.storage}* o, ulong oo, uint M, uint N, uint K, uint njb{cargs}) {{{micro}
}}"""


def gemm_micro(c: CType, store: str) -> str:
    """Body of the GEMM micro-kernel for inputs of type ``c`` (packed by ``pack_a``/``pack_b``; the
    kernel's parameters must include ``ap, apo, bp, bpo, M, N, K, njb``). Each work-item owns a
    ``GEMM_RM`` x ``2 * c.vector`` block of C in registers; a work-group's items share one A panel,
    staged through local memory ``KC`` values of K at a time. ``store`` is the statement run for each
    element of C inside the bounds, with ``gi``, ``gj`` (uint row and column) and ``t[q]`` (the
    unscaled sum, compute type) in scope."""
    ct, vw = c.compute, c.vector
    vt = f"{ct}{vw}"
    nr = 2 * vw
    rm = GEMM_RM
    fma = "mad(a, b0, c0[r])" if c.is_float else "a * b0 + c0[r]"
    fma1 = "mad(a, b1, c1[r])" if c.is_float else "a * b1 + c1[r]"
    return f"""
    uint lx = get_local_id(0), jb = get_global_id(0), ib = get_global_id(1);
    {vt} c0[{rm}], c1[{rm}];
    #pragma unroll
    for (int r = 0; r < {rm}; r++) {{ c0[r] = ({vt})(0); c1[r] = ({vt})(0); }}
    __local {ct} as[KC * {rm}];
    __global const {ct}* bpj = bp + bpo + (ulong)jb * K * {nr};
    for (uint k0 = 0; k0 < K; k0 += KC) {{
        uint kc = min((uint)KC, K - k0);
        barrier(CLK_LOCAL_MEM_FENCE);
        __global const {ct}* src = ap + apo + ((ulong)ib * K + k0) * {rm};
        for (uint e = lx; e < kc * {rm}; e += get_local_size(0)) as[e] = src[e];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (jb < njb) {{
            __local const {ct}* pa = as;
            __global const {ct}* pb = bpj + (ulong)k0 * {nr};
            for (uint k = 0; k < kc; k++) {{
                {vt} b0 = vload{vw}(0, pb), b1 = vload{vw}(1, pb);
                #pragma unroll
                for (int r = 0; r < {rm}; r++) {{
                    {vt} a = ({vt})(pa[r]);
                    c0[r] = {fma};
                    c1[r] = {fma1};
                }}
                pa += {rm}; pb += {nr};
            }}
        }}
    }}
    if (jb >= njb) return;
    #pragma unroll
    for (int r = 0; r < {rm}; r++) {{
        uint gi = ib * {rm} + r;
        if (gi >= M) break;
        {ct} t[{nr}];
        vstore{vw}(c0[r], 0, t); vstore{vw}(c1[r], 1, t);
        for (int q = 0; q < {nr}; q++) {{
            uint gj = jb * {nr} + q;
            if (gj < N) {{ {store} }}
        }}
    }}"""


def _prefixed(src: str) -> str:
    """Kernel names get a ``dsrt_`` prefix so none clashes with a builtin (``exp``, ``copy``...)."""
    return re.sub(r"\bvoid (\w+)\(", r"void dsrt_\1(", src)


def dtype_program(name: str, kernels: set[str], t: Tuning) -> str:
    """Source of every kernel in ``kernels`` for dtype ``name`` (casts, copy and fill excluded)."""
    c = CTYPES[name]
    parts = [header(t), f"#define KC {t.kc}", _elementwise(kernels, c), _reductions(kernels, c)]
    if "softmax" in kernels:
        parts.append(_softmax(c))
    if "quantize_int8" in kernels:
        parts.append(_quantize(c))
    if "dequantize_int8" in kernels:
        parts.append(_DEQUANTIZE)
    if "gemm" in kernels:
        parts.append(_gemm(c, c, "", True))
    if "qgemm_int8" in kernels:
        i32 = CTYPES["int32"]
        src = CType("int8", "char", "int", "(int){p}[{i}]", "", False, 8)
        parts.append(_gemm(src, i32, "q", False))
    return _prefixed("\n".join(parts))


def cast_program(src: str, targets: list[str], t: Tuning) -> str:
    """``cast_to_<dtype>`` kernels from ``src`` to each target (through the compute types)."""
    c = CTYPES[src]
    parts = [header(t)]
    for dst in targets:
        d = CTYPES[dst]
        value = f"({d.compute})v" if dst != "bool" else "v"
        if src == "bool":
            value = f"({d.compute})(v != 0)"
        parts.append(f"""
__kernel void cast_to_{dst}(__global const {c.storage}* x, ulong xo, __global {d.storage}* o, ulong oo, ulong n,
                            ulong chunk) {{
    {_EW_HEAD} {{
        {c.compute} v = {c.ld('x', 'xo + i')};
        {d.st('o', 'oo + i', value)}
    }}
}}""")
    return _prefixed("\n".join(parts))


def bits_program(itemsize: int, t: Tuning) -> str:
    """Dtype-blind ``copy`` and ``fill`` for elements of ``itemsize`` bytes."""
    ut = BITS_TYPES[itemsize]
    return _prefixed(f"""#define EWL {t.ewl}
__kernel void copy(__global const {ut}* x, ulong xo, __global {ut}* o, ulong oo, ulong n, ulong chunk) {{
    {_EW_HEAD} o[oo + i] = x[xo + i];
}}
__kernel void fill(__global {ut}* o, ulong oo, ulong n, ulong chunk, {ut} v) {{
    {_EW_HEAD} o[oo + i] = v;
}}""")
