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

from .bind import Binding, bind_runtime, describe_binding
from .build import known_backends
from .limits import TopologyLimits
from .load import load_topology
from .model import DeviceDecl, Link, LinkDefault, Nics, Node, Topology
from .schema import SCHEMA, schema_json

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
