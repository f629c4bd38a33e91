"""Fused kernels for OpenCL devices: OpenCL C generated from the JIT's IR (:mod:`dsrt.jit.ir`).

All three IR kinds are generated, each following the layout of the backend's own kernel of that kind
(:mod:`dsrt_opencl.kernels`), so a fused group runs like the eager launch it replaces minus the
intermediates it never writes:

* ``elementwise``: work-group ``g`` sweeps elements ``[g * chunk, (g + 1) * chunk)`` with its items
  interleaved (the backend's elementwise layout).
* ``reduce``: the prologue is computed per element inside the reduction's strided loop (storing any
  temps the graph still needs) and reduced in the same kernel: a private pass, then a tree in local
  memory, one work-group per (segment, row). Rows are the last axis, or the whole array for
  ``axis=None``. Where :func:`~dsrt_opencl.kernels.reduce_segments` splits a row over several groups
  (long rows, few of them), the generated kernel writes per-group partials to a pool temporary and a
  second generated kernel reduces them. Sums accumulate in the temp's compute type (float; double
  for float64) and maxima propagate NaN, exactly like the backend's ``reduce_sum``/``reduce_max``.
* ``gemm``: the backend's ``pack_a``/``pack_b`` kernels (transposes applied) and a generated copy of
  its register-blocked micro-kernel (:func:`~dsrt_opencl.source.gemm_micro`) whose store computes
  ``alpha * sum`` and the elementwise epilogue before writing, so the GEMM result is never stored
  unless the graph needs it.

Every operand is passed as ``(buffer, element offset)``. float16 is stored with the core
``vload_half``/``vstore_half_rte`` (no ``cl_khr_fp16`` needed) and bfloat16 with the backend's
conversion functions (``common.cl``); both are computed in float and rounded to their dtype after
every operation like the references (``jit_rnd_f16`` goes through a private ``ushort`` viewed as
``half *``, which the core storage functions accept). Programs are built by the device's
:class:`~dsrt_opencl.cache.ProgramCache` when the JIT first asks for the IR (on the tracing thread),
kept in memory like the standard kernel set (``persist=False``: fetching a program's binaries for
the disk cache costs PoCL seconds per program; the driver's own kernel cache persists compiled
code). The returned kernel object is called on the replaying thread and enqueues on the stream
without waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt.array import Array
from dsrt.jit.ir import FusedIR, compute_type, emit_c_body

from .cltypes import CTYPES
from .kernels import _eo, _ew_size, micro_work_group, pack_gemm_operands, reduce_segments
from .source import GEMM_RM, gemm_micro, header

if TYPE_CHECKING:
    from .device import OpenCLDevice

__all__ = ["OpenCLFusion", "generate", "generate_reduce", "generate_gemm"]

_U64 = np.uint64

#: Rounding of a float temp to a 16-bit dtype and back (float16 without cl_khr_fp16: the core
#: vstore_half_rte/vload_half on a private ushort, viewed as half *).
_ROUND = """
inline float jit_rnd_bf16(float x) { return dsrt_bf16_to_f32(dsrt_f32_to_bf16(x)); }
inline float jit_rnd_f16(float x) {
    ushort h;
    vstore_half_rte(x, 0, (__private half*)&h);
    return vload_half(0, (__private const half*)&h);
}
"""


def _rnd(dtype: str, e: str) -> str:
    return f"jit_rnd_f16({e})" if dtype == "float16" else f"jit_rnd_bf16({e})"


def _exp(ctype: str, e: str) -> str:
    return f"exp({e})"


def _load(k: int, dtype: str) -> str:
    return CTYPES[dtype].ld(f"p{k}", f"f{k} + i")


def _literal(value: float, ctype: str) -> str:
    v = float(value)
    if v != v:
        return f"(({ctype})NAN)"
    if v in (float("inf"), float("-inf")):
        return f"(({ctype}){'INFINITY' if v > 0 else '-INFINITY'})"
    return f"(({ctype}){v!r})"


def _params(ir: FusedIR, first_input: int = 0) -> list[str]:
    """``(p_k, f_k)`` per loaded input and ``(q_j, g_j)`` per elementwise output buffer."""
    params = [f"__global const {CTYPES[d].storage}* p{k}, ulong f{k}"
              for k, d in enumerate(ir.inputs) if k >= first_input]
    n_ew = len(ir.outputs)
    params += [f"__global {CTYPES[d].storage}* q{j}, ulong g{j}" for j, d in enumerate(ir.output_dtypes[:n_ew])]
    return params


def _stores(ir: FusedIR) -> list[str]:
    return [CTYPES[ir.output_dtypes[j]].st(f"q{j}", f"g{j} + i", f"t{t}") for j, t in enumerate(ir.outputs)]


def _head(dev: OpenCLDevice) -> str:
    return f"{header(dev.tuning)}{_ROUND}"


def generate(ir: FusedIR, dev: OpenCLDevice) -> str:
    """OpenCL C of an elementwise ``ir``: kernel ``ir.name(in0, off0, ..., out0, off0, ..., n, chunk)``."""
    params = [*_params(ir), "ulong n", "ulong chunk"]
    body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp)
    inner = "\n        ".join(body + _stores(ir))
    return f"""{_head(dev)}
