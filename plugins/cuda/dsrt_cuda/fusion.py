"""Fused kernels for CUDA GPUs: CUDA C generated from the JIT's IR (:mod:`dsrt.jit.ir`), compiled by
CuPy (``cupy.RawKernel``, NVRTC, CuPy's own kernel cache) and launched on the stream's CuPy stream.

Elementwise float32/float64 groups only; other IR is declined (the JIT then launches those kernels
unfused). A grid-stride loop covers the elements; operands are the arrays' CuPy views
(:func:`dsrt_cuda.views.cuda_view`). Launches are asynchronous on the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cupy as cp
import numpy as np

from dsrt.array import Array
from dsrt.jit.ir import FusedIR, emit_c_body

from .views import cuda_view

__all__ = ["CudaFusion", "generate"]

_TYPES = {"float32": "float", "float64": "double"}
_BLOCK = 256


def generate(ir: FusedIR) -> str:
    """CUDA C of an elementwise ``ir``: ``extern "C"`` kernel ``ir.name(in..., out..., n)``."""
    params = [f"const {_TYPES[d]}* __restrict__ p{k}" for k, d in enumerate(ir.inputs)]
    params += [f"{_TYPES[d]}* __restrict__ q{j}" for j, d in enumerate(ir.output_dtypes)]
    params.append("long long n")
    body = emit_c_body(ir, load=lambda k, d: f"p{k}[i]", rnd=lambda d, e: e,
                       exp=lambda c, e: f"expf({e})" if c == "float" else f"exp({e})")
    stores = [f"q{j}[i] = t{t};" for j, t in enumerate(ir.outputs)]
    inner = "\n        ".join(body + stores)
    return f"""
extern "C" __global__ void {ir.name}({', '.join(params)}) {{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {{
        {inner}
    }}
}}
"""


class _Kernel:
    language = "cu"

    def __init__(self, ir: FusedIR, source: str, kern: Any, sms: int) -> None:
        self.ir, self.source, self.kern, self.name = ir, source, kern, ir.name
        self.grid = max(1, min(-(-ir.size // _BLOCK), sms * 32))

    def __call__(self, inputs: Sequence[Array], outputs: Sequence[Array], stream: Any) -> None:
        args = [cuda_view(a) for a in (*inputs, *outputs)]
        with stream.native:
            self.kern((self.grid,), (_BLOCK,), (*args, np.int64(self.ir.size)))


class CudaFusion:
    """The CUDA device's ``fused_kernel`` capability (elementwise float32/float64 IR; ``None`` otherwise)."""

    def __init__(self, sms: int) -> None:
        self.sms = sms

    def __call__(self, ir: FusedIR) -> _Kernel | None:
        dtypes = {*ir.inputs, *ir.output_dtypes, *(o.dtype for o in ir.ops)}
        if ir.kind != "elementwise" or not dtypes <= set(_TYPES):
            return None
        source = generate(ir)
        return _Kernel(ir, source, cp.RawKernel(source, ir.name), self.sms)
