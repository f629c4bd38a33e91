import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_embedding_example_runs_and_writes_a_trace(tmp_path):
    trace = tmp_path / "run.json"
    res = subprocess.run([sys.executable, str(ROOT / "examples/embedding/framework_embedding.py"), "--trace", str(trace)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "gemm on cpu:0 correct" in res.stdout and "WRONG" not in res.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "softmax" for e in events)
