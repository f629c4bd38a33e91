"""Seeded fuzzing of OpenQASM 2 and 3: every mutant runs or is a located one-line QasmError/DsrtError.

Mutants are parsed and run (64 shots) on qpu:0 in a child process (tests/fuzz_common.py) with a
memory cap and a per-mutant alarm: a traceback counts as ``other``, a mutant past 5 s as a hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "fuzz_common.py"


@pytest.mark.parametrize("fmt, count", [("qasm2", 200), ("qasm3", 100)])
def test_mutated_qasm_gives_located_errors_and_no_hangs(fmt: str, count: int) -> None:
    if fmt == "qasm3":
        pytest.importorskip("openqasm3.parser", reason="the OpenQASM 3 parser is not installed: pip install dsrt[quantum]")
    proc = subprocess.run([sys.executable, str(HARNESS), fmt, str(count), "7", "5"], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tally = json.loads(proc.stdout)
    assert tally["mutants"] == count
    assert tally["other"] == 0 and tally["hangs"] == 0 and tally["unlocated"] == 0, tally["examples"]
    assert tally["located"] > count // 3 and tally["accepted"] > 0
