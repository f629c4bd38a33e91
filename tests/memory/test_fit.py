"""The one fit rule: the allocation hot path and ``FreeIndex.find`` choose the same free block."""

from __future__ import annotations

import numpy as np
import pytest

from dsrt.memory import ALIGNMENT, CachingPool
from dsrt.memory.fit import PROBES, choose

KiB = 1 << 10


def fragmented_pair(dev_factory, seed: int) -> tuple[CachingPool, CachingPool, list, list]:
    """Two pools with identical random free lists (random sizes, a random half freed)."""
    pools, keeps = [], []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        pool = CachingPool(dev_factory(), idle_shrink_s=None, quick_blocks=0, compact_ratio=None)
        sizes = np.minimum(rng.lognormal(np.log(3000), 1.0, 300).astype(int) + 1, 200 * KiB).tolist()
        allocs = [pool.allocate(n) for n in sizes]
        drop = rng.random(len(allocs)) < 0.5
        keep = [a for a, d in zip(allocs, drop, strict=True) if not d]
        for a, d in zip(allocs, drop, strict=True):
            if d:
                a.release()
        pools.append(pool)
        keeps.append(keep)
    return pools[0], pools[1], keeps[0], keeps[1]


@pytest.mark.parametrize("seed", range(12))
def test_hot_path_and_find_choose_the_same_block_on_random_free_lists(fake, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    dev_factory = type(fake)
    checked = 0
    for trial in range(6):
        by_find, by_alloc, _k1, _k2 = fragmented_pair(dev_factory, seed * 100 + trial)
        n = int(rng.integers(1, 40 * KiB))
        size = -(-n // ALIGNMENT) * ALIGNMENT
        stream = by_alloc._default_stream
        expected = choose(by_alloc._small, size, stream)
        found = by_find._small.find(size, stream)
        if expected is None:
            assert found is None
            continue
        assert found is not None
        where = (expected.segment.serial, expected.offset)  # before the split moves the free block's start
        alloc = by_alloc.allocate(n)
        assert (found.segment.serial, found.offset) == where
        assert (alloc.pool_data.segment.serial, alloc.offset) == where
        assert by_alloc.stats()["segment_allocs"] == by_find.stats()["segment_allocs"]  # no growth: a fit
        checked += 1
    assert checked  # the free lists were fragmented enough to serve requests


def test_own_bin_takes_the_smallest_fitting_block_and_upper_bins_the_first(fake) -> None:
    pool = CachingPool(fake, idle_shrink_s=None, quick_blocks=0, compact_ratio=None)
    # Free blocks of 37.75, 37.25 and 36.75 KiB, in that order, in one bin (36..38 KiB), and one of
    # 20 KiB; 256-byte live blocks between them keep them from merging.
    sizes = [38656, 256, 38144, 256, 37632, 256, 20 * KiB, 256]
    allocs = [pool.allocate(n) for n in sizes]
    offsets = [a.offset for a in allocs]
    for i in (0, 2, 4, 6):
        allocs[i].release()
    # 36.25 KiB: the smallest block of its bin that holds it (the third), not the first.
    assert pool.allocate(37120).offset == offsets[4]
    # 37.25 KiB: the exact fit (the second), although a larger fitting block comes first.
    assert pool.allocate(38144).offset == offsets[2]
    # 12 KiB: nothing in its own bin; the first block of the next non-empty bin (the 20 KiB one).
    assert pool.allocate(12 * KiB).offset == offsets[6]
    assert PROBES >= 3  # the rule above looks at three blocks of one bin
