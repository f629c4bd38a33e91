"""The one exception tree of dsrt.

Every error a user can cause or meet is a :class:`DsrtError`. Messages say what was wrong and
where: the file, line and column for YAML, the device for launches and allocations, sizes in bytes.

::

    DsrtError
    ├── ConfigurationError            bad settings, arguments, environment variables
    │   ├── TopologyError             a YAML topology that does not load (file:line:col in the message)
    │   └── ShapeError                shapes or dtypes that do not fit a kernel or a copy
    ├── PluginError                   a plugin failed to import or register, or is incompatible
    │   ├── PluginVersionError        a plugin targets a plugin API version this core does not support
    │   └── BackendNotFoundError      a backend asked for by name is absent or failed to load
    ├── DeviceError                   something went wrong on one device (``.device`` names it)
    │   ├── DeviceUnavailableError    the device (or its whole backend) cannot be used here; ``.reason``
    │   ├── DeviceLostError           the device stopped answering mid-run
    │   ├── TransientDeviceError      a fault that may not recur (one ECC error): retried on the same device
    │   └── OutOfMemoryError          an allocation could not be satisfied (requested/capacity bytes)
    ├── KernelError                   a kernel cannot run
    │   ├── UnsupportedKernelError    the device does not implement this kernel for this dtype
    │   ├── KernelCompileError        a user kernel failed to build (``.log`` holds the compiler log)
    │   └── KernelLaunchError         a launch failed on the device
    ├── CollectiveError               a collective failed or timed out (``.missing`` names who never came)
    └── SchedulingError               the load balancer could not place or complete work
        └── PoisonedChunkError        a chunk failed on several devices and was given up

Where a builtin exception fits too, the class also derives from it (``ShapeError`` is a
``ValueError``, ``OutOfMemoryError`` a ``MemoryError``, ``BackendNotFoundError`` a ``LookupError``),
so generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DsrtError",
    "ConfigurationError",
    "TopologyError",
    "ShapeError",
    "PluginError",
    "PluginVersionError",
    "BackendNotFoundError",
    "DeviceError",
    "DeviceUnavailableError",
    "DeviceLostError",
    "TransientDeviceError",
    "OutOfMemoryError",
    "DsrtOutOfMemoryError",
    "KernelError",
    "UnsupportedKernelError",
    "KernelCompileError",
    "KernelLaunchError",
    "CollectiveError",
    "SchedulingError",
    "PoisonedChunkError",
    "format_bytes",
    "check_output_file",
]


def format_bytes(nbytes: float) -> str:
    """Render a size in bytes for a message: ``1536`` -> ``'1.50 KiB (1536 bytes)'``."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024.0 or unit == "TiB":
            if unit == "B":
                return f"{int(nbytes)} bytes"
            return f"{n:.2f} {unit} ({int(nbytes)} bytes)"
        n /= 1024.0
    raise AssertionError("unreachable")


class DsrtError(Exception):
    """Root of every error dsrt raises on purpose."""


class ConfigurationError(DsrtError):
    """A setting, argument or environment variable is wrong."""


class TopologyError(ConfigurationError):
    """A topology failed to load or validate.

    ``file``, ``line`` and ``column`` (1-based, or ``None`` where unknown) locate the problem; the
    message starts with ``file:line:column:`` whenever they are known.
    """

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, column: int | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.detail = message
        where = ":".join(str(p) for p in (file or "<topology>", line, column) if p is not None)
        super().__init__(f"{where}: {message}")


class ShapeError(ConfigurationError, ValueError):
    """Shapes, strides or dtypes do not fit what a kernel, copy or constructor needs."""


class PluginError(DsrtError):
    """A plugin failed to import or register, or broke the plugin contract.

    ``plugin`` is the entry-point (or module) name; ``cause`` the original exception, if any.
    """

    def __init__(self, message: str, *, plugin: str | None = None, cause: BaseException | None = None) -> None:
        self.plugin = plugin
        self.cause = cause
        super().__init__(message)


class PluginVersionError(PluginError):
    """A plugin declares a plugin API version this core does not support."""


class BackendNotFoundError(PluginError, LookupError):
    """A backend asked for by name is not installed, was filtered out, or failed to load."""


