"""HCCL as the transport between NPUs, through the real Communicator, against the emulated acl and libhccl.

Expected HCCL codes below are written out from the CANN documentation, not taken from dsrt_npu.hccl, so
a wrong table there fails here.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dsrt
import dsrt_cpu
import dsrt_npu
from dsrt import dtypes as dt
from dsrt.collective import Communicator, transports
from dsrt.collective.ops import reference
from dsrt.errors import CollectiveError, DsrtError
from dsrt_npu import hccl, torch_kernels
from dsrt_npu.hccl import HcclError, HcclTransport, hccl_applies

from .emulated import hccl as emulated_hccl

N = 3  # NPUs: three ranks catch root and ordering mistakes two would not
#: HcclDataType and HcclReduceOp codes (CANN hccl_types.h).
TYPE = {"int8": 0, "int16": 1, "int32": 2, "float16": 3, "float32": 4, "int64": 5, "uint8": 7, "float64": 10,
        "bfloat16": 11}
OP = {"sum": 0, "avg": 0, "prod": 1, "max": 2, "min": 3}
EMULATED_TORCH = Path(__file__).parent / "emulated_torch"


@dataclass
class Npus:
    rt: Any
    devs: list[Any]
    lib: emulated_hccl.EmulatedHccl
    acl: Any

    def comm(self, **kw: Any) -> Communicator:
        return Communicator(self.devs, runtime=self.rt, mpi=False, **kw)

    def hccl_calls(self, name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        return [c for c in self.lib.calls if name is None or c[0] == name]


def _stand_up(acl: Any, monkeypatch: Any) -> Npus:
    acl.state.devices = N
    acl.state.progress_on_query = True  # the communicator polls events, as on hardware
    (Path(os.environ["ASCEND_HOME_PATH"]) / "lib64" / "libhccl.so").write_bytes(b"")
    lib = emulated_hccl.EmulatedHccl(acl)
    monkeypatch.setattr(hccl, "load_hccl", lambda path=None: lib)
    rt = dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, dsrt_npu])
    return Npus(rt, [rt.device(f"npu:{i}") for i in range(N)], lib, acl)


@pytest.fixture
def npus(acl, monkeypatch):
    """N NPUs on ACL single operators (no torch_npu), HCCL emulated."""
    return _stand_up(acl, monkeypatch)


@pytest.fixture
def torch_npus(acl, monkeypatch):
    """N NPUs whose kernels run through torch_npu (CPU torch standing in), HCCL emulated."""
    torch = pytest.importorskip("torch", reason="the torch_npu kernel path is tested with CPU torch")
    monkeypatch.setattr(torch_kernels, "TORCH_DEVICE_TYPE", torch_kernels.TORCH_DEVICE_TYPE)  # restored after
    monkeypatch.syspath_prepend(str(EMULATED_TORCH))
    sys.modules.pop("torch_npu", None)
    import torch_npu  # noqa: F401 - installs the emulated torch.npu

    npus = _stand_up(acl, monkeypatch)
    assert npus.devs[0].info.properties["kernel_path"] == "torch_npu"
    yield npus
    sys.modules.pop("torch_npu", None)
    if hasattr(torch, "npu"):
        delattr(torch, "npu")


def _inputs(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], op: str = "sum") -> list[np.ndarray]:
    d = dt.as_dtype(dtype)
    if d == dt.bool_:
        return [rng.random(shape) < 0.5 for _ in range(N)]
    if d.kind in "iu":
        lo, hi = (-3, 4) if op == "prod" else (-40, 41)
        return [rng.integers(lo, hi, shape).astype(d) for _ in range(N)]
    if d.kind == "c":
        return [(rng.uniform(0.5, 1.5, shape) + 1j * rng.uniform(-1, 1, shape)).astype(d) for _ in range(N)]
    low, high = (0.5, 1.5) if op == "prod" else (-2.0, 2.0)
    return [rng.uniform(low, high, shape).astype(d) for _ in range(N)]


def _close(got: np.ndarray, want: np.ndarray, dtype: str, what: str = "") -> None:
    assert got.dtype == want.dtype, what
    tol = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 1e-6, "float64": 1e-12, "complex64": 1e-6}.get(dtype)
    if tol is None:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.complex128 if got.dtype.kind == "c" else np.float64),
                                   want.astype(np.complex128 if want.dtype.kind == "c" else np.float64),
                                   rtol=tol, atol=tol, err_msg=what)


# ------------------------------------------------------------------------------------------ selection
def test_the_communicator_over_npus_selects_hccl(npus):
    spec = {s.name: s for s in transports(npus.rt)}["hccl"]
    assert spec.kind == "intra" and spec.priority > {s.name: s for s in transports(npus.rt)}["inprocess"].priority
    comm = npus.comm()
    assert comm.intra_name == "hccl" and isinstance(comm.intra, HcclTransport)
    assert npus.lib.groups[-1].devices == [0, 1, 2]  # one HcclCommInitAll, rank i = npu:i
    assert Communicator(npus.devs[:1], runtime=npus.rt, mpi=False).intra_name == "inprocess"


def test_applies_is_precise(npus):
    a, b = npus.devs[0], npus.devs[1]
    assert hccl_applies([a, b]) and not hccl_applies([a]) and not hccl_applies([npus.rt.device("cpu:0"), a])
    (Path(os.environ["ASCEND_HOME_PATH"]) / "lib64" / "libhccl.so").unlink()
    assert not hccl_applies([a, b])
    assert npus.comm().intra_name == "inprocess"


def test_the_library_is_looked_for_in_the_cann_install_and_loaded_only_when_asked(acl):
    lib64 = Path(os.environ["ASCEND_HOME_PATH"]) / "lib64"
    assert hccl.find_hccl() is None
    with pytest.raises(CollectiveError, match=r"libhccl\.so not found in the CANN install's lib64"):
        hccl.load_hccl()
    (lib64 / "libhccl.so").write_bytes(b"")  # found, but not a shared library
    assert hccl.find_hccl() == lib64 / "libhccl.so"
    with pytest.raises(CollectiveError, match=r"libhccl\.so could not be loaded"):
        hccl.load_hccl()


# ------------------------------------------------------------------------------------------ collectives
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "float32"])
def test_all_reduce_matches_numpy_in_place_and_out_of_place(npus, dtype):
    comm = npus.comm()
    rng = np.random.default_rng(1)
    for op in ("sum", "prod", "max", "min"):
        if (dtype, op) == ("int16", "prod"):
            continue  # HCCL has no int16 prod: see the fallback tests
        for in_place in (True, False):
            xs = _inputs(rng, dtype, (5, 7), op)
            want = reference(op, xs)
            arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
            outs = None if in_place else [d.empty(x.shape, x.dtype) for d, x in zip(npus.devs, xs, strict=True)]
            npus.lib.calls.clear()
            got = comm.all_reduce(arrs, op, out=outs)
            for i, g in enumerate(got):
                _close(g.numpy(), want, dtype, f"{op} in_place={in_place} participant {i}")
            if not in_place:
                for a, x in zip(arrs, xs, strict=True):
                    np.testing.assert_array_equal(a.numpy(), x)
            assert [(c, r, p["params"]) for c, r, p in npus.hccl_calls()] == \
                [("HcclAllReduce", r, (35, TYPE[dtype], OP[op])) for r in range(N)]


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_reduce_to_every_root_leaves_the_others_alone(npus, dtype):
    comm = npus.comm()
    rng = np.random.default_rng(2)
    for op in ("sum", "prod", "max", "min"):
        for root in range(N):
            for in_place in (True, False):
                xs = _inputs(rng, dtype, (4, 6), op)
                arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
                outs = None if in_place else [d.asarray(np.zeros_like(x)) for d, x in zip(npus.devs, xs, strict=True)]
                npus.lib.calls.clear()
                got = comm.reduce(arrs, root, op, out=outs)
                _close(got[root].numpy(), reference(op, xs), dtype, f"{op} root={root} in_place={in_place}")
                for i in range(N):
                    if i != root or not in_place:
                        np.testing.assert_array_equal(arrs[i].numpy(), xs[i])  # inputs are left as they were
                    if not in_place and i != root:
                        assert not got[i].numpy().any()  # and so are the other outputs
                assert {(c, p["params"]) for c, _r, p in npus.hccl_calls()} == \
                    {("HcclReduce", (24, TYPE[dtype], OP[op], root))}


@pytest.mark.parametrize(("dtype", "hccl_type", "per_element"),
                         [("float32", 4, 1), ("int64", 5, 1), ("float16", 3, 1), ("bool", 0, 1), ("complex64", 0, 8)])
def test_broadcast_moves_every_dtype(npus, dtype, hccl_type, per_element):
    comm = npus.comm()
    rng = np.random.default_rng(3)
    for root in range(N):
        for in_place in (True, False):
            xs = _inputs(rng, dtype, (3, 5))
            arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
            outs = None if in_place else [d.empty(x.shape, x.dtype) for d, x in zip(npus.devs, xs, strict=True)]
            npus.lib.calls.clear()
            got = comm.broadcast(arrs, root, out=outs)
            for g in got:
                np.testing.assert_array_equal(g.numpy(), xs[root])
            assert {(c, p["params"]) for c, _r, p in npus.hccl_calls()} == \
                {("HcclBroadcast", (15 * per_element, hccl_type, root))}


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_reduce_scatter_and_all_gather_through_the_communicator(npus, dtype):
    comm = npus.comm()
    rng = np.random.default_rng(4)
    for op in ("sum", "prod", "max", "min"):
        xs = _inputs(rng, dtype, (N * 4, 3), op)
        want = reference(op, xs)
        npus.lib.calls.clear()
        got = comm.reduce_scatter([d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)], op)
        for j, g in enumerate(got):
            _close(g.numpy(), want[j * 4:(j + 1) * 4], dtype, f"{op} block {j}")
        assert [c for c, _r, _p in npus.hccl_calls()] == ["HcclReduceScatter"] * N
        assert npus.hccl_calls()[0][2]["params"] == (12, TYPE[dtype], OP[op])
    xs = _inputs(rng, dtype, (2, 3))
    for g in comm.all_gather([d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]):
        np.testing.assert_array_equal(g.numpy(), np.stack(xs))


@pytest.mark.parametrize("bounds", [[0, 4, 8, 12], [0, 5, 7, 12], [2, 6, 10, 14]])
def test_transport_all_gather_and_reduce_scatter_with_even_and_uneven_segments(npus, bounds):
    """The forms the communicator uses between processes (its hierarchical all-reduce)."""
    t = npus.comm().intra
    rng = np.random.default_rng(5)
    size = 16
    even = len({bounds[j + 1] - bounds[j] for j in range(N)}) == 1
    xs = [rng.uniform(-2, 2, size).astype(np.float32) for _ in range(N)]
    bufs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
    npus.lib.calls.clear()
    t.reduce_scatter(bufs, bounds, "add")
    assert [c for c, _r, _p in npus.hccl_calls()] == (["HcclReduceScatter"] * N if even else ["HcclReduce"] * N * N)
    total = reference("sum", xs)
    for j, b in enumerate(bufs):
        got = b.numpy()
        lo, hi = bounds[j], bounds[j + 1]
        _close(got[lo:hi], total[lo:hi], "float32", f"segment {j}")
        outside = np.r_[0:lo, hi:size]
        np.testing.assert_array_equal(got[outside], xs[j][outside])  # the rest of the buffer is untouched
    gather_in = [np.full(size, -1.0, np.float32) for _ in range(N)]
    for j in range(N):
        gather_in[j][bounds[j]:bounds[j + 1]] = j + 1 + np.arange(bounds[j + 1] - bounds[j])
    bufs = [d.asarray(x) for d, x in zip(npus.devs, gather_in, strict=True)]
    npus.lib.calls.clear()
    t.all_gather(bufs, bounds)
    assert [c for c, _r, _p in npus.hccl_calls()] == (["HcclAllGather"] * N if even else ["HcclBroadcast"] * N * N)
    want = np.full(size, -1.0, np.float32)
    for j in range(N):
        want[bounds[j]:bounds[j + 1]] = gather_in[j][bounds[j]:bounds[j + 1]]
    for b in bufs:
        np.testing.assert_array_equal(b.numpy(), want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_hccl_reduces_half_precision_natively(npus, dtype):
    """The communicator widens fp16/bf16 to float32 first; the transport itself reduces them in HCCL."""
    t = npus.comm().intra
    rng = np.random.default_rng(6)
    for kernel, op in (("add", "sum"), ("maximum", "max"), ("minimum", "min"), ("mul", "prod")):
        xs = _inputs(rng, dtype, (40,), op)
        bufs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
        npus.lib.calls.clear()
        want = reference(op, xs)
        if (dtype, kernel) == ("bfloat16", "mul"):  # not in HCCL: the fallback needs the devices' 'mul'
            with pytest.raises(CollectiveError, match=r"HCCL cannot reduce bfloat16 with 'mul'.*'mul'"):
                t.all_reduce(bufs, kernel)
            assert not npus.hccl_calls()
            continue
        assert t.all_reduce(bufs, kernel) == "hccl"
        for b in bufs:
            _close(b.numpy(), want, dtype, op)
        assert {p["params"] for _c, _r, p in npus.hccl_calls()} == {(40, TYPE[dtype], OP[op])}


def test_hccl_runs_after_earlier_stream_work_and_before_later(npus):
    """Copies queued on the streams land before HCCL reads; its results land before later copies run."""
    t = npus.comm().intra
    xs = [np.arange(8, dtype=np.float32) * (i + 1) for i in range(N)]
    src = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
    work = [d.empty((8,), np.float32) for d in npus.devs]
    after = [d.empty((8,), np.float32) for d in npus.devs]
    for d, w, s in zip(npus.devs, work, src, strict=True):
        d.copy(w, s)  # queued, not run yet
    t.all_reduce(work, "add")
    for d, a, w in zip(npus.devs, after, work, strict=True):
        d.copy(a, w)  # queued behind the all-reduce's results
    for a in after:
        np.testing.assert_array_equal(a.numpy(), sum(xs))


# ------------------------------------------------------------------------------------------ what HCCL cannot do
def test_complex64_sums_run_in_hccl_as_float32_pairs(npus):
    comm = npus.comm()
    xs = _inputs(np.random.default_rng(7), "complex64", (6,))
    arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
    comm.all_reduce(arrs, "sum")
    for a in arrs:
        _close(a.numpy(), reference("sum", xs), "complex64")
    assert {p["params"] for _c, _r, p in npus.hccl_calls("HcclAllReduce")} == {(12, TYPE["float32"], OP["sum"])}


def test_reductions_hccl_lacks_fall_back_or_say_what_is_missing(npus):
    """complex prod: not in HCCL; the in-process fallback needs the devices' 'mul', which plain ACL lacks."""
    comm = npus.comm()
    xs = _inputs(np.random.default_rng(8), "complex64", (6,))
    arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
    with pytest.raises(CollectiveError) as info:
        comm.all_reduce(arrs, "prod")
    text = str(info.value)
    assert "HCCL cannot reduce complex64 with 'mul'" in text and "kernel 'mul'" in text and "npu:0" in text
    assert isinstance(info.value, DsrtError) and not npus.hccl_calls()


