"""Builds OpenCL programs, caching device binaries on disk.

The key is a SHA-256 of the source, the build options, the device (name, vendor, OpenCL version) and
the driver version, so a driver update or another device never reuses a binary. Binaries live in
``$DSRT_CACHE_DIR/opencl`` (default ``~/.cache/dsrt/opencl``) as ``<key>.bin``: raw bytes from
``CL_PROGRAM_BINARIES``, written to a temporary file and renamed into place (two processes compiling
at once are safe). Nothing is unpickled. A binary the driver rejects is deleted and rebuilt from source.

``stats`` counts source builds (``compiles``), disk hits and in-process hits, so tests can prove that
a second process compiles nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsrt.errors import KernelCompileError

__all__ = ["ProgramCache", "cache_dir"]


def cache_dir() -> Path:
    """Directory of cached OpenCL binaries (created on first write)."""
    root = os.environ.get("DSRT_CACHE_DIR")
    if root:
        return Path(root) / "opencl"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrt" / "opencl"


class ProgramCache:
    """Programs for one (context, device) pair, in memory and on disk. Thread-safe."""

    def __init__(self, cl: Any, context: Any, device: Any, device_id: str) -> None:
        self._cl = cl
        self.context = context
        self.device = device
        self.device_id = device_id
        self._lock = threading.Lock()
        self._programs: dict[str, Any] = {}
        self.stats = {"compiles": 0, "disk_hits": 0, "memory_hits": 0}
        d = device
        self._identity = "\0".join(
            [d.name, d.vendor, d.version, d.driver_version, d.platform.name, d.platform.version]
        )

    def key(self, source: str, options: Sequence[str]) -> str:
        h = hashlib.sha256()
        for part in (source, "\0".join(options), self._identity):
            h.update(part.encode())
            h.update(b"\1")
        return h.hexdigest()

    def build(self, source: str, options: Sequence[str] = (), *, name: str = "", persist: bool = True
              ) -> tuple[Any, bool]:
        """The built program for ``source`` and whether it came from a cache (no compiler run).

        ``persist=False`` keeps the program in memory only: asking some drivers for a program's
        binaries compiles every kernel in it for every work-group size (PoCL: about half a second
        per kernel), which costs more than building the source again. The standard kernel set uses
        it and relies on the driver's own kernel cache; user kernels persist.

        Raises :class:`~dsrt.errors.KernelCompileError` with the build log when the source does not
        compile.
        """
        key = self.key(source, options)
        with self._lock:
            prg = self._programs.get(key)
            if prg is not None:
                self.stats["memory_hits"] += 1
                return prg, True
            path = cache_dir() / f"{key}.bin"
            prg = self._load(path, options) if persist else None
            hit = prg is not None
            if prg is None:
                prg = self._compile(source, options, name)
                if persist:
                    self._store(path, prg)
                self.stats["compiles"] += 1
            else:
                self.stats["disk_hits"] += 1
            self._programs[key] = prg
            return prg, hit

    def _load(self, path: Path, options: Sequence[str]) -> Any:
        cl = self._cl
        try:
            binary = path.read_bytes()
        except OSError:
            return None
        try:
            return cl.Program(self.context, [self.device], [binary]).build(options=list(options))
        except cl.Error:
            # Corrupt or stale binary: drop it and compile from source instead.
            path.unlink(missing_ok=True)
            return None

    def _compile(self, source: str, options: Sequence[str], name: str) -> Any:
        cl = self._cl
        # The raw program bypasses pyopencl's own source cache: this class is the one cache.
        raw = cl._cl._Program(self.context, source)
        try:
            raw.build(" ".join(options).encode(), [self.device])
        except cl.Error as exc:
            try:
                log = raw.get_build_info(self.device, cl.program_build_info.LOG)
            except cl.Error:
                log = str(exc)
            what = f"OpenCL kernel '{name}'" if name else "OpenCL program"
            raise KernelCompileError(f"{self.device_id}: {what} failed to build", log=log or str(exc),
                                     kernel=name or None, device=self.device_id) from None
        return cl.Program(raw)

    def _store(self, path: Path, prg: Any) -> None:
        cl = self._cl
        try:
            binaries = prg.get_info(cl.program_info.BINARIES)
            blob = bytes(binaries[0]) if binaries else b""
        except cl.Error:
            return
        if not blob:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        staged.write_bytes(blob)
        os.replace(staged, path)
