"""The pool's quick-cache paths in C (dsrt/memory/_fastpool.c) against the Python methods they stand
in for: the same blocks, the same counters and statistics after the same trace, nothing leaked."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsrt
import dsrt.memory.pool as pool_module
from dsrt.memory import Allocation, CachingPool


def test_the_extension_is_built_and_installed() -> None:
    if not pool_module.fast_paths_enabled():
        pytest.skip("DSRT_FASTPATH=off")
    assert pool_module.FAST_POOL, "dsrt.memory._fastpool was not built (pip install -e . builds it; needs a C compiler)"
    assert CachingPool.allocate is not pool_module.python_allocate
    assert Allocation.__del__ is not pool_module.python_finalise
    from dsrt.memory import _fastpool

    assert _fastpool.install_finalizer()  # the C finaliser is in place (and installing it again is harmless)


def _trace(seed: int, steps: int = 3000) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    ops: list[tuple[str, int]] = []
    live = 0
    for _ in range(steps):
        if live and rng.random() < 0.48:
            ops.append(("free", int(rng.integers(live))))
            live -= 1
        else:
            small = rng.random() < 0.8
            ops.append(("alloc", int(rng.integers(1, 70_000 if small else 3 << 20))))
            live += 1
    return ops


def _run(pool: CachingPool, ops: list[tuple[str, int]], allocate, free) -> list[tuple[int, int, int]]:
    live: list[Allocation] = []
    places = []
    for op, arg in ops:
        if op == "alloc":
            a = allocate(pool, arg)
            live.append(a)
            places.append((a.offset, a.nbytes, a.pool_data.segment.serial))
        else:
            a = live.pop(arg)
            a.pool = None
            free(pool, a)
    return places


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_trace_ends_with_the_same_blocks_and_counters_either_way(seed: int) -> None:
    ops = _trace(seed)
    results = []
    for allocate, free in ((CachingPool.allocate, CachingPool.free),
                           (pool_module.python_allocate, pool_module.python_free)):
        rt = dsrt.Runtime(plugins=["cpu"])
        pool = rt.device("cpu:0").pool
        pool.set_limit(None)
        places = _run(pool, ops, allocate, free)
        stats = pool.stats()
        results.append((places,
                        {k: v for k, v in stats.items() if isinstance(v, (int, float)) and "time" not in k}))
    assert results[0][0] == results[1][0]  # the same offsets in the same segments, call for call
    assert results[0][1] == results[1][1]


def test_quick_hits_count_as_the_python_path_counts() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    pool = rt.device("cpu:0").pool
    a = pool.allocate(1000)
    block = a.pool_data
    del a
    before = dict(allocs=pool.num_allocs, frees=pool.num_frees, quick=pool.quick_count)
    b = pool.allocate(900)  # same rounded size: the quick cache's block
    assert b.pool_data is block and b.nbytes == 900 and pool.quick_count == before["quick"] - 1
    assert pool.num_allocs == before["allocs"] + 1 and pool.requested >= 900
    assert block.alloc_ref() is b and block.requested == 900 and not block.free
    del b
    assert pool.num_frees == before["frees"] + 1 and pool.quick_count == before["quick"]
    assert block.requested < 0  # cached whole


def test_no_reference_is_leaked_and_finalisers_give_back() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    pool = rt.device("cpu:0").pool
    stream = pool.device.default_stream
    pool.allocate(64)
    watched = [pool, stream, pool.device]
    before = [sys.getrefcount(x) for x in watched]
    for _ in range(5000):
        pool.allocate(64, stream)
        pool.allocate(64, stream=stream)
        pool.allocate(200_000)
    gc.collect()
    assert [sys.getrefcount(x) for x in watched] == before
    a = pool.allocate(64)
    assert sys.getrefcount(a) == 2
    allocated = pool.allocated
    del a
    assert pool.allocated < allocated


def test_a_busy_lock_queues_the_free() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    pool = rt.device("cpu:0").pool
    a = pool.allocate(64)
    frees = pool.num_frees
    with pool._lock:
        del a  # the finaliser finds the lock taken: queued, not lost
        assert pool.num_frees == frees and len(pool._deferred) == 1
    b = pool.allocate(64)  # the next operation drains the queue
    assert pool.num_frees == frees + 1 and not pool._deferred and b.pool is pool


def test_off_keeps_the_python_methods() -> None:
    import subprocess

    code = ("import dsrt.memory.pool as p, dsrt.memory as m; print(p.FAST_POOL,"
            " m.CachingPool.allocate is p.python_allocate)")
    env = {**os.environ, "DSRT_FASTPATH": "off"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]


def test_c_counters_are_the_python_counters_twin() -> None:
    if not pool_module.FAST_POOL:
        pytest.skip("dsrt.memory._fastpool not built or DSRT_FASTPATH=off")
    from dsrt.memory import _fastpool
    from dsrt.memory.stats import Counters

    c = _fastpool.Counters()
    for name in Counters.__slots__:
        assert getattr(c, name) == 0
        setattr(c, name, 7)
        assert getattr(c, name) == 7
    with pytest.raises(AttributeError):
        c.not_a_counter = 1  # type: ignore[attr-defined]


def test_a_pool_with_python_counters_takes_the_python_paths() -> None:
    from dsrt.memory.stats import Counters

    rt = dsrt.Runtime(plugins=["cpu"])
    pool = rt.device("cpu:0").pool
    pool.counters = Counters()
    pool._core = None  # a pool without a core: the C paths hand everything to the Python methods
    keep = [pool.allocate(100) for _ in range(3)]
    block = keep[0].pool_data
    del keep[0]
    again = pool.allocate(100)
    assert again.pool_data is block and pool.counters.num_allocs == 4 and pool.counters.num_frees == 1
    assert pool.counters.allocated == 3 * 256 and pool.counters.requested == 300


def test_c_lock_is_a_lock() -> None:
    if not pool_module.FAST_POOL:
        pytest.skip("dsrt.memory._fastpool not built or DSRT_FASTPATH=off")
    import threading

    from dsrt.memory import _fastpool

    lock = _fastpool.Lock()
    assert lock.acquire() and lock.locked() and not lock.acquire(False)
    assert not lock.acquire(timeout=0.01)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    total = [0]

    def bump() -> None:
        for _ in range(20_000):
            with lock:
                value = total[0]
                total[0] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert total[0] == 80_000 and not lock.locked()
    waiter_got = []
    lock.acquire()
    waiter = threading.Thread(target=lambda: waiter_got.append(lock.acquire(timeout=5)))
    waiter.start()
    lock.release()  # the blocked waiter (GIL released while it waits) takes it
    waiter.join(10)
    assert waiter_got == [True] and lock.locked()
    lock.release()


def test_c_lock_hands_over_between_sleeping_holders() -> None:
    """Holders that give up the GIL while holding the lock (time.sleep) force every other thread to
    sleep on it: each wakes, finds it free or taken again, and the count still comes out exact."""
    if not pool_module.FAST_POOL:
        pytest.skip("dsrt.memory._fastpool not built or DSRT_FASTPATH=off")
    import threading
    import time

    from dsrt.memory import _fastpool

    lock = _fastpool.Lock()
    inside = [0]
    most = [0]
    total = [0]

    def work() -> None:
        for _ in range(200):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0)  # let the others run (and block) while this one holds the lock
                total[0] += 1
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert total[0] == 1200 and most[0] == 1 and not lock.locked()
    start = time.monotonic()
    lock.acquire()
    assert not lock.acquire(timeout=0.05) and time.monotonic() - start >= 0.05
    lock.release()


_CPU: list[object] = []


def _shared_cpu() -> object:
    """One CPU device for every example (a pool of its own each time)."""
    if not _CPU:
        _CPU.append(dsrt.Runtime(plugins=["cpu"]).device("cpu:0"))
    return _CPU[0]


def _state(pool: CachingPool) -> tuple[object, ...]:
    """Everything the C and Python paths must agree on: every block of every segment, both free
    indexes (bins, flags, totals, spares) and the quick cache, and the counters."""
    layout = [{k: v for k, v in seg.items() if k != "blocks"} | {
        "blocks": [{k: v for k, v in blk.items() if k != "last_use"} for blk in seg["blocks"]]}
        for seg in pool.snapshot()]
    indexes = [(ix.free_bytes, ix.count, bytes(ix.nonempty), len(ix.spare),
                sorted((b, sorted((blk.offset, blk.size, blk.segment.serial) for blk in bucket))
                       for b, bucket in ix.bins.items()))
               for ix in (pool._small, pool._large)]
    quick = sorted((size, [(blk.offset, blk.segment.serial) for blk in lst]) for size, lst in pool._quick.items() if lst)
    counters = {k: v for k, v in pool.stats().items() if isinstance(v, (int, float)) and "time" not in k}
    return layout, indexes, quick, counters


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.integers(0, 4096), st.integers(0, 1 << 20)),
                          st.integers(1, 3 << 20), st.integers(0, 63)), min_size=1, max_size=150))
def test_any_trace_leaves_the_c_and_python_pools_identical(steps: list[tuple[bool, int, int, int]]) -> None:
    """Hypothesis: allocations of small and large sizes (and requests of exactly a freed block's size,
    the quick cache's case) interleaved with frees in any order leave the pool in the same state,
    block for block, whichever paths ran them."""
    if not pool_module.FAST_POOL:
        pytest.skip("dsrt.memory._fastpool not built or DSRT_FASTPATH=off")
    states = []
    device = _shared_cpu()
    for allocate, free in ((CachingPool.allocate, CachingPool.free),
                           (pool_module.python_allocate, pool_module.python_free)):
        pool = CachingPool(device, idle_shrink_s=None)
        live: list[Allocation] = []
        for is_free, small, large, pick in steps:
            if is_free and live:
                a = live.pop(pick % len(live))
                a.pool = None
                free(pool, a)
            else:
                live.append(allocate(pool, small if pick % 4 else large))
        states.append(_state(pool))
        for a in live:
            a.pool = None
            free(pool, a)
        states.append(_state(pool))
    assert states[0] == states[2]  # after the trace
    assert states[1] == states[3]  # and once everything is freed
