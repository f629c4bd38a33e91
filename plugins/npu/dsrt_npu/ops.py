"""ACL single-operator execution (``acl.op.execute_v2``) for the kernels CANN runs without torch_npu.

Used ops (CANN operator list): ``MatMul`` (attrs ``transpose_x1``, ``transpose_x2``; float16 inputs ->
float16 output, int8 inputs -> int32 output), ``Muls`` (attr ``value``: y = x * value) and ``Axpy``
(attr ``alpha``: y = x1 + alpha * x2). Descriptors and buffers are created per call and destroyed
after it, whatever happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from dsrt import dtypes as dt

from .acl_errors import check

__all__ = ["ACL_DTYPES", "ACL_FORMAT_ND", "execute"]

#: aclDataType codes.
ACL_DTYPES: dict[np.dtype, int] = {
    dt.float32: 0, dt.float16: 1, dt.int8: 2, dt.int32: 3, dt.uint8: 4, dt.int16: 6, dt.int64: 9,
    dt.float64: 11, dt.bool_: 12, dt.bfloat16: 27,
}
ACL_FORMAT_ND = 2


def _desc(acl: Any, stack: ExitStack, dtype: np.dtype, shape: Sequence[int]) -> Any:
    desc = acl.create_tensor_desc(ACL_DTYPES[dtype], list(shape), ACL_FORMAT_ND)
    stack.callback(acl.destroy_tensor_desc, desc)
    return desc


def _buffer(acl: Any, stack: ExitStack, ptr: int, nbytes: int) -> Any:
    buf = acl.create_data_buffer(ptr, nbytes)
    stack.callback(acl.destroy_data_buffer, buf)
    return buf


def execute(
    acl: Any,
    op: str,
    inputs: Sequence[tuple[int, np.dtype, Sequence[int]]],
    outputs: Sequence[tuple[int, np.dtype, Sequence[int]]],
    attrs: Mapping[str, bool | float],
    stream: Any,
    device: str,
) -> None:
    """Run ``op`` on (pointer, dtype, shape) operands, enqueued on ``stream``."""
    with ExitStack() as stack:
        attr = acl.op.create_attr()
        stack.callback(acl.op.destroy_attr, attr)
        for key, value in attrs.items():
            if isinstance(value, bool):
                check(acl.op.set_attr_bool(attr, key, int(value)), "acl.op.set_attr_bool", device=device)
            else:
                check(acl.op.set_attr_float(attr, key, float(value)), "acl.op.set_attr_float", device=device)
        in_desc = [_desc(acl, stack, d, s) for _p, d, s in inputs]
        out_desc = [_desc(acl, stack, d, s) for _p, d, s in outputs]
        in_buf = [_buffer(acl, stack, p, int(np.prod(s)) * d.itemsize) for p, d, s in inputs]
        out_buf = [_buffer(acl, stack, p, int(np.prod(s)) * d.itemsize) for p, d, s in outputs]
        ret = acl.op.execute_v2(op, in_desc, in_buf, out_desc, out_buf, attr, stream)
        check(ret, f"acl.op.execute_v2({op})", device=device)
