"""Launchers of the standard kernel set on an :class:`~dsrt_opencl.device.OpenCLDevice`.

Each launcher picks the program for its dtype (built once, then cached in memory and on disk), sizes
the launch from the device limits and enqueues on the stream without waiting. Temporaries (GEMM
panels, reduction partials) come from the device's pool; the driver keeps them alive until the
kernels that use them finish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt.device import KernelImpl, Stream
from dsrt.errors import ShapeError, UnsupportedKernelError
from dsrt.kernels import KERNELS

from .cltypes import CTYPES
from .source import GEMM_RM, bits_program, cast_program, dtype_program

if TYPE_CHECKING:
    from .device import OpenCLDevice

__all__ = ["table", "get_kernel", "pack_gemm_operands", "micro_work_group", "reduce_segments"]

_U64 = np.uint64
_NP_OF_C = {"float": np.float32, "double": np.float64, "long": np.int64, "int": np.int32, "short": np.int16,
            "char": np.int8, "uchar": np.uint8}
_BITS_NP = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
#: Kernels this backend implements (task kernels and complex dtypes are not offered).
IMPLEMENTED = ("copy", "add", "sub", "mul", "div", "maximum", "minimum", "exp", "relu", "scale", "axpy",
               "fill", "cast", "reduce_sum", "reduce_max", "dot", "gemm", "softmax", "quantize_int8",
               "dequantize_int8", "qgemm_int8")


def _dtype_kernels(name: str) -> set[str]:
    return {k for k in IMPLEMENTED if name in KERNELS[k].dtypes and k not in ("copy", "fill", "cast")}


def _source(dev: OpenCLDevice, family: tuple[str, Any]) -> str:
    kind, arg = family
    if kind == "dtype":
        return dtype_program(arg, _dtype_kernels(arg), dev.tuning)
    if kind == "cast":
        return cast_program(arg, sorted(dev.info.dtypes), dev.tuning)
    return bits_program(arg, dev.tuning)


def get_kernel(dev: OpenCLDevice, family: tuple[str, Any], name: str) -> Any:
    """The ``cl.Kernel`` ``name`` of program ``family`` (built on first use)."""
    cache = dev.kernel_objects
    kern = cache.get((family, name))
    if kern is None:
        prg, _hit = dev.programs.build(_source(dev, family), dev.build_options, name=name, persist=False)
        kern = dev.cl.Kernel(prg, f"dsrt_{name}")
        cache[(family, name)] = kern
    return kern


def _eo(a: Array) -> np.uint64:
    """Element offset of ``a`` inside its buffer."""
    off = a.handle_offset
    if off % a.dtype.itemsize:
        raise ShapeError(f"{a.device.id}: array starts {off} bytes into its buffer, not a multiple of its"
                         f" {a.dtype.itemsize}-byte elements")
    return _U64(off // a.dtype.itemsize)


def _buf(a: Array) -> Any:
    return a.handle


def _ceil(n: int, m: int) -> int:
    return -(-n // m) * m


def _ew_size(dev: OpenCLDevice, n: int) -> tuple[tuple[int], tuple[int], np.uint64]:
    """Global size, local size and chunk (elements per work-group) of an elementwise launch: at least
    ``EWL * 64`` elements per group, at most ``ew_groups`` groups (a few per compute unit on CPUs)."""
    ewl = dev.tuning.ewl
    groups = max(1, min(-(-n // (ewl * 64)), dev.ew_groups))
    chunk = -(-n // groups)
    return (groups * ewl,), (ewl,), _U64(chunk)


def _scalar(d: np.dtype, value: Any) -> Any:
    return _NP_OF_C[CTYPES[dt.dtype_name(d)].compute](value)


# --------------------------------------------------------------------------- elementwise
def _elementwise(name: str) -> KernelImpl:
    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        dev: OpenCLDevice = out.device  # type: ignore[assignment]
        kern = get_kernel(dev, ("dtype", dt.dtype_name(out.dtype)), name)
        args: list[Any] = []
        for a in inputs:
            args += [_buf(a), _eo(a)]
        gs, ls, chunk = _ew_size(dev, out.size)
        args += [_buf(out), _eo(out), _U64(out.size), chunk]
        if "alpha" in params:
            args.append(_scalar(out.dtype, params["alpha"]))
        dev.enqueue(kern, stream, gs, ls, *args)

    return impl


def _copy(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    dev: OpenCLDevice = out.device  # type: ignore[assignment]
    x = inputs[0]
    kern = get_kernel(dev, ("bits", out.dtype.itemsize), "copy")
    gs, ls, chunk = _ew_size(dev, out.size)
    dev.enqueue(kern, stream, gs, ls, _buf(x), _eo(x), _buf(out), _eo(out), _U64(out.size), chunk)


def _fill(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    dev: OpenCLDevice = out.device  # type: ignore[assignment]
    size = out.dtype.itemsize
    bits = np.asarray(params["value"]).astype(out.dtype).reshape(1).view(_BITS_NP[size])[0]
    kern = get_kernel(dev, ("bits", size), "fill")
    gs, ls, chunk = _ew_size(dev, out.size)
    dev.enqueue(kern, stream, gs, ls, _buf(out), _eo(out), _U64(out.size), chunk, bits)


def _cast(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    dev: OpenCLDevice = out.device  # type: ignore[assignment]
    x = inputs[0]
    target = dt.dtype_name(out.dtype)
    if target not in dev.info.dtypes:
        raise UnsupportedKernelError(kernel="cast", device=dev.id, dtype=target, supported=sorted(dev.info.dtypes))
    if x.dtype == out.dtype:
        _copy(inputs, out, params, stream)
        return
    kern = get_kernel(dev, ("cast", dt.dtype_name(x.dtype)), f"cast_to_{target}")
    gs, ls, chunk = _ew_size(dev, out.size)
    dev.enqueue(kern, stream, gs, ls, _buf(x), _eo(x), _buf(out), _eo(out), _U64(out.size), chunk)


# --------------------------------------------------------------------------- reductions
def reduce_segments(dev: OpenCLDevice, rows: int, cols: int) -> int:
    """Work-groups per row of a reduction (``rows`` >= 1): long rows are split so every compute unit
    has work; 1 means one pass writes the result, more a pass of partials and a second pass."""
    want = max(1, (dev.info.compute_units * 4) // rows)
    return max(1, min(-(-cols // (dev.tuning.rwg * 4)), want, 1024))


def _reduce(name: str) -> KernelImpl:
    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        dev: OpenCLDevice = out.device  # type: ignore[assignment]
        x = inputs[0]
        c = CTYPES[dt.dtype_name(x.dtype)]
        family = ("dtype", c.name)
        if name == "reduce_sum":
            acc = np.dtype(np.int64) if not c.is_float else np.dtype(_NP_OF_C[c.compute])
        else:
            acc = np.dtype(_NP_OF_C[c.compute])
        if params.get("axis") is None:
            rows, cols = 1, x.size
        else:
            cols = x.shape[-1]
            rows = x.size // cols if cols else int(np.prod(x.shape[:-1]))
        if rows == 0:
            return
        rwg = dev.tuning.rwg
        ins: list[Any] = []
        for a in inputs:
            ins += [_buf(a), _eo(a)]
        nseg = reduce_segments(dev, rows, cols)
        if nseg == 1:
            kern = get_kernel(dev, family, f"{name}_fin")
            dev.enqueue(kern, stream, (rwg, rows), (rwg, 1), *ins, _buf(out), _eo(out), _U64(cols), _U64(cols))
            return
        chunk = -(-cols // nseg)
        part = dev.empty((rows * nseg,), acc, stream=stream)
        s1 = get_kernel(dev, family, f"{name}_s1")
        dev.enqueue(s1, stream, (rwg * nseg, rows), (rwg, 1), *ins, _buf(part), _eo(part), _U64(cols), _U64(chunk))
        s2 = get_kernel(dev, family, f"{name}_s2")
        dev.enqueue(s2, stream, (rwg, rows), (rwg, 1), _buf(part), _eo(part), _buf(out), _eo(out), _U64(nseg),
                    _U64(nseg))

    return impl


def _softmax(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    dev: OpenCLDevice = out.device  # type: ignore[assignment]
    x = inputs[0]
    cols = x.shape[-1]
    rows = x.size // cols if cols else 0
    if rows == 0:
        return
    rwg = dev.tuning.rwg
    kern = get_kernel(dev, ("dtype", dt.dtype_name(x.dtype)), "softmax")
    dev.enqueue(kern, stream, (rwg * rows,), (rwg,), _buf(x), _eo(x), _buf(out), _eo(out), _U64(cols))


# --------------------------------------------------------------------------- int8 quantization
def _channels(x: Array, axis: Any) -> tuple[int, int]:
    if axis is None:
        return 1, 1
    ax = axis % x.ndim
    return int(np.prod(x.shape[ax + 1:])), int(x.shape[ax])


def _quant(name: str) -> KernelImpl:
    def impl(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
        dev: OpenCLDevice = out.device  # type: ignore[assignment]
        x, s = inputs
        inner, ch = _channels(x, params.get("axis"))
        kern = get_kernel(dev, ("dtype", dt.dtype_name(x.dtype)), name)
        gs, ls, chunk = _ew_size(dev, out.size)
        dev.enqueue(kern, stream, gs, ls, _buf(x), _eo(x), _buf(s), _eo(s), _buf(out), _eo(out),
                    _U64(out.size), chunk, _U64(inner), _U64(ch))

    return impl


# --------------------------------------------------------------------------- GEMM
def micro_work_group(dev: OpenCLDevice, kern: Any) -> int:
    """Work-items per GEMM work-group (they share one staged A panel), from the kernel's limits."""
    cl = dev.cl
    limit = int(kern.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, dev.cl_device))
    pref = int(kern.get_work_group_info(cl.kernel_work_group_info.PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                        dev.cl_device))
    return max(1, min(limit, max(pref, 4)))


