"""Builds OpenCL programs, caching device binaries on disk.

Binaries are stored by :class:`dsrt.kernel_cache.KernelCache` (kind ``"opencl"``) in
``$DSRT_CACHE_DIR/opencl`` (default ``~/.cache/dsrt/opencl``): raw bytes from
``CL_PROGRAM_BINARIES`` with a JSON manifest. The key is a SHA-256 of the source and the build
options; the identity (platform name and version, device name, vendor and OpenCL version, driver
version) is part of the key and is checked against each manifest, so a driver update or another
device never reuses a binary. A binary is handed to the driver only after its size and SHA-256 match
the manifest (a truncated binary crashes some drivers); one the driver still refuses is dropped and
rebuilt from source. Nothing is unpickled: :func:`disable_pyopencl_disk_caches` also keeps
pyopencl's own pickled caches out of every launch.

``stats`` counts source builds (``compiles``), disk hits, in-process hits and rejected disk entries
(``rejected``, with ``reasons``), so tests can prove that a second process compiles nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from dsrt.errors import KernelCompileError
from dsrt.kernel_cache import KernelCache

__all__ = ["ProgramCache", "disable_pyopencl_disk_caches"]


def disable_pyopencl_disk_caches(cl: Any) -> None:
    """Turn off pyopencl's on-disk caches for this process (same effect as ``PYOPENCL_NO_CACHE=1``).

    pyopencl keeps a pickled cache of generated argument-setting code ("invoker cache", a sqlite file
    under the user's cache directory) and unpickles from it the first time each kernel object is
    called; its source-build cache pickles too. Whoever can write those files chooses what code runs
    in every process that launches a kernel. dsrt needs neither: programs come from
    :class:`ProgramCache`, and kernel objects are kept per device, so the invoker is generated once per
    kernel object in memory (about a millisecond). Called when an OpenCL device is created, before
    any launch; it affects other pyopencl users in the same process the same way.
    """
    cl._PYOPENCL_NO_CACHE = True


class ProgramCache:
    """Programs for one (context, device) pair, in memory and on disk. Thread-safe."""

    def __init__(self, cl: Any, context: Any, device: Any, device_id: str) -> None:
        self._cl = cl
        self.context = context
        self.device = device
        self.device_id = device_id
        self._lock = threading.Lock()
        self._programs: dict[str, Any] = {}
        self._counts = {"compiles": 0, "disk_hits": 0, "memory_hits": 0}
        d = device
        identity = {"device": d.name, "vendor": d.vendor, "device_version": d.version,
                    "driver_version": d.driver_version, "platform": d.platform.name,
                    "platform_version": d.platform.version}
        #: The verified on-disk store (its ``stats`` has the disk-level detail).
        self.store = KernelCache("opencl", identity, suffix=".bin")

    @property
    def stats(self) -> dict[str, Any]:
        """``compiles``, ``disk_hits``, ``memory_hits``, ``rejected`` and ``reasons`` (a copy)."""
        with self._lock:
            return {**self._counts, "rejected": self.store.stats["rejected"],
                    "reasons": dict(self.store.stats["reasons"])}

    def key(self, source: str, options: Sequence[str]) -> str:
        return self.store.key(source, "\0".join(options))

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
                self._counts["memory_hits"] += 1
                return prg, True
            prg = self._load(key, options) if persist else None
            hit = prg is not None
            if prg is None:
                prg = self._compile(source, options, name)
                if persist:
                    self._store(key, prg, name)
                self._counts["compiles"] += 1
            else:
                self._counts["disk_hits"] += 1
            self._programs[key] = prg
            return prg, hit

    def _load(self, key: str, options: Sequence[str]) -> Any:
        cl = self._cl
        binary = self.store.load(key)
        if binary is None:
            return None
        try:
            return cl.Program(self.context, [self.device], [binary]).build(options=list(options))
        except cl.Error as exc:
            # A verified binary the driver refuses (e.g. written under a forged manifest).
            self.store.reject(key, "driver-rejected", f"{self.device_id}: {exc}")
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

    def _store(self, key: str, prg: Any, name: str) -> None:
        cl = self._cl
        try:
            binaries = prg.get_info(cl.program_info.BINARIES)
            blob = bytes(binaries[0]) if binaries else b""
        except cl.Error:
            return
        if blob:
            self.store.store(key, blob, {"name": name, "device": self.device_id})
