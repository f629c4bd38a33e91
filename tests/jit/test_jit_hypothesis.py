"""Random elementwise DAGs (random kernels, shapes, dtypes, shared sub-expressions, outputs in the
middle, an in-place launch, a closing reduction): the fused replay equals the eager run at the kit's
tolerance. Values are kept within [-8, 8] and ``exp`` sees arguments within [-2, 2], so the one
operation computed differently (``exp``, within about an ulp of numpy's) is not amplified past it."""

from __future__ import annotations

import math
import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsrt import dtypes as dt
from dsrt.accuracy import relative_error, tolerance

SHAPES = [(7,), (33,), (4, 9), (40000,)]
DTYPES = ["float32", "float64", "float16", "bfloat16"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "axpy", "div"]
UNARY = ["exp", "relu", "scale", "copy"]


@st.composite
def programs(draw):
    n_in = draw(st.integers(1, 3))
    bounds = [1.0] * n_in  # |value| <= bound
    positive = [0.0] * n_in  # value >= positive (> 0 means usable as a divisor)
    prog = []
    for _ in range(draw(st.integers(1, 10))):
        k = draw(st.sampled_from(BINARY + UNARY))
        a = draw(st.integers(0, len(bounds) - 1))
        b = draw(st.integers(0, len(bounds) - 1))
        alpha = draw(st.sampled_from([0.5, -1.25, 2.0, 0.1]))
        ba, bb = bounds[a], bounds[b]
        lo = 0.0
        if k in ("add", "sub", "maximum", "minimum"):
            bound = ba + bb
        elif k == "mul":
            bound = ba * bb
        elif k == "axpy":
            bound = abs(alpha) * ba + bb
        elif k == "div":
            if positive[b] < 0.1:
                continue
            bound = ba / positive[b]
        elif k == "exp":
            if ba > 2.0:
                continue
            bound, lo = math.exp(ba), math.exp(-ba)
        elif k == "scale":
            bound = abs(alpha) * ba
        else:  # relu, copy
            bound, lo = ba, positive[a]
        if bound > 8.0:
            continue
        prog.append((k, a, b, alpha))
        bounds.append(bound)
        positive.append(lo)
    n_vals = len(bounds)
    outs = draw(st.lists(st.integers(n_in, n_vals - 1), min_size=1, max_size=3)) if n_vals > n_in else [0]
    inplace = draw(st.booleans()) and len(prog) > 0
    reduce = draw(st.sampled_from([None, "reduce_sum", "reduce_max"]))
    return n_in, prog, outs, inplace, reduce


def _program(rt, n_in, prog, outs, inplace, reduce):
    def fn(*xs):
        vals = list(xs)
        for k, a, b, alpha in prog:
            if k in ("scale",):
                vals.append(rt.launch(k, vals[a], alpha=alpha))
            elif k == "axpy":
                vals.append(rt.launch(k, vals[a], vals[b], alpha=alpha))
            elif k in UNARY:
                vals.append(rt.launch(k, vals[a]))
            else:
                vals.append(rt.launch(k, vals[a], vals[b]))
        if inplace:  # a launch into an intermediate: later readers see the new value
            rt.launch("relu", vals[-1], out=vals[-1])
        res = [vals[i] for i in outs]
        if reduce:
            res.append(rt.launch(reduce, vals[-1]))
        return tuple(res)
    return fn


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(programs(), st.sampled_from(SHAPES), st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
@example((2, [("add", 1, 1, 0.5)], [2], False, "reduce_sum"), (4, 9), "float64", 681390)  # a cancelling sum
def test_random_elementwise_dags_replay_like_eager(rt, cpu, program, shape, dtype, seed):
    n_in, prog, outs, inplace, reduce = program
    fn = _program(rt, n_in, prog, outs, inplace, reduce)
    f = rt.jit(fn)
    rng = np.random.default_rng(seed)
    d = dt.as_dtype(dtype)

    def inputs():
        return [cpu.asarray(rng.uniform(-1, 1, shape).astype(d)) for _ in range(n_in)]

    f(*inputs())  # trace
    xs = inputs()  # new data: the replay must not see the traced inputs
    got = f(*xs)
    os.environ["DSRT_JIT"] = "off"
    try:
        want = fn(*xs)
    finally:
        del os.environ["DSRT_JIT"]
    assert f.stats["replays"] == 1, f.explain()
    size = int(np.prod(shape))
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        bound = tolerance(dtype)
        if reduce == "reduce_sum" and j == len(got) - 1:
            # Fused and eager sums add in different orders; their difference is bounded relative to
            # sum(|x|), not to |sum(x)|, which cancellation of the uniform(-1, 1) inputs can make tiny.
            last = n_in + len(prog) - 1
            terms = _program(rt, n_in, prog, [last], inplace, None)(*xs)[0].numpy().astype(np.float64)
            condition = np.abs(terms).sum() / max(abs(float(w.numpy())), np.finfo(np.float64).tiny)
            bound = tolerance(dtype, accumulate=size) * max(1.0, condition)
        err = relative_error(g.numpy().astype(np.float64), w.numpy().astype(np.float64))
        assert err <= bound, (j, err, bound, str(f.explain()))
