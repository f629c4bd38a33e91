"""Incremental saves write only changed chunks; retention never breaks a kept step; async saves snapshot."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import dsrt
from dsrt.checkpoint import Checkpointer, CheckpointError
from dsrt.checkpoint.layout import plan_array

CHUNK = 16 << 10  # 16 KiB chunks: 50 arrays x 16 chunks = 800 chunks in a 12.5 MiB tree


def _store_bytes(path) -> int:
    d = os.path.join(path, "chunks", "rank0")
    return sum(e.stat().st_size for e in os.scandir(d))


def _tree(cpu: dsrt.Device, seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    host = [rng.standard_normal((64, 1024), dtype=np.float32) for _ in range(50)]  # 256 KiB each
    return {"layers": [{"w": cpu.asarray(h)} for h in host], "step_lr": 0.1}, host


def test_two_percent_changed_writes_two_percent(tmp_path, cpu: dsrt.Device) -> None:
    tree, host = _tree(cpu)
    lay = plan_array((64, 1024), 4, CHUNK)
    assert lay.nchunks == 16 and lay.chunk_nbytes == CHUNK
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, durable=False) as ck:
        full = ck.save(0, tree, blocking=True).result()
        assert (full.chunks_total, full.chunks_written, full.bytes_written) == (800, 800, 800 * CHUNK)
        on_disk = _store_bytes(tmp_path)
        assert on_disk == 800 * CHUNK
        # 2% of the chunks: one element in each of 16 chunks, spread over arrays and positions
        rng = np.random.default_rng(1)
        picks = rng.choice(800, 16, replace=False)
        for p in picks:
            i, j = divmod(int(p), 16)
            start, _ = lay.byte_range(j)
            host[i].reshape(-1)[start // 4 + int(rng.integers(0, CHUNK // 4))] += 1.0
        for i in {int(p) // 16 for p in picks}:
            cpu.copy_from_host(tree["layers"][i]["w"], host[i])
        inc = ck.save(1, tree, blocking=True).result()
        assert (inc.chunks_written, inc.chunks_linked, inc.bytes_written) == (16, 784, 16 * CHUNK)
        assert _store_bytes(tmp_path) - on_disk == 16 * CHUNK  # what reached the disk, not just the counters
        unchanged = ck.save(2, tree).result()
        assert unchanged.chunks_written == 0 and unchanged.bytes_written == 0
        for step, want in ((1, host), (2, host)):
            back = ck.restore(step)
            assert all(np.array_equal(b["w"], h) for b, h in zip(back["layers"], want, strict=True))
        first = ck.restore(0)
        changed = {int(p) // 16 for p in picks}
        assert all(np.array_equal(first["layers"][i]["w"], host[i]) == (i not in changed) for i in range(50))


def test_retention_keeps_every_kept_step_whole(tmp_path) -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal(64 * 1024).astype(np.float32)  # 16 chunks of 16 KiB
    history: dict[int, np.ndarray] = {}
    with Checkpointer(tmp_path, keep=3, chunk_bytes=CHUNK, durable=False) as ck:
        for step in range(12):
            x = base.copy()
            x[rng.integers(0, x.size, 3)] = step  # a few chunks change each step; old chunks come back too
            if step % 4 == 3:
                x = history[step - 2].copy()  # content equal to a step that retention drops meanwhile
            history[step] = x
            stats = ck.save(step, {"x": x, "n": step}).result() if step % 2 else ck.save(step, {"x": x, "n": step},
                                                                                          blocking=True).result()
            kept = ck.steps()
            assert kept == list(range(max(0, step - 2), step + 1))
            assert stats.removed_steps == ([step - 3] if step >= 3 else [])
            for s in kept:
                back = ck.restore(s)
                assert back["n"] == s and np.array_equal(back["x"], history[s])
            assert ck.verify(kept[0]) == []
        # the store holds exactly the chunks the kept steps use, no more
        used = set()
        for s in ck.steps():
            lay = plan_array((x.size,), 4, CHUNK)
            used |= {history[s][lay.byte_range(j)[0] // 4:][: CHUNK // 4].tobytes() for j in range(lay.nchunks)}
        assert len(os.listdir(os.path.join(tmp_path, "chunks", "rank0"))) == len(used)
        assert sorted(os.listdir(os.path.join(tmp_path, "steps"))) == ["10", "11", "9", "zarr.json"]


def test_async_save_snapshots_before_returning(tmp_path, cpu: dsrt.Device) -> None:
    x0 = np.arange(300_000, dtype=np.float32)
    dev = cpu.asarray(x0)
    host = x0.copy() * 2
    with Checkpointer(tmp_path, chunk_bytes=CHUNK) as ck:
        fut = ck.save(0, {"dev": dev, "np": host})
        # mutate both sources at once, while the background thread hashes and writes
        cpu.copy_from_host(dev, np.full_like(x0, -1.0))
        host[:] = 7.0
        assert fut.result().step == 0
        back = ck.restore(0)
    assert np.array_equal(back["dev"], x0) and np.array_equal(back["np"], x0 * 2)


def test_one_save_in_flight_and_host_buffers_reused(tmp_path, cpu: dsrt.Device) -> None:
    tree, _ = _tree(cpu)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK) as ck:
        gate = threading.Event()
        original = ck._write_step

        def slow(*args, **kwargs):  # hold the first save in the background until released
            gate.wait(10)
            return original(*args, **kwargs)

        ck._write_step = slow  # type: ignore[method-assign]
        first = ck.save(0, tree)
        buffers = {k: id(v) for k, v in ck._buffers.items()}
        threading.Timer(0.3, gate.set).start()
        t0 = time.perf_counter()
        second = ck.save(1, tree)  # must wait for the first
        assert time.perf_counter() - t0 >= 0.25 and first.done()
        assert {k: id(v) for k, v in ck._buffers.items()} == buffers  # same host buffers, no new allocation
        assert second.result().chunks_written == 0
        assert ck.wait() is second.result()


def test_background_failure_is_raised_by_wait_and_leaves_previous_step(tmp_path) -> None:
    with Checkpointer(tmp_path, durable=False) as ck:
        ck.save(0, {"x": np.ones(10)}, blocking=True)

        def broken(*args, **kwargs):
            raise CheckpointError("disk full (injected)")

        ck._put_chunk = broken  # type: ignore[method-assign]
        ck.save(1, {"x": np.zeros(10)})
        with pytest.raises(CheckpointError, match="injected"):
            ck.wait()
        assert ck.steps() == [0]
        assert np.array_equal(ck.restore()["x"], np.ones(10))
        assert os.path.isdir(os.path.join(tmp_path, "steps", "1", "rank0"))  # debris of the failed save
        del ck._put_chunk
        ck.save(2, {"x": np.zeros(10)}, blocking=True)
        assert ck.steps() == [0, 2] and not os.path.exists(os.path.join(tmp_path, "steps", "1"))
