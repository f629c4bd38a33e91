"""A misbehaving rank under a real mpiexec (3 ranks): every rank agrees on each collective's outcome,
nothing waits past its deadline, and the job ends instead of hanging (worker: ``mpi_faults.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpi_common import mpiexec_or_skip

pytestmark = pytest.mark.mpi

WORKER = Path(__file__).with_name("mpi_faults.py")
TIMEOUT = 1.0  # each collective's timeout (s)
GRACE = 0.5  # the MPI transport's diagnosis window for that timeout: min(2, max(0.2, TIMEOUT / 2))
SLACK = 2.5  # scheduling on a loaded 2-core machine, 3 ranks


def _run(mode: str, limit: float) -> tuple[subprocess.CompletedProcess[str], float, list[dict]]:
    """The finished job, the seconds from its last scenario's start to the job's end, the results."""
    cmd = [mpiexec_or_skip(), "--allow-run-as-root", "--oversubscribe", "-n", "3", sys.executable, str(WORKER),
           mode, str(TIMEOUT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    ended = time.time()
    starts = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("START ")]
    assert starts, proc.stdout + proc.stderr
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return proc, ended - min(starts), results


def _by_scenario(results: list[dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in results:
        out.setdefault(r["scenario"], {})[r["rank"]] = r
    return out


def test_a_late_or_stalled_or_missing_rank_fails_the_collective_on_every_rank() -> None:
    proc, after_last_start, results = _run("agreement", limit=50)
    log = proc.stdout + proc.stderr
    got = _by_scenario(results)
    late = ("late 8 B, after the others gave up", "late 8 B, during the others' diagnosis", "late 1 MiB",
            "stall after the gate, 1 MiB")
    for name in late:
        assert sorted(got.get(name, {})) == [0, 1, 2], (name, log)
        for rank, r in got[name].items():
            # Nobody completes: the late rank gets the others' abandoned data, but is told it failed.
            assert r["outcome"] == "failed", (name, r)
            assert r["missing"] == [2], (name, r)
            if rank != 2:
                assert "ranks that never arrived: 2" in r["error"], (name, r)
                # Waited for its own deadline and the diagnosis, not for the late rank.
                assert r["elapsed"] < TIMEOUT + GRACE + SLACK, (name, r)
        if name != "stall after the gate, 1 MiB":
            late_rank = got[name][2]
            assert late_rank["arrived"] > TIMEOUT, late_rank
            assert "before this rank (rank 2) arrived" in late_rank["error"], late_rank
            # It failed on the others' notice, not on its own deadline.
            assert late_rank["elapsed"] - late_rank["arrived"] < TIMEOUT, late_rank
    bcast = got.get("broadcast without rank 2", {})
    assert sorted(bcast) == [0, 1], log  # rank 2 sleeps until the job ends
    for r in bcast.values():
        assert r["outcome"] == "failed" and r["missing"] == [2], r  # the root too: the gate saw rank 2 missing
        assert r["elapsed"] < TIMEOUT + GRACE + SLACK, r
    # The good ranks returned from main; their exit aborted the job (MPI_Finalize would wait for rank 2).
    assert proc.returncode != 0, log
    assert after_last_start < TIMEOUT + GRACE + 8, (after_last_start, log)


def test_on_timeout_abort_ends_the_job_naming_the_missing_rank() -> None:
    proc, wall, results = _run("abort", limit=40)
    log = proc.stdout + proc.stderr
    assert results == [], log  # all_reduce never returned: MPI_Abort ended every rank, the sleeper too
    assert proc.returncode != 0, log
    lines = [ln for ln in proc.stderr.splitlines() if "aborting the job (on_timeout='abort')" in ln]
    assert lines and all("missing rank(s): 2;" in ln for ln in lines), log
    assert wall < TIMEOUT + GRACE + 8, (wall, log)  # the timeout plus a few seconds, not a wall limit
