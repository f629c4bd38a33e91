"""Collectives under a real mpiexec (2 and 4 ranks), started by the test itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_common import mpiexec_or_skip

pytestmark = pytest.mark.mpi

WORKER = Path(__file__).with_name("mpi_worker.py")


def _run(n: int, *args: str, timeout: float = 90) -> list[dict]:
    cmd = [mpiexec_or_skip(), "--allow-run-as-root", "--oversubscribe", "-n", str(n), sys.executable, str(WORKER), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == (n if not args else n - 1), proc.stdout + proc.stderr
    return sorted(results, key=lambda r: r["rank"])


@pytest.mark.parametrize("ranks", [2, 4])
def test_every_collective_op_and_dtype_with_unequal_devices(ranks: int) -> None:
    results = _run(ranks)
    for r in results:
        assert r["failures"] == [], r
        assert r["checks"] >= 80
        # rank r has r % 2 + 1 devices: unequal devices per node
        assert r["participants"] == sum(k % 2 + 1 for k in range(ranks))


def test_missing_rank_times_out_naming_it() -> None:
    results = _run(4, "missing")
    assert [r["rank"] for r in results] == [0, 1, 2]
    for r in results:
        assert r["warm"] == [4.0] * 4  # the first all_reduce, which every rank joined
        assert r["missing"] == [3]
        assert "ranks that never arrived: 3" in r["error"]
        assert "unusable" in r["second"]
