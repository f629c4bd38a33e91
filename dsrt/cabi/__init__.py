"""Backends written in C: the ABI header ``dsrt_plugin.h`` and its loader.

A C backend is a shared library that exports ``dsrt_plugin_get_api()`` (see :func:`header_path` and
``docs/c-abi.md``). Its Python package registers it with one line::

    # my_backend/__init__.py, entry point  [project.entry-points.dsrt] mine = "my_backend:plugin"
    from pathlib import Path
    from dsrt.cabi import library_plugin
    plugin = library_plugin("mine", Path(__file__).with_name("libmine.so"))

The backend's probe opens the library, checks its ABI and builds one :class:`CDevice` per device it
reports; a library that is missing, lacks the symbol, has another ABI major or fails to initialize
makes the probe raise (``dsrt devices`` lists the backend as unavailable or failed with that reason)
and every other backend keeps working. This module imports cffi only when a library is opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hookspecs import PLUGIN_API_VERSION, BackendSpec, hookimpl
from .loader import ABI_MAJOR, ABI_MINOR, CLibrary, header_path, open_library

if TYPE_CHECKING:
    from ..device import Device

__all__ = [
    "ABI_MAJOR",
    "ABI_MINOR",
    "CLibrary",
    "header_path",
    "library_backend",
    "library_plugin",
    "load_devices",
    "open_library",
]


def load_devices(path: str | os.PathLike[str], backend: str, *, prefix: str = "") -> list[Device]:
    """Open the library at ``path`` (once per process) and build its devices (``prefix:index``)."""
    from .device import make_devices

    return list(make_devices(open_library(path, backend), prefix or backend))


def library_backend(
    name: str,
    path: str | os.PathLike[str],
    *,
    priority: int = 0,
    experimental: bool = False,
    description: str = "",
    install_hint: str = "",
    device_prefix: str = "",
) -> BackendSpec:
    """An ordinary :class:`~dsrt.BackendSpec` whose probe loads the C backend library at ``path``.

    Nothing else in dsrt changes for a C backend: the runtime probes it lazily, once per runtime,
    like any other, and records a probe failure as the backend's reason.
    """
    lib_path = os.fspath(path)

    def probe(runtime: Any) -> Sequence[Device]:
        return load_devices(lib_path, name, prefix=device_prefix)

    return BackendSpec(name=name, api_version=PLUGIN_API_VERSION, probe=probe, priority=priority,
                       experimental=experimental, description=description or f"C backend library {lib_path}",
                       install_hint=install_hint, device_prefix=device_prefix)


class _LibraryPlugin:
    """A pluggy plugin object registering one C backend library."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.__name__ = f"dsrt-c-backend-{spec.name}"

    @hookimpl
    def dsrt_register_backends(self) -> list[BackendSpec]:
        return [self.spec]


def library_plugin(name: str, path: str | os.PathLike[str] | Path, **options: Any) -> Any:
    """A plugin object to name in an entry point (``"pkg:plugin"``) registering the library at
    ``path`` as backend ``name``; ``options`` as for :func:`library_backend`."""
    return _LibraryPlugin(library_backend(name, path, **options))
