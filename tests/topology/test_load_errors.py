"""Every problem is a TopologyError at the exact file:line:column of the offending value."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _topo_helpers import SPECS, load_error

from dsrt.errors import TopologyError
from dsrt.topology import load_topology
from dsrt.topology.schema import SCHEMA, schema_json

LAB = """\
name: lab
nodes:
  - name: n0
    devices:
      - {backend: cuda, count: 8}
      - cpu
    links:
      - {name: nv, mesh: "cuda:*", kind: nvlink, bandwidth: 450 GB/s, latency: 1us}
  - name: n1
    devices: [cuda:0]
links:
  - name: gpu0-gpu9
    between: [n0/cuda:0, n0/cuda:7]
    kind: pcie
    bandwidth: 1 GB/s
"""


def test_valid_lab_loads() -> None:
    topo = load_topology(LAB)
    assert [n.name for n in topo.nodes] == ["n0", "n1"]


@pytest.mark.parametrize(("old", "new", "line", "col", "needle"), [
    ("n0/cuda:7]", "n0/cuda:9]", 13, 26, "link 'gpu0-gpu9': device 'cuda:9' is not declared on node 'n0'"),
    ("450 GB/s", "-450 GB/s", 8, 61, "negative bandwidth"),
    ("backend: cuda, count", "backend: cdua, count", 5, 19, "unknown backend 'cdua' (known backends: "),
    ("    devices: [cuda:0]", "    devices: [cuda:0]\n    bogus: 1", 11, 5, "unknown key 'bogus'"),
    ('mesh: "cuda:*"', 'mash: "cuda:*"', 8, 20, "did you mean 'mesh'"),
    ("count: 8", "count: eight", 5, 32, "devices[0].count: expected an integer"),
    ("latency: 1us", "latency: 1 parsec", 8, 80, "unknown time unit 'parsec'"),
    ("  - name: n1", "  - name: n0", 9, 11, "duplicate node name 'n0' (first declared at specs/lab.yaml:3:5)"),
    ("      - cpu\n", "      - cpu\n      - cuda:3\n", 7, 9, "duplicate device id 'cuda:3'"),
    ("kind: pcie", "kind: pci", 14, 11, "is not one of: pcie"),
    ("n0/cuda:7]", "n0/cuda:0]", 13, 14, "connects 'n0/cuda:0' to itself"),
    ("n0/cuda:7]", "n7/cuda:0]", 13, 26, "no node 'n7'"),
    ("between: [n0/cuda:0, n0/cuda:7]", "between: [cuda:0, cpu:0]", 13, 15,
     "device 'cuda:0' is on several nodes (n0, n1); write 'n0/cuda:0'"),
    ("    bandwidth: 1 GB/s\n", "", 12, 5, "missing required key 'bandwidth'"),
    ('mesh: "cuda:*"', 'mesh: "npu:*"', 8, 26, "mesh 'npu:*' matches 0 endpoint(s)"),
])
def test_error_locations(old: str, new: str, line: int, col: int, needle: str) -> None:
    assert old in LAB
    err = load_error(LAB.replace(old, new, 1), name="specs/lab.yaml")
    assert needle in str(err), str(err)
    assert (err.file, err.line, err.column) == ("specs/lab.yaml", line, col), str(err)
    assert str(err).startswith(f"specs/lab.yaml:{line}:{col}: ")


def test_issue_example_message() -> None:
    text = ("nodes:\n  - name: n0\n    devices: [cuda:0]\n    links:\n"
            "      - {name: gpu0-gpu9, between: [cuda:0, cuda:9], bandwidth: 1 GB/s}\n")
    err = load_error(text, name="specs/lab.yaml")
    assert str(err) == "specs/lab.yaml:5:45: link 'gpu0-gpu9': device 'cuda:9' is not declared on node 'n0'"


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("", 1, "empty"),
    ("nodes: [", 1, "YAML syntax error"),
    ("- 1\n- 2\n", 1, "expected a mapping"),
    ("nodes:\n  - devices: !!python/object/apply:os.system [echo hi]\n", 2, "not allowed"),
    ("nodes:\n  - devices: !!python/object:os.system {}\n", 2, "not allowed"),
    ("a: &a [*a]\n", 1, "recursive alias"),
    ("nodes:\n  - devices: [cpu]\nnodes: []\n", 3, "duplicate key 'nodes'"),
    ("nodes:\n  - devices: [cpu]\n    {a: 1}: 2\n", 3, ""),
    ("nodes:\n  - devices: [cpu]\n    7: 2\n", 3, "keys must be strings"),
    ("version: 2\nnodes:\n  - devices: [cpu]\n", 1, "expected 1"),
    ("nodes: []\n", 1, "declares no nodes"),
    ("nodes:\n  - name: a\n", 2, "declares no devices"),
    ("nodes:\n  - name: a/b\n    devices: [cpu]\n", 2, "nodes[0].name"),
    ("nodes:\n  - devices:\n    - {backend: cpu, select: all, index: 1}\n", 3, "cannot be combined"),
    ("nodes:\n  - devices: [cpu]\n    leader: cuda:0\n", 3, "leader 'cuda:0' is not a declared device"),
    ("nodes:\n  - devices: [cpu]\n    host_memory: -1 GiB\n", 3, "negative size"),
    ("nodes:\n  - devices: [cpu]\nlinks:\n  - {between: [cpu:0, n0], mesh: [a, b], bandwidth: 1}\n", 4,
     "exactly one of 'between'"),
    ("\tnodes: 1", 1, "YAML syntax error"),
    ("nodes:\n  - devices: [cpu]\n\x07", 3, "YAML syntax error"),
])
def test_malformed_inputs(text: str, line: int, needle: str) -> None:
    err = load_error(text, name="x.yaml")
    assert err.line == line, str(err)
    assert needle in str(err), str(err)


def test_invalid_utf8_has_a_location(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"nodes:\n  - devices: [cpu]\n  # \xff\xfe\n")
    err = load_error(f)
    assert (err.line, err.column) == (3, 5)


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"x-a{i}: &a{i} [{refs}]")
    lines.append("nodes: [{devices: [cpu], x-boom: *a9}]")
    t0 = time.perf_counter()
    err = load_error("\n".join(lines) + "\n", name="laughs.yaml")
    assert time.perf_counter() - t0 < 1.0
    assert "more than" in str(err) and err.line is not None


def test_deep_nesting_is_refused() -> None:
    err = load_error("x-deep: " + "[" * 3000 + "]" * 3000 + "\nnodes: [{devices: [cpu]}]\n")
    assert err.line is not None and "nested" in str(err)


def test_missing_file_and_bad_type() -> None:
    err = load_error("does/not/exist.yaml")
    assert "no such topology file" in str(err)
    with pytest.raises(TopologyError, match="cannot load a topology from int"):
        load_topology(42)


def test_include_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("include: b.yaml\nnodes: [{name: a, devices: [cpu]}]\n")
    (tmp_path / "b.yaml").write_text("nodes: [{name: b, devices: [cpu]}]\ninclude: [c.yaml]\n")
    (tmp_path / "c.yaml").write_text("# c\ninclude:\n  - a.yaml\n")
    err = load_error(tmp_path / "a.yaml")
    assert "include cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml" in str(err)
    assert err.file is not None and err.file.endswith("c.yaml") and (err.line, err.column) == (3, 5)


def test_from_cycle_and_missing_include(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("nodes: [{name: a, from: b.yaml}]\n")
    (tmp_path / "b.yaml").write_text("nodes: [{name: b, from: a.yaml}]\n")
    assert "include cycle" in str(load_error(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("include: [nothere.yaml]\nnodes: [{devices: [cpu]}]\n")
    err = load_error(tmp_path / "c.yaml")
    assert "cannot read 'nothere.yaml'" in str(err) or "nothere.yaml" in str(err)
    assert (err.line, err.column) == (1, 11)


def test_error_inside_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "node.yaml").write_text("nodes:\n  - name: box\n    devices: [cpu, cuda:0]\n    links:\n"
                                        "      - {between: [cuda:0, cuda:1], bandwidth: 1 GB/s}\n")
    (tmp_path / "top.yaml").write_text("nodes:\n  - {name: r, replicas: 2, from: node.yaml}\n")
    err = load_error(tmp_path / "top.yaml")
    assert err.file is not None and err.file.endswith("node.yaml")
    assert (err.line, err.column) == (5, 28)


def test_schema_json_is_published_and_matches() -> None:
    published = (SPECS / "schema.json").read_text(encoding="utf-8")
    assert published == schema_json()
    assert json.loads(published) == SCHEMA


def test_mapping_errors_have_paths_but_no_lines() -> None:
    err = load_error({"nodes": [{"devices": [{"backend": "cuda", "count": "x"}]}]})
    assert err.line is None and "nodes[0].devices[0].count" in str(err)
