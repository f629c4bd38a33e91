"""From validated documents to a :class:`Topology`: includes, templates, ids, links (private).

Every semantic error (unknown backend, duplicate id, link to an undeclared device, bad unit, include
cycle) is a ``TopologyError`` at the YAML location of the offending value.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TopologyError
from ..plugins import installed_backends
from .limits import ENV_PREFIX, TopologyLimits
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

__all__ = ["build_topology", "known_backends", "read_file_doc"]


def _prefixes() -> dict[str, str]:
    """Installed backends' device-id prefixes by backend name (the plugins say; the core lists none)."""
    return {name: spec.prefix for name, spec in installed_backends().items()}


def known_backends(extra: Iterable[str] = ()) -> list[str]:
    """Backend names a file may use: those installed here (their plugins registered them) and ``extra``."""
    return sorted(set(_prefixes()) | set(extra))


def prefix_of(backend: str) -> str:
    """The device-id prefix of ``backend`` (``quantum`` -> ``qpu``), as its plugin declares it."""
    return _prefixes().get(backend, backend)


def backend_of(name: str) -> str:
    """The backend a name in a file means: a backend name, or a device-id prefix (``qpu`` -> ``quantum``)."""
    aliases = {prefix: backend for backend, prefix in _prefixes().items() if prefix != backend}
    return aliases.get(name, name)


