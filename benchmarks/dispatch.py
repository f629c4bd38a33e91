#!/usr/bin/env python3
"""Launch overhead of ``add`` on tiny arrays through ``rt.launch`` against numpy, in one process.

    python benchmarks/dispatch.py --json

Prints ``overhead_us`` (median dsrt launch minus median numpy call, synchronous) and ``numpy_us``.
Target: overhead at most 3 microseconds.

``c_abi_overhead_us``: the same overhead of ``add`` on 8 float32 through the C example backend
(``cexample``, examples/c-plugin, loaded through dsrt's C ABI), measured in the same run as the
Python example backend's (``acme``, examples/vendor-plugin: ``acme_overhead_us``), rounds
interleaved, medians of rounds. Target: within 1 microsecond of acme's. Both are skipped (``null``
with a reason) when the example packages are not installed.

Against PyTorch (CPU), in the same process, rounds interleaved (``torch_peers``): ``cpu:0``'s
``Device.launch`` of ``add`` on 8 float32 letting dsrt allocate the output, over ``torch.add(ta,
tb)`` (``alloc_launch_vs_torch``), and with ``out=`` over ``torch.add(ta, tb, out=to)``
(``launch_vs_torch_out``), targets <= 1.0 (``*_paired``: the median of each round's own ratio);
beside them ``gemm`` with ``alpha`` on 16x16 float32,
allocating, over ``torch.addmm(c, a, b, beta=0, alpha=...)`` (``gemm_alpha_vs_torch``), and
``numpy.add(out=)``. Ratios are of medians over batches; ``*_us`` give the minimum and the median
(microseconds per call). ``torch: null`` with a reason when torch is not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import dsrt
from dsrt.cli.bench import dispatch_overhead, per_call_seconds


def c_abi_overhead(rt: dsrt.Runtime, *, repeats: int, rounds: int = 3) -> dict[str, Any]:
    """Launch overhead through the C example backend beside the Python example backend's (same run)."""
    missing = [name for name in ("cexample", "acme") if name not in rt.backends or rt.backends[name].status != "available"]
    if missing:
        return {"c_abi_overhead_us": None, "acme_overhead_us": None,
                "c_abi_skipped": f"not installed or unavailable: {', '.join(missing)}"
                                 " (pip install -e ./examples/vendor-plugin -e ./examples/c-plugin)"}
    c_dev, py_dev = rt.device("cexample:0"), rt.device("acme:0")
    c_runs: list[dict[str, Any]] = []
    py_runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        c_runs.append(dispatch_overhead(c_dev, repeats=repeats))
        py_runs.append(dispatch_overhead(py_dev, repeats=repeats))
    c_us = statistics.median(r["overhead_us"] for r in c_runs)
    py_us = statistics.median(r["overhead_us"] for r in py_runs)
    return {
        "c_abi_overhead_us": round(c_us, 3),
        "c_abi_launch_us": round(statistics.median(r["dsrt_launch_us"] for r in c_runs), 3),
        "acme_overhead_us": round(py_us, 3),
        "acme_launch_us": round(statistics.median(r["dsrt_launch_us"] for r in py_runs), 3),
        "c_abi_minus_acme_us": round(c_us - py_us, 3),
        "c_abi_target_us": "within 1.0 of acme_overhead_us",
        "c_abi_meets_target": c_us - py_us <= 1.0,
        "c_abi_rounds": rounds,
    }


def torch_peers(device: Any, *, calls: int, rounds: int = 7) -> dict[str, Any]:
    """Per-call times of dsrt launches and their torch peers (see the module docstring), interleaved."""
    try:
        import torch
    except ImportError as exc:
        return {"torch": None, "torch_skipped": f"torch is not installed ({exc})"}
    import numpy as np

    x, y = np.arange(8, dtype=np.float32), np.ones(8, np.float32)
    z = np.empty_like(x)
    a, b, o = device.asarray(x), device.asarray(y), device.asarray(z)
    ta, tb, to = torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), torch.empty(8)
    hm = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    ma, mb = device.asarray(hm), device.asarray(hm.T.copy())
    tma, tmb, tmc = torch.from_numpy(hm.copy()), torch.from_numpy(hm.T.copy()), torch.empty(16, 16)
    launch = device.launch
    cases: dict[str, Callable[[], Any]] = {
        "numpy_out": lambda: np.add(x, y, out=z),
        "torch_out": lambda: torch.add(ta, tb, out=to),
        "torch_alloc": lambda: torch.add(ta, tb),
        "dsrt_out": lambda: launch("add", a, b, out=o),
        "dsrt_alloc": lambda: launch("add", a, b),
        "torch_gemm_alpha": lambda: torch.addmm(tmc, tma, tmb, beta=0.0, alpha=2.0),
        "dsrt_gemm_alpha": lambda: launch("gemm", ma, mb, alpha=2.0),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name] += per_call_seconds(fn, calls=calls, batches=1)
    if not np.array_equal(launch("add", a, b).numpy(), x + y) or not np.allclose(
            launch("gemm", ma, mb, alpha=2.0).numpy(), 2.0 * (hm @ hm.T), rtol=1e-4, atol=1e-4):
        raise AssertionError("dispatch benchmark: a dsrt launch gave a wrong result")
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {"torch": torch.__version__, "torch_rounds": rounds, "torch_calls_per_round": calls}
    for k, v in times.items():
        out[f"{k}_us"] = {"min": round(min(v) * 1e6, 3), "median": round(med[k] * 1e6, 3)}
    out["alloc_launch_vs_torch"] = round(med["dsrt_alloc"] / med["torch_alloc"], 3)
    out["launch_vs_torch_out"] = round(med["dsrt_out"] / med["torch_out"], 3)
    out["gemm_alpha_vs_torch"] = round(med["dsrt_gemm_alpha"] / med["torch_gemm_alpha"], 3)
    # Each round's own ratio (its two figures measured moments apart), then their median: the figure
    # least moved by a shared machine's slow spells.
    for mine, theirs, name in (("dsrt_alloc", "torch_alloc", "alloc_launch_vs_torch_paired"),
                               ("dsrt_out", "torch_out", "launch_vs_torch_out_paired")):
        out[name] = round(statistics.median(d / t for d, t in zip(times[mine], times[theirs], strict=True)), 3)
    out["alloc_launch_vs_torch_min"] = round(min(times["dsrt_alloc"]) / min(times["torch_alloc"]), 3)
    out["launch_vs_torch_out_min"] = round(min(times["dsrt_out"]) / min(times["torch_out"]), 3)
    out["torch_target_ratio"] = 1.0
    out["torch_meets_target"] = out["alloc_launch_vs_torch"] <= 1.0 and out["launch_vs_torch_out"] <= 1.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--repeats", type=int, default=60000)
    args = parser.parse_args()
    rt = dsrt.default_runtime()
    result = dispatch_overhead(rt.device("cpu:0"), repeats=args.repeats)
    result["target_overhead_us"] = 3.0
    result["meets_target"] = result["overhead_us"] <= 3.0
    result.update(c_abi_overhead(rt, repeats=args.repeats // 2))
    result.update(torch_peers(rt.device("cpu:0"), calls=max(args.repeats // 6, 1000)))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
