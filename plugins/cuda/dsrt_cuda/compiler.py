"""CUDA user kernels through NVRTC, with compiled cubins cached on disk.

The cache key is a SHA-256 of the source, the options, the GPU architecture and NVRTC's version;
files live in ``$DSRT_CACHE_DIR/cuda`` and are written atomically. Loading a cached cubin compiles
nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import cupy as cp

from dsrt.errors import KernelCompileError

__all__ = ["NvrtcCompiler"]


class NvrtcCompiler:
    """Compiles CUDA C++ for one device; ``build`` returns ``(RawKernel-like function, cache_hit)``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        major, minor = str(device.info.properties["compute_capability"]).split(".")
        self.arch = f"sm_{major}{minor}"

    def build(self, source: str, name: str, options: Sequence[str]) -> tuple[Any, bool]:
        from cupy_backends.cuda.libs import nvrtc

        from dsrt_cpu.compiler import cache_dir

        opts = (f"-arch={self.arch}", "-std=c++17", *options)
        key = hashlib.sha256("\0".join((source, *opts, str(nvrtc.getVersion()))).encode()).hexdigest()
        directory = cache_dir() / "cuda"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{key}.cubin"
        hit = path.exists()
        if not hit:
            prog = nvrtc.createProgram(source, f"{name}.cu", (), ())
            try:
                try:
                    nvrtc.compileProgram(prog, list(opts))
                except nvrtc.NVRTCError as exc:
                    raise KernelCompileError(f"CUDA kernel '{name}' failed to compile ({exc})",
                                             log=nvrtc.getProgramLog(prog), kernel=name,
                                             device=self.device.id) from exc
                cubin = nvrtc.getCUBIN(prog)
            finally:
                nvrtc.destroyProgram(prog)
            staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            staged.write_bytes(cubin)
            os.replace(staged, path)
        with self.device._cp_device:
            module = cp.RawModule(path=str(path))
            try:
                return module.get_function(name), hit
            except cp.cuda.driver.CUDADriverError as exc:
                raise KernelCompileError(f"CUDA kernel '{name}' not found in the module (extern \"C\"?)",
                                         kernel=name, device=self.device.id) from exc
