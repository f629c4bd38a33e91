"""YAML device topologies: nodes, devices, links and simulated devices, validated and immutable.

A topology file (schema: ``specs/schema.json``) declares nodes with their devices, the links
between devices or nodes, simulated devices with their model parameters, and defaults for links
that are not declared. The smallest useful file::

    nodes:
      - devices: [cpu]

:func:`load_topology` reads a path, YAML text, a mapping or a :class:`Topology`; every problem is a
:class:`~dsrt.errors.TopologyError` whose message starts with ``file:line:column``. Loading is safe
(no tags that build objects) and bounded (aliases may not expand past a limit).

:func:`bind_runtime` matches a topology to what a :class:`~dsrt.runtime.Runtime` discovered: it
creates the declared simulated devices, reports declared devices that are absent (``strict: true``
makes that an error), and returns the topology as bound (selectors expanded, undeclared local devices
added). Units: sizes in bytes, bandwidths in bytes/s, latencies and times in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TopologyError
from .bind import Binding, bind_runtime, describe_binding
from .build import build_topology, known_backends
from .limits import TopologyLimits
from .model import DeviceDecl, Link, LinkDefault, Nics, Node, Topology
from .schema import SCHEMA, schema_json
from .yaml import doc_from_mapping, parse_yaml

__all__ = [
    "Topology",
    "Node",
    "DeviceDecl",
    "Link",
    "LinkDefault",
    "Nics",
    "Binding",
    "TopologyLimits",
    "load_topology",
    "bind_runtime",
    "describe_binding",
    "known_backends",
    "SCHEMA",
    "schema_json",
]


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and len(text) < 4096 and (
        text.endswith((".yaml", ".yml", ".json")) or os.path.sep in text or Path(text).is_file())


def load_topology(source: Any, *, name: str | None = None, known: Iterable[str] = (),
                  limits: TopologyLimits | None = None) -> Topology:
    """Load and validate a topology.

    ``source``: a path (``str``/``PathLike`` to an existing file), YAML text, a mapping, or a
    :class:`Topology` (returned as is). ``name`` overrides the topology's name. ``known`` adds
    backend names to the built-in and installed ones. ``limits`` bounds what the file may expand to
    (nodes, devices, links, includes, bytes; default :meth:`TopologyLimits.from_env`, see
    :mod:`dsrt.topology.limits`). Raises :class:`TopologyError` for every problem, before the work.
    """
    if isinstance(source, Topology):
        return source
    lim = limits or TopologyLimits.from_env()
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        if not path.exists():
            raise TopologyError(f"no such topology file '{path}'", file=str(path))
        from .build import read_file_doc

        doc = read_file_doc(path, shown=str(path), limits=lim)
        return build_topology(doc, name=name, stack=(path.resolve(),), extra_backends=known, limits=lim)
    if isinstance(source, (str, bytes)):
        doc = parse_yaml(source, file=name or "<string>", max_bytes=lim.max_file_bytes)
        return build_topology(doc, name=name, extra_backends=known, limits=lim)
    if isinstance(source, Mapping):
        doc = doc_from_mapping(source, file=name or "<mapping>")
        return build_topology(doc, name=name, extra_backends=known, limits=lim)
    raise TopologyError(f"cannot load a topology from {type(source).__name__}; give a path, YAML text or a mapping")
