"""Durable saves (the default): every file and folder a step needs is fsynced before its manifest appears.

A step must survive a node crash, not only a killed process, so the order matters: chunk files,
zarr.json files and the folders holding their names reach the disk first, then the manifest is
renamed into place, then the manifests folder is fsynced. Hard links share an inode, so the checks
below work on inodes: a chunk linked again in a later step was fsynced when it was first written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading

import numpy as np
import pytest

import dsrt.checkpoint.layout as L
from dsrt.checkpoint import Checkpointer, restore

CHUNK = 8 << 10

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to name an fd's file")


class _Recorder:
    """Wraps ``os.fsync`` and ``os.replace``. Each fsync records the inode with its modification time
    as the fsync began; at each manifest's rename, everything the step needs must have been fsynced
    since its last change (a file's bytes, a folder's entries: both move the mtime)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.synced: dict[tuple[int, int], set[int]] = {}
        self.lock = threading.Lock()
        self.commits: list[int] = []
        self.missing: list[str] = []
        self.real_fsync = os.fsync
        self.real_replace = os.replace

    def fsync(self, fd: int) -> None:
        st = os.fstat(fd)
        self.real_fsync(fd)
        with self.lock:
            self.synced.setdefault((st.st_dev, st.st_ino), set()).add(st.st_mtime_ns)

    def is_synced(self, path: str) -> bool:
        st = os.stat(path)
        return st.st_mtime_ns in self.synced.get((st.st_dev, st.st_ino), ())

    def replace(self, src: str, dst: str) -> None:
        parsed = L.parse_manifest_name(os.path.basename(dst))
        if parsed is not None and os.path.basename(os.path.dirname(dst)) == "manifests":
            step, rank = parsed
            assert self.is_synced(src), "the manifest's temporary was not fsynced before its rename"
            need = [os.path.join(self.root, p) for p in (
                "", "zarr.json", "chunks", f"chunks/rank{rank}", "steps", "steps/zarr.json",
                f"steps/{step}", f"steps/{step}/zarr.json")]
            for base, _dirs, files in os.walk(os.path.join(self.root, "steps", str(step), f"rank{rank}")):
                need.append(base)
                need.extend(os.path.join(base, f) for f in files)
            self.missing.extend(p for p in need if not self.is_synced(p))
            self.commits.append(step)
        self.real_replace(src, dst)


def test_every_file_and_folder_of_a_step_is_fsynced_before_its_manifest(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    tree = {"model": {"w": rng.standard_normal((16, 1024), dtype=np.float32), "b": np.arange(5.0)},
            "opt": [rng.integers(0, 9, 3 * CHUNK, dtype=np.uint8)], "lr": 0.1}
    rec = _Recorder(str(tmp_path))
    monkeypatch.setattr(os, "fsync", rec.fsync)
    monkeypatch.setattr(os, "replace", rec.replace)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, keep=2, threads=3) as ck:
        for step in range(3):  # a full save; one new chunk, the rest linked (async); nothing new
            if step == 1:
                tree["model"]["w"][3, 7] = 42.0
            stats = ck.save(step, tree, blocking=step != 1).result()
            assert rec.is_synced(str(tmp_path / "manifests")), f"manifests/ not fsynced after step {step}'s commit"
    monkeypatch.undo()
    assert rec.commits == [0, 1, 2]
    assert rec.missing == []
    assert stats.chunks_written == 0
    assert restore(tmp_path)["model"]["w"][3, 7] == 42.0


def _chunk_writes(monkeypatch) -> tuple[list[tuple[str, bool]], list[str]]:
    """Spy on chunk-file writes: ``(file, written with O_DIRECT)`` per write, and the files whose
    writeback was started."""
    writes: list[tuple[str, bool]] = []
    started: list[str] = []
    real_write, real_start = L.write_all, L.start_writeback

    def write_all(fd: int, data) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "/chunks/" in path:
            writes.append((path, bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))))
        real_write(fd, data)

    def start_writeback(fd: int) -> None:
        started.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_start(fd)

    monkeypatch.setattr(L, "write_all", write_all)
    monkeypatch.setattr(L, "start_writeback", start_writeback)
    return writes, started


def _has_o_direct(where) -> bool:
    fd = L.open_direct(str(where / "probe"))
    if fd is None:
        return False
    os.close(fd)
    os.unlink(where / "probe")
    return True


