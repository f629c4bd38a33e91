"""Path queries: bandwidth, latency, transfer time, leaders, groups over the worked examples."""

from __future__ import annotations

import math

import pytest
from _topo_helpers import SPECS

from dsrt.errors import TopologyError
from dsrt.topology import load_topology


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    return load_topology(SPECS / "cluster-16x8.yaml")


def test_every_spec_loads() -> None:
    names = sorted(p.name for p in SPECS.glob("*.yaml"))
    assert names == ["ascend-910b.yaml", "cluster-16x8.yaml", "dgx-h100.yaml", "exotic-lab.yaml",
                     "laptop.yaml", "workstation.yaml"]
    for p in SPECS.glob("*.yaml"):
        assert load_topology(p).nodes


def test_cluster_shape(cluster) -> None:  # type: ignore[no-untyped-def]
    assert [n.name for n in cluster.nodes] == [f"dgx{i:02d}" for i in range(16)]
    assert len(cluster.devices) == 16 * 9
    assert sum(1 for d in cluster.devices if d.backend == "cuda") == 128
    groups = cluster.groups()
    assert len(groups) == 16 and all(len(g) == 9 for g in groups)
    assert groups[3][0] == "dgx03/cuda:0" and cluster.leader("dgx03") == "dgx03/cuda:0"
    assert cluster.node("dgx05").host_memory_bytes == 2 * 1024**4
    assert cluster.node("dgx05").nics is not None and cluster.node("dgx05").nics.count == 8


def test_nvlink_inside_a_node(cluster) -> None:  # type: ignore[no-untyped-def]
    assert cluster.bandwidth("dgx00/cuda:0", "dgx00/cuda:7") == pytest.approx(450e9)
    assert cluster.latency("dgx00/cuda:0", "dgx00/cuda:7") == pytest.approx(1e-6)
    assert cluster.same_node("dgx00/cuda:0", "dgx00/cpu:0")
    assert not cluster.same_node("dgx00/cuda:0", "dgx01/cuda:0")
    assert cluster.node_of("dgx09/cuda:2") == "dgx09"


def test_across_nodes_is_bottlenecked_by_pcie(cluster) -> None:  # type: ignore[no-untyped-def]
    # cuda -> host (PCIe 64 GB/s, 2 us) -> fabric (NICs: 2 x 1 us) -> host -> cuda (2 us)
    assert cluster.bandwidth("dgx00/cuda:0", "dgx07/cuda:5") == pytest.approx(64e9)
    assert cluster.latency("dgx00/cuda:0", "dgx07/cuda:5") == pytest.approx(6e-6)
    assert cluster.bandwidth("dgx00", "dgx07") == pytest.approx(400e9)  # 8 x 400 Gbit/s
    t = cluster.transfer_time("dgx00/cuda:0", "dgx07/cuda:5", 64 << 20)
    assert t == pytest.approx(6e-6 + (64 << 20) / 64e9)


def test_same_device_and_symmetry(cluster) -> None:  # type: ignore[no-untyped-def]
    assert cluster.bandwidth("dgx01/cuda:1", "dgx01/cuda:1") == math.inf
    assert cluster.latency("dgx01/cuda:1", "dgx01/cuda:1") == 0.0
    assert cluster.transfer_time("dgx01/cuda:1", "dgx01/cuda:1", 10**9) == 0.0
    for a, b in [("dgx00/cpu:0", "dgx03/cuda:4"), ("dgx02/cuda:1", "dgx02/cuda:6")]:
        assert cluster.bandwidth(a, b) == cluster.bandwidth(b, a)
        assert cluster.latency(a, b) == cluster.latency(b, a)


def test_local_ids_resolve_when_unambiguous() -> None:
    topo = load_topology(SPECS / "dgx-h100.yaml")
    assert topo.device("cuda:3").qualified_id == "dgx/cuda:3"
    assert topo.bandwidth("cuda:0", "cuda:1") == pytest.approx(450e9)
    # GPU to host memory goes over the declared PCIe default, host DRAM over its own link.
    assert topo.bandwidth("cuda:0", "cpu:0") == pytest.approx(64e9)


def test_ambiguous_and_unknown_devices(cluster) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TopologyError, match="several nodes"):
        cluster.device("cuda:0")
    with pytest.raises(TopologyError, match="not declared"):
        cluster.device("dgx00/cuda:8")
    with pytest.raises(TopologyError, match="no node"):
        cluster.leader("nope")


def test_defaults_apply_when_nothing_is_declared() -> None:
    topo = load_topology("nodes:\n  - {name: a, devices: [cpu, cuda:0, cuda:1]}\n  - {name: b, devices: [cpu]}\n")
    # Two undeclared device pairs on one node route through the host: two PCIe hops.
    assert topo.latency("a/cuda:0", "a/cuda:1") == pytest.approx(4e-6)
    assert topo.bandwidth("a/cuda:0", "a/cuda:1") == pytest.approx(25e9)
    # Between nodes the default network (10 Gbit/s Ethernet, 20 us) is the bottleneck.
    assert topo.bandwidth("a/cuda:0", "b/cpu:0") == pytest.approx(1.25e9)
    assert topo.latency("a/cuda:0", "b/cpu:0") == pytest.approx(2e-6 + 20e-6 + 2e-6)


def test_lowest_latency_path_wins_over_a_wider_slower_one() -> None:
    topo = load_topology("""
nodes:
  - name: n
    devices: [{backend: cuda, count: 3}]
    links:
      - {between: [cuda:0, cuda:1], bandwidth: 100 GB/s, latency: 1us}
      - {between: [cuda:1, cuda:2], bandwidth: 10 GB/s, latency: 1us}
      - {between: [cuda:0, cuda:2], bandwidth: 1 GB/s, latency: 1.5us}
""")
    assert topo.latency("cuda:0", "cuda:2") == pytest.approx(1.5e-6)
    assert topo.bandwidth("cuda:0", "cuda:2") == pytest.approx(1e9)
    assert topo.bandwidth("cuda:0", "cuda:1") == pytest.approx(100e9)


def test_anchors_and_merge_keys_and_node_links() -> None:
    topo = load_topology("""
x-box: &box
  devices: [{backend: npu, count: 2}]
  links: [{mesh: "npu:*", kind: hccs, bandwidth: 56 GB/s}]
nodes:
  - {name: a, <<: *box}
  - {name: b, <<: *box, host_memory: 1 GiB}
""")
    assert [d.qualified_id for d in topo.devices] == ["a/npu:0", "a/npu:1", "b/npu:0", "b/npu:1"]
    assert topo.node("b").host_memory_bytes == 1024**3
    assert {k.name for k in topo.links} == {"a/hccs[npu:0~npu:1]", "b/hccs[npu:0~npu:1]"}
    assert topo.latency("a/npu:0", "a/npu:1") == pytest.approx(1e-6)  # kind's default latency


def test_topology_is_immutable_and_hashable() -> None:
    topo = load_topology(SPECS / "exotic-lab.yaml")
    with pytest.raises(AttributeError):
        topo.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        topo.devices[1].params["mesh_size"] = 3  # type: ignore[index]
    assert hash(topo) == hash(load_topology(SPECS / "exotic-lab.yaml"))
    qpu = topo.device("qpu:0")
    assert qpu.simulated and qpu.backend == "quantum" and qpu.params["qubits"] == 16
