"""Graph replay (the optional ``graph_replay`` capability), core side, with a fake capability on the CPU
device that behaves like a CUDA graph: ``capture`` records the work without running it, and the
launcher re-runs exactly the recorded work on the arrays of the capturing replay (the "addresses" it
baked). A wrong cache key therefore writes into a stale array and the tests see it."""

from __future__ import annotations

import numpy as np
import pytest

import dsrt
from dsrt.accuracy import relative_error, tolerance
from dsrt.errors import DeviceError
from dsrt.memory.hostmem import host_view

RNG = np.random.default_rng(11)


class FakeGraphs:
    """A CPU stand-in for CUDA graphs: everything a replay enqueues is recorded, then re-run on launch."""

    def __init__(self, max_graphs=8, accept=lambda step: "", fail_capture=False):
        self.max_graphs = max_graphs
        self.accept = accept
        self.fail_capture = fail_capture
        self.captures = 0
        self.launches = 0
        self.fail_launch = False

    def accepts(self, step):
        return self.accept(step)

    def address(self, array):
        return host_view(array).ctypes.data

    def capture(self, run, stream):
        if self.fail_capture:
            raise DeviceError("fake: a step synchronised the host during capture", device="cpu:0")
        self.captures += 1
        baked = run  # bakes this replay's arrays, like device pointers in a CUDA graph

        def launch():
            if self.fail_launch:
                raise DeviceError("fake: graph launch failed", device="cpu:0")
            self.launches += 1
            baked()

        return launch


@pytest.fixture()
def graphs(cpu, monkeypatch):
    def install(**kw):
        fake = FakeGraphs(**kw)
        monkeypatch.setattr(cpu, "graph_replay", fake, raising=False)
        return fake
    return install


def _arr(dev, n):
    return dev.asarray(RNG.uniform(-1, 1, n).astype(np.float32))


def _chain(rt):
    def chain(x, y):
        t = rt.launch("mul", x, y)
        return rt.launch("exp", rt.launch("add", t, x))
    return chain


def _want(x, y):
    a, b = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    return np.exp(a * b + a)


def _check(got, want):
    assert relative_error(got.numpy().astype(np.float64), want) <= tolerance("float32")


def test_replay_captures_once_per_operand_addresses_and_substitutes_inputs(rt, cpu, graphs):
    fake = graphs()
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 500), _arr(cpu, 500)
    f(x, y)  # trace (eager)
    out = cpu.empty(500)
    f(x, y, out=out)
    assert (fake.captures, fake.launches) == (1, 1)
    _check(out, _want(x, y))
    x2 = _arr(cpu, 500)
    # same out, new input: a different key (the input's address changed) -> a new capture
    f(x2, y, out=out)
    assert fake.captures == 2
    _check(out, _want(x2, y))
    # the first key again: a cache hit, no capture, the data read now
    f(x, y, out=out)
    assert (fake.captures, fake.launches) == (2, 3)
    _check(out, _want(x, y))
    other = cpu.empty(500)
    f(x, y, out=other)  # a new result address: never written through the stale graph
    assert fake.captures == 3
    _check(other, _want(x, y))
    ex = f.explain()
    (seg,) = ex.summary["replay"]
    assert seg["captured"] and seg["captures"] == 3 and seg["hits"] == 1, ex
    assert "as one captured graph" in str(ex)


def test_the_cache_is_bounded_lru(rt, cpu, graphs):
    fake = graphs(max_graphs=2)
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 64), _arr(cpu, 64)
    f(x, y)
    outs = [cpu.empty(64) for _ in range(3)]
    for o in outs:  # three keys through a cache of two
        f(x, y, out=o)
        _check(o, _want(x, y))
    seg = f.explain().summary["replay"][0]
    assert seg["cached"] == 2 and seg["evictions"] == 1 and fake.captures == 3
    f(x, y, out=outs[0])  # evicted: captured again, still correct
    assert fake.captures == 4
    _check(outs[0], _want(x, y))
    f(x, y, out=outs[2])  # still cached
    assert fake.captures == 4


