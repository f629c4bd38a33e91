"""Seeded fuzzing of YAML topologies: every mutant loads or is a located one-line TopologyError, fast.

The batch runs in a child process (tests/fuzz_common.py) with a memory cap and a per-mutant alarm,
so a bomb that slips through shows up as ``other``/``hangs`` instead of taking the test run down.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "fuzz_common.py"


def test_mutated_topologies_give_located_errors_and_no_hangs() -> None:
    proc = subprocess.run([sys.executable, str(HARNESS), "yaml", "250", "20240607", "5"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tally = json.loads(proc.stdout)
    assert tally["mutants"] == 250
    assert tally["other"] == 0 and tally["hangs"] == 0 and tally["unlocated"] == 0, tally["examples"]
    assert tally["located"] > 100 and tally["accepted"] > 0  # the mutants exercise both paths
