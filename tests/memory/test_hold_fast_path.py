"""The pool's lock-free ``hold`` and the inlined quick-cache free.

``hold`` skips the pool lock when no move (compaction, spill, fetch) is under way; these tests pin
down the three halves of that argument: it does skip the lock, it does wait for a move under way,
and every move raises the flag it reads. The threaded stress test (test_threaded_stress.py) races
them for real.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from dsrt.memory import IN_USE, CachingPool, in_use
from dsrt_cpu import CpuDevice

MiB = 1 << 20


def make(dev, **kw):
    kw.setdefault("idle_shrink_s", None)
    return CachingPool(dev, **kw)


def test_hold_takes_no_lock_when_nothing_moves():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev)
    a = pool.allocate(1024)
    before = a.last_use
    with pool._lock:  # another thread's critical section that moves nothing
        done = threading.Event()

        def hold() -> None:
            pool.hold([a])
            done.set()

        t = threading.Thread(target=hold)
        t.start()
        assert done.wait(5), "hold waited for a lock although no move was under way"
        t.join()
    assert a.last_use > before  # still marked used


def test_hold_waits_for_a_move_under_way():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev)
    a = pool.allocate(1024)
    done = threading.Event()
    pool._lock.acquire()
    pool._moving = True  # as compaction or spilling sets it, under the lock
    try:
        t = threading.Thread(target=lambda: (pool.hold([a]), done.set()))
        t.start()
        assert not done.wait(0.2), "hold returned while a move was under way"
    finally:
        pool._moving = False
        pool._lock.release()
    assert done.wait(5)
    t.join()


def test_hold_fetches_a_spilled_allocation():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev)
    a = pool.allocate(4096)
    dev._copy_in(a.handle, a.offset, np.full(4096, 7, np.uint8), dev.default_stream)
    assert pool.spill(a) > 0 and a.handle is None
    held = (a,)
    IN_USE[id(held)] = held
    try:
        pool.hold(held)
        assert a.handle is not None
        out = np.empty(4096, np.uint8)
        dev._copy_out(a.handle, a.offset, out, dev.default_stream)
        assert (out == 7).all()
    finally:
        del IN_USE[id(held)]
    assert not pool._moving


def test_every_move_raises_the_moving_flag():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev, limit=4 * MiB)
    seen: dict[str, bool] = {}

    def watch(obj, name):
        real = getattr(obj, name)

        def wrapped(*args, **kw):
            seen[name] = pool._moving
            return real(*args, **kw)
        setattr(obj, name, wrapped)

    watch(pool._spiller, "spill")
    watch(pool._spiller, "fetch")
    watch(pool._compactor, "compact")
    # Small blocks with holes between them, then a request no hole fits: compaction.
    keep = [pool.allocate(64 << 10) for _ in range(48)]
    del keep[::2]
    big = [pool.allocate(200 << 10)]
    # Past the limit: the least recently used live blocks spill; touching one fetches it back.
    live = [pool.allocate(MiB) for _ in range(6)]
    assert any(x.handle is None for x in keep + big + live)
    for x in keep + big + live:
        x.touch()
    assert seen == {"spill": True, "fetch": True, "compact": True}, seen
    assert not pool._moving


def test_in_use_block_reads_current_handles_under_spilling_threads():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev, limit=2 * MiB)
    arrays = [dev.asarray(np.full(64 << 10, i, np.uint8)) for i in range(24)]  # 1.5 MiB
    stop = threading.Event()
    bad: list[int] = []

    def churn() -> None:
        while not stop.is_set():
            tmp = [pool.allocate(256 << 10) for _ in range(3)]  # pushes the others out
            del tmp

    t = threading.Thread(target=churn)
    t.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for i, arr in enumerate(arrays):
                with in_use([arr]):
                    view = np.frombuffer(arr.allocation.handle, np.uint8, arr.nbytes, arr.handle_offset)
                    if view[0] != i or view[-1] != i:
                        bad.append(i)
    finally:
        stop.set()
        t.join()
    assert not bad
    assert pool.spills > 0


def test_quick_cache_stays_bounded_and_merges_back_the_oldest():
    dev = CpuDevice(0)
    pool = dev.pool = make(dev)
    anchor = pool.allocate(512)
    waiting = pool.allocate(4096)
    del waiting  # cached whole and never asked for again
    for _ in range(5000):
        pool.allocate(1024)  # allocated and freed at once: the quick cache's churn
    assert 1 <= pool.quick_count <= pool.quick_blocks
    assert [b.size for b in pool._quick[4096]] == [4096]  # still waiting: the churn reused one block
    small = make(dev, quick_blocks=2)
    a, b, c = small.allocate(256), small.allocate(512), small.allocate(768)
    blocks = [x.pool_data for x in (a, b, c)]
    del a, b, c  # freed in this order: the first is the oldest once a third waits
    waiting_now = {blk.size for lst in small._quick.values() for blk in lst}
    assert small.quick_count == 2 and waiting_now == {512, 768}
    assert blocks[0].requested == 0  # merged back into the free index
    del anchor
    s = pool.stats()
    assert s["allocated_bytes"] == 0 and s["requested_bytes"] == 0
