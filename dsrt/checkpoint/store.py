"""``Checkpointer``: incremental, asynchronous, atomic checkpoints of trees of device arrays.

How a save works (``save(step, tree, blocking=False)``):

1. *In the caller's thread*: wait for the previous save (at most one is in flight), flatten the
   tree, and copy every array into host buffers this checkpointer owns and reuses from save to save
   (dsrt Arrays through their device's copy-out, ``Device.copy_to_host(out=...)``; numpy arrays with
   a memcpy). Then return: the caller may change its arrays at once.
2. *In the background thread*: cut each array into chunks (:mod:`.layout`); ``threads`` I/O threads
   take the chunks in order, hash each (xxh3-128, which releases the GIL), write the chunks whose
   hash no kept step has yet into the content-addressed store ``chunks/rank<r>/<hash>`` (temporary
   file, renamed) and hard-link every chunk, new or not, into the step's zarr array directory.
   Meanwhile the save's thread writes the zarr metadata.
3. Durability (``durable=True``, the default): a step must survive a node crash, not only a killed
   process. New chunk files are written with O_DIRECT where the filesystem takes it (straight from
   the array's bytes, or through an aligned per-thread buffer; see :meth:`Checkpointer._write_chunk_file`),
   else through the page cache with their writeback started at once (Linux ``sync_file_range``).
   Each new file -- and each folder once its entries are complete -- is fsynced as soon as it is
   written, on one of 16 sync threads, so the disk works while the save hashes and writes the rest
   and concurrent fsyncs share the filesystem's journal commits. A chunk merely linked again was
   fsynced when it was first written.
4. Commit: the manifest ``manifests/<step>.rank<r>.json`` (tree, shapes, dtypes, every chunk's
   hash) is written to a temporary file; once every fsync above is done, it is fsynced together
   with the folders that gained links (the array folders, the chunk store), renamed into place,
   and its directory fsynced. Only a step with a manifest exists; a process killed before the
   rename leaves debris that the next save removes, and every earlier step untouched (their files
   are never rewritten: a chunk file is only ever created under a new name).
5. Retention (``keep``): the oldest manifests are removed first, then their step directories, then
   the chunk files no remaining manifest names. A kept step never loses a chunk: its own directory
   holds hard links to the chunk inodes, and the store keeps every hash a kept manifest lists.

A blocking save (``blocking=True``) skips the full host copy: numpy arrays, and arrays of host-visible
devices (``device.info.host_visible``, listed with :func:`dsrt.memory.in_use` for the whole save), are
hashed and written in place; other device arrays are copied out one chunk at a time into small reused
buffers.

Within a save exactly one I/O thread writes each new chunk hash; the other chunks with that hash wait
for it and then link the file. A chunk file is never renamed over while it may be linked: Linux
``link()`` fails with ENOENT when the inode it looked up loses its last name to a concurrent rename.

Threads: the caller's thread copies; one background thread (``dsrt-checkpoint``) runs each save,
with ``threads`` helper threads (``dsrt-checkpoint-io``) hashing and writing chunks and up to 16
(``dsrt-checkpoint-sync``) waiting in fsync. One process saves a given rank of a
store at a time (a ``flock`` on ``rank<r>.lock``); any number may read, but a reader can lose a step
that the writer's retention removes under it.

Devices: ``restore(device=...)`` takes a :class:`~dsrt.device.Device`, or a device id resolved by
the ``resolve`` callable given to the checkpointer (``Checkpointer(path, resolve=rt.device)``).
This package sits below the runtime and never imports it.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.checkpoint.layout as L

from ..errors import ConfigurationError, format_bytes
from ..memory import in_use
from .errors import CheckpointCorruptError, CheckpointError, CheckpointNotFoundError
from .tree import Leaf, array_names, flatten, unflatten

if TYPE_CHECKING:
    from ..device import Device

__all__ = ["Checkpointer", "SaveStats", "StepInfo", "default_rank", "list_steps", "verify_store"]

_MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
# Serial numbers of chunk temporaries: unique in this process (thread ids are reused once a thread ends).
_TMP_SERIAL = itertools.count()


def default_rank() -> int:
    """This process's MPI rank: ``COMM_WORLD``'s when mpi4py is imported and MPI initialised, else the
    rank ``mpiexec`` put in the environment, else 0. Never imports mpi4py."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                return int(mpi.COMM_WORLD.Get_rank())
        except Exception:  # noqa: BLE001 - a half-initialised MPI: fall back to the environment
            pass
    for var in _MPI_RANK_VARS:
        value = os.environ.get(var)
        if value is not None and value.isdigit():
            return int(value)
    return 0


@dataclass
class SaveStats:
    """What one save did. Sizes in bytes, times in seconds.

    ``bytes_total``: bytes of array data in the tree. ``bytes_written``: chunk bytes newly written to
    the store (padding of edge chunks included); ``chunks_written`` of ``chunks_total`` chunks, the
    other ``chunks_linked`` were unchanged since a kept step and only linked. ``seconds_blocked``:
    how long ``save`` held the caller; ``seconds_total``: from the call to the commit.
    """

    step: int
    rank: int
    arrays: int
    chunks_total: int
    chunks_written: int
    chunks_linked: int
    bytes_total: int
    bytes_written: int
    seconds_blocked: float
    seconds_total: float
    manifest: str
    removed_steps: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepInfo:
    """One committed step of one rank as :func:`list_steps` sees it (sizes in bytes)."""

    step: int
    rank: int
    arrays: int
    chunks: int
    bytes: int
    created: float
    manifest: str


