"""Verified on-disk cache of compiled kernel artifacts, for any backend.

An artifact (a C shared object, an OpenCL program binary, a CUDA cubin, later fused JIT kernels) is
stored under ``cache_dir() / kind`` as two files:

* ``<key>.<hash16><suffix>``: the raw artifact bytes, named after their own SHA-256, so a manifest
  can never describe a half-replaced artifact;
* ``<key>.json``: the manifest (JSON, never pickle): format, kind, key, artifact file name, size in
  bytes, SHA-256 of the bytes, and the compiler identity the backend gave (compiler path and version,
  OpenCL platform/device/driver, CuPy/NVRTC/driver versions...).

The key is a SHA-256 of the backend's parts (source, options) and of the identity. ``load`` reads the
manifest, checks key, identity, the artifact's size (``fstat``) and hash of the bytes it read, and
returns those bytes: nothing is mapped or handed to a driver before it is verified, and what was
verified is what the caller loads (see :func:`private_copy` for loaders that need a path). Any
mismatch, a truncated, empty, garbage or unreadable entry or a missing manifest counts as
``rejected`` with a reason in :attr:`KernelCache.stats`; the caller rebuilds and ``store`` replaces
the entry. Writes are temporary file + fsync + rename (artifact first, manifest last), so concurrent
processes compiling the same kernel see either the old or the new entry, never a torn one.

The cache directory is used only when it (and its parent ``cache_dir()``) is a directory owned by
this user that no other user can write. A directory that fails that check, cannot be created, or
refuses a write makes the process cache in a private temporary directory instead (mode 0700,
removed at exit), with one :class:`CacheWarning` per process. Compiles keep working either way.

This module sits just above the base layer: it imports nothing from dsrt but the errors module.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsrt.errors import ConfigurationError

__all__ = ["FORMAT", "CacheWarning", "KernelCache", "cache_dir", "private_copy"]

#: Version of the on-disk layout; part of every key, so older layouts are simply never found.
FORMAT = 1
#: Largest manifest read (bytes); a real one is well under 2 KiB.
_MANIFEST_MAX = 64 * 1024

_log = logging.getLogger("dsrt.kernel_cache")


class CacheWarning(RuntimeWarning):
    """The configured cache directory is unusable; this process caches in a private directory."""


def cache_dir() -> Path:
    """Root of dsrt's on-disk caches: ``$DSRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dsrt``, else
    ``~/.cache/dsrt``. Read on every call (tests and users may change the environment); not created."""
    root = os.environ.get("DSRT_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrt"


# ---------------------------------------------------------------------------- private directories
_private_lock = threading.Lock()
_private_root: Path | None = None
_warned = False


def _private_dir() -> Path:
    """This process's private directory (mode 0700), created on first use and removed at exit."""
    global _private_root
    with _private_lock:
        if _private_root is None:
            _private_root = Path(tempfile.mkdtemp(prefix=f"dsrt-{os.getpid()}-"))
            atexit.register(shutil.rmtree, str(_private_root), True)
        return _private_root


def _fallback(kind: str, reason: str) -> Path:
    """The private directory for ``kind`` entries; warns once per process with ``reason``."""
    global _warned
    directory = _private_dir() / "cache" / kind
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    with _private_lock:
        first, _warned = not _warned, True
    if first:
        warnings.warn(f"dsrt kernel cache: {reason}; this process caches compiled kernels in the private "
                      f"directory {directory.parent} instead (removed at exit)", CacheWarning, stacklevel=4)
    _log.info("kernel cache fallback for %s: %s", kind, reason)
    return directory


