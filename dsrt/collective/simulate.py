"""Predicted collective time and bus bandwidth from a topology's link model (no data moves).

Model (stated in every result under ``"model"``):

- Moving ``c`` bytes over an edge a -> b takes ``latency(a, b) + c / bw``, with ``latency`` and
  ``bandwidth`` from :class:`dsrt.topology.Topology` (lowest-latency path, its bottleneck link).
- A ring step moves one chunk over every edge of the ring at once and lasts as long as its slowest
  edge; a ring of m members runs ``m - 1`` steps for reduce-scatter or all-gather and ``2 (m - 1)``
  for all-reduce, with chunks of ``nbytes / m`` bytes.
- Flows leaving a node at the same time share the node's network path: a flow's bandwidth is
  ``min(bandwidth(a, b), bandwidth(node_a, node_b) / flows)``. The flat ring has one flow per node
  boundary; the hierarchical algorithm runs one cross-node ring per local device (rail) concurrently.
- Flat: one ring over all devices in node order. Hierarchical: ring reduce-scatter inside every node
  (chunks ``nbytes / L``), then per shard a ring over the nodes (chunks ``nbytes / (L N)``, L rails at
  once), then ring all-gather inside every node. With unequal device counts the shard is
  ``nbytes / min(L)`` and ``max(L)`` rails share the node's path.
- Compute time of the reduction itself is not modelled (it overlaps with transfers on real fabrics).
- Bus bandwidth is the nccl-tests definition: ``algbw = nbytes / time``, ``busbw = algbw x 2 (n-1)/n``
  for all-reduce and ``algbw x (n-1)/n`` for reduce-scatter and all-gather, n = all devices.
  Communication efficiency = busbw / the slowest link bandwidth, the smaller of the slowest
  device-to-device bandwidth inside a node (between ring neighbours) and the slowest node-to-node
  bandwidth (``bandwidth(node_a, node_b)``, a node's whole network path); the same denominator for
  both algorithms, so the efficiencies compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError

__all__ = ["simulate_collective", "SUPPORTED", "MODEL"]

SUPPORTED = ("all_reduce", "reduce_scatter", "all_gather")

MODEL = (
    "edge time = latency + bytes / bandwidth (topology lowest-latency path); ring step = slowest edge; "
    "all_reduce = 2(m-1) steps, reduce_scatter/all_gather = m-1 steps of nbytes/m; concurrent flows "
    "leaving a node share bandwidth(node_a, node_b); hierarchical = intra-node ring reduce-scatter, "
    "per-shard cross-node ring on L concurrent rails, intra-node ring all-gather; reduction compute not "
    "modelled; busbw = algbw x 2(n-1)/n (all_reduce) or x (n-1)/n (nccl-tests); efficiency = busbw / "
    "slowest link bandwidth = min(slowest intra-node neighbour bandwidth, slowest node-to-node bandwidth)"
)


def _node_bw(topo: Any, a: str, b: str) -> float:
    try:
        return float(topo.bandwidth(a, b))
    except Exception:  # noqa: BLE001 - a topology that cannot route node names: no sharing limit
        return math.inf


class _Ring:
    """Accumulates ring phases and their time in seconds."""

    def __init__(self, topo: Any) -> None:
        self.topo = topo
        self.time = 0.0
        self.phases: list[dict[str, Any]] = []

    def phase(self, name: str, rings: Sequence[Sequence[str]], steps_per_member: int, chunk: float,
              flows: int = 1) -> None:
        worst = 0.0
        steps = 0
        for ring in rings:
            m = len(ring)
            if m < 2:
                continue
            steps = max(steps, steps_per_member * (m - 1))
            step = 0.0
            for i in range(m):
                a, b = ring[i], ring[(i + 1) % m]
                bw = float(self.topo.bandwidth(a, b))
                na, nb = self.topo.node_of(a), self.topo.node_of(b)
                if na != nb:
                    bw = min(bw, _node_bw(self.topo, na, nb) / flows)
                step = max(step, float(self.topo.latency(a, b)) + chunk / bw)
            worst = max(worst, steps_per_member * (m - 1) * step)
        self.time += worst
        self.phases.append({"phase": name, "time_s": worst, "steps": steps, "chunk_bytes": chunk})


def _slowest_link(topo: Any, groups: Sequence[Sequence[str]]) -> float:
    slowest = math.inf
    for g in groups:
        for i in range(len(g) - 1):
            slowest = min(slowest, float(topo.bandwidth(g[i], g[i + 1])))
    names = [topo.node_of(g[0]) for g in groups]
    for i in range(len(names) - 1):
        slowest = min(slowest, _node_bw(topo, names[i], names[i + 1]))
    return slowest


def _result(r: _Ring, nbytes: int, n: int, factor: float, slowest: float) -> dict[str, Any]:
    algbw = nbytes / r.time if r.time > 0 else math.inf
    busbw = algbw * factor
    return {
        "time_s": r.time,
        "algbw_bytes_per_s": algbw,
        "busbw_bytes_per_s": busbw,
        "slowest_link_bandwidth": slowest,
        "efficiency": busbw / slowest if slowest not in (0.0, math.inf) else None,
        "phases": r.phases,
    }


def simulate_collective(topology: Any, name: str, nbytes: int, *, backend: str | None = None) -> dict[str, Any]:
    """Predict flat-ring and hierarchical time (seconds) and bus bandwidth (bytes/s) of collective
    ``name`` of ``nbytes`` bytes over the devices of ``topology`` (a Topology or anything
    :func:`dsrt.topology.load_topology` accepts) that belong to ``backend``.

    Collectives run among devices of one kind: with ``backend=None`` the backend with the most
    declared devices is used (the GPUs of a DGX node, not its host CPU)."""
    from ..topology import load_topology

    topo = load_topology(topology)
    if name not in SUPPORTED:
        raise ConfigurationError(f"cannot simulate collective '{name}'; supported: {', '.join(SUPPORTED)}")
    if nbytes <= 0:
        raise ConfigurationError(f"collective size must be positive, got {nbytes} bytes")
    if backend is None:
        counts: dict[str, int] = {}
        for d in topo.devices:
            counts[d.backend] = counts.get(d.backend, 0) + 1
        backend = max(sorted(counts), key=lambda b: counts[b]) if counts else None
    kind = {d.qualified_id: d.backend for d in topo.devices}
    groups = [[q for q in g if kind.get(q) == backend] for g in topo.groups()]
    groups = [g for g in groups if g]
    devices = [d for g in groups for d in g]
    n = len(devices)
    if n < 2:
        raise ConfigurationError(f"a collective needs at least 2 devices; the topology has {n}")
    per_member = 2 if name == "all_reduce" else 1
    factor = (2.0 if name == "all_reduce" else 1.0) * (n - 1) / n

    flat = _Ring(topo)
    flat.phase("ring over all devices", [devices], per_member, nbytes / n)

    hier = _Ring(topo)
    sizes = [len(g) for g in groups]
    lmin, lmax, nn = min(sizes), max(sizes), len(groups)
    if name in ("all_reduce", "reduce_scatter"):
        hier.phase("intra-node reduce-scatter", groups, 1, max(nbytes / len(g) for g in groups))
    rails = [[g[k] for g in groups] for k in range(lmin)]
    if nn > 1:
        hier.phase("inter-node " + name.replace("_", "-") + " per shard", rails, per_member,
                   nbytes / (lmin * nn), flows=lmax)
    if name in ("all_reduce", "all_gather"):
        hier.phase("intra-node all-gather", groups, 1, max(nbytes / len(g) for g in groups))

    slowest = _slowest_link(topo, groups)
    out_flat = _result(flat, nbytes, n, factor, slowest)
    out_hier = _result(hier, nbytes, n, factor, slowest)
    return {
        "collective": name,
        "backend": backend,
        "bytes": int(nbytes),
        "devices": n,
        "nodes": nn,
        "devices_per_node": sizes,
        "model": MODEL,
        "flat_ring": out_flat,
        "hierarchical": out_hier,
        "speedup_hierarchical_vs_flat": out_flat["time_s"] / out_hier["time_s"] if out_hier["time_s"] else None,
    }