@dataclass
class _Job:
    """One array leaf of a save: where its bytes are and how they are cut."""

    leaf: Leaf
    layout: L.ArrayLayout
    storage: np.dtype
    zarr_name: str
    logical: str
    device: str | None
    host: np.ndarray | None  # flat uint8 bytes (async copy, or a numpy array in place); None: stream from device
    hashes: list[str] = field(default_factory=list)


class Checkpointer:
    """Saves and restores steps of a tree under ``path`` (created on the first save).

    ``keep``: how many most recent steps of this rank to keep (``None``: all). ``rank``: this
    process's shard (default :func:`default_rank`). ``resolve``: turns a device id given to
    :meth:`restore` into a Device (``rt.device``). ``chunk_bytes``: target chunk size in bytes (the
    granularity of incremental saves). ``durable``: fsync data, metadata and directories before the
    commit, so a step survives a power loss or node crash too (a killed process never needs it).
    ``threads``: helper threads that hash and write chunks; by default 4 for durable saves, whose
    O_DIRECT writes hold their thread until the device has the chunk (four writes in flight keep a
    disk busier than two), and 2 otherwise (page-cache writes return at once; more threads than
    cores only contend).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keep: int | None = 3,
        *,
        rank: int | None = None,
        resolve: Callable[[str], Device] | None = None,
        chunk_bytes: int = L.DEFAULT_CHUNK_BYTES,
        durable: bool = True,
        threads: int | None = None,
    ) -> None:
        if keep is not None and keep < 1:
            raise ConfigurationError(f"Checkpointer(keep={keep}): keep at least 1 step, or None for all")
        if chunk_bytes < 1:
            raise ConfigurationError(f"Checkpointer(chunk_bytes={chunk_bytes}): must be a positive number of bytes")
        self.path = os.fspath(path)
        self.keep = keep
        self.rank = default_rank() if rank is None else int(rank)
        if self.rank < 0:
            raise ConfigurationError(f"Checkpointer(rank={rank}): ranks are >= 0")
        self.resolve = resolve
        self.chunk_bytes = int(chunk_bytes)
        self.durable = durable
        self.threads = max(1, int(threads)) if threads is not None else (4 if durable else 2)
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        self._pending: Future[SaveStats] | None = None
        self._last: SaveStats | None = None
        self._buffers: dict[str, np.ndarray] = {}
        self._scratch = threading.local()
        self._copy_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._manifests: dict[int, dict[str, Any] | None] | None = None  # step -> parsed (None: unreadable)
        self._cleaned = False
        self._hash_name, self._digest = L.hasher()
        self._direct = True  # durable chunk writes use O_DIRECT until the filesystem refuses it

    # ------------------------------------------------------------------ paths
    @property
    def _chunks_dir(self) -> str:
        return os.path.join(self.path, "chunks", f"rank{self.rank}")

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.path, "steps", str(step), f"rank{self.rank}")

    def _manifest_path(self, step: int) -> str:
        return os.path.join(self.path, "manifests", L.manifest_name(step, self.rank))

    # ------------------------------------------------------------------ public API
    def steps(self) -> list[int]:
        """The committed steps of this rank, oldest first."""
        return sorted(_scan_manifests(self.path).get(self.rank, {}))

    def save(self, step: int, tree: Any, blocking: bool = False) -> Future[SaveStats]:
        """Save ``tree`` as ``step``; returns a future of its :class:`SaveStats`.

        Waits first for the save in flight, if any (and raises its error). With ``blocking=False``
        it returns once every array is copied to host memory: the caller may then modify them. With
        ``blocking=True`` it returns after the commit (the future is done).
        """
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ConfigurationError(f"checkpoint {self.path}: step must be an int >= 0, not {step!r}")
        step = int(step)
        t0 = time.perf_counter()
        self.wait()
        self._take_lock()
        if step in self._known_manifests():
            raise CheckpointError(f"checkpoint {self.path}: step {step} of rank {self.rank} already exists", path=self.path)
        structure, leaves = flatten(tree)
        jobs = [self._plan(leaf) for leaf in leaves]
        if blocking:
            # Host-visible device memory is hashed and written in place, with no copy: the arrays are
            # listed in use for the whole save, so no pool moves or spills the bytes while they are read.
            direct = tuple(job.leaf.value for job in jobs if job.leaf.kind == "dsrt" and _host_visible(job.leaf.value))
            future: Future[SaveStats] = Future()
            try:
                with in_use(direct):
                    for job in jobs:
                        if job.leaf.kind != "dsrt":
                            job.host = _host_bytes(job.leaf.value, job.storage)
                        elif _host_visible(job.leaf.value):
                            job.host = _device_bytes(job.leaf.value)
                    future.set_result(self._write_step(step, structure, jobs, t0, None))
            except BaseException as exc:
                future.set_exception(exc)
                raise
            self._last = future.result()
            return future
        self._stage(jobs)
        blocked = time.perf_counter() - t0
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dsrt-checkpoint")
        self._pending = self._executor.submit(self._write_step, step, structure, jobs, t0, blocked)
        return self._pending

    def wait(self) -> SaveStats | None:
        """Block until the save in flight has committed; return the last save's stats (``None``
        before the first). Raises the background save's error, once."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._last = pending.result()
        return self._last

    def restore(self, step: int | None = None, device: Device | str | None = None) -> Any:
        """The tree saved as ``step`` (default: the latest complete step of this rank; a save of this
        checkpointer still in flight is waited for first).

        Leaves saved from dsrt Arrays come back on ``device`` (a Device, or an id passed to
        ``resolve``); with ``device=None`` they, like numpy leaves, come back as numpy arrays. Every
        chunk is checked against its hash: :class:`CheckpointCorruptError` names the array and chunk
        that does not match.
        """
        self.wait()  # this checkpointer's own save in flight counts as complete once it commits
        dev = self._device(device)
        step, manifest = self._manifest_for(step)
        arrays: dict[str, Any] = {}
        step_dir = self._step_dir(step)
        _, digest = L.hasher(manifest["hash"])
        for name in array_names(manifest["tree"]):
            entry = manifest["arrays"][name]
            host = _read_array(step_dir, name, entry, digest, step=step, rank=self.rank, on_error=None)
            arrays[name] = _as_leaf(host, entry, dev)
        return unflatten(manifest["tree"], arrays)

    def verify(self, step: int | None = None) -> list[CheckpointCorruptError]:
        """Every mismatching or missing chunk of ``step`` (default: latest) of this rank; ``[]`` if intact."""
        return verify_store(self.path, step=step, rank=self.rank, all_steps=False)

    def close(self) -> None:
        """Wait for the save in flight, stop the threads and release the writer lock."""
        try:
            self.wait()
        finally:
            for ex in (self._executor, self._pool, self._sync_pool):
                if ex is not None:
                    ex.shutdown(wait=True)
            self._executor = self._pool = self._sync_pool = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._buffers.clear()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dsrt.checkpoint.Checkpointer {self.path} rank={self.rank} keep={self.keep}>"

    # ------------------------------------------------------------------ save: caller's thread
    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        import fcntl

        os.makedirs(self.path, exist_ok=True)
        lock = os.path.join(self.path, f"rank{self.rank}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(
                f"checkpoint {self.path}: another process is saving rank {self.rank} ({lock} is locked)", path=self.path
            ) from None
        self._lock_fd = fd

    def _plan(self, leaf: Leaf) -> _Job:
        value = leaf.value
        if leaf.kind == "dsrt" and not value.is_contiguous:
            raise CheckpointError(f"checkpoint {self.path}: array {leaf.name!r} on {value.device.id} is not contiguous"
                                  f" (strides {value.strides}); save a contiguous copy", path=self.path)
        storage, zarr_name, logical = L.storage_of(value.dtype, f"array {leaf.name!r}")
        lay = L.plan_array(tuple(int(s) for s in value.shape), storage.itemsize, self.chunk_bytes)
        device = value.device.id if leaf.kind == "dsrt" else None
        return _Job(leaf, lay, storage, zarr_name, logical, device, None)

    def _stage(self, jobs: list[_Job]) -> None:
        """Copy every leaf into this checkpointer's host buffers (reused while the sizes match)."""
        keep: dict[str, np.ndarray] = {}
        for job in jobs:
            nbytes = job.layout.itemsize * int(np.prod(job.layout.shape, dtype=np.int64))
            buf = self._buffers.get(job.leaf.name)
            if buf is None or buf.nbytes != nbytes:
                buf = L.aligned_empty(nbytes)  # aligned: its chunks go to O_DIRECT writes as they are
            keep[job.leaf.name] = buf
            value = job.leaf.value
            if nbytes:
                if job.leaf.kind == "dsrt":
                    value.device.copy_to_host(value, out=buf)
                else:
                    np.copyto(buf.view(job.storage).reshape(value.shape), _as_storage(value, job.storage), casting="no")
            job.host = buf
        self._buffers = keep

    # ------------------------------------------------------------------ save: background
    def _write_step(self, step: int, structure: dict[str, Any], jobs: list[_Job], t0: float,
                    blocked: float | None) -> SaveStats:
        try:
            return self._write_step_unguarded(step, structure, jobs, t0, blocked)
        except BaseException:
            self._cleaned = False  # the next save removes what this one left (its step directory, temporaries)
            raise
        finally:
            for job in jobs:
                job.host = None  # the host buffers stay with the checkpointer; drop the caller's arrays
                job.leaf.value = None

    def _write_step_unguarded(self, step: int, structure: dict[str, Any], jobs: list[_Job], t0: float,
                              blocked: float | None) -> SaveStats:
        self._prepare_store()
        step_dir = self._step_dir(step)
        if os.path.exists(step_dir):  # debris of a save that was killed before its commit
            shutil.rmtree(step_dir)
        os.makedirs(step_dir)
        state = _SaveState(self._referenced(), self._syncer() if self.durable else None)
        groups = _group_names(jobs)
        for name in groups:  # every folder exists before the first chunk is linked into it
            os.makedirs(os.path.join(step_dir, name), exist_ok=True)
        tasks: list[tuple[_Job, int]] = []
        for job in jobs:
            os.makedirs(os.path.join(step_dir, job.leaf.name), exist_ok=True)
            job.hashes = [""] * job.layout.nchunks
            tasks.extend((job, j) for j in range(job.layout.nchunks))
        workers: list[Future[None]] = []
        if self.threads > 1 and len(tasks) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dsrt-checkpoint-io")
            workers = [self._pool.submit(self._put_chunks, step_dir, tasks, state)
                       for _ in range(min(self.threads, len(tasks)))]
        try:
            # The metadata is written here while the I/O threads hash and write the chunks.
            self._write_metadata(step, structure, jobs, groups, state)
            if not workers:
                self._put_chunks(step_dir, tasks, state)
        except BaseException:
            state.failed = True
            raise
        finally:  # on an error, no chunk write or fsync may outlive this save (the next save cleans the store)
            wait_all(workers)
            state.wait_synced()
        for f in workers:
            f.result()
        if self.durable:
            state.raise_sync_error()
        manifest = {
            "format": L.FORMAT, "step": step, "rank": self.rank, "created": time.time(), "hash": self._hash_name,
            "tree": structure,
            "arrays": {job.leaf.name: {
                "shape": list(job.layout.shape), "dtype": job.logical, "storage": job.zarr_name, "kind": job.leaf.kind,
                "device": job.device, "split": job.layout.split,
                "chunk": job.layout.chunk_shape[job.layout.split] if job.layout.split >= 0 else 0,
                "hashes": job.hashes} for job in jobs},
        }
        mpath = self._manifest_path(step)
        tmp = f"{mpath}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            L.write_all(fd, json.dumps(manifest, separators=(",", ":")).encode())
        finally:
            os.close(fd)
        if self.durable:
            # The manifest's bytes and the folders that gained names since the metadata was written (chunk
            # links and files) are fsynced together: one journal commit where one after the other takes two.
            self._sync_now([tmp], [self._chunks_dir, *(os.path.join(step_dir, job.leaf.name) for job in jobs)])
        os.replace(tmp, mpath)  # the commit
        if self.durable:
            L.fsync_dir(os.path.dirname(mpath))
        assert self._manifests is not None
        self._manifests[step] = manifest
        removed = self._retain()
        stats = SaveStats(
            step=step, rank=self.rank, arrays=len(jobs), chunks_total=len(tasks), chunks_written=state.written,
            chunks_linked=len(tasks) - state.written,
            bytes_total=sum(j.layout.itemsize * int(np.prod(j.layout.shape, dtype=np.int64)) for j in jobs),
            bytes_written=state.bytes_written, seconds_blocked=time.perf_counter() - t0 if blocked is None else blocked,
            seconds_total=time.perf_counter() - t0, manifest=mpath, removed_steps=removed,
        )
        return stats

    def _write_metadata(self, step: int, structure: dict[str, Any], jobs: list[_Job], groups: list[str],
                        state: _SaveState) -> None:
        """Write the zarr.json files of the step (on the save's thread, while the I/O threads run); a
        durable save fsyncs each file, and each folder whose entries are then complete, on the sync threads."""
        step_dir = self._step_dir(step)
        step_group = os.path.dirname(step_dir)
        group_json = os.path.join(step_group, "zarr.json")
        if not os.path.exists(group_json):  # shared by the ranks: renamed into place
            L.write_json_atomic(group_json, L.zarr_group_metadata({"dsrt_checkpoint": {"step": step}}),
                                durable=self.durable)
        state.sync(os.path.dirname(step_group))
        state.sync(step_group)
        for name in groups:
            self._write_meta(os.path.join(step_dir, name, "zarr.json"), L.zarr_group_metadata(), state)
        for job in jobs:
            # raw_bits: zarr reads bf16/fp8 as the unsigned integers of their bits; "dtype" says what they are
            attrs = {"dsrt_checkpoint": {"dtype": job.logical, "raw_bits": job.zarr_name != job.logical,
                                         "kind": job.leaf.kind, "device": job.device, "step": step}}
            self._write_meta(os.path.join(step_dir, job.leaf.name, "zarr.json"),
                             L.zarr_array_metadata(job.layout, job.zarr_name, attrs), state)
        self._write_meta(os.path.join(step_dir, "zarr.json"), L.zarr_group_metadata({"dsrt_checkpoint": {
            "format": L.FORMAT, "step": step, "rank": self.rank, "tree": structure}}), state)
        for name in groups:  # a group folder holds its zarr.json and its children's folders, all there now
            state.sync(os.path.join(step_dir, name))
        state.sync(step_dir)

    def _write_meta(self, path: str, obj: dict[str, Any], state: _SaveState) -> None:
        """Write a zarr.json inside a step directory (not yet visible: no rename needed); a durable
        save fsyncs it at once on a sync thread."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            L.write_all(fd, json.dumps(obj, separators=(",", ":")).encode())
        finally:
            os.close(fd)
        state.sync(path)

    def _syncer(self) -> ThreadPoolExecutor:
        """The threads that fsync a durable save's files while the save goes on (they wait on the
        disk, not the CPU, so there are many: concurrent fsyncs share the filesystem's journal commits)."""
        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(16, thread_name_prefix="dsrt-checkpoint-sync")
        return self._sync_pool

    def _sync_now(self, files: Iterable[str], dirs: Iterable[str]) -> None:
        """fsync ``files`` and ``dirs`` (their new entries: links, renames, subfolders), all at once on
        the sync threads; return when every one is done."""
        pool = self._syncer()
        futures = [pool.submit(L.fsync_path, path) for path in files]
        futures += [pool.submit(L.fsync_dir, path) for path in dirs]
        wait_all(futures)
        for f in futures:
            f.result()

    def _chunk_data(self, job: _Job, j: int) -> memoryview:
        """The bytes of chunk ``j`` of ``job`` as stored (edge chunks padded with zeros)."""
        lay = job.layout
        start, length = lay.byte_range(j)
        if job.host is not None and length == lay.chunk_nbytes:
            return job.host.data[start:start + length]
        out = self._scratch_buffer(lay.chunk_nbytes)
        if job.host is not None:
            out[:length] = job.host[start:start + length]
        else:
            value = job.leaf.value
            with self._copy_lock:  # one copy-out at a time: backends' queues are not all thread-safe
                value.device.copy_to_host(value, out=out[:length], start=start)
        out[length:] = 0
        return out.data

    def _scratch_buffer(self, nbytes: int) -> np.ndarray:
        """This thread's reused scratch buffer (aligned for O_DIRECT), cut to ``nbytes`` bytes."""
        scratch: np.ndarray | None = getattr(self._scratch, "buf", None)
        if scratch is None or scratch.nbytes < nbytes:
            scratch = self._scratch.buf = L.aligned_empty(max(nbytes, self.chunk_bytes))
        return scratch[:nbytes]

    def _write_chunk_file(self, path: str, data: memoryview) -> None:
        """Create the chunk file ``path`` (a new name) holding ``data``. Runs on an I/O thread.

        A durable save writes it with O_DIRECT where the filesystem takes it: the bytes go from memory
        to the device with no page cache in between (no page allocation, no writeback later: on the
        project's VM a 4 MiB write into fresh page-cache pages took up to 12 ms of CPU, an O_DIRECT one
        under 1 ms), and the device has them when the write returns -- the fsync that follows then
        only flushes the device cache and the metadata. ``data`` is written in place when it is
        aligned (:func:`~.layout.is_direct_aligned`), else from this thread's scratch buffer. Sizes
        that are not a multiple of the alignment, ``durable=False`` saves, and filesystems without
        O_DIRECT go through the page cache (durable saves start the writeback at once).
        """
        buf = np.frombuffer(data, np.uint8)
        if self.durable and self._direct and buf.nbytes % L.DIRECT_ALIGN == 0:
            fd = L.open_direct(path)
            if fd is None:
                self._direct = False  # no O_DIRECT on this filesystem: the page cache from now on
            else:
                try:
                    if not L.is_direct_aligned(buf):
                        bounce = self._scratch_buffer(buf.nbytes)
                        bounce[:] = buf
                        buf = bounce
                    L.write_all(fd, buf)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._direct = False  # the device wants a coarser alignment: the page cache from now on
                finally:
                    os.close(fd)
                os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            L.write_all(fd, data)
            if self.durable:
                L.start_writeback(fd)  # the disk writes it while this save hashes and writes the rest
        finally:
            os.close(fd)

    def _put_chunk(self, step_dir: str, job: _Job, j: int, state: _SaveState) -> None:
        """Hash chunk ``j`` of ``job``, store it under its hash unless stored already, link it into the step.

        Runs on an I/O thread. Exactly one thread of a save writes a given hash (:meth:`_SaveState.claim`);
        the others wait for that write before linking. A chunk file is never renamed over while another
        thread may link it: Linux ``link()`` fails with ENOENT when the inode it looked up loses its last
        name to a concurrent ``rename()``, even though the path exists throughout.
        """
        data = self._chunk_data(job, j)
        digest = self._digest(data)
        job.hashes[j] = digest
        target = os.path.join(self._chunks_dir, digest)
        link = os.path.join(step_dir, job.leaf.name, job.layout.key(j))
        stored = state.claim(digest)
        while stored is not None:  # stored by a kept step, or being written by another thread of this save
            stored.wait()
            try:
                L.link_or_copy(target, link)
                return
            except FileNotFoundError:  # missing from the store (damaged, or its writer failed): write it here
                stored = state.reclaim(digest, stored)
        try:
            tmp = f"{target}.tmp{os.getpid()}.{next(_TMP_SERIAL)}"
            self._write_chunk_file(tmp, data)
            os.replace(tmp, target)  # replaces only debris of a killed save: no thread links this hash yet
            L.link_or_copy(target, link)
            state.wrote(target, len(data))
        finally:
            state.release(digest)

    def _put_chunks(self, step_dir: str, tasks: list[tuple[_Job, int]], state: _SaveState) -> None:
        """Run :meth:`_put_chunk` on the chunks of ``tasks`` not yet taken, until none is left or the save
        failed. Runs on each I/O thread at once (one task per thread rather than a future per chunk, which
        would add Python work under the GIL for every chunk), and on the save's thread when single-threaded.
        """
        n = len(tasks)
        while not state.failed:
            i = next(state.cursor)  # itertools.count: atomic under the GIL
            if i >= n:
                return
            job, j = tasks[i]
            try:
                self._put_chunk(step_dir, job, j, state)
            except BaseException:
                state.failed = True
                raise

    # ------------------------------------------------------------------ store upkeep
    def _known_manifests(self) -> dict[int, dict[str, Any] | None]:
        if self._manifests is None:
            found: dict[int, dict[str, Any] | None] = {}
            for step, path in _scan_manifests(self.path).get(self.rank, {}).items():
                try:
                    found[step] = _load_manifest(path, step, self.rank)
                except CheckpointError:
                    found[step] = None
            self._manifests = found
        return self._manifests

    def _referenced(self) -> set[str] | None:
        """Every chunk hash a kept manifest names (``None`` if some manifest is unreadable)."""
        out: set[str] = set()
        for manifest in self._known_manifests().values():
            if manifest is None:
                return None
            for entry in manifest["arrays"].values():
                out.update(entry["hashes"])
        return out

    def _prepare_store(self) -> None:
        """Create the layout; on the first save, remove what killed saves of this rank left behind."""
        for d in (os.path.join(self.path, "manifests"), os.path.join(self.path, "steps"), self._chunks_dir):
            os.makedirs(d, exist_ok=True)
        for path, attrs in ((os.path.join(self.path, "zarr.json"), {"dsrt_checkpoint": {"format": L.FORMAT}}),
                            (os.path.join(self.path, "steps", "zarr.json"), {})):
            if not os.path.exists(path):
                L.write_json_atomic(path, L.zarr_group_metadata(attrs), durable=self.durable)
        if self._cleaned:
            return
        self._cleaned = True
        if self.durable:  # once per checkpointer: the store's own folders may have been created just now
            for d in (os.path.dirname(os.path.abspath(self.path)), self.path, os.path.dirname(self._chunks_dir),
                      self._chunks_dir, os.path.join(self.path, "steps"), os.path.join(self.path, "manifests")):
                L.fsync_dir(d)
        committed = self._known_manifests()
        steps_root = os.path.join(self.path, "steps")
        mine = f"rank{self.rank}"
        for name in os.listdir(steps_root):
            if name.isdigit() and int(name) not in committed and os.path.isdir(os.path.join(steps_root, name, mine)):
                shutil.rmtree(os.path.join(steps_root, name, mine), ignore_errors=True)
                _remove_step_group(os.path.join(steps_root, name))
        suffix = f".rank{self.rank}.json.tmp"
        mdir = os.path.join(self.path, "manifests")
        for name in os.listdir(mdir):
            if suffix in name:
                L.remove_quietly(os.path.join(mdir, name))
        self._collect_garbage()

    def _retain(self) -> list[int]:
        """Drop all but the ``keep`` newest steps of this rank; return the steps removed."""
        manifests = self._known_manifests()
        if self.keep is None or len(manifests) <= self.keep:
            return []
        old = sorted(manifests)[:-self.keep]
        for step in old:  # manifests first: from here on the step does not exist
            L.remove_quietly(self._manifest_path(step))
            del manifests[step]
        if self.durable:
            L.fsync_dir(os.path.join(self.path, "manifests"))
        for step in old:
            shutil.rmtree(self._step_dir(step), ignore_errors=True)
            _remove_step_group(os.path.dirname(self._step_dir(step)))
        self._collect_garbage()
        return old

    def _collect_garbage(self) -> None:
        """Remove chunk files (and temporaries) no kept manifest names."""
        referenced = self._referenced()
        if referenced is None:
            return  # an unreadable manifest: it may need anything, so delete nothing
        with os.scandir(self._chunks_dir) as it:
            for entry in it:
                if entry.name not in referenced:
                    L.remove_quietly(entry.path)

    def _manifest_for(self, step: int | None) -> tuple[int, dict[str, Any]]:
        found = _scan_manifests(self.path).get(self.rank, {})
        if not found:
            raise CheckpointNotFoundError(
                f"checkpoint {self.path}: no complete step for rank {self.rank}"
                + ("" if os.path.isdir(self.path) else " (no such directory)"), path=self.path)
        if step is None:
            step = max(found)
        elif step not in found:
            raise CheckpointNotFoundError(
                f"checkpoint {self.path}: no step {step} for rank {self.rank} (steps: {_span(sorted(found))})", path=self.path)
        return step, _load_manifest(found[step], step, self.rank)

    def _device(self, device: Device | str | None) -> Device | None:
        if device is None or not isinstance(device, str):
            return device
        if self.resolve is None:
            raise ConfigurationError(
                f"restore(device={device!r}): a device id needs a resolver; pass the Device itself, or create the"
                " checkpointer with resolve=rt.device"
            )
        return self.resolve(device)


