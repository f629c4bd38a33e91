"""The memory plan: a replay's peak is never above the eager run's.

Checked on the planner's own figures and, independently, on the CPU pool's ``requested`` counter
during an eager run and a replay of random graphs (float32 sizes that are multiples of 64 elements,
so the pool's rounding is the same on both sides)."""

from __future__ import annotations

import numpy as np
from eager_common import run_eager
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsrt.accuracy import relative_error, tolerance
from dsrt.jit.plan import Interval, live_peak, plan_best, plan_offsets
from dsrt.memory import ALIGNMENT

A = ALIGNMENT


def _no_overlap(bufs, offsets):
    for a in bufs:
        for b in bufs:
            if a.key < b.key and a.start <= b.end and b.start <= a.end:
                lo_a, lo_b = offsets[a.key], offsets[b.key]
                assert lo_a + a.nbytes <= lo_b or lo_b + b.nbytes <= lo_a, (a, b, offsets)


def test_greedy_by_size_fragments_and_the_start_order_placement_does_not():
    # C (6 units) dies as B (4) starts; largest-first puts A (5) at 0 beside C, so D (4), live with A
    # and B, lands above both: 14 units. Placed by start time, D reuses C's hole: 10, the lower bound.
    bufs = [Interval(0, 5 * A, 4, 5), Interval(1, 4 * A, 1, 3), Interval(2, 6 * A, 0, 1), Interval(3, 4 * A, 3, 4)]
    by_size = plan_offsets(bufs, "size")
    by_start = plan_offsets(bufs, "start")
    assert by_size[1] == 14 * A and by_start[1] == 10 * A == live_peak(bufs)
    offsets, total, name = plan_best(bufs)
    assert (total, name) == (10 * A, "start")
    _no_overlap(bufs, offsets)


@given(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 8), st.integers(0, 4)), min_size=1, max_size=12))
def test_every_placement_is_valid_and_never_below_the_live_peak(spec):
    bufs = [Interval(k, n * A, s, s + d) for k, (n, s, d) in enumerate(spec)]
    offsets, total, _name = plan_best(bufs)
    _no_overlap(bufs, offsets)
    assert live_peak(bufs) <= total <= min(plan_offsets(bufs, o)[1] for o in ("size", "start"))


def _requested_peak(cpu, call):
    """Bytes in live pool blocks (after the pool's rounding) at most during ``call()``, above before."""
    c = cpu.pool.counters
    base = c.allocated
    c.peak_allocated = base
    result = call()
    return c.peak_allocated - base, result


def test_a_large_result_after_large_intermediates_die_serves_them_from_the_pool(rt, cpu):
    def fn(x):  # each intermediate dies as the next is made: two buffers at most
        return rt.launch("exp", rt.launch("add", rt.launch("mul", x, x), x))

    f = rt.jit(fn, fuse=False)
    x = cpu.asarray(np.linspace(-1, 1, 4096, dtype=np.float32))
    f(x)
    eager_peak, want = _requested_peak(cpu, lambda: run_eager(fn, x))
    replay_peak, got = _requested_peak(cpu, lambda: f(x))
    ex = f.explain()
    assert ex.summary["plan"] == "pool" and "above the eager run's" in str(ex), ex
    assert ex.summary["planned_peak_bytes"] <= ex.summary["eager_peak_bytes"]
    assert replay_peak <= eager_peak == 2 * 4096 * 4, (replay_peak, eager_peak)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_out_versions_replay_in_eager_order_in_one_buffer(rt, cpu):
    def fn(x):
        t = rt.launch("exp", x)
        rt.launch("relu", t, out=t)
        rt.launch("scale", t, alpha=0.5, out=t)
        return t

    f = rt.jit(fn, fuse=False)
    x = cpu.asarray(np.linspace(-3, 3, 2048, dtype=np.float32))
    f(x)
    eager_peak, want = _requested_peak(cpu, lambda: run_eager(fn, x))
    replay_peak, got = _requested_peak(cpu, lambda: f(x))
    ex = f.explain()
    assert ex.summary["plan"] == "eager" and "eager order" in str(ex), ex
    assert replay_peak <= eager_peak == 2048 * 4
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    dst = cpu.empty(2048)
    assert f(x, out=dst) is dst
    np.testing.assert_array_equal(dst.numpy(), want.numpy())


