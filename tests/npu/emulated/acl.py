"""An emulated pyACL module for dsrt's tests. It lives in the test suite only.

It follows the documented pyACL conventions over host memory: calls return ``ret`` codes or
``(value, ret)`` tuples; ``acl.rt.malloc`` rounds up to 32 bytes and adds 32; copies check their kind
against where the pointers live; asynchronous work (``memcpy_async``, ``acl.op.execute_v2``) is queued
on its stream and runs only when the stream is synchronized, in order, so a missing synchronize shows
up as wrong data; events complete when the stream has run past them. Any call it does not know fails
loudly with AssertionError. ``_inject(call, code)`` makes the next call of ``call`` return ``code``.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections import deque
from typing import Any

import ml_dtypes
import numpy as np

_SUCCESS = 0
_TOTAL = 1 << 30
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.uint8, 6: np.int16, 9: np.int64,
           11: np.float64, 12: np.bool_, 27: ml_dtypes.bfloat16}


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.initialised = False
        self.devices = 1
        self.current_device: int | None = None
        self.current_context: Any = None
        self.contexts: set[int] = set()
        self.allocations: dict[int, np.ndarray] = {}
        self.reserved = 0
        self.streams: dict[int, deque] = {}
        self.events: dict[int, tuple[int, int]] = {}
        self.executed: dict[int, int] = {}
        self.enqueued: dict[int, int] = {}
        self.inject: dict[str, int] = {}
        self.calls: list[str] = []
        self.ids = itertools.count(1)
        # Bookkeeping for emulated libraries sharing this ACL (the emulated hccl): which device a
        # context and a stream belong to, and each thread's current context (ACL's is per thread).
        self.context_devices: dict[int, int] = {}
        self.stream_devices: dict[int, int | None] = {}
        self.thread_contexts: dict[int, Any] = {}
        # Opt-in: a polled event first runs its stream's queued work up to it, as a real device would
        # have progressed on its own by then (for callers that poll, like the collective communicator).
        self.progress_on_query = False


state = _State()


def _inject(call: str, code: int) -> None:
    """Make the next call of ``call`` (e.g. 'rt.malloc') return ``code``."""
    state.inject[call] = code


def _failed(call: str) -> int:
    state.calls.append(call)
    return state.inject.pop(call, _SUCCESS)


def _device_buffer(ptr: int, nbytes: int) -> np.ndarray | None:
    for base, buf in state.allocations.items():
        if base <= ptr and ptr + nbytes <= base + buf.size:
            return buf
    return None


def _view(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr))[:nbytes]


def _require_context() -> None:
    assert state.initialised, "acl call before acl.init"
    assert state.current_context is not None, "acl call without a current context (acl.rt.set_context)"


class _Namespace:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"emulated acl: unknown call {type(self).__name__}.{name}")


def init(config_path: str | None = None) -> int:
    if (code := _failed("init")) != _SUCCESS:
        return code
    if state.initialised:
        return 100002
    state.initialised = True
    return _SUCCESS


def finalize() -> int:
    state.initialised = False
    return _SUCCESS


def get_soc_name() -> str:
    return "Ascend910B (emulated)"


def create_tensor_desc(dtype: int, dims: list[int], fmt: int) -> tuple:
    assert dtype in _DTYPES and fmt == 2, f"emulated acl: tensor desc {dtype}/{fmt}"
    return ("desc", dtype, tuple(int(d) for d in dims))


def destroy_tensor_desc(desc: tuple) -> int:
    return _SUCCESS


def create_data_buffer(ptr: int, size: int) -> tuple:
    assert _device_buffer(ptr, size) is not None, "data buffer outside device memory"
    return ("buf", ptr, size)


def destroy_data_buffer(buf: tuple) -> int:
    return _SUCCESS


class rt(_Namespace):
    pass


class op(_Namespace):
    pass


def _rt(fn):
    setattr(rt, fn.__name__, staticmethod(fn))
    return fn


def _op(fn):
    setattr(op, fn.__name__, staticmethod(fn))
    return fn


@_rt
def get_device_count() -> tuple[int, int]:
    assert state.initialised, "get_device_count before acl.init"
    return state.devices, _failed("rt.get_device_count")


@_rt
def set_device(device_id: int) -> int:
    if device_id >= state.devices:
        return 107001
    state.current_device = device_id
    return _failed("rt.set_device")


@_rt
def reset_device(device_id: int) -> int:
    return _SUCCESS


@_rt
def create_context(device_id: int) -> tuple[int, int]:
    ctx = next(state.ids)
    state.contexts.add(ctx)
    state.current_context = ctx
    state.context_devices[ctx] = device_id
    state.thread_contexts[threading.get_ident()] = ctx
    return ctx, _failed("rt.create_context")


@_rt
def set_context(ctx: int) -> int:
    if ctx not in state.contexts:
        return 107002
    state.current_context = ctx
    state.thread_contexts[threading.get_ident()] = ctx
    return _SUCCESS


@_rt
def destroy_context(ctx: int) -> int:
    state.contexts.discard(ctx)
    return _SUCCESS


@_rt
def get_mem_info(attr: int) -> tuple[int, int, int]:
    assert attr == 1, "emulated acl: only ACL_HBM_MEM"
    return _TOTAL - state.reserved, _TOTAL, _SUCCESS


@_rt
def malloc(size: int, policy: int) -> tuple[int, int]:
    _require_context()
    if (code := _failed("rt.malloc")) != _SUCCESS:
        return 0, code
    real = ((size + 31) // 32) * 32 + 32
    if state.reserved + real > _TOTAL:
        return 0, 207001
    buf = np.zeros(real, np.uint8)
    state.allocations[buf.ctypes.data] = buf
    state.reserved += real
    return buf.ctypes.data, _SUCCESS


@_rt
def free(ptr: int) -> int:
    _require_context()
    buf = state.allocations.pop(ptr, None)
    if buf is None:
        return 107000
    state.reserved -= buf.size
    return _SUCCESS


def _check_copy(dst: int, dest_max: int, src: int, count: int, kind: int) -> int:
    if count > dest_max:
        return 100000
    dst_dev = _device_buffer(dst, count) is not None
    src_dev = _device_buffer(src, count) is not None
    expected = {0: (False, False), 1: (True, False), 2: (False, True), 3: (True, True)}.get(kind)
    if expected is None or (dst_dev, src_dev) != expected:
        return 107000
    return _SUCCESS


@_rt
def memcpy(dst: int, dest_max: int, src: int, count: int, kind: int) -> int:
    _require_context()
    if (code := _failed("rt.memcpy")) != _SUCCESS:
        return code
    if (code := _check_copy(dst, dest_max, src, count, kind)) != _SUCCESS:
        return code
    ctypes.memmove(dst, src, count)
    return _SUCCESS


@_rt
def memcpy_async(dst: int, dest_max: int, src: int, count: int, kind: int, stream: int) -> int:
    _require_context()
    if (code := _check_copy(dst, dest_max, src, count, kind)) != _SUCCESS:
        return code
    if kind != 3:
        return 107000  # host memory would have to be page-locked; dsrt never does this
    _enqueue(stream, lambda: ctypes.memmove(dst, src, count))
    return _SUCCESS


def _enqueue(stream: int, fn) -> None:
    assert stream in state.streams, "unknown stream"
    state.streams[stream].append(fn)
    state.enqueued[stream] += 1


@_rt
def create_stream() -> tuple[int, int]:
    _require_context()
    s = next(state.ids)
    state.stream_devices[s] = state.context_devices.get(state.current_context)
    state.streams[s] = deque()
    state.executed[s] = 0
    state.enqueued[s] = 0
    return s, _SUCCESS


@_rt
def destroy_stream(stream: int) -> int:
    state.streams.pop(stream, None)
    return _SUCCESS


@_rt
def synchronize_stream(stream: int) -> int:
    if (code := _failed("rt.synchronize_stream")) != _SUCCESS:
        return code
    queue = state.streams[stream]
    while queue:
        queue.popleft()()
        state.executed[stream] += 1
    return _SUCCESS


@_rt
def create_event() -> tuple[int, int]:
    return next(state.ids), _SUCCESS


@_rt
def record_event(event: int, stream: int) -> int:
    state.events[event] = (stream, state.enqueued[stream])
    return _SUCCESS


@_rt
def query_event_status(event: int) -> tuple[int, int]:
    stream, position = state.events[event]
    if state.progress_on_query:
        queue = state.streams[stream]
        while state.executed[stream] < position and queue:
            queue.popleft()()
            state.executed[stream] += 1
    return (1 if state.executed[stream] >= position else 0), _SUCCESS


@_rt
def synchronize_event(event: int) -> int:
    stream, _ = state.events[event]
    return synchronize_stream(stream)


@_rt
def event_elapsed_time(start: int, end: int) -> tuple[float, int]:
    for ev in (start, end):
        stream, position = state.events[ev]
        if state.executed[stream] < position:
            return 0.0, 107000  # not complete
    return 0.0, _SUCCESS


@_op
def create_attr() -> dict:
    return {}


@_op
def destroy_attr(attr: dict) -> int:
    return _SUCCESS


@_op
def set_attr_bool(attr: dict, name: str, value: int) -> int:
    attr[name] = bool(value)
    return _SUCCESS


@_op
def set_attr_float(attr: dict, name: str, value: float) -> int:
    attr[name] = float(value)
    return _SUCCESS


def _tensor(desc: tuple, buf: tuple) -> np.ndarray:
    _, dtype, dims = desc
    _, ptr, size = buf
    d = np.dtype(_DTYPES[dtype])
    assert size == int(np.prod(dims)) * d.itemsize, "buffer size does not match its descriptor"
    return _view(ptr, size).view(d).reshape(dims)


@_op
def execute_v2(name: str, in_desc: list, in_buf: list, out_desc: list, out_buf: list, attr: dict, stream: int) -> int:
    _require_context()
    if (code := _failed(f"op.{name}")) != _SUCCESS:
        return code

    def run() -> None:
        xs = [_tensor(d, b) for d, b in zip(in_desc, in_buf, strict=True)]
        (y,) = [_tensor(d, b) for d, b in zip(out_desc, out_buf, strict=True)]
        if name == "MatMul":
            a = xs[0].T if attr.get("transpose_x1") else xs[0]
            b = xs[1].T if attr.get("transpose_x2") else xs[1]
            if a.dtype == np.int8:
                y[...] = a.astype(np.int32) @ b.astype(np.int32)
            else:  # the cube unit accumulates fp16 products in fp32
                y[...] = (a.astype(np.float32) @ b.astype(np.float32)).astype(y.dtype)
        elif name == "Muls":
            y[...] = (xs[0].astype(np.float32) * np.float32(attr["value"])).astype(y.dtype)
        elif name == "Axpy":
            y[...] = (xs[0].astype(np.float32) + np.float32(attr["alpha"]) * xs[1].astype(np.float32)).astype(y.dtype)
        else:
            raise AssertionError(f"emulated acl: unknown operator {name}")

    if name not in ("MatMul", "Muls", "Axpy"):
        raise AssertionError(f"emulated acl: unknown operator {name}")
    _enqueue(stream, run)
    return _SUCCESS


# ---------------------------------------------------------------------------------------------------
# Helpers for emulated libraries that work on this ACL's memory and streams (tests/npu/emulated/hccl.py).


def _thread_device() -> int | None:
    """The device of the calling thread's current context (None when it never set one)."""
    ctx = state.thread_contexts.get(threading.get_ident())
    return None if ctx is None or ctx not in state.contexts else state.context_devices.get(ctx)


def _stream_device(stream: int) -> int | None:
    """The device whose context created ``stream``."""
    assert stream in state.streams, f"emulated acl: unknown stream {stream}"
    return state.stream_devices.get(stream)


def _drain(stream: int) -> None:
    """Run the work queued on ``stream`` so far, in order (what reaching this point of the stream means)."""
    assert stream in state.streams, f"emulated acl: unknown stream {stream}"
    queue = state.streams[stream]
    while queue:
        queue.popleft()()
        state.executed[stream] += 1


def _device_view(ptr: int, nbytes: int) -> np.ndarray:
    """The ``nbytes`` bytes of device memory at ``ptr`` as a writable uint8 view; fails unless they lie
    inside one allocation."""
    assert _device_buffer(ptr, nbytes) is not None, f"emulated acl: {nbytes} bytes at {ptr:#x} are not device memory"
    return _view(ptr, nbytes)
