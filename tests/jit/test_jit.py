"""The JIT: capture, fusion, memory plan, replay; compared with the eager run at the kit's tolerance."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import dsrt
from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance
from dsrt.jit import FusedIR, FusedOp, Graph, emit_c_body

RNG = np.random.default_rng(7)


def _arr(dev, n, dtype="float32", lo=-1.0, hi=1.0):
    return dev.asarray(RNG.uniform(lo, hi, n).astype(dt.as_dtype(dtype)))


def _close(got, want, dtype, accumulate=1):
    err = relative_error(np.asarray(got.numpy() if hasattr(got, "numpy") else got).astype(np.float64),
                         np.asarray(want.numpy() if hasattr(want, "numpy") else want).astype(np.float64))
    assert err <= tolerance(dtype, accumulate=accumulate), err


def _chain(rt):
    def chain(x, y):
        t = rt.launch("mul", x, y)
        u = rt.launch("add", t, x)
        v = rt.launch("scale", u, alpha=0.5)
        w = rt.launch("exp", v)
        z = rt.launch("sub", w, y)
        m = rt.launch("maximum", z, x)
        r = rt.launch("relu", m)
        return rt.launch("axpy", r, y, alpha=2.0)
    return chain


def test_chain_fuses_into_one_kernel_and_replays_like_eager(rt, cpu, off):
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 5000), _arr(cpu, 5000)
    first = f(x, y)
    again = f(x, y)
    assert f.stats == {"traces": 1, "replays": 1, "eager": 0}
    ex = f.explain()
    assert ex.summary["fused_kernels"] == 1 and ex.summary["steps"] == 1, str(ex)
    assert ex.groups[0]["kernels"] == ["mul", "add", "scale", "exp", "sub", "maximum", "relu", "axpy"]
    assert ex.groups[0]["bytes_not_materialized"] == 7 * 5000 * 4
    _close(again, first, "float32")
    _close(again, off(f, x, y), "float32")


def test_new_input_data_changes_the_result(rt, cpu, off):
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 777), _arr(cpu, 777)
    f(x, y)
    x2 = _arr(cpu, 777)
    got = f(x2, y)
    assert f.stats["replays"] == 1
    _close(got, off(f, x2, y), "float32")
    assert relative_error(got.numpy(), f(x, y).numpy()) > 1e-3


def test_replays_allocate_only_the_results(rt, cpu):
    f = rt.jit(lambda x, y: rt.launch("reduce_sum", rt.launch("exp", rt.launch("add", x, y))))
    x, y = _arr(cpu, 4096), _arr(cpu, 4096)
    f(x, y)
    f(x, y)
    before = cpu.pool.counters.num_allocs
    for _ in range(5):
        f(x, y)
    assert cpu.pool.counters.num_allocs - before == 5  # one fresh result per replay, nothing else


def test_signature_change_traces_again_and_the_cache_is_bounded(rt, cpu):
    f = rt.jit(lambda x: rt.launch("exp", rt.launch("add", x, x)), cache_size=2)
    for n in (10, 20, 30, 10):
        f(_arr(cpu, n))
    assert f.stats["traces"] == 4 and len(f.graphs) == 2
    f(_arr(cpu, 30))
    assert f.stats["replays"] == 1
    f(_arr(cpu, 30, "float64"))
    assert f.stats["traces"] == 5


def test_static_parameters_are_part_of_the_signature(rt, cpu, off):
    f = rt.jit(lambda x, a: rt.launch("exp", rt.launch("scale", x, alpha=a)))
    x = _arr(cpu, 64)
    f(x, 0.5)
    got = f(x, 2.0)
    assert f.stats["traces"] == 2
    _close(got, off(f, x, 2.0), "float32")


def test_dsrt_jit_off_runs_eagerly(rt, cpu, monkeypatch):
    f = rt.jit(_chain(rt))
    monkeypatch.setenv("DSRT_JIT", "off")
    x, y = _arr(cpu, 100), _arr(cpu, 100)
    a, b = f(x, y), f(x, y)
    assert f.stats == {"traces": 0, "replays": 0, "eager": 2}
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_inplace_launch_into_an_input_is_written_back(rt, cpu, off):
    def step(acc, x):
        rt.launch("add", acc, x, out=acc)
        t = rt.launch("exp", rt.launch("scale", acc, alpha=0.25))
        rt.launch("mul", t, x, out=acc)
        return acc

    f = rt.jit(step)
    host_acc = RNG.uniform(-1, 1, 300).astype(np.float32)
    x = _arr(cpu, 300)
    acc_e = cpu.asarray(host_acc)
    acc_j = cpu.asarray(host_acc)
    for _ in range(3):
        off(step, acc_e, x)
        res = f(acc_j, x)
        assert res is acc_j
    assert f.stats["replays"] == 2 and f.explain().summary["writebacks"] == 1
    _close(acc_j, acc_e, "float32")


def test_dead_launches_are_dropped_and_views_follow(rt, cpu, off):
    def fn(x):
        rt.launch("exp", x)  # result unused
        y = rt.launch("add", x, x)
        return y.reshape(2, -1)

    f = rt.jit(fn)
    x = _arr(cpu, 64)
    f(x)
    got = f(x)
    assert got.shape == (2, 32)
    assert f.explain().summary["dropped_launches"] == 1
    _close(got, off(fn, x), "float32")


def test_reduction_prologue_and_rows(rt, cpu, off):
    def fn(x, y):
        s = rt.launch("reduce_sum", rt.launch("mul", x, y), axis=-1)
        m = rt.launch("reduce_max", rt.launch("exp", x))
        return s, m

    f = rt.jit(fn)
    x, y = _arr(cpu, 64 * 100).reshape(64, 100), _arr(cpu, 6400).reshape(64, 100)
    f(x, y)
    s, m = f(x, y)
    es, em = off(fn, x, y)
    kinds = [g["kind"] for g in f.explain().groups]
    assert kinds.count("reduce") == 2, f.explain()
    _close(s, es, "float32", accumulate=100)
    _close(m, em, "float32")


def test_mlp_gemm_epilogue_and_planned_peak(rt, cpu, off):
    b, d, h, o = 32, 64, 128, 16
    w1, w2 = _arr(cpu, d * h).reshape(d, h), _arr(cpu, h * o).reshape(h, o)
    b1, b2 = _arr(cpu, b * h).reshape(b, h), _arr(cpu, b * o).reshape(b, o)

    def mlp(x):
        h1 = rt.launch("relu", rt.launch("add", rt.launch("gemm", x, w1), b1))
        return rt.launch("softmax", rt.launch("add", rt.launch("gemm", h1, w2), b2))

    f = rt.jit(mlp)
    x = _arr(cpu, b * d).reshape(b, d)
    f(x)
    got = f(x)
    ex = f.explain()
    assert any(g["kind"] == "gemm" and g["fused"] for g in ex.groups), ex
    assert ex.summary["planned_peak_bytes"] <= ex.summary["eager_peak_bytes"], ex
    _close(got, off(mlp, x), "float32", accumulate=h)


def test_low_precision_chains_round_like_the_references(rt, cpu, off):
    for name in ("float16", "bfloat16"):
        fn = _chain(rt)
        f = rt.jit(fn)
        x, y = _arr(cpu, 1000, name), _arr(cpu, 1000, name)
        f(x, y)
        got = f(x, y)
        assert f.explain().summary["fused_kernels"] == 1
        _close(got, off(fn, x, y), name)


def test_capture_block_and_replay_with_out(rt, cpu, off):
    x, y = _arr(cpu, 256), _arr(cpu, 256)
    with rt.capture(x, y) as g:
        t = rt.launch("add", x, y)
        g.output(rt.launch("exp", t))
    assert isinstance(g, Graph) and g.replayable
    x2 = _arr(cpu, 256)
    got = g.replay(x2, y)
    _close(got, rt.launch("exp", rt.launch("add", x2, y)), "float32")
    dst = cpu.empty(256)
    assert g.replay(x2, y, out=dst) is dst
    _close(dst, got, "float32")
    with pytest.raises(dsrt.ShapeError, match="input 0 must be float32"):
        g.replay(_arr(cpu, 8), y)
    with pytest.raises(dsrt.ShapeError, match="shares memory"):
        g.replay(x2, y, out=x2)


def test_arrays_made_inside_are_not_replayed_stale(rt, cpu, off):
    def fn(x):
        host = x.numpy()  # host round trip: the array below depends on the input's data
        return rt.launch("add", x, cpu.asarray(host))

    f = rt.jit(fn)
    x = _arr(cpu, 16)
    f(x)
    assert not f.graphs[0].replayable and "made inside" in f.graphs[0].reason
    x2 = _arr(cpu, 16)
    _close(f(x2), off(fn, x2), "float32")


def test_trace_shows_fused_kernels_and_sources_are_dumped(rt, cpu, tmp_path, monkeypatch):
    monkeypatch.setenv("DSRT_JIT_DUMP", str(tmp_path))
    f = rt.jit(lambda x: rt.launch("exp", rt.launch("sub", rt.launch("mul", x, x), x)))
    x = _arr(cpu, 32, "float64")
    f(x)
    with rt.trace(str(tmp_path / "t.json")):
        f(x)
    name = f.explain().groups[0]["name"]
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert any(e["name"] == name for e in events)
    assert (tmp_path / f"{name}.c").read_text().count(name) == 1
    assert (tmp_path / f"{name}.ir.json").exists()


def test_unfused_replay_without_a_code_generator(rt, cpu, off):
    fn = _chain(rt)
    f = rt.jit(fn, fuse=False)
    x, y = _arr(cpu, 100), _arr(cpu, 100)
    f(x, y)
    got = f(x, y)
    assert f.explain().summary["fused_kernels"] == 0
    _close(got, off(fn, x, y), "float32")


def test_nested_jit_inlines_and_default_runtime_export(rt, cpu):
    inner = dsrt.jit(lambda x: rt.launch("exp", x))
    outer = rt.jit(lambda x: rt.launch("add", inner(x), x))
    x = _arr(cpu, 10)
    outer(x)
    outer(x)
    assert inner.stats["eager"] == 1 and inner.stats["traces"] == 0 and outer.explain().summary["fused_kernels"] == 1


def test_opencl_fused_vs_eager(rt, off):
    status = rt.backends.get("opencl")
    if status is None or status.status != "available":
        pytest.skip(f"no OpenCL device: {status.reason if status else 'plugin not installed'}")
    ocl = status.devices[0]
    fn = _chain(rt)
    f = rt.jit(fn)
    for name in ("float32", "bfloat16"):
        x, y = _arr(ocl, 3000, name), _arr(ocl, 3000, name)
        f(x, y)
        got = f(x, y)
        assert f.explain(x, y).summary["fused_kernels"] == 1, f.explain(x, y)
        tol_dtype = name
        _close(got, off(fn, x, y), tol_dtype)


def test_emit_c_body_semantics_text():
    ir = FusedIR(kind="elementwise", shape=(4,), inputs=("float32",),
                 ops=(FusedOp("load", (0,), "float32"), FusedOp("maximum", (0, 0), "float32"),
                      FusedOp("scale", (1,), "bfloat16", (("alpha", 0.1),))),
                 outputs=(2,), output_dtypes=("bfloat16",), kernels=("maximum", "scale"))
    lines = emit_c_body(ir, load=lambda k, d: f"L{k}", rnd=lambda d, e: f"R({e})", exp=lambda c, e: e)
    assert lines[0] == "float t0 = L0;"
    assert "t0 + t0" in lines[1]  # NaN propagates like numpy's maximum
    assert lines[2].startswith("float t2 = R(") and "0.1" in lines[2]
    assert ir.name.startswith("jit_elem_maximum_scale_")


def test_cuda_generator_imports_and_skips_without_a_gpu(rt):
    cuda_fusion = pytest.importorskip("dsrt_cuda.fusion", reason="cupy is not installed")
    ir = FusedIR(kind="elementwise", shape=(8,), inputs=("float32", "float32"),
                 ops=(FusedOp("load", (0,), "float32"), FusedOp("load", (1,), "float32"),
                      FusedOp("add", (0, 1), "float32"), FusedOp("exp", (2,), "float32")),
                 outputs=(3,), output_dtypes=("float32",))
    src = cuda_fusion.generate(ir)
    assert f'extern "C" __global__ void {ir.name}(' in src and "expf(t2)" in src
    status = rt.backends.get("cuda")
    if status is None or status.status != "available":
        pytest.skip(f"no CUDA device: {status.reason if status else 'plugin not installed'}")
    gpu = status.devices[0]
    f = rt.jit(_chain(rt))
    x, y = _arr(gpu, 4096), _arr(gpu, 4096)
    f(x, y)
    got = f(x, y)
    os.environ["DSRT_JIT"] = "off"
    try:
        want = f(x, y)
    finally:
        del os.environ["DSRT_JIT"]
    assert f.explain().summary["fused_kernels"] == 1
    _close(got, want, "float32")


def test_devices_without_a_generator_replay_unfused_and_the_hook_is_off_after(rt, off):
    import dsrt.device as device_module

    status = rt.backends.get("acme")
    if status is None or status.status != "available":
        pytest.skip(f"the example vendor backend is not installed: {status.reason if status else 'absent'}")
    dev = status.devices[0]
    assert getattr(dev, "fused_kernel", None) is None

    def fn(x, y):
        return rt.launch("add", rt.launch("mul", x, y), x)

    f = rt.jit(fn)
    x, y = _arr(dev, 50), _arr(dev, 50)
    f(x, y)
    got = f(x, y)
    ex = f.explain()
    assert ex.summary["fused_kernels"] == 0 and "declares no code generator" in ex.groups[0]["reason"], ex
    _close(got, off(fn, x, y), "float32")
    assert device_module.launch_observer is None
