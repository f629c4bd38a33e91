"""``out=`` sharing memory with the inputs: the result is as if every input were read first. An
elementwise kernel writing exactly over an input runs in place; any other overlap runs into a
temporary and a copy. Checked on the C hit path (``Device.launch``) and on the Python launch it
hands over to (``dsrt.device.python_launch``), and through a capture and its replays."""

from __future__ import annotations

import numpy as np
import pytest

import dsrt
from dsrt.array import may_share_memory, same_elements
from dsrt.device import python_launch

LAUNCHES = {"c_or_python": lambda dev, *a, **k: dev.launch(*a, **k), "python": python_launch}


def _f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 0.25).astype(np.float32)


@pytest.mark.parametrize("path", LAUNCHES)
def test_gemm_into_its_own_c_is_c_equals_alpha_ab_plus_beta_c(cpu, path):
    launch = LAUNCHES[path]
    rng = np.random.default_rng(1)
    ha, hb, hc = _f32(rng, 16, 16), _f32(rng, 16, 16), _f32(rng, 16, 16)
    a, b, c = cpu.asarray(ha), cpu.asarray(hb), cpu.asarray(hc)
    allocs = cpu.pool.num_allocs
    assert launch(cpu, "gemm", a, b, c, alpha=2.0, beta=0.5, out=c) is c
    np.testing.assert_allclose(c.numpy(), 2.0 * (ha @ hb) + 0.5 * hc, rtol=1e-5, atol=1e-5)
    assert cpu.pool.num_allocs == allocs + 1  # the temporary
    for i in (0, 1):  # out= a or b
        x = [cpu.asarray(ha), cpu.asarray(hb)]
        launch(cpu, "gemm", *x, trans_b=True, out=x[i])
        np.testing.assert_allclose(x[i].numpy(), ha @ hb.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", LAUNCHES)
def test_elementwise_in_place_runs_without_a_temporary(cpu, path):
    launch = LAUNCHES[path]
    rng = np.random.default_rng(2)
    hx, hy = _f32(rng, 64), _f32(rng, 64)
    x, y = cpu.asarray(hx), cpu.asarray(hy)
    allocs = cpu.pool.num_allocs
    assert launch(cpu, "axpy", x, y, alpha=3.0, out=y) is y
    assert launch(cpu, "add", x, x, out=x) is x
    assert cpu.pool.num_allocs == allocs
    np.testing.assert_allclose(y.numpy(), 3.0 * hx + hy, rtol=1e-6)
    np.testing.assert_allclose(x.numpy(), hx + hx, rtol=1e-6)


@pytest.mark.parametrize("path", LAUNCHES)
def test_a_view_overlapping_out_differently_goes_through_a_temporary(cpu, path):
    launch = LAUNCHES[path]
    rng = np.random.default_rng(3)
    h = _f32(rng, 4, 8)
    x = cpu.asarray(h)
    flat = x.reshape((32,))
    rows = flat.reshape((8, 4))  # the same bytes, another layout: not exactly out's elements
    assert may_share_memory(rows, x) and not same_elements(rows, x)
    out = cpu.asarray(np.zeros((8, 4), np.float32)).reshape((4, 8))
    want = np.exp(h)
    allocs = cpu.pool.num_allocs
    launch(cpu, "exp", x, out=out)
    assert cpu.pool.num_allocs == allocs  # no overlap: direct
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
    launch(cpu, "softmax", rows, out=flat.reshape((8, 4)))  # row-wise, over its own bytes in another shape
    e = np.exp(h.reshape(8, 4) - h.reshape(8, 4).max(axis=-1, keepdims=True))
    np.testing.assert_allclose(x.numpy().reshape(8, 4), e / e.sum(axis=-1, keepdims=True), rtol=1e-5)
    assert cpu.pool.num_allocs == allocs + 1


def test_arrays_in_one_segment_do_not_count_as_overlapping(cpu):
    a, b = cpu.asarray(np.ones(16, np.float32)), cpu.asarray(np.ones(16, np.float32))
    assert a.allocation.handle is b.allocation.handle  # small blocks share a segment
    assert not may_share_memory(a, b) and may_share_memory(a, a.reshape((4, 4)))


def test_every_exact_device_of_the_default_runtime_gets_gemm_into_c_right():
    rt = dsrt.Runtime()
    rng = np.random.default_rng(4)
    ha, hb, hc = _f32(rng, 8, 8), _f32(rng, 8, 8), _f32(rng, 8, 8)
    checked = []
    for dev in rt.devices:
        if dev.info.simulated or "float32" not in dev.info.kernels.get("gemm", ()):
            continue
        for i in range(3):
            x = [dev.asarray(h) for h in (ha, hb, hc)]
            dev.launch("gemm", *x, alpha=1.5, beta=-0.5, out=x[i])
            np.testing.assert_allclose(x[i].numpy(), 1.5 * (ha @ hb) - 0.5 * hc, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{dev.id} out=input {i}")
        checked.append(dev.id)
    assert "cpu:0" in checked and "cexample:0" in checked


def test_a_capture_of_gemm_into_c_replays_right(rt, cpu):
    def step(a, b, c):
        cpu.launch("gemm", a, b, c, alpha=2.0, beta=1.0, out=c)
        return cpu.launch("relu", cpu.launch("add", c, a))

    f = rt.jit(step)
    rng = np.random.default_rng(5)
    for _ in range(3):  # trace, then replays
        ha, hb, hc = _f32(rng, 8, 8), _f32(rng, 8, 8), _f32(rng, 8, 8)
        c = cpu.asarray(hc)
        got = f(cpu.asarray(ha), cpu.asarray(hb), c).numpy()
        want_c = 2.0 * (ha @ hb) + hc
        np.testing.assert_allclose(c.numpy(), want_c, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, np.maximum(want_c + ha, 0), rtol=1e-5, atol=1e-5)
    assert "copy" in f.explain()
