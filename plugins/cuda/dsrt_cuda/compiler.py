"""CUDA user kernels through NVRTC, with compiled cubins cached on disk.

Cubins are stored by :class:`dsrt.kernel_cache.KernelCache` (kind ``"cuda"``) in
``$DSRT_CACHE_DIR/cuda`` with a JSON manifest; the key is a SHA-256 of the source and the options,
and the identity (GPU name and architecture, NVRTC, CUDA driver and CuPy versions) is part of the
key and checked against each manifest. A cached cubin's size and SHA-256 are checked before the
driver sees it, and the driver loads the verified bytes from a sealed private copy
(:func:`dsrt.kernel_cache.private_copy`), never the cache file. Loading a cached cubin compiles
nothing; a bad entry is rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cupy as cp

from dsrt.errors import KernelCompileError
from dsrt.kernel_cache import KernelCache, private_copy

__all__ = ["NvrtcCompiler"]

#: cuModuleGetFunction's status for a name the module does not define.
_CUDA_ERROR_NOT_FOUND = 500


class NvrtcCompiler:
    """Compiles CUDA C++ for one device; ``build`` returns ``(RawKernel-like function, cache_hit)``.

    ``cache`` is the device's :class:`~dsrt.kernel_cache.KernelCache` (its ``stats`` count hits,
    misses and rejected entries)."""

    def __init__(self, device: Any) -> None:
        from cupy_backends.cuda.libs import nvrtc

        self.device = device
        major, minor = str(device.info.properties["compute_capability"]).split(".")
        self.arch = f"sm_{major}{minor}"
        identity = {"arch": self.arch, "gpu": str(device.info.name), "nvrtc": str(nvrtc.getVersion()),
                    "driver": str(cp.cuda.runtime.driverGetVersion()), "cupy": str(cp.__version__)}
        self.cache = KernelCache("cuda", identity, suffix=".cubin")

    def build(self, source: str, name: str, options: Sequence[str]) -> tuple[Any, bool]:
        opts = (f"-arch={self.arch}", "-std=c++17", *options)
        key = self.cache.key(source, "\0".join(opts))
        cubin = self.cache.load(key)
        hit = cubin is not None
        if cubin is not None:
            try:
                return self._function(cubin, name), True
            except cp.cuda.driver.CUDADriverError as exc:
                # A verified cubin the driver refuses (written under a forged manifest).
                self.cache.reject(key, "driver-rejected", f"{self.device.id}: {exc}")
        cubin = self._compile(source, name, opts)
        self.cache.store(key, cubin, {"name": name, "device": self.device.id})
        try:
            return self._function(cubin, name), hit
        except cp.cuda.driver.CUDADriverError as exc:
            raise KernelCompileError(f"CUDA kernel '{name}' compiled but the driver cannot load it: {exc}",
                                     kernel=name, device=self.device.id) from exc

    def _compile(self, source: str, name: str, opts: Sequence[str]) -> bytes:
        from cupy_backends.cuda.libs import nvrtc

        prog = nvrtc.createProgram(source, f"{name}.cu", (), ())
        try:
            try:
                nvrtc.compileProgram(prog, list(opts))
            except nvrtc.NVRTCError as exc:
                raise KernelCompileError(f"CUDA kernel '{name}' failed to compile ({exc})",
                                         log=nvrtc.getProgramLog(prog), kernel=name,
                                         device=self.device.id) from exc
            return bytes(nvrtc.getCUBIN(prog))
        finally:
            nvrtc.destroyProgram(prog)

    def _function(self, cubin: bytes, name: str) -> Any:
        """Function ``name`` of ``cubin``, loaded by the driver from a sealed private copy. Raises
        KernelCompileError when the module has no such function, CUDADriverError when the driver
        refuses the module."""
        with self.device._cp_device:
            module = cp.RawModule(path=private_copy(cubin, ".cubin"))
            try:
                return module.get_function(name)
            except cp.cuda.driver.CUDADriverError as exc:
                if getattr(exc, "status", None) != _CUDA_ERROR_NOT_FOUND:
                    raise
                raise KernelCompileError(f"CUDA kernel '{name}' not found in the module (extern \"C\"?)",
                                         kernel=name, device=self.device.id) from exc
