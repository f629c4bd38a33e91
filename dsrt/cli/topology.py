"""``dsrt topology check FILE`` and ``dsrt topology show FILE [--json]``.

``check`` exits 0, or prints one ``file:line:col: message`` line to stderr and exits 2. ``show``
prints the nodes, devices, links and what binds on this machine (``--json``: the same as JSON,
bandwidths in bytes/s and latencies in seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ..errors import DsrtError, TopologyError
from ..topology import bind_runtime, describe_binding, load_topology
from ..topology.units import format_bandwidth, format_latency

__all__ = ["configure", "run", "describe_binding", "format_description"]


def configure(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``topology`` command (with ``check`` and ``show``) to an argparse subparsers object."""
    parser = subparsers.add_parser("topology", help="check or show a YAML device topology")
    sub = parser.add_subparsers(dest="topology_command", required=True)
    check = sub.add_parser("check", help="validate a topology file (exit 0, or one error line and exit 2)")
    check.add_argument("file", help="the topology YAML file")
    show = sub.add_parser("show", help="nodes, devices, links and what binds on this machine")
    show.add_argument("file", help="the topology YAML file")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_binding`'s output."""
    lines = [f"topology {desc['name']} ({desc['source']})" + (f", local node {desc['local_node']}"
                                                               if desc.get("local_node") else "")]
    for node in desc["nodes"]:
        mem = f", host memory {node['host_memory_bytes']} bytes" if node.get("host_memory_bytes") else ""
        lines.append(f"  node {node['name']}: {len(node['devices'])} devices, leader {node['leader']}{mem}")
        for d in node["devices"]:
            state = d["state"] + (f" ({d['reason']})" if d.get("reason") else "")
            sim = " simulated" if d["simulated"] else ""
            lines.append(f"    {d['id']:<14} {d['backend']:<13}{sim:<10} {state}")
    shown = {d["qualified_id"] for node in desc["nodes"] for d in node["devices"]}
    for qid, reason in desc.get("missing", {}).items():
        if qid not in shown:
            lines.append(f"    {qid:<14} missing ({reason})")
    links = desc["links"]
    lines.append(f"  links: {len(links)}")
    for k in links[:40]:
        lines.append(f"    {k['name']:<32} {k['a']} <-> {k['b']}  {k['kind']}, {format_bandwidth(k['bandwidth'])},"
                     f" {format_latency(k['latency'])}")
    if len(links) > 40:
        lines.append(f"    ... and {len(links) - 40} more (use --json)")
    for which in ("host", "network"):
        d = desc["defaults"][which]
        lines.append(f"  default {which} link: {d['kind']}, {format_bandwidth(d['bandwidth'])},"
                     f" {format_latency(d['latency'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace, runtime_factory: Callable[[], Any]) -> int:
    """Execute ``dsrt topology ...``; return the exit code (2 for a topology or usage error)."""
    try:
        if args.topology_command == "check":
            topo = load_topology(args.file)
            print(f"{args.file}: ok ({len(topo.nodes)} nodes, {len(topo.devices)} devices, {len(topo.links)} links)")
            return 0
        topo = load_topology(args.file)
        runtime = runtime_factory()
        bound, binding = bind_runtime(runtime, topo)
        desc = describe_binding(bound, binding)
        print(json.dumps(desc, indent=2, default=str) if args.json else format_description(desc))
        return 0
    except TopologyError as exc:
        print(" ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except DsrtError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
