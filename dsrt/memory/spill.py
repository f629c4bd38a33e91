"""Spilling a :class:`~dsrt.memory.CachingPool`'s live allocations to host tiers and fetching them back.

A spilled allocation's bytes live in a :class:`~dsrt.memory.tiers.SpillRecord` (pinned host memory
where the allocator offers it, else ordinary host memory); its ``handle`` is ``None`` and its
``generation`` changes, and it comes back on :meth:`~dsrt.memory.Allocation.touch` or the pool's
``hold``. Never spilled: exported allocations, those pinned with ``pool.pinned`` and those listed in
:data:`~dsrt.memory.IN_USE`. Every method runs with the pool lock held, on the thread that
allocates or fetches. Sizes are in bytes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .blocks import Block
from .fit import carve_tail
from .in_use import busy_ids
from .tiers import SpillRecord

if TYPE_CHECKING:
    from .base import Allocation
    from .pool import CachingPool

__all__ = ["Spiller"]


class Spiller:
    """The spill and fetch moves of one pool (which owns this object and its host buffers)."""

    def __init__(self, pool: CachingPool) -> None:
        self.pool = pool

    def candidates(self, exclude: Allocation | None) -> Iterator[Allocation]:
        """Live, device-resident allocations that may be spilled, least recently used first. Locked."""
        pool = self.pool
        found: list[tuple[int, Allocation]] = []
        busy = busy_ids()
        pins = pool._pins
        for seg in pool._segments.values():
            blk: Block | None = seg.head
            while blk is not None:
                if not blk.free and blk.alloc_ref is not None:
                    a = blk.alloc_ref()
                    if (a is not None and a is not exclude and a.pool is pool and a.pool_data is blk
                            and not a.exported and id(a) not in pins and id(a) not in busy):
                        found.append((a.last_use, a))
                blk = blk.next
        found.sort(key=lambda t: t[0])
        for _use, a in found:
            if type(a.pool_data) is Block:  # still resident (a finaliser may have run meanwhile)
                yield a

    def spill(self, alloc: Allocation) -> int:
        """Copy ``alloc`` to the nearest host tier and free its device block. Returns bytes. Locked."""
        pool = self.pool
        block: Block = alloc.pool_data
        stream = alloc.stream or pool._default_stream
        rec = pool._tiers.take(block.size)
        if alloc.nbytes:
            pool.allocator.copy_out(alloc.handle, alloc.offset, rec.buffer[: alloc.nbytes], stream)
            pool.allocator.synchronize(stream)
        alloc.handle = None
        alloc.pool_data = rec
        alloc.generation += 1
        c = pool.counters
        c.allocated -= block.size
        c.requested -= block.requested
        block.alloc_ref = None
        pool._release_block(block)
        c.spills += 1
        c.spilled_bytes_total += block.size
        c.spilled_live += block.size
        return block.size

    def fetch(self, alloc: Allocation) -> None:
        """Bring ``alloc`` back onto the device if it is spilled (may spill others, never ``alloc``). Locked."""
        rec = alloc.pool_data
        if alloc.handle is not None or type(rec) is not SpillRecord:
            return
        pool = self.pool
        n = alloc.nbytes
        stream = alloc.stream or pool._default_stream
        index = pool._index_for(n)
        block = index.find(rec.size, stream)
        if block is None:
            block = pool._miss(n, rec.size, stream, index, alloc)
        carve_tail(index, block, rec.size)
        pool._count(block, n)
        handle = block.segment.handle
        if n:
            pool.allocator.copy_in(handle, block.offset, rec.buffer[:n], stream)
            pool.allocator.synchronize(stream)
        pool.counters.spilled_live -= rec.size
        pool._tiers.give_back(rec)
        alloc.handle, alloc.offset, alloc.pool_data = handle, block.offset, block
        alloc.generation += 1
        block.alloc_ref = weakref.ref(alloc)
        pool.counters.fetches += 1

    def free_spilled(self, rec: SpillRecord) -> None:
        """An allocation was freed while spilled: only its host copy goes. Locked."""
        self.pool.counters.spilled_live -= rec.size
        self.pool._tiers.give_back(rec)
