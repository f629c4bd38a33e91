"""Device memory: the allocation handle every Array holds, and the pool that hands them out.

Ownership: a :class:`MemoryPool` belongs to one device and owns every raw allocation it made through
the device's :class:`~dsrt.memory.allocator.Allocator` (``device.allocator``). It hands out :class:`Allocation` objects; an
Allocation goes back to its pool when the last Python reference to it dies (or on
:meth:`Allocation.release`), never to the user. All sizes are in bytes.

This module holds the contract and :func:`create_pool`, which gives
every device a :class:`CachingPool` (caching, splitting/coalescing, stream-aware, compacting,
spilling to host tiers; see ``dsrt/memory/pool.py``).

The pool may move an allocation's bytes (compaction, spilling) at any time, from any thread that
allocates; ``generation`` then changes and cached views are rebuilt. Code that reads a raw
``handle``/``offset`` (a copy, a launch, a collective) must first keep the allocation from moving:
list it in :data:`IN_USE` and then settle it with :meth:`MemoryPool.hold` (:func:`in_use` does
both), and read the handle only after that. Exporting (DLPack, the CUDA array interface, torch)
pins it for good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ALIGNMENT, Allocation, MemoryPool
from .base import _use_clock as _use_clock  # the collectives' prepared calls stamp last use with it
from .in_use import IN_USE, busy_ids, in_use
from .pool import CachingPool

if TYPE_CHECKING:
    from ..device import Device

__all__ = ["Allocation", "MemoryPool", "CachingPool", "ALIGNMENT", "IN_USE", "busy_ids", "create_pool", "in_use"]



def create_pool(device: Device) -> MemoryPool:
    """The pool a device gets on first use: a :class:`CachingPool`."""
    return CachingPool(device)
