"""Reduction operators and the dtype plan every transport follows.

A collective never reduces in a dtype that loses more than the input already did:

- float16, bfloat16 and the fp8 formats are widened to float32 (the ``cast`` kernel), reduced in
  float32 and rounded once, back to the input dtype, at the end;
- bool is reduced as uint8 through a view of the same bytes: ``sum``/``max`` become logical or
  (``maximum``), ``prod``/``min`` logical and (``minimum``);
- every other dtype is reduced in itself.

``avg`` is ``sum`` followed by a multiplication by ``1 / participants`` (the ``scale`` kernel), so it
exists only for floating and complex dtypes. ``max``/``min`` are not defined for complex numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

import dsrt.dtypes as dt

from ..errors import ConfigurationError

__all__ = ["ReduceOp", "ReducePlan", "as_op", "plan_reduction", "NUMPY_OPS"]


class ReduceOp(str, Enum):
    """The reduction operators of every reducing collective."""

    SUM = "sum"
    PROD = "prod"
    MIN = "min"
    MAX = "max"
    AVG = "avg"


#: op -> the standard kernel that combines two arrays elementwise.
KERNEL_OF: dict[ReduceOp, str] = {
    ReduceOp.SUM: "add",
    ReduceOp.AVG: "add",
    ReduceOp.PROD: "mul",
    ReduceOp.MAX: "maximum",
    ReduceOp.MIN: "minimum",
}

#: op -> numpy ufunc with the same rounding as the kernel (used on host buffers between ranks).
NUMPY_OPS: dict[str, Callable[..., Any]] = {
    "add": np.add,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
}

_BOOL_KERNEL = {ReduceOp.SUM: "maximum", ReduceOp.MAX: "maximum", ReduceOp.PROD: "minimum", ReduceOp.MIN: "minimum"}


def as_op(op: Any) -> ReduceOp:
    """A :class:`ReduceOp` from itself or its name (``'sum'``, ``'avg'``...)."""
    if isinstance(op, ReduceOp):
        return op
    try:
        return ReduceOp(str(op).lower())
    except ValueError:
        raise ConfigurationError(
            f"unknown reduction op {op!r}; expected one of: {', '.join(o.value for o in ReduceOp)}"
        ) from None


@dataclass(frozen=True)
class ReducePlan:
    """How to reduce ``dtype`` with ``op``.

    ``compute``: the dtype the reduction runs in. ``kernel``: the combining kernel. ``cast``: True when
    the data is widened to ``compute`` first and rounded back at the end. ``view``: True when the bytes
    are reinterpreted as ``compute`` without conversion (bool as uint8). ``scale``: True for ``avg``.
    """

    op: ReduceOp
    dtype: np.dtype
    compute: np.dtype
    kernel: str
    cast: bool
    view: bool
    scale: bool


_PLANS: dict[tuple[Any, Any], ReducePlan] = {}


def plan_reduction(op: Any, dtype: Any) -> ReducePlan:
    """The :class:`ReducePlan` for reducing ``dtype`` with ``op``; raises for undefined combinations."""
    try:
        return _PLANS[(op, dtype)]
    except (KeyError, TypeError):
        pass
    plan = _plan(op, dtype)
    try:
        _PLANS[(op, dtype)] = plan
    except TypeError:  # unhashable description of a dtype: not cached
        pass
    return plan


def _plan(op: Any, dtype: Any) -> ReducePlan:
    o = as_op(op)
    d = dt.as_dtype(dtype)
    name = dt.dtype_name(d)
    if d == dt.bool_:
        if o is ReduceOp.AVG:
            raise ConfigurationError("reduction op 'avg' is not defined for bool; use 'sum' (logical or)")
        return ReducePlan(o, d, dt.uint8, _BOOL_KERNEL[o], cast=False, view=True, scale=False)
    is_complex = d.kind == "c"
    if is_complex and o in (ReduceOp.MAX, ReduceOp.MIN):
        raise ConfigurationError(f"reduction op '{o.value}' is not defined for complex dtype {name}")
    if o is ReduceOp.AVG and not (dt.is_float(d) or is_complex):
        raise ConfigurationError(
            f"reduction op 'avg' needs a floating or complex dtype, got {name}; reduce with 'sum' and divide"
        )
    low = dt.is_low_precision(d)
    compute = dt.float32 if low else d
    return ReducePlan(o, d, compute, KERNEL_OF[o], cast=low, view=False, scale=o is ReduceOp.AVG)


def reference(op: Any, inputs: list[np.ndarray]) -> np.ndarray:
    """The reduction of host arrays as a left fold in list order, following the same plan (tests)."""
    plan = plan_reduction(op, inputs[0].dtype)
    fn = NUMPY_OPS[plan.kernel]
    vals = [np.asarray(x).view(plan.compute) if plan.view else np.asarray(x).astype(plan.compute) for x in inputs]
    acc = vals[0].copy()
    for v in vals[1:]:
        fn(acc, v, out=acc)
    if plan.scale:
        acc = np.asarray(acc * (1.0 / len(inputs))).astype(plan.compute)
    return acc.view(plan.dtype) if plan.view else acc.astype(plan.dtype)