class _SaveState:
    """Counters and the set of hashes already stored or being written, shared by a save's threads."""

    def __init__(self, known: set[str] | None, syncer: ThreadPoolExecutor | None = None) -> None:
        self.lock = threading.Lock()
        self.cursor = itertools.count()  # the next index into the save's chunk list
        self.failed = False  # set by the first error: the I/O threads take no further chunk
        self.syncer = syncer  # fsyncs each new file as soon as it is written (durable saves), else None
        self.syncs: list[Future[None]] = []
        stored = threading.Event()
        stored.set()
        # hash -> set once its file is in the store; unset while one thread of this save writes it
        self.pending: dict[str, threading.Event] = dict.fromkeys(known or (), stored)
        self.written = 0
        self.bytes_written = 0

    def claim(self, digest: str) -> threading.Event | None:
        """``None`` for the first chunk of a save with a hash the store does not hold: the caller writes
        the file, then calls :meth:`release`. Otherwise an event set once the file is in the store."""
        with self.lock:
            event = self.pending.get(digest)
            if event is None:
                self.pending[digest] = threading.Event()
            return event

    def reclaim(self, digest: str, seen: threading.Event) -> threading.Event | None:
        """After ``seen`` was set and the file still is not there: claim the write again (``None``),
        unless another thread already did (its event)."""
        with self.lock:
            event = self.pending[digest]
            if event is seen:
                self.pending[digest] = threading.Event()
                return None
            return event

    def release(self, digest: str) -> None:
        """The claimed write of ``digest`` is over (done or failed): wake the threads waiting to link it."""
        with self.lock:
            event = self.pending[digest]
        event.set()

    def wrote(self, path: str, nbytes: int) -> None:
        """A new chunk file of ``nbytes`` bytes is in the store at ``path``."""
        with self.lock:
            self.written += 1
            self.bytes_written += nbytes
        self.sync(path)

    def sync(self, path: str) -> None:
        """fsync file or folder ``path`` on a sync thread now (durable saves; nothing otherwise)."""
        if self.syncer is not None:
            future = self.syncer.submit(L.fsync_path, path)
            with self.lock:
                self.syncs.append(future)

    def wait_synced(self) -> None:
        """Wait for every fsync submitted so far (errors are kept in the futures)."""
        with self.lock:
            syncs = list(self.syncs)
        wait_all(syncs)

    def raise_sync_error(self) -> None:
        """Raise the first failed fsync's error, if any (after :meth:`wait_synced`)."""
        for future in self.syncs:
            future.result()


