"""Spilling to host tiers and back, pinning, and stream-aware reuse."""

from __future__ import annotations

import numpy as np
import pytest

from dsrt.errors import DsrtOutOfMemoryError
from dsrt.memory import CachingPool
from dsrt_cpu import CpuDevice

MiB = 1 << 20


def make(dev, **kw):
    kw.setdefault("idle_shrink_s", None)
    return CachingPool(dev, **kw)


def fill(pool, dev, nbytes, value):
    a = pool.allocate(nbytes)
    dev._copy_in(a.handle, a.offset, np.full(nbytes, value, np.uint8), dev.default_stream)
    return a


def read(dev, a):
    a.touch()
    out = np.empty(a.nbytes, np.uint8)
    dev._copy_out(a.handle, a.offset, out, dev.default_stream)
    return out


def test_working_set_twice_the_limit_completes_by_spilling():
    dev = CpuDevice(0)
    limit = 8 * MiB
    dev.pool = make(dev, limit=limit)
    n = MiB // 4  # float32 elements: 1 MiB per array
    rng = np.random.default_rng(0)
    hosts = [rng.standard_normal(n).astype(np.float32) for _ in range(16)]  # 16 MiB: twice the limit
    arrays = [dev.asarray(h) for h in hosts]
    assert dev.pool.stats()["spills"] > 0
    # Sum neighbours in a round-robin order that keeps touching spilled arrays.
    for i in range(16):
        out = dev.launch("add", arrays[i], arrays[(i + 5) % 16])
        np.testing.assert_allclose(dev.copy_to_host(out), hosts[i] + hosts[(i + 5) % 16], rtol=1e-6)
        del out
    for h, a in zip(hosts, arrays, strict=False):
        np.testing.assert_array_equal(dev.copy_to_host(a), h)
    s = dev.pool.stats()
    assert s["reserved_bytes"] <= limit and s["peak_reserved_bytes"] <= limit
    assert s["fetches"] > 0 and s["spilled_bytes"] > 0 and s["host_tier_bytes"] == s["spilled_bytes"]


def test_spill_moves_bytes_and_touch_brings_them_back(fake):
    pool = make(fake)
    a = fill(pool, fake, 5000, 7)
    gen = a.generation
    assert pool.spill(a) > 0
    assert a.handle is None and a.generation == gen + 1
    assert pool.stats()["spilled_bytes"] > 0 and pool.stats()["allocated_bytes"] == 0
    np.testing.assert_array_equal(read(fake, a), np.full(5000, 7, np.uint8))
    assert a.handle is not None and a.generation == gen + 2
    assert pool.stats()["spilled_bytes"] == 0 and pool.stats()["fetches"] == 1


def test_spill_prefers_least_recently_used_and_skips_pinned(fake):
    pool = make(fake, limit=4 * MiB)
    a = fill(pool, fake, 1536 * 1024, 1)
    b = fill(pool, fake, 1536 * 1024, 2)
    b.touch()
    a.touch()  # b is now the least recently used
    with pool.pinned([b]):
        c = fill(pool, fake, 1536 * 1024, 3)  # must spill a (b is pinned)
        assert a.handle is None and b.handle is not None
    d = fill(pool, fake, 1536 * 1024, 4)  # now b (LRU) goes
    assert b.handle is None and c.handle is not None and d.handle is not None
    for alloc, v in ((a, 1), (b, 2), (c, 3), (d, 4)):
        np.testing.assert_array_equal(read(fake, alloc), np.full(alloc.nbytes, v, np.uint8))


def test_pinned_host_tier_comes_first(fake):
    dev = type(fake)(64 * MiB, pinned=True)
    pool = make(dev, pinned_limit=2 * MiB)
    a = fill(pool, dev, MiB, 1)
    b = fill(pool, dev, 2 * MiB, 2)
    pool.spill(a)
    pool.spill(b)  # no room left in the pinned tier: ordinary host memory
    s = pool.stats()
    assert dev.pinned_allocs == 1 and s["pinned_host_bytes"] == MiB and s["host_tier_bytes"] == 2 * MiB
    np.testing.assert_array_equal(read(dev, a), np.full(MiB, 1, np.uint8))
    assert pool.stats()["pinned_host_bytes"] == 0


def test_free_while_spilled_releases_host_copy(fake):
    pool = make(fake)
    a = fill(pool, fake, 3000, 5)
    pool.spill(a)
    a.release()
    s = pool.stats()
    assert s["spilled_bytes"] == 0 and s["host_tier_bytes"] == 0


def test_oom_when_nothing_can_be_spilled(fake):
    pool = make(fake, limit=4 * MiB)
    keep = fill(pool, fake, 3 * MiB, 1)
    with pool.pinned([keep]), pytest.raises(DsrtOutOfMemoryError) as info:
        pool.allocate(2 * MiB)
    assert info.value.requested == 2 * MiB and "spilling 0 bytes" in str(info.value)


def test_same_stream_reuses_at_once_other_stream_waits(async_device):
    dev = async_device
    pool = make(dev)
    s1, s2 = dev.create_stream("s1"), dev.create_stream("s2")
    a = pool.allocate(4096, s1)
    where = (a.pool_data.segment, a.offset)
    dev.enqueue(s1)  # a kernel using `a` is still running on s1
    a.release()
    raw = dev.raw_allocs
    c = pool.allocate(4096, s1)
    assert (c.pool_data.segment, c.offset) == where and dev.raw_allocs == raw  # same stream: at once
    c.release()
    b = pool.allocate(4096, s2)
    assert b.pool_data.segment is not where[0] and dev.raw_allocs == raw + 1  # other stream: not yet
    s = pool.stats()
    assert s["active_bytes"] > s["allocated_bytes"]  # freed bytes still waiting on s1
    assert any(blk["state"] == "pending" for seg in pool.snapshot() for blk in seg["blocks"])
    dev.finish(s1)
    s = pool.stats()
    assert s["active_bytes"] == s["allocated_bytes"]
    raw = dev.raw_allocs
    d = pool.allocate(253 << 10, s2)  # fits only the first segment's free space, now usable by s2
    assert d.pool_data.segment is where[0] and dev.raw_allocs == raw


def test_empty_cache_waits_for_pending_events(async_device):
    dev = async_device
    pool = make(dev)
    s1 = dev.create_stream("s1")
    a = pool.allocate(3 * MiB, s1)
    dev.enqueue(s1)
    a.release()
    assert pool.empty_cache() == 3 * MiB
    assert dev.done[id(s1)] == dev.queued[id(s1)]  # it synchronised before freeing
    assert pool.stats()["reserved_bytes"] == 0
