"""Which allocations each thread is using right now, so that no pool moves or spills them under it.

Kept apart from ``dsrt.memory`` (and importing nothing from dsrt) because the launch path in ``dsrt.device`` needs
it, and ``dsrt.memory`` imports the pool, which imports ``dsrt.device``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["IN_USE", "busy_ids", "in_use"]

#: What is in use right now: each running launch, collective or :func:`in_use` block stores its
#: operands here as one tuple (of Allocations, or of Arrays, which stand for their allocations),
#: keyed by the tuple's ``id``, and removes it when done; a pool never moves or spills what is
#: listed. Dict stores are atomic under the GIL, so registering takes no lock.
IN_USE: dict[int, Any] = {}


@contextmanager
def in_use(allocs: Iterable[Any]) -> Iterator[None]:
    """Within the block, no pool moves or spills ``allocs`` (code that reads their raw handles)."""
    held = tuple(allocs)
    if not held:  # () is one shared object: it could not key two blocks at once
        yield
        return
    key = id(held)
    IN_USE[key] = held
    try:
        yield
    finally:
        del IN_USE[key]


def busy_ids() -> set[int]:
    """``id()`` of every allocation some thread lists in :data:`IN_USE` now."""
    return {id(getattr(a, "_alloc", a)) for held in list(IN_USE.values()) for a in held}
