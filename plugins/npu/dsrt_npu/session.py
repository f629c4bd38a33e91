"""One ``acl.init`` per process and ``acl.finalize`` at exit."""

from __future__ import annotations

import atexit
import threading
from typing import Any

from dsrt.errors import DeviceUnavailableError

from .acl_errors import meaning_of

__all__ = ["acl_session"]

_lock = threading.Lock()
_initialised: dict[int, Any] = {}


def acl_session(acl: Any) -> Any:
    """Initialise ACL once for this process (per acl module object); return the module."""
    with _lock:
        if id(acl) in _initialised:
            return acl
        ret = acl.init()
        # 100002: already initialised by someone else in this process (torch_npu, say): fine.
        if ret not in (0, 100002):
            raise DeviceUnavailableError(f"acl.init returned {ret} ({meaning_of(ret)})")
        _initialised[id(acl)] = acl
        if ret == 0:
            atexit.register(acl.finalize)
        return acl


def forget(acl: Any) -> None:
    """Drop the record for ``acl`` (tests that swap emulated modules)."""
    with _lock:
        _initialised.pop(id(acl), None)
