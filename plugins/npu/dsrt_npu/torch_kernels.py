"""The standard kernel set through torch_npu, on zero-copy torch views of dsrt's ACL memory.

Memory stays where the dsrt pool put it (``acl.rt.malloc``): a kernel wraps each operand's device
bytes as a torch tensor that does not own them (``torch._C._construct_storage_from_data_pointer``,
the same non-owning storage torch builds for CUDA graph pools) and runs ATen operations on it, so
nothing is copied in or out. ``torch.npu`` mirrors ``torch.cuda``: the operations go to torch's
current stream on the device, not to dsrt's ACL stream, hence two fences kept by
:class:`TorchNpu`: before torch work the ACL stream is drained (so copies queued there have landed),
and after it the next ACL operation first waits for torch's stream (``dirty``).

Numerics follow dsrt's references: float16 and bfloat16 compute in float32 and round once; sums and
products accumulate in :func:`dsrt.dtypes.accumulation_dtype`. Claimed dtypes are what Ascend's AI
cores compute (float16, bfloat16, float32, the integer types and bool); float64 is held in memory but
not claimed for arithmetic (it would fall back to the AI CPU), and complex and fp8 are not held.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.device import KernelImpl, Stream
from dsrt.errors import ShapeError
from dsrt.kernels import KERNELS

__all__ = ["TORCH_DEVICE_TYPE", "TorchNpu", "find_torch_npu", "torch_kernel_table"]

#: The torch device type of Ascend NPUs (torch_npu renames torch's PrivateUse1 backend to this).
TORCH_DEVICE_TYPE = "npu"

#: Dtypes the kernels compute in (the rest of ACL's dtypes are only held: copy and cast).
_COMPUTED = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16", "float32"})
_HELD = _COMPUTED | {"float64"}


def find_torch_npu() -> tuple[Any, str]:
    """``(torch, "")`` when torch and torch_npu import and an NPU is visible, else ``(None, reason)``."""
    try:
        torch = importlib.import_module("torch")
        importlib.import_module("torch_npu")
    except ImportError as exc:
        return None, f"torch_npu not importable ({exc})"
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available():
        return None, "torch_npu imported but torch.npu.is_available() is False"
    if not hasattr(torch._C, "_construct_storage_from_data_pointer"):
        return None, f"torch {torch.__version__} cannot wrap device pointers (needs torch >= 2.1)"
    return torch, ""


class TorchNpu:
    """torch's side of one NPU: zero-copy tensor views of dsrt arrays and the stream fences.

    Owned by its :class:`~dsrt_npu.device.NpuDevice`; holds no memory of its own.
    """

    def __init__(self, torch: Any, index: int) -> None:
        self.torch = torch
        self.device = torch.device(TORCH_DEVICE_TYPE, index)
        self.dirty = False  # torch work was queued since the last fence
        self._dtypes = {
            dt.bool_: torch.bool, dt.int8: torch.int8, dt.int16: torch.int16, dt.int32: torch.int32,
            dt.int64: torch.int64, dt.uint8: torch.uint8, dt.float16: torch.float16, dt.bfloat16: torch.bfloat16,
            dt.float32: torch.float32, dt.float64: torch.float64,
        }

    def torch_dtype(self, dtype: np.dtype) -> Any:
        try:
            return self._dtypes[dtype]
        except KeyError:
            raise ShapeError(f"{self.device}: dtype {dt.dtype_name(dtype)} has no torch_npu equivalent") from None

    def view(self, a: Array, pointer: int) -> Any:
        """A torch tensor over ``a``'s bytes at device address ``pointer`` (no copy; borrows them)."""
        item = a.dtype.itemsize
        if any(s < 0 or s % item for s in a.strides):
            raise ShapeError(f"{self.device}: torch views need non-negative strides in whole elements, "
                             f"got {a.strides} bytes")
        span = item + sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True)) if a.size else 0
        t = self.torch.empty(0, dtype=self.torch_dtype(a.dtype), device=self.device)
        # The storage takes the tensor's own (normalised) device, which set_ insists on.
        storage = self.torch._C._construct_storage_from_data_pointer(pointer, t.device, span)
        return t.set_(storage, 0, tuple(a.shape), tuple(s // item for s in a.strides))

    def fence(self) -> None:
        """Wait for torch work queued on this device (before ACL touches the same memory)."""
        if self.dirty:
            self.torch.npu.synchronize(self.device)
            self.dirty = False


# ---------------------------------------------------------------------------------------- kernels
# An implementation gets torch views: (inputs, out, params, torch module).
TorchImpl = Callable[[Sequence[Any], Any, Mapping[str, Any], Any], None]


def _up(t: Any, torch: Any) -> Any:
    """float32 values of a float16/bfloat16 tensor, else the tensor itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _acc(t: Any, torch: Any) -> Any:
    """The torch dtype dsrt's references accumulate ``t``'s values in (see accumulation_dtype)."""
    if t.dtype == torch.float64:
        return torch.float64
    return torch.float32 if t.dtype.is_floating_point else torch.int64


def _elementwise(fn: Callable[..., Any]) -> TorchImpl:
    def impl(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
        out.copy_(fn(*[_up(x, torch) for x in xs], params, torch))
    return impl


def _binary(op: str) -> TorchImpl:
    def impl(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
        a, b = xs
        if a.dtype in (torch.float16, torch.bfloat16):
            out.copy_(getattr(torch, op)(a.float(), b.float()))
        else:
            getattr(torch, op)(a, b, out=out)
    return impl


def _relu(x: Any, p: Mapping[str, Any], torch: Any) -> Any:
    return torch.clamp_min(x, 0)


def _reduce_sum(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    x = xs[0]
    acc = _acc(x, torch)
    res = torch.sum(x.to(acc)) if params["axis"] is None else torch.sum(x.to(acc), dim=-1)
    out.copy_(res)


def _reduce_max(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    x = _up(xs[0], torch)
    out.copy_(torch.amax(x) if params["axis"] is None else torch.amax(x, dim=-1))


def _dot(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    x, y = xs
    acc = _acc(x, torch)
    out.copy_(torch.dot(x.to(acc), y.to(acc)))


def _gemm(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    a, b = xs[0], xs[1]
    acc = _acc(a, torch)
    aa = a.to(acc).t() if params["trans_a"] else a.to(acc)
    bb = b.to(acc).t() if params["trans_b"] else b.to(acc)
    res = torch.matmul(aa, bb)
    if params["alpha"] != 1:
        res = res * params["alpha"]
    if len(xs) == 3 and params["beta"] != 0:
        res = res + params["beta"] * xs[2].to(acc)
    out.copy_(res)


def _softmax(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    out.copy_(torch.softmax(_up(xs[0], torch), dim=-1))


def _scale_of(x: Any, scale: Any, axis: Any) -> Any:
    if axis is None:
        return scale.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def _quantize(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    x, scale = xs
    q = torch.round(x.float() / _scale_of(x, scale, params["axis"]))  # half to even, like numpy.rint
    out.copy_(torch.clamp(q, -127, 127).to(torch.int8))


def _dequantize(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    q, scale = xs
    out.copy_(q.float() * _scale_of(q, scale, params["axis"]))


def _qgemm(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    torch.matmul(xs[0].to(torch.int32), xs[1].to(torch.int32), out=out)


def _fill(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    out.fill_(params["value"])


def _copy(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    out.copy_(xs[0])


def _cast(xs: Sequence[Any], out: Any, params: Mapping[str, Any], torch: Any) -> None:
    x = xs[0]
    if x.dtype in (torch.float16, torch.bfloat16) and out.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # between two 16-bit formats through float32, like dsrt's reference
    out.copy_(x)


def _claim(name: str, among: frozenset[str] = _COMPUTED) -> frozenset[str]:
    return KERNELS[name].dtypes & among


_IMPLS: dict[str, tuple[frozenset[str], TorchImpl]] = {
    "copy": (_claim("copy", _HELD), _copy),
    "fill": (_claim("fill", _HELD), _fill),
    "cast": (_claim("cast", _HELD), _cast),
    "add": (_claim("add"), _binary("add")),
    "sub": (_claim("sub") - {"bool"}, _binary("sub")),
    "mul": (_claim("mul"), _binary("mul")),
    "div": (_claim("div"), _binary("div")),
    "maximum": (_claim("maximum"), _binary("maximum")),
    "minimum": (_claim("minimum"), _binary("minimum")),
    "exp": (_claim("exp"), _elementwise(lambda x, p, torch: torch.exp(x))),
    "relu": (_claim("relu"), _elementwise(_relu)),
    "scale": (_claim("scale"), _elementwise(lambda x, p, torch: x * p["alpha"])),
    "axpy": (_claim("axpy"), _elementwise(lambda x, y, p, torch: p["alpha"] * x + y)),
    "reduce_sum": (_claim("reduce_sum"), _reduce_sum),
    "reduce_max": (_claim("reduce_max"), _reduce_max),
    "dot": (_claim("dot"), _dot),
    "gemm": (_claim("gemm"), _gemm),
    "softmax": (_claim("softmax"), _softmax),
    "quantize_int8": (_claim("quantize_int8"), _quantize),
    "dequantize_int8": (_claim("dequantize_int8"), _dequantize),
    "qgemm_int8": (_claim("qgemm_int8"), _qgemm),
}


def torch_kernel_table(bridge: TorchNpu, pointer: Callable[[Array], int],
                       before: Callable[[Stream], None]) -> dict[str, tuple[frozenset[str], KernelImpl]]:
    """dsrt kernel implementations running ``_IMPLS`` on views made by ``bridge``.

    ``pointer(array)`` is the device address of an array's first element; ``before(stream)`` runs
    before any torch work is queued (the device drains its ACL stream there).
    """
    torch = bridge.torch

    def wrap(fn: TorchImpl) -> KernelImpl:
        def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
            before(stream)
            views = [bridge.view(a, pointer(a)) for a in inputs]
            fn(views, bridge.view(out, pointer(out)), params, torch)
            bridge.dirty = True
        return impl

    return {name: (dtypes, wrap(fn)) for name, (dtypes, fn) in _IMPLS.items() if dtypes}
