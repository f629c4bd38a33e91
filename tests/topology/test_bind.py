"""Binding a topology to a runtime: bound, missing with reasons, created simulated devices, strict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from _topo_helpers import SPECS

import dsrt
import dsrt_cpu
from dsrt.device import Device, DeviceInfo
from dsrt.errors import TopologyError
from dsrt.hookspecs import BackendSpec
from dsrt.runtime import Runtime
from dsrt.topology import bind_runtime, describe_binding


class FakeQpu(Device):
    """A stand-in simulated device: records the parameters it was created with."""

    def __init__(self, device_id: str, params: Mapping[str, Any]) -> None:
        index = int(device_id.split(":")[1])
        super().__init__(DeviceInfo(id=device_id, backend="quantum", index=index, name="fake", simulated=True))
        self.params = dict(params)


class FakeQuantumPlugin:
    """Registers a 'quantum' backend whose probe finds nothing and which creates declared devices."""

    @staticmethod
    @dsrt.hookimpl
    def dsrt_register_backends() -> list[BackendSpec]:
        def create(runtime: Runtime, device_id: str, params: Mapping[str, Any]) -> Device:
            if params.get("qubits", 0) > 40:
                raise ValueError(f"{params['qubits']} qubits do not fit in memory")
            return FakeQpu(device_id, params)

        return [BackendSpec(name="quantum", api_version=1, probe=lambda rt: [], experimental=True,
                            create_simulated=create, device_prefix="qpu")]


def _runtime(topology: Any, *extra: Any) -> Runtime:
    return Runtime(topology=topology, plugins=[dsrt_cpu, *extra], autoload=False)


LAB = """
nodes:
  - name: box
    devices: [cpu, cuda:0, {backend: opencl, select: all}]
    simulated:
      - {backend: quantum, params: {qubits: 5}}
      - {backend: quantum, index: 1, params: {qubits: 99}}
      - {backend: photonic, params: {mesh_size: 4}}
"""


def test_binding_reports_bound_missing_and_created() -> None:
    rt = _runtime(LAB, FakeQuantumPlugin())
    b = rt.binding
    assert b.local_node == "box"
    assert b.bound["box/cpu:0"] is rt.device("cpu:0")
    assert b.created == ["box/qpu:0"]
    qpu = rt.device("qpu:0")
    assert isinstance(qpu, FakeQpu) and qpu.params == {"qubits": 5}
    assert qpu in rt.devices
    assert "not installed" in b.missing["box/cuda:0"]
    assert "not installed" in b.missing["box/opencl:*"]
    assert "ValueError" in b.missing["box/qpu:1"] and "99 qubits" in b.missing["box/qpu:1"]
    assert "'photonic' is not installed" in b.missing["box/photonic:0"]
    topo = rt.topology
    assert topo.local_node == "box"
    assert topo.device("qpu:0").params["qubits"] == 5
    desc = describe_binding(topo, b)
    states = {d["id"]: d["state"] for d in desc["nodes"][0]["devices"]}
    assert states == {"cpu:0": "bound", "cuda:0": "missing", "qpu:0": "created", "qpu:1": "missing",
                      "photonic:0": "missing"}


def test_strict_makes_missing_an_error_at_the_declaration() -> None:
    rt = _runtime("strict: true\n" + LAB)
    with pytest.raises(TopologyError, match="strict topology: declared device 'box/cuda:0'") as info:
        _ = rt.binding
    assert (info.value.line, info.value.column) == (5, 20)


def test_selector_expands_to_found_devices_and_extras_are_added() -> None:
    rt = _runtime("nodes:\n  - name: n\n    devices: [{backend: cpu, select: all}]\n", FakeQuantumPlugin())
    assert [d.id for d in rt.topology.node("n").devices] == ["cpu:0"]
    assert rt.binding.bound["n/cpu:0"] is rt.device("cpu:0")
    assert not rt.binding.missing


def test_local_node_from_environment_and_best_match(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "nodes:\n  - {name: gpu, devices: [cuda:0]}\n  - {name: host, devices: [cpu]}\n"
    assert _runtime(text).binding.local_node == "host"   # the node whose devices bind
    monkeypatch.setenv("DSRT_NODE", "gpu")
    rt = _runtime(text)
    assert rt.binding.local_node == "gpu"
    assert "n/a" not in rt.binding.missing and "gpu/cuda:0" in rt.binding.missing
    assert rt.binding.extra == ["gpu/cpu:0"]  # discovered but not declared on this node
    monkeypatch.setenv("DSRT_NODE", "elsewhere")
    with pytest.raises(TopologyError, match="DSRT_NODE='elsewhere' names no node"):
        _ = _runtime(text).binding


def test_no_file_builds_a_measured_one_node_topology() -> None:
    rt = _runtime(None)
    topo, binding = rt.topology, rt.binding
    assert [n.name for n in topo.nodes] == ["local"]
    assert binding.bound["local/cpu:0"] is rt.device("cpu:0")
    (link,) = topo.links
    assert link.kind == "shared-memory"
    assert link.bandwidth == rt.device("cpu:0").info.memory_bandwidth > 0
    assert 0 < link.latency < 1e-3
    assert topo.bandwidth("cpu:0", "local") == link.bandwidth


def test_workstation_binds_cpu_here() -> None:
    rt = Runtime(topology=SPECS / "workstation.yaml")
    b = rt.binding
    assert b.bound["ws/cpu:0"] is rt.device("cpu:0")
    # Everything declared is either bound, created, or missing with a reason: nothing is dropped.
    declared = {d.qualified_id for d in rt.topology.node("ws").devices if d.index is not None}
    for qid in declared:
        assert qid in b.bound or qid in b.missing, qid
    for qid, reason in b.missing.items():
        assert reason, qid


def test_bind_runtime_direct_and_bad_file() -> None:
    rt = _runtime(None)
    with pytest.raises(TopologyError, match="unknown backend"):
        bind_runtime(rt, "nodes:\n  - devices: [warp-drive]\n")
