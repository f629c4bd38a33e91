"""Segments and blocks behind :class:`dsrt.memory.CachingPool`.

A *segment* is one raw allocation from the device (through the pool's
:class:`~dsrt.memory.allocator.Allocator`); it is carved into *blocks* that form a doubly linked
list in address order, so a freed block can merge with free neighbours (coalescing) in O(1). Free
blocks are indexed by :class:`dsrt.memory.fit.FreeIndex`. All sizes and offsets are in bytes.

Not thread-safe on its own: the pool calls everything here under its lock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Block", "Segment"]


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
    ``host_view`` caches the last host view made of the block's bytes (see
    :func:`dsrt.memory.hostmem.host_view`); it is checked against the block's place on every use.
    """

    __slots__ = ("alloc_ref", "born", "free", "host_view", "next", "offset", "pending", "prev", "requested",
                 "segment", "size")

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
        self.host_view: tuple[Any, ...] | None = None

    def usable_on(self, stream: Any) -> bool:
        """True if ``stream`` may use the bytes now: every pending event is on ``stream`` or done."""
        pending = self.pending
        if pending is None:
            return True
        left = [ev for ev in pending if not ev.query()]
        self.pending = left or None
        return all(ev.stream is stream for ev in left)
