"""The immutable topology model and its path queries (private; re-exported by :mod:`dsrt.topology`).

Graph model: every declared device and every node is a vertex. Declared links are edges. A device
with no declared link to its node reaches the node's host over ``defaults.host``. Nodes reach each
other over declared links, or through the network: each node attaches to one shared fabric vertex
with its NICs (``count x bandwidth``, half the NIC latency on each side) or ``defaults.network``.
Queries take the lowest-latency path (ties: the higher bottleneck bandwidth); its bandwidth is the
bottleneck, its latency the sum. Bandwidths are bytes/s, latencies seconds, sizes bytes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import TopologyError

__all__ = ["DeviceDecl", "Node", "Link", "LinkDefault", "Nics", "Topology", "freeze", "thaw",
           "HOST_DEFAULT", "NETWORK_DEFAULT", "KIND_LATENCY"]

_NET = "<network>"

#: Latency assumed for a declared link that states none, by kind (seconds; typical one-way figures).
KIND_LATENCY: Mapping[str, float] = MappingProxyType({
    "pcie": 2e-6, "nvlink": 1e-6, "nvswitch": 1e-6, "hccs": 1e-6, "xgmi": 1e-6, "upi": 0.2e-6,
    "cxl": 0.5e-6, "infiniband": 2e-6, "roce": 3e-6, "ethernet": 20e-6, "shared-memory": 0.1e-6,
    "optical": 1e-6, "simulated": 0.1e-6, "other": 10e-6,
})


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (JSON/YAML-ready) form of a :func:`freeze` result."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class DeviceDecl:
    """A declared device. ``id`` is node-local (``cuda:3``), ``qualified_id`` is ``node/id``.

    ``index`` is ``None`` for a selector (``select: all``, id ``cuda:*``) that binding expands.
    ``params`` (read-only) go to the backend; for simulated devices they are the model parameters.
    """

    id: str
    qualified_id: str
    backend: str
    node: str
    index: int | None
    simulated: bool = False
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class LinkDefault:
    """A link used where none is declared: ``bandwidth`` bytes/s, ``latency`` seconds."""

    kind: str
    bandwidth: float
    latency: float


#: Built-in ``defaults.host``: a PCIe 4.0 x16 slot in practice (~25 GB/s, ~2 us).
HOST_DEFAULT = LinkDefault("pcie", 25e9, 2e-6)
#: Built-in ``defaults.network``: 10 Gbit/s Ethernet (1.25e9 bytes/s, ~20 us).
NETWORK_DEFAULT = LinkDefault("ethernet", 1.25e9, 20e-6)


@dataclass(frozen=True)
class Nics:
    """A node's network ports: ``count`` ports of ``bandwidth`` bytes/s; ``latency`` seconds port to port."""

    kind: str
    count: int
    bandwidth: float
    latency: float


@dataclass(frozen=True)
class Node:
    """A machine: its devices (real and simulated, in declaration order) and host memory in bytes."""

    name: str
    devices: tuple[DeviceDecl, ...]
    host_memory_bytes: int | None = None
    nics: Nics | None = None
    leader_id: str | None = None


@dataclass(frozen=True)
class Link:
    """A declared link between two endpoints (qualified device ids or node names).

    ``bandwidth`` in bytes/s, ``latency`` in seconds.
    """

    name: str
    a: str
    b: str
    kind: str
    bandwidth: float
    latency: float


