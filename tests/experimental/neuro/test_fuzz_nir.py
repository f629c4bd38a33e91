"""Seeded fuzzing of NIR files: every mutant runs or is a NetworkError naming the file, without a hang.

Mutants change the HDF5 structure (inflated dataset shapes up to 200,000 x 200,000, renamed types,
deleted keys, deeply nested graphs, odd values) or its raw bytes; they are imported and run for 20
steps on snn:0 in a child process (tests/fuzz_common.py) with a memory cap and a per-mutant alarm.
The alarm is 30 s: libhdf5 spends seconds (in C, out of reach of any budget) on a corrupted heap
address before it fails; every such file is still refused with a NetworkError naming it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "fuzz_common.py"


def test_mutated_nir_files_give_located_errors_and_no_hangs() -> None:
    pytest.importorskip("nir", reason="nir is not installed: pip install dsrt[neuro]")
    pytest.importorskip("h5py", reason="h5py (the NIR file format) is not installed: pip install dsrt[neuro]")
    proc = subprocess.run([sys.executable, str(HARNESS), "nir", "100", "11", "30"], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tally = json.loads(proc.stdout)
    assert tally["mutants"] == 100
    assert tally["other"] == 0 and tally["hangs"] == 0 and tally["unlocated"] == 0, tally["examples"]
    assert tally["located"] > 50 and tally["accepted"] > 0