def test_reductions_hccl_lacks_fall_back_to_the_devices_kernels(torch_npus):
    npus = torch_npus
    comm = npus.comm()
    rng = np.random.default_rng(9)
    for dtype, op in (("int16", "prod"), ("bool", "sum"), ("bool", "min"), ("uint8", "max")):
        xs = _inputs(rng, dtype, (3, 4), op)
        arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
        npus.lib.calls.clear()
        for a in comm.all_reduce(arrs, op):
            _close(a.numpy(), reference(op, xs), dtype, f"{dtype} {op}")
        assert not npus.hccl_calls(), f"{dtype} {op} should not reach HCCL"


def test_deterministic_mode_uses_the_fixed_order_fold(torch_npus):
    npus = torch_npus
    comm = npus.comm(deterministic=True)
    xs = _inputs(np.random.default_rng(10), "float32", (33,))
    arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
    comm.all_reduce(arrs, "sum")
    for a in arrs:
        np.testing.assert_array_equal(a.numpy(), reference("sum", xs))
    assert not npus.hccl_calls()


# ------------------------------------------------------------------------------------------ with torch_npu kernels
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_avg_and_half_precision_through_the_communicator(torch_npus, dtype):
    """The communicator's plan widens fp16/bf16 with torch 'cast' and scales avg with torch 'scale';
    HCCL must wait for that torch work (the device's fence) before it reads."""
    npus = torch_npus
    comm = npus.comm()
    rng = np.random.default_rng(11)
    for op in ("sum", "avg", "max", "min", "prod"):
        for in_place in (True, False):
            xs = _inputs(rng, dtype, (5, 6), op)
            arrs = [d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)]
            outs = None if in_place else [d.empty(x.shape, x.dtype) for d, x in zip(npus.devs, xs, strict=True)]
            npus.lib.calls.clear()
            npus.acl.state.calls.clear()
            got = comm.all_reduce(arrs, op, out=outs)
            for g in got:
                _close(g.numpy(), reference(op, xs), dtype, f"{op} in_place={in_place}")
            assert {p["params"] for _c, _r, p in npus.hccl_calls()} == {(30, TYPE["float32"], OP[op])}
            if dtype != "float32":  # torch cast before HCCL: fenced
                timeline = npus.acl.state.calls
                first = timeline.index("hccl.HcclAllReduce")
                assert timeline[:first].count("torch.npu.synchronize") >= N, timeline[:first]
    xs = _inputs(rng, dtype, (N * 2, 4), "sum")
    for j, g in enumerate(comm.reduce_scatter([d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)], "avg")):
        _close(g.numpy(), reference("avg", xs)[j * 2:(j + 1) * 2], dtype, f"reduce_scatter avg block {j}")
    got = comm.reduce([d.asarray(x) for d, x in zip(npus.devs, xs, strict=True)], 1, "avg")
    _close(got[1].numpy(), reference("avg", xs), dtype, "reduce avg")


