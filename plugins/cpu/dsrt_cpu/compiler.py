"""C user kernels for the CPU: compiled by the system C compiler, loaded and called through cffi.

Compiled libraries are cached on disk under a SHA-256 of the source, the options, the compiler's
version and the machine, in ``$DSRT_CACHE_DIR/c`` (default ``~/.cache/dsrt/c``). Writes go to a
temporary file and are renamed into place, so two processes compiling at once are safe. Only shared
libraries are stored; nothing is ever unpickled.
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

__all__ = ["CCompiler", "cache_dir"]

DEFAULT_OPTIONS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11", "-fno-math-errno")


def cache_dir() -> Path:
    """Root of dsrt's on-disk caches."""
    root = os.environ.get("DSRT_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrt"


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


class CCompiler:
    """Compiles and caches C kernels; ``build`` returns ``((ffi, function), cache_hit)``."""

    def __init__(self, cc: str | None = None) -> None:
        self.cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or ""
        self._version: str | None = None
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}

    def _compiler_version(self) -> str:
        if self._version is None:
            if not self.cc:
                raise ConfigurationError("no C compiler found (set CC or install gcc)")
            res = subprocess.run([self.cc, "--version"], capture_output=True, text=True, check=False)
            self._version = res.stdout.splitlines()[0] if res.stdout else self.cc
        return self._version

    def key(self, source: str, options: Sequence[str]) -> str:
        h = hashlib.sha256()
        for part in (source, "\0".join(options), self._compiler_version(), platform.machine(), platform.processor()):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def build(self, source: str, name: str, options: Sequence[str] = ()) -> tuple[tuple[Any, Any], bool]:
        decl = _signature(source, name)
        opts = tuple(DEFAULT_OPTIONS) + tuple(options)
        key = self.key(source, opts)
        directory = cache_dir() / "c"
        directory.mkdir(parents=True, exist_ok=True)
        lib_path = directory / f"{key}.so"
        hit = lib_path.exists()
        if not hit:
            self._compile(source, name, opts, lib_path)
        with self._lock:
            lib = self._loaded.get(key)
            ffi = cffi.FFI()
            try:
                ffi.cdef(decl)
            except cffi.CDefError as exc:
                raise KernelCompileError(f"cannot declare '{decl}' to cffi: {exc}", kernel=name) from exc
            lib = ffi.dlopen(str(lib_path))
            self._loaded[key] = lib
        return (ffi, getattr(lib, name)), hit

    def _compile(self, source: str, name: str, opts: Sequence[str], target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="dsrt-cc-") as tmp:
            src = Path(tmp) / "kernel.c"
            src.write_text(source)
            out = Path(tmp) / "kernel.so"
            res = subprocess.run([self.cc, *opts, str(src), "-o", str(out), "-lm"], capture_output=True, text=True,
                                 check=False)
            if res.returncode != 0:
                raise KernelCompileError(f"C kernel '{name}' failed to compile", log=res.stderr, kernel=name)
            staged = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            shutil.copyfile(out, staged)
            os.replace(staged, target)
