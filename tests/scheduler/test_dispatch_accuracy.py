"""Dispatch never returns a wrong answer: precision as a placement constraint, health, verify, reports.

The first test runs the default runtime with every installed backend, experimental ones included,
exactly as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsrt
from dsrt.accuracy import relative_error, tolerance
from dsrt.errors import PoisonedChunkError, TransientDeviceError
from dsrt.kernels import reference
from dsrt.scheduler import BUILTIN_POLICIES, Scheduler, VirtualDevice, make_tasks, simulate
from dsrt.scheduler.health import DeviceHealth
from dsrt.scheduler.links import StarLinks

from .conftest import FaultyCpu, chunks_of, dsrt_cpu

CASES = [("gemm", (48, 48), 48), ("softmax", (16, 40), 40), ("add", (300,), 1)]


def _inputs(kernel: str, shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    arity = 1 if kernel == "softmax" else 2
    return tuple(rng.standard_normal(shape).astype(dtype) for _ in range(arity))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("kernel,shape,accumulate", CASES)
def test_default_runtime_map_is_within_the_kit_tolerance(kernel: str, shape: tuple[int, ...], accumulate: int,
                                                         dtype: str) -> None:
    rt = dsrt.Runtime()
    rng = np.random.default_rng(7)
    chunks = [_inputs(kernel, shape, dtype, rng) for _ in range(12)]
    results = rt.map(kernel, chunks)
    tol = tolerance(dtype, accumulate=accumulate)
    for res, chunk in zip(results, chunks, strict=True):
        assert relative_error(res.numpy(), reference(kernel, *chunk)) <= tol
    report = rt.last_run
    simulated = {d.id for d in rt.devices if d.info.simulated}
    assert not simulated & {d for d, n in report.chunks.items() if n}, report.chunks
    for dev in simulated:
        assert dev in report.excluded
    assert sum(report.chunks.values()) == len(chunks)
    assert all(n == 1 for n in report.commits.values())


def test_photonic_takes_work_only_when_the_tolerance_admits_it() -> None:
    rt = dsrt.Runtime()
    if "photonic:0" not in {d.id for d in rt.devices}:
        pytest.skip("the photonic plugin is not installed")
    rng = np.random.default_rng(3)
    chunks = [(rng.random((32, 32), dtype=np.float32), rng.random((32, 32), dtype=np.float32)) for _ in range(4)]
    with pytest.raises(PoisonedChunkError) as info:
        rt.map("gemm", chunks, devices=["photonic:0"])
    assert "precision" in str(info.value) and "tolerance=" in str(info.value)
    assert "precision" in str(rt.explain(0))
    admitted = 2.0 ** -rt.device("photonic:0").info.precision_bits
    results = rt.map("gemm", chunks, devices=["photonic:0"], tolerance=admitted)
    for res, (a, b) in zip(results, chunks, strict=True):
        assert relative_error(res.numpy(), a @ b) <= admitted
    report = rt.last_run
    assert report.chunks == {"photonic:0": 4}
    assert report.modelled_s["photonic:0"] > 0 and report.modelled_j["photonic:0"] > 0
    assert all(a.modelled_s is not None for a in report.attempts(0))
    info_dict = rt.device("photonic:0").info
    assert info_dict.modelled_peak_flops is not None and info_dict.modelled_peak_flops > 100 * info_dict.peak_flops


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_placement_never_violates_tolerance_dtype_or_kernel(data: st.DataObject) -> None:
    kernels = ["add", "gemm", "reduce_sum"]
    devices = []
    for i in range(data.draw(st.integers(1, 5))):
        speeds = {k: data.draw(st.floats(1e6, 1e12)) for k in kernels if data.draw(st.booleans())} or {"add": 1e9}
        bits = data.draw(st.one_of(st.none(), st.floats(4, 60)))
        dtypes = data.draw(st.sets(st.sampled_from(["float32", "float64"]), min_size=1))
        fail = data.draw(st.one_of(st.none(), st.floats(0.0, 1e-3)))
        devices.append(VirtualDevice(f"v:{i}", speeds, precision_bits=bits, dtypes=sorted(dtypes), fail_at=fail))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    tol = data.draw(st.sampled_from([1e-1, 1e-4, 1e-7, 1e-12]))
    items = [(data.draw(st.sampled_from(kernels)), data.draw(st.integers(1 << 10, 1 << 20))) for _ in range(12)]
    tasks = make_tasks(items, dtype=dtype)
    for t in tasks:
        t.tolerance = tol
    policy = BUILTIN_POLICIES[data.draw(st.sampled_from(sorted(BUILTIN_POLICIES)))]
    simulate(devices, StarLinks({}), tasks, policy)
    by_id = {d.id: d for d in devices}
    for t in tasks:
        for attempt in t.history:
            dev = by_id[attempt.device]
            assert dev.supports(t.kernel, t.dtype), (t.kernel, t.dtype, dev.id)
            bits = dev.info.precision_bits
            assert bits is None or 2.0 ** -bits <= tol, (bits, tol)


class Breakable(dsrt_cpu.CpuDevice):
    """A CPU device that fails every launch while ``broken`` is set (``transient``: once per launch)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.broken = False
        self.transient_faults = 0
        self.launches = 0

    def _launch(self, kernel: str, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Any) -> None:
        self.launches += 1
        if self.transient_faults > 0:
            self.transient_faults -= 1
            raise TransientDeviceError(f"{self.id}: one corrected ECC error", device=self.id)
        if self.broken:
            raise dsrt.DeviceLostError(f"{self.id}: injected loss", device=self.id)
        super()._launch(kernel, inputs, out, params, stream)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _runtime(*devices: dsrt.Device) -> tuple[dsrt.Runtime, Clock]:
    rt = dsrt.Runtime(backends=["cpu"])
    for d in devices:
        rt.add_device(d)
    rt._scheduler = Scheduler(rt, min_timeout=0.5)
    clock = Clock()
    rt.scheduler.health = DeviceHealth(base_backoff=10.0, clock=clock)
    return rt, clock