# ------------------------------------------------------------------------------------------ errors
def test_an_hccl_error_code_surfaces_with_code_meaning_call_and_devices(npus):
    comm = npus.comm()
    arrs = [d.asarray(np.ones(4, np.float32)) for d in npus.devs]
    npus.lib._inject("HcclAllReduce", 9)
    with pytest.raises(HcclError) as info:
        comm.all_reduce(arrs, "sum")
    err = info.value
    assert isinstance(err, CollectiveError) and isinstance(err, DsrtError)
    assert err.code == 9 and err.call == "HcclAllReduce" and err.devices == ["npu:0", "npu:1", "npu:2"]
    assert "HcclAllReduce returned 9 (HCCL_E_TIMEOUT: timeout)" in str(err) and "npu:0, npu:1, npu:2" in str(err)
    # One rank failing: every result is checked, and the message names that device only.
    npus.lib._inject("HcclBroadcast", 15, rank=1)
    with pytest.raises(HcclError, match=r"HcclBroadcast returned 15 \(HCCL_E_RUNTIME: a call to the ACL runtime "
                                        r"failed\) \[libhccl: HCCL_E_RUNTIME \(emulated\)\] on npu:1$"):
        comm.broadcast(arrs, 0)
    # The communicators are still in step afterwards.
    comm.all_reduce(arrs, "sum")
    for a in arrs:
        np.testing.assert_array_equal(a.numpy(), np.full(4, 3.0, np.float32))


