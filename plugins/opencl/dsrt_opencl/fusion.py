"""Fused kernels for OpenCL devices: OpenCL C generated from the JIT's IR (:mod:`dsrt.jit.ir`).

Elementwise groups only (a reduction prologue or GEMM epilogue is declined, so the JIT fuses the
elementwise part and launches the reduction or GEMM itself). A generated kernel follows the
backend's elementwise layout: work-group ``g`` sweeps elements ``[g * chunk, (g + 1) * chunk)`` with
its items interleaved, every operand passed as ``(buffer, element offset)``. Programs are built by the
device's :class:`~dsrt_opencl.cache.ProgramCache` (memory and verified disk cache). bfloat16 is stored
with the backend's conversion functions, computed in float and rounded after every operation, like the
references; IR with float16 temps is declined (rounding a float to half in private memory needs
``cl_khr_fp16``). Launches are enqueued on the stream, not waited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt.array import Array
from dsrt.jit.ir import FusedIR, emit_c_body

from .cltypes import CTYPES
from .kernels import _ew_size
from .source import header

if TYPE_CHECKING:
    from .device import OpenCLDevice

__all__ = ["OpenCLFusion", "generate"]

_ROUND = """
inline float jit_rnd_bf16(float x) { return dsrt_bf16_to_f32(dsrt_f32_to_bf16(x)); }
"""


def generate(ir: FusedIR, dev: OpenCLDevice) -> str:
    """OpenCL C of an elementwise ``ir``: kernel ``ir.name(in0, off0, ..., out0, off0, ..., n, chunk)``."""
    params = []
    for k, d in enumerate(ir.inputs):
        params.append(f"__global const {CTYPES[d].storage}* p{k}, ulong f{k}")
    for j, d in enumerate(ir.output_dtypes):
        params.append(f"__global {CTYPES[d].storage}* q{j}, ulong g{j}")
    params += ["ulong n", "ulong chunk"]
    body = emit_c_body(
        ir,
        load=lambda k, d: CTYPES[d].ld(f"p{k}", f"f{k} + i"),
        rnd=lambda d, e: f"jit_rnd_bf16({e})",
        exp=lambda c, e: f"exp({e})",
    )
    stores = [CTYPES[ir.output_dtypes[j]].st(f"q{j}", f"g{j} + i", f"t{t}") for j, t in enumerate(ir.outputs)]
    inner = "\n        ".join(body + stores)
    return f"""{header(dev.tuning)}{_ROUND}
__kernel void {ir.name}({', '.join(params)}) {{
    ulong s_ = get_group_id(0) * chunk, e_ = min(s_ + chunk, n);
    for (ulong i = s_ + get_local_id(0); i < e_; i += get_local_size(0)) {{
        {inner}
    }}
}}
"""


def _eo(a: Array) -> np.uint64:
    return np.uint64(a.handle_offset // a.dtype.itemsize)


class _Kernel:
    language = "cl"

    def __init__(self, dev: OpenCLDevice, ir: FusedIR, source: str, kern: Any) -> None:
        self.dev, self.ir, self.source, self.kern, self.name = dev, ir, source, kern, ir.name

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        args: list[Any] = []
        for a in (*inputs, *outputs):
            if a.handle_offset % a.dtype.itemsize:
                raise ValueError(f"{self.dev.id}: operand starts inside an element")
            args += [a.handle, _eo(a)]
        gs, ls, chunk = _ew_size(self.dev, self.ir.size)
        self.dev.enqueue(self.kern, stream, gs, ls, *args, np.uint64(self.ir.size), chunk)


class OpenCLFusion:
    """The OpenCL device's ``fused_kernel`` capability (elementwise IR only; ``None`` otherwise)."""

    def __init__(self, dev: OpenCLDevice) -> None:
        self.dev = dev

    def __call__(self, ir: FusedIR) -> _Kernel | None:
        dev = self.dev
        if ir.kind != "elementwise":
            return None
        dtypes = {*ir.inputs, *ir.output_dtypes, *(o.dtype for o in ir.ops)}
        # float16 temps would need a rounding helper that is not portable without cl_khr_fp16
        if "float16" in dtypes or not dtypes <= dev.info.dtypes:
            return None
        source = generate(ir, dev)
        prg, _hit = dev.programs.build(source, dev.build_options, name=ir.name)
        return _Kernel(dev, ir, source, dev.cl.Kernel(prg, ir.name))