def _unsafe(path: Path) -> str | None:
    """Why ``path`` may not hold cache entries (None when it may): it must be a directory owned by
    this user that no other user can write, since whoever can write it chooses what gets loaded."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot use {path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if os.name == "posix":
        if st.st_uid != os.geteuid():
            return f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
        if st.st_mode & 0o022:
            return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_exact(path: Path, size: int | None, limit: int) -> bytes:
    """The bytes of regular file ``path`` (no symlinks). With ``size``, raises ValueError unless the
    file holds exactly ``size`` bytes, checked by fstat before anything is read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if size is not None and st.st_size != size:
            raise ValueError(f"{st.st_size} bytes on disk, the manifest says {size}")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size} bytes, more than {limit}")
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                raise ValueError(f"file shrank while being read ({st.st_size - left} of {st.st_size} bytes)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- the cache
class KernelCache:
    """Artifacts of one ``kind`` (``"c"``, ``"opencl"``, ``"cuda"``...) built by one compiler.

    ``identity`` names the compiler (strings only, e.g. path and version, or platform, device and
    driver version); it is part of every key and is checked against each manifest. ``suffix`` is the
    artifact's file extension (``".so"``, ``".bin"``...). Thread-safe; the instance owns no files
    beyond the entries it writes.

    ``stats``: ``hits`` (verified entries returned), ``misses`` (no entry), ``rejected`` (entries
    refused; ``reasons`` counts them by reason), ``stores`` and ``store_failures`` (entries that could
    not be written anywhere; the caller still gets its artifact), ``fallback`` (whether entries go to
    the private directory).
    """

    def __init__(self, kind: str, identity: Mapping[str, str], *, suffix: str = ".bin") -> None:
        if not kind.isidentifier() or not (suffix.startswith(".") and suffix[1:].isalnum()):
            raise ConfigurationError(f"kernel cache kind {kind!r} / suffix {suffix!r}: use a plain name and '.ext'")
        self.kind = kind
        self.suffix = suffix
        self.identity = {str(k): str(v) for k, v in sorted(identity.items())}
        self._lock = threading.Lock()
        self._fallback_dir: Path | None = None
        self.stats: dict[str, Any] = {"hits": 0, "misses": 0, "rejected": 0, "reasons": {}, "stores": 0,
                                      "store_failures": 0, "fallback": False}
        #: The last rejection, as a sentence (for logs and error messages); None before any.
        self.last_rejection: str | None = None

    # ------------------------------------------------------------------ keys and places
    def key(self, *parts: str | bytes) -> str:
        """SHA-256 (hex) of the format, kind, identity and ``parts`` (each length-prefixed)."""
        h = hashlib.sha256()
        for part in (f"dsrt-kernel-cache/{FORMAT}/{self.kind}", json.dumps(self.identity, sort_keys=True), *parts):
            raw = part.encode() if isinstance(part, str) else bytes(part)
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
        return h.hexdigest()

    def directory(self) -> Path:
        """Where entries are read now: the configured directory when it is safe (it may be read-only),
        else this process's private one."""
        with self._lock:
            if self._fallback_dir is not None:
                return self._fallback_dir
        primary, why = self._primary()
        if primary is not None:
            return primary
        return self._use_fallback(why or "unusable cache directory")

    def _primary(self) -> tuple[Path | None, str | None]:
        root = cache_dir()
        directory = root / self.kind
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            if not directory.is_dir():
                return None, f"cannot create {directory}: {exc.strerror or exc}"
        for path in (root, directory):
            why = _unsafe(path)
            if why is not None:
                return None, why
        return directory, None

    def _use_fallback(self, reason: str) -> Path:
        directory = _fallback(self.kind, reason)
        with self._lock:
            self._fallback_dir = directory
            self.stats["fallback"] = True
        return directory

    # ------------------------------------------------------------------ load
    def _reject(self, key: str, reason: str, detail: str) -> None:
        with self._lock:
            self.stats["rejected"] += 1
            reasons = self.stats["reasons"]
            reasons[reason] = reasons.get(reason, 0) + 1
            self.last_rejection = f"{self.kind} cache entry {key[:16]}...: {reason} ({detail})"
        _log.warning("%s; rebuilding", self.last_rejection)

    def reject(self, key: str, reason: str, detail: str = "") -> None:
        """Record that a verified entry still failed to load (e.g. the driver refused it) and remove
        its manifest, so the rebuilt artifact replaces it."""
        self._reject(key, reason, detail or "refused by the loader")
        (self.directory() / f"{key}.json").unlink(missing_ok=True)

    def load(self, key: str) -> bytes | None:
        """The verified artifact bytes for ``key``, or None (a miss or a rejected entry: rebuild and
        ``store``). Never raises for a bad entry."""
        directory = self.directory()
        manifest_path = directory / f"{key}.json"
        try:
            raw = _read_exact(manifest_path, None, _MANIFEST_MAX)
        except FileNotFoundError:
            orphans = [p for p in directory.glob(f"{key}.*{self.suffix}") if not p.name.startswith(".")]
            if orphans and not _store_in_progress(directory, key):
                self._reject(key, "manifest-missing", f"{orphans[0].name} has no {manifest_path.name}")
                for p in orphans:
                    p.unlink(missing_ok=True)
            else:
                with self._lock:
                    self.stats["misses"] += 1
            return None
        except (OSError, ValueError) as exc:
            self._reject(key, "manifest-unreadable", f"{manifest_path}: {getattr(exc, 'strerror', None) or exc}")
            return None
        try:
            manifest = json.loads(raw)
            size, digest, name = int(manifest["size"]), str(manifest["sha256"]), str(manifest["artifact"])
            fields = (manifest["format"], manifest["kind"], manifest["key"], manifest["identity"])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            self._reject(key, "manifest-invalid", f"{manifest_path}: {type(exc).__name__}: {exc}")
            return None
        if fields[:3] != (FORMAT, self.kind, key):
            self._reject(key, "key-mismatch", f"{manifest_path} describes {fields[1]} entry {str(fields[2])[:16]}...")
            return None
        if fields[3] != self.identity:
            self._reject(key, "identity-mismatch", f"{manifest_path} was built by {fields[3]}")
            return None
        if name != f"{key}.{digest[:16]}{self.suffix}" or size <= 0:
            self._reject(key, "manifest-invalid", f"{manifest_path} names artifact {name!r} of {size} bytes")
            return None
        try:
            data = _read_exact(directory / name, size, size)
        except FileNotFoundError:
            self._reject(key, "artifact-missing", f"{directory / name}")
            return None
        except ValueError as exc:
            self._reject(key, "size-mismatch", f"{directory / name}: {exc}")
            return None
        except OSError as exc:
            self._reject(key, "artifact-unreadable", f"{directory / name}: {exc.strerror}")
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            self._reject(key, "hash-mismatch", f"{directory / name}: sha256 {actual[:16]}..., manifest {digest[:16]}...")
            return None
        with self._lock:
            self.stats["hits"] += 1
        return data

    # ------------------------------------------------------------------ store
    def store(self, key: str, data: bytes, meta: Mapping[str, str] | None = None) -> Path | None:
        """Write ``data`` (the artifact, ``len(data)`` bytes) as the entry for ``key``; ``meta`` adds
        informational strings to the manifest. Returns the artifact's path, or None when no directory
        took it (counted in ``store_failures``; the caller keeps using ``data``)."""
        if not data:
            raise ConfigurationError(f"{self.kind} kernel cache: refusing to store an empty artifact for {key[:16]}...")
        digest = hashlib.sha256(data).hexdigest()
        name = f"{key}.{digest[:16]}{self.suffix}"
        manifest = {"format": FORMAT, "kind": self.kind, "key": key, "artifact": name, "size": len(data),
                    "sha256": digest, "identity": self.identity, "created": time.time(), "meta": dict(meta or {})}
        blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
        directory = self.directory()
        for attempt in range(2):
            try:
                with _storing(directory, key):  # artifact, then manifest: an orphan seen meanwhile is no debris
                    _atomic_write(directory / name, data)
                    _atomic_write(directory / f"{key}.json", blob)
            except OSError as exc:
                fell_back = self.stats["fallback"]
                if attempt == 0 and not fell_back:
                    directory = self._use_fallback(f"cannot write {directory}: {exc.strerror or exc}")
                    continue
                with self._lock:
                    self.stats["store_failures"] += 1
                _log.warning("%s kernel cache: cannot write %s: %s", self.kind, directory, exc)
                return None
            with self._lock:
                self.stats["stores"] += 1
            return directory / name
        return None


# ---------------------------------------------------------------------------- private copies
_copies: dict[str, tuple[int | None, str]] = {}


def private_copy(data: bytes, suffix: str = "") -> str:
    """Path of an immutable, process-private copy of ``data``, for loaders that only take a path
    (``dlopen``, ``cuModuleLoad``). Hash the bytes, then load this copy: what was verified is what
    gets mapped, and nobody can truncate or rewrite it while it is mapped (a shared cache file could
    be, which is a SIGBUS or a different program).

    On Linux the copy is a sealed ``memfd`` (no file on disk; write, shrink and grow are sealed) and
    the path is ``/proc/self/fd/N``; elsewhere it is a read-only file in the process's 0700 private
    directory. Copies live until the process exits and are never reused for other bytes (so a
    loader that remembers paths, as ``dlopen`` does, can never confuse two of them); equal bytes
    share one copy. Thread-safe.
    """
    digest = hashlib.sha256(data).hexdigest()
    with _private_lock:
        known = _copies.get(digest)
        if known is not None:
            return known[1]
    fd, path = _memfd_copy(data, digest, suffix)
    if path is None:
        target = _private_dir() / f"{digest[:32]}{suffix}"
        if not target.exists():
            _atomic_write(target, data)
            target.chmod(0o500)
        fd, path = None, str(target)
    with _private_lock:
        known = _copies.setdefault(digest, (fd, path))
    if known[1] != path and fd is not None:
        os.close(fd)  # another thread made the same copy first; ours was never handed out
    return known[1]


def _memfd_copy(data: bytes, digest: str, suffix: str) -> tuple[int | None, str | None]:
    if not (sys.platform.startswith("linux") and hasattr(os, "memfd_create")):
        return None, None
    import fcntl

    try:
        fd = os.memfd_create(f"dsrt-{digest[:16]}{suffix}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None, None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        path = f"/proc/self/fd/{fd}"
        if os.stat(path).st_size != len(data):
            raise OSError("/proc/self/fd does not show the memfd")
    except OSError:
        os.close(fd)
        return None, None
    return fd, path


def _lock_path(directory: Path, key: str) -> Path:
    return directory / f".{key}.lock"


class _storing:
    """Held (an exclusive ``flock`` on ``.<key>.lock``) while a process writes an entry's artifact and
    manifest, so a loader that sees the artifact before its manifest knows a store is under way.
    Without ``fcntl``, or where the lock file cannot be created, it holds nothing."""

    def __init__(self, directory: Path, key: str) -> None:
        self.path = _lock_path(directory, key)
        self.fd: int | None = None

    def __enter__(self) -> None:
        try:
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            self.fd = None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock


def _store_in_progress(directory: Path, key: str) -> bool:
    """True when another process (or thread) holds ``key``'s store lock right now."""
    try:
        import fcntl

        fd = os.open(_lock_path(directory, key), os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False