# ---------------------------------------------------------------------------------------- helpers
def _as_storage(value: np.ndarray, storage: np.dtype) -> np.ndarray:
    """``value`` seen as its storage dtype: raw bits for bf16/fp8, native byte order otherwise."""
    if value.dtype.byteorder == ">":
        value = value.astype(value.dtype.newbyteorder("="))
    if value.dtype != storage:
        return value.view(storage)
    return value


def _host_bytes(value: np.ndarray, storage: np.dtype) -> np.ndarray:
    """The bytes of numpy ``value`` as flat uint8, without a copy when it is contiguous and native."""
    arr = np.ascontiguousarray(_as_storage(np.asarray(value), storage))
    return arr.reshape(-1).view(np.uint8)


def _host_visible(value: Any) -> bool:
    """True for a dsrt Array whose device memory the CPU reads directly (1-D uint8 numpy buffers)."""
    return bool(getattr(value.device.info, "host_visible", False)) and value.nbytes > 0


def _device_bytes(value: Any) -> np.ndarray:
    """The bytes of contiguous host-visible dsrt Array ``value`` as flat uint8, without a copy.

    Only valid inside ``in_use((value,))``; waits first for the work queued on the device."""
    value.device.synchronize()
    start = value.handle_offset
    return np.asarray(value.handle).reshape(-1).view(np.uint8)[start:start + value.nbytes]


