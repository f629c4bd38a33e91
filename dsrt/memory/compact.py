"""Compaction for a :class:`~dsrt.memory.CachingPool`: move a few live blocks to open a free one.

When a small request fits no free block although enough bytes are free, the pool may ask
:meth:`Compactor.compact` for a hole instead of reserving a segment (see the pool's ``_miss`` for
when). Each moved allocation gets its bytes copied device-side (through the pool's allocator, or
staged through host memory when the allocator cannot copy device to device), its ``handle``/
``offset`` pointed at the new place and its ``generation`` bumped, so views are rebuilt. It never
moves an allocation that is exported, pinned (``pool.pinned``) or listed in
:data:`~dsrt.memory.IN_USE`. Every method runs with the pool lock held, on the allocating thread.
Sizes and offsets are in bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .blocks import Block, Segment
from .fit import FreeIndex, carve_tail
from .in_use import busy_ids

if TYPE_CHECKING:
    from ..device import Stream
    from .pool import CachingPool

__all__ = ["Compactor", "COMPACT_SPAN", "COMPACT_SHIFT"]

#: Compaction looks for its window in the segments holding the largest free blocks, at most this many,
_COMPACT_SEGMENTS = 4
#: tries to open this many bytes (at most 1/2**COMPACT_SHIFT of reserved; at least the request) so
#: the next misses find room without moving, else just the request,
COMPACT_SPAN = 256 << 10
COMPACT_SHIFT = 5
#: and tries at most this many windows, and this many nested ones (for moved blocks that fit no hole).
_COMPACT_ATTEMPTS = 3
_COMPACT_NESTED = 8


class Compactor:
    """The compaction moves of one pool (which owns this object)."""

    def __init__(self, pool: CachingPool) -> None:
        self.pool = pool
        self._nested_left = 0  # nested windows the running compaction may still open

    def compact(self, size: int, stream: Stream, index: FreeIndex, avoid: Segment | None = None) -> Block | None:
        """Open a free block of at least ``size`` bytes in the small pool by moving live blocks. Locked.

        Looks in the few segments that hold the largest free blocks for the *window* (a run of
        adjacent blocks, free ones and live ones that may move) spanning :data:`COMPACT_SPAN` bytes
        (at most 1/32 of reserved, or ``size`` if larger; just ``size`` if no such window exists)
        with the smallest share of live bytes; each live block in it moves to the best free block
        outside it, and the window becomes one free block, returned not in the index. Returns None
        when no window can be cleared. A moved block that fits no free block opens its own window
        (``avoid`` is then the segment of the outer window), not nested further, and at most
        :data:`_COMPACT_NESTED` times per compaction.
        """
        pool = self.pool
        if avoid is None:
            self._nested_left = _COMPACT_NESTED
            if not pool._sync:
                pool.allocator.synchronize()  # a move must not overtake kernels still queued on the bytes
        fits = index.largest_bound()  # a live block larger than every free block has nowhere to go...
        if avoid is None:
            fits = max(fits, size)  # ... unless a nested window opens one
        segments: dict[int, Segment] = {}
        top = index.nonempty.rfind(1)
        while top >= 0 and len(segments) < _COMPACT_SEGMENTS:
            for blk in index.bins[top]:
                seg = blk.segment
                if seg is not avoid and seg.size >= size:
                    segments[id(seg)] = seg
            top = index.nonempty.rfind(1, 0, top)
        # Open more than asked (unless nested), so the next few misses find room without moving:
        # up to COMPACT_SPAN bytes, or the whole segment if smaller. Windows compare by the share
        # of their span that must move.
        wide = size if avoid is not None else min(COMPACT_SPAN, pool.counters.reserved >> COMPACT_SHIFT)
        barriers: set[int] = set()  # ids of live blocks found immovable
        busy: set[int] | None = None
        crowded = False  # a wide window's blocks found no room: a narrower one would not pay
        for span in ((wide, size) if wide > size else (size,)):  # wide first, else just what was asked
            if crowded:
                break
            places = dict(segments)
            for _attempt in range(_COMPACT_ATTEMPTS):
                best: tuple[float, Block, Block] | None = None
                for seg in places.values():
                    want = max(size, min(span, seg.size))
                    if seg.size < want:
                        continue
                    cap = seg.size if best is None else int(want * best[0])  # later: only windows that beat the best
                    found = self._window(seg, want, barriers, fits, cap)
                    if found is not None and (best is None or found[0] < best[0] * want):
                        best = (found[0] / want, found[1], found[2])
                        if found[0] == 0:
                            break
                if best is None:
                    break
                _share, first, last = best
                movers: list[Block] = []
                blk = first
                while True:
                    if not blk.free:
                        movers.append(blk)
                    if blk is last:
                        break
                    assert blk.next is not None
                    blk = blk.next
                if busy is None:
                    busy = busy_ids()
                stuck = [m for m in movers if not self._movable(m, busy)]
                if stuck:  # exported, pinned or in use: search again around them
                    barriers.update(id(m) for m in stuck)
                    continue
                opened = self._clear_window(first, last, movers, stream, index, nested=avoid is not None)
                if opened is not None:
                    pool.counters.compactions += 1
                    return opened
                # A block found no room outside the window (its only fit was inside): try elsewhere.
                del places[id(first.segment)]
                crowded = True
        return None

    def _clear_window(self, first: Block, last: Block, movers: list[Block], stream: Stream,
                      index: FreeIndex, nested: bool) -> Block | None:
        """Move ``movers`` out of the run ``first``..``last`` and merge the run into one free block,
        returned not in the index; None (the run's free blocks back in the index) if one found no
        room. Locked."""
        while first.prev is not None and first.prev.free:  # free neighbours join, so runs stay merged
            first = first.prev
        while last.next is not None and last.next.free:
            last = last.next
        stop = last.next
        blk: Block | None = first
        while blk is not stop:  # the window's free blocks are not destinations
            assert blk is not None
            if blk.free:
                index.remove(blk)
                blk.pending = None
            blk = blk.next
        for mover in sorted(movers, key=lambda b: -b.size):
            if not self._move(mover, stream, index, nested):
                self._settle_window(first, last, index)
                return None
        first.size = last.offset + last.size - first.offset
        first.next = stop
        if stop is not None:
            stop.prev = first
        first.free = True
        first.pending = None
        return first

    def _window(self, seg: Segment, size: int, barriers: set[int], fits: int, budget: int
                ) -> tuple[int, Block, Block] | None:
        """In ``seg``, the run of adjacent blocks spanning at least ``size`` bytes that moves the
        fewest live bytes (at most ``budget``), as (bytes to move, first, last), or None. Live blocks
        over ``fits`` bytes, in the quick cache or in ``barriers`` (ids found immovable) split the
        search; two pointers keep it one pass over the segment. Locked."""
        best: tuple[int, Block, Block] | None = None
        first: Block | None = seg.head
        span = moved = 0
        blk: Block | None = seg.head
        while blk is not None:
            bsize = blk.size
            if not blk.free:
                if bsize > fits or blk.requested < 0 or id(blk) in barriers:
                    first = blk.next
                    span = moved = 0
                    blk = first
                    continue
                moved += bsize
            span += bsize
            assert first is not None
            while span - first.size >= size:  # drop blocks from the left while the rest still spans size
                span -= first.size
                if not first.free:
                    moved -= first.size
                first = first.next
                assert first is not None
            if span >= size and moved <= budget and (best is None or moved < best[0]):
                best = (moved, first, blk)
                if moved == 0:
                    break
            blk = blk.next
        return best

    def _movable(self, blk: Block, busy: set[int]) -> bool:
        """True if ``blk`` is live and its allocation may move: not in the quick cache, exported,
        pinned, in use by a launch, or being freed. Locked."""
        pool = self.pool
        if blk.requested < 0 or blk.alloc_ref is None:
            return False
        a = blk.alloc_ref()
        return (a is not None and a.pool is pool and a.pool_data is blk and not a.exported
                and id(a) not in pool._pins and id(a) not in busy)

    def _move(self, blk: Block, stream: Stream, index: FreeIndex, nested: bool) -> bool:
        """Copy live ``blk`` into the best free block of the index (or, unless ``nested``, into a
        window opened for it elsewhere) and point its allocation there; ``blk`` is left free, out of
        the index. False if there is no room. Locked."""
        pool = self.pool
        c = pool.counters
        dest = index.find(blk.size, stream)
        if dest is None and not nested and self._nested_left:
            self._nested_left -= 1
            dest = self.compact(blk.size, stream, index, avoid=blk.segment)
        if dest is None:
            return False
        carve_tail(index, dest, blk.size)
        alloc = blk.alloc_ref() if blk.alloc_ref is not None else None
        assert alloc is not None  # checked movable just before, under the same lock
        handle = dest.segment.handle
        n = alloc.nbytes
        if n:
            on = alloc.stream or pool._default_stream
            allocator = pool.allocator
            if not allocator.transfer(handle, dest.offset, alloc.handle, alloc.offset, n, on):
                staged = np.empty(n, np.uint8)  # no device-side copy: through host memory
                allocator.copy_out(alloc.handle, alloc.offset, staged, on)
                allocator.copy_in(handle, dest.offset, staged, on)
            if not pool._sync:
                allocator.synchronize(on)
        dest.free = False
        dest.requested = blk.requested
        dest.born = blk.born
        dest.alloc_ref = blk.alloc_ref
        blk.alloc_ref = None
        blk.requested = 0
        blk.free = True
        alloc.handle, alloc.offset, alloc.pool_data = handle, dest.offset, dest
        alloc.generation += 1
        c.moves += 1
        c.moved_bytes += blk.size
        return True

    def _settle_window(self, first: Block, last: Block, index: FreeIndex) -> None:
        """Give a window's free blocks back to the index, merging runs of them. Locked."""
        blk: Block | None = first
        stop = last.next
        while blk is not None and blk is not stop:
            nxt = blk.next
            if blk.free:
                while nxt is not None and nxt is not stop and nxt.free:
                    blk.size += nxt.size
                    blk.next = nxt.next
                    if nxt.next is not None:
                        nxt.next.prev = blk
                    nxt = blk.next
                index.insert(blk)
            blk = nxt
