"""Threads racing the pool: bytes written through dsrt survive concurrent spills and compactions.

Two tests: the stress benchmark (``benchmarks/stress_pool.py``) run for a couple of seconds per
device, and a hypothesis state machine whose rules (allocate, free, write, read, spill, compact)
run on the main thread while racer threads allocate, copy, launch and free on the same pool.
Both fail when a copy or launch reads an allocation's handle without the ``IN_USE`` + ``hold``
protocol of :mod:`dsrt.memory.in_use` (a move in flight then loses or misplaces bytes).
"""

from __future__ import annotations

import importlib.util
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import dsrt
from dsrt.memory import CachingPool

KiB, MiB = 1 << 10, 1 << 20
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stress_pool.py"


@pytest.fixture(scope="module")
def stress() -> Any:
    spec = importlib.util.spec_from_file_location("dsrt_stress_pool", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runtime() -> dsrt.Runtime:
    return dsrt.Runtime(backends=["cpu", "opencl"])


@pytest.mark.parametrize("device_id", ["cpu:0", "opencl:0"])
def test_threads_never_corrupt_arrays_under_spills_and_compactions(stress: Any, runtime: dsrt.Runtime,
                                                                   device_id: str) -> None:
    if device_id not in {d.id for d in runtime.devices}:
        pytest.skip(f"{device_id} is not available here")
    # A small cap with 3x of it live keeps the pool spilling and compacting all the time.
    result = stress.run(threads=6, seconds=2.5, seed=7, device_ids=[device_id], limit_mib=6, live_factor=3.0,
                        runtime=runtime)
    dev = result["devices"][device_id]
    assert dev["errors"] == 0, dev["error_messages"]
    assert dev["corrupted"] == 0, dev
    # The paths under test really ran.
    assert dev["spills"] > 0 and dev["fetches"] > 0, dev
    assert dev["compactions"] > 0 and dev["moves"] > 0, dev


def crc(data: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(data).view(np.uint8))


class RacingPool(RuleBasedStateMachine):
    """The model: each live array's CRC. Racer threads keep the pool at its limit meanwhile."""

    arrays = Bundle("arrays")

    def __init__(self) -> None:
        super().__init__()
        from dsrt_cpu import CpuDevice

        self.dev = CpuDevice(0)
        self.pool = CachingPool(self.dev, limit=3 * MiB, idle_shrink_s=None)
        self.dev.pool = self.pool
        self.model: dict[int, tuple[dsrt.Array, int]] = {}
        self.next_key = 0
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.racers = [threading.Thread(target=self.race, args=(seed,), daemon=True) for seed in range(3)]
        for t in self.racers:
            t.start()

    def race(self, seed: int) -> None:
        """Allocate, fill, copy (launch), read back and drop arrays until told to stop."""
        rng = np.random.default_rng(seed)
        mine: list[tuple[dsrt.Array, int]] = []
        try:
            while not self.stop.is_set():
                r = rng.random()
                if mine and r < 0.15:
                    arr, c = mine[int(rng.integers(len(mine)))]
                    mine.append((arr.copy(), c))
                elif mine and r < 0.55:
                    arr, c = mine.pop(int(rng.integers(len(mine))))
                    if crc(arr.numpy()) != c:
                        self.failures.append(f"racer {seed}: an array of {arr.nbytes} bytes changed")
                else:
                    data = rng.integers(0, 256, int(rng.integers(1, 96 * KiB)), dtype=np.uint8)
                    mine.append((self.dev.asarray(data), crc(data)))
                    if len(mine) > 12:
                        mine.pop(0)
        except Exception as exc:  # noqa: BLE001 - reported by the invariant on the main thread
            self.failures.append(f"racer {seed}: {type(exc).__name__}: {exc}")

    def fresh(self, size: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)

    @rule(target=arrays, size=st.integers(1, 256 * KiB), seed=st.integers(0, 2**16))
    def allocate(self, size: int, seed: int) -> int:
        data = self.fresh(size, seed)
        key = self.next_key
        self.next_key += 1
        self.model[key] = (self.dev.asarray(data), crc(data))
        return key

    @rule(key=consumes(arrays))
    def free(self, key: int) -> None:
        arr, _c = self.model.pop(key)
        arr.release()

    @rule(key=arrays, seed=st.integers(0, 2**16))
    def write(self, key: int, seed: int) -> None:
        arr, _c = self.model[key]
        data = self.fresh(arr.nbytes, seed)
        self.dev.copy_from_host(arr, data)
        self.model[key] = (arr, crc(data))

    @rule(key=arrays)
    def read(self, key: int) -> None:
        arr, c = self.model[key]
        assert crc(arr.numpy()) == c

    @rule(key=arrays)
    def spill(self, key: int) -> None:
        self.pool.spill(self.model[key][0].allocation)

    @rule(key=arrays)
    def copy(self, key: int) -> None:
        arr, c = self.model[key]
        dup = arr.copy()  # a launch: its operands are held while other threads move bytes
        assert crc(dup.numpy()) == c

    @rule()
    def compact(self) -> None:
        # Every other 8 KiB block freed, then a 64 KiB request: no hole fits, so the pool moves blocks
        # (or spills) while the racers use theirs.
        blocks = [self.dev.empty(8 * KiB, "uint8") for _ in range(24)]
        del blocks[::2]
        self.dev.empty(64 * KiB, "uint8")

    @invariant()
    def racers_saw_no_damage(self) -> None:
        assert not self.failures, self.failures

    def teardown(self) -> None:
        self.stop.set()
        for t in self.racers:
            t.join()
        try:
            assert not self.failures, self.failures
            for arr, c in self.model.values():
                assert crc(arr.numpy()) == c
        finally:
            self.model.clear()


TestRacingPool = RacingPool.TestCase
TestRacingPool.settings = settings(max_examples=12, stateful_step_count=25, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
