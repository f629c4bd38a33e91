"""Run under mpiexec by test_checkpoint_mpi.py: each rank saves and restores its own shard of a tree.

Every rank initialises MPI through mpi4py before creating its Checkpointer without ``rank=``, so
the rank comes from ``COMM_WORLD``. Prints one line ``RESULT <json>`` per rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import dsrt
from dsrt.checkpoint import Checkpointer, list_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mpi_common import run_worker


def shard(rank: int, step: int) -> dict:
    rng = np.random.default_rng(100 * rank + step)
    return {"w": rng.standard_normal((rank + 2, 3000)).astype(np.float32), "rank": rank, "step": step}


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    cpu = dsrt.Runtime(backends=["cpu"]).device("cpu:0")
    path = sys.argv[1]
    with Checkpointer(path, keep=2, chunk_bytes=4096) as ck:
        assert ck.rank == rank
        for step in range(3):
            tree = shard(rank, step)
            ck.save(step, {"w": cpu.asarray(tree["w"]), "rank": rank, "step": step})
        ck.wait()
        comm.Barrier()
        back = ck.restore(device=cpu)
        own = back["rank"] == rank and back["step"] == 2 and back["w"].numpy().tobytes() == shard(rank, 2)["w"].tobytes()
        older = ck.restore(1)
        own = own and older["w"].tobytes() == shard(rank, 1)["w"].tobytes()
        steps = ck.steps()
    comm.Barrier()
    listed = sorted((s.step, s.rank) for s in list_steps(path))
    print("RESULT " + json.dumps({"rank": rank, "ok": bool(own), "steps": steps, "listed": listed}), flush=True)
    return 0


if __name__ == "__main__":
    run_worker(main)
