"""The JIT: capture a dynamic sequence of launches, fuse it, plan its memory, replay it as a static graph.

    rt = dsrt.Runtime()

    @rt.jit
    def step(x, y):
        t = rt.launch("mul", x, y)
        return rt.launch("exp", rt.launch("add", t, x))

    z = step(x, y)        # first call of this signature: runs eagerly and records every launch
    z = step(x2, y2)      # same shapes/dtypes/devices: one replay of the fused graph
    print(step.explain())

    with rt.capture(x, y) as g:       # the same, explicitly
        g.output(rt.launch("add", x, y))
    z = g.replay(x2, y2)

A service above the contract: it imports ``dsrt.device``, ``dsrt.array``, ``dsrt.kernels``,
``dsrt.memory``, ``dsrt.dtypes`` and ``dsrt.errors``, never the runtime. Code generation is a device
capability (``device.fused_kernel(ir)``, see :mod:`dsrt.jit.ir`); devices without it replay the
recorded launches unfused. ``DSRT_JIT=off`` runs everything eagerly; ``DSRT_JIT_DUMP=dir`` writes each
generated kernel's IR and source there. See docs/jit.md.
"""

from __future__ import annotations

from .capture import Node, Recorder, Value
from .function import CaptureContext, JitFunction, capture, enabled, jit
from .graph import Explanation, Graph, Step, fused_kernel_for
from .ir import ELEMENTWISE, FUSED_DTYPES, FusedIR, FusedOp, GemmSpec, ReduceSpec, emit_c_body

__all__ = [
    "CaptureContext",
    "ELEMENTWISE",
    "Explanation",
    "FUSED_DTYPES",
    "FusedIR",
    "FusedOp",
    "GemmSpec",
    "Graph",
    "JitFunction",
    "Node",
    "Recorder",
    "ReduceSpec",
    "Step",
    "Value",
    "capture",
    "emit_c_body",
    "enabled",
    "fused_kernel_for",
    "jit",
]