class DeviceError(DsrtError):
    """An error tied to one device; ``device`` is its id (``'cpu:0'``) or the backend name."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        self.device = device
        super().__init__(message)


class DeviceUnavailableError(DeviceError):
    """A device or backend cannot be used on this machine; ``reason`` says why, in one line."""

    def __init__(self, reason: str, *, device: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"{device}: {reason}" if device else reason, device=device)


class DeviceLostError(DeviceError):
    """A device stopped working mid-run (driver reset, hang, hot-unplug, injected fault)."""


class TransientDeviceError(DeviceError):
    """A device fault that may not recur (one corrected ECC error, one dropped interrupt).

    The scheduler retries the chunk on the same device a bounded number of times before it
    quarantines the device.
    """


class OutOfMemoryError(DeviceError, MemoryError):
    """An allocation could not be satisfied even after freeing caches and spilling.

    All sizes are in bytes. ``stats`` is the pool's statistics at the moment of failure and
    ``tried`` lists, in order, what the pool attempted before giving up.
    """

    def __init__(
        self,
        *,
        device: str,
        requested: int,
        capacity: int,
        largest_free: int = 0,
        stats: Mapping[str, Any] | None = None,
        tried: Sequence[str] = (),
        detail: str = "",
    ) -> None:
        self.requested = int(requested)
        self.capacity = int(capacity)
        self.largest_free = int(largest_free)
        self.stats = dict(stats or {})
        self.tried = list(tried)
        parts = [
            f"{device}: out of memory: requested {format_bytes(requested)}",
            f"capacity {format_bytes(capacity)}",
            f"largest free block {format_bytes(largest_free)}",
        ]
        if "reserved_bytes" in self.stats:
            parts.append(f"reserved {format_bytes(self.stats['reserved_bytes'])}")
        if "allocated_bytes" in self.stats:
            parts.append(f"allocated {format_bytes(self.stats['allocated_bytes'])}")
        msg = ", ".join(parts)
        if self.tried:
            msg += "; tried: " + ", ".join(self.tried)
        if detail:
            msg += f"; {detail}"
        super().__init__(msg, device=device)


#: The name the issues and the docs use; the same class.
DsrtOutOfMemoryError = OutOfMemoryError


class KernelError(DsrtError):
    """A kernel cannot be run. ``kernel`` and ``device`` name it where known."""

    def __init__(self, message: str, *, kernel: str | None = None, device: str | None = None) -> None:
        self.kernel = kernel
        self.device = device
        super().__init__(message)


class UnsupportedKernelError(KernelError):
    """The device does not implement this kernel, or not for this dtype."""

    def __init__(
        self, *, kernel: str, device: str, dtype: str | None = None, supported: Sequence[str] = ()
    ) -> None:
        self.dtype = dtype
        self.supported = list(supported)
        if dtype is None:
            msg = f"{device}: kernel '{kernel}' is not implemented on this device"
        else:
            msg = f"{device}: kernel '{kernel}' is not implemented for dtype {dtype}"
            if self.supported:
                msg += f" (supported: {', '.join(self.supported)})"
        super().__init__(msg, kernel=kernel, device=device)


class KernelCompileError(KernelError):
    """A user kernel failed to compile; ``log`` is the full compiler output."""

    def __init__(self, message: str, *, log: str = "", kernel: str | None = None, device: str | None = None) -> None:
        self.log = log
        full = message if not log else f"{message}\n{log.strip()}"
        super().__init__(full, kernel=kernel, device=device)


class KernelLaunchError(KernelError):
    """A launch failed on the device; the original vendor error is the ``__cause__``."""


class CollectiveError(DsrtError):
    """A collective failed or timed out; ``missing`` lists ranks or devices that never arrived."""

    def __init__(self, message: str, *, missing: Sequence[Any] = ()) -> None:
        self.missing = list(missing)
        super().__init__(message)


class SchedulingError(DsrtError):
    """The load balancer could not place or finish work."""


class PoisonedChunkError(SchedulingError):
    """Chunks failed on several different devices and were given up.

    ``poisoned`` maps chunk index -> list of ``(device id, error message)`` attempts; ``results``
    holds the results of every chunk that did complete (``None`` at poisoned positions).
    """

    def __init__(
        self, message: str, *, poisoned: Mapping[int, list[tuple[str, str]]], results: Sequence[Any] = ()
    ) -> None:
        self.poisoned = dict(poisoned)
        self.results = list(results)
        super().__init__(message)


def check_output_file(path: str, option: str, error: type[DsrtError] = ConfigurationError) -> None:
    """Refuse, before any work, an output file whose folder does not exist or that is a folder.

    ``option`` names the command-line option (``--trace``) in the one-line message; ``error`` is the
    class raised (a plugin passes its own :class:`DsrtError` subclass).
    """
    import os

    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise error(f"{option} {path}: folder '{parent}' does not exist")
    if os.path.isdir(path):
        raise error(f"{option} {path}: is a folder; give a file name")

