"""The statistics of a :class:`~dsrt.memory.CachingPool`: its counters, the ``stats()`` report and
the ``snapshot()`` of its segments.

Every counter is exact: it is updated under the pool lock by the operation it counts (the hot path
inlines its updates), and figures that need a scan (the largest free block, bytes still waiting on
events) are derived only when a report is asked for. Byte counters are in bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from .blocks import Block
    from .pool import CachingPool

__all__ = ["Counters", "counter", "report", "snapshot"]


class Counters:
    """The pool's counters (bytes unless named ``num_*``/``*s``/``*_count``). Updated under the pool lock.

    ``allocated``: bytes in live blocks (after rounding); ``requested``: bytes asked for by live
    allocations; ``reserved``: bytes held from the device; ``peak_*``: their highest values;
    ``num_allocs``/``num_frees``: calls served (the allocation count is also the pool's clock for
    the age of a block); ``cache_misses``: allocations (and fetches) that found no cached block;
    ``segment_allocs``/``segment_frees``: raw device allocations made and returned; ``retries``:
    misses that freed the cache and retried; ``ooms``: errors raised; ``spills``/``fetches``:
    allocations moved to host tiers and back, ``spilled_bytes_total`` in total, ``spilled_live``
    still there; ``idle_trims``: trims by the idle reaper; ``compactions``: holes opened by moving
    live blocks, ``moves``/``moved_bytes`` the blocks and bytes moved for them; ``quick_bytes``/
    ``quick_count``: freed blocks kept whole in the quick cache.
    """

    __slots__ = (
        "allocated", "cache_misses", "compactions", "fetches", "idle_trims", "moved_bytes", "moves",
        "num_allocs", "num_frees", "ooms", "peak_allocated", "peak_requested", "peak_reserved",
        "quick_bytes", "quick_count", "requested", "reserved", "retries", "segment_allocs",
        "segment_frees", "spilled_bytes_total", "spilled_live", "spills",
    )

    def __init__(self) -> None:
        self.allocated: int = 0
        self.cache_misses: int = 0
        self.compactions: int = 0
        self.fetches: int = 0
        self.idle_trims: int = 0
        self.moved_bytes: int = 0
        self.moves: int = 0
        self.num_allocs: int = 0
        self.num_frees: int = 0
        self.ooms: int = 0
        self.peak_allocated: int = 0
        self.peak_requested: int = 0
        self.peak_reserved: int = 0
        self.quick_bytes: int = 0
        self.quick_count: int = 0
        self.requested: int = 0
        self.reserved: int = 0
        self.retries: int = 0
        self.segment_allocs: int = 0
        self.segment_frees: int = 0
        self.spilled_bytes_total: int = 0
        self.spilled_live: int = 0
        self.spills: int = 0


T = TypeVar("T")


class counter(Generic[T]):  # lower case: used like ``property``
    """A read-only pool attribute that reads one of its :class:`Counters` (``pool.num_allocs``...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> counter[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return self
        return getattr(obj.counters, self.name)  # type: ignore[attr-defined]


def report(pool: CachingPool) -> dict[str, Any]:
    """``pool.stats()``'s dictionary, from its counters and indexes. Called with the pool lock held.

    ``allocated_bytes``: bytes in live blocks (after rounding); ``requested_bytes``: bytes asked for;
    ``active_bytes``: allocated plus free bytes still waiting on stream events; ``reserved_bytes``:
    bytes held from the device. ``fragmentation``: 1 - largest free block / free cached bytes (0 =
    all free memory in one block). ``spilled_bytes``: live data now in host tiers. ``compactions``:
    holes opened by moving live blocks; ``moves`` and ``moved_bytes``: the blocks and bytes moved.
    """
    c = pool.counters
    small, large = pool._small, pool._large
    free_small, free_large = small.free_bytes, large.free_bytes
    cached = free_small + free_large + c.quick_bytes
    largest = max(small.largest(), large.largest())
    pending = 0
    if not pool._sync:
        pending = sum(b.size for ix in (small, large) for b in ix.blocks()
                      if b.pending is not None and not b.usable_on(None))
    tiers = pool._tiers
    return {
        "allocated_bytes": c.allocated,
        "peak_allocated_bytes": c.peak_allocated,
        "requested_bytes": c.requested,
        "peak_requested_bytes": c.peak_requested,
        "active_bytes": c.allocated + pending,
        "reserved_bytes": c.reserved,
        "peak_reserved_bytes": c.peak_reserved,
        "cached_free_bytes": cached,
        "cached_free_small_bytes": free_small,
        "cached_free_large_bytes": free_large,
        "quick_cached_bytes": c.quick_bytes,
        "largest_free_block_bytes": largest,
        "fragmentation": 0.0 if cached == 0 else 1.0 - largest / cached,
        "internal_waste_bytes": c.allocated - c.requested,
        "limit_bytes": pool._capacity(),
        "num_segments": len(pool._segments),
        "num_free_blocks": small.count + large.count + c.quick_count,
        "num_allocs": c.num_allocs,
        "num_frees": c.num_frees,
        "cache_hits": c.num_allocs - c.cache_misses,
        "cache_misses": c.cache_misses,
        "segment_allocs": c.segment_allocs,
        "segment_frees": c.segment_frees,
        "retries": c.retries,
        "ooms": c.ooms,
        "spills": c.spills,
        "spilled_bytes_total": c.spilled_bytes_total,
        "spilled_bytes": c.spilled_live,
        "fetches": c.fetches,
        "pinned_host_bytes": tiers.bytes["pinned_host"],
        "host_tier_bytes": tiers.bytes["host"],
        "idle_trims": c.idle_trims,
        "compactions": c.compactions,
        "moves": c.moves,
        "moved_bytes": c.moved_bytes,
    }


def snapshot(pool: CachingPool) -> list[dict[str, Any]]:
    """Every segment of ``pool`` with its blocks in address order: offset, size, state
    (``active``/``free``/``pending``/``cached``) and, for active blocks, requested bytes and last
    use. Called with the pool lock held."""
    out: list[dict[str, Any]] = []
    for seg in sorted(pool._segments.values(), key=lambda s: s.serial):
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
