"""A process SIGKILLed at random moments of its saves always leaves the last complete step restorable."""

from __future__ import annotations

import importlib.util
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dsrt.checkpoint import Checkpointer

WORKER = Path(__file__).with_name("checkpoint_kill_worker.py")
KILLS = 24


def _load_worker():
    spec = importlib.util.spec_from_file_location("checkpoint_kill_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Lines:
    """Lines from a pipe, with a deadline."""

    def __init__(self, stream) -> None:
        self.fd = stream.fileno()
        self.buf = b""

    def next(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the worker within {timeout} s (have {self.buf!r})"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"worker exited (have {self.buf!r})"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def _debris(path: Path) -> bool:
    """True when a save was cut short: a step directory without a manifest, or a temporary file."""
    def listing(sub: str) -> list[str]:
        # A kill while the first save creates the layout can leave some of these folders missing.
        return os.listdir(path / sub) if (path / sub).is_dir() else []

    committed = {n.split(".")[0] for n in listing("manifests") if n.endswith(".json")}
    steps = [n for n in listing("steps") if n.isdigit()]
    temps = [n for d in ("manifests", "chunks/rank0") for n in listing(d) if ".tmp" in n]
    return bool(temps) or any(s not in committed for s in steps)


def _tree_equal(got, want) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and list(got) == list(want) and all(_tree_equal(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_tree_equal, got, want))
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and got.dtype == want.dtype and got.tobytes() == want.tobytes()
    return type(got) is type(want) and got == want


def test_sigkill_at_random_points_leaves_last_complete_step_bit_identical(tmp_path) -> None:
    worker = _load_worker()
    rng = random.Random(20240611)
    store = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    lines = _Lines(proc.stdout)
    try:
        assert lines.next() == "ZYGOTE READY"
        last_committed = -1
        mid_save = 0
        save_time = 0.05
        for kill in range(KILLS):
            assert proc.stdin is not None
            proc.stdin.write(b"fork\n")
            proc.stdin.flush()
            line = lines.next()
            assert line.startswith("CHILD ") and line.endswith(" READY"), line
            pid = int(line.split()[1])
            started = time.monotonic()
            # Kill points spread over a few saves (the first ones also hit start-up cleanup and the first save).
            time.sleep(rng.uniform(0, 4 * save_time) if kill % 4 else rng.uniform(0, save_time / 2))
            os.kill(pid, signal.SIGKILL)
            commits = []
            while not (line := lines.next()).startswith("REAPED"):
                assert line.startswith("COMMITTED"), line
                commits.append(int(line.split()[1]))
            assert line == f"REAPED {pid} {int(signal.SIGKILL)}", line
            if commits:
                last_committed = commits[-1]
                save_time = max(0.01, min(1.0, (time.monotonic() - started) / (len(commits) + 1)))
            else:
                save_time = min(1.0, save_time * 1.5)  # a loaded machine: aim later next time
            if not store.exists() or not (store / "manifests").exists():
                continue
            mid_save += _debris(store)
            reader = Checkpointer(store, keep=None)
            steps = reader.steps()
            if last_committed < 0 and not steps:
                continue
            assert steps and steps[-1] >= last_committed, (steps, last_committed)
            assert len(steps) <= 3  # keep=2, plus one committed just before its retention ran
            for step in steps:  # the latest and every other step still listed restore bit for bit
                assert _tree_equal(reader.restore(step), worker.expected(step)), f"step {step} after kill {kill}"
            assert reader.verify() == []
        assert last_committed >= 5, "the children never got far: kill points too early to mean anything"
        assert mid_save >= KILLS // 4, f"only {mid_save} of {KILLS} kills interrupted a save"
    finally:
        proc.kill()
        proc.wait()