__kernel void {ir.name}({', '.join(params)}) {{
    ulong s_ = get_group_id(0) * chunk, e_ = min(s_ + chunk, n);
    for (ulong i = s_ + get_local_id(0); i < e_; i += get_local_size(0)) {{
        {inner}
    }}
}}
"""


# --------------------------------------------------------------------------- reductions
def _combine(kernel: str, a: str, b: str) -> str:
    if kernel == "reduce_sum":
        return f"{a} + {b}"
    return f"(isnan({a}) || {a} >= {b}) ? {a} : {b}"  # NaN sticks, like the backend's reduce_max


def _reduce_kernel(name: str, params: list[str], body: list[str], value: str, acc: str, ident: str,
                   kernel: str, result: str) -> str:
    """Group ``(seg, row)`` runs ``body`` for its elements ``j`` of row ``row`` (``i = row * cols + j``),
    folds ``value`` into a private accumulator, then a local-memory tree; item 0 runs ``result`` with
    ``v`` (the group's value) and ``r`` (its index ``row * nseg + seg``) in scope."""
    inner = "\n        ".join(body)
    return f"""
__kernel __attribute__((reqd_work_group_size(RWG, 1, 1)))
void {name}({', '.join([*params, 'ulong cols', 'ulong chunk'])}) {{
    ulong row = get_group_id(1), seg = get_group_id(0), nseg = get_num_groups(0);
    uint lid = get_local_id(0);
    ulong start = seg * chunk, end = min(start + chunk, cols), base = row * cols;
    {acc} acc = {ident};
    for (ulong j = start + lid; j < end; j += RWG) {{
        ulong i = base + j;
        {inner}
        {acc} x_ = {value};
        acc = {_combine(kernel, 'acc', 'x_')};
    }}
    __local {acc} sh[RWG];
    sh[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RWG / 2; s > 0; s >>= 1) {{
        if (lid < s) sh[lid] = {_combine(kernel, 'sh[lid]', 'sh[lid + s]')};
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    if (lid == 0) {{
        {acc} v = sh[0];
        ulong r = row * nseg + seg;
        {result}
    }}
}}"""


def generate_reduce(ir: FusedIR, dev: OpenCLDevice, split: bool) -> str:
    """OpenCL C of a ``reduce`` ``ir``. Kernel ``ir.name(in.., ew outs.., res, res_off, cols, chunk)``
    writes the reduction of each row to ``res`` (the result buffer; with ``split``, a buffer of
    per-group partials in the accumulator type, reduced by kernel ``<name>_s2(part, part_off, res,
    res_off, cols=nseg, chunk=nseg)``)."""
    red = ir.reduce
    assert red is not None
    acc = compute_type(ir.ops[red.arg].dtype)
    ident = "0" if red.kernel == "reduce_sum" else "-INFINITY"
    res = CTYPES[red.dtype]
    final = res.st("o", "oo + r", "v")
    body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp) + _stores(ir)
    first_params = [*_params(ir), f"__global {acc if split else res.storage}* o", "ulong oo"]
    src = [_head(dev), _reduce_kernel(ir.name, first_params, body, f"t{red.arg}", acc, ident, red.kernel,
                                      "o[oo + r] = v;" if split else final)]
    if split:
        s2 = [f"__global const {acc}* p", "ulong f", f"__global {res.storage}* o", "ulong oo"]
        src.append(_reduce_kernel(f"{ir.name}_s2", s2, [], "p[f + i]", acc, ident, red.kernel, final))
    return "\n".join(src) + "\n"


# --------------------------------------------------------------------------- GEMM
def generate_gemm(ir: FusedIR, dev: OpenCLDevice) -> str:
    """OpenCL C of a ``gemm`` ``ir``: kernel ``ir.name(ap, apo, bp, bpo, in2.., outs.., M, N, K, njb)``
    over the panels of :func:`~dsrt_opencl.kernels.pack_gemm_operands`, the epilogue applied to each
    element ``i = row * N + col`` before it is stored."""
    g = ir.gemm
    assert g is not None
    c = CTYPES[g.dtype]
    ct = c.compute
    alpha = _literal(g.alpha, ct)
    body = emit_c_body(ir, load=_load, rnd=_rnd, exp=_exp, gemm=lambda _c: f"{alpha} * t[q]")
    inner = "\n                ".join(body + _stores(ir))
    store = f"""
                ulong i = (ulong)gi * N + gj;
                {inner}
            """
    params = [f"__global const {ct}* ap", "ulong apo", f"__global const {ct}* bp", "ulong bpo",
              *_params(ir, first_input=2), "uint M", "uint N", "uint K", "uint njb"]
    return f"""{_head(dev)}#define KC {dev.tuning.kc}
__kernel void {ir.name}({', '.join(params)}) {{{gemm_micro(c, store)}
}}
"""


# --------------------------------------------------------------------------- kernel objects
def _operands(arrays: Sequence[Array]) -> list[Any]:
    args: list[Any] = []
    for a in arrays:
        args += [a.handle, _eo(a)]
    return args


