"""Under a real mpiexec with 2 ranks, each rank saves and restores its own shard in one store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mpi_common import mpiexec_or_skip

pytestmark = pytest.mark.mpi

WORKER = Path(__file__).with_name("checkpoint_mpi_worker.py")


def test_two_ranks_save_and_restore_their_own_shards(tmp_path) -> None:
    cmd = [mpiexec_or_skip(), "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, str(WORKER),
           str(tmp_path / "ck")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    results = sorted((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1], proc.stdout + proc.stderr
    for r in results:
        assert r["ok"], r
        assert r["steps"] == [1, 2]
        assert r["listed"] == [[1, 0], [1, 1], [2, 0], [2, 1]]
    assert sorted(p.name for p in (tmp_path / "ck" / "steps" / "2").iterdir()) == ["rank0", "rank1", "zarr.json"]
    assert sorted(p.name for p in (tmp_path / "ck" / "chunks").iterdir()) == ["rank0", "rank1"]
