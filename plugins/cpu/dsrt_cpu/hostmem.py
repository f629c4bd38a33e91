"""Moved to :mod:`dsrt.memory.hostmem` (the core). Kept as a re-export only for code outside the
plugins that still imports it from here (some tests); plugins import ``dsrt.memory.hostmem``."""

from __future__ import annotations

from dsrt.memory.hostmem import HostMemory, host_view

__all__ = ["HostMemory", "host_view"]
