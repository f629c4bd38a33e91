"""dsrt on a Dask cluster: remote devices, placement across machines, keep_remote, lost workers.

A two-worker ``LocalCluster`` on loopback (processes, one thread each) is shared by the module. This
directory has no ``__init__.py`` and no conftest on purpose: a ``tests.distributed`` package would
shadow the real ``distributed`` on ``sys.path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install dsrt[distributed])")
pytest.importorskip("dsrt_cpu", reason="the cpu plugin is not installed")

import dsrt
from dsrt.accuracy import relative_error, tolerance

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=None, silence_logs=40)
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(2, timeout=60)
    try:
        yield client
    finally:
        client.close()
        cluster.close(timeout=20)


@pytest.fixture(scope="module")
def crt(dask_cluster: Any) -> Iterator[dsrt.Runtime]:
    """A runtime with the cpu backend here and on every worker, attached to the cluster."""
    runtime = dsrt.Runtime(backends=["cpu"], cluster=dask_cluster)
    try:
        yield runtime
    finally:
        runtime.close()


def _gemm_chunks(n: int, size: int, dtype: str = "float32", seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, size)).astype(dtype), rng.standard_normal((size, size)).astype(dtype))
            for _ in range(n)]


def _check_gemm(results: list[Any], chunks: list[tuple[np.ndarray, np.ndarray]]) -> None:
    assert len(results) == len(chunks)
    for i, (r, (a, b)) in enumerate(zip(results, chunks, strict=True)):
        got = r.numpy()
        want = a @ b
        assert got.shape == want.shape and got.dtype == want.dtype, i
        assert relative_error(got, want) <= tolerance(want.dtype, accumulate=a.shape[1]), f"chunk {i} is wrong"


def _remote(rt: dsrt.Runtime) -> list[Any]:
    return [d for d in rt.devices if getattr(d, "remote", False)]


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_core_never_imports_dask() -> None:
    code = ("import sys, dsrt; rt = dsrt.Runtime(backends=['cpu']); rt.devices; "
            "rt.map('add', [(__import__('numpy').ones(4, 'float32'),) * 2]); "
            "sys.exit(3 if 'distributed' in sys.modules or 'dask' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_remote_devices_are_listed_with_their_info(crt: dsrt.Runtime, dask_cluster: Any) -> None:
    remote = _remote(crt)
    workers = set(dask_cluster.scheduler_info(n_workers=-1)["workers"])
    assert {d.address for d in remote} == workers
    for d in remote:
        assert d.id == f"{d.address}/cpu:0"
        assert d.info.id == d.id and d.info.backend == "cpu" and d.supports("gemm", "float32")
        assert d.info.properties["hardware"].startswith(d.address)  # never grouped with the local CPU
        rtt, bandwidth, machine = d.link
        assert 0 < rtt < 5 and bandwidth > 0 and machine == d.address
        assert crt.device(d.id) is d
        with pytest.raises(dsrt.DsrtError, match="cannot allocate"):
            d.empty((4,), "float32")
    assert crt.devices[0].id == "cpu:0"


def test_map_over_local_and_remote_devices(crt: dsrt.Runtime) -> None:
    chunks = _gemm_chunks(24, 96)
    results = crt.map("gemm", chunks)
    _check_gemm(results, chunks)
    report = crt.last_run
    assert all(isinstance(r, dsrt.Array) and r.device is crt.default_device for r in results)
    assert set(report.commits.values()) == {1} and len(report.commits) == len(chunks)
    remote_ids = {d.id for d in _remote(crt)}
    assert remote_ids <= set(report.devices)
    # Every remote device takes work (at least its calibration chunks), as does the local CPU.
    assert all(report.chunks.get(d, 0) >= 1 for d in remote_ids), report.chunks
    assert report.chunks.get("cpu:0", 0) >= 1
    # The plan charged the measured round trip for the remote devices, nothing for the local one.
    placement = crt.explain(0)
    by_dev = {c.device: c for c in placement.candidates if c.capable}
    for d in _remote(crt):
        if d.id in by_dev:
            assert by_dev[d.id].transfer >= d.link[0]


def test_keep_remote_round_trip(crt: dsrt.Runtime) -> None:
    from dsrt.distributed import RemoteArray

    remote = [d.id for d in _remote(crt)]
    chunks = _gemm_chunks(12, 64, seed=1)
    handles = crt.map("gemm", chunks, devices=remote, keep_remote=True)
    assert all(isinstance(h, RemoteArray) for h in handles)
    assert all(h.future is not None and h._host is None for h in handles)  # nothing came back yet
    assert all(h.shape == (64, 64) and h.dtype == np.float32 for h in handles)
    doubled = crt.map("add", [(h, h) for h in handles], devices=remote)
    report = crt.last_run
    # Each chunk's inputs already lived on a worker: the source recorded is that worker's device,
    # and no handle was fetched here on the way.
    assert all(h._host is None for h in handles)
    assert set(report.commits.values()) == {1}
    for r, (a, b) in zip(doubled, chunks, strict=True):
        assert relative_error(r.numpy(), 2 * (a @ b)) <= tolerance(np.float32, accumulate=64)
    assert sum(report.chunks.get(d, 0) for d in remote) == len(chunks)
    # A handle can also be read here.
    _check_gemm(handles[:2], chunks[:2])


def _pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def test_worker_killed_mid_run_loses_no_work(crt: dsrt.Runtime, dask_cluster: Any) -> None:
    remote = _remote(crt)
    assert len(remote) == 2
    victim = remote[0]
    pid = _pids(dask_cluster)[victim.address]
    chunks = _gemm_chunks(40, 320, dtype="float64", seed=2)
    killed: dict[str, float] = {}

    def killer() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if victim.in_flight() >= 2 and time.monotonic() - t0 > 0.3:
                os.kill(pid, signal.SIGKILL)
                killed["at"] = time.monotonic()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    results = crt.map("gemm", chunks, devices=[d.id for d in remote])
    thread.join(5)
    assert "at" in killed, "the victim never had chunks in flight"
    _check_gemm(results, chunks)
    report = crt.last_run
    assert len(report.commits) == len(chunks) and set(report.commits.values()) == {1}
    assert victim.id in report.quarantined and "left the cluster" in report.quarantined[victim.id]
    moved = report.moved()
    assert moved.get(victim.id), str(report)
    for i in moved[victim.id]:
        attempts = report.attempts(i)
        assert attempts[-1].outcome == "committed" and attempts[-1].device == remote[1].id
    assert victim.id in str(report)
    assert not victim.alive and victim not in crt.devices


def test_dead_worker_is_not_used_and_a_new_one_is(crt: dsrt.Runtime, dask_cluster: Any) -> None:
    # The nanny restarts killed workers: wait for the cluster to be whole again first.
    dask_cluster.wait_for_workers(2, timeout=60)
    _wait(lambda: len(_remote(crt)) == 2, 30, "two live remote devices")
    victim = _remote(crt)[0]
    os.kill(_pids(dask_cluster)[victim.address], signal.SIGKILL)
    _wait(lambda: not victim.alive, 15, f"{victim.address} to be seen leaving")
    chunks = _gemm_chunks(10, 64, seed=3)
    results = crt.map("gemm", chunks)
    _check_gemm(results, chunks)
    report = crt.last_run
    assert victim.id not in report.devices and not report.quarantined
    # A worker that joins later (the nanny's replacement) is used by the next map.
    before = {d.id for d in _remote(crt)}
    dask_cluster.wait_for_workers(2, timeout=60)
    _wait(lambda: len(_remote(crt)) == 2, 30, "the replacement worker")
    joined = [d for d in _remote(crt) if d.id not in before]
    assert joined and joined[0].address != victim.address
    results = crt.map("gemm", chunks, devices=[d.id for d in _remote(crt)])
    _check_gemm(results, chunks)
    assert crt.last_run.chunks.get(joined[0].id, 0) >= 1, str(crt.last_run)
