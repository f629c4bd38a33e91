"""Identical chunks written by several I/O threads at once: one thread stores each hash, the others link it.

Linux ``link(src, dst)`` fails with ENOENT when the inode it looked up for ``src`` loses its last name to
a concurrent ``rename()`` over ``src`` -- the path exists the whole time. A save that lets two threads
write the same content-addressed chunk (each renaming its temporary over the other's) therefore fails
now and then under load. The injected ``link_or_copy`` below widens that window deterministically: it
looks ``src`` up (opens it), waits, then links the inode it opened, exactly as the kernel does.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import dsrt.checkpoint.layout as L
from dsrt.checkpoint import Checkpointer, restore, verify_store

CHUNK = 4 << 10


def _slow_lookup_link(window_s: float, renamed_under: list[str]):
    """A ``link_or_copy`` whose lookup and link are ``window_s`` apart (links into the chunk store only)."""
    real = L.link_or_copy

    def link_or_copy(src: str, dst: str) -> bool:
        fd = os.open(src, os.O_RDONLY)  # the lookup: FileNotFoundError when src is not there, as os.link
        try:
            time.sleep(window_s)
            if os.fstat(fd).st_nlink == 0:
                renamed_under.append(src)  # what the kernel turns into ENOENT
            os.link(f"/proc/self/fd/{fd}", dst, follow_symlinks=True)
            return True
        except FileNotFoundError:
            raise
        except OSError:
            return real(src, dst)
        finally:
            os.close(fd)

    return link_or_copy


def _slow_write(delay_s: float):
    real = L.write_all

    def write_all(fd: int, data) -> None:
        time.sleep(delay_s)  # every writer of a hash is still writing when the others look for its file
        real(fd, data)

    return write_all


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to link an open file")
def test_one_writer_per_hash_no_rename_under_a_link(tmp_path, monkeypatch) -> None:
    # 4 leaves holding the same bytes, 3 chunks each: every hash is wanted by 4 threads at once
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, 3 * CHUNK, dtype=np.uint8)
    tree = {f"copy{i}": x.copy() for i in range(4)}
    renamed_under: list[str] = []
    monkeypatch.setattr(L, "link_or_copy", _slow_lookup_link(0.05, renamed_under))
    monkeypatch.setattr(L, "write_all", _slow_write(0.05))
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, durable=False, threads=4) as ck:
        stats = ck.save(0, tree, blocking=True).result()
    monkeypatch.undo()
    assert renamed_under == []
    assert (stats.chunks_total, stats.chunks_written) == (12, 3)  # each distinct hash written once
    digest = L.hasher()[1]
    expected = {digest(x[i * CHUNK:(i + 1) * CHUNK]) for i in range(3)}
    assert sorted(os.listdir(tmp_path / "chunks" / "rank0")) == sorted(expected)
    back = restore(tmp_path)
    assert all(np.array_equal(back[k], x) for k in tree)
    assert verify_store(tmp_path) == []


def test_a_hash_missing_from_the_store_is_written_again_once(tmp_path) -> None:
    """A kept step's chunk file deleted behind the store's back: the next save writes it again (one
    thread), and every leaf that needs it links it."""
    x = np.random.default_rng(3).integers(0, 255, 3 * CHUNK, dtype=np.uint8)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, durable=False, threads=4, keep=None) as ck:
        ck.save(0, {"a": x}, blocking=True).result()
        for entry in os.scandir(tmp_path / "chunks" / "rank0"):
            os.unlink(entry.path)
        stats = ck.save(1, {f"c{i}": x.copy() for i in range(6)}, blocking=True).result()
    assert (stats.chunks_total, stats.chunks_written) == (18, 3)
    back = restore(tmp_path, 1)
    assert all(np.array_equal(v, x) for v in back.values())


def test_many_identical_chunks_with_many_threads(tmp_path) -> None:
    """Without injection: 16 leaves of one repeated chunk, 8 threads, several saves."""
    block = np.random.default_rng(1).integers(0, 255, CHUNK, dtype=np.uint8)
    tree = {f"l{i}": np.tile(block, 16) for i in range(16)}
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, durable=False, threads=8, keep=2) as ck:
        for step in range(4):
            tree["l0"][0] = step  # one new hash per step, 255 links of an existing one
            stats = ck.save(step, tree, blocking=step % 2 == 0).result()
            assert stats.chunks_written == (2 if step == 0 else 1)
    assert verify_store(tmp_path) == []


def test_a_failing_chunk_write_stops_every_io_thread_before_the_save_raises(tmp_path, monkeypatch) -> None:
    """No chunk write of a failed save may still run when save() raises (the next save cleans the store)."""
    real = L.write_all
    calls = {"n": 0, "done": 0}
    lock = threading.Lock()

    def write_all(fd: int, data) -> None:
        if "/chunks/" not in os.readlink(f"/proc/self/fd/{fd}"):
            return real(fd, data)  # metadata
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == 2:
            raise OSError(28, "No space left on device (injected)")
        time.sleep(0.05)
        real(fd, data)
        with lock:
            calls["done"] += 1

    rng = np.random.default_rng(2)
    tree = {f"l{i}": rng.integers(0, 255, 8 * CHUNK, dtype=np.uint8) for i in range(4)}
    monkeypatch.setattr(L, "write_all", write_all)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, durable=False, threads=4) as ck:
        with pytest.raises(OSError, match="injected"):
            ck.save(0, tree, blocking=True)
        finished = dict(calls)
        time.sleep(0.2)
        assert calls == finished  # nothing kept writing after the error reached the caller
        monkeypatch.undo()
        ck.save(1, tree, blocking=True).result()
    assert list(restore(tmp_path)) == list(tree)
    assert verify_store(tmp_path) == []
