"""The free-block index of a :class:`~dsrt.memory.CachingPool` and its one fit rule.

Free blocks are indexed by a two-level segregated fit (first level: the power of two below the
size; second level: :data:`SUBDIVISIONS` equal slices of it). A ``bytearray`` of :data:`NBINS`
flags marks the non-empty bins, so finding the smallest bin that can hold a request is one
``find`` (a ``memchr`` over at most 1 KiB), whatever the number of blocks: the cost of an
allocation does not grow with the number of live or free blocks. (A bytearray rather than a
big-integer bitmap: the C allocation path of :mod:`dsrt.memory._fastpool` reads and writes the
same flags in place.) All sizes and offsets are in bytes.

The fit rule (:func:`fit`) is the only one: the allocation hot path (``fit(..., split=True)``) and
:meth:`FreeIndex.find` (fetching, compaction's moves, the slow path) run the same code, so they
pick the same block.

Not thread-safe on its own: the pool calls everything here under its lock.
"""

from __future__ import annotations

from typing import Any

from .blocks import Block

__all__ = ["FreeIndex", "MIN_SPLIT", "NBINS", "PROBES", "SPARE_BLOCKS", "SUBDIVISIONS", "bin_of", "carve_tail", "choose", "fit"]

#: Second-level bins per power of two (a power of two). 16 slices keep the gap between a request
#: and the lower bound of the first bin searched under 1/16 of the request.
SUBDIVISIONS = 16
_SL_SHIFT = 4  # log2(SUBDIVISIONS)
_SL_MASK = SUBDIVISIONS - 1
#: How many blocks of the request's own bin are compared before the best of them is taken.
PROBES = 8
#: Dead block objects (merged into a neighbour) kept per index for reuse by splits.
SPARE_BLOCKS = 64
#: A remainder smaller than this many bytes stays with the block instead of becoming a free block
#: (the pool's alignment: every block starts on a multiple of it).
MIN_SPLIT = 256
#: Bins in an index: every size below 2**64 bytes has one.
NBINS = 64 << _SL_SHIFT


def bin_of(size: int) -> int:
    """The bin holding free blocks of ``size`` bytes (``size`` >= :data:`SUBDIVISIONS`)."""
    fl = size.bit_length() - 1
    return (fl << _SL_SHIFT) | ((size >> (fl - _SL_SHIFT)) & _SL_MASK)


class FreeIndex:
    """The free blocks of one pool (small or large), binned for O(1) good-fit search.

    ``bins`` maps a bin number to its blocks (a dict used as an insertion-ordered set);
    ``nonempty[b]`` is 1 while bin ``b`` has a block, else 0; ``free_bytes`` and ``count`` are
    the bytes and blocks indexed. ``spare`` holds up to :data:`SPARE_BLOCKS` block objects that
    coalescing merged away (referenced by nothing else), which splits reuse instead of building new
    ones; the pool empties it when it returns segments, so it pins none.
    """

    __slots__ = ("bins", "count", "free_bytes", "nonempty", "spare")

    def __init__(self) -> None:
        self.bins: dict[int, dict[Block, None]] = {}
        self.nonempty = bytearray(NBINS)
        self.free_bytes = 0
        self.count = 0
        self.spare: list[Block] = []

    def recycle(self, block: Block) -> None:
        """Keep ``block``, just merged into a neighbour and referenced by nothing else, for reuse."""
        if len(self.spare) < SPARE_BLOCKS:
            block.host_view = None  # its segment may go; a cached view would keep the buffer alive
            self.spare.append(block)

    def insert(self, block: Block) -> None:
        b = bin_of(block.size)
        bucket = self.bins.get(b)
        if bucket is None:
            bucket = self.bins[b] = {}
            self.nonempty[b] = 1
        bucket[block] = None
        self.free_bytes += block.size
        self.count += 1

    def resized(self, block: Block, old_size: int) -> None:
        """``block`` (in the index) changed from ``old_size`` to ``block.size`` bytes: re-bin it."""
        b_old, b_new = bin_of(old_size), bin_of(block.size)
        if b_old != b_new:
            self._unbin(block, b_old)
            target = self.bins.get(b_new)
            if target is None:
                target = self.bins[b_new] = {}
                self.nonempty[b_new] = 1
            target[block] = None
        self.free_bytes += block.size - old_size

    def _unbin(self, block: Block, b: int) -> None:
        bucket = self.bins[b]
        del bucket[block]
        if not bucket:
            del self.bins[b]
            self.nonempty[b] = 0

    def remove(self, block: Block) -> None:
        self._unbin(block, bin_of(block.size))
        self.free_bytes -= block.size
        self.count -= 1

    def find(self, size: int, stream: Any) -> Block | None:
        """Remove and return the free block the fit rule (:func:`fit`) picks for ``size`` bytes on
        ``stream``, whole (not split, pending events kept), or None."""
        return fit(self, size, stream, False)

    def largest(self) -> int:
        """Bytes in the largest free block (0 if none)."""
        top = self.nonempty.rfind(1)
        if top < 0:
            return 0
        return max(blk.size for blk in self.bins[top])

    def largest_bound(self) -> int:
        """A lower bound of the largest free block in bytes, in O(1): the smallest size its bin holds."""
        b = self.nonempty.rfind(1)
        if b < 0:
            return 0
        fl, sl = b >> _SL_SHIFT, b & _SL_MASK
        return (1 << fl) + (sl << (fl - _SL_SHIFT))

    def blocks(self) -> list[Block]:
        """Every free block (for trimming and snapshots)."""
        return [blk for bucket in self.bins.values() for blk in bucket]