class _Kernel:
    """A built fused kernel: ``run(inputs, outputs, stream)`` enqueues on ``stream``, does not wait.
    ``source`` and ``language`` are for ``DSRT_JIT_DUMP``."""

    language = "cl"

    def __init__(self, dev: OpenCLDevice, ir: FusedIR, source: str, prg: Any) -> None:
        self.dev, self.ir, self.source, self.name = dev, ir, source, ir.name
        self.kern = dev.cl.Kernel(prg, ir.name)

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        gs, ls, chunk = _ew_size(self.dev, self.ir.size)
        self.dev.enqueue(self.kern, stream, gs, ls, *_operands([*inputs, *outputs]), _U64(self.ir.size), chunk)


class _ReduceKernel(_Kernel):
    def __init__(self, dev: OpenCLDevice, ir: FusedIR, source: str, prg: Any, rows: int, cols: int,
                 nseg: int) -> None:
        super().__init__(dev, ir, source, prg)
        self.rows, self.cols, self.nseg = rows, cols, nseg
        self.s2 = dev.cl.Kernel(prg, f"{ir.name}_s2") if nseg > 1 else None
        red = ir.reduce
        assert red is not None
        self.acc = np.dtype(np.float64 if compute_type(ir.ops[red.arg].dtype) == "double" else np.float32)

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        dev, rows, cols, nseg = self.dev, self.rows, self.cols, self.nseg
        if rows == 0:
            return
        rwg = dev.tuning.rwg
        ins = _operands([*inputs, *outputs[:-1]])
        res = outputs[-1]
        if self.s2 is None:
            dev.enqueue(self.kern, stream, (rwg, rows), (rwg, 1), *ins, *_operands([res]), _U64(cols), _U64(cols))
            return
        part = dev.empty((rows * nseg,), self.acc, stream=stream)
        dev.enqueue(self.kern, stream, (rwg * nseg, rows), (rwg, 1), *ins, *_operands([part]), _U64(cols),
                    _U64(-(-cols // nseg)))
        dev.enqueue(self.s2, stream, (rwg, rows), (rwg, 1), *_operands([part, res]), _U64(nseg), _U64(nseg))


class _GemmKernel(_Kernel):
    def __init__(self, dev: OpenCLDevice, ir: FusedIR, source: str, prg: Any) -> None:
        super().__init__(dev, ir, source, prg)
        self.wg = micro_work_group(dev, self.kern)

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        g = self.ir.gemm
        assert g is not None
        if g.m == 0 or g.n == 0:
            return
        ap, bp, njb = pack_gemm_operands(self.dev, inputs[0], inputs[1], g.m, g.n, g.k, g.trans_a, g.trans_b,
                                         stream)
        u32 = np.uint32
        args = [*_operands([ap, bp, *inputs[2:], *outputs]), u32(g.m), u32(g.n), u32(g.k), u32(njb)]
        self.dev.enqueue(self.kern, stream, (-(-njb // self.wg) * self.wg, -(-g.m // GEMM_RM)), (self.wg, 1), *args)


class OpenCLFusion:
    """The OpenCL device's ``fused_kernel`` capability: IR -> built kernel object, or ``None`` for IR
    it does not generate (a dtype the device does not store; a GEMM other than float32/float64).
    Called by the JIT on the tracing thread; raises :class:`~dsrt.errors.KernelCompileError` (with
    the build log) if the generated source does not build."""

    def __init__(self, dev: OpenCLDevice) -> None:
        self.dev = dev

    def __call__(self, ir: FusedIR) -> _Kernel | None:
        dev = self.dev
        dtypes = {*ir.inputs, *ir.output_dtypes, *(o.dtype for o in ir.ops)}
        if not dtypes <= dev.info.dtypes or not all(CTYPES[d].is_float for d in dtypes):
            return None
        if ir.kind == "elementwise":
            source = generate(ir, dev)
            return _Kernel(dev, ir, source, self._build(source, ir))
        if ir.kind == "reduce" and ir.reduce is not None and ir.reduce.kernel in ("reduce_sum", "reduce_max"):
            if ir.reduce.axis is None or not ir.shape:
                rows, cols = 1, ir.size
            else:
                cols = ir.shape[-1]
                rows = ir.size // cols if cols else int(np.prod(ir.shape[:-1]))
            nseg = reduce_segments(dev, rows, cols) if rows else 1
            source = generate_reduce(ir, dev, nseg > 1)
            return _ReduceKernel(dev, ir, source, self._build(source, ir), rows, cols, nseg)
        if ir.kind == "gemm" and ir.gemm is not None and ir.gemm.dtype in ("float32", "float64"):
            source = generate_gemm(ir, dev)
            return _GemmKernel(dev, ir, source, self._build(source, ir))
        return None

    def _build(self, source: str, ir: FusedIR) -> Any:
        # In memory only, like the standard kernel set: asking PoCL for a program's binaries to store
        # them costs seconds per generated program, the driver's own kernel cache keeps compiled code.
        prg, _hit = self.dev.programs.build(source, self.dev.build_options, name=ir.name, persist=False)
        return prg
