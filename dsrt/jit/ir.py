"""The source IR of one fused kernel: what the JIT hands to a backend's code generator.

A backend that generates code declares the optional capability ``device.fused_kernel(ir)``: it takes a
:class:`FusedIR` and returns a callable ``run(inputs, outputs, stream)`` (inputs and outputs are
contiguous :class:`~dsrt.array.Array` objects on that device, in the IR's order), or ``None`` when it
cannot generate this IR (the JIT then splits the group or replays the launches unfused). The callable
may carry ``source`` (the generated text) and ``language`` (a file suffix: ``c``, ``cl``, ``cu``) for
``DSRT_JIT_DUMP``. It is called on the replaying thread, once per replay, with every operand resident
and held in place (:func:`dsrt.memory.in_use`); it may enqueue work on ``stream`` without waiting.

The IR is a straight-line program over *temps*, evaluated once per element ``i`` of ``shape``:

* ``FusedOp("load", (k,), dtype)``: element ``i`` of input buffer ``k``;
* ``FusedOp("gemm", (), dtype)``: element ``i`` of ``alpha * op(A) @ op(B)`` (``kind == "gemm"``; A and B
  are input buffers 0 and 1, never loaded elementwise);
* any elementwise kernel of :data:`ELEMENTWISE` on earlier temps, with its parameters.

``outputs`` lists the temps stored to output buffers 0, 1, ...; with ``reduce`` set, the reduction of
one temp over everything (``axis=None``) or the last axis is stored to the last output buffer.

Semantics are the kernels' numpy references: float16 and bfloat16 values are computed in float32
and rounded to their dtype after every operation (exactly as an eager launch stores them), float64 in
double. :func:`emit_c_body` writes the per-element statements in C syntax (C99, OpenCL C and CUDA
C share it); each backend supplies its loads, stores, rounding and ``exp``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ELEMENTWISE",
    "FUSED_DTYPES",
    "FusedOp",
    "FusedIR",
    "ReduceSpec",
    "GemmSpec",
    "compute_type",
    "emit_c_body",
    "c_load",
    "c_round16",
    "c_store",
]

#: Standard kernels a fused group may contain (elementwise, one output, no broadcasting).
ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "maximum", "minimum", "exp", "relu", "scale", "axpy",
                         "cast", "copy", "fill"})
#: Dtypes fused code computes (integers and fp8 replay unfused).
FUSED_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
#: Casts fused code performs with one rounding, like numpy (float64 -> 16-bit would round twice).
SAFE_CASTS = frozenset({
    ("float32", "float64"), ("float64", "float32"), ("float32", "float16"), ("float32", "bfloat16"),
    ("float16", "float32"), ("bfloat16", "float32"), ("float16", "float64"), ("bfloat16", "float64"),
    ("float16", "bfloat16"), ("bfloat16", "float16"),
} | {(d, d) for d in FUSED_DTYPES})


@dataclass(frozen=True)
class FusedOp:
    """One temp: ``kernel`` applied to temps ``args`` (``load``: the input buffer index)."""

    kernel: str
    args: tuple[int, ...]
    dtype: str
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str) -> Any:
        return dict(self.params)[name]


@dataclass(frozen=True)
class ReduceSpec:
    """``kernel`` (``reduce_sum`` or ``reduce_max``) of temp ``arg`` over ``axis`` (None or -1)."""

    kernel: str
    arg: int
    axis: int | None
    dtype: str


@dataclass(frozen=True)
class GemmSpec:
    """``alpha * op(A) @ op(B)`` with A, B the input buffers 0 and 1; ``m x k`` by ``k x n``."""

    m: int
    n: int
    k: int
    alpha: float
    trans_a: bool
    trans_b: bool
    dtype: str


@dataclass(frozen=True)
class FusedIR:
    """One fused kernel (see the module docstring). ``kind`` is ``elementwise``, ``reduce`` or ``gemm``;
    ``shape`` the elementwise shape; ``inputs``/``output_dtypes`` the dtype names of the buffers."""

    kind: str
    shape: tuple[int, ...]
    inputs: tuple[str, ...]
    ops: tuple[FusedOp, ...]
    outputs: tuple[int, ...]
    output_dtypes: tuple[str, ...]
    reduce: ReduceSpec | None = None
    gemm: GemmSpec | None = None
    #: The launches it replaces, for names and messages only (kernel names in program order).
    kernels: tuple[str, ...] = field(default=(), compare=False)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """A stable 12-hex-digit hash of the program (names generated kernels; sizes excluded)."""
        d = self.to_dict()
        d.pop("kernels", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The generated kernel's name: ``jit_<kind>_<ops>_<digest>``."""
        short = "_".join(dict.fromkeys(k for k in self.kernels if k != "load"))[:40] or self.kind
        return f"jit_{self.kind[:4]}_{short}_{self.digest}"


def compute_type(dtype: str) -> str:
    """The C type a temp of ``dtype`` is computed in."""
    return "double" if dtype == "float64" else "float"