@dataclass(frozen=True)
class Topology:
    """A validated, immutable topology. Equality ignores where it was loaded from.

    ``local_node`` is set on a topology bound to a runtime (local ids resolve there first).
    ``locations`` maps qualified device ids and link names to ``file:line:col`` for messages.
    """

    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    host_default: LinkDefault = HOST_DEFAULT
    network_default: LinkDefault = NETWORK_DEFAULT
    strict: bool = False
    source: str | None = field(default=None, compare=False)
    local_node: str | None = field(default=None, compare=False)
    locations: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    # ------------------------------------------------------------------ lookups
    @property
    def devices(self) -> tuple[DeviceDecl, ...]:
        """Every declared device of every node, in node order."""
        return tuple(d for n in self.nodes for d in n.devices)

    def _index(self) -> dict[str, DeviceDecl]:
        idx = self._cache.get("index")
        if idx is None:
            idx = {d.qualified_id: d for d in self.devices}
            self._cache["index"] = idx
        return idx

    def _fail(self, message: str) -> TopologyError:
        return TopologyError(message, file=self.source)

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise self._fail(f"no node '{name}' (nodes: {', '.join(n.name for n in self.nodes)})")

    def device(self, ident: Any) -> DeviceDecl:
        """A device by qualified id, or by local id when on the local node or on only one node."""
        ident = str(getattr(ident, "id", ident))
        idx = self._index()
        if ident in idx:
            return idx[ident]
        if self.local_node is not None and f"{self.local_node}/{ident}" in idx:
            return idx[f"{self.local_node}/{ident}"]
        hits = [d for d in idx.values() if d.id == ident]
        if len(hits) == 1:
            return hits[0]
        if hits:
            where = ", ".join(d.node for d in hits[:4]) + (", ..." if len(hits) > 4 else "")
            raise self._fail(f"device '{ident}' is declared on several nodes ({where}); qualify it as"
                             f" '{hits[0].qualified_id}'")
        raise self._fail(f"device '{ident}' is not declared in topology '{self.name}'")

    def _vertex(self, ident: Any) -> str:
        ident = str(getattr(ident, "id", ident))
        if any(n.name == ident for n in self.nodes):
            return ident
        return self.device(ident).qualified_id

    def node_of(self, ident: Any) -> str:
        """The node name of a device (a node name maps to itself)."""
        v = self._vertex(ident)
        return v.split("/", 1)[0]

    def same_node(self, a: Any, b: Any) -> bool:
        """True if both devices are on one node."""
        return self.node_of(a) == self.node_of(b)

    def leader(self, node: str) -> str:
        """The qualified id of the node's leader: its ``leader`` or first real (else first) device."""
        n = self.node(node)
        if n.leader_id is not None:
            return f"{n.name}/{n.leader_id}"
        real = [d for d in n.devices if not d.simulated and d.index is not None]
        pick = real or [d for d in n.devices if d.index is not None] or list(n.devices)
        if not pick:
            raise self._fail(f"node '{node}' has no devices")
        return pick[0].qualified_id

    def groups(self) -> list[list[str]]:
        """Qualified device ids per node, in node order (for hierarchical collectives)."""
        return [[d.qualified_id for d in n.devices if d.index is not None] for n in self.nodes]

    # ------------------------------------------------------------------ paths
    def _graph(self) -> dict[str, list[tuple[str, float, float]]]:
        graph = self._cache.get("graph")
        if graph is not None:
            return graph
        best: dict[frozenset[str], tuple[float, float]] = {}

        def add(a: str, b: str, latency: float, bandwidth: float) -> None:
            key = frozenset((a, b))
            old = best.get(key)
            if old is None or (latency, -bandwidth) < (old[0], -old[1]):
                best[key] = (latency, bandwidth)

        declared = set()
        for link in self.links:
            add(link.a, link.b, link.latency, link.bandwidth)
            declared.add(frozenset((link.a, link.b)))
        h = self.host_default
        for n in self.nodes:
            for d in n.devices:
                if frozenset((d.qualified_id, n.name)) not in declared:
                    add(d.qualified_id, n.name, h.latency, h.bandwidth)
            if len(self.nodes) > 1:
                if n.nics is not None:
                    add(n.name, _NET, n.nics.latency / 2, n.nics.bandwidth * n.nics.count)
                else:
                    add(n.name, _NET, self.network_default.latency / 2, self.network_default.bandwidth)
        graph = {}
        for key, (latency, bandwidth) in best.items():
            a, b = tuple(key)
            graph.setdefault(a, []).append((b, latency, bandwidth))
            graph.setdefault(b, []).append((a, latency, bandwidth))
        self._cache["graph"] = graph
        return graph

    def _paths_from(self, src: str) -> dict[str, tuple[float, float]]:
        """Lowest-latency (then widest) path from ``src`` to every vertex: ``{v: (latency, bandwidth)}``."""
        cache = self._cache.setdefault("paths", {})
        if src in cache:
            return cache[src]
        graph = self._graph()
        done: dict[str, tuple[float, float]] = {}
        heap: list[tuple[float, float, str]] = [(0.0, -math.inf, src)]
        while heap:
            lat, neg_bw, v = heapq.heappop(heap)
            if v in done:
                continue
            done[v] = (lat, -neg_bw)
            for w, l_lat, l_bw in graph.get(v, ()):
                if w not in done:
                    heapq.heappush(heap, (lat + l_lat, -min(-neg_bw, l_bw), w))
        cache[src] = done
        return done

    def _path(self, a: Any, b: Any) -> tuple[float, float]:
        va, vb = self._vertex(a), self._vertex(b)
        if va == vb:
            return 0.0, math.inf
        return self._paths_from(va).get(vb, (math.inf, 0.0))

    def bandwidth(self, a: Any, b: Any) -> float:
        """Bytes/s: the bottleneck bandwidth of the lowest-latency path (same device: ``inf``)."""
        return self._path(a, b)[1]

    def latency(self, a: Any, b: Any) -> float:
        """Seconds: the summed latency of the lowest-latency path (same device: 0.0)."""
        return self._path(a, b)[0]

    def transfer_time(self, a: Any, b: Any, nbytes: int) -> float:
        """Seconds to move ``nbytes`` bytes from ``a`` to ``b``: latency + nbytes / bandwidth."""
        latency, bandwidth = self._path(a, b)
        if bandwidth == math.inf:
            return latency
        return latency + (nbytes / bandwidth if bandwidth > 0 else math.inf)

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings) that ``load_topology`` turns into an equal Topology."""
        def default(d: LinkDefault) -> dict[str, Any]:
            return {"kind": d.kind, "bandwidth": d.bandwidth, "latency": d.latency}

        nodes = []
        for n in self.nodes:
            entry: dict[str, Any] = {"name": n.name}
            if n.host_memory_bytes is not None:
                entry["host_memory"] = n.host_memory_bytes
            if n.leader_id is not None:
                entry["leader"] = n.leader_id
            if n.nics is not None:
                entry["nics"] = {"kind": n.nics.kind, "count": n.nics.count, "bandwidth": n.nics.bandwidth,
                                 "latency": n.nics.latency}
            devices: list[dict[str, Any]] = []
            simulated: list[dict[str, Any]] = []
            for d in n.devices:
                item: dict[str, Any] = {"backend": d.backend}
                if d.index is None:
                    item["select"] = "all"
                else:
                    item["index"] = d.index
                if d.params:
                    item["params"] = thaw(d.params)
                (simulated if d.simulated else devices).append(item)
            entry["devices"] = devices
            if simulated:
                entry["simulated"] = simulated
            nodes.append(entry)
        return {
            "version": 1,
            "name": self.name,
            "strict": self.strict,
            "defaults": {"host": default(self.host_default), "network": default(self.network_default)},
            "nodes": nodes,
            "links": [{"name": k.name, "between": [k.a, k.b], "kind": k.kind, "bandwidth": k.bandwidth,
                       "latency": k.latency} for k in self.links],
        }