def test_a_failed_device_stays_out_until_its_backoff_and_health_check() -> None:
    flaky, good = Breakable(1), Breakable(2)
    rt, clock = _runtime(flaky, good)
    devs = [flaky.id, good.id]
    flaky.broken = True
    chunks = chunks_of(8, 1)
    rt.map("add", chunks, devices=devs)
    assert rt.health()[flaky.id]["state"] == "quarantined"
    before = flaky.launches
    rt.map("add", chunks, devices=devs)  # within the backoff: not even tried
    assert flaky.launches == before
    assert "quarantined" in rt.last_run.excluded[flaky.id]
    assert "quarantined" in str(rt.explain(0))
    clock.t = 11.0  # backoff over, still broken: the health check fails, backoff doubles
    rt.map("add", chunks, devices=devs)
    assert flaky.launches == before + 1 and rt.last_run.chunks.get(flaky.id, 0) == 0
    rec = rt.health()[flaky.id]
    assert rec["state"] == "quarantined" and "health check failed" in rec["reason"] and rec["failures"] == 2
    clock.t = 11.0 + 15.0  # within the doubled (20 s) backoff
    rt.map("add", chunks, devices=devs)
    assert flaky.launches == before + 1
    flaky.broken = False
    clock.t = 11.0 + 21.0  # recovered: passes its check and takes work again
    results = rt.map("add", chunks * 4, devices=devs, policy="round_robin")
    assert rt.last_run.chunks.get(flaky.id, 0) > 0 and rt.health()[flaky.id]["state"] == "healthy"
    for res, (a, b) in zip(results, chunks * 4, strict=True):
        np.testing.assert_array_equal(res.numpy(), a + b)


def test_mark_down_and_mark_up() -> None:
    one, two = Breakable(1), Breakable(2)
    rt, _clock = _runtime(one, two)
    rt.mark_down(one.id, "maintenance")
    rt.map("add", chunks_of(6), devices=[one.id, two.id])
    assert one.launches == 0 and rt.last_run.excluded[one.id] == "marked down: maintenance"
    rt.mark_up(one.id)
    rt.map("add", chunks_of(12), devices=[one.id, two.id], policy="round_robin")
    assert one.launches > 0


def test_a_transient_fault_is_retried_on_the_same_device() -> None:
    dev = Breakable(1)
    rt, _clock = _runtime(dev)
    dev.transient_faults = 1
    chunks = chunks_of(3, 2)
    results = rt.map("add", chunks, devices=[dev.id])
    for res, (a, b) in zip(results, chunks, strict=True):
        np.testing.assert_array_equal(res.numpy(), a + b)
    report = rt.last_run
    assert report.quarantined == {} and report.retries_on == {dev.id: 1}
    outcomes = [a.outcome for i in range(3) for a in report.attempts(i)]
    assert outcomes.count("retried") == 1 and outcomes.count("committed") == 3
    assert rt.health()[dev.id]["state"] == "healthy"


def test_the_last_capable_device_is_never_given_up_while_it_runs() -> None:
    release = threading.Event()
    slow = FaultyCpu(1, mode="hang", after=0, release=release)
    rt, _clock = _runtime(slow)
    rt._scheduler = Scheduler(rt, min_timeout=0.1)
    timer = threading.Timer(0.8, release.set)
    timer.start()
    try:
        chunks = chunks_of(2, 4)
        results = rt.map("add", chunks, devices=[slow.id])
    finally:
        timer.cancel()
        release.set()
    for res, (a, b) in zip(results, chunks, strict=True):
        np.testing.assert_array_equal(res.numpy(), a + b)
    assert rt.last_run.quarantined == {} and "predicted" in rt.last_run.slower[slow.id]


