"""Every input error of the command line is one line on stderr and exit 2, never a traceback.

Each case goes through the real entry point (``dsrt.cli.main``) with stderr captured; the bombs
(memory and time) must be refused before the work, so each case is also bounded in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dsrt.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"


def _one_line_error(capsys: Any, argv: list[str], *, seconds: float = 20.0, code: int = 2) -> str:
    t0 = time.perf_counter()
    got = main(argv)
    took = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert got == code, (argv, got, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(err.strip().splitlines()) == 1, err
    assert took < seconds, f"{argv} took {took:.1f} s"
    return err.strip()


# ----------------------------------------------------------------------------------- topology
def test_replicas_bomb_is_refused_at_its_line(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text("nodes:\n" + "".join(f"  - {{name: n{i}, replicas: 65536, devices: [{{backend: cpu, count: 4096}}]}}\n"
                                      for i in range(4)))
    err = _one_line_error(capsys, ["topology", "check", str(f)], seconds=5)
    assert "bomb.yaml:2:" in err and "the limit is 10000 (set DSRT_TOPOLOGY_MAX_NODES" in err


def test_link_mesh_bomb_is_refused(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text("nodes:\n  - name: a\n    replicas: 300\n    devices: [{backend: cpu, count: 300}]\n"
                 "    links: [{mesh: 'cpu:*', bandwidth: 1GB/s}]\n")
    err = _one_line_error(capsys, ["topology", "check", str(f)], seconds=10)
    assert "mesh.yaml:5:" in err and "links" in err


def test_topology_limits_come_from_the_environment(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("nodes:\n  - {name: a, replicas: 20, devices: [cpu]}\n")
    assert main(["topology", "check", str(f)]) == 0
    monkeypatch.setenv("DSRT_TOPOLOGY_MAX_NODES", "10")
    err = _one_line_error(capsys, ["topology", "check", str(f)])
    assert "t.yaml:2:" in err and "limit is 10" in err


def test_alias_bomb_is_refused(tmp_path: Path, capsys: Any) -> None:
    lines = ["x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        lines.append(f"x-{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    f = tmp_path / "laughs.yaml"
    f.write_text("\n".join(lines) + "\nnodes: [{devices: [cpu]}]\n")
    err = _one_line_error(capsys, ["topology", "check", str(f)], seconds=5)
    assert "laughs.yaml:" in err and "aliases" in err


@pytest.mark.parametrize("target, needle", [("/dev/zero", "is a device"), ("FIFO", "is a FIFO"),
                                            ("DIR", "is a directory"), ("nul\0l.yaml", "not a file name")])
def test_include_of_what_is_not_a_regular_file(tmp_path: Path, capsys: Any, target: str, needle: str) -> None:
    if target == "FIFO":
        os.mkfifo(tmp_path / "pipe.yaml")
        target = "pipe.yaml"
    elif target == "DIR":
        (tmp_path / "d.yaml").mkdir()
        target = "d.yaml"
    f = tmp_path / "inc.yaml"
    f.write_text("nodes:\n  - devices: [cpu]\ninclude: \"" + target.replace("\0", "\\0") + "\"\n")
    err = _one_line_error(capsys, ["topology", "check", str(f)], seconds=5)
    assert "inc.yaml:3:10:" in err and needle in err


def test_include_depth_is_limited(tmp_path: Path, capsys: Any) -> None:
    for i in range(30):
        (tmp_path / f"f{i}.yaml").write_text(f"include: f{i + 1}.yaml\n" if i < 29 else "nodes: [{devices: [cpu]}]\n")
    err = _one_line_error(capsys, ["topology", "check", str(tmp_path / "f0.yaml")])
    assert "nested more than 16" in err


def test_huge_integer_bandwidth_and_deep_nesting(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "big.yaml"
    f.write_text("nodes:\n  - devices: [cpu]\n    nics: {bandwidth: " + "9" * 400 + "}\n")
    err = _one_line_error(capsys, ["topology", "check", str(f)])
    assert "big.yaml:3:" in err and "too large" in err
    f.write_text("nodes: " + "[" * 5000 + "\n")
    err = _one_line_error(capsys, ["topology", "check", str(f)], seconds=5)
    assert "big.yaml:1:" in err and "nested" in err


# ----------------------------------------------------------------------------------- simulate
@pytest.mark.parametrize("workload, needle", [
    ("gemm:10:1.2.3MB", "not a size"), ("gemm:10:" + "9" * 400, "not a size"), ("gemm:-3:1MB", "positive integer"),
    ("gemm:1000000000:1MB", "the limit is"), ("gemm:0:1MB", "at least 1"), ("gemm:5:0", "1 byte"),
])
def test_simulate_workload_errors(capsys: Any, workload: str, needle: str) -> None:
    err = _one_line_error(capsys, ["simulate", str(SPECS / "laptop.yaml"), "--workload", workload], seconds=10)
    assert needle in err


def test_simulate_plans_a_default_mixed_workload(capsys: Any) -> None:
    assert main(["simulate", str(SPECS / "laptop.yaml"), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["chunks"] == 1024 and report["policies"]["dmda"]["makespan_s"] > 0


def test_simulate_collective_help_and_trace_folder(capsys: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert "all_reduce" in out and "reduce_scatter" in out and "all_gather" in out
    err = _one_line_error(capsys, ["simulate", str(SPECS / "laptop.yaml"), "--trace", str(tmp_path / "no" / "t.json")])
    assert "does not exist" in err
    err = _one_line_error(capsys, ["simulate", str(SPECS / "laptop.yaml"), "--collective", "allreduce", "--size", "1MB"])
    assert "all_reduce" in err


# ----------------------------------------------------------------------------------- quantum
def _bell(path: Path) -> Path:
    path.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
                    "measure q -> c;\n")
    return path


def _bomb(path: Path) -> Path:
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[1];", "gate g0 a { x a; x a; }"]
    lines += [f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 40)]
    path.write_text("\n".join([*lines, "g39 q[0];"]) + "\n")
    return path


@pytest.mark.parametrize("case, needle", [
    ("empty", "empty"), ("binary", "not UTF-8"), ("latin1", "not UTF-8"), ("dir", "is a directory"),
    ("missing", "No such file"), ("devzero", "is a device"), ("self", "include cycle"), ("bomb", "2^40"),
    ("deep", "nested"), ("huge-qreg", "limit is 64"), ("overflow", "finite"),
])
def test_quantum_run_input_errors(tmp_path: Path, capsys: Any, case: str, needle: str) -> None:
    f = tmp_path / "prog.qasm"
    head = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
    if case == "empty":
        f.write_text("")
    elif case == "binary":
        f.write_bytes(b"OPENQASM 2.0;\n\x00\xff\xfe\x89PNG\n")
    elif case == "latin1":
        f = tmp_path / "prog.txt"
        f.write_bytes("OPENQASM 2.0;\n// caf\xe9\nqreg q[1];\n".encode("latin-1"))
    elif case == "dir":
        f = tmp_path
    elif case == "missing":
        f = tmp_path / "nope"
    elif case == "devzero":
        f.write_text('OPENQASM 2.0;\ninclude "/dev/zero";\nqreg q[1];\n')
    elif case == "self":
        f.write_text('OPENQASM 2.0;\ninclude "prog.qasm";\nqreg q[1];\n')
    elif case == "bomb":
        _bomb(f)
        needle = "1099511627776 instructions"
    elif case == "deep":
        f.write_text(head + "qreg q[1];\nrx(" + "(" * 20000 + "1" + ")" * 20000 + ") q[0];\n")
    elif case == "huge-qreg":
        f.write_text(head + "qreg q[1000000000000];\nh q;\n")
    else:
        f.write_text(head + "qreg q[1];\nrx(1e999) q[0];\nrx(2^9999) q[0];\n")
    err = _one_line_error(capsys, ["quantum", "run", str(f)], seconds=10)
    assert needle in err
    if case not in ("missing", "dir"):
        assert f"{f.name}:" in err


def test_qasm_file_without_suffix_is_read_as_a_file(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "prog.txt"
    f.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nfoo q[0];\n')
    err = _one_line_error(capsys, ["quantum", "run", str(f)])
    assert "prog.txt:4:1: unknown gate 'foo'" in err


def test_qasm3_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "p.qasm"
    f.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0] $$ ;\n')
    err = _one_line_error(capsys, ["quantum", "run", str(f)])
    assert "p.qasm:4:" in err
    f.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nctrl(40) @ x q[0], q[1];\n')
    err = _one_line_error(capsys, ["quantum", "run", str(f)])
    assert "p.qasm:4:" in err and "out of range" in err


def test_quantum_shots_and_statevector_output(tmp_path: Path, capsys: Any) -> None:
    f = _bell(tmp_path / "bell.qasm")
    err = _one_line_error(capsys, ["quantum", "run", str(f), "--shots", "1000000000000"], seconds=10)
    assert "qpu:0" in err and "DSRT_QUANTUM_MAX_SHOTS" in err
    err = _one_line_error(capsys, ["quantum", "run", str(f), "--statevector", str(tmp_path / "no" / "s.npy")])
    assert "does not exist" in err


# ----------------------------------------------------------------------------------- neuromorphic
@pytest.fixture()
def nir_file(tmp_path: Path) -> Path:
    pytest.importorskip("nir", reason="nir is not installed: pip install dsrt[neuro]")
    sys.path.insert(0, str(ROOT / "tests"))
    from fuzz_common import _nir_seed

    path = tmp_path / "net.nir"
    _nir_seed(path)
    return path


def test_snn_run_refuses_a_298_gib_weight_before_reading_it(nir_file: Path, capsys: Any) -> None:
    import h5py

    with h5py.File(nir_file, "r+") as f:
        node = f["node/nodes/fc1"]
        del node["weight"]
        node.create_dataset("weight", shape=(200_000, 200_000), dtype="f8", chunks=(1, 1024), compression="gzip",
                            fillvalue=0.5)
    assert nir_file.stat().st_size < 1 << 20
    err = _one_line_error(capsys, ["snn", "run", str(nir_file), "--steps", "10", "--dt", "0.001"], seconds=10)
    assert "net.nir" in err and "298.02 GiB" in err and "fc1/weight" in err and "before reading" in err


@pytest.mark.parametrize("extra, needle", [
    (["--device", "cpu:0"], "not a neuromorphic device"), (["--steps", "1000000000"], "DSRT_SNN_MAX_STEPS"),
    (["--raster", "/nonexistent-dir/r.npz"], "does not exist"), (["--dt", "nan"], "finite"),
])
def test_snn_run_argument_errors(nir_file: Path, capsys: Any, extra: list[str], needle: str) -> None:
    argv = ["snn", "run", str(nir_file), "--steps", "10", "--dt", "0.001"]
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2]
    err = _one_line_error(capsys, argv)
    assert needle in err


def test_snn_run_on_what_is_not_an_nir_file(tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("nir", reason="nir is not installed: pip install dsrt[neuro]")
    (tmp_path / "x.nir").write_bytes(b"\x89HDF\xff" * 100)
    err = _one_line_error(capsys, ["snn", "run", str(tmp_path / "x.nir"), "--steps", "1", "--dt", "0.001"])
    assert "x.nir" in err
    err = _one_line_error(capsys, ["snn", "run", "/dev/zero", "--steps", "1", "--dt", "0.001"], seconds=5)
    assert "not a regular file" in err


# ----------------------------------------------------------------------------------- conformance
def test_conformance_of_an_unknown_backend_fails_with_the_reason(capsys: Any) -> None:
    err = _one_line_error(capsys, ["conformance", "nosuch"])
    assert "no backend 'nosuch'" in err and "cpu" in err


def test_a_bomb_through_the_real_executable(tmp_path: Path) -> None:
    """The same path a user takes: a separate process, /dev/zero included, bounded in time."""
    f = tmp_path / "z.yaml"
    f.write_text("nodes:\n  - devices: [cpu]\ninclude: /dev/zero\n")
    proc = subprocess.run([sys.executable, "-m", "dsrt", "topology", "check", str(f)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"{f}:3:10: '/dev/zero' is a device; a topology file must be a regular"
                                                " file"]
