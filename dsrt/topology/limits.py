"""Budgets a topology must fit, checked before the work they bound (private to :mod:`dsrt.topology`).

A topology file is small, but ``replicas``, ``count`` and ``mesh`` multiply: four lines can declare
millions of nodes or links. The builder computes what a declaration expands to *before* expanding
it and refuses, at the declaring line, a topology that would pass one of these budgets:

=====================  ==========  =====================================  ==================================
budget                 default     environment variable                   what it bounds
=====================  ==========  =====================================  ==================================
``max_nodes``          10,000      ``DSRT_TOPOLOGY_MAX_NODES``            nodes after ``replicas``
``max_devices``        100,000     ``DSRT_TOPOLOGY_MAX_DEVICES``          devices after ``count`` x replicas
``max_links``          1,000,000   ``DSRT_TOPOLOGY_MAX_LINKS``            links after meshes x replicas
``max_include_depth``  16          ``DSRT_TOPOLOGY_MAX_INCLUDE_DEPTH``    nested ``include``/``from`` files
``max_includes``       256         ``DSRT_TOPOLOGY_MAX_INCLUDES``         ``include``/``from`` uses in total
``max_file_bytes``     4 MiB       ``DSRT_TOPOLOGY_MAX_FILE_BYTES``       one file's size, in bytes
=====================  ==========  =====================================  ==================================

Pass ``limits=TopologyLimits(...)`` to :func:`dsrt.topology.load_topology` to set them per call;
otherwise :meth:`TopologyLimits.from_env` reads the environment (unset variables keep the default).
Includes must name regular files (not devices such as ``/dev/zero``, FIFOs or directories).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ..errors import ConfigurationError

__all__ = ["TopologyLimits", "ENV_PREFIX"]

ENV_PREFIX = "DSRT_TOPOLOGY_"


@dataclass(frozen=True)
class TopologyLimits:
    """Budgets of one load; every field is a positive integer (sizes in bytes)."""

    max_nodes: int = 10_000
    max_devices: int = 100_000
    max_links: int = 1_000_000
    max_include_depth: int = 16
    max_includes: int = 256
    max_file_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"topology limit {f.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls) -> TopologyLimits:
        """The defaults, each replaced by ``DSRT_TOPOLOGY_<NAME>`` (e.g. ``DSRT_TOPOLOGY_MAX_NODES``) when set."""
        values: dict[str, int] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            text = os.environ.get(var)
            if text is None or not text.strip():
                continue
            try:
                values[f.name] = int(text.strip().replace("_", ""))
            except ValueError:
                raise ConfigurationError(f"{var}='{text}' is not an integer") from None
        return cls(**values)
