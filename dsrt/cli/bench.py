"""Measurements shared by ``dsrt bench`` and ``benchmarks/``: dispatch overhead and device throughput.

Every figure is measured in the same process as its peer (numpy) and reported as a median over
repeated batches; times are in seconds unless the key says ``_us`` (microseconds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..device import Device

__all__ = ["median_seconds", "per_call_seconds", "dispatch_overhead", "device_throughput"]


def median_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (compiles, first touches);
    ``sync`` (a device's ``synchronize``) is called after each, inside the timing."""
    fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_call_seconds(fn: Callable[[], Any], *, calls: int, batches: int = 15) -> list[float]:
    """Seconds per call of ``fn``, one figure per batch of ``calls`` calls."""
    fn()
    out = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls)
    return out


def dispatch_overhead(device: Device, *, repeats: int = 20000, size: int = 8) -> dict[str, Any]:
    """Launch overhead of ``add`` on ``size``-element float32 arrays against calling numpy directly.

    ``overhead_us`` = median(dsrt launch) - median(numpy call), both synchronous, in microseconds.
    ``alloc_launch_us`` is the same launch letting dsrt allocate the output from its pool.
    """
    from ..runtime import Runtime, default_runtime

    rt: Runtime = default_runtime()
    x = np.arange(size, dtype=np.float32)
    y = np.ones(size, np.float32)
    z = np.empty_like(x)
    a, b, c = device.asarray(x), device.asarray(y), device.asarray(z)
    calls = max(repeats // 15, 100)

    def numpy_add() -> None:
        np.add(x, y, out=z)

    def dsrt_add() -> None:
        rt.launch("add", a, b, out=c)
        device.synchronize()

    def dsrt_add_alloc() -> None:
        rt.launch("add", a, b)
        device.synchronize()

    # Interleave the measurements so background noise hits them alike.
    np_times, ds_times, al_times = [], [], []
    for _ in range(5):
        np_times += per_call_seconds(numpy_add, calls=calls, batches=3)
        ds_times += per_call_seconds(dsrt_add, calls=calls, batches=3)
        al_times += per_call_seconds(dsrt_add_alloc, calls=calls, batches=3)
    numpy_us = statistics.median(np_times) * 1e6
    dsrt_us = statistics.median(ds_times) * 1e6
    alloc_us = statistics.median(al_times) * 1e6
    if not np.array_equal(c.numpy(), x + y):
        raise AssertionError("dispatch benchmark: dsrt add gave a wrong result")
    return {
        "device": device.id,
        "elements": size,
        "numpy_us": round(numpy_us, 3),
        "dsrt_launch_us": round(dsrt_us, 3),
        "overhead_us": round(dsrt_us - numpy_us, 3),
        "alloc_launch_us": round(alloc_us, 3),
        "alloc_overhead_us": round(alloc_us - numpy_us, 3),
        "calls_per_batch": calls,
        "batches": len(ds_times),
    }


def _median_seconds(device: Device, launch: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``launch()`` followed by a synchronize (after one warm-up)."""
    launch()
    device.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        launch()
        device.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_throughput(device: Device, *, n: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """GEMM float32 FLOP/s and ``add`` bytes/s on ``device`` (median of ``repeats``)."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    if device.supports("gemm", "float32"):
        a = device.asarray(rng.standard_normal((n, n)).astype(np.float32))
        b = device.asarray(rng.standard_normal((n, n)).astype(np.float32))
        c = device.launch("gemm", a, b)
        seconds = _median_seconds(device, lambda: device.launch("gemm", a, b, out=c), repeats)
        out["gemm_fp32_gflops"] = round(2 * n**3 / seconds / 1e9, 2)
    if device.supports("add", "float32"):
        m = 1 << 22
        x = device.asarray(np.ones(m, np.float32))
        y = device.launch("add", x, x)
        seconds = _median_seconds(device, lambda: device.launch("add", x, x, out=y), repeats)
        out["add_fp32_gbps"] = round(3 * 4 * m / seconds / 1e9, 2)
    return out
