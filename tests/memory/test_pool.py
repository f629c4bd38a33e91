"""The caching pool: rounding, splitting and coalescing, caching, limits, trimming, statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import dsrt
from dsrt.errors import DsrtOutOfMemoryError, OutOfMemoryError
from dsrt.memory import ALIGNMENT, CachingPool, create_pool
from dsrt.memory.pool import LARGE_ROUND, QUICK_BLOCKS, SMALL_MAX

MiB = 1 << 20


def make(dev, **kw):
    kw.setdefault("idle_shrink_s", None)
    return CachingPool(dev, **kw)


def test_every_device_gets_a_caching_pool(cpu):
    assert isinstance(cpu.pool, CachingPool)
    assert isinstance(create_pool(cpu), CachingPool)
    a = cpu.asarray(np.arange(100, dtype=np.float32))
    assert a.allocation.pool is cpu.pool
    np.testing.assert_array_equal(cpu.copy_to_host(cpu.launch("add", a, a)), 2 * np.arange(100, dtype=np.float32))
    assert cpu.pool.stats()["num_allocs"] >= 2


def test_rounding_rule(fake):
    pool = make(fake)
    small = pool.allocate(1)
    assert small.nbytes == 1 and small.pool_data.size == ALIGNMENT
    assert pool.allocate(ALIGNMENT + 1).pool_data.size == 2 * ALIGNMENT
    big = pool.allocate(SMALL_MAX + 1)
    assert big.pool_data.size == SMALL_MAX + LARGE_ROUND
    assert big.pool_data.segment.large and not small.pool_data.segment.large
    assert pool.allocate(0).nbytes == 0


def test_blocks_are_aligned_and_disjoint(fake):
    pool = make(fake)
    allocs = [pool.allocate(n) for n in (1, 300, 5000, 77, 2 * MiB + 3, 1024)]
    spans = sorted((id(a.handle.base), a.offset, a.offset + a.nbytes) for a in allocs)
    for a in allocs:
        assert a.offset % ALIGNMENT == 0
    for (b1, _s1, e1), (b2, s2, _e2) in itertools.pairwise(spans):
        assert b1 != b2 or e1 <= s2


def test_cache_hit_reuses_memory_without_raw_allocation(fake):
    pool = make(fake)
    a = pool.allocate(4096)
    offset = a.offset
    del a
    raw = fake.raw_allocs
    b = pool.allocate(4000)
    assert fake.raw_allocs == raw
    assert b.offset == offset
    assert pool.stats()["cache_hits"] >= 1


def test_free_neighbours_coalesce(fake):
    pool = make(fake, quick_blocks=0)
    blocks = [pool.allocate(4096) for _ in range(3)]
    seg = blocks[0].pool_data.segment
    assert all(b.pool_data.segment is seg for b in blocks)
    blocks[0].release()
    blocks[2].release()
    blocks[1].release()
    snap = pool.snapshot()
    assert len(snap) == 1 and len(snap[0]["blocks"]) == 1 and snap[0]["blocks"][0]["state"] == "free"
    assert pool.stats()["fragmentation"] == 0.0


def test_snapshot_and_fragmentation_figure(fake):
    pool = make(fake, quick_blocks=0)
    keep = [pool.allocate(4096) for _ in range(8)]
    for a in keep[::2]:
        a.release()
    snap = pool.snapshot()
    states = [b["state"] for b in snap[0]["blocks"]]
    assert states[:8] == ["free", "active"] * 4
    active = [b for b in snap[0]["blocks"] if b["state"] == "active"]
    assert all(b["requested"] == 4096 and b["last_use"] is not None for b in active)
    s = pool.stats()
    assert 0.0 < s["fragmentation"] < 1.0
    assert s["largest_free_block_bytes"] < s["cached_free_bytes"]


def test_quick_cache_reuses_a_freed_block_whole_and_merges_it_back_before_growing(fake):
    pool = make(fake)
    keep = pool.allocate(1 << 20)  # reserves enough that the cache's byte budget (1/32) is not the limit
    temp = pool.allocate(3000)
    where = (temp.pool_data.segment, temp.offset)
    temp.release()
    assert sum(b["state"] == "cached" for seg in pool.snapshot() for b in seg["blocks"]) == 1
    again = pool.allocate(2900)  # same rounded size (3072 bytes): the same block, whole
    assert (again.pool_data.segment, again.offset) == where
    again.release()
    # Only the QUICK_BLOCKS most recent frees wait; older ones are merged back at once.
    temps = [pool.allocate(1024) for _ in range(QUICK_BLOCKS + 3)]
    offsets = [t.offset for t in temps]
    for t in temps:
        t.release()
    cached = sorted(b["offset"] for seg in pool.snapshot() for b in seg["blocks"] if b["state"] == "cached")
    assert cached == sorted(offsets[3:]) and pool.stats()["quick_cached_bytes"] == QUICK_BLOCKS * 1024
    # A request that fits only once the cached blocks are merged back must not grow the pool.
    raw = pool.stats()["segment_allocs"]
    small_segment_free = max(b["size"] for seg in pool.snapshot() if seg["pool"] == "small"
                             for b in seg["blocks"] if b["state"] == "free")
    big = pool.allocate(small_segment_free + 1024)
    assert pool.stats()["segment_allocs"] == raw and pool.stats()["quick_cached_bytes"] == 0
    del big, keep
    pool.empty_cache()
    assert pool.stats()["reserved_bytes"] == 0


def test_small_blocks_do_not_share_large_segments(fake):
    pool = make(fake)
    big = pool.allocate(8 * MiB)
    big.release()
    small = pool.allocate(4096)
    assert not small.pool_data.segment.large
    assert pool.snapshot()[-1]["pool"] == "small"


def test_bad_order_keeps_reserved_near_peak(fake):
    dev = type(fake)(512 * MiB)
    pool = make(dev)
    for _ in range(3):
        a = [pool.allocate(16 * MiB) for _ in range(8)]
        del a
        b = [pool.allocate(32 * MiB) for _ in range(4)]
        del b
    s = pool.stats()
    assert s["peak_reserved_bytes"] <= 1.10 * s["peak_requested_bytes"]


def test_empty_cache_returns_everything_idle(fake):
    pool = make(fake)
    a = [pool.allocate(n) for n in (100, 5000, 3 * MiB)]
    assert pool.stats()["reserved_bytes"] > 0
    del a
    released = pool.empty_cache()
    assert released > 0
    assert pool.stats()["reserved_bytes"] == 0
    assert fake.live_raw == 0 and fake.raw_frees == fake.raw_allocs


def test_trim_keeps_requested_cache(fake):
    pool = make(fake)
    a = [pool.allocate(4 * MiB) for _ in range(4)]
    keep = pool.allocate(4 * MiB)
    del a
    pool.trim(keep_bytes=8 * MiB)
    s = pool.stats()
    assert s["reserved_bytes"] - s["allocated_bytes"] <= 8 * MiB
    assert s["reserved_bytes"] > s["allocated_bytes"]
    assert keep.handle is not None


def test_idle_pool_shrinks(fake):
    pool = make(fake)
    pool.idle_shrink_s = 10.0
    a = pool.allocate(4 * MiB)
    del a
    assert pool.shrink_if_idle(now=100.0) == 0  # first look: remembers the activity count
    assert pool.shrink_if_idle(now=105.0) == 0  # idle, but not for long enough
    assert pool.shrink_if_idle(now=111.0) == 4 * MiB
    assert pool.stats()["reserved_bytes"] == 0 and pool.stats()["idle_trims"] == 1
    b = pool.allocate(4096)
    assert pool.shrink_if_idle(now=200.0) == 0  # activity since the last look
    assert b.handle is not None


def test_set_limit_bytes_and_fraction(fake):
    pool = make(fake)
    pool.set_limit(0.5)
    assert pool.stats()["limit_bytes"] == fake.info.memory_bytes // 2
    pool.set_limit(3 * MiB)
    assert pool.limit == 3 * MiB
    pool.set_limit(None)
    assert pool.stats()["limit_bytes"] == fake.info.memory_bytes


def test_set_limit_trims_idle_segments(fake):
    pool = make(fake)
    a = [pool.allocate(4 * MiB) for _ in range(4)]
    del a
    pool.set_limit(8 * MiB)
    assert pool.stats()["reserved_bytes"] <= 8 * MiB


def test_oom_message_and_fields(fake):
    pool = make(fake, limit=8 * MiB)
    keep = pool.allocate(5 * MiB)
    with pool.pinned([keep]), pytest.raises(DsrtOutOfMemoryError) as info:  # nothing may be spilled
        pool.allocate(6 * MiB)
    err = info.value
    assert isinstance(err, OutOfMemoryError) and isinstance(err, MemoryError) and isinstance(err, dsrt.DsrtError)
    assert err.requested == 6 * MiB and err.capacity == 8 * MiB
    assert err.largest_free == 0
    msg = str(err)
    assert "fake:0" in msg and "requested 6.00 MiB" in msg and "capacity 8.00 MiB" in msg
    assert "largest free block" in msg and "tried:" in msg
    assert any("freeing" in t for t in err.tried) and any("spilling" in t for t in err.tried)
    assert err.stats["ooms"] == 1 and pool.stats()["ooms"] == 1
    with pytest.raises(DsrtOutOfMemoryError, match="exceeds the capacity"):
        pool.allocate(9 * MiB)
    assert keep.handle is not None


def test_oom_after_retry_frees_cache_first(fake):
    pool = make(fake, limit=8 * MiB)
    a = pool.allocate(6 * MiB)
    del a  # 6 MiB idle segment cached
    b = pool.allocate(7 * MiB)  # must return the idle segment and retry
    s = pool.stats()
    assert b.handle is not None and s["reserved_bytes"] == 7 * MiB
    assert s["spills"] == 0


def test_deferred_free_when_lock_is_held(fake):
    pool = make(fake)
    a = pool.allocate(4096)
    with pool._lock:  # a finaliser running inside the pool's critical section
        a.release()
        assert pool._deferred
    assert pool.stats()["allocated_bytes"] == 0 and not pool._deferred


def test_runtime_memory_stats(rt, cpu):
    s = rt.memory_stats(cpu)
    for key in ("allocated_bytes", "reserved_bytes", "active_bytes", "peak_reserved_bytes", "cache_hits",
                "retries", "ooms", "largest_free_block_bytes", "fragmentation", "num_allocs"):
        assert key in s
