#!/usr/bin/env python3
"""The JIT against its peers, in one process (medians of ``--repeats`` timed runs after a warm-up).

    python benchmarks/jit.py --json [--elements N] [--repeats R]

``elementwise_chain``: mul, add, scale, exp, sub, maximum, relu, axpy over ``--elements`` float32
(default 16M) on ``cpu:0``: ``fused_vs_numpy`` (numpy eager / fused replay, target >= 2),
``fused_vs_numexpr`` (numexpr with as many threads as the fused loops use, target >= 1.0), dsrt's own
unfused launches, and ``torch.compile`` (inductor, CPU) where it runs (else the reason). The same
chain on ``opencl:0``: fused replay vs the unfused launches.

``replay_us_per_op``: a graph of 200 launches on 8-element arrays, replay time / 200 (target <= 0.3),
beside the eager per-launch time and an unfused replay's per-launch time.

``mlp``: gemm, bias add, relu, gemm, bias add, softmax (batch 256, 512 -> 1024 -> 256):
``planned_peak_over_eager_peak`` (the pool's measured peaks of a replay and of an eager call, above
the inputs; target <= 1.0) and ``replay_vs_eager`` (eager time / replay time). ``opencl_mlp``: the
same step on ``opencl:0``, fused replay vs unfused replay (``fuse=False``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import dsrt
from dsrt.cli.bench import median_seconds


def chain(rt: dsrt.Runtime) -> Callable[[Any, Any], Any]:
    def f(x: Any, y: Any) -> Any:
        t = rt.launch("mul", x, y)
        u = rt.launch("add", t, x)
        v = rt.launch("scale", u, alpha=0.5)
        w = rt.launch("exp", v)
        z = rt.launch("sub", w, y)
        m = rt.launch("maximum", z, x)
        r = rt.launch("relu", m)
        return rt.launch("axpy", r, y, alpha=2.0)
    return f


def numpy_chain(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    t = x * y
    u = t + x
    v = u * np.float32(0.5)
    w = np.exp(v)
    z = w - y
    m = np.maximum(z, x)
    r = np.maximum(m, np.float32(0))
    return np.float32(2.0) * r + y


NUMEXPR = "2.0 * maximum(maximum(exp((x * y + x) * 0.5) - y, x), 0.0) + y"


def elementwise_chain(rt: dsrt.Runtime, n: int, repeats: int) -> dict[str, Any]:
    cpu = rt.device("cpu:0")
    rng = np.random.default_rng(0)
    hx, hy = rng.uniform(-1, 1, n).astype(np.float32), rng.uniform(-1, 1, n).astype(np.float32)
    x, y = cpu.asarray(hx), cpu.asarray(hy)
    threads = os.cpu_count() or 1
    f = rt.jit(chain(rt))
    eager = chain(rt)
    fused_s = median_seconds(lambda: f(x, y), repeats)
    res: dict[str, Any] = {"device": "cpu:0", "elements": n, "dtype": "float32", "threads": threads,
                           "kernels": 8, "explain": f.explain().summary}
    res["fused_ms"] = fused_s * 1e3
    res["numpy_ms"] = median_seconds(lambda: numpy_chain(hx, hy), repeats) * 1e3
    res["dsrt_eager_ms"] = median_seconds(lambda: eager(x, y), repeats) * 1e3
    res["fused_vs_numpy"] = res["numpy_ms"] / res["fused_ms"]
    res["fused_vs_dsrt_eager"] = res["dsrt_eager_ms"] / res["fused_ms"]
    err = float(np.max(np.abs(f(x, y).numpy() - numpy_chain(hx, hy))) / np.max(np.abs(numpy_chain(hx, hy))))
    res["max_relative_error_vs_numpy"] = err
    try:
        import numexpr as ne

        ne.set_num_threads(threads)
        res["numexpr_ms"] = median_seconds(lambda: ne.evaluate(NUMEXPR, local_dict={"x": hx, "y": hy}), repeats) * 1e3
        res["numexpr_version"] = ne.__version__
        res["fused_vs_numexpr"] = res["numexpr_ms"] / res["fused_ms"]
    except ImportError as exc:
        res["fused_vs_numexpr"] = None
        res["numexpr_skipped"] = f"numexpr is not installed and could not be imported ({exc}); pip install numexpr"
    res["targets"] = {"fused_vs_numpy": ">= 2", "fused_vs_numexpr": ">= 1.0"}
    res["torch_compile"] = torch_chain(hx, hy, repeats, fused_s)
    return res


def torch_chain(hx: np.ndarray, hy: np.ndarray, repeats: int, fused_s: float) -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return {"ran": False, "reason": f"torch is not installed ({exc})"}
    try:
        torch.set_num_threads(os.cpu_count() or 1)

        def tchain(x: Any, y: Any) -> Any:
            z = torch.exp((x * y + x) * 0.5) - y
            return 2.0 * torch.relu(torch.maximum(z, x)) + y

        compiled = torch.compile(tchain, backend="inductor")
        tx, ty = torch.from_numpy(hx), torch.from_numpy(hy)
        t0 = time.perf_counter()
        compiled(tx, ty)
        compile_s = time.perf_counter() - t0
        t = median_seconds(lambda: compiled(tx, ty), repeats)
        eager_t = median_seconds(lambda: tchain(tx, ty), repeats)
        return {"ran": True, "version": torch.__version__, "compiled_ms": t * 1e3, "torch_eager_ms": eager_t * 1e3,
                "first_call_s": compile_s, "fused_vs_torch_compile": t / fused_s}
    except Exception as exc:  # noqa: BLE001 - any failure of the peer is reported, not raised
        return {"ran": False, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}


def opencl_chain(rt: dsrt.Runtime, n: int, repeats: int) -> dict[str, Any]:
    status = rt.backends.get("opencl")
    if status is None or status.status != "available":
        return {"ran": False, "reason": status.reason if status else "the opencl plugin is not installed"}
    dev = status.devices[0]
    rng = np.random.default_rng(1)
    x = dev.asarray(rng.uniform(-1, 1, n).astype(np.float32))
    y = dev.asarray(rng.uniform(-1, 1, n).astype(np.float32))
    f = rt.jit(chain(rt))
    eager = chain(rt)
    sync = dev.synchronize
    fused = median_seconds(lambda: f(x, y), repeats, sync)
    unfused = median_seconds(lambda: eager(x, y), repeats, sync)
    return {"ran": True, "device": dev.id, "name": dev.info.name, "elements": n, "fused_ms": fused * 1e3,
            "unfused_ms": unfused * 1e3, "fused_vs_unfused": unfused / fused,
            "fused_kernels": f.explain().summary["fused_kernels"]}


def replay_per_op(rt: dsrt.Runtime, repeats: int, ops: int = 200) -> dict[str, Any]:
    cpu = rt.device("cpu:0")
    rng = np.random.default_rng(2)
    x = cpu.asarray(rng.uniform(-1, 1, 8).astype(np.float32))
    y = cpu.asarray(rng.uniform(-1, 1, 8).astype(np.float32))
    cycle = ["add", "mul", "maximum", "sub", "minimum"]

    def graph(x: Any, y: Any) -> Any:
        v = x
        for i in range(ops):
            k = cycle[i % len(cycle)]
            v = rt.launch(k, v, y) if k != "mul" else rt.launch("scale", v, alpha=0.5)
        return v

    fused = rt.jit(graph)
    unfused = rt.jit(graph, fuse=False)
    per = 20
    fused(x, y)
    unfused(x, y)

    def batch(fn: Callable[[Any, Any], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(per):
                fn(x, y)
        return run

    r = max(repeats, 5)
    return {"ops": ops, "elements": 8,
            "replay_us_per_op": median_seconds(batch(fused), r) / per / ops * 1e6,
            "unfused_replay_us_per_op": median_seconds(batch(unfused), r) / per / ops * 1e6,
            "eager_us_per_launch": median_seconds(batch(graph), r) / per / ops * 1e6,
            "target_us": 0.3, "fused_kernels": fused.explain().summary["fused_kernels"]}


def _peak(pool: Any, fn: Callable[[], Any]) -> int:
    """Bytes requested from ``pool`` at its peak during ``fn()`` above what was live before."""
    c = pool.counters
    base = c.requested
    c.peak_requested = base  # the benchmark resets the peak to measure one call
    keep = fn()
    peak = c.peak_requested - base
    del keep
    return int(peak)


def mlp(rt: dsrt.Runtime, repeats: int, batch: int = 256, d_in: int = 512, hidden: int = 1024,
        d_out: int = 256) -> dict[str, Any]:
    cpu = rt.device("cpu:0")
    rng = np.random.default_rng(3)

    def arr(*shape: int) -> Any:
        return cpu.asarray((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    w1, w2, b1, b2 = arr(d_in, hidden), arr(hidden, d_out), arr(batch, hidden), arr(batch, d_out)

    def step(x: Any) -> Any:
        h = rt.launch("gemm", x, w1)
        h = rt.launch("add", h, b1)
        h = rt.launch("relu", h)
        o = rt.launch("gemm", h, w2)
        o = rt.launch("add", o, b2)
        return rt.launch("softmax", o)

    f = rt.jit(step)
    x = arr(batch, d_in)
    f(x)
    replay_peak = _peak(cpu.pool, lambda: f(x))
    eager_peak = _peak(cpu.pool, lambda: step(x))
    arena = sum(f.graphs[0].arena_bytes.values())
    replay_s = median_seconds(lambda: f(x), repeats)
    eager_s = median_seconds(lambda: step(x), repeats)
    summary = f.explain().summary
    return {"shape": [batch, d_in, hidden, d_out], "arena_bytes": arena,
            "replay_peak_bytes": replay_peak + arena, "eager_peak_bytes": eager_peak,
            "planned_peak_over_eager_peak": (replay_peak + arena) / eager_peak,
            "planned_peak_over_eager_peak_from_trace": summary["planned_peak_bytes"] / summary["eager_peak_bytes"],
            "replay_ms": replay_s * 1e3, "eager_ms": eager_s * 1e3, "replay_vs_eager": eager_s / replay_s,
            "steps": [g["name"] for g in f.explain().groups], "target": "<= 1.0"}


def opencl_mlp(rt: dsrt.Runtime, repeats: int, batch: int = 256, d_in: int = 512, hidden: int = 1024,
               d_out: int = 256) -> dict[str, Any]:
    status = rt.backends.get("opencl")
    if status is None or status.status != "available":
        return {"ran": False, "reason": status.reason if status else "the opencl plugin is not installed"}
    dev = status.devices[0]
    rng = np.random.default_rng(4)

    def arr(*shape: int) -> Any:
        return dev.asarray((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    w1, w2, b1, b2 = arr(d_in, hidden), arr(hidden, d_out), arr(batch, hidden), arr(batch, d_out)

    def step(x: Any) -> Any:
        h = rt.launch("relu", rt.launch("add", rt.launch("gemm", x, w1), b1))
        return rt.launch("softmax", rt.launch("add", rt.launch("gemm", h, w2), b2))

    fused, unfused = rt.jit(step), rt.jit(step, fuse=False)
    x = arr(batch, d_in)
    fused_s = median_seconds(lambda: fused(x), repeats, dev.synchronize)
    unfused_s = median_seconds(lambda: unfused(x), repeats, dev.synchronize)
    return {"ran": True, "device": dev.id, "name": dev.info.name, "shape": [batch, d_in, hidden, d_out],
            "fused_ms": fused_s * 1e3, "unfused_ms": unfused_s * 1e3, "fused_vs_unfused": unfused_s / fused_s,
            "steps": [g["name"] for g in fused.explain().groups]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one line of JSON")
    ap.add_argument("--elements", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rt = dsrt.Runtime(backends=["cpu", "opencl"])
    out = {
        "elementwise_chain": elementwise_chain(rt, args.elements, args.repeats),
        "opencl_chain": opencl_chain(rt, args.elements, args.repeats),
        "replay": replay_per_op(rt, args.repeats),
        "mlp": mlp(rt, args.repeats),
        "opencl_mlp": opencl_mlp(rt, args.repeats),
        "repeats": args.repeats, "machine_cores": os.cpu_count(),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
