"""Fixtures for scheduler tests: an isolated runtime and fault-injecting CPU devices."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import dsrt
from dsrt.errors import DeviceLostError, KernelLaunchError

dsrt_cpu = pytest.importorskip("dsrt_cpu", reason="the cpu plugin is not installed")
from dsrt.memory.hostmem import host_view  # noqa: E402


class FaultyCpu(dsrt_cpu.CpuDevice):
    """A CPU device with a distinct id that fails on purpose.

    ``mode``: ``"lost"`` raises DeviceLostError from launch number ``after`` on; ``"hang"`` blocks in
    that launch until ``release`` is set (then finishes normally, a late result); ``"corrupt"``
    overwrites its staged first input, then raises DeviceLostError. ``poison(inputs)`` -> True makes a
    launch fail with KernelLaunchError whatever the mode. ``peak_scale`` multiplies the declared peak.
    """

    def __init__(self, index: int, *, mode: str = "ok", after: int = 0, release: threading.Event | None = None,
                 poison: Callable[[Sequence[Any]], bool] | None = None, peak_scale: float = 1.0) -> None:
        super().__init__(index)
        # Each test device stands for separate hardware, unless a test says otherwise.
        self.info = dataclasses.replace(self.info, peak_flops=self.info.peak_flops * peak_scale,
                                        name=f"{self.info.name} (test {mode} #{index})",
                                        properties={**self.info.properties, "hardware": f"test-device-{index}"})
        self.mode, self.after, self.release, self.poison = mode, after, release, poison
        self.launches = 0
        self.faulted = False
        self.launches_after_fault = 0
        self._count_lock = threading.Lock()

    def _launch(self, kernel: str, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Any) -> None:
        with self._count_lock:
            n = self.launches
            self.launches += 1
            if self.faulted:
                self.launches_after_fault += 1
        if self.poison is not None and self.poison([host_view(a) for a in inputs]):
            raise KernelLaunchError(f"{self.id}: poisoned input", kernel=kernel, device=self.id)
        if self.mode != "ok" and n >= self.after:
            self.faulted = True
            if self.mode == "lost":
                raise DeviceLostError(f"{self.id}: injected device loss at launch {n}", device=self.id)
            if self.mode == "corrupt":
                host_view(inputs[0])[...] = -12345
                raise DeviceLostError(f"{self.id}: injected loss after corrupting input", device=self.id)
            if self.mode == "hang" and self.release is not None:
                self.release.wait(5.0)
        super()._launch(kernel, inputs, out, params, stream)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def rt() -> Iterator[dsrt.Runtime]:
    runtime = dsrt.Runtime(backends=["cpu"])
    yield runtime
    runtime.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def chunks_of(n: int, seed: int = 0, size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32))
            for _ in range(n)]


def serial(kernel: str, chunks: Sequence[Sequence[np.ndarray]], **params: Any) -> list[np.ndarray]:
    """Reference results: one after another on a plain CPU device."""
    dev = dsrt_cpu.CpuDevice(99)
    return [dev.launch(kernel, *[dev.asarray(x) for x in c], **params).numpy() for c in chunks]
