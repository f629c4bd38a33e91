"""The caching, tiered memory pool every device gets (see :class:`CachingPool`)."""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OutOfMemoryError, format_bytes
from . import ALIGNMENT, Allocation, MemoryPool, _use_clock
from .blocks import Block, FreeIndex, Segment
from .in_use import busy_ids
from .tiers import HostTiers, IdleReaper, SpillRecord

if TYPE_CHECKING:
    from ..device import Device, Stream

__all__ = ["CachingPool", "SMALL_MAX", "SMALL_SEGMENT", "LARGE_ROUND"]

#: Requests of at most this many bytes are *small*: rounded up to :data:`ALIGNMENT` and carved
#: out of segments of :data:`SMALL_SEGMENT_MIN` to :data:`SMALL_SEGMENT` bytes that only small
#: blocks use.
SMALL_MAX = 1 << 20
SMALL_SEGMENT = 2 << 20
SMALL_SEGMENT_MIN = 256 << 10
_SMALL_SEGMENT_SHIFT = 4  # a new small segment is 1/16 of the bytes reserved so far
#: Larger requests are rounded up to a multiple of this many bytes; a large segment is exactly the
#: rounded size of the request that created it, and splits when a smaller request reuses it.
LARGE_ROUND = 16 << 10
#: Freed short-lived blocks of at most this many bytes wait, uncoalesced, in a per-size LIFO (the
#: quick cache) for the next request of exactly their size, so the alloc-free-alloc pattern of
#: temporaries skips splitting and merging. Only the :data:`QUICK_BLOCKS` most recently freed
#: blocks wait (the oldest is merged back when another comes), never more than 1/32 of the reserved
#: bytes; all are merged back before the pool grows and before any trim, so they never cost a segment.
QUICK_MAX = 64 << 10
QUICK_BLOCKS = 8
#: Only temporaries are kept: blocks freed within this many allocations of their own.
QUICK_AGE = 16
#: Compaction looks for its window in the segments holding the largest free blocks, at most this many,
_COMPACT_SEGMENTS = 4
#: tries to open this many bytes (at most 1/2**COMPACT_SHIFT of reserved; at least the request) so
#: the next misses find room without moving, else just the request,
COMPACT_SPAN = 256 << 10
COMPACT_SHIFT = 5
#: and tries at most this many windows, and this many nested ones (for moved blocks that fit no hole).
_COMPACT_ATTEMPTS = 3
_COMPACT_NESTED = 8
_SMALL_MASK = ~(ALIGNMENT - 1)
_LARGE_MASK = ~(LARGE_ROUND - 1)


