"""From validated documents to a :class:`Topology`: includes, templates, ids, links (private).

Every semantic error (unknown backend, duplicate id, link to an undeclared device, bad unit, include
cycle) is a ``TopologyError`` at the YAML location of the offending value.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import TopologyError
from .model import (
    HOST_DEFAULT,
    KIND_LATENCY,
    NETWORK_DEFAULT,
    DeviceDecl,
    Link,
    LinkDefault,
    Nics,
    Node,
    Topology,
    freeze,
)
from .schema import validate_doc
from .units import parse_bandwidth, parse_latency, parse_size
from .yaml import Doc, Path_, parse_yaml

__all__ = ["build_topology", "known_backends", "BUILTIN_BACKENDS", "DEVICE_PREFIX", "read_file_doc"]

#: Backends this project ships (known even when not installed).
BUILTIN_BACKENDS = ("cpu", "opencl", "cuda", "npu", "quantum", "neuromorphic", "photonic")
#: Device-id prefixes that differ from the backend name.
DEVICE_PREFIX = {"quantum": "qpu", "neuromorphic": "snn"}
_ALIAS = {prefix: name for name, prefix in DEVICE_PREFIX.items()}


def known_backends(extra: Iterable[str] = ()) -> list[str]:
    """Backend names a file may use: the built-in ones, installed ``dsrt`` entry points, and ``extra``."""
    names = set(BUILTIN_BACKENDS) | set(extra)
    try:
        names |= {ep.name for ep in metadata.entry_points(group="dsrt")}
    except Exception:  # noqa: BLE001 - broken metadata must not break loading
        pass
    return sorted(names)


def prefix_of(backend: str) -> str:
    """The device-id prefix of ``backend`` (``quantum`` -> ``qpu``)."""
    return DEVICE_PREFIX.get(backend, backend)


def read_file_doc(path: Path, *, shown: str, at: tuple[Doc, Path_] | None = None) -> Doc:
    """Read and parse one topology file; a missing file is an error at ``at`` (the include)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read '{shown}': {exc.strerror or exc}"
        if at is not None:
            raise at[0].error(at[1], msg) from None
        raise TopologyError(msg, file=shown) from None
    return parse_yaml(raw, file=shown, base_dir=path.parent)


@dataclass
class _Field:
    """Where one value of a node definition lives (its document and path)."""

    doc: Doc
    path: Path_

    @property
    def value(self) -> Any:
        return self.doc.at(self.path)

    def error(self, message: str, *sub: Any, key: bool = False) -> TopologyError:
        return self.doc.error((*self.path, *sub), message, key=key)


