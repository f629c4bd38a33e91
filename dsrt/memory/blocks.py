"""Segments, blocks and the O(1) free-block index behind :class:`dsrt.memory.CachingPool`.

A *segment* is one raw allocation from the device (``Device._allocate``); it is carved into
*blocks* that form a doubly linked list in address order, so a freed block can merge with free
neighbours (coalescing) in O(1). All sizes and offsets are in bytes.

Free blocks are indexed by a two-level segregated fit (first level: the power of two below the
size; second level: :data:`SUBDIVISIONS` equal slices of it). One Python integer is the bitmap of
non-empty bins, so finding the smallest bin that can hold a request is a shift and a
lowest-set-bit, whatever the number of blocks: the cost of an allocation does not grow with the
number of live or free blocks.

Not thread-safe on its own: the pool calls everything here under its lock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Block", "Segment", "FreeIndex", "SUBDIVISIONS"]

#: Second-level bins per power of two (a power of two). 16 slices keep the gap between a request
#: and the lower bound of the first bin searched under 1/16 of the request.
SUBDIVISIONS = 16
_SL_SHIFT = 4  # log2(SUBDIVISIONS)
#: How many blocks of the request's own bin are inspected before the search moves up a bin.
_OWN_BIN_PROBES = 8


def bin_of(size: int) -> int:
    """The bin holding free blocks of ``size`` bytes (``size`` >= :data:`SUBDIVISIONS`)."""
    fl = size.bit_length() - 1
    return (fl << _SL_SHIFT) | ((size >> (fl - _SL_SHIFT)) & (SUBDIVISIONS - 1))


class Segment:
    """One raw device allocation of ``size`` bytes; ``handle`` is what ``_allocate`` returned.

    ``large`` says which pool (small or large blocks) it serves; ``head`` is its first block;
    ``serial`` orders segments by creation for snapshots.
    """

    __slots__ = ("freed_at", "handle", "head", "large", "serial", "size")

    def __init__(self, handle: Any, size: int, large: bool, serial: int) -> None:
        self.handle = handle
        self.size = size
        self.large = large
        self.serial = serial
        self.freed_at = 0
        self.head = Block(self, 0, size)

    def is_idle(self) -> bool:
        """True when the whole segment is one free block."""
        head = self.head
        return head.free and head.next is None


class Block:
    """``size`` bytes at byte ``offset`` inside ``segment``.

    ``free`` blocks sit in a :class:`FreeIndex`; ``pending`` lists the events (one per freeing
    stream) that must complete before another stream may reuse the bytes (``None``: nothing
    pending). A live block's ``alloc_ref`` is a weak reference to its :class:`Allocation`,
    ``requested`` the bytes the user asked for and ``born`` the pool's allocation count when it
    went live (its age decides whether a freed block is a temporary worth keeping whole).
    """

    __slots__ = ("alloc_ref", "born", "free", "next", "offset", "pending", "prev", "requested", "segment", "size")

    def __init__(self, segment: Segment, offset: int, size: int) -> None:
        self.segment = segment
        self.offset = offset
        self.size = size
        self.prev: Block | None = None
        self.next: Block | None = None
        self.free = True
        self.pending: list[Any] | None = None
        self.alloc_ref: Any = None
        self.requested = 0
        self.born = 0  # the pool's allocation count when it last went live

    def usable_on(self, stream: Any) -> bool:
        """True if ``stream`` may use the bytes now: every pending event is on ``stream`` or done."""
        pending = self.pending
        if pending is None:
            return True
        left = [ev for ev in pending if not ev.query()]
        self.pending = left or None
        return all(ev.stream is stream for ev in left)


class FreeIndex:
    """The free blocks of one pool (small or large), binned for O(1) good-fit search."""

    __slots__ = ("bins", "bitmap", "count", "free_bytes")

    def __init__(self) -> None:
        self.bins: dict[int, dict[Block, None]] = {}
        self.bitmap = 0
        self.free_bytes = 0
        self.count = 0

    def insert(self, block: Block) -> None:
        b = bin_of(block.size)
        bucket = self.bins.get(b)
        if bucket is None:
            bucket = self.bins[b] = {}
            self.bitmap |= 1 << b
        bucket[block] = None
        self.free_bytes += block.size
        self.count += 1

    def resized(self, block: Block, old_size: int) -> None:
        """``block`` (in the index) changed from ``old_size`` to ``block.size`` bytes: re-bin it."""
        b_old, b_new = bin_of(old_size), bin_of(block.size)
        if b_old != b_new:
            bucket = self.bins[b_old]
            del bucket[block]
            if not bucket:
                del self.bins[b_old]
                self.bitmap &= ~(1 << b_old)
            target = self.bins.get(b_new)
            if target is None:
                target = self.bins[b_new] = {}
                self.bitmap |= 1 << b_new
            target[block] = None
        self.free_bytes += block.size - old_size

    def remove(self, block: Block) -> None:
        b = bin_of(block.size)
        bucket = self.bins[b]
        del bucket[block]
        if not bucket:
            del self.bins[b]
            self.bitmap &= ~(1 << b)
        self.free_bytes -= block.size
        self.count -= 1

    def find(self, size: int, stream: Any) -> Block | None:
        """Remove and return a free block of at least ``size`` bytes usable on ``stream``, or None.

        Looks at a few blocks of the request's own bin first (an exact or near fit), then takes
        the first usable block of the next non-empty bins, smallest first.
        """
        b = bin_of(size)
        bins = self.bins
        bucket = bins.get(b)
        if bucket is not None:
            probes = 0
            for blk in bucket:
                if blk.size >= size and (blk.pending is None or blk.usable_on(stream)):
                    self.remove(blk)
                    return blk
                probes += 1
                if probes >= _OWN_BIN_PROBES:
                    break
        mask = self.bitmap >> (b + 1)
        base = b + 1
        while mask:
            low = mask & -mask
            shift = low.bit_length() - 1
            nb = base + shift
            for blk in bins[nb]:
                if blk.pending is None or blk.usable_on(stream):
                    self.remove(blk)
                    return blk
            mask >>= shift + 1
            base = nb + 1
        return None

    def largest(self) -> int:
        """Bytes in the largest free block (0 if none)."""
        if not self.bitmap:
            return 0
        top = self.bitmap.bit_length() - 1
        return max(blk.size for blk in self.bins[top])

    def largest_bound(self) -> int:
        """A lower bound of the largest free block in bytes, in O(1): the smallest size its bin holds."""
        if not self.bitmap:
            return 0
        b = self.bitmap.bit_length() - 1
        fl, sl = b >> _SL_SHIFT, b & (SUBDIVISIONS - 1)
        return (1 << fl) + (sl << (fl - _SL_SHIFT))

    def blocks(self) -> list[Block]:
        """Every free block (for trimming and snapshots)."""
        return [blk for bucket in self.bins.values() for blk in bucket]
