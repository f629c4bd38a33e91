"""OpenCL backend throughput on opencl:0 against numpy on the same machine, in the same run.

Measures fp32 GEMM GFLOP/s at 512, 1024 and 2048 (square) and elementwise ``add`` bandwidth in GB/s
on 64 MiB arrays (two reads and one write counted). Each figure is the median of several runs; device
work is timed from launch to the end of a synchronize. Also reports the device's in-register fp32
multiply-add rate (``device_fma_gflops``), the ceiling any GEMM on that device can reach.

Usage: ``python benchmarks/opencl.py --json`` (``--repeats N``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

import dsrt
from dsrt.cli.bench import median_seconds

_FMA_SRC = """
__kernel void fma_peak(__global float* out, const int iters) {
    float8 a0 = (float8)(get_global_id(0) * 1e-3f), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3;
    float8 a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7;
    const float8 b = (float8)(0.999f), c = (float8)(0.001f);
    for (int i = 0; i < iters; i++) {
        a0 = mad(a0, b, c); a1 = mad(a1, b, c); a2 = mad(a2, b, c); a3 = mad(a3, b, c);
        a4 = mad(a4, b, c); a5 = mad(a5, b, c); a6 = mad(a6, b, c); a7 = mad(a7, b, c);
    }
    float8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[get_global_id(0)] = s.s0 + s.s7;
}
"""


def _fma_peak(dev: dsrt.Device, repeats: int) -> float:
    k = dev.compile(_FMA_SRC, lang="opencl", name="fma_peak", options=["-cl-mad-enable"])
    items = 256 * dev.info.compute_units
    out = dev.empty(items)
    iters = 5000
    # Work-groups of 8 items: enough groups for every compute unit, and legal on any device.
    local = min(8, int(dev.info.properties.get("max_work_group_size", 1)))

    def run() -> None:
        k.launch(out, np.int32(iters), global_size=items, local_size=local)
        dev.synchronize()

    return items * iters * 8 * 8 * 2 / median_seconds(run, repeats) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rt = dsrt.Runtime(backends=["opencl"])
    status = rt.backends.get("opencl")
    if status is None or not status.devices:
        print(json.dumps({"error": f"opencl unavailable: {status.reason if status else 'not installed'}"}))
        return 1
    dev = status.devices[0]
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"device": dev.id, "device_name": dev.info.name,
                              "driver_version": dev.info.properties.get("driver_version"),
                              "repeats": args.repeats, "gemm": {}}
    for n in (512, 1024, 2048):
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        da, db = dev.asarray(a), dev.asarray(b)
        out = dev.empty((n, n))
        reps = max(2, args.repeats if n < 2048 else args.repeats // 2)

        def dev_gemm(da: Any = da, db: Any = db, out: Any = out) -> None:
            dev.launch("gemm", da, db, out=out)
            dev.synchronize()

        t_dev = median_seconds(dev_gemm, reps)
        err = float(np.abs(out.numpy() - a @ b).max())
        def np_gemm(a: np.ndarray = a, b: np.ndarray = b) -> None:
            np.matmul(a, b)

        t_np = median_seconds(np_gemm, reps)
        flops = 2.0 * n**3
        result["gemm"][str(n)] = {"opencl_gflops": flops / t_dev / 1e9, "numpy_gflops": flops / t_np / 1e9,
                                  "max_abs_error": err}
    n = (64 << 20) // 4
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    dx, dy = dev.asarray(x), dev.asarray(y)
    dout = dev.empty(n)
    hout = np.empty_like(x)

    def dev_add() -> None:
        dev.launch("add", dx, dy, out=dout)
        dev.synchronize()

    moved = 3.0 * x.nbytes
    t_dev = median_seconds(dev_add, args.repeats)
    t_np = median_seconds(lambda: np.add(x, y, out=hout), args.repeats)
    assert np.array_equal(dout.numpy(), x + y)
    result["add_64MiB"] = {"opencl_gbps": moved / t_dev / 1e9, "numpy_gbps": moved / t_np / 1e9}
    result["device_fma_gflops"] = _fma_peak(dev, 3)
    g = result["gemm"]["1024"]
    result["gemm_vs_numpy"] = g["opencl_gflops"] / g["numpy_gflops"]
    result["add_vs_numpy"] = result["add_64MiB"]["opencl_gbps"] / result["add_64MiB"]["numpy_gbps"]
    result["targets"] = {"gemm_vs_numpy": 0.25, "add_vs_numpy": 0.8}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
