"""The per-block host view cache: a fresh array in a reused block gets a view of its own bytes,
shape and dtype, never a stale one (dsrt.memory.hostmem.host_view)."""

from __future__ import annotations

import numpy as np

import dsrt
from dsrt.memory.hostmem import host_view


def test_reused_block_serves_the_cached_view_only_when_it_describes_the_same_bytes() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    dev = rt.device("cpu:0")
    x = dev.asarray(np.arange(16, dtype=np.float32))
    y = dev.asarray(np.ones(16, np.float32))
    first = dev.launch("add", x, y)
    view = host_view(first)
    block = first.allocation.pool_data
    del first
    again = dev.launch("add", x, y)
    assert again.allocation.pool_data is block  # the quick cache hands the block back
    assert host_view(again) is view  # same bytes, same dtype and shape: the cached view
    np.testing.assert_array_equal(again.numpy(), np.arange(16) + 1.0)
    p, q = dev.asarray(np.arange(16, dtype=np.int32)), dev.asarray(np.full(16, 7, np.int32))
    del again
    # Same block, same shape and bytes, another dtype: a new view, and the results are right.
    other = dev.launch("add", p, q)
    assert other.allocation.pool_data is block
    v = host_view(other)
    assert v is not view and v.dtype == np.int32
    np.testing.assert_array_equal(other.numpy(), np.arange(16, dtype=np.int32) + 7)


def test_many_reuses_never_alias_two_live_arrays() -> None:
    rt = dsrt.Runtime(plugins=["cpu"])
    dev = rt.device("cpu:0")
    rng = np.random.default_rng(3)
    live = []
    for i in range(200):
        n = int(rng.integers(1, 64))
        h = rng.standard_normal(n).astype(np.float32)
        out = dev.launch("scale", dev.asarray(h), alpha=2.0)
        live.append((out, h * 2))
        if i % 3 == 0:
            live.pop(int(rng.integers(len(live))))
    for out, want in live:
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
