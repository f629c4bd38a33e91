"""The OpenCL device contract: probe, DeviceInfo, memory, streams and events, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import dsrt
from dsrt.errors import DeviceUnavailableError, KernelLaunchError, OutOfMemoryError, UnsupportedKernelError


def test_probe_without_pyopencl_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsrt_opencl

    monkeypatch.setitem(sys.modules, "pyopencl", None)
    with pytest.raises(DeviceUnavailableError) as info:
        dsrt_opencl.probe(None)
    assert info.value.reason == "pyopencl not installed: pip install dsrt[opencl]"


def test_probe_without_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    cl = pytest.importorskip("pyopencl")
    import dsrt_opencl

    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    with pytest.raises(DeviceUnavailableError, match="no OpenCL platform found"):
        dsrt_opencl.probe(None)


def test_registered_and_listed(rt: dsrt.Runtime, ocl: dsrt.Device) -> None:
    status = rt.backends["opencl"]
    assert status.status == "available" and status.spec is not None
    assert status.spec.install_hint == "pip install dsrt[opencl]"
    assert ocl.id == "opencl:0" and ocl in rt.devices


def test_device_info_comes_from_the_driver(ocl: dsrt.Device) -> None:
    d = ocl.cl_device
    info = ocl.info
    assert info.compute_units == d.max_compute_units
    assert info.memory_bytes == d.global_mem_size
    assert info.properties["max_work_group_size"] == d.max_work_group_size
    assert info.properties["local_memory_bytes"] == d.local_mem_size
    assert info.properties["driver_version"] == d.driver_version
    assert info.peak_flops == pytest.approx(
        d.max_compute_units * d.max_clock_frequency * 1e6 * d.preferred_vector_width_float * 2)
    assert ("float64" in info.dtypes) == ("cl_khr_fp64" in d.extensions)
    assert ("float16" in info.dtypes) == ("cl_khr_fp16" in d.extensions)
    assert {"bfloat16", "float8_e4m3fn", "float8_e5m2", "int8"} <= info.dtypes
    assert set(info.kernels) >= set(dsrt.kernels.STANDARD_KERNELS)
    assert info.memory_bandwidth > 0 and "opencl" in info.languages


def test_float16_is_refused_without_the_extension(ocl: dsrt.Device) -> None:
    if "float16" in ocl.info.dtypes:
        pytest.skip("this device has cl_khr_fp16")
    with pytest.raises(UnsupportedKernelError, match="float16"):
        ocl.launch("add", ocl.asarray(np.ones(3, np.float16)), ocl.asarray(np.ones(3, np.float16)))


def test_round_trip_and_device_copies(rt: dsrt.Runtime, ocl: dsrt.Device) -> None:
    host = np.arange(4097, dtype=np.int16)
    a = ocl.asarray(host)
    np.testing.assert_array_equal(a.numpy(), host)
    b = ocl.empty(host.shape, host.dtype)
    ocl.copy(b, a)
    np.testing.assert_array_equal(b.numpy(), host)
    c = a.to("cpu:0")
    np.testing.assert_array_equal(c.numpy(), host)
    np.testing.assert_array_equal(c.to(ocl).numpy(), host)
    empty = ocl.asarray(np.zeros(0, np.float32))
    assert empty.numpy().shape == (0,)


def test_streams_and_device_timed_events(ocl: dsrt.Device) -> None:
    s = ocl.create_stream("side")
    assert s.native is not ocl.default_stream.native
    x = ocl.asarray(np.ones((256, 256), np.float32), stream=s)
    start = s.record_event()
    y = ocl.launch("gemm", x, x, stream=s)
    end = s.record_event()
    end.synchronize()
    assert end.query() and start.query()
    elapsed = start.elapsed_time(end)
    assert 0 < elapsed < 60
    s.synchronize()
    np.testing.assert_allclose(ocl.copy_to_host(y, stream=s), np.full((256, 256), 256.0))


def test_allocation_beyond_the_device_limit(ocl: dsrt.Device) -> None:
    with pytest.raises(OutOfMemoryError) as info:
        ocl._allocate(ocl.max_alloc + 1)
    assert info.value.device == "opencl:0" and info.value.requested == ocl.max_alloc + 1


def test_vendor_errors_become_dsrt_errors(ocl: dsrt.Device) -> None:
    src = "__kernel void one(__global float* y) { y[get_global_id(0)] = 1.0f; }"
    k = ocl.compile(src, lang="opencl", name="one")
    y = ocl.empty(8)
    with pytest.raises(KernelLaunchError) as info:
        k.launch(y, global_size=7, local_size=(3, 5))
    assert "opencl:0" in str(info.value) and "(7,)" in str(info.value)
    raw = info.value.__cause__
    assert isinstance(raw, ocl.cl.Error)
    err = ocl._translate_error(raw, "kernel 'one' on float32(8,)")
    assert isinstance(err, dsrt.errors.DsrtError) and "float32(8,)" in str(err) and "opencl:0" in str(err)


def test_pool_compacts_device_memory_at_its_limit(ocl: dsrt.Device) -> None:
    """At the limit, a fragmented OpenCL pool moves live buffers (device-side copies) instead of
    spilling, and kernels see the moved data through fresh sub-buffers."""
    from dsrt.memory import CachingPool
    from dsrt_opencl.device import OpenCLDevice

    dev = OpenCLDevice(ocl.cl, ocl.context, ocl.cl_device, 98)
    pool = CachingPool(dev, limit=256 << 10, idle_shrink_s=None, quick_blocks=0)
    dev._pool = pool
    ref = [np.arange(2048, dtype=np.float32) + 1000 * i for i in range(32)]  # 8 KiB each
    arrays = []
    for r in ref:
        a = dev.empty(r.shape, r.dtype)
        dev.copy_from_host(a, r)
        arrays.append(a)
    assert pool.stats()["num_segments"] == 1
    for a in arrays[::2]:
        a.release()
    kept, kept_ref = arrays[1::2], ref[1::2]
    before = [a.allocation.offset for a in kept]
    big = dev.empty((16 * 1024,), np.float32)  # 64 KiB: fits only once blocks move
    s = pool.stats()
    assert s["compactions"] == 1 and s["spills"] == 0 and s["reserved_bytes"] == 256 << 10
    assert any(a.allocation.offset != off for a, off in zip(kept, before, strict=True))
    for a, r in zip(kept, kept_ref, strict=True):
        np.testing.assert_array_equal(a.numpy(), r)
    np.testing.assert_array_equal(dev.launch("add", kept[2], kept[5]).numpy(), kept_ref[2] + kept_ref[5])
    dev.copy_from_host(big, np.ones(16 * 1024, np.float32))
    np.testing.assert_array_equal(big.numpy(), 1.0)