def test_communicator_setup_failure_names_hccl_and_the_way_around_it(npus):
    npus.lib._inject("HcclCommInitAll", 7)
    with pytest.raises(HcclError, match=r"HcclCommInitAll returned 7 \(HCCL_E_UNAVAIL: resource unavailable\).*"
                                        r"transport='inprocess'"):
        npus.comm()


def test_close_destroys_the_communicators(npus):
    t = npus.comm().intra
    t.close()
    assert npus.lib.groups[-1].alive == [False] * N
    t.close()  # once only


# ------------------------------------------------------------------------------------------ the emulation itself
def test_the_emulation_fails_loudly(npus):
    lib = emulated_hccl.EmulatedHccl(npus.acl, timeout=0.2)
    ids = (ctypes.c_int32 * N)(*range(N))
    comms = (ctypes.c_void_p * N)()
    assert lib.HcclCommInitAll(ctypes.c_uint32(N), ids, comms) == 0
    dev = npus.devs[0]
    buf = dev.asarray(np.ones(4, np.float32))
    p = ctypes.c_void_p(int(buf.allocation.handle + buf.allocation.offset))
    stream = ctypes.c_void_p(dev.default_stream.native)
    with pytest.raises(AssertionError, match="unknown function HcclAlltoAll"):
        lib.HcclAlltoAll()
    with pytest.raises(AssertionError, match="count must be"):
        lib.HcclAllReduce(p, p, ctypes.c_int32(4), ctypes.c_int(4), ctypes.c_int(0), ctypes.c_void_p(comms[0]), stream)
    # Not reducible on the emulated 910B: HCCL_E_NOT_SUPPORT, no rendezvous.
    dev._bind()
    assert lib.HcclAllReduce(p, p, ctypes.c_uint64(4), ctypes.c_int(7), ctypes.c_int(0), ctypes.c_void_p(comms[0]),
                             stream) == 5
    # One rank alone (calls not issued concurrently): it waits, then fails naming the absent ranks.
    with pytest.raises(AssertionError, match=r"waited 0.2 s for rank\(s\) \[1, 2\]"):
        lib.HcclAllReduce(p, p, ctypes.c_uint64(4), ctypes.c_int(4), ctypes.c_int(0), ctypes.c_void_p(comms[0]), stream)
    # A thread without the device's context current.
    caught: list[BaseException] = []

    def other() -> None:
        try:
            lib.HcclAllReduce(p, p, ctypes.c_uint64(4), ctypes.c_int(4), ctypes.c_int(0), ctypes.c_void_p(comms[0]),
                              stream)
        except AssertionError as exc:
            caught.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert caught and "current ACL context is none" in str(caught[0])
