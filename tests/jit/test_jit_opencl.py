"""The JIT on OpenCL: elementwise groups, reduction prologues and GEMM epilogues each become one
generated OpenCL C kernel, for float16, bfloat16, float32 and float64 (where the device has it).

Replays are compared with the eager launches (``DSRT_JIT=off``) and numpy at the kit's tolerance.
float16 runs on a second device object over ``opencl:0`` that claims float16 through the core
``vload_half``/``vstore_half`` storage functions (as tests/opencl does), so it runs without
``cl_khr_fp16``.
"""

from __future__ import annotations

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance

DTYPES = ("float16", "bfloat16", "float32", "float64")
RNG = np.random.default_rng(11)


@pytest.fixture()
def dev_for(ocl, ocl_fp16):
    def pick(name: str) -> dsrt.Device:
        dev = ocl_fp16 if name == "float16" else ocl
        if name not in dev.info.dtypes:
            pytest.skip(f"{dev.id} does not run {name}")
        return dev
    return pick


def _arr(dev, shape, dtype="float32", lo=-1.0, hi=1.0):
    return dev.asarray(RNG.uniform(lo, hi, shape).astype(dt.as_dtype(dtype)))


def _np(a) -> np.ndarray:
    return np.asarray(a.numpy() if hasattr(a, "numpy") else a).astype(np.float64)


def _close(got, want, dtype, accumulate=1):
    err = relative_error(_np(got), _np(want))
    assert err <= tolerance(dtype, accumulate=accumulate), (dtype, err)


def _fused_on(f, dev, kind: str, kernels: list[str]) -> dict:
    """The explanation's group of ``kind`` on ``dev``: one generated kernel holding ``kernels``."""
    ex = f.explain()
    groups = [g for g in ex.groups if g["kind"] == kind and g["fused"] and g["device"] == dev.id]
    assert len(groups) == 1, str(ex)
    g = groups[0]
    assert g["kernels"] == kernels and g["name"].startswith(f"jit_{kind[:4]}_"), str(ex)
    assert f"{g['name']} on {dev.id}: fused {len(kernels)} launches" in str(ex)
    return g


def _source(f, name: str) -> str:
    step = next(s for s in f.graphs[0].steps if s.name == name)
    return step.source


def _chain(rt):
    def chain(x, y):
        u = rt.launch("add", rt.launch("mul", x, y), x)
        v = rt.launch("exp", rt.launch("scale", u, alpha=0.5))
        m = rt.launch("maximum", rt.launch("sub", v, y), x)
        return rt.launch("axpy", rt.launch("relu", m), y, alpha=2.0)
    return chain


@pytest.mark.parametrize("name", DTYPES)
def test_elementwise_chain_fuses_per_dtype(rt, dev_for, off, name):
    dev = dev_for(name)
    fn = _chain(rt)
    f = rt.jit(fn)
    x, y = _arr(dev, 3001, name), _arr(dev, 3001, name)
    f(x, y)
    got = f(x, y)
    assert f.stats["replays"] == 1
    _fused_on(f, dev, "elementwise", ["mul", "add", "scale", "exp", "sub", "maximum", "relu", "axpy"])
    assert f.explain().summary["fused_kernels"] == 1
    _close(got, off(fn, x, y), name)
    x2 = _arr(dev, 3001, name)
    got2 = f(x2, y)
    _close(got2, off(fn, x2, y), name)
    assert relative_error(_np(got2), _np(got)) > 1e-2


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_16bit_temps_round_after_every_operation(rt, dev_for, off, name):
    """(x + big) - big is 0 for 0 < x < 1 only if x + big is rounded to the dtype (spacing 2 at 2048
    for float16, at 256 for bfloat16) before the subtraction, as the eager launches store it; the
    same rounding feeds a reduction prologue."""
    dev = dev_for(name)
    big = 2048.0 if name == "float16" else 256.0

    def fn(x, y):
        d = rt.launch("sub", rt.launch("add", x, y), y)
        return d, rt.launch("reduce_sum", rt.launch("add", d, x), axis=-1)

    f = rt.jit(fn)
    x = _arr(dev, (4, 500), name, 0.05, 0.9)
    y = dev.asarray(np.full((4, 500), big, dt.as_dtype(name)))
    f(x, y)
    d, s = f(x, y)
    # one kernel: the reduction's prologue also stores d
    _fused_on(f, dev, "reduce", ["add", "sub", "add", "reduce_sum"])
    np.testing.assert_array_equal(_np(d), np.zeros((4, 500)))
    ed, es = off(fn, x, y)
    np.testing.assert_array_equal(_np(d), _np(ed))
    _close(s, es, name, accumulate=500)
    _close(s, _np(x).sum(-1), name, accumulate=500)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("shape", [(64, 100), (2, 6000)], ids=["one-pass", "partials"])