N = 64 * 8


@st.composite
def programs(draw):
    """A straight-line program over float32 vectors of N elements: elementwise kernels (fusable),
    softmax (never fused), whole-array sums (small), out= versions; Python either keeps every value
    (``hold``) or drops each after its last use."""
    n_in = draw(st.integers(1, 2))
    ops = []
    kinds = [("vec", n) for n in range(n_in)]  # value index -> kind
    for _ in range(draw(st.integers(1, 9))):
        vecs = [i for i, (k, _) in enumerate(kinds) if k == "vec"]
        op = draw(st.sampled_from(["add", "mul", "exp", "relu", "softmax", "sum", "inplace"]))
        a, b = draw(st.sampled_from(vecs)), draw(st.sampled_from(vecs))
        if op == "inplace":
            if a < n_in:
                continue
            ops.append(("inplace", a, a))
            continue
        ops.append((op, a, b))
        kinds.append(("scalar" if op == "sum" else "vec", len(kinds)))
    n_vals = len(kinds)
    outs = draw(st.lists(st.integers(n_in, max(n_in, n_vals - 1)), min_size=1, max_size=2)) if n_vals > n_in else []
    hold = draw(st.booleans())
    fuse = draw(st.booleans())
    return n_in, ops, sorted(set(outs)), hold, fuse


def _build(rt, n_in, ops, outs, hold):
    last_use: dict[int, int] = {}
    for j, (_op, a, b) in enumerate(ops):
        last_use[a] = j
        last_use[b] = j
    for o in outs:
        last_use[o] = len(ops)

    def fn(*xs):
        vals = list(xs)
        for j, (op, a, b) in enumerate(ops):
            if op in ("add", "mul"):
                vals.append(rt.launch(op, vals[a], vals[b]))
            elif op in ("exp", "relu", "softmax"):
                vals.append(rt.launch(op, rt.launch("scale", vals[a], alpha=0.1)) if op == "exp"
                            else rt.launch(op, vals[a]))
            elif op == "sum":
                vals.append(rt.launch("reduce_sum", vals[a]))
            else:
                rt.launch("relu", vals[a], out=vals[a])
            if not hold:
                for i in range(n_in, len(vals)):
                    if vals[i] is not None and last_use.get(i, -1) <= j:
                        vals[i] = None
        return tuple(vals[o] for o in outs) if outs else vals[0]
    return fn


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(programs(), st.integers(0, 2**32 - 1))
@example((1, [("add", 0, 0), ("inplace", 1, 1)], [1], False, False), 0)  # out= version: an arena would double it
@example((1, [("mul", 0, 0), ("add", 1, 0), ("softmax", 2, 2), ("sum", 3, 3)], [4], False, True), 1)
def test_random_graphs_never_peak_above_the_eager_run(rt, cpu, program, seed):
    n_in, ops, outs, hold, fuse = program
    fn = _build(rt, n_in, ops, outs, hold)
    f = rt.jit(fn, fuse=fuse)
    rng = np.random.default_rng(seed)
    xs = [cpu.asarray(rng.uniform(-1, 1, N).astype(np.float32)) for _ in range(n_in)]
    f(*[cpu.asarray(x.numpy()) for x in xs])  # trace on copies (out= may write into an input)
    ins = [cpu.asarray(x.numpy()) for x in xs]
    eager_peak, want = _requested_peak(cpu, lambda: run_eager(fn, *ins))
    ys = [cpu.asarray(x.numpy()) for x in xs]
    replay_peak, got = _requested_peak(cpu, lambda: f(*ys))
    ex = f.explain()
    assert f.stats["replays"] == 1, ex
    assert ex.summary["planned_peak_bytes"] <= ex.summary["eager_peak_bytes"], ex
    for d, n in ex.summary["planned_device_peak"].items():
        assert n <= ex.summary["eager_device_peak"][d], ex
    # the arena was allocated when the graph was built: it counts during the replay too
    replay_peak += sum(ex.summary["arena_bytes"].values())
    assert replay_peak <= eager_peak, (replay_peak, eager_peak, str(ex))
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got_t, want_t, strict=True):
        err = relative_error(g.numpy().astype(np.float64), w.numpy().astype(np.float64))
        assert err <= tolerance("float32", accumulate=N), (err, str(ex))
