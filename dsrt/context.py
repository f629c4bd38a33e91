"""The process-wide default runtime, held below every layer that may need it.

Services (collectives, say) that fall back to the default runtime ask this module, which sits in the
base layer; :mod:`dsrt.runtime` registers how to build one (:func:`set_factory`) when it is imported,
so no lower layer imports the runtime. Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError

__all__ = ["default_runtime", "set_default_runtime", "set_factory"]

_factory: Callable[[], Any] | None = None
_default: Any = None
_lock = threading.Lock()


def set_factory(factory: Callable[[], Any]) -> None:
    """How the default runtime is built on first use (``dsrt.runtime`` registers ``Runtime``)."""
    global _factory
    _factory = factory


def default_runtime() -> Any:
    """The process-wide runtime, created on first use with no configuration."""
    global _default
    rt = _default
    if rt is None:
        with _lock:
            if _default is None:
                if _factory is None:
                    raise ConfigurationError("no runtime is available: import dsrt first")
                _default = _factory()
            rt = _default
    return rt


def set_default_runtime(runtime: Any) -> None:
    """Replace (or with ``None`` reset) the process-wide runtime."""
    global _default
    with _lock:
        _default = runtime
