"""C user kernels for the CPU: compiled by the system C compiler, loaded and called through cffi.

Compiled libraries are cached by :class:`dsrt.kernel_cache.KernelCache` (kind ``"c"``) in
``$DSRT_CACHE_DIR/c`` (default ``~/.cache/dsrt/c``), keyed by a SHA-256 of the source and the
options; the compiler identity (resolved path, ``--version``, machine, CPU model and feature flags,
since ``-march=native`` code can trap on another CPU) is part of the key and of each manifest. A
cached library is read into memory, checked against its manifest (size, SHA-256, identity) and
then loaded from a sealed private copy (:func:`dsrt.kernel_cache.private_copy`), never from the cache
file itself: a file in a shared directory can be truncated or rewritten after it was hashed or while
it is mapped (SIGBUS, or other code). A bad entry is rebuilt; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cffi

from dsrt.errors import ConfigurationError, KernelCompileError
from dsrt.kernel_cache import KernelCache, private_copy

__all__ = ["CCompiler"]

DEFAULT_OPTIONS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11", "-fno-math-errno")


def _signature(source: str, name: str) -> str:
    """The C declaration of function ``name`` as written in ``source``."""
    pattern = re.compile(
        r"(?:^|[;}\s])((?:[A-Za-z_][\w]*[\s\*]+)+?" + re.escape(name) + r"\s*\([^)]*\))\s*\{", re.S
    )
    m = pattern.search(source)
    if not m:
        raise KernelCompileError(f"C kernel source defines no function '{name}'", kernel=name)
    decl = re.sub(r"\s+", " ", m.group(1)).strip()
    # cdef does not understand storage and inlining keywords.
    decl = re.sub(r"\b(static|inline|extern|__attribute__\(\(.*?\)\))\s*", "", decl)
    decl = decl.replace("restrict", "").replace("__restrict__", "")
    return decl + ";"


def _cpu_identity() -> str:
    """CPU model and a hash of its feature flags (Linux ``/proc/cpuinfo``; else ``platform``)."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                field, _, value = line.partition(":")
                field = field.strip()
                if field == "model name" and not model:
                    model = value.strip()
                elif field in ("flags", "Features") and not flags:
                    flags = hashlib.sha256(value.strip().encode()).hexdigest()[:16]
                if model and flags:
                    break
    except OSError:
        pass
    return f"{model} flags={flags}"


class CCompiler:
    """Compiles and caches C kernels; ``build`` returns ``((ffi, function), cache_hit)``.

    ``cache`` (created on first use) is the :class:`~dsrt.kernel_cache.KernelCache` whose ``stats``
    count hits, misses and rejected entries. Thread-safe.
    """

    def __init__(self, cc: str | None = None) -> None:
        self.cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or ""
        self._lock = threading.Lock()
        self._cache: KernelCache | None = None
        #: key -> path of the private copy the library was loaded from (in-process hits).
        self._loaded: dict[str, str] = {}

    @property
    def cache(self) -> KernelCache:
        """The on-disk cache for this compiler (runs ``cc --version`` once)."""
        if self._cache is None:
            if not self.cc:
                raise ConfigurationError("no C compiler found (set CC or install gcc)")
            path = shutil.which(self.cc) or self.cc
            res = subprocess.run([self.cc, "--version"], capture_output=True, text=True, check=False)
            version = res.stdout.splitlines()[0] if res.stdout else self.cc
            identity = {"compiler": os.path.realpath(path), "version": version, "machine": platform.machine(),
                        "cpu": _cpu_identity()}
            self._cache = KernelCache("c", identity, suffix=".so")
        return self._cache

    def key(self, source: str, options: Sequence[str]) -> str:
        """Cache key of ``source`` built with the full option list ``options``."""
        return self.cache.key(source, "\0".join(options))

    def build(self, source: str, name: str, options: Sequence[str] = ()) -> tuple[tuple[Any, Any], bool]:
        decl = _signature(source, name)
        opts = tuple(DEFAULT_OPTIONS) + tuple(options)
        cache = self.cache
        key = self.key(source, opts)
        with self._lock:
            ffi = cffi.FFI()
            try:
                ffi.cdef(decl)
            except cffi.CDefError as exc:
                raise KernelCompileError(f"cannot declare '{decl}' to cffi: {exc}", kernel=name) from exc
            path = self._loaded.get(key)
            hit = path is not None
            lib = None
            if path is None:
                data = cache.load(key)
                if data is not None:
                    path = private_copy(data, ".so")
                    try:
                        lib = ffi.dlopen(path)
                        hit = True
                    except OSError as exc:
                        # Verified bytes the loader still refuses (a manifest written by someone else).
                        cache.reject(key, "load-failed", str(exc))
                        path = None
                if path is None:
                    data = self._compile(source, name, opts)
                    cache.store(key, data, {"name": name})
                    path = private_copy(data, ".so")
                self._loaded[key] = path
            if lib is None:
                try:
                    lib = ffi.dlopen(path)
                except OSError as exc:
                    raise KernelCompileError(f"C kernel '{name}' compiled but cannot be loaded: {exc}",
                                             kernel=name) from exc
        try:
            return (ffi, getattr(lib, name)), hit
        except AttributeError as exc:
            raise KernelCompileError(f"C kernel '{name}' is not exported by the compiled library (static?)",
                                     kernel=name) from exc

    def _compile(self, source: str, name: str, opts: Sequence[str]) -> bytes:
        """The shared object's bytes. Built in a private temporary directory with relative paths, so
        equal inputs give equal bytes."""
        with tempfile.TemporaryDirectory(prefix="dsrt-cc-") as tmp:
            Path(tmp, "kernel.c").write_text(source)
            res = subprocess.run([self.cc, *opts, "kernel.c", "-o", "kernel.so", "-lm"], capture_output=True,
                                 text=True, check=False, cwd=tmp)
            if res.returncode != 0:
                raise KernelCompileError(f"C kernel '{name}' failed to compile", log=res.stderr, kernel=name)
            return Path(tmp, "kernel.so").read_bytes()