def _read_regular(path: Path, shown: str, max_bytes: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes`` bytes.

    Opened non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO, a device such
    as ``/dev/zero`` or a directory is refused without reading (and without blocking); at most
    ``max_bytes + 1`` bytes are read even if the file grows meanwhile. Raises ``OSError`` or
    ``ValueError`` (a NUL in the name) for the caller to locate, and ``_NotRegular`` otherwise.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise _NotRegular(f"'{shown}' is {kind}; a topology file must be a regular file")
        if st.st_size > max_bytes:
            raise _NotRegular(f"'{shown}' is {st.st_size} bytes; the limit is {max_bytes}"
                              f" (set {ENV_PREFIX}MAX_FILE_BYTES to raise it)")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _NotRegular(Exception):
    """A file that exists but may not be read as a topology (its message is the reason)."""


def read_file_doc(path: Path, *, shown: str, at: tuple[Doc, Path_] | None = None,
                  limits: TopologyLimits | None = None) -> Doc:
    """Read and parse one topology file; an unreadable file is an error at ``at`` (the include)."""
    lim = limits or TopologyLimits.from_env()
    try:
        raw = _read_regular(path, shown, lim.max_file_bytes)
    except (OSError, ValueError, _NotRegular) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        msg = str(exc) if isinstance(exc, _NotRegular) else f"cannot read '{shown}': {reason}"
        if at is not None:
            raise at[0].error(at[1], msg) from None
        raise TopologyError(msg, file=shown) from None
    return parse_yaml(raw, file=shown, base_dir=path.parent, max_bytes=lim.max_file_bytes)


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
    def __init__(self, extra_backends: Iterable[str], limits: TopologyLimits) -> None:
        self.backends = known_backends(extra_backends)
        self.limits = limits
        self.includes = 0
        self.n_devices = 0
        self.planned_links = 0
        self.docs: dict[Path, Doc] = {}
        self.nodes: list[Node] = []
        self.node_fields: dict[str, _Field] = {}
        self.locations: dict[str, str] = {}
        self.links: list[Link] = []
        self.link_at: dict[str, _Field] = {}
        self.defaults: dict[str, tuple[LinkDefault, _Field]] = {}

    # ------------------------------------------------------------------ files
    def _load(self, doc: Doc, path: Path_, target: str, stack: tuple[Path, ...]) -> tuple[Doc, Path]:
        lim = self.limits
        self.includes += 1
        if self.includes > lim.max_includes:
            raise doc.error(path, f"more than {lim.max_includes} include/from uses in one topology"
                                  f" (set {ENV_PREFIX}MAX_INCLUDES to raise the limit)")
        if len(stack) > lim.max_include_depth:
            raise doc.error(path, f"includes nested more than {lim.max_include_depth} files deep"
                                  f" (set {ENV_PREFIX}MAX_INCLUDE_DEPTH to raise the limit)")
        if not target or "\0" in target:
            raise doc.error(path, f"not a file name: {target!r}")
        try:
            resolved = (doc.base_dir / target).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
            raise doc.error(path, f"cannot resolve '{target}': {exc}") from None
        if resolved in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
            raise doc.error(path, f"include cycle: {chain}")
        if resolved not in self.docs:
            shown = os.path.relpath(resolved) if not os.path.isabs(target) else target
            sub = read_file_doc(resolved, shown=shown, at=(doc, path), limits=lim)
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
        if "devices" not in fields and "simulated" not in fields:
            raise f.error(f"node '{base}': declares no devices (add 'devices:' or 'from:')")
        # Budgets before expanding: replicas multiply the node's devices.
        copies = 1 if replicas is None else int(replicas)
        lim = self.limits
        if len(self.nodes) + copies > lim.max_nodes:
            raise f.error(f"node '{base}': {copies} replica(s) bring the topology to {len(self.nodes) + copies} nodes;"
                          f" the limit is {lim.max_nodes} (set {ENV_PREFIX}MAX_NODES to raise it)",
                          "replicas" if replicas is not None else ())
        per_node = sum(_declared_count(fields[key].value) for key in ("devices", "simulated") if key in fields)
        if self.n_devices + per_node * copies > lim.max_devices:
            raise f.error(f"node '{base}': {copies} x {per_node} device(s) bring the topology to"
                          f" {self.n_devices + per_node * copies} devices; the limit is {lim.max_devices}"
                          f" (set {ENV_PREFIX}MAX_DEVICES to raise it)", "replicas" if replicas is not None else ())
        self.n_devices += per_node * copies
        if replicas is None:
            names = [base]
        else:
            width = len(str(replicas - 1))
            names = [f"{base}{k:0{width}d}" for k in range(replicas)]
        for k, name in enumerate(names):
            if name in self.node_fields:
                first = self.node_fields[name]
                raise f.error(f"duplicate node name '{name}' (first declared at {first.doc.loc_text(first.path)})",
                              "name")
            self.node_fields[name] = f
            self.nodes.append(self._node(name, fields))
            if k == 0 and "links" in fields:
                # The node's own links repeat in every replica: count them all before making any.
                per_node = _node_link_count(self.nodes[-1], fields["links"].value)
                self.planned_links += per_node * copies
                if self.planned_links > lim.max_links:
                    raise fields["links"].error(
                        f"node '{base}': {copies} x {per_node} link(s) bring the topology to {self.planned_links}"
                        f" links; the limit is {lim.max_links} (set {ENV_PREFIX}MAX_LINKS to raise it)")

    def _backend(self, f: _Field, name: str, sub: Path_) -> str:
        name = backend_of(name)
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
        if len(pattern) > 256:
            raise f.error(f"link '{label}': mesh pattern of {len(pattern)} characters; at most 256", "mesh")
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
            pairs_total = len(ends) * (len(ends) - 1) // 2
            if len(self.links) + pairs_total > self.limits.max_links:
                raise f.error(f"link '{label}': a mesh of {len(ends)} endpoints adds {pairs_total} links, bringing the"
                              f" topology to {len(self.links) + pairs_total}; the limit is {self.limits.max_links}"
                              f" (set {ENV_PREFIX}MAX_LINKS to raise it)", "mesh")
            short = [e if node is None else (e.split("/", 1)[1] if "/" in e else "host") for e in ends]
            for i in range(len(ends)):
                for j in range(i + 1, len(ends)):
                    pairs.append((f"{prefix}{label}[{short[i]}~{short[j]}]", ends[i], ends[j]))
        if len(self.links) + len(pairs) > self.limits.max_links:
            raise f.error(f"link '{label}': more than {self.limits.max_links} links"
                          f" (set {ENV_PREFIX}MAX_LINKS to raise the limit)")
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


def _node_link_count(node: Node, specs: Any) -> int:
    """Links a node's ``links:`` list makes (a mesh of k endpoints makes k(k-1)/2), without making them."""
    total = 0
    for spec in specs:
        if not isinstance(spec, dict):
            continue
        mesh = spec.get("mesh")
        if isinstance(mesh, list):
            k = len(mesh)
        elif isinstance(mesh, str) and len(mesh) <= 256:
            k = sum(1 for d in node.devices if d.index is not None and fnmatch.fnmatchcase(d.id, mesh))
        else:
            k = 2
        total += k * (k - 1) // 2
    return total


def _declared_count(items: Any) -> int:
    """Devices a ``devices:``/``simulated:`` list declares (``count`` each; a selector counts one)."""
    total = 0
    for item in items:
        total += int(item.get("count", 1)) if isinstance(item, dict) and "select" not in item else 1
    return total


def _few(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def build_topology(doc: Doc, *, name: str | None = None, stack: tuple[Path, ...] = (),
                   extra_backends: Iterable[str] = (), limits: TopologyLimits | None = None) -> Topology:
    """Validate ``doc`` against the schema, then build the :class:`Topology` it describes.

    ``limits`` bounds nodes, devices, links and includes (default: :meth:`TopologyLimits.from_env`).
    """
    validate_doc(doc)
    return _Builder(extra_backends, limits or TopologyLimits.from_env()).build(doc, stack, name)
