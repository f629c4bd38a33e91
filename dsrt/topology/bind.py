"""Binding a topology to a runtime's discovered devices (private; re-exported by :mod:`dsrt.topology`).

Called by ``Runtime`` lazily while it resolves devices, so it reads ``runtime.backends`` (never
``runtime.devices``, which would call back here). A declared device that is absent, or a simulated
device whose backend is missing or fails, becomes a reason in :attr:`Binding.missing`; only
``strict: true`` turns that into a ``TopologyError``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigurationError, DsrtError, TopologyError
from .load import load_topology
from .model import DeviceDecl, Link, Node, Topology

if TYPE_CHECKING:
    from ..device import Device
    from ..runtime import BackendStatus, Runtime

__all__ = ["Binding", "bind_runtime", "describe_binding", "discovered_topology", "LOCAL_NODE"]

#: The node name of a topology built from discovery (no file).
LOCAL_NODE = "local"


@dataclass
class Binding:
    """How a topology's local node matched this machine.

    ``bound``: qualified id -> runtime device. ``missing``: qualified id -> why it is not here.
    ``created``: qualified ids of simulated devices created for the file. ``extra``: qualified ids
    of discovered devices the file did not declare (added to the bound topology). ``local_node``:
    the node this process runs on.
    """

    local_node: str
    bound: dict[str, Device] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- discovery only
def _time_copy(device: Device, nbytes: int) -> float:
    """Best of three host-to-device copies of ``nbytes`` bytes, in seconds."""
    host = np.ones(max(nbytes, 1), np.uint8)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        arr = device.asarray(host)
        device.synchronize()
        best = min(best, time.perf_counter() - t0)
        del arr
    return best


def _measured_host_link(device: Device, cpu_bandwidth: float) -> tuple[str, float, float]:
    """(kind, bytes/s, seconds) of the device's link to the host, from a quick measured copy."""
    small = 8
    if device.info.host_visible or device.info.simulated:  # its memory is host memory
        latency = _host_copy_latency()
        return "shared-memory", cpu_bandwidth, latency
    big = 1 << 20
    try:
        t_small = _time_copy(device, small)
        t_big = _time_copy(device, big)
    except Exception:  # noqa: BLE001 - a backend that cannot copy keeps the estimate, never breaks discovery
        return "pcie", cpu_bandwidth, _host_copy_latency()
    return "pcie", big / max(t_big - t_small, 1e-9), t_small


def _host_copy_latency() -> float:
    src, dst = np.ones(8, np.uint8), np.empty(8, np.uint8)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return best


def discovered_topology(runtime: Runtime) -> tuple[Topology, Binding]:
    """A one-node topology of every available device, host links estimated by measured copies."""
    devices: list[Device] = []
    for st in runtime.backends.values():
        if st.status == "available":
            devices.extend(st.devices)
    cpu_bw = next((d.info.memory_bandwidth for d in devices if d.info.host_visible and not d.info.simulated
                   and d.info.memory_bandwidth > 0), 0.0) or 10e9
    decls, links = [], []
    binding = Binding(LOCAL_NODE)
    for dev in devices:
        qid = f"{LOCAL_NODE}/{dev.id}"
        decls.append(DeviceDecl(dev.id, qid, dev.info.backend, LOCAL_NODE, dev.info.index, dev.info.simulated))
        kind, bandwidth, latency = _measured_host_link(dev, cpu_bw)
        links.append(Link(f"{dev.id}-host", qid, LOCAL_NODE, kind, bandwidth, latency))
        binding.bound[qid] = dev
    topo = Topology(name="discovered", nodes=(Node(LOCAL_NODE, tuple(decls)),), links=tuple(links),
                    source="<discovered>", local_node=LOCAL_NODE)
    return topo, binding


# ---------------------------------------------------------------------- matching
def _status_for(statuses: dict[str, BackendStatus], backend: str) -> BackendStatus | None:
    return statuses.get(backend)


