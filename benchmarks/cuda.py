#!/usr/bin/env python3
"""CUDA figures through dsrt against CuPy directly, in one process, on ``cuda:0``.

    python benchmarks/cuda.py --json

GEMM TFLOP/s (bf16 and fp32, 8192 cubed), device-to-device copy GB/s, and launch overhead of a tiny
``add`` through ``rt.launch`` against ``cupy.add`` (both synchronous). Medians of repeated runs.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    import cupy as cp

    import dsrt
    from dsrt.cli.bench import median_seconds
    from dsrt_cuda.device import cuda_view

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rt = dsrt.default_runtime()
    dev = rt.device("cuda:0")
    sync = cp.cuda.get_current_stream().synchronize
    n = args.n
    out: dict = {"device": dev.info.name, "n": n}
    for dtype in ("float32", "bfloat16"):
        host = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32).astype(dsrt.as_dtype(dtype))
        a = dev.asarray(host)
        c = dev.launch("gemm", a, a)
        t_dsrt = median_seconds(lambda a=a, c=c: dev.launch("gemm", a, a, out=c), args.repeats, dev.synchronize)
        if dtype == "float32":
            ca = cuda_view(a)
        else:
            # CuPy has no bfloat16 dtype; its nearest peer is an fp16 matmul of the same size.
            ca = cp.asarray(host.astype(np.float32)).astype(cp.float16)
        cc = cp.matmul(ca, ca)
        t_cupy = median_seconds(lambda ca=ca, cc=cc: cp.matmul(ca, ca, out=cc), args.repeats, sync)
        out[f"gemm_{dtype}_tflops_dsrt"] = round(2 * n**3 / t_dsrt / 1e12, 2)
        out[f"gemm_{dtype}_tflops_cupy"] = round(2 * n**3 / t_cupy / 1e12, 2)
        out[f"gemm_{dtype}_ratio"] = round(t_cupy / t_dsrt, 3)
    m = 256 << 20
    src = dev.asarray(np.ones(m // 4, np.float32))
    dst = dev.empty(src.shape, src.dtype)
    t_copy = median_seconds(lambda: dev.copy(dst, src), args.repeats, dev.synchronize)
    out["d2d_copy_gbps"] = round(2 * m / t_copy / 1e9, 1)
    x, y = dev.asarray(np.ones(8, np.float32)), dev.asarray(np.ones(8, np.float32))
    z = dev.launch("add", x, y)
    cx, cy, cz = cuda_view(x), cuda_view(y), cuda_view(z)
    calls = 2000
    t_d = median_seconds(lambda: [rt.launch("add", x, y, out=z) for _ in range(calls)], 7, dev.synchronize) / calls
    t_c = median_seconds(lambda: [cp.add(cx, cy, out=cz) for _ in range(calls)], 7, sync) / calls
    out["launch_us_dsrt"] = round(t_d * 1e6, 2)
    out["launch_us_cupy"] = round(t_c * 1e6, 2)
    out["launch_overhead_us"] = round((t_d - t_c) * 1e6, 2)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
