"""Property-based: random allocate/free/spill/fetch interleavings across threads keep blocks
disjoint, never lose contents (checked by hash after spills), and empty_cache returns everything."""

from __future__ import annotations

import hashlib
import itertools
import threading

import numpy as np
from _fakes import FakeDevice
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from dsrt.memory import CachingPool

MiB = 1 << 20

op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 300_000)),
    st.tuples(st.just("free"), st.integers(0, 63)),
    st.tuples(st.just("spill"), st.integers(0, 63)),
    st.tuples(st.just("fetch"), st.integers(0, 63)),
)


def digest(buf: np.ndarray) -> str:
    return hashlib.blake2b(buf.tobytes(), digest_size=16).hexdigest()


def run_thread(pool: CachingPool, dev: FakeDevice, ops: list, seed: int, out: list, errors: list) -> None:
    rng = np.random.default_rng(seed)
    live: list = []
    try:
        for kind, arg in ops:
            if kind == "alloc":
                a = pool.allocate(arg)
                data = rng.integers(0, 256, arg, dtype=np.uint8)
                with pool.pinned([a]):
                    a.touch()
                    dev._copy_in(a.handle, a.offset, data, dev.default_stream)
                live.append((a, digest(data)))
            elif live:
                a, _h = live[arg % len(live)]
                if kind == "free":
                    live.pop(arg % len(live))
                    a.release()
                elif kind == "spill":
                    pool.spill(a)
                else:
                    a.touch()
        out.extend(live)
    except Exception as exc:  # noqa: BLE001 - reported to the main thread's assertion
        errors.append(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=60), st.lists(op, max_size=60))
def test_random_interleavings_across_threads(ops_a, ops_b):
    check_interleavings(ops_a, ops_b, limit=2 * MiB)


small_op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(4 << 10, 48 << 10)),
    st.tuples(st.just("free"), st.integers(0, 63)),
    st.tuples(st.just("spill"), st.integers(0, 63)),
    st.tuples(st.just("fetch"), st.integers(0, 63)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(small_op, min_size=20, max_size=80), st.lists(small_op, min_size=20, max_size=80))
def test_random_interleavings_with_compaction(ops_a, ops_b):
    """Small blocks under a tight limit: the pool compacts (moves blocks) as well as spilling."""
    pool = check_interleavings(ops_a, ops_b, limit=512 << 10)
    target(float(pool.moves), label="blocks moved")


def check_interleavings(ops_a: list, ops_b: list, limit: int) -> CachingPool:
    dev = FakeDevice(64 * MiB)
    pool = CachingPool(dev, limit=limit, idle_shrink_s=None)
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=run_thread, args=(pool, dev, ops, i, results, errors))
               for i, ops in enumerate((ops_a, ops_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    s = pool.stats()
    assert s["reserved_bytes"] <= limit
    # Resident live blocks never overlap.
    spans = sorted((id(a.handle.base), a.offset, a.offset + a.pool_data.size) for a, _ in results
                   if a.handle is not None)
    for (b1, _s1, e1), (b2, s2, _e2) in itertools.pairwise(spans):
        assert b1 != b2 or e1 <= s2
    # Contents survive spills and fetches.
    for a, h in results:
        a.touch()
        buf = np.empty(a.nbytes, np.uint8)
        dev._copy_out(a.handle, a.offset, buf, dev.default_stream)
        assert digest(buf) == h
    assert s["allocated_bytes"] + s["spilled_bytes"] >= sum(a.nbytes for a, _ in results)
    for a, _ in results:
        a.release()
    results.clear()
    pool.empty_cache()
    s = pool.stats()
    assert s["reserved_bytes"] == 0 and s["allocated_bytes"] == 0 and s["spilled_bytes"] == 0
    assert dev.live_raw == 0
    return pool