class Wrong(dsrt_cpu.CpuDevice):
    """Silently adds 1 to every result."""

    def _launch(self, kernel: str, inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Any) -> None:
        super()._launch(kernel, inputs, out, params, stream)
        np.from_dlpack(out)[...] += 1


def test_verify_catches_a_device_that_returns_wrong_answers() -> None:
    bad, good = Wrong(1), dsrt_cpu.CpuDevice(2)
    rt, _clock = _runtime(bad, good)
    chunks = chunks_of(16, 9)
    results = rt.map("add", chunks, devices=[bad.id, good.id], policy="round_robin", verify=0.1)
    report = rt.last_run
    assert "wrong results" in report.quarantined[bad.id]
    assert report.recomputed and all(i in report.recomputed for i, v in report.verified.items() if not v["ok"])
    for res, (a, b) in zip(results, chunks, strict=True):
        np.testing.assert_array_equal(res.numpy(), a + b)
    assert rt.health()[bad.id]["state"] == "quarantined"
    assert "wrong results" in report.to_dict()["quarantined"][bad.id]


def test_without_verify_the_wrong_device_goes_unnoticed_which_is_why_verify_exists() -> None:
    bad, good = Wrong(1), dsrt_cpu.CpuDevice(2)
    rt, _clock = _runtime(bad, good)
    chunks = chunks_of(4, 9)
    results = rt.map("add", chunks, devices=[bad.id, good.id], policy="round_robin")
    assert any(not np.array_equal(r.numpy(), a + b) for r, (a, b) in zip(results, chunks, strict=True))


def test_map_timeout_gives_up_the_unfinished_chunks() -> None:
    release = threading.Event()
    slow = FaultyCpu(1, mode="hang", after=0, release=release)
    rt, _clock = _runtime(slow)
    try:
        with pytest.raises(PoisonedChunkError, match="timeout"):
            rt.map("add", chunks_of(3), devices=[slow.id], timeout=0.3)
    finally:
        release.set()


def test_map_signature_is_documented() -> None:
    import inspect

    sig = inspect.signature(dsrt.Runtime.map)
    for name in ("devices", "policy", "tolerance", "timeout", "verify", "params"):
        assert name in sig.parameters
        assert name == "params" or f"``{name}``" in (dsrt.Runtime.map.__doc__ or "")
    assert {"devices", "policy", "tolerance", "timeout"} <= set(inspect.signature(dsrt.Runtime.submit).parameters)


_WRITER = textwrap.dedent("""
    import sys
    from dsrt.scheduler.perfmodel import PerfModel
    from types import SimpleNamespace
    path, tag = sys.argv[1], sys.argv[2]
    for i in range(40):
        m = PerfModel(path)
        info = SimpleNamespace(id=f"{tag}:{i % 4}", name=tag, peak_flops=1e9)
        for k in range(3):
            m.record("add", info, 1000.0 * (k + 1), 1e-6 * (k + 1))
        m.save()
""")


def test_two_processes_writing_the_model_file_merge_and_never_corrupt_it(tmp_path: Any) -> None:
    path = tmp_path / "perfmodel.json"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag]) for tag in ("p", "q")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    models = json.loads(path.read_text())["models"]
    assert {k.split("@")[1].split("|")[0] for k in models} == {f"{t}:{i}" for t in "pq" for i in range(4)}


def test_a_speculative_rerun_after_a_timeout_never_shares_buffers_with_the_late_original() -> None:
    """In place: the timed-out original and its re-run each work on private copies; one result is
    committed; the caller's arrays never change, even when the late original finishes afterwards."""
    release = threading.Event()
    hung, good = FaultyCpu(1, mode="hang", after=0, release=release), FaultyCpu(2)
    rt, _clock = _runtime(hung, good)
    rt._scheduler = Scheduler(rt, min_timeout=0.05)
    chunks = chunks_of(1, 6)
    originals = [tuple(x.copy() for x in c) for c in chunks]
    on_hung = [tuple(hung.asarray(x) for x in c) for c in chunks]
    try:
        results = rt.map("add", on_hung, inplace=True, devices=[hung.id, good.id], policy="round_robin")
    finally:
        release.set()
    report = rt.last_run
    outcomes = [(a.device, a.outcome) for a in report.attempts(0)]
    assert (hung.id, "timed out") in outcomes and (good.id, "committed") in outcomes, outcomes
    assert report.commits == {0: 1} and results[0].device is good
    time.sleep(0.3)  # the late original finishes now, writing its own private copy
    np.testing.assert_array_equal(results[0].numpy(), originals[0][0] + originals[0][1])
    for arr, orig in zip(on_hung[0], originals[0], strict=True):
        np.testing.assert_array_equal(arr.numpy(), orig)