class _Builder:
    def __init__(self, extra_backends: Iterable[str]) -> None:
        self.backends = known_backends(extra_backends)
        self.docs: dict[Path, Doc] = {}
        self.nodes: list[Node] = []
        self.node_fields: dict[str, _Field] = {}
        self.locations: dict[str, str] = {}
        self.links: list[Link] = []
        self.link_at: dict[str, _Field] = {}
        self.defaults: dict[str, tuple[LinkDefault, _Field]] = {}

    # ------------------------------------------------------------------ files
    def _load(self, doc: Doc, path: Path_, target: str, stack: tuple[Path, ...]) -> tuple[Doc, Path]:
        resolved = (doc.base_dir / target).resolve()
        if resolved in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
            raise doc.error(path, f"include cycle: {chain}")
        if resolved not in self.docs:
            shown = os.path.relpath(resolved) if not os.path.isabs(target) else target
            sub = read_file_doc(resolved, shown=shown, at=(doc, path))
            validate_doc(sub)
            self.docs[resolved] = sub
        return self.docs[resolved], resolved

    def add_document(self, doc: Doc, stack: tuple[Path, ...]) -> None:
        """Merge ``doc`` (after its includes) into the topology being built."""
        data = doc.data
        includes = data.get("include", [])
        items = [(("include",), includes)] if isinstance(includes, str) else [
            (("include", i), t) for i, t in enumerate(includes)]
        for path, target in items:
            sub, resolved = self._load(doc, path, target, stack)
            self.add_document(sub, (*stack, resolved))
        for kind in ("host", "network"):
            if kind in data.get("defaults", {}):
                f = _Field(doc, ("defaults", kind))
                base = HOST_DEFAULT if kind == "host" else NETWORK_DEFAULT
                self.defaults[kind] = (self._link_default(f, base), f)
        for i, _node in enumerate(data.get("nodes", [])):
            self._add_node(_Field(doc, ("nodes", i)), stack)
        for i, _link in enumerate(data.get("links", [])):
            self._pending_links.append(_Field(doc, ("links", i)))

    # ------------------------------------------------------------------ nodes
    def _template(self, f: _Field, stack: tuple[Path, ...], depth: int = 0) -> dict[str, _Field]:
        """The fields of a node definition, following ``from:`` into other files."""
        spec = f.value
        fields: dict[str, _Field] = {}
        if "from" in spec:
            if depth > 16:
                raise f.error("'from' chain is longer than 16 files", "from")
            target = spec["from"]
            file_part, _, node_name = target.partition("#")
            sub, resolved = self._load(f.doc, (*f.path, "from"), file_part, stack)
            nodes = sub.data.get("nodes", [])
            if node_name:
                picks = [i for i, n in enumerate(nodes) if n.get("name") == node_name]
                if not picks:
                    names = ", ".join(str(n.get("name", f"n{i}")) for i, n in enumerate(nodes))
                    raise f.error(f"'{file_part}' has no node '{node_name}' (nodes: {names or 'none'})", "from")
                pick = picks[0]
            else:
                if len(nodes) != 1:
                    raise f.error(f"'{file_part}' declares {len(nodes)} nodes; name one as"
                                  f" '{file_part}#<node>'", "from")
                pick = 0
            fields.update(self._template(_Field(sub, ("nodes", pick)), (*stack, resolved), depth + 1))
        for key in spec:
            if key not in ("from", "replicas", "name"):
                fields[key] = _Field(f.doc, (*f.path, key))
        return fields

    def _add_node(self, f: _Field, stack: tuple[Path, ...]) -> None:
        spec = f.value
        fields = self._template(f, stack)
        base = spec.get("name", f"n{len(self.nodes)}")
        replicas = spec.get("replicas")
        if replicas is None:
            names = [base]
        else:
            width = len(str(replicas - 1))
            names = [f"{base}{k:0{width}d}" for k in range(replicas)]
        if "devices" not in fields and "simulated" not in fields:
            raise f.error(f"node '{base}': declares no devices (add 'devices:' or 'from:')")
        for name in names:
            if name in self.node_fields:
                first = self.node_fields[name]
                raise f.error(f"duplicate node name '{name}' (first declared at {first.doc.loc_text(first.path)})",
                              "name")
            self.node_fields[name] = f
            self.nodes.append(self._node(name, fields))

    def _backend(self, f: _Field, name: str, sub: Path_) -> str:
        name = _ALIAS.get(name, name)
        if name not in self.backends:
            close = difflib.get_close_matches(name, self.backends, n=1)
            tip = f"; did you mean '{close[0]}'?" if close else ""
            raise f.error(f"unknown backend '{name}' (known backends: {', '.join(self.backends)}){tip}", *sub)
        return name

    def _decls(self, node: str, f: _Field, simulated: bool) -> list[tuple[DeviceDecl, Path_]]:
        out: list[tuple[DeviceDecl, Path_]] = []
        for j, item in enumerate(f.value):
            sub: Path_ = (j,)
            if isinstance(item, str):
                backend_s, _, idx_s = item.partition(":")
                spec: dict[str, Any] = {"backend": backend_s}
                if idx_s == "*":
                    spec["select"] = "all"
                elif idx_s:
                    spec["index"] = int(idx_s)
                bsub = sub
            else:
                spec, bsub = item, (j, "backend")
            backend = self._backend(f, spec["backend"], bsub)
            params = freeze(spec.get("params", {}))
            pre = prefix_of(backend)
            if spec.get("select") == "all":
                if "index" in spec or "count" in spec:
                    raise f.error("'select: all' cannot be combined with 'index' or 'count'", j)
                decl = DeviceDecl(f"{pre}:*", f"{node}/{pre}:*", backend, node, None, simulated, params)
                out.append((decl, sub))
                continue
            start = int(spec.get("index", 0))
            for k in range(int(spec.get("count", 1))):
                local = f"{pre}:{start + k}"
                out.append((DeviceDecl(local, f"{node}/{local}", backend, node, start + k, simulated, params), sub))
        return out

    def _node(self, name: str, fields: dict[str, _Field]) -> Node:
        decls: list[DeviceDecl] = []
        seen: dict[str, _Field] = {}
        for key, simulated in (("devices", False), ("simulated", True)):
            if key not in fields:
                continue
            f = fields[key]
            for decl, sub in self._decls(name, f, simulated):
                if decl.id in seen:
                    first = seen[decl.id]
                    raise f.error(f"node '{name}': duplicate device id '{decl.id}' (first declared at"
                                  f" {first.doc.loc_text(first.path)})", *sub)
                at = _Field(f.doc, (*f.path, *sub))
                seen[decl.id] = at
                self.locations[decl.qualified_id] = at.doc.loc_text(at.path)
                decls.append(decl)
        memory = None
        if "host_memory" in fields:
            memory = self._unit(fields["host_memory"], parse_size)
        nics = None
        if "nics" in fields:
            nf = fields["nics"]
            spec = nf.value
            kind = spec.get("kind", "infiniband")
            nics = Nics(kind, int(spec.get("count", 1)),
                        self._unit(_Field(nf.doc, (*nf.path, "bandwidth")), parse_bandwidth),
                        self._latency(nf, spec, kind))
        leader = None
        if "leader" in fields:
            lf = fields["leader"]
            leader = lf.value
            if leader not in seen or leader.endswith(":*"):
                raise lf.error(f"node '{name}': leader '{leader}' is not a declared device"
                               f" (devices: {', '.join(seen) or 'none'})")
        node = Node(name, tuple(decls), memory, nics, leader)
        if "links" in fields:
            lf = fields["links"]
            for i, _ in enumerate(lf.value):
                self._pending_node_links.append((node, _Field(lf.doc, (*lf.path, i))))
        return node

    # ------------------------------------------------------------------ links
    @staticmethod
    def _unit(f: _Field, parse: Callable[[object], Any]) -> Any:
        try:
            return parse(f.value)
        except ValueError as exc:
            raise f.error(str(exc)) from None

    def _latency(self, f: _Field, spec: dict[str, Any], kind: str) -> float:
        if "latency" in spec:
            return float(self._unit(_Field(f.doc, (*f.path, "latency")), parse_latency))
        return KIND_LATENCY.get(kind, KIND_LATENCY["other"])

    def _link_default(self, f: _Field, base: LinkDefault) -> LinkDefault:
        spec = f.value
        kind = spec.get("kind", base.kind)
        bandwidth = base.bandwidth
        if "bandwidth" in spec:
            bandwidth = self._unit(_Field(f.doc, (*f.path, "bandwidth")), parse_bandwidth)
        latency = self._latency(f, spec, kind) if ("latency" in spec or "kind" in spec) else base.latency
        return LinkDefault(kind, float(bandwidth), float(latency))

    def _endpoint(self, f: _Field, sub: Path_, text: str, node: Node | None, label: str) -> str:
        if node is not None:
            if text in ("host", node.name):
                return node.name
            if any(d.id == text and d.index is not None for d in node.devices):
                return f"{node.name}/{text}"
            raise f.error(f"link '{label}': device '{text}' is not declared on node '{node.name}'", *sub)
        names = {n.name: n for n in self.nodes}
        if text in names:
            return text
        if "/" in text:
            node_name, local = text.split("/", 1)
            if node_name not in names:
                raise f.error(f"link '{label}': no node '{node_name}' (nodes: {_few(names)})", *sub)
            if not any(d.id == local and d.index is not None for d in names[node_name].devices):
                raise f.error(f"link '{label}': device '{local}' is not declared on node '{node_name}'", *sub)
            return text
        hits = [n.name for n in self.nodes if any(d.id == text and d.index is not None for d in n.devices)]
        if len(hits) == 1:
            return f"{hits[0]}/{text}"
        if not hits:
            where = f"on node '{self.nodes[0].name}'" if len(self.nodes) == 1 else "on any node"
            raise f.error(f"link '{label}': device '{text}' is not declared {where}", *sub)
        raise f.error(f"link '{label}': device '{text}' is on several nodes ({_few(hits)}); write"
                      f" '{hits[0]}/{text}'", *sub)

    def _glob(self, f: _Field, pattern: str, node: Node | None, label: str) -> list[str]:
        if node is not None:
            pool = [f"{node.name}/{d.id}" for d in node.devices if d.index is not None
                    if fnmatch.fnmatchcase(d.id, pattern)]
        elif "/" in pattern:
            pool = [d.qualified_id for n in self.nodes for d in n.devices
                    if d.index is not None and fnmatch.fnmatchcase(d.qualified_id, pattern)]
        else:
            pool = [n.name for n in self.nodes if fnmatch.fnmatchcase(n.name, pattern)]
        if len(pool) < 2:
            raise f.error(f"link '{label}': mesh '{pattern}' matches {len(pool)} endpoint(s); a mesh needs"
                          " at least 2", "mesh")
        return pool

    def _add_link(self, f: _Field, node: Node | None) -> None:
        spec = f.value
        kind = spec.get("kind", "other")
        prefix = f"{node.name}/" if node is not None else ""
        has_between, has_mesh = "between" in spec, "mesh" in spec
        label = spec.get("name") or (f"{spec['between'][0]}-{spec['between'][1]}" if has_between else kind)
        if has_between == has_mesh:
            raise f.error(f"link '{label}': give exactly one of 'between' (two endpoints) or 'mesh' (a group)")
        bandwidth = float(self._unit(_Field(f.doc, (*f.path, "bandwidth")), parse_bandwidth))
        latency = self._latency(f, spec, kind)
        pairs: list[tuple[str, str, str]] = []
        if has_between:
            a, b = (self._endpoint(f, ("between", i), t, node, label) for i, t in enumerate(spec["between"]))
            if a == b:
                raise f.error(f"link '{label}': connects '{a}' to itself", "between")
            pairs.append((prefix + label, a, b))
        else:
            mesh = spec["mesh"]
            ends = (self._glob(f, mesh, node, label) if isinstance(mesh, str)
                    else [self._endpoint(f, ("mesh", i), t, node, label) for i, t in enumerate(mesh)])
            if len(set(ends)) != len(ends):
                raise f.error(f"link '{label}': mesh lists an endpoint twice", "mesh")
            short = [e if node is None else (e.split("/", 1)[1] if "/" in e else "host") for e in ends]
            for i in range(len(ends)):
                for j in range(i + 1, len(ends)):
                    pairs.append((f"{prefix}{label}[{short[i]}~{short[j]}]", ends[i], ends[j]))
        for name, a, b in pairs:
            if name in self.link_at:
                first = self.link_at[name]
                raise f.error(f"duplicate link name '{name}' (first declared at {first.doc.loc_text(first.path)})",
                              "name" if "name" in spec else ())
            self.link_at[name] = f
            self.locations[name] = f.doc.loc_text(f.path)
            self.links.append(Link(name, a, b, kind, bandwidth, latency))

    # ------------------------------------------------------------------ driver
    def build(self, doc: Doc, stack: tuple[Path, ...], name: str | None) -> Topology:
        self._pending_links: list[_Field] = []
        self._pending_node_links: list[tuple[Node, _Field]] = []
        self.add_document(doc, stack)
        if not self.nodes:
            raise doc.error(("nodes",) if "nodes" in doc.data else (), "the topology declares no nodes"
                            " (add 'nodes:' with at least one node, or 'include:' a file that has them)")
        for node, f in self._pending_node_links:
            self._add_link(f, node)
        for f in self._pending_links:
            self._add_link(f, None)
        data = doc.data
        host = self.defaults.get("host", (HOST_DEFAULT, None))[0]
        network = self.defaults.get("network", (NETWORK_DEFAULT, None))[0]
        title = name or data.get("name") or (Path(doc.file).stem if doc.has_marks else "topology")
        return Topology(
            name=str(title), nodes=tuple(self.nodes), links=tuple(self.links), host_default=host,
            network_default=network, strict=bool(data.get("strict", False)), source=doc.file,
            locations=dict(self.locations),
        )


def _few(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def build_topology(doc: Doc, *, name: str | None = None, stack: tuple[Path, ...] = (),
                   extra_backends: Iterable[str] = ()) -> Topology:
    """Validate ``doc`` against the schema, then build the :class:`Topology` it describes."""
    validate_doc(doc)
    return _Builder(extra_backends).build(doc, stack, name)
