"""The on-disk layout of a checkpoint store: paths, zarr v3 metadata, chunk grids, hashing, and the
file operations that make a step appear atomically.

::

    PATH/
      zarr.json                             root group (attributes.dsrt_checkpoint: format, layout)
      steps/zarr.json                       group
      steps/<step>/zarr.json                group of one step
      steps/<step>/rank<r>/zarr.json        group; attributes.dsrt_checkpoint holds the tree
      steps/<step>/rank<r>/<name>/zarr.json one zarr v3 array per leaf (``name`` is the leaf path)
      steps/<step>/rank<r>/<name>/c.<i>...  its chunks: hard links into chunks/rank<r>/
      chunks/rank<r>/<hash>                 content-addressed chunk files, shared by every step of rank r
      manifests/<step>.rank<r>.json         the commit record of one step of one rank, written last
      rank<r>.lock                          held (flock) by the one process that saves rank r

Each array's chunks are raw little-endian bytes (the zarr ``bytes`` codec, no compression), edge
chunks padded to the full chunk shape as zarr expects, so ``zarr.open(PATH/steps/<step>/rank<r>/<name>)``
reads it with no dsrt installed. bfloat16 and the fp8 formats, which zarr has no core type for, are
stored as their raw bits (``uint16``/``uint8``) with ``attributes.dsrt_checkpoint.dtype`` naming
the dsrt dtype.

Chunk shapes are chosen so that every chunk is one contiguous byte range of the C-ordered array
(outer dimensions chunked by 1, one dimension split, inner dimensions whole): a chunk is hashed
and written straight from the array's bytes, with no gather.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import dsrt.dtypes as dt

from .errors import CheckpointError

__all__ = [
    "FORMAT",
    "ArrayLayout",
    "plan_array",
    "make_layout",
    "storage_of",
    "hasher",
    "zarr_array_metadata",
    "zarr_group_metadata",
    "write_file_atomic",
    "write_all",
    "fsync_dir",
    "fsync_path",
    "start_writeback",
    "aligned_empty",
    "is_direct_aligned",
    "open_direct",
    "link_or_copy",
    "manifest_name",
    "parse_manifest_name",
]

FORMAT = "dsrt-checkpoint/1"
DEFAULT_CHUNK_BYTES = 4 << 20
_LITTLE = sys.byteorder == "little"

# zarr v3 core data type names, by numpy dtype.
_ZARR_NAMES: dict[np.dtype, str] = {
    np.dtype(t): name
    for t, name in (
        (np.bool_, "bool"), (np.int8, "int8"), (np.int16, "int16"), (np.int32, "int32"), (np.int64, "int64"),
        (np.uint8, "uint8"), (np.uint16, "uint16"), (np.uint32, "uint32"), (np.uint64, "uint64"),
        (np.float16, "float16"), (np.float32, "float32"), (np.float64, "float64"),
        (np.complex64, "complex64"), (np.complex128, "complex128"),
    )
}
# Types zarr has no core name for, stored as raw bits of the same width.
_RAW_BITS: dict[np.dtype, np.dtype] = {
    dt.bfloat16: np.dtype(np.uint16),
    dt.float8_e4m3fn: np.dtype(np.uint8),
    dt.float8_e5m2: np.dtype(np.uint8),
}


def storage_of(dtype: np.dtype, where: str) -> tuple[np.dtype, str, str]:
    """``(storage dtype, zarr data_type name, logical dtype name)`` of an array of ``dtype``.

    The logical name is the dsrt name (``'bfloat16'``) for dsrt dtypes, else numpy's (``'uint32'``).
    Raises :class:`CheckpointError` naming ``where`` for dtypes that cannot be stored (objects,
    strings, structured records).
    """
    native = dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype
    raw = _RAW_BITS.get(native)
    if raw is not None:
        return raw, _ZARR_NAMES[raw], dt.dtype_name(native)
    name = _ZARR_NAMES.get(native)
    if name is None:
        raise CheckpointError(f"checkpoint: {where} has dtype {dtype}, which a checkpoint cannot store")
    try:
        logical = dt.dtype_name(native)
    except Exception:  # noqa: BLE001 - not a dsrt dtype: numpy's own name
        logical = native.name
    return native, name, logical


def logical_dtype(name: str) -> np.dtype:
    """The numpy dtype of a logical dtype name written by :func:`storage_of`."""
    try:
        return dt.as_dtype(name)
    except Exception:  # noqa: BLE001 - a numpy dtype dsrt does not list (uint32...)
        return np.dtype(name)


@dataclass(frozen=True)
class ArrayLayout:
    """How one array is cut into chunks. Sizes in bytes.

    ``split`` is the dimension cut into pieces of ``chunk_shape[split]`` (-1: the array is one
    chunk); dimensions before it are chunked by 1, those after it are whole. ``nchunks`` chunks in
    C order over the chunk grid ``grid``; chunk ``j`` covers :meth:`byte_range` of the array's bytes
    and its file holds ``chunk_nbytes`` bytes (edge chunks padded with zeros).
    """

    shape: tuple[int, ...]
    itemsize: int
    chunk_shape: tuple[int, ...]
    grid: tuple[int, ...]
    split: int
    nchunks: int
    chunk_nbytes: int
    row_nbytes: int  # bytes of one index along ``split`` (the whole array when split == -1)
    per_row: int  # chunks per outer row (grid[split], or 1)

    def byte_range(self, j: int) -> tuple[int, int]:
        """``(start, length)`` in bytes of the array data chunk ``j`` holds (without padding)."""
        if self.split < 0:
            return 0, self.row_nbytes
        extent = self.shape[self.split]
        row, m = divmod(j, self.per_row)
        first = m * self.chunk_shape[self.split]
        count = min(self.chunk_shape[self.split], extent - first)
        return row * extent * self.row_nbytes + first * self.row_nbytes, count * self.row_nbytes

    def key(self, j: int) -> str:
        """The zarr chunk key of chunk ``j`` (default encoding, separator ``.``)."""
        if not self.shape:
            return "c"
        idx = []
        for g in reversed(self.grid):
            j, r = divmod(j, g) if g else (j, 0)
            idx.append(r)
        return "c." + ".".join(str(i) for i in reversed(idx))


def plan_array(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> ArrayLayout:
    """The chunking of a C-contiguous array of ``shape`` aiming at chunks of about ``chunk_bytes``."""
    ndim = len(shape)
    if itemsize * math.prod(shape) <= chunk_bytes or ndim == 0:
        return make_layout(shape, itemsize, -1, 0)
    inner = itemsize
    split = ndim - 1
    for d in range(ndim - 1, -1, -1):
        if inner * shape[d] > chunk_bytes:
            split = d
            break
        inner *= shape[d]
    extent = shape[split]
    pieces = math.ceil(extent / max(1, chunk_bytes // inner))
    # balanced: the same number of chunks as the largest fitting size, little padding in the edge chunk
    return make_layout(shape, itemsize, split, math.ceil(extent / pieces))


def make_layout(shape: tuple[int, ...], itemsize: int, split: int, size: int) -> ArrayLayout:
    """The layout that cuts dimension ``split`` into pieces of ``size`` (``split=-1``: one chunk).

    This is how a manifest's record (shape, split, chunk size) becomes a layout again on restore.
    """
    ndim = len(shape)
    total = itemsize * math.prod(shape)
    if split < 0:
        chunk = tuple(max(s, 1) for s in shape)
        n = 0 if total == 0 and ndim else 1
        grid = tuple(n for _ in shape)
        return ArrayLayout(shape, itemsize, chunk, grid, -1, n, itemsize * math.prod(chunk) if n else 0, total, 1)
    if not 0 <= split < ndim or size < 1:
        raise CheckpointError(f"checkpoint: invalid chunk layout split={split} size={size} for shape {shape}")
    inner = itemsize * math.prod(shape[split + 1:])
    extent = shape[split]
    chunk = tuple([1] * split + [size] + list(shape[split + 1:]))
    grid = tuple(list(shape[:split]) + [math.ceil(extent / size)] + [1] * (ndim - split - 1))
    return ArrayLayout(shape, itemsize, chunk, grid, split, math.prod(grid), size * inner, inner, grid[split])


def _fill_value(zarr_name: str) -> Any:
    if zarr_name == "bool":
        return False
    if zarr_name.startswith("complex"):
        return [0.0, 0.0]
    if zarr_name.startswith("float"):
        return 0.0
    return 0


def zarr_array_metadata(layout: ArrayLayout, zarr_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` of one array (zarr v3, ``bytes`` codec, ``.``-separated chunk keys)."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(layout.shape),
        "data_type": zarr_name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(layout.chunk_shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "fill_value": _fill_value(zarr_name),
        "codecs": [{"name": "bytes", "configuration": {"endian": "little" if _LITTLE else "big"}}],
        "attributes": attributes,
    }


def zarr_group_metadata(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` of a group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}


# ---------------------------------------------------------------------------------------- hashing
def hasher(name: str | None = None) -> tuple[str, Callable[[Any], str]]:
    """``(algorithm name, digest function)``: xxh3-128 when ``xxhash`` is installed, else BLAKE2b-128.

    With ``name`` (from a manifest), that algorithm exactly; :class:`CheckpointError` if unavailable.
    The digest function takes any buffer and returns lowercase hex.
    """
    if name in (None, "xxh3_128"):
        try:
            import xxhash

            return "xxh3_128", xxhash.xxh3_128_hexdigest
        except ImportError:
            if name is not None:
                raise CheckpointError("this checkpoint was hashed with xxh3_128: pip install dsrt[checkpoint]") from None
    if name in (None, "blake2b_128"):
        return "blake2b_128", lambda buf: hashlib.blake2b(buf, digest_size=16).hexdigest()
    raise CheckpointError(f"unknown chunk hash algorithm {name!r} in the manifest")


# ---------------------------------------------------------------------------------------- files
def write_all(fd: int, data: Any) -> None:
    """Write every byte of buffer ``data`` to file descriptor ``fd``."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_atomic(path: str, data: bytes, *, durable: bool) -> None:
    """Write ``path`` through a temporary file renamed into place (fsynced first when ``durable``)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json_atomic(path: str, obj: Any, *, durable: bool) -> None:
    write_file_atomic(path, json.dumps(obj, separators=(",", ":")).encode(), durable=durable)


def fsync_path(path: str) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux only; ``None`` elsewhere or where libc lacks it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range  # CDLL: the call releases the GIL
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the dirty pages in the range, do not wait


def start_writeback(fd: int) -> None:
    """Start writing the dirty pages of open file ``fd`` to disk now, without waiting for them.

    A hint that overlaps the disk writes with the rest of a save: without it Linux starts writeback
    only when dirty memory passes ``vm.dirty_background_ratio`` (often GiBs), so a later fsync would
    write everything at once, after the save's CPU work. It never replaces the fsync (it neither
    waits for the data nor writes metadata or flushes the disk's cache). Linux ``sync_file_range``
    through ctypes; a no-op elsewhere, and errors are ignored (a filesystem may not support it).
    Called on the I/O thread that just wrote the file; may block briefly while the disk queue is full.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


