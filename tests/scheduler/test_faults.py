"""Fault tolerance on real CPU devices with injected faults (hypothesis over many seeds).

Every scenario asserts: completed + poisoned == submitted; results bit-identical to a serial run; no
chunk committed twice; a device that died gets no more work.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsrt
from dsrt.errors import PoisonedChunkError
from dsrt.scheduler import Scheduler

from .conftest import FaultyCpu, chunks_of, serial

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def runtime_with(devices: list[FaultyCpu], min_timeout: float = 0.3) -> dsrt.Runtime:
    rt = dsrt.Runtime(backends=["cpu"])
    for d in devices:
        rt.add_device(d)
    rt._scheduler = Scheduler(rt, min_timeout=min_timeout)
    return rt


def check(rt: dsrt.Runtime, chunks: list, results: list, dead: list[FaultyCpu], poisoned: set[int] = frozenset()) -> None:  # type: ignore[type-arg]
    stats = rt.scheduler.last_run
    completed = [i for i, r in enumerate(results) if r is not None]
    assert len(completed) + len(stats.poisoned) == len(chunks)
    assert set(stats.poisoned) == set(poisoned)
    assert all(n == 1 for n in stats.commits.values()), stats.commits
    want = serial("add", chunks)
    for i in completed:
        assert np.array_equal(results[i].numpy(), want[i]), i
    for d in dead:
        assert d.launches_after_fault == 0, f"{d.id} got work after it died"
        assert d.id in stats.quarantined


@FAST
@given(n=st.integers(4, 20), after=st.integers(0, 4), policy=st.sampled_from(["dmda", "eager", "work_stealing"]),
       seed=st.integers(0, 1000))
def test_device_raising_mid_run(n: int, after: int, policy: str, seed: int) -> None:
    bad = FaultyCpu(1, mode="lost", after=after)
    rt = runtime_with([bad, FaultyCpu(2)])
    chunks = chunks_of(n, seed)
    results = rt.map("add", chunks, policy=policy)
    check(rt, chunks, results, [bad] if bad.faulted else [])


@FAST
@given(n=st.integers(6, 20), after=st.integers(0, 3), seed=st.integers(0, 1000))
def test_fastest_device_dying(n: int, after: int, seed: int) -> None:
    fastest = FaultyCpu(1, mode="lost", after=after, peak_scale=1000.0)
    rt = runtime_with([fastest, FaultyCpu(2)])
    chunks = chunks_of(n, seed)
    results = rt.map("add", chunks)
    check(rt, chunks, results, [fastest] if fastest.faulted else [])


@FAST
@given(n=st.integers(6, 24), a=st.integers(0, 3), b=st.integers(0, 3), seed=st.integers(0, 1000))
def test_two_devices_dying_at_once(n: int, a: int, b: int, seed: int) -> None:
    d1, d2 = FaultyCpu(1, mode="lost", after=a), FaultyCpu(2, mode="lost", after=b)
    rt = runtime_with([d1, d2, FaultyCpu(3)])
    chunks = chunks_of(n, seed)
    results = rt.map("add", chunks)
    check(rt, chunks, results, [d for d in (d1, d2) if d.faulted])


@SLOW
@given(n=st.integers(4, 10), after=st.integers(0, 2), seed=st.integers(0, 1000))
def test_device_hanging(n: int, after: int, seed: int) -> None:
    release = threading.Event()
    hung = FaultyCpu(1, mode="hang", after=after, release=release)
    try:
        rt = runtime_with([hung, FaultyCpu(2)], min_timeout=0.25)
        chunks = chunks_of(n, seed)
        results = rt.map("add", chunks, policy="round_robin")
        stats = rt.scheduler.last_run
        if hung.faulted:
            assert "timeout" in stats.quarantined["cpu:1"]
        check(rt, chunks, results, [hung] if hung.faulted else [])
    finally:
        release.set()


@FAST
@given(n=st.integers(3, 12), bad=st.data(), seed=st.integers(0, 1000))
def test_poison_chunk(n: int, bad: st.DataObject, seed: int) -> None:
    idx = bad.draw(st.integers(0, n - 1))
    marker = np.float32(4242.0)

    def poison(inputs):  # type: ignore[no-untyped-def]
        return bool(inputs[0].size and inputs[0][0] == marker)

    devs = [FaultyCpu(i, poison=poison) for i in (1, 2, 3, 4)]
    rt = runtime_with(devs)
    chunks = chunks_of(n, seed)
    chunks[idx][0][0] = marker
    with pytest.raises(PoisonedChunkError) as info:
        rt.map("add", chunks, devices=[d.id for d in devs])
    check(rt, chunks, info.value.results, [], poisoned={idx})
    # The chunk was blamed, not the devices: they are all back in service.
    assert rt.scheduler.last_run.retries == 3


def test_inplace_inputs_stay_pristine_for_the_retry() -> None:
    corrupt = FaultyCpu(1, mode="corrupt", after=0)
    rt = runtime_with([corrupt, FaultyCpu(2)])
    chunks = chunks_of(6, 5)
    originals = [tuple(x.copy() for x in c) for c in chunks]
    on_device = [tuple(corrupt.asarray(x) for x in c) for c in chunks]
    results = rt.map("add", on_device, inplace=True, devices=["cpu:1", "cpu:2"])
    assert corrupt.faulted
    for arrays, orig in zip(on_device, originals, strict=True):
        for a, o in zip(arrays, orig, strict=True):
            assert np.array_equal(a.numpy(), o)
    want = serial("add", originals)
    for r, w in zip(results, want, strict=True):
        assert np.array_equal(r.numpy(), w)


def test_all_devices_dead_reports_every_chunk() -> None:
    d1, d2 = FaultyCpu(1, mode="lost"), FaultyCpu(2, mode="lost")
    rt = runtime_with([d1, d2])
    chunks = chunks_of(5)
    with pytest.raises(PoisonedChunkError) as info:
        rt.map("add", chunks, devices=["cpu:1", "cpu:2"])
    assert len(info.value.poisoned) == 5
    assert "no capable device left" in str(info.value) or "no device" in str(info.value)