def _group_names(jobs: Iterable[_Job]) -> list[str]:
    """Every intermediate group of the leaves' names, parents first."""
    names: set[str] = set()
    for job in jobs:
        parts = job.leaf.name.split("/")
        for i in range(1, len(parts)):
            names.add("/".join(parts[:i]))
    return sorted(names, key=lambda n: (n.count("/"), n))


def _remove_step_group(step_group: str) -> None:
    """Remove a step's directory once no rank has a directory in it (another rank may race: harmless)."""
    try:
        if any(name.startswith("rank") for name in os.listdir(step_group)):
            return
        L.remove_quietly(os.path.join(step_group, "zarr.json"))
        os.rmdir(step_group)
    except OSError:
        pass


def _span(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps) if len(steps) <= 8 else f"{steps[0]}..{steps[-1]} ({len(steps)} steps)"


def _scan_manifests(path: str) -> dict[int, dict[int, str]]:
    """``{rank: {step: manifest path}}`` of every committed step in the store at ``path``."""
    mdir = os.path.join(path, "manifests")
    out: dict[int, dict[int, str]] = {}
    try:
        names = os.listdir(mdir)
    except FileNotFoundError:
        return out
    for name in names:
        parsed = L.parse_manifest_name(name)
        if parsed is not None:
            out.setdefault(parsed[1], {})[parsed[0]] = os.path.join(mdir, name)
    return out


