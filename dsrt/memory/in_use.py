"""Which allocations each thread is using right now, so that no pool moves or spills them under it.

Kept apart from the pool (and importing nothing from dsrt) because the launch path in
``dsrt.device`` inlines the registration below on its hot path.

The protocol, for any code that reads an allocation's raw ``handle``/``offset``: (1) list it in
:data:`IN_USE`; (2) call its pool's ``hold`` (a barrier: a spill or compaction that began before
step 1 has then finished, and every later one sees step 1; the caching pool takes its lock for this
only when a move is under way, see ``CachingPool.hold``); (3) only then read
``handle``/``offset``; (4) remove the entry when the bytes are no longer touched. Reading the handle
before step 2, or registering after reading it, races a concurrent move: the bytes land in, or come
from, a block that already belongs to someone else. :func:`in_use` does steps 1, 2 and 4.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["IN_USE", "busy_ids", "in_use", "settle"]

#: What is in use right now: each running launch, collective or :func:`in_use` block stores its
#: operands here as one tuple (of Allocations, or of Arrays, which stand for their allocations),
#: keyed by the tuple's ``id``, and removes it when done; a pool never moves or spills what is
#: listed. Dict stores are atomic under the GIL, so registering takes no lock (see the protocol above
#: for why a ``hold`` must follow).
IN_USE: dict[int, Any] = {}


def settle(held: tuple[Any, ...]) -> None:
    """Step 2 of the protocol for ``held`` (already in :data:`IN_USE`): ``hold`` them in each pool
    they belong to, one call per pool. Allocations without a pool (imported, views) are skipped."""
    pools: dict[int, tuple[Any, list[Any]]] = {}
    for item in held:
        alloc = getattr(item, "allocation", item)
        pool = getattr(alloc, "pool", None)
        if pool is not None:
            entry = pools.get(id(pool))
            if entry is None:
                pools[id(pool)] = (pool, [alloc])
            else:
                entry[1].append(alloc)
    for pool, allocs in pools.values():
        pool.hold(allocs)


@contextmanager
def in_use(allocs: Iterable[Any]) -> Iterator[None]:
    """Within the block, no pool moves or spills ``allocs`` (Allocations or Arrays), and they are
    resident: their ``handle``/``offset`` may be read inside the block, and stay valid until it ends."""
    held = tuple(allocs)
    if not held:  # () is one shared object: it could not key two blocks at once
        yield
        return
    key = id(held)
    IN_USE[key] = held
    try:
        settle(held)
        yield
    finally:
        del IN_USE[key]


def busy_ids() -> set[int]:
    """``id()`` of every allocation some thread lists in :data:`IN_USE` now."""
    return {id(getattr(a, "allocation", a)) for held in list(IN_USE.values()) for a in held}