# O_DIRECT wants the buffer address, the length and the file offset aligned to the device's logical
# block (512 bytes on most disks, 4096 on some): 4096 suits them all.
DIRECT_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialised 1-D uint8 array of ``nbytes`` bytes starting on a ``DIRECT_ALIGN`` boundary."""
    raw = np.empty(nbytes + DIRECT_ALIGN, np.uint8)
    start = -raw.ctypes.data % DIRECT_ALIGN
    return raw[start:start + nbytes]


def is_direct_aligned(buf: np.ndarray) -> bool:
    """True when ``buf`` (1-D uint8) may be written with O_DIRECT: its address and its size are
    multiples of ``DIRECT_ALIGN``."""
    return buf.nbytes % DIRECT_ALIGN == 0 and buf.ctypes.data % DIRECT_ALIGN == 0


def open_direct(path: str) -> int | None:
    """Create ``path`` (it must not exist) for writing with O_DIRECT: its writes bypass the page cache
    and return once the device has the data, possibly only in its volatile cache (an fsync follows).
    ``None`` where the platform or the filesystem has no O_DIRECT (tmpfs, some FUSE mounts):
    write the file through the page cache then."""
    if not _O_DIRECT:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (creations, renames, links) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NO_LINK = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-link ``src`` at ``dst``; copy it where the filesystem cannot link (returns ``False`` then).

    Raises ``FileNotFoundError`` when ``src`` is missing.
    """
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        os.unlink(dst)
        os.link(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(1 << 22):
            fout.write(block)
    return False


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


_MANIFEST = re.compile(r"^(\d+)\.rank(\d+)\.json$")


def manifest_name(step: int, rank: int) -> str:
    return f"{step}.rank{rank}.json"


def parse_manifest_name(name: str) -> tuple[int, int] | None:
    """``(step, rank)`` of a manifest file name, or ``None`` for anything else."""
    m = _MANIFEST.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None
