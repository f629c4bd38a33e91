"""The torch_npu kernel path, against the emulated acl with CPU torch standing in for the NPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dsrt
import dsrt_cpu
import dsrt_npu
from dsrt import dtypes as dt
from dsrt.array import Array
from dsrt_npu import torch_kernels

from .conftest import EMULATED, make_cann

torch = pytest.importorskip("torch", reason="torch not installed: the torch_npu path is tested with CPU torch")
EMULATED_TORCH = Path(__file__).parent / "emulated_torch"


@pytest.fixture
def torch_npu(acl, monkeypatch):
    """The emulated torch_npu, importable and imported; undone afterwards so other tests see ACL ops."""
    monkeypatch.setattr(torch_kernels, "TORCH_DEVICE_TYPE", torch_kernels.TORCH_DEVICE_TYPE)  # restored after
    monkeypatch.syspath_prepend(str(EMULATED_TORCH))
    sys.modules.pop("torch_npu", None)
    import torch_npu as emulated

    emulated.calls.clear()
    yield emulated
    sys.modules.pop("torch_npu", None)
    if hasattr(torch, "npu"):
        delattr(torch, "npu")


def npu_device():
    return dsrt.Runtime(autoload=False, plugins=[dsrt_cpu, dsrt_npu]).device("npu:0")


def test_standard_kernels_run_through_torch_and_match_numpy(torch_npu):
    npu = npu_device()
    assert npu.info.properties["kernel_path"] == "torch_npu"
    rng = np.random.default_rng(2)
    for name in ("float16", "bfloat16", "float32"):
        d = dt.as_dtype(name)
        a, b = (rng.uniform(-2, 2, (19, 23)).astype(d) for _ in range(2))
        tol = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 1e-6}[name]
        for kernel in ("add", "mul", "div", "maximum", "exp", "softmax"):
            args = (a, b) if kernel in ("add", "mul", "div", "maximum") else (a,)
            got = npu.launch(kernel, *[npu.asarray(x) for x in args]).numpy()
            want = dsrt.kernels.reference(kernel, *args)
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol,
                                       err_msg=f"{kernel} {name}")
        got = npu.launch("gemm", npu.asarray(a), npu.asarray(b), trans_b=True, alpha=0.5).numpy()
        want = dsrt.kernels.reference("gemm", a, b, trans_b=True, alpha=0.5)
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=8 * tol, atol=8 * tol)
    q = rng.integers(-127, 128, (8, 16)).astype(np.int8)
    r = rng.integers(-127, 128, (16, 4)).astype(np.int8)
    np.testing.assert_array_equal(npu.launch("qgemm_int8", npu.asarray(q), npu.asarray(r)).numpy(),
                                  q.astype(np.int32) @ r.astype(np.int32))
    i = rng.integers(-50, 50, 1000).astype(np.int32)
    assert npu.launch("reduce_sum", npu.asarray(i)).numpy() == i.astype(np.int64).sum()


def test_strided_views_are_read_in_place(torch_npu):
    npu = npu_device()
    x = np.arange(60, dtype=np.float32).reshape(6, 10)
    arr = npu.asarray(x)
    col = Array(npu, (6,), arr.dtype, arr.allocation, strides=(40,), byte_offset=12)  # column 3: every tenth element
    got = npu.launch("scale", col, alpha=2.0).numpy()
    np.testing.assert_array_equal(got, x[:, 3] * 2)


def test_torch_waits_for_the_acl_stream_and_acl_waits_for_torch(torch_npu, acl):
    npu = npu_device()
    src = npu.asarray(np.full(64, 3.0, np.float32))
    dst = npu.empty((64,), "float32")
    npu.copy(dst, src)  # acl.rt.memcpy_async: queued on dsrt's stream, not yet run (emulated acl)
    out = npu.launch("add", dst, dst)  # torch must see the copy's result
    acl.state.calls.clear()
    host = out.numpy()  # the device-to-host copy must wait for torch's stream first
    np.testing.assert_array_equal(host, np.full(64, 6.0, np.float32))
    assert "torch.npu.synchronize" in acl.state.calls and "rt.memcpy" in acl.state.calls
    assert acl.state.calls.index("torch.npu.synchronize") < acl.state.calls.index("rt.memcpy")


def test_arrays_and_tensors_are_exchanged_without_copies(torch_npu):
    npu = npu_device()
    a = npu.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = npu.to_torch(a)
    assert tuple(t.shape) == (3, 4) and t.dtype == torch.float32
    t.mul_(10)  # torch writes the array's own memory
    np.testing.assert_array_equal(a.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4) * 10)
    b = npu.from_torch(t[1:])  # and a dsrt array over the tensor's memory
    assert b.shape == (2, 4)
    t[1, 0] = -1.0
    np.testing.assert_array_equal(b.numpy()[0], [-1.0, 50.0, 60.0, 70.0])
    doubled = npu.launch("add", b, b).numpy()
    np.testing.assert_array_equal(doubled[1], [160.0, 180.0, 200.0, 220.0])


def test_unsupported_pairs_are_declared_not_faked(torch_npu):
    npu = npu_device()
    assert npu.supports("gemm", "float16") and npu.supports("add", "int32")
    assert not npu.supports("gemm", "float64") and not npu.supports("exp", "float64")
    assert npu.supports("copy", "float64")  # held, moved, cast; not computed on AI cores
    assert "complex64" not in npu.info.dtypes
    with pytest.raises(dsrt.UnsupportedKernelError, match="npu:0: kernel 'exp'"):
        npu.launch("exp", npu.asarray(np.ones(3, np.float64)))


def test_without_torch_npu_the_acl_single_operators_remain(acl):
    npu = npu_device()
    assert npu.info.properties["kernel_path"].startswith("acl.op single operators (torch_npu not importable")
    with pytest.raises(dsrt.ConfigurationError, match="npu:0: to_torch needs torch_npu"):
        npu.to_torch(npu.asarray(np.ones(2, np.float16)))


def test_conformance_kit_passes_through_torch_npu(tmp_path):
    env = {**os.environ, **make_cann(tmp_path), "PYTHONPATH": os.pathsep.join([str(EMULATED), str(EMULATED_TORCH)]),
           "DSRT_PLUGINS": "cpu,npu"}
    env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "dsrt.testing", "--dsrt-backend", "npu",
                          "-p", "no:cacheprovider", "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