def test_reduction_prologue_fuses_per_dtype(rt, dev_for, off, name, shape):
    """Sum over the last axis (with the product also stored), softmax's pieces (max of everything,
    sum of exp of a difference), each with its elementwise prologue in the same kernel. Rows of
    (2, 6000) are split over several work-groups (a partials pass and a second kernel), rows of
    (64, 100) are not."""
    dev = dev_for(name)

    def fn(x, y):
        p = rt.launch("mul", x, y)
        s = rt.launch("reduce_sum", p, axis=-1)
        m = rt.launch("reduce_max", rt.launch("add", x, y))
        e = rt.launch("reduce_sum", rt.launch("exp", rt.launch("sub", x, y)), axis=-1)
        return s, p, m, e

    f = rt.jit(fn)
    x, y = _arr(dev, shape, name), _arr(dev, shape, name)
    f(x, y)
    got = f(x, y)
    ex = f.explain()
    reduces = [g for g in ex.groups if g["kind"] == "reduce"]
    assert len(reduces) == 3 and all(g["fused"] and g["device"] == dev.id for g in reduces), str(ex)
    assert ex.summary["fused_kernels"] == 3 and ex.summary["steps"] == 3, str(ex)
    assert [g["kernels"] for g in reduces] == [["mul", "reduce_sum"], ["add", "reduce_max"],
                                                ["sub", "exp", "reduce_sum"]]
    # rows of the last axis split only for (2, 6000); the whole-array max always does at these sizes
    split = [shape[0] == 2, True, shape[0] == 2]
    assert [f"{g['name']}_s2" in _source(f, g["name"]) for g in reduces] == split
    want = off(fn, x, y)
    cols = shape[1]
    for g, w, acc in zip(got, want, (cols, 1, 1, cols), strict=True):
        _close(g, w, name, accumulate=acc)
    hx, hy = _np(x), _np(y)
    ref = [(hx * hy).sum(-1), hx * hy, (hx + hy).max(), np.exp(hx - hy).sum(-1)]
    for g, r, acc in zip(got, ref, (cols, 1, 1, cols), strict=True):
        # against float64 numpy: the inputs' products and exps round once more per element
        _close(g, r, name, accumulate=4 * acc)
    x2 = _arr(dev, shape, name)
    got2 = f(x2, y)
    for g, w, acc in zip(got2, off(fn, x2, y), (cols, 1, 1, cols), strict=True):
        _close(g, w, name, accumulate=acc)
    assert relative_error(_np(got2[0]), _np(got[0])) > 1e-2


def test_reduction_max_propagates_nan_and_empty_rows_sum_to_zero(rt, ocl):
    f = rt.jit(lambda x: rt.launch("reduce_max", rt.launch("scale", x, alpha=2.0), axis=-1))
    h = RNG.uniform(-1, 1, (4, 300)).astype(np.float32)
    h[2, 123] = np.nan
    x = ocl.asarray(h)
    f(x)
    got = f(x).numpy()
    assert np.isnan(got[2]) and not np.isnan(got[[0, 1, 3]]).any()
    np.testing.assert_array_equal(got[[0, 1, 3]], (h * 2).max(-1)[[0, 1, 3]])
    g = rt.jit(lambda x: rt.launch("reduce_sum", rt.launch("exp", x), axis=-1))
    for shape in ((0, 5), (3, 0)):
        e = ocl.asarray(np.zeros(shape, np.float32))
        g(e)
        np.testing.assert_array_equal(g(e).numpy(), np.zeros(shape[0], np.float32))


@pytest.mark.parametrize("name", DTYPES)
def test_gemm_epilogue_fuses_per_dtype(rt, dev_for, off, name):
    """GEMM (transposed A, alpha) with a bias, relu and (16-bit dtypes) a cast in the epilogue; the
    GEMM value is also returned so the kernel stores it too. GEMM itself runs in float32 for the
    16-bit dtypes (the JIT fuses float32/float64 GEMMs), the epilogue in the dtype."""
    dev = dev_for(name)
    g_dtype = name if name == "float64" else "float32"
    m, k, n = 37, 70, 45  # ragged against the micro-kernel's 6-row, 16-column blocks

    def fn(a, b, bias):
        c = rt.launch("gemm", a, b, trans_a=True, alpha=0.5)
        low = c if name in ("float32", "float64") else rt.launch("cast", c, dtype=name)
        return rt.launch("relu", rt.launch("add", low, bias)), c

    f = rt.jit(fn)
    a, b, bias = _arr(dev, (k, m), g_dtype), _arr(dev, (k, n), g_dtype), _arr(dev, (m, n), name, -0.5, 0.5)
    f(a, b, bias)
    got, c = f(a, b, bias)
    kernels = ["gemm", *([] if name == g_dtype else ["cast"]), "add", "relu"]
    g = _fused_on(f, dev, "gemm", kernels)
    assert f.explain().summary["fused_kernels"] == 1
    assert g["bytes_not_materialized"] > 0
    want, wc = off(fn, a, b, bias)
    _close(got, want, name, accumulate=k)
    _close(c, wc, g_dtype, accumulate=k)
    ref = np.maximum(0.5 * _np(a).T @ _np(b) + _np(bias), 0)
    _close(got, ref, name, accumulate=k)
    b2 = _arr(dev, (k, n), g_dtype)
    got2, _ = f(a, b2, bias)
    _close(got2, off(fn, a, b2, bias)[0], name, accumulate=k)
    assert relative_error(_np(got2), _np(got)) > 1e-2


def test_mlp_step_on_opencl(rt, ocl, off):
    bsz, d, h, o = 16, 40, 96, 10
    w1, w2 = _arr(ocl, (d, h)), _arr(ocl, (o, h))
    b1, b2 = _arr(ocl, (bsz, h)), _arr(ocl, (bsz, o))

    def mlp(x):
        h1 = rt.launch("relu", rt.launch("add", rt.launch("gemm", x, w1), b1))
        return rt.launch("softmax", rt.launch("add", rt.launch("gemm", h1, w2, trans_b=True), b2))

    f = rt.jit(mlp)
    x = _arr(ocl, (bsz, d))
    f(x)
    got = f(x)
    ex = f.explain()
    assert sum(1 for g in ex.groups if g["kind"] == "gemm" and g["fused"] and g["device"] == ocl.id) == 2, str(ex)
    _close(got, off(mlp, x), "float32", accumulate=h)
