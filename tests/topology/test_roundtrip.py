"""Hypothesis: random valid topologies survive load -> to_dict -> load, and through YAML text."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrt.topology import load_topology
from dsrt.topology.schema import LINK_KINDS

_BACKENDS = ["cpu", "cuda", "npu", "opencl"]
_SIM = ["quantum", "photonic", "neuromorphic"]
_names = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)
_bw = st.one_of(st.floats(min_value=1.0, max_value=1e13, allow_nan=False),
                st.sampled_from(["25 GB/s", "200 Gbit/s", "1 GiB/s", "10Gbps"]))
_lat = st.one_of(st.floats(min_value=0.0, max_value=1e-2, allow_nan=False),
                 st.sampled_from(["2us", "1.5 ms", "800 ns", "0"]))
_params = st.dictionaries(st.sampled_from(["qubits", "mesh_size", "cores", "bits", "label"]),
                          st.one_of(st.integers(0, 64), st.floats(0, 1, allow_nan=False), _names), max_size=3)


@st.composite
def topologies(draw: st.DrawFn) -> dict:
    node_names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    nodes, devices = [], []
    for name in node_names:
        decl, ids = [], set()
        for backend in draw(st.lists(st.sampled_from(_BACKENDS), min_size=1, max_size=3, unique=True)):
            count = draw(st.integers(1, 3))
            decl.append({"backend": backend, "count": count} if count > 1 else f"{backend}:0")
            ids |= {f"{backend}:{i}" for i in range(count)}
        sim = [{"backend": b, "params": draw(_params)} for b in draw(st.lists(st.sampled_from(_SIM), max_size=2,
                                                                              unique=True))]
        node: dict = {"name": name, "devices": decl}
        if sim:
            node["simulated"] = sim
        if draw(st.booleans()):
            node["host_memory"] = draw(st.one_of(st.integers(0, 2**40), st.sampled_from(["64GiB", "2 TB"])))
        if draw(st.booleans()):
            node["nics"] = {"count": draw(st.integers(1, 8)), "bandwidth": draw(_bw), "latency": draw(_lat)}
        nodes.append(node)
        devices += [f"{name}/{i}" for i in sorted(ids)]
    links = []
    endpoints = devices + node_names
    for k in range(draw(st.integers(0, 5))):
        pair = draw(st.lists(st.sampled_from(endpoints), min_size=2, max_size=2, unique=True))
        links.append({"name": f"l{k}", "between": pair, "kind": draw(st.sampled_from(LINK_KINDS)),
                      "bandwidth": draw(_bw), "latency": draw(_lat)})
    out = {"nodes": nodes, "links": links, "strict": draw(st.booleans())}
    if draw(st.booleans()):
        out["defaults"] = {"host": {"bandwidth": draw(_bw)}, "network": {"kind": "infiniband"}}
    return out


@settings(max_examples=40, deadline=2000)
@given(topologies())
def test_roundtrip_through_to_dict_and_yaml(spec: dict) -> None:
    first = load_topology(spec)
    again = load_topology(first.to_dict())
    assert again == first
    text = yaml.safe_dump(first.to_dict(), sort_keys=False)
    assert load_topology(text) == first
    assert again.to_dict() == first.to_dict()
    # Queries agree too (they are functions of the equal data).
    a, b = first.devices[0].qualified_id, first.devices[-1].qualified_id
    assert again.latency(a, b) == first.latency(a, b)
    assert again.bandwidth(a, b) == first.bandwidth(a, b)