def _load_manifest(path: str, step: int, rank: int) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read())
        if manifest.get("format") != L.FORMAT or manifest.get("step") != step or not isinstance(manifest.get("arrays"), dict):
            raise ValueError("not a dsrt checkpoint manifest of this step")
        return manifest
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"checkpoint manifest {path} vanished (removed by retention?)", path=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(f"{path}: unreadable manifest of step {step} rank {rank}: {exc}", path=path,
                                     step=step, rank=rank) from None


def _read_array(step_dir: str, name: str, entry: dict[str, Any], digest: Callable[[Any], str], *, step: int,
                rank: int, on_error: Callable[[CheckpointCorruptError], None] | None) -> np.ndarray:
    """Read and check every chunk of array ``name``; return it as a host array of its storage dtype.

    Each mismatch is raised, or passed to ``on_error`` (which verifies everything) when given.
    """
    storage = np.dtype(entry["storage"])
    shape = tuple(entry["shape"])
    lay = L.make_layout(shape, storage.itemsize, entry["split"], entry["chunk"])
    hashes = entry["hashes"]
    host = np.empty(shape, storage)
    flat = host.reshape(-1).view(np.uint8)
    scratch: np.ndarray | None = None
    if len(hashes) != lay.nchunks:
        _report(CheckpointCorruptError(
            f"{step_dir}: array {name!r}: the manifest lists {len(hashes)} chunk hashes for {lay.nchunks} chunks",
            path=step_dir, array=name, step=step, rank=rank), on_error)
        return host
    for j in range(lay.nchunks):
        key = lay.key(j)
        fpath = os.path.join(step_dir, name, key)
        start, length = lay.byte_range(j)
        if length == lay.chunk_nbytes:
            dest = flat[start:start + length]
        else:
            if scratch is None:
                scratch = np.empty(lay.chunk_nbytes, np.uint8)
            dest = scratch
        problem = _read_chunk(fpath, dest)
        if problem is None and digest(dest) != hashes[j]:
            problem = f"hash mismatch (expected {hashes[j]})"
        if problem is not None:
            _report(CheckpointCorruptError(
                f"{fpath}: array {name!r} chunk {key} of step {step} rank {rank}: {problem}",
                path=fpath, array=name, chunk=key, step=step, rank=rank), on_error)
            continue
        if dest is scratch:
            flat[start:start + length] = scratch[:length]
    return host