def test_a_failed_capture_falls_back_to_plain_replay_for_good(rt, cpu, graphs):
    fake = graphs(fail_capture=True)
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 100), _arr(cpu, 100)
    f(x, y)
    for _ in range(3):
        got = f(x, y)
        _check(got, _want(x, y))
    seg = f.explain().summary["replay"][0]
    assert not seg["captured"] and "synchronised the host" in seg["reason"], seg
    assert "step by step (capture failed" in str(f.explain())
    assert fake.captures == 0 and fake.launches == 0


def test_a_failed_launch_drops_the_graph_and_raises(rt, cpu, graphs):
    fake = graphs()
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 100), _arr(cpu, 100)
    f(x, y)
    out = cpu.empty(100)
    f(x, y, out=out)
    fake.fail_launch = True
    with pytest.raises(DeviceError, match="graph launch failed"):
        f(x, y, out=out)
    fake.fail_launch = False
    f(x, y, out=out)  # the failed graph is gone: captured again
    assert fake.captures == 2
    _check(out, _want(x, y))


def test_steps_the_device_declines_run_plainly_between_captured_runs(rt, cpu, graphs):
    fake = graphs(accept=lambda step: "" if step.fused else f"{step.name} is not capturable")

    def fn(x, y):
        a = rt.launch("exp", rt.launch("add", x, y))
        s = rt.launch("softmax", a)  # never fused
        return rt.launch("mul", rt.launch("add", s, x), y)

    f = rt.jit(fn)
    x, y = _arr(cpu, 256), _arr(cpu, 256)
    f(x, y)
    got = f(x, y)
    segs = f.explain().summary["replay"]
    assert [s["captured"] for s in segs] == [True, False, True], f.explain()
    assert "softmax is not capturable" in segs[1]["reason"]
    assert fake.captures == 2
    want = dsrt.kernels.reference("softmax", np.exp(x.numpy() + y.numpy()))
    np.testing.assert_allclose(got.numpy(), (want + x.numpy()) * y.numpy(), rtol=1e-5, atol=1e-6)


def test_switches_tracing_and_devices_without_the_capability_replay_plainly(rt, cpu, graphs, monkeypatch, tmp_path):
    f = rt.jit(_chain(rt))
    x, y = _arr(cpu, 100), _arr(cpu, 100)
    f(x, y)
    f(x, y)
    assert "declares no graph capture (graph_replay)" in str(f.explain())
    fake = graphs()
    g = rt.jit(_chain(rt))
    g(x, y)
    monkeypatch.setenv("DSRT_JIT_GRAPHS", "off")
    _check(g(x, y), _want(x, y))
    monkeypatch.delenv("DSRT_JIT_GRAPHS")
    with rt.trace(str(tmp_path / "t.json")):  # per-step trace events need the steps run one by one
        _check(g(x, y), _want(x, y))
    assert fake.captures == 0
    _check(g(x, y), _want(x, y))
    assert fake.captures == 1


def test_pool_served_plans_are_not_captured(rt, cpu, graphs):
    fake = graphs()

    def fn(x):  # Python drops each intermediate at once: the eager peak is two buffers
        return rt.launch("exp", rt.launch("add", rt.launch("mul", x, x), x))

    f = rt.jit(fn, fuse=False)
    x = _arr(cpu, 1024)
    f(x)
    got = f(x)
    ex = f.explain()
    assert ex.summary["plan"] == "pool", ex
    assert all(not s["captured"] and "pool" in s["reason"] for s in ex.summary["replay"])
    assert fake.captures == 0
    a = x.numpy().astype(np.float64)
    assert relative_error(got.numpy().astype(np.float64), np.exp(a * a + a)) <= tolerance("float32")
