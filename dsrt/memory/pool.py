"""The caching, tiered memory pool every device gets (see :class:`CachingPool`).

The pool composes one module per concern: :mod:`~dsrt.memory.fit` (the free-block index and the one
fit rule), :mod:`~dsrt.memory.compact` (moving live blocks to open a hole),
:mod:`~dsrt.memory.spill` (host tiers and back), :mod:`~dsrt.memory.stats` (counters, report,
snapshot). This module holds the allocation hot path, the quick cache (per-size LIFOs of freed
blocks kept whole), freeing and coalescing, segments, and the policy that ties them together.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ..errors import OutOfMemoryError, format_bytes
from .base import ALIGNMENT, Allocation, MemoryPool, _use_clock
from .blocks import Block, Segment
from .compact import COMPACT_SHIFT, COMPACT_SPAN, Compactor
from .fit import MIN_SPLIT, PROBES, SPARE_BLOCKS, SUBDIVISIONS, FreeIndex, carve_tail, fit
from .spill import Spiller
from .stats import Counters, counter, report, snapshot
from .tiers import HostTiers, IdleReaper, SpillRecord

if TYPE_CHECKING:
    from ..device import Device, Stream

__all__ = ["CachingPool", "COMPACT_SHIFT", "COMPACT_SPAN", "LARGE_ROUND", "QUICK_BLOCKS", "SMALL_MAX", "SMALL_SEGMENT"]

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
#: temporaries skips the fit, splitting and merging. Only the :data:`QUICK_BLOCKS` most recently
#: freed blocks wait (the oldest is merged back when another comes), never more than 1/32 of the
#: reserved bytes; all are merged back before the pool grows and before any trim, so they never cost
#: a segment.
QUICK_MAX = 64 << 10
QUICK_BLOCKS = 8
#: Only temporaries are kept: blocks freed within this many allocations of their own.
QUICK_AGE = 16
_SMALL_MASK = ~(ALIGNMENT - 1)
_LARGE_MASK = ~(LARGE_ROUND - 1)
_new = object.__new__
_ref = weakref.ref
#: False on a free-threaded interpreter running without the GIL: :meth:`CachingPool.hold` then always
#: takes the lock (its lock-free check relies on the GIL's sequentially consistent interleaving).
_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


class CachingPool(MemoryPool):
    """A caching allocator over any device's :class:`~dsrt.memory.allocator.Allocator`, with spilling
    to host tiers.

    Size rule: a request of ``n`` bytes (``n`` <= 1 MiB) takes ``ceil(n / 256) * 256`` bytes from
    the small pool, whose segments are 1/16 of the bytes reserved so far, between 256 KiB and
    2 MiB (and never smaller than the request); a larger one takes ``ceil(n / 16 KiB) * 16 KiB``
    from the large pool, whose new segments are sized to the request. Free blocks are found by the
    bounded best fit of :func:`dsrt.memory.fit.fit`; they split, and coalesce with free
    neighbours in the same segment; the two pools never share a segment, so small blocks cannot
    pin large ones.

    Streams: a block freed on stream S is reusable on S at once, and on another stream only once an
    event recorded on S at free time has completed. Synchronous allocators skip events entirely.

    Reserved memory follows use: on a cache miss (only then; hits never give memory back), idle
    segments are returned to the device, oldest first, until ``reserved`` plus the new segment is
    at most ``(1 + cache_slack) * (allocated + request)``. ``limit`` (bytes) is a hard cap. When a
    request does not fit, the pool frees its cache and retries, then spills least-recently-used live
    allocations (not pinned by :meth:`pinned`, not exported, not in use) to pinned host memory (if
    the allocator offers it) or host memory, and only then raises
    :class:`~dsrt.errors.OutOfMemoryError`. A spilled allocation comes back on
    :meth:`Allocation.touch` or :meth:`hold`. An idle pool (no allocation or free for
    ``idle_shrink_s`` seconds) returns its idle segments; ``None`` turns that off.

    Quick cache: on a synchronous device a freed short-lived block of at most :data:`QUICK_MAX`
    bytes is kept whole in a LIFO for its rounded size, and the next request of that size pops it
    without a search (the ``quick_blocks`` most recent ones; 0 turns it off); a miss merges every
    such block back before a new segment is made.

    Compaction (see :mod:`dsrt.memory.compact`): when a small request fits no free block although
    enough bytes are free, and growing would take reserved past ``compact_ratio`` times the peak of
    requested bytes (or the bytes requested by live allocations plus this request, if more), the pool moves a few live
    blocks to open a hole instead of reserving a segment. An asynchronous device is synchronised
    first, so it compacts only where the alternative is spilling. ``None`` turns compaction off.

    Threads: one lock guards everything; :meth:`free` never waits for it (a busy lock queues the
    free for the next operation). Ownership: the pool owns every segment and spill buffer.
    """

    # The C paths' handle on this pool (a dsrt.memory._fastpool.PoolCore holding the lock, counters,
    # device, default stream, deferred queue, quick cache and both indexes), None where they are not
    # built. Those attributes are made once here and never rebound (the core holds them).
    __slots__ = ("_core", "_moving", "quick_blocks")
    #: The lock-free barrier of :meth:`hold` is sound under the GIL only (a class-level declaration:
    #: the C launch path reads it from the class).
    lock_free_hold = _GIL

    # Counter views (read-only): the counters live in ``self.counters`` (see dsrt.memory.stats).
    allocated = counter[int]("allocated")
    requested = counter[int]("requested")
    reserved = counter[int]("reserved")
    peak_allocated = counter[int]("peak_allocated")
    peak_requested = counter[int]("peak_requested")
    peak_reserved = counter[int]("peak_reserved")
    num_allocs = counter[int]("num_allocs")
    num_frees = counter[int]("num_frees")
    cache_misses = counter[int]("cache_misses")
    segment_allocs = counter[int]("segment_allocs")
    segment_frees = counter[int]("segment_frees")
    retries = counter[int]("retries")
    ooms = counter[int]("ooms")
    spills = counter[int]("spills")
    spilled_bytes_total = counter[int]("spilled_bytes_total")
    spilled_live = counter[int]("spilled_live")
    fetches = counter[int]("fetches")
    idle_trims = counter[int]("idle_trims")
    compactions = counter[int]("compactions")
    moves = counter[int]("moves")
    moved_bytes = counter[int]("moved_bytes")
    quick_bytes = counter[int]("quick_bytes")
    quick_count = counter[int]("quick_count")

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
        self._lock = _new_lock()
        # True while this pool moves live bytes (compaction, spilling, fetching), set and cleared
        # under the lock; read without it by ``hold`` (see there for why that is safe).
        self._moving = False
        self._deferred: deque[Allocation] = deque()
        self._small = FreeIndex()
        self._large = FreeIndex()
        self._segments: dict[int, Segment] = {}
        self._serial = 0
        self._pins: dict[int, int] = {}
        # The quick cache: rounded size -> freed blocks kept whole (LIFO). A size's list stays when it
        # empties (at most QUICK_MAX / ALIGNMENT sizes), so a free-allocate cycle builds nothing.
        self._quick: dict[int, list[Block]] = {}
        self.quick_blocks = quick_blocks  # 0 turns the quick cache off
        self._tiers = HostTiers(self.allocator, pinned_limit)
        self._sync = bool(self.allocator.synchronous)
        self._default_stream = self.allocator.default_stream
        self.cache_slack = cache_slack
        self.compact_ratio = compact_ratio  # None turns compaction off
        self.idle_shrink_s = idle_shrink_s
        self._idle_mark = (-1, 0.0)
        self.counters: Counters = _new_counters()
        self._compactor = Compactor(self)
        self._spiller = Spiller(self)
        self.set_limit(limit)
        self._core = _new_core(self)
        if idle_shrink_s is not None:
            IdleReaper.register(self, max(idle_shrink_s / 2, 0.05))

    @property
    def cache_hits(self) -> int:
        """Allocations (and fetches) served from cached memory, without a new segment."""
        c = self.counters
        return c.num_allocs - c.cache_misses

    def _index_for(self, nbytes: int) -> FreeIndex:
        return self._large if nbytes > SMALL_MAX else self._small

    # ------------------------------------------------------------------ hot path
    def allocate(self, nbytes: int, stream: Stream | None = None) -> Allocation:
        """An Allocation of at least ``nbytes`` bytes usable on ``stream`` (default stream if None).

        The hot path, in order: a block of exactly the rounded size from the quick cache (a list
        pop, no search); else :func:`~dsrt.memory.fit.fit` (the one fit rule, splitting in
        place); else the slow path (:meth:`_miss`). Everything under the lock: the counters,
        peaks included, stay exact, and a spill or compaction on another thread never sees a
        block half taken. (A lock-free pop would be safe for the block itself, a ``list.pop`` being
        atomic under the GIL, but not for the counters' read-modify-writes and peaks; the
        uncontended lock costs less than one attribute store per counter it protects, and it keeps
        the pool correct on a free-threaded interpreter too.)
        """
        n = nbytes if type(nbytes) is int else int(nbytes)
        if n <= SMALL_MAX:
            if n < 0:
                n = 0
            size = (n + ALIGNMENT - 1) & _SMALL_MASK or ALIGNMENT
            index = self._small
        else:
            size = (n + LARGE_ROUND - 1) & _LARGE_MASK
            index = self._large
        if stream is None:
            stream = self._default_stream
        c = self.counters
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost on this path
        try:
            if self._deferred:
                self._drain()
            quick = self._quick.get(size)
            if quick:
                block = quick.pop()  # a freed temporary of exactly this size, kept whole
                c.quick_bytes -= size
                c.quick_count -= 1
            else:
                found = fit(index, size, stream)
                if found is None:
                    found = self._miss(n, size, stream, index, None)
                    carve_tail(index, found, size)
                block = found
            # The bookkeeping of _count, inlined: this is the allocation of every launch.
            block.free = False
            block.requested = n
            block.born = c.num_allocs
            a = c.allocated = c.allocated + block.size
            if a > c.peak_allocated:
                c.peak_allocated = a
            r = c.requested = c.requested + n
            if r > c.peak_requested:
                c.peak_requested = r
            c.num_allocs += 1
        finally:
            lock.release()
        # Allocation(self.device, block.segment.handle, block.offset, n, self, stream, block), with
        # its __init__ inlined (a third of the cost of this path). Outside the lock: the block is
        # live but has no alloc_ref yet, so no spill or compaction on another thread touches it.
        alloc = _new(Allocation)
        alloc.device = self.device
        alloc.handle = block.segment.handle
        alloc.offset = block.offset
        alloc.nbytes = n
        alloc.pool = self
        alloc.stream = stream
        alloc.generation = 0
        alloc.exported = False
        alloc.last_use = next(_use_clock)
        alloc.pool_data = block
        block.alloc_ref = _ref(alloc)
        return alloc

    def _count(self, block: Block, n: int) -> None:
        """Mark ``block`` live for a request of ``n`` bytes and count it (as ``allocate`` does inline). Locked."""
        c = self.counters
        block.free = False
        block.requested = n
        block.born = c.num_allocs
        a = c.allocated = c.allocated + block.size
        if a > c.peak_allocated:
            c.peak_allocated = a
        r = c.requested = c.requested + n
        if r > c.peak_requested:
            c.peak_requested = r
        c.num_allocs += 1

    def free(self, alloc: Allocation) -> None:
        """Take ``alloc`` back; called by :meth:`Allocation.release` and its finaliser.

        If the lock is busy (another thread, or a finaliser that ran inside this pool's own
        critical section) the free is queued and applied by the next pool operation.
        """
        lock = self._lock
        if not lock.acquire(False):
            self._deferred.append(alloc)
            return
        try:
            self._free_locked(alloc)  # (the quick cache's common case runs in C where built)
        finally:
            lock.release()

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
        c = self.counters
        c.num_frees += 1
        if type(block) is not Block:
            if type(block) is SpillRecord:  # freed while spilled: only the host copy goes
                self._spiller.free_spilled(block)
            return
        size = block.size
        c.allocated -= size
        c.requested -= block.requested
        block.alloc_ref = None
        if not self._sync:
            block.pending = [(alloc.stream or self._default_stream).record_event()]
        elif (size <= QUICK_MAX and c.num_allocs - block.born <= QUICK_AGE and self.quick_blocks
              and (c.quick_bytes + size) << 5 <= c.reserved):
            self._quick_keep(block, size)
            return
        self._release_block(block)

    def _quick_keep(self, block: Block, size: int) -> None:
        """Put a freed block in the quick cache, merging back the oldest beyond ``quick_blocks``. Locked."""
        c = self.counters
        block.requested = -c.num_frees  # minus a stamp (frees so far), negative while cached whole
        quick = self._quick.get(size)
        if quick is None:
            quick = self._quick[size] = []
        quick.append(block)
        c.quick_bytes += size
        c.quick_count += 1
        while c.quick_count > self.quick_blocks:
            # The oldest waiting block (smallest stamp: ``requested`` is minus it) goes back; at most
            # quick_blocks + 1 wait, so the scan is short.
            old = max((b for lst in self._quick.values() for b in lst), key=lambda b: b.requested)
            self._quick[old.size].remove(old)
            c.quick_bytes -= old.size
            c.quick_count -= 1
            old.requested = 0
            self._release_block(old)

    def _release_block(self, block: Block) -> None:
        """Return a live block to its free index, merging free neighbours. Locked.

        A free neighbour absorbs the block in place (re-binned only if its bin changes), so the
        common free costs no new index entry. A block merged away is referenced by nothing else
        (its allocation let go of it, it is in no bin and no quick list), so the index keeps it
        for the next split.
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
                index.recycle(nxt)
            index.resized(prev, old)
            index.recycle(block)
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
            index.recycle(block)
            block = nxt
        else:
            index.insert(block)
        if block.prev is None and block.next is None:
            seg.freed_at = self.counters.num_frees

    def _flush_quick(self) -> None:
        """Merge every block waiting in the quick cache back into the free index. Locked."""
        c = self.counters
        if not c.quick_bytes:
            return
        waiting = [block for blocks in self._quick.values() for block in blocks]
        self._quick.clear()  # in place: the C paths' core holds this dict
        c.quick_bytes = c.quick_count = 0
        for block in waiting:
            block.requested = 0
            self._release_block(block)

    # ------------------------------------------------------------------ slow path
    def _capacity(self) -> int:
        return self.limit if self.limit is not None else self.allocator.memory_bytes

    def _miss(self, n: int, size: int, stream: Stream, index: FreeIndex, exclude: Allocation | None) -> Block:
        """Find room for ``size`` bytes when no cached block fits: new segment, free the cache and
        retry, spill least-recently-used allocations, or raise OutOfMemoryError. Locked."""
        c = self.counters
        if c.quick_bytes:
            self._flush_quick()
            block = index.find(size, stream)
            if block is not None:
                return block
        c.cache_misses += 1
        large = index is self._large
        capacity = self._capacity()
        tried: list[str] = []
        if size > capacity:
            tried.append(f"nothing: {format_bytes(size)} exceeds the capacity")
            raise self._oom(n, capacity, tried)
        if large:
            seg_size = size
        else:  # small segments grow with the pool: 1/16 of what is reserved, 256 KiB .. 2 MiB
            seg_size = min(max(c.reserved >> _SMALL_SEGMENT_SHIFT, SMALL_SEGMENT_MIN), SMALL_SEGMENT) & _LARGE_MASK
            seg_size = max(seg_size, size)
        at_limit = c.reserved + seg_size > capacity
        if (not large and self.compact_ratio is not None and index.free_bytes >= size and (at_limit or (
                self._sync and c.reserved + seg_size > max(c.requested + n, c.peak_requested)
                * self.compact_ratio))):
            # Enough bytes are free but no hole fits: move a few live blocks to open one, rather
            # than reserve more (or spill). Asynchronous devices must synchronise to move, so they
            # compact only when the alternative is freeing the cache or spilling.
            moving, self._moving = self._moving, True
            try:
                block = self._compactor.compact(size, stream, index)
            finally:
                self._moving = moving
            if block is not None:
                return block
        budget = int((c.allocated + size) * (1.0 + self.cache_slack))
        if c.reserved + seg_size > budget:
            self._trim_to(max(budget - seg_size, 0), wait=False, large=large)
        block = self._new_segment(seg_size, large, capacity)
        if block is None and seg_size > size:
            seg_size = size
            block = self._new_segment(seg_size, large, capacity)
        if block is not None:
            return block
        tried.append(f"a new {format_bytes(seg_size)} segment")
        c.retries += 1
        released = self._trim_to(0, wait=True)
        tried.append(f"freeing {format_bytes(released)} of cached segments and retrying")
        block = self._new_segment(seg_size, large, capacity)
        if block is not None:
            return block
        spilled = 0
        moving, self._moving = self._moving, True
        try:
            for victim in self._spiller.candidates(exclude):
                spilled += self._spiller.spill(victim)
                block = index.find(size, stream)
                if block is None:
                    self._trim_to(max(capacity - seg_size, 0), wait=True)
                    block = self._new_segment(seg_size, large, capacity)
                if block is not None:
                    return block
        finally:
            self._moving = moving
        tried.append(f"spilling {format_bytes(spilled)} of least-recently-used allocations to host")
        raise self._oom(n, capacity, tried)

    def _new_segment(self, seg_size: int, large: bool, capacity: int) -> Block | None:
        """A fresh segment's only block (not in the index), or None if it does not fit. Locked."""
        if self.counters.reserved + seg_size > capacity:
            return None
        try:
            handle = self.allocator.allocate(seg_size)  # vendor errors arrive translated
        except OutOfMemoryError:
            return None
        self._serial += 1
        seg = Segment(handle, seg_size, large, self._serial)
        self._segments[self._serial] = seg
        c = self.counters
        c.segment_allocs += 1
        r = c.reserved = c.reserved + seg_size
        if r > c.peak_reserved:
            c.peak_reserved = r
        return seg.head

    def _trim_to(self, target: int, *, wait: bool, large: bool | None = None) -> int:
        """Return idle segments, oldest first, until reserved <= ``target`` bytes. With ``wait``,
        segments whose blocks still wait on stream events are synchronised and returned too.
        ``large`` (True/False) prefers segments of that pool. Returns bytes released. Locked."""
        c = self.counters
        released = 0
        self._flush_quick()
        if c.reserved <= target:
            return 0
        idle = sorted((s for s in self._segments.values() if s.is_idle()),
                      key=lambda s: (s.large is not large, s.freed_at))
        for seg in idle:
            if c.reserved <= target:
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
            c.reserved -= seg.size
            c.segment_frees += 1
            released += seg.size
        if released:  # spare blocks may still point into a returned segment
            self._small.spare.clear()
            self._large.spare.clear()
        return released

    def _oom(self, n: int, capacity: int, tried: list[str]) -> OutOfMemoryError:
        self.counters.ooms += 1
        largest = max(self._small.largest(), self._large.largest())
        return OutOfMemoryError(
            device=self.allocator.device_id, requested=n, capacity=capacity, largest_free=largest,
            stats=self._stats_locked(), tried=tried,
            detail=f"{format_bytes(max(capacity - self.counters.reserved, 0))} never reserved",
        )

    # ------------------------------------------------------------------ spilling
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
        if _GIL and not self._moving:
            # The lock-free barrier. Every move of live bytes (compaction, spilling, fetching) runs
            # under the lock with ``_moving`` set *before* it reads IN_USE and cleared only *after*
            # the moved allocations' handle/offset/generation are all stored. The caller listed
            # ``items`` in IN_USE before this call, so, the GIL interleaving the two threads' steps
            # in one total order, reading ``_moving`` false here means either (a) no move has set
            # it yet, so any move that starts later reads IN_USE after the listing and leaves the
            # items alone, or (b) every move that set it has cleared it, i.e. finished, so the
            # handles read from here on are the new ones. A move under way shows ``_moving`` true
            # and takes the locked path below, which waits for it. The one thing left to do is
            # fetching spilled items (``handle is None``), which needs the lock too. Frees queued
            # in ``_deferred`` wait for the next locked operation (they move nothing).
            tick = next(clock)  # one tick for all the items: they are used together
            for item in items:
                alloc = getattr(item, "allocation", item)
                if alloc.handle is None and alloc.pool is self:
                    break
                alloc.last_use = tick
            else:
                return
        with self._lock:
            if self._deferred:
                self._drain()
            tick = next(clock)
            for item in items:
                alloc = getattr(item, "allocation", item)
                if alloc.pool is self:
                    if alloc.handle is None:
                        self._fetch_locked(alloc)
                    alloc.last_use = tick

    def _fetch_locked(self, alloc: Allocation) -> None:
        """:meth:`fetch` with the lock held (``_moving`` set while the bytes come back)."""
        moving, self._moving = self._moving, True
        try:
            self._spiller.fetch(alloc)
        finally:
            self._moving = moving

    def spill(self, alloc: Allocation) -> int:
        """Move ``alloc`` off the device now (it comes back on ``touch``). Returns bytes freed."""
        with self._lock:
            if type(alloc.pool_data) is not Block or alloc.pool is not self:
                return 0
            moving, self._moving = self._moving, True
            try:
                return self._spiller.spill(alloc)
            finally:
                self._moving = moving

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
            return self._trim_to(self.counters.allocated + keep_bytes, wait=True)

    def empty_cache(self) -> int:
        """Return every idle segment to the device. Returns bytes released."""
        return self.trim(0)

    def shrink_if_idle(self, now: float | None = None) -> int:
        """Trim if nothing was allocated or freed since ``idle_shrink_s`` seconds ago (the reaper
        thread calls this; ``now`` is a ``time.monotonic`` reading). Returns bytes released."""
        if self.idle_shrink_s is None:
            return 0
        now = time.monotonic() if now is None else now
        c = self.counters
        ops = c.num_allocs + c.num_frees
        seen_ops, seen_at = self._idle_mark
        if ops != seen_ops:
            self._idle_mark = (ops, now)
            return 0
        if now - seen_at < self.idle_shrink_s or c.reserved <= c.allocated:
            return 0
        released = self.trim(0)
        if released:
            c.idle_trims += 1
        return released

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Counters: ``*_bytes`` in bytes, the rest counts or ratios (see :func:`dsrt.memory.stats.report`)."""
        with self._lock:
            if self._deferred:
                self._drain()
            return report(self)

    def _stats_locked(self) -> dict[str, Any]:
        return report(self)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every segment with its blocks in address order: offset, size, state
        (``active``/``free``/``pending``/``cached``) and, for active blocks, requested bytes and last use."""
        with self._lock:
            return snapshot(self)


