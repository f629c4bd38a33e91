"""Type stub of the C extension dsrt.memory._fastpool (source: _fastpool.c)."""

from collections.abc import Callable
from typing import Any

class Counters:
    """The pool's counters as C integers (attributes as in dsrt.memory.stats.Counters)."""

    def __getattr__(self, name: str) -> int: ...
    def __setattr__(self, name: str, value: int) -> None: ...

class PoolCore:
    """The parts of a CachingPool its C paths use, made once by the pool."""

    def __init__(self, lock: Any, counters: Any, device: Any, default_stream: Any, deferred: Any,
                 quick: dict[int, list[Any]], small: Any, large: Any, sync: bool) -> None: ...

class Lock:
    """threading.Lock's interface, taken by the C paths without a method call."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

def install_finalizer() -> bool: ...
def configure(
    pool_type: type,
    allocation_type: type,
    block_type: type,
    counters_type: type,
    segment_type: type,
    index_type: type,
    use_clock: Any,
    python_allocate: Callable[..., Any],
    python_free: Callable[..., Any],
    constants: tuple[int, int, int, int, int, int, int, int, int],
) -> tuple[Any, Any, Any]: ...
