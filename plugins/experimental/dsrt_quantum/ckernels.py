"""The statevector kernels in C, compiled through the host device's cffi compiler.

One C source (``kernels_head.c`` + ``kernels_template.c`` instantiated for float64 and float32) is built
once per machine and cached on disk by the CPU backend (keyed by a hash of the source). Each
function is loaded as a :class:`dsrt.device.UserKernel` and launched with the state ``Array`` as its
first argument, so the state never leaves the host device's memory pool.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any

import numpy as np

from dsrt.device import Device, UserKernel
from dsrt.errors import ConfigurationError

__all__ = ["KernelSet", "kernel_set", "source"]

_FUNCTIONS = ("qs_init", "qs_dense", "qs_diag", "qs_prob1", "qs_collapse", "qs_probs", "qs_pauli")
_PRECISIONS = {"c128": "double", "c64": "float"}

_lock = threading.Lock()
_sets: dict[tuple[int, str], KernelSet] = {}


def source() -> str:
    """The complete C source for both precisions."""
    pkg = resources.files(__package__)
    head = (pkg / "kernels_head.c").read_text()
    body = (pkg / "kernels_template.c").read_text()
    parts = [head]
    for suffix, ctype in _PRECISIONS.items():
        parts.append(body.replace("@T@", ctype).replace("@S@", suffix))
    return "\n".join(parts)


class KernelSet:
    """The compiled kernels of one precision on one host device (``cpu:0``)."""

    def __init__(self, host: Device, suffix: str) -> None:
        if "c" not in host.info.languages:
            raise ConfigurationError(
                f"{host.id} cannot host a statevector: it compiles {sorted(host.info.languages) or 'no'} kernels,"
                " and the quantum backend's gates are C kernels (use a cpu device as host)"
            )
        src = source()
        self.host = host
        self.suffix = suffix
        self.real = np.float64 if suffix == "c128" else np.float32
        self.fns: dict[str, UserKernel] = {
            name: host.compile(src, lang="c", name=f"{name}_{suffix}", options=["-fopenmp"]) for name in _FUNCTIONS
        }

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fns[name].launch
        except KeyError:
            raise AttributeError(name) from None


def kernel_set(host: Device, dtype: np.dtype) -> KernelSet:
    """The (cached) kernels for states of ``dtype`` (complex64 or complex128) on ``host``."""
    suffix = "c128" if np.dtype(dtype) == np.complex128 else "c64"
    key = (id(host), suffix)
    with _lock:
        ks = _sets.get(key)
        if ks is None or ks.host is not host:
            ks = _sets[key] = KernelSet(host, suffix)
        return ks