class CachingPool(MemoryPool):
    """A caching allocator over any device's ``_allocate``/``_free``, with spilling to host tiers.

    Size rule: a request of ``n`` bytes (``n`` <= 1 MiB) takes ``ceil(n / 256) * 256`` bytes from
    the small pool, whose segments are 1/16 of the bytes reserved so far, between 256 KiB and
    2 MiB (and never smaller than the request); a larger one takes ``ceil(n / 16 KiB) * 16 KiB``
    from the large pool, whose new segments are sized to the request. Free blocks are found by a
    bounded best fit over size bins (see ``blocks``); they split, and coalesce with free
    neighbours in the same segment; the two pools never share a segment, so small blocks cannot
    pin large ones.

    Streams: a block freed on stream S is reusable on S at once, and on another stream only once an
    event recorded on S at free time has completed. Devices that never override
    ``_query_event`` are synchronous and skip events entirely.

    Reserved memory follows use: on a cache miss (only then; hits never give memory back), idle
    segments are returned to the device, oldest first, until ``reserved`` plus the new segment is
    at most ``(1 + cache_slack) * (allocated + request)``. ``limit`` (bytes) is a hard cap. When a
    request does not fit, the pool frees its cache and retries, then spills least-recently-used live allocations (not pinned
    by :meth:`pinned`) to pinned host memory (if the device has ``_allocate_pinned``) or host
    memory, and only then raises :class:`~dsrt.errors.OutOfMemoryError`. A spilled allocation comes
    back on :meth:`Allocation.touch`. An idle pool (no allocation or free for ``idle_shrink_s``
    seconds) returns its idle segments; ``None`` turns that off.

    Quick cache: on a synchronous device a freed block of at most :data:`QUICK_MAX` bytes is kept
    whole for the next request of the same rounded size (the ``quick_blocks`` most recent ones; 0
    turns it off); a miss merges every such block back before a new segment is made.

    Compaction: when a small request fits no free block although enough bytes are free, and
    growing would take reserved past ``compact_ratio`` times the peak of requested bytes (or of
    the bytes in use plus the request, if more), the pool moves a few
    live blocks (a device-side copy; the allocation's ``generation`` changes, so views are
    rebuilt) to open a hole, instead of reserving a segment. It never moves an allocation that is
    exported (DLPack, CUDA array interface, torch), pinned (:meth:`pinned`) or in use
    (:func:`dsrt.memory.in_use`; every launch lists its operands there). An asynchronous device
    is synchronised first, so it compacts only where the alternative is spilling. ``None`` turns
    compaction off.

    Ownership: the pool owns every segment and spill buffer; thread-safe (one lock).
    """

    def __init__(
        self,
        device: Device,
        *,
        limit: int | float | None = None,
        cache_slack: float = 0.05,
        pinned_limit: int | None = None,
        idle_shrink_s: float | None = 30.0,
        quick_blocks: int = QUICK_BLOCKS,
        compact_ratio: float | None = 1.05,
    ) -> None:
        super().__init__(device)
        self._lock = threading.Lock()
        self._deferred: deque[Allocation] = deque()
        self._small = FreeIndex()
        self._large = FreeIndex()
        self._segments: dict[int, Segment] = {}
        self._serial = 0
        self._pins: dict[int, int] = {}
        self._quick: dict[int, list[Block]] = {}  # rounded size -> freed blocks kept whole (LIFO)
        self._quick_order: deque[tuple[Block, int]] = deque()  # (block, stamp), oldest first
        self._quick_serial = 0
        self.quick_bytes = self.quick_count = 0
        self.quick_blocks = quick_blocks  # 0 turns the quick cache off
        self._tiers = HostTiers(self.allocator, pinned_limit)
        self._sync = bool(self.allocator.synchronous)
        self._default_stream = self.allocator.default_stream
        self.cache_slack = cache_slack
        self.compact_ratio = compact_ratio  # None turns compaction off
        self.idle_shrink_s = idle_shrink_s
        self._idle_mark = (-1, 0.0)
        # counters (bytes unless named *_count / num_*)
        self.allocated = self.requested = self.reserved = 0
        self.peak_allocated = self.peak_requested = self.peak_reserved = 0
        self.num_allocs = self.num_frees = self.cache_misses = 0
        self.segment_allocs = self.segment_frees = self.retries = self.ooms = 0
        self.spills = self.spilled_bytes_total = self.fetches = self.spilled_live = 0
        self.idle_trims = 0
        self.compactions = self.moves = self.moved_bytes = 0
        self._nested_left = 0  # nested windows the running compaction may still open
        self.set_limit(limit)
        if idle_shrink_s is not None:
            IdleReaper.register(self, max(idle_shrink_s / 2, 0.05))

    @property
    def cache_hits(self) -> int:
        """Allocations (and fetches) served from cached memory, without a new segment."""
        return self.num_allocs - self.cache_misses

    # ------------------------------------------------------------------ hot path
    def allocate(self, nbytes: int, stream: Stream | None = None) -> Allocation:
        """An Allocation of at least ``nbytes`` bytes usable on ``stream`` (default stream if None)."""
        n = nbytes if type(nbytes) is int else int(nbytes)
        if n < 0:
            n = 0
        if stream is None:
            stream = self._default_stream
        if n <= SMALL_MAX:
            size = (n + ALIGNMENT - 1) & _SMALL_MASK or ALIGNMENT
            index = self._small
        else:
            size = (n + LARGE_ROUND - 1) & _LARGE_MASK
            index = self._large
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost on this path
        try:
            if self._deferred:
                self._drain()
            block: Block | None
            quick = self._quick.get(size) if self.quick_count else None
            if quick:
                block = quick.pop()  # a freed temporary of exactly this size, kept whole
                self.quick_bytes -= size
                self.quick_count -= 1
            else:
                # Inlined FreeIndex.find + remove for the common case (see blocks for the rule).
                fl = size.bit_length() - 1
                b = (fl << 4) | ((size >> (fl - 4)) & 15)
                bins = index.bins
                block = None
                bucket = bins.get(b)
                if bucket is not None:
                    probes = 0
                    for cand in bucket:
                        # Best of the first few: the smallest that fits (fragments less than first-fit).
                        cs = cand.size
                        if cs >= size and (block is None or cs < block.size) and (
                                cand.pending is None or cand.usable_on(stream)):
                            block = cand
                            if cs == size:
                                break  # exact: nothing fits better
                        probes += 1
                        if probes == 8:
                            break
                if block is None:
                    mask = index.bitmap >> (b + 1)
                    if mask:
                        nb = b + (mask & -mask).bit_length()
                        bucket = bins[nb]
                        probes = 0
                        for cand in bucket:
                            if (block is None or cand.size < block.size) and (
                                    cand.pending is None or cand.usable_on(stream)):
                                block = cand
                                b = nb
                            probes += 1
                            if probes == 8:
                                break
                if block is None:
                    block = index.find(size, stream)  # slower: skips bins whose blocks wait on events
                    if block is None:
                        block = self._miss(n, size, stream, index, None)
                    self._carve(block, size, index)
                else:
                    rest = block.size - size
                    if rest >= ALIGNMENT:
                        # Carve the front off; the free remainder stays in the index, re-binned only if
                        # its size crossed a bin boundary.
                        live = Block(block.segment, block.offset, size)
                        prev = live.prev = block.prev
                        if prev is None:
                            block.segment.head = live
                        else:
                            prev.next = live
                        live.next = block
                        block.prev = live
                        block.offset += size
                        block.size = rest
                        fl = rest.bit_length() - 1
                        rb = (fl << 4) | ((rest >> (fl - 4)) & 15)
                        index.free_bytes -= size
                        if rb != b:
                            # FreeIndex.resized, inlined with the old bin already known.
                            assert bucket is not None  # the bucket the block was found in
                            del bucket[block]
                            if not bucket:
                                del bins[b]
                                index.bitmap &= ~(1 << b)
                            target = bins.get(rb)
                            if target is None:
                                target = bins[rb] = {}
                                index.bitmap |= 1 << rb
                            target[block] = None
                        block = live
                    else:
                        assert bucket is not None  # the bucket the block was found in
                        del bucket[block]
                        if not bucket:
                            del bins[b]
                            index.bitmap &= ~(1 << b)
                        index.free_bytes -= block.size
                        index.count -= 1
                        block.pending = None
            # The bookkeeping of _count, inlined: this is the allocation of every launch.
            block.free = False
            block.requested = n
            block.born = self.num_allocs
            a = self.allocated = self.allocated + block.size
            if a > self.peak_allocated:
                self.peak_allocated = a
            r = self.requested = self.requested + n
            if r > self.peak_requested:
                self.peak_requested = r
            self.num_allocs += 1
        finally:
            lock.release()
        alloc = Allocation(self.device, block.segment.handle, block.offset, n, self, stream, block)
        block.alloc_ref = weakref.ref(alloc)
        return alloc

    def _carve(self, block: Block, size: int, index: FreeIndex) -> None:
        """Cut ``block`` (not in the index) down to ``size`` bytes, the rest going back into the index
        as a free block. Locked."""
        rest = block.size - size
        if rest >= ALIGNMENT:
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

    def _count(self, block: Block, n: int) -> None:
        """Mark ``block`` live for a request of ``n`` bytes and count it (as ``allocate`` does inline). Locked."""
        block.free = False
        block.requested = n
        block.born = self.num_allocs
        a = self.allocated = self.allocated + block.size
        if a > self.peak_allocated:
            self.peak_allocated = a
        r = self.requested = self.requested + n
        if r > self.peak_requested:
            self.peak_requested = r
        self.num_allocs += 1

    def free(self, alloc: Allocation) -> None:
        """Take ``alloc`` back; called by :meth:`Allocation.release` and its finaliser.

        If the lock is busy (another thread, or a finaliser that ran inside this pool's own
        critical section) the free is queued and applied by the next pool operation.
        """
        if not self._lock.acquire(False):
            self._deferred.append(alloc)
            return
        try:
            self._free_locked(alloc)
        finally:
            self._lock.release()

    def _drain(self) -> None:
        deferred = self._deferred
        while deferred:
            self._free_locked(deferred.popleft())

    def _free_locked(self, alloc: Allocation) -> None:
        block = alloc.pool_data
        alloc.pool_data = None
        alloc.handle = None
        if block is None:
            return
        self.num_frees += 1
        if type(block) is not Block:
            if type(block) is SpillRecord:  # freed while spilled: only the host copy goes
                self.spilled_live -= block.size
                self._tiers.give_back(block)
            return
        size = block.size
        self.allocated -= size
        self.requested -= block.requested
        block.alloc_ref = None
        if not self._sync:
            block.pending = [(alloc.stream or self._default_stream).record_event()]
        elif (size <= QUICK_MAX and self.num_allocs - block.born <= QUICK_AGE and self.quick_blocks
              and (self.quick_bytes + size) << 5 <= self.reserved):
            self._quick_keep(block, size)
            return
        self._release_block(block)

    def _quick_keep(self, block: Block, size: int) -> None:
        """Put a freed block in the quick cache, merging back the oldest beyond QUICK_BLOCKS. Locked."""
        self._quick_serial += 1
        stamp = self._quick_serial
        block.requested = -stamp  # negative while cached whole: not live, not in the free index
        quick = self._quick.get(size)
        if quick is None:
            quick = self._quick[size] = []
        quick.append(block)
        order = self._quick_order
        order.append((block, stamp))
        self.quick_bytes += size
        self.quick_count += 1
        while order and (self.quick_count > self.quick_blocks or order[0][0].requested != -order[0][1]):
            old, old_stamp = order.popleft()
            if old.requested == -old_stamp:  # still waiting (not reused since): merge it back
                self._quick[old.size].remove(old)
                self.quick_bytes -= old.size
                self.quick_count -= 1
                old.requested = 0
                self._release_block(old)

    def _release_block(self, block: Block) -> None:
        """Return a live block to its free index, merging free neighbours. Locked.

        A free neighbour absorbs the block in place (re-binned only if its bin changes), so the
        common free costs no new index entry.
        """
        seg = block.segment
        index = self._large if seg.large else self._small
        block.free = True
        prev = block.prev
        nxt = block.next
        if prev is not None and prev.free:
            old = prev.size
            prev.size = old + block.size
            prev.next = nxt
            if nxt is not None:
                nxt.prev = prev
            if block.pending is not None:
                prev.pending = _merge_pending(prev.pending, block.pending)
            if nxt is not None and nxt.free:
                index.remove(nxt)
                prev.size += nxt.size
                prev.next = nxt.next
                if nxt.next is not None:
                    nxt.next.prev = prev
                if nxt.pending is not None:
                    prev.pending = _merge_pending(prev.pending, nxt.pending)
            index.resized(prev, old)
            block = prev
        elif nxt is not None and nxt.free:
            old = nxt.size
            nxt.offset = block.offset
            nxt.size = old + block.size
            nxt.prev = prev
            if prev is None:
                seg.head = nxt
            else:
                prev.next = nxt
            if block.pending is not None:
                nxt.pending = _merge_pending(nxt.pending, block.pending)
            index.resized(nxt, old)
            block = nxt
        else:
            index.insert(block)
        if block.prev is None and block.next is None:
            seg.freed_at = self.num_frees

    def _flush_quick(self) -> None:
        """Merge every block waiting in the quick cache back into the free index. Locked."""
        if not self.quick_bytes:
            return
        quick, self._quick = self._quick, {}
        self._quick_order.clear()
        self.quick_bytes = self.quick_count = 0
        for blocks in quick.values():
            for block in blocks:
                block.requested = 0
                self._release_block(block)

    # ------------------------------------------------------------------ slow path
    def _capacity(self) -> int:
        return self.limit if self.limit is not None else self.allocator.memory_bytes

    def _miss(self, n: int, size: int, stream: Stream, index: FreeIndex, exclude: Allocation | None) -> Block:
        """Find room for ``size`` bytes when no cached block fits: new segment, free the cache and
        retry, spill least-recently-used allocations, or raise OutOfMemoryError. Locked."""
        if self.quick_bytes:
            self._flush_quick()
            block = index.find(size, stream)
            if block is not None:
                return block
        self.cache_misses += 1
        large = index is self._large
        capacity = self._capacity()
        tried: list[str] = []
        if size > capacity:
            tried.append(f"nothing: {format_bytes(size)} exceeds the capacity")
            raise self._oom(n, capacity, tried)
        if large:
            seg_size = size
        else:  # small segments grow with the pool: 1/16 of what is reserved, 256 KiB .. 2 MiB
            seg_size = min(max(self.reserved >> _SMALL_SEGMENT_SHIFT, SMALL_SEGMENT_MIN), SMALL_SEGMENT) & _LARGE_MASK
            seg_size = max(seg_size, size)
        at_limit = self.reserved + seg_size > capacity
        if (not large and self.compact_ratio is not None and index.free_bytes >= size and (at_limit or (
                self._sync and self.reserved + seg_size > max(self.allocated + size, self.peak_requested)
                * self.compact_ratio))):
            # Enough bytes are free but no hole fits: move a few live blocks to open one, rather
            # than reserve more (or spill). Asynchronous devices must synchronise to move, so they
            # compact only when the alternative is freeing the cache or spilling.
            block = self._compact(size, stream, index)
            if block is not None:
                return block
        budget = int((self.allocated + size) * (1.0 + self.cache_slack))
        if self.reserved + seg_size > budget:
            self._trim_to(max(budget - seg_size, 0), wait=False, large=large)
        block = self._new_segment(seg_size, large, capacity)
        if block is None and seg_size > size:
            seg_size = size
            block = self._new_segment(seg_size, large, capacity)
        if block is not None:
            return block
        tried.append(f"a new {format_bytes(seg_size)} segment")
        self.retries += 1
        released = self._trim_to(0, wait=True)
        tried.append(f"freeing {format_bytes(released)} of cached segments and retrying")
        block = self._new_segment(seg_size, large, capacity)
        if block is not None:
            return block
        spilled = 0
        for victim in self._spill_candidates(exclude):
            spilled += self._spill(victim)
            block = index.find(size, stream)
            if block is None:
                self._trim_to(max(capacity - seg_size, 0), wait=True)
                block = self._new_segment(seg_size, large, capacity)
            if block is not None:
                return block
        tried.append(f"spilling {format_bytes(spilled)} of least-recently-used allocations to host")
        raise self._oom(n, capacity, tried)

    def _compact(self, size: int, stream: Stream, index: FreeIndex, avoid: Segment | None = None) -> Block | None:
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
        if avoid is None:
            self._nested_left = _COMPACT_NESTED
            if not self._sync:
                self.allocator.synchronize()  # a move must not overtake kernels still queued on the bytes
        fits = index.largest_bound()  # a live block larger than every free block has nowhere to go...
        if avoid is None:
            fits = max(fits, size)  # ... unless a nested window opens one
        segments: dict[int, Segment] = {}
        bitmap = index.bitmap
        while bitmap and len(segments) < _COMPACT_SEGMENTS:
            top = bitmap.bit_length() - 1
            for blk in index.bins[top]:
                seg = blk.segment
                if seg is not avoid and seg.size >= size:
                    segments[id(seg)] = seg
            bitmap &= ~(1 << top)
        # Open more than asked (unless nested), so the next few misses find room without moving:
        # up to COMPACT_SPAN bytes, or the whole segment if smaller. Windows compare by the share
        # of their span that must move.
        wide = size if avoid is not None else min(COMPACT_SPAN, self.reserved >> COMPACT_SHIFT)
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
                    self.compactions += 1
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
        if blk.requested < 0 or blk.alloc_ref is None:
            return False
        a = blk.alloc_ref()
        return (a is not None and a.pool is self and a.pool_data is blk and not a.exported
                and id(a) not in self._pins and id(a) not in busy)

    def _move(self, blk: Block, stream: Stream, index: FreeIndex, nested: bool) -> bool:
        """Copy live ``blk`` into the best free block of the index (or, unless ``nested``, into a
        window opened for it elsewhere) and point its allocation there; ``blk`` is left free, out of
        the index. False if there is no room. Locked."""
        dest = index.find(blk.size, stream)
        if dest is None and not nested and self._nested_left:
            self._nested_left -= 1
            dest = self._compact(blk.size, stream, index, avoid=blk.segment)
        if dest is None:
            return False
        self._carve(dest, blk.size, index)
        alloc = blk.alloc_ref() if blk.alloc_ref is not None else None
        assert alloc is not None  # checked movable just before, under the same lock
        handle = dest.segment.handle
        n = alloc.nbytes
        if n:
            on = alloc.stream or self._default_stream
            allocator = self.allocator
            if not allocator.transfer(handle, dest.offset, alloc.handle, alloc.offset, n, on):
                staged = np.empty(n, np.uint8)  # no device-side copy: through host memory
                allocator.copy_out(alloc.handle, alloc.offset, staged, on)
                allocator.copy_in(handle, dest.offset, staged, on)
            if not self._sync:
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
        self.moves += 1
        self.moved_bytes += blk.size
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

    def _new_segment(self, seg_size: int, large: bool, capacity: int) -> Block | None:
        """A fresh segment's only block (not in the index), or None if it does not fit. Locked."""
        if self.reserved + seg_size > capacity:
            return None
        try:
            handle = self.allocator.allocate(seg_size)  # vendor errors arrive translated
        except OutOfMemoryError:
            return None
        self._serial += 1
        seg = Segment(handle, seg_size, large, self._serial)
        self._segments[self._serial] = seg
        self.segment_allocs += 1
        r = self.reserved = self.reserved + seg_size
        if r > self.peak_reserved:
            self.peak_reserved = r
        return seg.head

    def _trim_to(self, target: int, *, wait: bool, large: bool | None = None) -> int:
        """Return idle segments, oldest first, until reserved <= ``target`` bytes. With ``wait``,
        segments whose blocks still wait on stream events are synchronised and returned too.
        ``large`` (True/False) prefers segments of that pool. Returns bytes released. Locked."""
        released = 0
        self._flush_quick()
        if self.reserved <= target:
            return 0
        idle = sorted((s for s in self._segments.values() if s.is_idle()),
                      key=lambda s: (s.large is not large, s.freed_at))
        for seg in idle:
            if self.reserved <= target:
                break
            head = seg.head
            if head.pending is not None:
                if not wait and not all(ev.query() for ev in head.pending):
                    continue
                for ev in head.pending:
                    ev.synchronize()
                head.pending = None
            (self._large if seg.large else self._small).remove(head)
            del self._segments[seg.serial]
            self.allocator.free(seg.handle)
            seg.handle = None
            self.reserved -= seg.size
            self.segment_frees += 1
            released += seg.size
        return released

    def _oom(self, n: int, capacity: int, tried: list[str]) -> OutOfMemoryError:
        self.ooms += 1
        largest = max(self._small.largest(), self._large.largest())
        return OutOfMemoryError(
            device=self.allocator.device_id, requested=n, capacity=capacity, largest_free=largest,
            stats=self._stats_locked(), tried=tried,
            detail=f"{format_bytes(max(capacity - self.reserved, 0))} never reserved",
        )

    # ------------------------------------------------------------------ spilling
    def _spill_candidates(self, exclude: Allocation | None) -> Iterator[Allocation]:
        """Live, device-resident, unpinned allocations, least recently used first. Locked."""
        found: list[tuple[int, Allocation]] = []
        busy = busy_ids()
        for seg in self._segments.values():
            blk: Block | None = seg.head
            while blk is not None:
                if not blk.free and blk.alloc_ref is not None:
                    a = blk.alloc_ref()
                    if (a is not None and a is not exclude and a.pool is self and a.pool_data is blk and not a.exported
                            and id(a) not in self._pins and id(a) not in busy):
                        found.append((a.last_use, a))
                blk = blk.next
        found.sort(key=lambda t: t[0])
        for _use, a in found:
            if type(a.pool_data) is Block:  # still resident (a finaliser may have run meanwhile)
                yield a

    def _spill(self, alloc: Allocation) -> int:
        """Copy ``alloc`` to the nearest host tier and free its device block. Returns bytes. Locked."""
        block: Block = alloc.pool_data
        stream = alloc.stream or self._default_stream
        rec = self._tiers.take(block.size)
        if alloc.nbytes:
            self.allocator.copy_out(alloc.handle, alloc.offset, rec.buffer[: alloc.nbytes], stream)
            self.allocator.synchronize(stream)
        alloc.handle = None
        alloc.pool_data = rec
        alloc.generation += 1
        self.allocated -= block.size
        self.requested -= block.requested
        block.alloc_ref = None
        self._release_block(block)
        self.spills += 1
        self.spilled_bytes_total += block.size
        self.spilled_live += block.size
        return block.size

    def fetch(self, alloc: Allocation) -> None:
        """Bring a spilled allocation back onto the device (may spill others; never ``alloc``)."""
        with self._lock:
            if self._deferred:
                self._drain()
            self._fetch_locked(alloc)

    def hold(self, items: Iterable[Any]) -> None:
        """Settle ``items`` (Allocations of this pool, or Arrays standing for theirs) for a caller that
        has just listed them in :data:`~dsrt.memory.IN_USE` and is about to read their raw
        ``handle``/``offset``: resident, marked used, and not moving.

        Taking the pool lock is the barrier that makes lock-free registration safe: a spill or a
        compaction runs wholly under the lock and decides what it may move from ``IN_USE`` under it,
        so once this returns, one that began before the registration has finished (the handle the
        caller reads is the new one) and every later one sees the registration. Spilled items are
        fetched here (the others, listed, are not spilled to make room). Called on the thread that
        registered the items, never with the pool lock held.
        """
        clock = _use_clock
        with self._lock:
            if self._deferred:
                self._drain()
            for item in items:
                alloc = getattr(item, "allocation", item)
                if alloc.pool is self:
                    if alloc.handle is None:
                        self._fetch_locked(alloc)
                    alloc.last_use = next(clock)

    def _fetch_locked(self, alloc: Allocation) -> None:
        """:meth:`fetch` with the lock held."""
        rec = alloc.pool_data
        if alloc.handle is not None or type(rec) is not SpillRecord:
            return
        n = alloc.nbytes
        stream = alloc.stream or self._default_stream
        index = self._large if n > SMALL_MAX else self._small
        block = index.find(rec.size, stream)
        if block is None:
            block = self._miss(n, rec.size, stream, index, alloc)
        self._carve(block, rec.size, index)
        self._count(block, n)
        handle = block.segment.handle
        if n:
            self.allocator.copy_in(handle, block.offset, rec.buffer[:n], stream)
            self.allocator.synchronize(stream)
        self.spilled_live -= rec.size
        self._tiers.give_back(rec)
        alloc.handle, alloc.offset, alloc.pool_data = handle, block.offset, block
        alloc.generation += 1
        block.alloc_ref = weakref.ref(alloc)
        self.fetches += 1

    def spill(self, alloc: Allocation) -> int:
        """Move ``alloc`` off the device now (it comes back on ``touch``). Returns bytes freed."""
        with self._lock:
            if type(alloc.pool_data) is not Block or alloc.pool is not self:
                return 0
            return self._spill(alloc)

    @contextmanager
    def pinned(self, allocs: Iterable[Allocation]) -> Iterator[None]:
        """Within the block, never spill ``allocs`` (the launch in progress needs them)."""
        keys = [id(a) for a in allocs]
        with self._lock:
            for k in keys:
                self._pins[k] = self._pins.get(k, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for k in keys:
                    c = self._pins[k] - 1
                    if c:
                        self._pins[k] = c
                    else:
                        del self._pins[k]

    # ------------------------------------------------------------------ policy
    def set_limit(self, limit: int | float | None) -> None:
        """Cap reserved bytes: an int is bytes, a float in (0, 1] a fraction of device memory.
        Idle segments above the new cap are returned at once."""
        super().set_limit(limit)
        if self.limit is not None:
            with self._lock:
                self._trim_to(self.limit, wait=True)

    def trim(self, keep_bytes: int = 0) -> int:
        """Return idle segments (oldest first) until at most ``keep_bytes`` of cached, unused memory
        remain reserved. Returns bytes released."""
        with self._lock:
            if self._deferred:
                self._drain()
            return self._trim_to(self.allocated + keep_bytes, wait=True)

    def empty_cache(self) -> int:
        """Return every idle segment to the device. Returns bytes released."""
        return self.trim(0)

    def shrink_if_idle(self, now: float | None = None) -> int:
        """Trim if nothing was allocated or freed since ``idle_shrink_s`` seconds ago (the reaper
        thread calls this; ``now`` is a ``time.monotonic`` reading). Returns bytes released."""
        if self.idle_shrink_s is None:
            return 0
        now = time.monotonic() if now is None else now
        ops = self.num_allocs + self.num_frees
        seen_ops, seen_at = self._idle_mark
        if ops != seen_ops:
            self._idle_mark = (ops, now)
            return 0
        if now - seen_at < self.idle_shrink_s or self.reserved <= self.allocated:
            return 0
        released = self.trim(0)
        if released:
            self.idle_trims += 1
        return released

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Counters: ``*_bytes`` in bytes, the rest counts or ratios.

        ``allocated``: bytes in live blocks (after rounding); ``requested``: bytes asked for;
        ``active``: allocated plus free bytes still waiting on stream events; ``reserved``: bytes
        held from the device. ``fragmentation``: 1 - largest free block / free cached bytes (0 =
        all free memory in one block). ``spilled_bytes``: live data now in host tiers.
        ``compactions``: holes opened by moving live blocks; ``moves`` and ``moved_bytes``: the
        blocks and bytes moved to open them.
        """
        with self._lock:
            if self._deferred:
                self._drain()
            return self._stats_locked()

    def _stats_locked(self) -> dict[str, Any]:
        free_small, free_large = self._small.free_bytes, self._large.free_bytes
        cached = free_small + free_large + self.quick_bytes
        largest = max(self._small.largest(), self._large.largest())
        pending = 0
        if not self._sync:
            pending = sum(b.size for ix in (self._small, self._large) for b in ix.blocks()
                          if b.pending is not None and not b.usable_on(None))
        return {
            "allocated_bytes": self.allocated,
            "peak_allocated_bytes": self.peak_allocated,
            "requested_bytes": self.requested,
            "peak_requested_bytes": self.peak_requested,
            "active_bytes": self.allocated + pending,
            "reserved_bytes": self.reserved,
            "peak_reserved_bytes": self.peak_reserved,
            "cached_free_bytes": cached,
            "cached_free_small_bytes": free_small,
            "cached_free_large_bytes": free_large,
            "quick_cached_bytes": self.quick_bytes,
            "largest_free_block_bytes": largest,
            "fragmentation": 0.0 if cached == 0 else 1.0 - largest / cached,
            "internal_waste_bytes": self.allocated - self.requested,
            "limit_bytes": self._capacity(),
            "num_segments": len(self._segments),
            "num_free_blocks": self._small.count + self._large.count + self.quick_count,
            "num_allocs": self.num_allocs,
            "num_frees": self.num_frees,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "segment_allocs": self.segment_allocs,
            "segment_frees": self.segment_frees,
            "retries": self.retries,
            "ooms": self.ooms,
            "spills": self.spills,
            "spilled_bytes_total": self.spilled_bytes_total,
            "spilled_bytes": self.spilled_live,
            "fetches": self.fetches,
            "pinned_host_bytes": self._tiers.bytes["pinned_host"],
            "host_tier_bytes": self._tiers.bytes["host"],
            "idle_trims": self.idle_trims,
            "compactions": self.compactions,
            "moves": self.moves,
            "moved_bytes": self.moved_bytes,
        }

    def snapshot(self) -> list[dict[str, Any]]:
        """Every segment with its blocks in address order: offset, size, state
        (``active``/``free``/``pending``) and, for active blocks, requested bytes and last use."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for seg in sorted(self._segments.values(), key=lambda s: s.serial):
                blocks = []
                blk: Block | None = seg.head
                while blk is not None:
                    entry: dict[str, Any] = {"offset": blk.offset, "size": blk.size}
                    if blk.free:
                        entry["state"] = "pending" if blk.pending else "free"
                    elif blk.requested < 0:
                        entry["state"] = "cached"  # whole, in the quick cache
                    else:
                        entry["state"] = "active"
                        entry["requested"] = blk.requested
                        a = blk.alloc_ref() if blk.alloc_ref is not None else None
                        entry["last_use"] = a.last_use if a is not None else None
                    blocks.append(entry)
                    blk = blk.next
                out.append({"segment": seg.serial, "pool": "large" if seg.large else "small",
                            "size": seg.size, "blocks": blocks})
        return out


def _merge_pending(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b

