"""Type stub of the C extension dsrt.memory._fastpool (source: _fastpool.c)."""

from collections.abc import Callable
from typing import Any

class Counters:
    """The pool's counters as C integers (attributes as in dsrt.memory.stats.Counters)."""

    def __getattr__(self, name: str) -> int: ...
    def __setattr__(self, name: str, value: int) -> None: ...

class Lock:
    """threading.Lock's interface, taken by the C paths without a method call."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

def configure(
    pool_type: type,
    allocation_type: type,
    block_type: type,
    counters_type: type,
    segment_type: type,
    use_clock: Any,
    python_allocate: Callable[..., Any],
    quick_max: int,
    quick_age: int,
    alignment: int,
) -> tuple[Any, Any, Any]: ...
