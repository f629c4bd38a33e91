"""The JIT on CUDA: generated kernels (elementwise, reduction prologues, GEMM epilogues; float32/64,
float16, bfloat16) against the eager launches, and replay as CUDA graphs. The GPU tests skip without
a GPU; every generated source is compiled by NVRTC here too (NVRTC needs no driver), so a syntax error
in the generator fails without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from eager_common import run_eager

from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance
from dsrt.jit.ir import FusedIR, FusedOp, GemmSpec, ReduceSpec

cupy = pytest.importorskip("cupy", reason="CI installs cupy-cuda12x ([cuda12]); these checks need it")

DTYPES = ("float32", "float64", "float16", "bfloat16")


def _irs():
    """One IR of every kind, dtype, reduction and GEMM layout the CUDA generator accepts."""
    out = []
    for d in DTYPES:
        ops = (FusedOp("load", (0,), d), FusedOp("load", (1,), d), FusedOp("add", (0, 1), d),
               FusedOp("exp", (2,), d), FusedOp("maximum", (3, 0), d), FusedOp("axpy", (4, 1), d, (("alpha", 0.5),)),
               FusedOp("relu", (5,), d), FusedOp("fill", (), d, (("value", float("inf")),)),
               FusedOp("minimum", (6, 7), d), FusedOp("div", (8, 1), d), FusedOp("sub", (9, 0), d),
               FusedOp("scale", (10,), d, (("alpha", -1.25),)), FusedOp("copy", (11,), d))
        out.append(FusedIR("elementwise", (100,), (d, d), ops, (12, 4), (d, d), kernels=("add", "exp")))
        for k in ("reduce_sum", "reduce_max"):
            for ax in (None, -1):
                out.append(FusedIR("reduce", (10, 10), (d, d), ops, (2,), (d, d), reduce=ReduceSpec(k, 12, ax, d),
                                   kernels=("add", k)))
    casts = (FusedOp("load", (0,), "float32"), FusedOp("cast", (0,), "bfloat16"), FusedOp("cast", (1,), "float16"),
             FusedOp("cast", (2,), "float64"))
    out.append(FusedIR("elementwise", (9,), ("float32",), casts, (1, 2, 3), ("bfloat16", "float16", "float64"),
                       kernels=("cast",)))
    for d in ("float32", "float64"):
        for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
            ops = (FusedOp("gemm", (), d), FusedOp("load", (2,), d), FusedOp("add", (0, 1), d), FusedOp("relu", (2,), d))
            out.append(FusedIR("gemm", (33, 17), (d, d, d), ops, (3, 0), (d, d),
                               gemm=GemmSpec(33, 17, 20, 0.5, ta, tb, d), kernels=("gemm", "add", "relu")))
    return out


def test_every_generated_source_compiles_with_nvrtc():
    fusion = pytest.importorskip("dsrt_cuda.fusion", reason="the cuda plugin is not installed")
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - libnvrtc missing: DynamicLibNotFoundError, OSError
        pytest.skip(f"NVRTC does not load ({type(exc).__name__}); pip install nvidia-cuda-nvrtc-cu12")
    for ir in _irs():
        src = fusion.generate(ir)
        prog = nvrtc.createProgram(src, f"{ir.name}.cu", (), ())
        try:
            try:
                nvrtc.compileProgram(prog, ["-arch=compute_80", *fusion.NVCC_OPTIONS])
            except nvrtc.NVRTCError:
                pytest.fail(f"{ir.name} does not compile:\n{nvrtc.getProgramLog(prog)}\n{src}")
        finally:
            nvrtc.destroyProgram(prog)


def _close(got, want, dtype, accumulate=1):
    err = relative_error(got.numpy().astype(np.float64), want.numpy().astype(np.float64))
    assert err <= tolerance(dtype, accumulate=accumulate), err


def _arr(dev, shape, dtype, rng, lo=-1.0, hi=1.0):
    return dev.asarray(rng.uniform(lo, hi, shape).astype(np.float32).astype(dt.as_dtype(dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_chains_round_like_the_eager_launches(rt, gpu, dtype):
    def fn(x, y):
        t = rt.launch("axpy", rt.launch("mul", x, y), x, alpha=0.5)
        return rt.launch("relu", rt.launch("sub", rt.launch("exp", t), y))

    rng = np.random.default_rng(1)
    f = rt.jit(fn)
    x, y = _arr(gpu, 70001, dtype, rng), _arr(gpu, 70001, dtype, rng)
    f(x, y)
    got = f(x, y)
    assert f.explain().summary["fused_kernels"] == 1, f.explain()
    _close(got, run_eager(fn, x, y), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["reduce_sum", "reduce_max"])
@pytest.mark.parametrize("shape, axis", [((300, 1000), None), ((300, 1000), -1), ((3, 200000), -1), ((7,), None)])
def test_reduction_prologues(rt, gpu, dtype, kernel, shape, axis):
    def fn(x, y):
        return rt.launch(kernel, rt.launch("exp", rt.launch("mul", x, y)), axis=axis)

    rng = np.random.default_rng(2)
    f = rt.jit(fn)
    x, y = _arr(gpu, shape, dtype, rng), _arr(gpu, shape, dtype, rng)
    f(x, y)
    for _ in range(2):  # twice: the whole-array reduction's counter must be reset by the kernel
        got = f(x, y)
        assert [g["kind"] for g in f.explain().groups] == ["reduce"], f.explain()
        _close(got, run_eager(fn, x, y), dtype, accumulate=shape[-1] if axis == -1 else int(np.prod(shape)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_epilogues(rt, gpu, dtype, trans_a, trans_b):
    m, k, n = 67, 45, 33
    rng = np.random.default_rng(3)
    a = _arr(gpu, (k, m) if trans_a else (m, k), dtype, rng)
    b = _arr(gpu, (n, k) if trans_b else (k, n), dtype, rng)
    bias = _arr(gpu, (m, n), dtype, rng)

    def fn(a, b, bias):
        g = rt.launch("gemm", a, b, alpha=0.5, trans_a=trans_a, trans_b=trans_b)
        return rt.launch("relu", rt.launch("add", g, bias))

    f = rt.jit(fn)
    f(a, b, bias)
    got = f(a, b, bias)
    assert [g["kind"] for g in f.explain().groups] == ["gemm"], f.explain()
    _close(got, run_eager(fn, a, b, bias), dtype, accumulate=k)


def test_replay_is_a_cuda_graph_keyed_by_addresses(rt, gpu):
    def fn(x, y):
        a = rt.launch("exp", rt.launch("mul", x, y))
        s = rt.launch("softmax", a.reshape(10, -1))  # unfused: replayed plainly between graphs
        return rt.launch("add", s.reshape(-1), x), rt.launch("reduce_sum", a)

    rng = np.random.default_rng(4)
    f = rt.jit(fn)
    x, y = _arr(gpu, 10000, "float32", rng), _arr(gpu, 10000, "float32", rng)
    f(x, y)
    outs = (gpu.empty(10000), gpu.empty(()))
    for _ in range(3):
        got = f(x, y, out=outs)
    want = run_eager(fn, x, y)
    _close(got[0], want[0], "float32")
    _close(got[1], want[1], "float32", accumulate=10000)
    ex = f.explain()
    captured = [s for s in ex.summary["replay"] if s["captured"]]
    assert captured and all(s["captures"] == 1 and s["hits"] == 2 for s in captured), ex
    assert any("softmax" in s["reason"] for s in ex.summary["replay"] if not s["captured"]), ex
    x2 = _arr(gpu, 10000, "float32", rng)
    got = f(x2, y)  # new addresses: captured again, never written through a stale graph
    _close(got[0], run_eager(fn, x2, y)[0], "float32")