def pack_gemm_operands(dev: OpenCLDevice, a: Array, b: Array, m: int, n: int, k: int, ta: bool, tb: bool,
                       stream: Stream, quantized: bool = False) -> tuple[Array, Array, int]:
    """Enqueue ``pack_a``/``pack_b`` of ``op(A)`` (``m x k``) and ``op(B)`` (``k x n``) into fresh panels
    from the device's pool (compute type; the driver keeps them alive until the kernels finish).
    Returns ``(A panels, B panels, njb)``: the micro-kernel's operands and its count of column blocks."""
    c = CTYPES[dt.dtype_name(a.dtype)]
    family = ("dtype", c.name)
    prefix = "q" if quantized else ""
    compute = np.dtype(np.int32) if quantized else np.dtype(_NP_OF_C[c.compute])
    nr = 2 * c.vector
    mp = _ceil(m, GEMM_RM)
    njb = -(-n // nr)
    ap = dev.empty((mp * k,), compute, stream=stream)
    bp = dev.empty((njb * nr * k,), compute, stream=stream)
    sai, sak = (1, m) if ta else (k, 1)
    sbk, sbj = (1, k) if tb else (n, 1)
    u32 = np.uint32
    dev.enqueue(get_kernel(dev, family, f"{prefix}pack_a"), stream, (k, mp), None, _buf(a), _eo(a), _U64(sai),
                _U64(sak), _buf(ap), _eo(ap), u32(m), u32(k))
    dev.enqueue(get_kernel(dev, family, f"{prefix}pack_b"), stream, (njb * nr, k), None, _buf(b), _eo(b), _U64(sbk),
                _U64(sbj), _buf(bp), _eo(bp), u32(k), u32(n))
    return ap, bp, njb


def _run_gemm(dev: OpenCLDevice, inputs: Sequence[Array], out: Array, params: Mapping[str, Any],
              stream: Stream, quantized: bool) -> None:
    a, b = inputs[0], inputs[1]
    ta, tb = bool(params.get("trans_a")), bool(params.get("trans_b"))
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    family = ("dtype", dt.dtype_name(a.dtype))
    prefix = "q" if quantized else ""
    u32 = np.uint32
    ap, bp, njb = pack_gemm_operands(dev, a, b, m, n, k, ta, tb, stream, quantized)
    micro = get_kernel(dev, family, f"{prefix}gemm")
    wg = dev.work_group_sizes.get(id(micro))
    if wg is None:
        wg = dev.work_group_sizes[id(micro)] = micro_work_group(dev, micro)
    args: list[Any] = [_buf(ap), _eo(ap), _buf(bp), _eo(bp), _buf(out), _eo(out), u32(m), u32(n), u32(k), u32(njb)]
    if not quantized:
        cin = inputs[2] if len(inputs) == 3 and params["beta"] != 0 else None
        args += [_buf(cin if cin is not None else out), _eo(cin if cin is not None else out),
                 _scalar(a.dtype, params["alpha"]), _scalar(a.dtype, params["beta"]), np.int32(cin is not None)]
    dev.enqueue(micro, stream, (_ceil(njb, wg), -(-m // GEMM_RM)), (wg, 1), *args)


def _gemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    _run_gemm(out.device, inputs, out, params, stream, False)  # type: ignore[arg-type]


def _qgemm(inputs: Sequence[Array], out: Array, params: Mapping[str, Any], stream: Stream) -> None:
    _run_gemm(out.device, inputs, out, params, stream, True)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- table
_SPECIAL: dict[str, KernelImpl] = {
    "copy": _copy, "fill": _fill, "cast": _cast, "reduce_sum": _reduce("reduce_sum"),
    "reduce_max": _reduce("reduce_max"), "dot": _reduce("dot"), "softmax": _softmax,
    "quantize_int8": _quant("quantize_int8"), "dequantize_int8": _quant("dequantize_int8"), "gemm": _gemm,
    "qgemm_int8": _qgemm,
}


def table(dtypes: frozenset[str]) -> dict[str, tuple[frozenset[str], KernelImpl]]:
    """``{kernel: (dtype names, impl)}`` for a device that stores ``dtypes``."""
    out: dict[str, tuple[frozenset[str], KernelImpl]] = {}
    for name in IMPLEMENTED:
        names = frozenset(KERNELS[name].dtypes & dtypes)
        if names:
            out[name] = (names, _SPECIAL.get(name) or _elementwise(name))
    return out

