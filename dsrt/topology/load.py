"""Loading a topology from a path, YAML text, a mapping or a ``Topology`` (re-exported by the package)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TopologyError
from .build import build_topology, read_file_doc
from .limits import TopologyLimits
from .model import Topology
from .yaml import doc_from_mapping, parse_yaml

__all__ = ["load_topology"]


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
        doc = read_file_doc(path, shown=str(path), limits=lim)
        return build_topology(doc, name=name, stack=(path.resolve(),), extra_backends=known, limits=lim)
    if isinstance(source, (str, bytes)):
        doc = parse_yaml(source, file=name or "<string>", max_bytes=lim.max_file_bytes)
        return build_topology(doc, name=name, extra_backends=known, limits=lim)
    if isinstance(source, Mapping):
        doc = doc_from_mapping(source, file=name or "<mapping>")
        return build_topology(doc, name=name, extra_backends=known, limits=lim)
    raise TopologyError(f"cannot load a topology from {type(source).__name__}; give a path, YAML text or a mapping")
