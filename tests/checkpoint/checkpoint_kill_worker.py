"""Fork server for test_checkpoint_kill.py: saves steps forever in children that the test SIGKILLs.

Started as ``python checkpoint_kill_worker.py STORE``; it imports once (interpreter start-up is slow on
a loaded machine), prints ``ZYGOTE READY``, then for each ``fork`` line on stdin forks a child that
opens the store, prints ``CHILD <pid> READY`` and saves step after step (alternating blocking and
asynchronous saves, with ``keep=2`` so retention runs), printing ``COMMITTED <step>`` after each
commit. The zygote reaps the child and prints ``REAPED <pid> <signal>``. It starts no thread, so
forking is safe. :func:`expected` is the tree of each step, for the test to compare with.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from dsrt import dtypes as dt
from dsrt.checkpoint import Checkpointer
from dsrt.checkpoint.layout import hasher

CHUNK = 16 << 10


def expected(step: int) -> dict:
    """The tree saved as ``step``: fixed base arrays with a few chunks changed per step (incremental)."""
    rng = np.random.default_rng(12345)
    a = rng.standard_normal((6, 64, 1024), dtype=np.float32)  # 6 x 16 chunks
    b = rng.standard_normal(40_000).astype(dt.bfloat16)
    step_rng = np.random.default_rng(step)
    for i in step_rng.choice(a.size, 12, replace=False):
        a.reshape(-1)[i] = step
    b[step % b.size] = step
    return {"model": {"a": a, "b": b}, "opt": [np.full(3, step, np.int64), {"lr": 0.5 / (step + 1)}], "step": step}


def child(path: str) -> None:
    ck = Checkpointer(path, keep=2, chunk_bytes=CHUNK)
    steps = ck.steps()
    step = steps[-1] + 1 if steps else 0
    os.write(1, f"CHILD {os.getpid()} READY\n".encode())
    for _ in range(1000):
        tree = expected(step)
        if step % 2:
            ck.save(step, tree).result()
        else:
            ck.save(step, tree, blocking=True)
        os.write(1, f"COMMITTED {step}\n".encode())
        step += 1


def main() -> int:
    path = sys.argv[1]
    hasher()  # import xxhash here, once, not in every child
    expected(0)
    print("ZYGOTE READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "fork":
            break
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                child(path)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(f"REAPED {pid} {os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
