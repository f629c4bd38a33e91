"""Run under mpiexec (3 ranks) by test_mpi_faults.py: collectives with a misbehaving rank 2.

Usage: ``mpi_faults.py MODE TIMEOUT``. Every rank prints one line ``RESULT <json>`` per scenario:
``{"scenario", "rank", "outcome": "completed" | "failed", "missing", "error", "elapsed"}`` with
``elapsed`` the seconds from the scenario's common start to the outcome, and for rank 2 ``arrived``
(seconds from the start to its call); before the last scenario each rank prints ``START <epoch s>``.
The ranks leave by returning from ``main`` (no ``os._exit``):
how the job ends after a failure is what the test checks.

- MODE ``agreement``: rank 2 is late to an 8-byte all-reduce (after the others gave up, and during
  their diagnosis), late to a 1 MiB all-reduce, stalls after passing a 1 MiB all-reduce's arrival
  gate, and finally never arrives at a broadcast from rank 0 (it sleeps until mpiexec ends it).
- MODE ``abort``: ``Runtime.world(on_timeout="abort")``; rank 2 never arrives at an all-reduce.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import dsrt
from dsrt.collective import Communicator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mpi_common import run_worker

LATE = 2


def together(world: Any, limit: float = 20.0) -> float:
    """A barrier on ``world`` (polled, bounded); returns the common start time on this rank's clock."""
    req = world.Ibarrier()
    end = time.perf_counter() + limit
    while not req.Test():
        if time.perf_counter() > end:
            raise RuntimeError("test harness barrier timed out")
        time.sleep(0.0005)
    return time.perf_counter()


def attempt(name: str, rank: int, start: float, call: Any, *, arrived: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": name, "rank": rank}
    try:
        got = call()
        out["outcome"] = "completed"
        out["value"] = np.asarray(got.numpy()).ravel()[:2].tolist()
    except dsrt.CollectiveError as exc:
        out.update(outcome="failed", missing=exc.missing, error=str(exc))
    out["elapsed"] = time.perf_counter() - start
    if arrived is not None:
        out["arrived"] = arrived - start
    print("RESULT " + json.dumps(out), flush=True)
    return out


def agreement(rt: dsrt.Runtime, world: Any, rank: int, timeout: float) -> None:
    dev = rt.device("cpu:0")
    grace = min(2.0, max(0.2, timeout / 2))
    good = world.Split(0 if rank != LATE else 1)  # the ranks that report at the end, to leave together

    def late_call(name: str, n: int, delay: float, *, warm: bool) -> None:
        comm = Communicator([dev], runtime=rt, mpi=True, timeout=timeout)
        x = dev.asarray(np.full(n, rank + 1.0, np.float32))
        if warm:
            comm.all_reduce(x)  # every rank joins once: the next call on x is the prepared (lean) path
            dev.copy_from_host(x, np.full(n, rank + 1.0, np.float32))
        start = together(world)
        arrived = None
        if rank == LATE:
            time.sleep(delay)
            arrived = time.perf_counter()
        attempt(name, rank, start, lambda: comm.all_reduce(x), arrived=arrived)
        comm.close()

    late_call("late 8 B, after the others gave up", 2, timeout + grace + 0.5, warm=True)
    late_call("late 8 B, during the others' diagnosis", 2, timeout + 0.1, warm=True)
    late_call("late 1 MiB", 1 << 18, timeout + grace + 0.5, warm=False)

    # Rank 2 passes the arrival gate, then stalls before the data operation.
    comm = Communicator([dev], runtime=rt, mpi=True, timeout=timeout)
    if rank == LATE:
        gate = comm.inter.arrive

        def stalled_gate(deadline: float | None, what: str) -> None:
            gate(deadline, what)
            time.sleep(timeout + grace + 0.5)

        comm.inter.arrive = stalled_gate
    x = dev.asarray(np.full(1 << 18, rank + 1.0, np.float32))
    start = together(world)
    attempt("stall after the gate, 1 MiB", rank, start, lambda: comm.all_reduce(x))
    comm.close()

    # Rank 2 never arrives at a broadcast (8 bytes, from rank 0).
    comm = Communicator([dev], runtime=rt, mpi=True, timeout=timeout)
    y = dev.asarray(np.full(2, rank + 1.0, np.float32))
    start = together(world)
    print(f"START {time.time()}", flush=True)
    if rank == LATE:
        time.sleep(600)  # mpiexec ends this rank once the others have left
    attempt("broadcast without rank 2", rank, start, lambda: comm.broadcast(y, 0))
    together(good)  # both good ranks have printed before either leaves (the first exit ends the job)


def abort(rt: dsrt.Runtime, world: Any, rank: int, timeout: float) -> None:
    comm = rt.world(timeout=timeout, on_timeout="abort")
    x = rt.device("cpu:0").asarray(np.full(2, rank + 1.0, np.float32))
    start = together(world)
    print(f"START {time.time()}", flush=True)
    if rank == LATE:
        time.sleep(600)
    attempt("abort", rank, start, lambda: comm.all_reduce(x))  # never returns: MPI_Abort


def main() -> int:
    mode, timeout = sys.argv[1], float(sys.argv[2])
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rt = dsrt.Runtime(backends=["cpu"])
    {"agreement": agreement, "abort": abort}[mode](rt, world, world.Get_rank(), timeout)
    return 0


if __name__ == "__main__":
    run_worker(main)