def _report(err: CheckpointCorruptError, on_error: Callable[[CheckpointCorruptError], None] | None) -> None:
    if on_error is None:
        raise err
    on_error(err)


def _read_chunk(path: str, dest: np.ndarray) -> str | None:
    """Fill ``dest`` with the file at ``path``; a description of the problem, or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "chunk file missing"
    try:
        size = os.fstat(fd).st_size
        if size != dest.nbytes:
            return f"chunk file has {format_bytes(size)}, expected {format_bytes(dest.nbytes)}"
        view = dest.reshape(-1).view(np.uint8).data
        while view:
            n = os.readv(fd, [view])
            if n == 0:
                return "chunk file truncated while reading"
            view = view[n:]
    finally:
        os.close(fd)
    return None


def _as_leaf(host: np.ndarray, entry: dict[str, Any], device: Device | None) -> Any:
    logical = L.logical_dtype(entry["dtype"])
    value = host.view(logical) if logical != host.dtype else host
    kind = entry["kind"]
    if kind == "scalar":
        return value[()]
    if kind == "dsrt" and device is not None:
        out = device.empty(value.shape, value.dtype)  # not asarray: it turns 0-d arrays into shape (1,)
        device.copy_from_host(out, value)
        return out
    return value


def list_steps(path: str | os.PathLike[str]) -> list[StepInfo]:
    """Every committed step of every rank in the store at ``path``, by step then rank."""
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise CheckpointNotFoundError(f"checkpoint {root}: no such directory", path=root)
    if not os.path.exists(os.path.join(root, "zarr.json")) and not os.path.isdir(os.path.join(root, "manifests")):
        raise CheckpointNotFoundError(f"checkpoint {root}: not a dsrt checkpoint (no zarr.json or manifests/)", path=root)
    out = []
    for rank, steps in _scan_manifests(root).items():
        for step, mpath in steps.items():
            manifest = _load_manifest(mpath, step, rank)
            arrays = manifest["arrays"].values()
            nbytes = sum(int(np.prod(a["shape"], dtype=np.int64)) * np.dtype(a["storage"]).itemsize for a in arrays)
            out.append(StepInfo(step, rank, len(manifest["arrays"]), sum(len(a["hashes"]) for a in arrays), nbytes,
                                float(manifest.get("created", 0.0)), mpath))
    return sorted(out, key=lambda s: (s.step, s.rank))


def verify_store(path: str | os.PathLike[str], *, step: int | None = None, rank: int | None = None,
                 all_steps: bool = True) -> list[CheckpointCorruptError]:
    """Read and hash every chunk of the selected steps; return every problem found (``[]``: intact).

    ``step``: only that step (else every step, or with ``all_steps=False`` the latest of each rank);
    ``rank``: only that rank. Raises :class:`CheckpointNotFoundError` when nothing matches.
    """
    root = os.fspath(path)
    found = _scan_manifests(root)
    if rank is not None:
        found = {rank: found.get(rank, {})}
    selected: list[tuple[int, int, str]] = []
    for r, steps in sorted(found.items()):
        chosen = sorted(steps) if all_steps and step is None else ([step] if step is not None else sorted(steps)[-1:])
        selected.extend((s, r, steps[s]) for s in chosen if s in steps)
    if not selected:
        what = f"step {step}" if step is not None else "complete step"
        who = f" for rank {rank}" if rank is not None else ""
        raise CheckpointNotFoundError(f"checkpoint {root}: no {what}{who}", path=root)
    problems: list[CheckpointCorruptError] = []
    for s, r, mpath in selected:
        try:
            manifest = _load_manifest(mpath, s, r)
            _, digest = L.hasher(manifest["hash"])
        except CheckpointCorruptError as exc:
            problems.append(exc)
            continue
        step_dir = os.path.join(root, "steps", str(s), f"rank{r}")
        for name in array_names(manifest["tree"]):
            _read_array(step_dir, name, manifest["arrays"][name], digest, step=s, rank=r, on_error=problems.append)
    return problems

