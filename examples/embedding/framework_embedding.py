#!/usr/bin/env python3
"""Embedding dsrt in a framework: data in and out by DLPack, kernels launched or balanced, a trace.

    python examples/embedding/framework_embedding.py [--trace run.json]

Runs on whatever is installed; prints one line per step and exits non-zero if a result is wrong.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import dsrt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trace", help="write a Perfetto/Chrome trace here")
    args = parser.parse_args()

    rt = dsrt.Runtime()
    print("devices:", ", ".join(d.id for d in rt.devices))

    # The framework already holds its data in numpy: hand it over without a copy.
    weights = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    w = rt.from_dlpack(weights, device="cpu:0")
    x = rt.asarray(np.ones((256, 64), np.float32), device="cpu:0")

    # One kernel where the data lives, then the result back to numpy without a copy.
    y = rt.launch("gemm", w, x, alpha=0.5)
    ok = np.allclose(np.from_dlpack(y), 0.5 * weights @ np.ones((256, 64), np.float32), rtol=1e-4, atol=1e-4)
    print("gemm on", y.device.id, "correct" if ok else "WRONG")

    # Many independent chunks, spread over every device that can run them.
    chunks = [(rt.asarray(np.full((128, 128), i, np.float32), device="cpu:0"),) for i in range(8)]
    with rt.trace(args.trace):
        outs = rt.map("softmax", chunks)
    ok_map = all(np.allclose(o.numpy(), 1.0 / 128) for o in outs)
    used = {dev: n for dev, n in rt.scheduler.last_run.chunks.items() if n}
    print("map chunks per device:", used, "correct" if ok_map else "WRONG")
    return 0 if ok and ok_map else 1


if __name__ == "__main__":
    sys.exit(main())
