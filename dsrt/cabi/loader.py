"""Loading a backend library through the C ABI of ``dsrt_plugin.h`` (cffi ABI mode, ``ffi.dlopen``).

:class:`CLibrary` opens a library once per process, checks its API table (``struct_size``, ABI
major/minor), calls its optional ``initialize`` and turns every error object the library returns
into a :class:`~dsrt.errors.DsrtError` that names the device, the call, the library's message and
its code. It knows nothing about arrays: :mod:`dsrt.cabi.device` adapts it to a ``Device``.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from pathlib import Path
from typing import Any

from ..errors import (
    DeviceError,
    DeviceLostError,
    DeviceUnavailableError,
    DsrtError,
    KernelLaunchError,
    OutOfMemoryError,
    PluginError,
    PluginVersionError,
)

__all__ = [
    "ABI_MAJOR",
    "ABI_MINOR",
    "ERROR_NAMES",
    "REQUIRED_ENTRIES",
    "CLibrary",
    "header_path",
    "header_cdef",
    "get_ffi",
    "open_library",
]

#: The ABI this core implements (the ``DSRT_ABI_MAJOR``/``DSRT_ABI_MINOR`` of the shipped header).
ABI_MAJOR = 1
ABI_MINOR = 0

#: DSRT_ERR_* code -> name, for messages.
ERROR_NAMES = {
    1: "DSRT_ERR_UNKNOWN",
    2: "DSRT_ERR_INVALID_ARGUMENT",
    3: "DSRT_ERR_OUT_OF_MEMORY",
    4: "DSRT_ERR_UNSUPPORTED",
    5: "DSRT_ERR_DEVICE_LOST",
    6: "DSRT_ERR_UNAVAILABLE",
    7: "DSRT_ERR_INTERNAL",
}
ERR_OUT_OF_MEMORY = 3
ERR_UNSUPPORTED = 4
ERR_DEVICE_LOST = 5
ERR_UNAVAILABLE = 6

#: Entries a table must have (non-NULL, within struct_size); every other entry is optional.
REQUIRED_ENTRIES = ("error_code", "error_message", "error_destroy", "device_count", "device_describe",
                    "allocate", "free", "copy_h2d", "copy_d2h", "launch")
#: The stream/event entries: a library has all of them or none.
STREAM_ENTRIES = ("stream_create", "stream_destroy", "event_record", "event_query", "event_synchronize",
                  "event_elapsed", "event_destroy")

_GET_API = "dsrt_plugin_get_api"


def header_path() -> Path:
    """Path of ``dsrt_plugin.h``, the header a C backend compiles against (shipped in the package)."""
    return Path(__file__).with_name("dsrt_plugin.h")


def header_cdef() -> str:
    """The declarations of the header that cffi reads (the ``BEGIN CDEF`` ... ``END CDEF`` block)."""
    text = header_path().read_text(encoding="utf-8")
    match = re.search(r"/\* BEGIN CDEF.*?\*/(.*)/\* END CDEF \*/", text, re.S)
    if match is None:  # pragma: no cover - the shipped header has the markers
        raise PluginError(f"{header_path()}: no BEGIN CDEF/END CDEF block")
    return match.group(1)


_ffi: Any = None
_ffi_lock = threading.Lock()


def get_ffi() -> Any:
    """The process-wide ``cffi.FFI`` holding the header's declarations (built on first use)."""
    global _ffi
    if _ffi is None:
        with _ffi_lock:
            if _ffi is None:
                import cffi

                ffi = cffi.FFI()
                ffi.cdef(header_cdef())
                _ffi = ffi
    return _ffi


