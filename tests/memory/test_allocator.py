"""The allocator boundary: a Device's primitives adapted, capabilities as data, vendor errors
translated once (device id and byte sizes in the message) on every path the pool takes."""

from __future__ import annotations

import numpy as np
import pytest
from _fakes import AsyncDevice, FakeDevice

from dsrt.errors import DeviceError, DsrtError, OutOfMemoryError
from dsrt.memory import CachingPool
from dsrt.memory.allocator import Allocator

KiB = 1 << 10


class VendorError(Exception):
    """What a vendor library raises."""


def test_every_device_gets_an_allocator_with_its_capabilities() -> None:
    sync, queued = FakeDevice(), AsyncDevice()
    assert isinstance(sync.allocator, Allocator) and sync.allocator is sync.allocator
    assert sync.allocator.synchronous and sync.allocator.host_visible and sync.allocator.peer_transfer
    assert not queued.allocator.synchronous
    assert sync.allocator.memory_bytes == sync.info.memory_bytes and not sync.allocator.pinned_host
    assert FakeDevice(pinned=True).allocator.pinned_host


def test_the_pool_reaches_memory_only_through_the_allocator() -> None:
    dev = FakeDevice()
    calls: list[str] = []

    class Counting(Allocator):
        synchronous = host_visible = True

        def _allocate(self, nbytes):
            calls.append("allocate")
            return dev._allocate(nbytes)

        def _free(self, handle):
            calls.append("free")

        def _copy_in(self, handle, offset, src, stream):
            calls.append("copy_in")
            dev._copy_in(handle, offset, src, stream)

        def _copy_out(self, handle, offset, dst, stream):
            calls.append("copy_out")
            dev._copy_out(handle, offset, dst, stream)

    dev.__dict__["_allocator"] = Counting(dev.id, dev.info.memory_bytes, dev.default_stream)
    pool = CachingPool(dev, idle_shrink_s=None)
    a = pool.allocate(4 * KiB)
    data = np.arange(4 * KiB, dtype=np.uint8)
    dev._copy_in(a.handle, a.offset, data, dev.default_stream)
    pool.spill(a)
    a.touch()
    out = np.empty_like(data)
    dev._copy_out(a.handle, a.offset, out, dev.default_stream)
    np.testing.assert_array_equal(out, data)
    a.release()
    pool.empty_cache()
    assert calls == ["allocate", "copy_out", "copy_in", "free"]


@pytest.mark.parametrize("path", ["allocate", "spill", "fetch", "free"])
def test_vendor_errors_become_dsrt_errors_naming_device_and_size(path: str) -> None:
    dev = FakeDevice()
    pool = CachingPool(dev, idle_shrink_s=None)
    a = pool.allocate(3000)
    if path == "fetch":
        pool.spill(a)

    def boom(*args, **kwargs):
        raise VendorError("driver said no")

    primitive = {"allocate": "_allocate", "spill": "_copy_out", "fetch": "_copy_in", "free": "_free"}[path]
    dev.__dict__[primitive] = boom
    with pytest.raises(DsrtError) as info:
        if path == "allocate":
            pool.allocate(8 << 20)
        elif path == "spill":
            pool.spill(a)
        elif path == "fetch":
            a.touch()
        else:
            a.release()
            pool.empty_cache()
    err = info.value
    assert isinstance(err, DeviceError) and not isinstance(err, OutOfMemoryError)
    assert "fake:0" in str(err) and "driver said no" in str(err)
    if path != "free":
        assert "KiB" in str(err) or "MiB" in str(err)  # the size of what failed
    assert isinstance(err.__cause__, VendorError)


def test_a_device_out_of_memory_is_an_out_of_memory_error() -> None:
    dev = FakeDevice(memory_bytes=1 << 20)
    pool = CachingPool(dev, idle_shrink_s=None, limit=64 << 20)
    with pytest.raises(OutOfMemoryError) as info:
        pool.allocate(4 << 20)
    assert info.value.requested == 4 << 20 and "fake:0" in str(info.value)
