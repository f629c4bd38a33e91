"""HCCL between processes (one emulated NPU per rank) under a real mpiexec, started by the test itself.

The worker (``hccl_rank_worker.py``) stands up the emulated CANN and libhccl in every rank; the
emulated HcclAllReduce/HcclBroadcast move the device bytes with mpi4py (``tests/npu/emulated/hccl.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_common import mpiexec_or_skip

from .conftest import EMULATED

pytestmark = pytest.mark.mpi

WORKER = Path(__file__).with_name("hccl_rank_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _run(n: int, mode: str, kernels: str, tmp_path: Path, *, reporting: int, timeout: float = 120) -> list[dict]:
    if kernels == "torch":
        pytest.importorskip("torch", reason="the torch_npu kernel path is tested with CPU torch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EMULATED), env.get("PYTHONPATH", "")) if p)
    cmd = [mpiexec_or_skip(), "--allow-run-as-root", "--oversubscribe", "-n", str(n), sys.executable, str(WORKER),
           mode, kernels, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == reporting, proc.stdout + proc.stderr
    return sorted(results, key=lambda r: r["rank"])


def _paths(results: list[dict]) -> dict[str, str]:
    """The path each case took, the same on every rank."""
    for r in results:
        assert r["failures"] == [], (r["rank"], r["failures"])
        assert r["paths"] == results[0]["paths"], r["rank"]
    return results[0]["paths"]


def test_all_reduce_and_broadcast_between_ranks_run_in_hccl_with_plain_acl(tmp_path: Path) -> None:
    """Four ranks, ACL single operators only: no-cast reductions go through HCCL; what needs the cast or
    scale kernel (float16, avg) fails on every rank for the missing kernel, as without HCCL."""
    paths = _paths(_run(4, "checks", "acl", tmp_path, reporting=4))
    for name in ("int32", "float32"):
        for op in ("sum", "prod", "max", "min"):
            for where in ("in place", "out of place"):
                assert paths[f"{op} {name} {where}"] == "hccl"
    for key in ("sum complex64 in place", "max int64 out of place", "sum int8 in place"):
        assert paths[key] == "hccl"
    for key in ("sum float64 in place", "min float64 out of place", "max uint8 in place", "sum bool in place",
                "prod int16 out of place"):
        assert paths[key] == "mpi"  # HCCL lacks these: staged through host memory for MPI
    for key, kernel in (("avg float32 in place", "scale"), ("sum float16 in place", "cast"),
                        ("max float16 out of place", "cast")):
        assert paths[key].startswith("error: UnsupportedKernelError") and f"kernel '{kernel}'" in paths[key], paths[key]


def test_with_device_kernels_cast_and_avg_plans_reduce_in_hccl_too(tmp_path: Path) -> None:
    """Two ranks with torch_npu kernels: float16 is widened on the device and reduced in HCCL as float32;
    avg is an HCCL sum scaled on the device."""
    paths = _paths(_run(2, "checks", "torch", tmp_path, reporting=2))
    for name in ("int32", "float32", "float16"):
        for op in ("sum", "prod", "max", "min", "avg"):
            if (name, op) == ("int32", "avg"):
                continue
            for where in ("in place", "out of place"):
                assert paths[f"{op} {name} {where}"] == "hccl", (op, name, where)
    assert paths["sum float64 in place"] == paths["prod int16 in place"] == "mpi"


def test_a_rank_that_never_arrives_is_named_before_anything_is_enqueued(tmp_path: Path) -> None:
    results = _run(4, "missing", "acl", tmp_path, reporting=3, timeout=60)
    assert [r["rank"] for r in results] == [0, 1, 2]
    for r in results:
        assert r["warm"] == [[4.0] * 4, "hccl"]  # the first all-reduce, which every rank joined
        # Both when the HCCL communicator exists and when it would be set up by this very call:
        for key in ("after_setup", "first"):
            err = r[key]
            assert err["type"] == "CollectiveError" and err["missing"] == [3], err
            assert "ranks that never arrived: 3" in err["error"], err
            assert err["hccl_calls"] == [], err  # nothing was enqueued for the absent rank
        assert "unusable" in r["second"]
        # One communicator was set up (rank 0 made the root info), the second never got that far.
        assert r["init_calls"] == (["hccl.HcclGetRootInfo"] if r["rank"] == 0 else []) + ["hccl.HcclCommInitRootInfo"]
