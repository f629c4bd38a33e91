"""All-reduce bus bandwidth through dsrt and through raw mpi4py ``Allreduce``, in the same MPI job.

Run: ``mpiexec -n 4 python benchmarks/collectives.py --json`` (``--allow-run-as-root --oversubscribe``
as root / with more ranks than cores). One CPU device per rank; float32 sum; sizes 8 B .. 256 MiB.
For every size both paths run alternately (dsrt, mpi, dsrt, mpi... ``--rounds`` times each), each result
is checked against the expected sum, and the best time per path is kept. Bus bandwidth is the nccl-tests definition:
``algbw = bytes / time``, ``busbw = algbw x 2 (n-1) / n``. Rank 0 prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    parser.add_argument("--max-bytes", type=int, default=256 << 20)
    parser.add_argument("--min-bytes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds per size (dsrt, mpi, dsrt, ...); the best of each path is kept")
    args = parser.parse_args()

    from mpi4py import MPI

    import dsrt
    from dsrt.collective import Communicator

    world = MPI.COMM_WORLD
    n = world.Get_size()
    rank = world.Get_rank()
    rt = dsrt.Runtime(backends=["cpu"])
    comm = Communicator([rt.device("cpu:0")], runtime=rt, mpi=True, timeout=300.0)
    factor = 2.0 * (n - 1) / n
    rows = []
    sizes = [8, 64, 512, 4 << 10, 32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
    for size in (s for s in sizes if args.min_bytes <= s <= args.max_bytes):
        count = size // 4
        iters = 200 if size <= 64 << 10 else (20 if size <= 4 << 20 else 3)
        host = np.full(count, float(rank + 1), np.float32)
        expected = float(n * (n + 1) // 2)
        src = rt.asarray(host)
        dst = rt.empty((count,), "float32")
        recv = np.empty_like(host)
        best = {"dsrt": float("inf"), "mpi": float("inf")}
        for _round in range(max(args.rounds, 1)):
            world.Barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                comm.all_reduce(src, out=dst)
            best["dsrt"] = min(best["dsrt"], (time.perf_counter() - t0) / iters)
            world.Barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                world.Allreduce(host, recv, MPI.SUM)
            best["mpi"] = min(best["mpi"], (time.perf_counter() - t0) / iters)
        ok = bool(np.all(dst.numpy() == expected) and np.all(recv == expected))
        ok = world.allreduce(ok, op=MPI.LAND)
        # the slowest rank's time is the collective's time
        times = {k: world.allreduce(v, op=MPI.MAX) for k, v in best.items()}
        rows.append({
            "bytes": size, "iters": iters, "checked": ok,
            "dsrt_time_us": times["dsrt"] * 1e6, "mpi_time_us": times["mpi"] * 1e6,
            "dsrt_busbw_GBps": size / times["dsrt"] * factor / 1e9,
            "mpi_busbw_GBps": size / times["mpi"] * factor / 1e9,
            "busbw_ratio_vs_mpi": times["mpi"] / times["dsrt"],
        })
    comm.close()
    if rank == 0:
        by = {r["bytes"]: r for r in rows}
        out = {
            "benchmark": "all_reduce float32 sum, one cpu device per rank",
            "ranks": n,
            "busbw_definition": "nccl-tests: bytes / time x 2(n-1)/n",
            "busbw_ratio_vs_mpi": {"1MiB": by.get(1 << 20, {}).get("busbw_ratio_vs_mpi"),
                                   "64MiB": by.get(64 << 20, {}).get("busbw_ratio_vs_mpi")},
            "latency_us_8B": by.get(8, {}).get("dsrt_time_us"),
            "mpi_latency_us_8B": by.get(8, {}).get("mpi_time_us"),
            "latency_ratio_vs_mpi_8B": (by[8]["dsrt_time_us"] / by[8]["mpi_time_us"]) if 8 in by else None,
            "all_checked": all(r["checked"] for r in rows),
            "sizes": rows,
        }
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
