"""``dsrt topology check|show``: exit codes, one error line, JSON output; every spec passes check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from _topo_helpers import SPECS

import dsrt_cpu
from dsrt.cli import topology as cli_topology
from dsrt.runtime import Runtime


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dsrt")
    cli_topology.configure(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return cli_topology.run(args, lambda: Runtime(plugins=[dsrt_cpu], autoload=False))


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_every_spec_passes_check(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("topology", "check", str(SPECS / spec)) == 0
    assert ": ok (" in capsys.readouterr().out


def test_check_reports_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("nodes:\n  - name: n0\n    devices: [cuda:0]\n    links:\n"
                   "      - {name: g, between: [cuda:0, cuda:9], bandwidth: 25 GB/s}\n")
    assert _run("topology", "check", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == f"{bad}:5:37: link 'g': device 'cuda:9' is not declared on node 'n0'\n"


def test_check_never_prints_a_traceback_for_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "junk.yaml"
    bad.write_bytes(b"\x00\x01{{{[[[ : : :\n\xff")
    assert _run("topology", "check", str(bad)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err == f"{bad}:2:1: not UTF-8 text (byte 0xff)\n"


def test_show_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("topology", "show", str(SPECS / "workstation.yaml")) == 0
    out = capsys.readouterr().out
    assert "local node ws" in out and "cpu:0" in out and "bound" in out
    assert _run("topology", "show", str(SPECS / "dgx-h100.yaml"), "--json") == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["name"] == "dgx-h100" and len(desc["nodes"][0]["devices"]) == 9
    states = {d["id"]: d["state"] for d in desc["nodes"][0]["devices"]}
    assert states["cpu:0"] == "bound"
    assert states["cuda:0"] in ("bound", "missing")
    assert len(desc["links"]) == 29 and desc["links"][0]["bandwidth"] == pytest.approx(450e9)
