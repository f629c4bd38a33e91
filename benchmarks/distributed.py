"""dsrt on a Dask cluster: scheduling overhead against plain Dask, and recovery from a lost worker.

Starts a two-worker ``distributed.LocalCluster`` on loopback (processes, one thread each) and a dsrt
runtime attached to it (cpu backend here and on the workers). Figures:

- ``overhead_ratio_vs_dask``: wall seconds of ``rt.map`` over 512 small ``add`` chunks on the
  cluster's (remote) devices, divided by ``client.map(numpy.add, ...)`` + ``gather`` of the same
  chunks on the same cluster, best of ``--repeats`` each, interleaved in one run (target <= 1.2);
- ``recovery_s``: seconds from SIGKILL of a worker with chunks in flight to the last result of that
  ``rt.map`` (target <= 5 s on loopback); ``healthy_s`` is the same map with no kill, for scale;
- ``all_checked``: every result of every run compared with numpy.

Usage: ``python benchmarks/distributed.py [--json] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

# This file is named like the package it benchmarks: keep its folder off the import path, or
# ``import distributed`` would find this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _close(results: list[Any], chunks: list[tuple[np.ndarray, ...]], ref: Any) -> bool:
    from dsrt.accuracy import relative_error, tolerance

    ok = len(results) == len(chunks)
    for r, c in zip(results, chunks, strict=False):
        got = r.numpy() if hasattr(r, "numpy") else np.asarray(r)
        want = ref(*c)
        ok = ok and got.shape == want.shape and relative_error(got, want) <= tolerance(want.dtype, accumulate=c[0].shape[-1])
    return bool(ok)


def overhead(rt: Any, client: Any, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    chunks = [(rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32))
              for _ in range(512)]
    remote = [d.id for d in rt.devices if getattr(d, "remote", False)]
    checked = True

    def dsrt_run(devices: list[str] | None) -> float:
        nonlocal checked
        t0 = time.perf_counter()
        out = rt.map("add", chunks, devices=devices)
        dt = time.perf_counter() - t0
        checked = checked and _close(out, chunks, np.add)
        return dt

    def dask_run() -> float:
        nonlocal checked
        t0 = time.perf_counter()
        futures = client.map(np.add, [a for a, _ in chunks], [b for _, b in chunks], pure=False)
        out = client.gather(futures)
        dt = time.perf_counter() - t0
        checked = checked and _close(out, chunks, np.add)
        return dt

    dsrt_run(remote)  # warm: calibration of the model, worker caches
    dask_run()
    t_dsrt, t_dask, t_all = [], [], []
    for _ in range(repeats):
        t_dsrt.append(dsrt_run(remote))
        t_dask.append(dask_run())
        t_all.append(dsrt_run(None))
    report = rt.last_run
    return {"chunks": len(chunks), "dsrt_remote_s": min(t_dsrt), "dask_s": min(t_dask),
            "overhead_ratio_vs_dask": min(t_dsrt) / min(t_dask),
            "dsrt_local_and_remote_s": min(t_all), "local_and_remote_chunks": dict(report.chunks),
            "checked": checked}


def recovery(rt: Any, client: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    chunks = [(rng.standard_normal((320, 320)), rng.standard_normal((320, 320))) for _ in range(48)]
    remote = [d for d in rt.devices if getattr(d, "remote", False)]
    ids = [d.id for d in remote]
    t0 = time.perf_counter()
    out = rt.map("gemm", chunks, devices=ids)
    healthy = time.perf_counter() - t0
    checked = _close(out, chunks, np.matmul)
    victim = remote[0]
    pid = dict(client.run(os.getpid))[victim.address]
    killed: dict[str, float] = {}

    def killer() -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < 60:
            if victim.in_flight() >= 2 and time.perf_counter() - start > healthy / 3:
                killed["at"] = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = rt.map("gemm", chunks, devices=ids)
    end = time.perf_counter()
    thread.join(5)
    report = rt.last_run
    checked = checked and _close(out, chunks, np.matmul) and set(report.commits.values()) == {1}
    return {"chunks": len(chunks), "healthy_s": healthy, "recovery_s": end - killed["at"] if killed else None,
            "lost": victim.id, "quarantined": dict(report.quarantined), "moved": report.moved(),
            "commits_all_1": set(report.commits.values()) == {1}, "checked": checked}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (best is kept)")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    import dsrt

    os.environ.setdefault("DSRT_PERFMODEL", "off")
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=None, silence_logs=50)
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=120)
        rt = dsrt.Runtime(backends=["cpu"], cluster=client)
        links = {d.id: {"round_trip_ms": d.link[0] * 1e3, "bandwidth_MBps": d.link[1] / 1e6}
                 for d in rt.devices if getattr(d, "remote", False)}
        over = overhead(rt, client, args.repeats)
        rec = recovery(rt, client)
        result = {"overhead_ratio_vs_dask": round(over["overhead_ratio_vs_dask"], 3),
                  "recovery_s": round(rec["recovery_s"], 3) if rec["recovery_s"] is not None else None,
                  "all_checked": bool(over["checked"] and rec["checked"]),
                  "overhead": over, "recovery": rec, "links": links,
                  "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
        rt.close()
    finally:
        client.close()
        cluster.close(timeout=20)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0 if result["all_checked"] else 1


if __name__ == "__main__":
    sys.exit(main())
