"""Type stub of the C extension dsrt._fastlaunch (source: _fastlaunch.c)."""

from collections.abc import Callable
from typing import Any

def configure(
    device_type: type,
    array_type: type,
    allocation_type: type,
    block_type: type,
    caching_pool_type: type,
    in_use: dict[int, Any],
    use_clock: Any,
    device_globals: dict[str, Any],
    python_launch: Callable[..., Any],
    launch_failed: Callable[..., None],
    keyed_types: frozenset[Any],
    kernel_specs: dict[str, Any],
    doc: str,
) -> Any: ...