def _merge_pending(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b



# ---------------------------------------------------------------------------------------------- C paths
#: The Python implementations: the reference the C paths of dsrt.memory._fastpool hand every other case to.
python_allocate = CachingPool.allocate
python_free = CachingPool.free
python_finalise = Allocation.__del__


#: Makes a pool's counters: stats.Counters, or its C twin (plain C integers the C paths update in
#: place; the same attributes to Python) once those paths are installed.
_new_counters: Callable[[], Counters] = Counters
#: Makes a pool's lock: threading.Lock, or the C paths' twin (same interface, taken without a method call).
_new_lock: Callable[[], Any] = threading.Lock


def _no_core(pool: CachingPool) -> Any:
    return None


#: Makes a pool's ``_core`` for the C paths (None: the pool runs the Python methods).
_new_core: Callable[[CachingPool], Any] = _no_core


def fast_paths_enabled() -> bool:
    """False when ``DSRT_FASTPATH`` says off: the C paths (this pool's and ``Device.launch``'s) are not
    installed and everything runs the Python reference. Read once, at import."""
    return os.environ.get("DSRT_FASTPATH", "").strip().lower() not in ("off", "0", "false", "no")


def _install_fast_pool() -> bool:
    """Install the quick-cache paths of ``dsrt.memory._fastpool`` (an optional C extension) as
    ``CachingPool.allocate``/``free`` and ``Allocation.__del__``, and its ``Counters`` and ``Lock`` for
    new pools.
    They do what the Python methods do for a quick-cache hit and a quick-cache keep, under the same
    lock, and call the Python methods (kept as :data:`python_allocate`, ``_free_locked``) for
    everything else, including a pool whose counters are the Python class. Returns whether they are
    installed."""
    if not fast_paths_enabled():
        return False
    try:
        import dsrt.memory._fastpool as _fastpool
    except ImportError:
        return False
    constants = (QUICK_MAX, QUICK_AGE, ALIGNMENT, SMALL_MAX, LARGE_ROUND, MIN_SPLIT, PROBES, SPARE_BLOCKS,
                 SUBDIVISIONS.bit_length() - 1)
    allocate, free, finalise = _fastpool.configure(CachingPool, Allocation, Block, Counters, Segment, FreeIndex,
                                                   _use_clock, python_allocate, python_free, constants)

    def new_core(pool: CachingPool) -> Any:
        return _fastpool.PoolCore(pool._lock, pool.counters, pool.device, pool._default_stream, pool._deferred,
                                  pool._quick, pool._small, pool._large, pool._sync)

    global _new_counters, _new_lock, _new_core
    _new_counters = cast(Callable[[], Counters], _fastpool.Counters)
    _new_lock = _fastpool.Lock
    _new_core = new_core
    setattr(CachingPool, "allocate", allocate)  # noqa: B010 - mypy keeps the Python signatures
    setattr(CachingPool, "free", free)  # noqa: B010
    setattr(Allocation, "__del__", finalise)  # noqa: B010
    _fastpool.install_finalizer()
    return True


#: True when the pool's quick-cache paths run in C (see _install_fast_pool).
FAST_POOL = _install_fast_pool()
