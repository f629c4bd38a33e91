"""The memory benchmark's own pieces: its fragmentation reference and its JSON (a quick run)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dsrt_memory_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_fit_heap_counts_a_hole_too_small_to_reuse(bench) -> None:
    # A and B side by side; A freed leaves a 256 B hole that C (512 B) cannot use: the heap grows.
    trace = [("a", 1, 256), ("a", 2, 256), ("f", 1, 0), ("a", 3, 512)]
    assert bench.best_fit_heap_ratio(trace) == round(1024 / 768, 4)


def test_best_fit_heap_coalesces_and_picks_the_smallest_hole(bench) -> None:
    # Holes of 512 (A) and 256 (C) bytes; D (256) takes C's hole, E (512) takes A's: no growth.
    trace = [("a", 1, 512), ("a", 2, 256), ("a", 3, 256), ("a", 4, 256),
             ("f", 1, 0), ("f", 3, 0), ("a", 5, 256), ("a", 6, 512)]
    assert bench.best_fit_heap_ratio(trace) == 1.0
    # Neighbouring holes merge: two freed 16 MiB blocks hold one 32 MiB block.
    assert bench.best_fit_heap_ratio(bench.bad_order_trace(3)) == 1.0


def test_quick_run_prints_every_figure() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quick", "--repeats", "1", "--seed-sweep", "1"],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    for name, trace in result["traces"].items():
        for who in ("dsrt", "numpy_empty", "naive_cache"):
            assert {"alloc_p50_us", "alloc_p99_us", "free_p50_us", "reserved_over_requested"} <= set(trace[who]), name
        assert trace["dsrt"]["reserved_over_requested"] >= 1.0
        d = trace["dsrt"]
        assert 0 <= d["compactions_per_alloc"] < 1 and (d["moved_bytes"] > 0) == (d["compactions_per_alloc"] > 0)
        assert trace["best_fit_heap"]["reserved_over_requested"] >= 1.0
    sweep = result["reserved_over_requested_over_seeds"]
    assert set(sweep) == {f"lognormal_{n}_{who}" for n in (1000, 10000) for who in ("dsrt", "best_fit_heap")}
    assert all(1.0 <= v["min"] <= v["median"] <= v["max"] for v in sweep.values())