def _lit(value: float, ctype: str) -> str:
    v = float(value)
    if v != v:
        return "(NAN)" if ctype == "float" else "((double)NAN)"
    if v in (float("inf"), float("-inf")):
        s = "INFINITY" if v > 0 else "(-INFINITY)"
        return s if ctype == "float" else f"((double){s})"
    # Decimal digits that round-trip through double, then one rounding to the compute type (as numpy
    # converts a Python float parameter to a float32 array's dtype).
    return f"(({ctype}){v!r})"


def c_load(k: int, dtype: str) -> str:
    """C expression of element ``i`` of input ``p<k>`` in its compute type. 16-bit floats go through
    ``jit_f16_ld``/``jit_bf16_ld`` (16-bit word -> float), which the backend's prelude defines."""
    if dtype == "float16":
        return f"jit_f16_ld(p{k}[i])"
    if dtype == "bfloat16":
        return f"jit_bf16_ld(p{k}[i])"
    return f"p{k}[i]"


def c_store(ptr: str, idx: str, dtype: str, value: str, storage: Mapping[str, str]) -> str:
    """C statement storing ``value`` to ``ptr[idx]`` of ``dtype`` (``storage``: dtype -> C storage type);
    16-bit floats through the prelude's ``jit_f16_st``/``jit_bf16_st`` (float -> 16-bit word, rounded)."""
    if dtype == "float16":
        return f"{ptr}[{idx}] = jit_f16_st((float)({value}));"
    if dtype == "bfloat16":
        return f"{ptr}[{idx}] = jit_bf16_st((float)({value}));"
    return f"{ptr}[{idx}] = ({storage[dtype]})({value});"


def c_round16(dtype: str, e: str) -> str:
    """C expression of float ``e`` rounded to ``dtype`` (float16 or bfloat16) and back to float."""
    return f"jit_f16_ld(jit_f16_st({e}))" if dtype == "float16" else f"jit_bf16_ld(jit_bf16_st({e}))"


def emit_c_body(
    ir: FusedIR,
    *,
    load: Callable[[int, str], str],
    rnd: Callable[[str, str], str],
    exp: Callable[[str, str], str],
    gemm: Callable[[str], str] | None = None,
) -> list[str]:
    """Statements that compute every temp of ``ir`` for one element, as ``t0``, ``t1``, ...

    ``load(k, dtype)``: an expression for input buffer ``k``'s element (in its compute type).
    ``rnd(dtype, expr)``: ``expr`` rounded to storage ``dtype`` and widened back (only called for
    float16/bfloat16). ``exp(ctype, expr)``: e to the power ``expr``. ``gemm(ctype)``: the GEMM value of
    this element (``kind == "gemm"``). Stores are the caller's: temp ``t{j}`` holds each output.
    """
    lines: list[str] = []
    for j, op in enumerate(ir.ops):
        c = compute_type(op.dtype)
        a = [f"t{i}" for i in op.args]
        k = op.kernel
        if k == "load":
            e = load(op.args[0], op.dtype)
        elif k == "gemm":
            if gemm is None:
                raise ValueError("this IR has a gemm temp but no gemm expression was given")
            e = gemm(c)
        elif k == "add":
            e = f"{a[0]} + {a[1]}"
        elif k == "sub":
            e = f"{a[0]} - {a[1]}"
        elif k == "mul":
            e = f"{a[0]} * {a[1]}"
        elif k == "div":
            e = f"{a[0]} / {a[1]}"
        # NaN in either operand propagates, like numpy: both comparisons are false and the sum is NaN.
        # Nested selects without || so compilers vectorise them.
        elif k == "maximum":
            e = f"({a[0]} > {a[1]}) ? {a[0]} : (({a[1]} >= {a[0]}) ? {a[1]} : ({a[0]} + {a[1]}))"
        elif k == "minimum":
            e = f"({a[0]} < {a[1]}) ? {a[0]} : (({a[1]} <= {a[0]}) ? {a[1]} : ({a[0]} + {a[1]}))"
        elif k == "relu":
            e = f"({a[0]} > ({c})0) ? {a[0]} : (({a[0]} <= ({c})0) ? ({c})0 : {a[0]})"
        elif k == "exp":
            e = exp(c, a[0])
        elif k == "scale":
            e = f"{a[0]} * {_lit(op.param('alpha'), c)}"
        elif k == "axpy":
            e = f"({_lit(op.param('alpha'), c)} * {a[0]}) + {a[1]}"
        elif k in ("cast", "copy"):
            e = f"({c})({a[0]})"
        elif k == "fill":
            e = _lit(op.param("value"), c)
        else:
            raise ValueError(f"kernel '{k}' cannot be fused")
        if op.dtype in ("float16", "bfloat16") and k != "load":
            e = rnd(op.dtype, f"({e})")
        lines.append(f"{c} t{j} = {e};")
    return lines


def ops_of(ir: FusedIR) -> Sequence[FusedOp]:
    """The ops of ``ir`` (for backends that walk them)."""
    return ir.ops


def param_map(op: FusedOp) -> Mapping[str, Any]:
    return dict(op.params)