class CLibrary:
    """One backend library, opened and negotiated. Create with :func:`open_library`.

    ``entries`` maps each table entry the core knows to its function pointer, or ``None`` where the
    library's table is too small to hold it or holds NULL. ``abi`` is the library's
    ``(major, minor)``, ``struct_size`` its table's size in bytes. Entries are called from any
    thread; cffi releases the GIL during each call.
    """

    def __init__(self, path: str, backend: str) -> None:
        self.path = path
        self.backend = backend
        self.closed = False
        ffi = get_ffi()
        self.ffi = ffi
        if not os.path.exists(path):
            raise DeviceUnavailableError(f"backend library {path} not found", device=backend)
        try:
            self.lib = ffi.dlopen(path)
        except OSError as exc:
            raise DeviceUnavailableError(f"backend library {path} cannot be loaded: {exc}", device=backend) from None
        try:
            get_api = getattr(self.lib, _GET_API)
        except AttributeError:
            raise PluginError(f"backend '{backend}': library {path} does not export {_GET_API}()",
                              plugin=backend) from None
        api = get_api()
        if api == ffi.NULL:
            raise PluginError(f"backend '{backend}': {_GET_API}() in {path} returned NULL", plugin=backend)
        self.api = api
        # struct_size, abi_major and abi_minor come first in every version of the table.
        head = ffi.offsetof("DsrtPluginApi", "abi_minor") + ffi.sizeof("uint32_t")
        self.struct_size = int(api.struct_size)
        if self.struct_size < head:
            raise PluginVersionError(
                f"backend '{backend}': {path} returned an API table of {self.struct_size} bytes,"
                f" too small to hold its own version (at least {head} bytes)", plugin=backend)
        self.abi = (int(api.abi_major), int(api.abi_minor))
        if self.abi[0] != ABI_MAJOR:
            raise PluginVersionError(
                f"backend '{backend}': {path} implements dsrt C ABI {self.abi[0]}.{self.abi[1]};"
                f" this dsrt reads ABI major {ABI_MAJOR} (any {ABI_MAJOR}.x): rebuild it against"
                f" {header_path()}", plugin=backend)
        self.entries: dict[str, Any] = {}
        for name, field in ffi.typeof("DsrtPluginApi").fields:
            if field.type.kind != "function":
                continue
            inside = field.offset + ffi.sizeof(field.type) <= self.struct_size
            fn = getattr(api, name) if inside else ffi.NULL
            self.entries[name] = fn if fn != ffi.NULL else None
        missing = [n for n in REQUIRED_ENTRIES if self.entries.get(n) is None]
        if missing:
            raise PluginVersionError(
                f"backend '{backend}': the API table of {path} (ABI {self.abi[0]}.{self.abi[1]},"
                f" {self.struct_size} bytes) lacks required entries: {', '.join(missing)}", plugin=backend)
        present = [n for n in STREAM_ENTRIES if self.entries[n] is not None]
        if present and len(present) != len(STREAM_ENTRIES):
            absent = [n for n in STREAM_ENTRIES if self.entries[n] is None]
            raise PluginError(
                f"backend '{backend}': {path} has some stream/event entries ({', '.join(present)})"
                f" but not {', '.join(absent)}; a library has all of them or none", plugin=backend)
        self.has_streams = bool(present)
        self._error_code = self.entries["error_code"]
        self._error_message = self.entries["error_message"]
        self._error_destroy = self.entries["error_destroy"]
        init = self.entries.get("initialize")
        if init is not None:
            err = init()
            if err:
                code, message = self.take_error(err)
                reason = f"backend library {path}: initialize failed: {message} [{ERROR_NAMES.get(code, code)}]"
                if code == ERR_UNAVAILABLE:
                    raise DeviceUnavailableError(reason, device=backend)
                raise PluginError(f"backend '{backend}': {reason}", plugin=backend)
        if self.entries.get("shutdown") is not None:
            atexit.register(self.shutdown)

    # ------------------------------------------------------------------ errors
    def take_error(self, err: Any) -> tuple[int, str]:
        """Read ``(code, message)`` out of a library error object and hand it back (destroy it)."""
        try:
            code = int(self._error_code(err))
            raw = self._error_message(err)
            message = self.ffi.string(raw).decode("utf-8", "replace") if raw != self.ffi.NULL else "(no message)"
        finally:
            self._error_destroy(err)
        return code, message

    def error(self, err: Any, device: str, call: str, *, kernel: str | None = None,
              requested: int = 0, capacity: int = 0) -> DsrtError:
        """The :class:`DsrtError` for error object ``err`` returned by entry ``call`` on ``device``.

        DSRT_ERR_OUT_OF_MEMORY -> OutOfMemoryError, DSRT_ERR_DEVICE_LOST -> DeviceLostError,
        DSRT_ERR_UNAVAILABLE -> DeviceUnavailableError, a failed launch -> KernelLaunchError, anything
        else -> DeviceError. The error carries ``code``, ``code_name``, ``call`` and ``library``.
        """
        code, message = self.take_error(err)
        name = ERROR_NAMES.get(code, "unknown code")
        text = f"{device}: {call} failed in {os.path.basename(self.path)}: {message} [{name} ({code})]"
        exc: DsrtError
        if code == ERR_OUT_OF_MEMORY and call == "allocate":
            exc = OutOfMemoryError(device=device, requested=requested, capacity=capacity,
                                   tried=[f"{call} in {os.path.basename(self.path)}"], detail=message)
        elif code == ERR_DEVICE_LOST:
            exc = DeviceLostError(text, device=device)
        elif code == ERR_UNAVAILABLE:
            exc = DeviceUnavailableError(f"{call} failed: {message} [{name} ({code})]", device=device)
        elif kernel is not None:
            exc = KernelLaunchError(text, kernel=kernel, device=device)
        else:
            exc = DeviceError(text, device=device)
        # What the library said, for handlers that branch on it (the message carries it too).
        extra: Any = exc
        extra.code, extra.code_name, extra.call, extra.library = code, name, call, self.path
        return exc

    def check(self, err: Any, device: str, call: str) -> None:
        """Raise the translated error if ``err`` is not NULL."""
        if err:
            raise self.error(err, device, call)

    # ------------------------------------------------------------------ devices
    def device_count(self) -> int:
        out = self.ffi.new("int32_t*")
        self.check(self.entries["device_count"](out), self.backend, "device_count")
        if out[0] < 0:
            raise PluginError(f"backend '{self.backend}': device_count returned {out[0]}", plugin=self.backend)
        return int(out[0])

    def describe(self, index: int) -> dict[str, Any]:
        """The library's description of device ``index`` as plain Python values (fields beyond the
        library's ``struct_size`` read as absent)."""
        ffi = self.ffi
        out = ffi.new("const DsrtDeviceDesc**")
        self.check(self.entries["device_describe"](index, out), f"{self.backend}:{index}", "device_describe")
        desc = out[0]
        if desc == ffi.NULL:
            raise PluginError(f"backend '{self.backend}': device_describe({index}) returned no description",
                              plugin=self.backend)
        size = int(desc.struct_size)
        result: dict[str, Any] = {}
        for name, field in ffi.typeof("DsrtDeviceDesc").fields:
            if name == "struct_size" or field.offset + ffi.sizeof(field.type) > size:
                continue
            result[name] = getattr(desc, name)

        def text(value: Any) -> str:
            return "" if value is None or value == ffi.NULL else ffi.string(value).decode("utf-8", "replace")

        def names(arr: Any, n: int) -> list[str]:
            return [] if arr is None or arr == ffi.NULL else [text(arr[i]) for i in range(n)]

        kernels: dict[str, list[str]] = {}
        claims, nclaims = result.get("kernels"), int(result.get("num_kernels", 0))
        if claims is not None and claims != ffi.NULL:
            for i in range(nclaims):
                kernels[text(claims[i].name)] = names(claims[i].dtypes, int(claims[i].num_dtypes))
        return {
            "name": text(result.get("name")) or f"{self.backend} device {index}",
            "vendor": text(result.get("vendor")),
            "memory_bytes": int(result.get("memory_bytes", 0)),
            "compute_units": max(int(result.get("compute_units", 1)), 1),
            "flags": int(result.get("flags", 0)),
            "dtypes": names(result.get("dtypes"), int(result.get("num_dtypes", 0))),
            "kernels": kernels,
            "peak_flops": float(result.get("peak_flops", 0.0)),
            "memory_bandwidth": float(result.get("memory_bandwidth", 0.0)),
        }

    def shutdown(self) -> None:
        """Call the library's ``shutdown`` (once); nothing is called into the library afterwards."""
        if self.closed:
            return
        self.closed = True
        fn = self.entries.get("shutdown")
        if fn is not None:
            fn()


_libraries: dict[tuple[str, str], CLibrary] = {}
_libraries_lock = threading.Lock()


def open_library(path: str | os.PathLike[str], backend: str) -> CLibrary:
    """The :class:`CLibrary` for ``path`` (opened, negotiated and initialized once per process).

    Raises :class:`~dsrt.errors.DeviceUnavailableError` when the file is missing or cannot be loaded
    or its ``initialize`` reports DSRT_ERR_UNAVAILABLE, and :class:`~dsrt.errors.PluginError` (or
    :class:`~dsrt.errors.PluginVersionError`) when it lacks ``dsrt_plugin_get_api``, has another ABI
    major, a broken table, or fails to initialize. A failure is not cached: the next call retries.
    """
    key = (os.path.realpath(os.fspath(path)), backend)
    with _libraries_lock:
        lib = _libraries.get(key)
        if lib is None or lib.closed:
            lib = _libraries[key] = CLibrary(key[0], backend)
        return lib