def _probe_match(decl: DeviceDecl, statuses: dict[str, BackendStatus]) -> tuple[list[Device], str]:
    """Discovered devices for a real decl, or ``([], reason)``."""
    st = _status_for(statuses, decl.backend)
    if st is None:
        return [], f"backend '{decl.backend}' is not installed"
    if st.status != "available":
        return [], f"backend '{decl.backend}' is {st.status}: {st.reason or 'no reason given'}"
    if decl.index is None:
        return list(st.devices), ""
    for dev in st.devices:
        if dev.info.index == decl.index:
            return [dev], ""
    have = ", ".join(d.id for d in st.devices) or "none"
    return [], f"not found; backend '{decl.backend}' has {have}"


def _pick_local(topo: Topology, statuses: dict[str, BackendStatus]) -> str:
    wanted = os.environ.get("DSRT_NODE")
    names = [n.name for n in topo.nodes]
    if wanted:
        if wanted not in names:
            raise TopologyError(f"DSRT_NODE='{wanted}' names no node of '{topo.name}' (nodes: {', '.join(names[:8])}"
                                f"{', ...' if len(names) > 8 else ''})", file=topo.source)
        return wanted
    best, best_score = names[0], -1
    for n in topo.nodes:
        score = sum(1 for d in n.devices if not d.simulated and _probe_match(d, statuses)[0])
        if score > best_score:
            best, best_score = n.name, score
    return best


def _create(runtime: Runtime, decl: DeviceDecl, statuses: dict[str, BackendStatus]) -> tuple[Device | None, str]:
    st = _status_for(statuses, decl.backend)
    if st is None:
        return None, f"simulated backend '{decl.backend}' is not installed"
    if st.spec is None:
        return None, f"backend '{decl.backend}' failed to load: {st.reason}"
    if st.spec.create_simulated is None:
        return None, f"backend '{decl.backend}' cannot create simulated devices"
    local_id = f"{st.spec.prefix}:{decl.index}"
    try:
        device = st.spec.create_simulated(runtime, local_id, decl.params)
    except DsrtError as exc:
        return None, f"backend '{decl.backend}' could not create {local_id}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failing plugin becomes a reason, never a crash
        return None, f"backend '{decl.backend}' raised {type(exc).__name__} creating {local_id}: {exc}"
    try:
        runtime.add_device(device)
    except ConfigurationError:
        # The backend's probe already made a default device with this id; the file's declaration wins.
        adopt = getattr(runtime, "_adopt", None)
        if adopt is None:
            return None, f"device id '{device.id}' is already in use"
        adopt(device)
    except Exception as exc:  # noqa: BLE001
        return None, f"could not add {local_id} to the runtime: {type(exc).__name__}: {exc}"
    return device, ""


def bind_runtime(runtime: Runtime, source: Any) -> tuple[Topology, Binding]:
    """Match ``source`` (anything :func:`dsrt.topology.load_topology` takes, or ``None``) to ``runtime``.

    Returns the bound topology (the local node's selectors expanded into concrete devices, and
    discovered devices the file did not declare appended) and the :class:`Binding`. Raises
    ``TopologyError`` for a bad file, and, with ``strict: true``, when a declared device is missing.
    """
    if source is None:
        return discovered_topology(runtime)
    statuses = runtime.backends
    topo = load_topology(source, known=[n for n in statuses if not n.startswith("<")])
    local = _pick_local(topo, statuses)
    binding = Binding(local)
    node = topo.node(local)
    decls: list[DeviceDecl] = []
    taken: set[str] = set()
    for decl in node.devices:
        if decl.simulated:
            device, reason = _create(runtime, decl, statuses)
            if device is None:
                binding.missing[decl.qualified_id] = reason
            else:
                binding.bound[decl.qualified_id] = device
                binding.created.append(decl.qualified_id)
                taken.add(device.id)
            decls.append(decl)
            continue
        found, reason = _probe_match(decl, statuses)
        if not found:
            binding.missing[decl.qualified_id] = reason
            if decl.index is not None:
                decls.append(decl)
            continue
        if decl.index is not None:
            binding.bound[decl.qualified_id] = found[0]
            taken.add(found[0].id)
            decls.append(decl)
            continue
        for dev in found:  # a selector: one concrete declaration per device found
            if dev.id in taken or any(d.id == dev.id for d in node.devices):
                continue
            concrete = DeviceDecl(dev.id, f"{local}/{dev.id}", decl.backend, local, dev.info.index, False,
                                  decl.params)
            binding.bound[concrete.qualified_id] = dev
            taken.add(dev.id)
            decls.append(concrete)
    for st in statuses.values():
        if st.status != "available":
            continue
        for dev in st.devices:
            if dev.id not in taken and not any(d.id == dev.id for d in decls):
                qid = f"{local}/{dev.id}"
                decls.append(DeviceDecl(dev.id, qid, dev.info.backend, local, dev.info.index, dev.info.simulated))
                binding.bound[qid] = dev
                binding.extra.append(qid)
    if topo.strict and binding.missing:
        qid, reason = next(iter(binding.missing.items()))
        where = topo.locations.get(qid, topo.source or "<topology>")
        file, line, column = _split_location(where)
        more = f" (and {len(binding.missing) - 1} more)" if len(binding.missing) > 1 else ""
        raise TopologyError(f"strict topology: declared device '{qid}' is not available: {reason}{more}",
                            file=file, line=line, column=column)
    nodes = tuple(replace(n, devices=tuple(decls)) if n.name == local else n for n in topo.nodes)
    bound = replace(topo, nodes=nodes, local_node=local, _cache={})
    return bound, binding