def test_durable_chunk_writes_bypass_the_page_cache_or_start_its_writeback(tmp_path, monkeypatch) -> None:
    if not _has_o_direct(tmp_path):
        pytest.skip(f"no O_DIRECT on the filesystem of {tmp_path}")
    writes, started = _chunk_writes(monkeypatch)
    x = np.random.default_rng(1).integers(0, 255, 4 * CHUNK, dtype=np.uint8)
    unaligned = np.empty(x.nbytes + 1, np.uint8)[1:]  # the bytes at an odd address: written from a scratch copy
    unaligned[:] = x
    with Checkpointer(tmp_path / "d", chunk_bytes=CHUNK) as ck:
        stats = ck.save(0, {"x": unaligned}, blocking=True).result()
    assert stats.chunks_written == 4 and [direct for _, direct in writes] == [True] * 4 and started == []
    assert np.array_equal(restore(tmp_path / "d")["x"], x)
    writes.clear()
    with Checkpointer(tmp_path / "odd", chunk_bytes=1000) as ck:  # 1000-byte chunks cannot go O_DIRECT
        stats = ck.save(0, {"x": x[:3000]}, blocking=True).result()
    assert [direct for _, direct in writes] == [False] * 3 and sorted(started) == sorted(p for p, _ in writes)
    writes.clear()
    started.clear()
    with Checkpointer(tmp_path / "n", chunk_bytes=CHUNK, durable=False) as ck:
        ck.save(0, {"x": x}, blocking=True)
    assert [direct for _, direct in writes] == [False] * 4 and started == []  # no writeback hint, no fsync


def test_a_device_refusing_the_alignment_falls_back_to_the_page_cache(tmp_path, monkeypatch) -> None:
    """A disk with 4 KiB logical blocks under a smaller alignment, or a filesystem that checks later:
    the first O_DIRECT write fails with EINVAL, the chunk is written again through the page cache,
    and the checkpointer stops trying O_DIRECT."""
    if not _has_o_direct(tmp_path):
        pytest.skip(f"no O_DIRECT on the filesystem of {tmp_path}")
    writes, started = _chunk_writes(monkeypatch)
    spy = L.write_all

    def refuse_direct(fd: int, data) -> None:
        spy(fd, data)
        if writes and writes[-1][1]:
            raise OSError(errno.EINVAL, "Invalid argument (injected)")

    monkeypatch.setattr(L, "write_all", refuse_direct)
    x = np.random.default_rng(4).integers(0, 255, 4 * CHUNK, dtype=np.uint8)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, threads=1) as ck:
        stats = ck.save(0, {"x": x}, blocking=True).result()
        assert stats.chunks_written == 4 and not ck._direct
    assert [direct for _, direct in writes] == [True, False, False, False, False]
    assert len(started) == 4
    assert not [n for n in os.listdir(tmp_path / "chunks" / "rank0") if ".tmp" in n]
    assert np.array_equal(restore(tmp_path)["x"], x)


def test_start_writeback_is_only_a_hint(tmp_path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        L.write_all(fd, b"x" * 100_000)
        L.start_writeback(fd)  # returns at once, whatever the filesystem
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 100_000
    r, w = os.pipe()  # not a file: the call fails inside, and is ignored
    try:
        L.start_writeback(w)
    finally:
        os.close(r)
        os.close(w)


def test_a_failed_fsync_fails_the_save_and_commits_nothing(tmp_path, monkeypatch) -> None:
    x = np.random.default_rng(2).integers(0, 255, 6 * CHUNK, dtype=np.uint8)
    with Checkpointer(tmp_path, chunk_bytes=CHUNK, threads=2) as ck:
        ck.save(0, {"x": x}, blocking=True)
        real = L.fsync_path
        failed: list[str] = []

        def fsync_path(path: str) -> None:
            if "/chunks/" in path and not failed:
                failed.append(path)
                raise OSError(errno.EIO, f"Input/output error (injected): {path}")
            real(path)

        monkeypatch.setattr(L, "fsync_path", fsync_path)
        y = x.copy()
        y[::CHUNK] += 1  # every chunk new
        with pytest.raises(OSError, match="injected"):
            ck.save(1, {"x": y}, blocking=True)
        monkeypatch.undo()
        assert ck.steps() == [0]
        assert np.array_equal(ck.restore()["x"], x)
        ck.save(2, {"x": y}, blocking=True)
        assert ck.steps() == [0, 2] and np.array_equal(ck.restore()["x"], y)
