"""Run under mpiexec by test_mpi.py: check every collective, op and dtype against numpy.

Rank r contributes ``r % 2 + 1`` CPU devices (unequal devices per node). Prints one line
``RESULT <json>`` per rank. ``missing`` mode: the last rank never joins; the others report the
CollectiveError they get.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import dsrt
from dsrt import dtypes as dt
from dsrt.collective import Communicator
from dsrt.collective.ops import reference
from dsrt_cpu.device import CpuDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mpi_common import contribution, matches, run_worker

OPS = ("sum", "prod", "min", "max", "avg")


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "checks"
    rt = dsrt.Runtime()
    from mpi4py import MPI

    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    if mode == "missing":
        start = time.perf_counter()
        comm = Communicator([rt.device("cpu:0")], runtime=rt, mpi=True, timeout=1.0)
        x = rt.device("cpu:0").asarray(np.ones(4, np.float32))
        comm.all_reduce(x)  # everyone joins once: the next call on x takes the prepared (lean) path
        warm = x.numpy().tolist()
        if rank == size - 1:
            time.sleep(7.0)  # never joins the second all_reduce; outlives the others' timeout and diagnosis
            os._exit(0)
        try:
            comm.all_reduce(x)
            out = {"rank": rank, "error": None, "warm": warm}
        except dsrt.CollectiveError as exc:
            out = {"rank": rank, "error": str(exc), "missing": exc.missing, "warm": warm}
        try:
            comm.barrier()
            out["second"] = None
        except dsrt.CollectiveError as exc:
            out["second"] = str(exc)
        print("RESULT " + json.dumps(out), flush=True)
        time.sleep(max(0.0, start + 5.0 - time.perf_counter()))  # the first exit makes mpiexec kill the rest
        os._exit(0)

    devs = [rt.device("cpu:0")] + [rt.add_device(CpuDevice(i)) for i in range(1, rank % 2 + 1)]
    comm = Communicator(devs, runtime=rt, mpi=True, timeout=30.0)
    P, base, L = comm.world_size, comm.participant(0), len(devs)
    failures: list[str] = []
    checks = 0

    def check(ok: bool, what: str) -> None:
        nonlocal checks
        checks += 1
        if not ok:
            failures.append(what)

    n = 37
    for name, dtype in dt.STANDARD_DTYPES.items():
        for op in OPS:
            try:
                ref = reference(op, [contribution(g, dtype, n, op) for g in range(P)])
            except dsrt.ConfigurationError:
                continue  # undefined (max of complex, avg of ints)
            xs = [d.asarray(contribution(base + j, dtype, n, op)) for j, d in enumerate(devs)]
            if (name, op) in (("float32", "sum"), ("bfloat16", "avg")):
                outs = [d.empty((n,), dtype) for d in devs]
                comm.all_reduce(xs, op, out=outs)
                check(all(np.array_equal(x.numpy(), contribution(base + j, dtype, n, op)) for j, x in enumerate(xs)),
                      f"all_reduce out-of-place modified input {name}")
                xs = outs
            else:
                comm.all_reduce(xs, op)
            check(all(matches(x.numpy(), ref, name) for x in xs), f"all_reduce {op} {name}")
    for name in ("float32", "int32", "bfloat16", "bool", "float8_e4m3fn"):
        dtype = dt.STANDARD_DTYPES[name]
        inputs = [contribution(g, dtype, n, "sum") for g in range(P)]
        mine = [inputs[base + j] for j in range(L)]
        root = P - 1
        xs = [d.asarray(m) for d, m in zip(devs, mine, strict=False)]
        comm.reduce(xs, root, "max" if name != "bool" else "min")
        if comm.locate(root)[0] == rank:
            ref = reference("max" if name != "bool" else "min", inputs)
            check(matches(xs[comm.locate(root)[1]].numpy(), ref, name), f"reduce {name}")
        xs = [d.asarray(m) for d, m in zip(devs, mine, strict=False)]
        comm.broadcast(xs, 1)
        check(all(np.array_equal(x.numpy(), inputs[1]) for x in xs), f"broadcast {name}")
        xs = [d.asarray(m) for d, m in zip(devs, mine, strict=False)]
        got = comm.all_gather(xs)
        check(all(np.array_equal(g.numpy(), np.stack(inputs)) for g in got), f"all_gather {name}")
        big = [contribution(g, dtype, 3 * P, "sum") for g in range(P)]
        ref = reference("sum", big)
        got = comm.reduce_scatter([d.asarray(big[base + j]) for j, d in enumerate(devs)], "sum")
        check(all(matches(g.numpy(), ref[(base + j) * 3:(base + j + 1) * 3], name) for j, g in enumerate(got)),
              f"reduce_scatter {name}")
        blocks = [contribution(g, dtype, 2 * P, "sum").reshape(P, 2) for g in range(P)]
        got = comm.all_to_all([d.asarray(blocks[base + j]) for j, d in enumerate(devs)])
        check(all(np.array_equal(g.numpy(), np.stack([blocks[p][base + j] for p in range(P)]))
                  for j, g in enumerate(got)), f"all_to_all {name}")
    # large messages (from 64 KiB): the MPI transport's gated ring, an odd element count, every rank's result
    for name, op, n_big in (("float32", "sum", 70001), ("int64", "max", 9000), ("float64", "prod", 8193)):
        dtype = dt.STANDARD_DTYPES[name]
        ref = reference(op, [contribution(g, dtype, n_big, op) for g in range(P)])
        xs = [d.asarray(contribution(base + j, dtype, n_big, op)) for j, d in enumerate(devs)]
        comm.all_reduce(xs, op)
        check(all(matches(x.numpy(), ref, name) for x in xs), f"large all_reduce {op} {name}")
    # deterministic mode: bit-identical across runs and algorithms
    results = []
    for algo in ("ring", "tree", "recursive_doubling", "ring"):
        dcomm = Communicator(devs, runtime=rt, mpi=True, timeout=30.0, deterministic=True, algorithm=algo)
        xs = [d.asarray(contribution(base + j, dt.float32, 100003, "sum")) for j, d in enumerate(devs)]
        dcomm.all_reduce(xs)
        results.append(xs[0].numpy())
        dcomm.close()
    check(all(np.array_equal(results[0], r) for r in results), "deterministic bit-identical")
    # point to point: participant g sends to g+1 (ring)
    nxt, prv = (base + L) % P, (base - 1) % P
    x = devs[-1].asarray(np.full(5, base + L - 1, np.int64))
    y = devs[0].empty((5,), "int64")
    if rank % 2 == 0:
        comm.send(x, nxt, tag=3)
        comm.recv(y, prv, tag=3)
    else:
        comm.recv(y, prv, tag=3)
        comm.send(x, nxt, tag=3)
    check(bool(np.all(y.numpy() == prv)), "send/recv")
    # asynchronous
    xs = [d.asarray(np.full(8, 1.0, np.float32)) for d in devs]
    h = comm.all_reduce(xs, async_op=True)
    got = h.wait()
    check(all(np.all(g.numpy() == P) for g in got), "async all_reduce")
    comm.barrier()
    lean_checks(rt, size, rank, check)
    print("RESULT " + json.dumps({"rank": rank, "participants": P, "checks": checks, "failures": failures}),
          flush=True)
    comm.close()
    return 0 if not failures else 1


def lean_checks(rt: dsrt.Runtime, size: int, rank: int, check: Any) -> None:
    """One device per rank: small all-reduces take the prepared path; it must never return stale data."""
    dev = rt.device("cpu:0")
    comm = Communicator([dev], runtime=rt, mpi=True, timeout=30.0)
    total = size * (size + 1) // 2
    x = dev.asarray(np.full(3, rank + 1.0, np.float32))
    out = dev.empty((3,), "float32")
    for step in range(4):  # same arrays every time, new contents every time
        dev.copy_from_host(x, np.full(3, (rank + 1.0) * (step + 1), np.float32))
        comm.all_reduce(x, out=out)
        check(bool(np.all(out.numpy() == total * (step + 1))), f"lean all_reduce step {step}")
        check(bool(np.all(x.numpy() == (rank + 1.0) * (step + 1))), f"lean all_reduce kept input step {step}")
    dev.pool.spill(x.allocation)  # the input moves to host memory: the prepared views are stale now
    filler = dev.asarray(np.full(3, -1000.0, np.float32))  # takes the block x left behind
    dev.copy_from_host(x, np.full(3, rank + 1.0, np.float32))  # x comes back elsewhere
    comm.all_reduce(x, out=out)
    check(bool(np.all(out.numpy() == total)), "lean all_reduce after the input was spilled and moved")
    check(bool(np.all(filler.numpy() == -1000.0)), "lean all_reduce after a spill left other memory alone")
    comm.all_reduce(x, "max", out=out)
    check(bool(np.all(out.numpy() == size)), "lean all_reduce with another op on the same arrays")
    big = [contribution(g, dt.float32, 50001, "sum") for g in range(size)]  # 200 KB: the gated ring
    bx, bout = dev.asarray(big[rank]), dev.empty((50001,), "float32")
    comm.all_reduce(bx, out=bout)
    check(matches(bout.numpy(), reference("sum", big), "float32"), "lean large all_reduce out of place")
    check(np.array_equal(bx.numpy(), big[rank]), "lean large all_reduce kept its input")
    comm.all_reduce(bx, "min")
    check(np.array_equal(bx.numpy(), reference("min", big)), "lean large all_reduce in place")
    y = dev.asarray(np.full(3, rank + 1, np.int32))
    comm.all_reduce(y)
    comm.all_reduce(y)  # in place twice: the second sums the first's result
    check(bool(np.all(y.numpy() == total * size)), "lean in-place all_reduce twice")
    comm.close()


if __name__ == "__main__":
    run_worker(main)