def choose(index: FreeIndex, size: int, stream: Any) -> Block | None:
    """The free block of ``index`` that :func:`fit` would take for ``size`` bytes on ``stream``, left
    in the index (None if none fits). For inspection and tests; takers call :func:`fit`."""
    return fit(index, size, stream, None)


def fit(index: FreeIndex, size: int, stream: Any, split: bool | None = True) -> Block | None:
    """THE fit rule: take the free block of ``index`` that serves ``size`` bytes on ``stream``; None
    if no indexed block fits.

    Which block:

    1. The request's own bin: of its first :data:`PROBES` blocks, the smallest that holds ``size``
       bytes and is usable on ``stream`` (an exact fit ends the search). Below 8 KiB a bin holds a
       single rounded size, so a fitting block there is an exact fit, found at the first probe.
    2. Else the non-empty bins above, smallest first: the first usable block of the first bin that
       has one. Every block there fits, and the blocks of one bin differ by less than 1/16 of their
       size, so searching further would buy little: this is the O(1) "good fit" of a two-level
       segregated fit allocator.

    The cost does not grow with the number of free blocks. A block is usable when nothing is
    pending on it or :meth:`Block.usable_on` says so.

    What is done with it: ``split=True`` (the allocation hot path) cuts ``size`` bytes off its front
    as a block (a recycled one from ``index.spare`` when there is one), returned out of the index
    with nothing pending, while the free remainder keeps its place in the index (re-binned only if
    its size crossed a bin boundary): no index update in the common case; a remainder under
    :data:`MIN_SPLIT` bytes stays with the block. ``split=False`` (:meth:`FreeIndex.find`) removes
    the whole block from the index. ``split=None`` (:func:`choose`) leaves it in place.
    """
    fl = size.bit_length() - 1
    b = (fl << _SL_SHIFT) | ((size >> (fl - _SL_SHIFT)) & _SL_MASK)
    bins = index.bins
    best: Block | None = None
    bucket = bins.get(b)
    if bucket is not None:
        best_size = 1 << 62
        probes = 0
        for cand in bucket:
            cs = cand.size
            if size <= cs < best_size and (cand.pending is None or cand.usable_on(stream)):
                best = cand
                best_size = cs
                if cs == size:
                    break
            probes += 1
            if probes == PROBES:
                break
    if best is None:
        find = index.nonempty.find
        b = find(1, b + 1)
        while b >= 0:
            bucket = bins[b]
            for cand in bucket:
                if cand.pending is None or cand.usable_on(stream):
                    best = cand
                    break
            if best is not None:
                break
            b = find(1, b + 1)
        else:
            return None
    assert best is not None and bucket is not None  # bucket: the bin ``b`` that holds ``best``
    if split is None:
        return best
    rest = best.size - size
    if split and rest >= MIN_SPLIT:
        spare = index.spare
        if spare:
            live = spare.pop()
            live.segment = best.segment
            live.offset = best.offset
            live.size = size
            live.pending = None
        else:
            live = Block(best.segment, best.offset, size)
        prev = live.prev = best.prev
        if prev is None:
            best.segment.head = live
        else:
            prev.next = live
        live.next = best
        best.prev = live
        best.offset += size
        best.size = rest
        index.free_bytes -= size
        fl = rest.bit_length() - 1
        rb = (fl << _SL_SHIFT) | ((rest >> (fl - _SL_SHIFT)) & _SL_MASK)
        if rb != b:
            del bucket[best]
            if not bucket:
                del bins[b]
                index.nonempty[b] = 0
            target = bins.get(rb)
            if target is None:
                target = bins[rb] = {}
                index.nonempty[rb] = 1
            target[best] = None
        return live
    del bucket[best]
    if not bucket:
        del bins[b]
        index.nonempty[b] = 0
    index.free_bytes -= best.size
    index.count -= 1
    if split:
        best.pending = None
    return best


def carve_tail(index: FreeIndex, block: Block, size: int) -> None:
    """Cut ``block`` (not in the index) down to ``size`` bytes, the remainder (if at least
    :data:`MIN_SPLIT` bytes) going back into the index as a free block that inherits the block's
    pending events. Clears the block's pending events."""
    rest = block.size - size
    if rest >= MIN_SPLIT:
        tail = Block(block.segment, block.offset + size, rest)
        nxt = tail.next = block.next
        if nxt is not None:
            nxt.prev = tail
        tail.prev = block
        block.next = tail
        tail.pending = block.pending
        block.size = size
        index.insert(tail)
    block.pending = None