def _split_location(text: str) -> tuple[str, int | None, int | None]:
    parts = text.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return text, None, None


def describe_binding(topology: Topology, binding: Binding | None) -> dict[str, Any]:
    """JSON-ready summary of a topology and its binding: nodes, devices (with state), links, defaults.

    Bandwidths are bytes/s and latencies seconds, as numbers; each device has ``state`` ``bound``,
    ``created``, ``missing`` (with ``reason``), ``extra`` or ``remote`` (on another node).
    """
    created = set(binding.created) if binding else set()
    extra = set(binding.extra) if binding else set()
    nodes = []
    for n in topology.nodes:
        devices = []
        for d in n.devices:
            entry: dict[str, Any] = {"id": d.id, "qualified_id": d.qualified_id, "backend": d.backend,
                                     "index": d.index, "simulated": d.simulated}
            if binding is None or n.name != binding.local_node:
                entry["state"] = "declared" if binding is None else "remote"
            elif d.qualified_id in binding.missing:
                entry["state"], entry["reason"] = "missing", binding.missing[d.qualified_id]
            elif d.qualified_id in created:
                entry["state"] = "created"
            elif d.qualified_id in extra:
                entry["state"] = "extra"
            elif d.qualified_id in binding.bound:
                entry["state"] = "bound"
            else:
                entry["state"] = "missing"
            if binding is not None and d.qualified_id in binding.bound:
                entry["device"] = binding.bound[d.qualified_id].id
            if d.params:
                entry["params"] = {k: v for k, v in dict(d.params).items() if isinstance(v, (str, int, float, bool))}
            devices.append(entry)
        nodes.append({"name": n.name, "host_memory_bytes": n.host_memory_bytes, "leader": _leader(topology, n.name),
                      "devices": devices})
    return {
        "name": topology.name,
        "source": topology.source,
        "local_node": binding.local_node if binding else None,
        "strict": topology.strict,
        "defaults": {
            "host": {"kind": topology.host_default.kind, "bandwidth": topology.host_default.bandwidth,
                     "latency": topology.host_default.latency},
            "network": {"kind": topology.network_default.kind, "bandwidth": topology.network_default.bandwidth,
                        "latency": topology.network_default.latency},
        },
        "nodes": nodes,
        "links": [{"name": k.name, "a": k.a, "b": k.b, "kind": k.kind, "bandwidth": k.bandwidth,
                   "latency": k.latency} for k in topology.links],
        "missing": dict(binding.missing) if binding else {},
        "created": list(binding.created) if binding else [],
    }


def _leader(topology: Topology, node: str) -> str | None:
    try:
        return topology.leader(node)
    except TopologyError:
        return None

