"""The memory contract: :class:`Allocation` (what every Array holds) and the :class:`MemoryPool` interface.

Kept apart from ``dsrt/memory/__init__.py`` so the pool modules import it without importing the
package that re-exports them. Sizes are bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..device import Device, Stream
    from .allocator import Allocator

__all__ = ["Allocation", "MemoryPool", "ALIGNMENT"]

#: Every allocation starts on a multiple of this many bytes (a cache line; enough for any dtype and
#: for OpenCL's CL_DEVICE_MEM_BASE_ADDR_ALIGN on the devices we know).
ALIGNMENT = 256

_use_clock = itertools.count(1)

class Allocation:
    """``nbytes`` bytes at byte ``offset`` inside the raw device allocation ``handle``.

    ``handle`` is whatever the device's ``_allocate`` returned (a numpy buffer, a ``cl.Buffer``, a
    CUDA pointer...); it is ``None`` while the contents are spilled to another tier, and
    ``generation`` changes whenever the bytes move (a spill, or compaction), so cached native views
    can be rebuilt. ``last_use`` is a monotonically increasing counter the pool uses for LRU
    spilling. ``exported`` is set once the raw address has been handed to code dsrt does not control
    (DLPack, the CUDA array interface, torch): from then on the pool never moves or spills it.
    """

    __slots__ = (
        "__weakref__",
        "device",
        "exported",
        "generation",
        "handle",
        "last_use",
        "nbytes",
        "offset",
        "pool",
        "pool_data",
        "stream",
    )

    def __init__(
        self,
        device: Device,
        handle: Any,
        offset: int,
        nbytes: int,
        pool: MemoryPool | None,
        stream: Stream | None = None,
        pool_data: Any = None,
    ) -> None:
        self.device = device
        self.handle = handle
        self.offset = offset
        self.nbytes = nbytes
        self.pool = pool
        self.stream = stream
        self.generation = 0
        self.exported = False
        self.last_use = next(_use_clock)
        self.pool_data = pool_data

    def touch(self) -> None:
        """Mark as used now; bring the bytes back first if they were spilled."""
        if self.handle is None and self.pool is not None:
            self.pool.fetch(self)
        self.last_use = next(_use_clock)

    def release(self) -> None:
        """Give the bytes back to the pool now. Idempotent."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.free(self)

    def __del__(self) -> None:
        pool = self.pool
        if pool is not None:
            self.pool = None
            try:
                pool.free(self)
            except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to tell
                pass

    def __repr__(self) -> str:
        return f"<Allocation {self.nbytes} bytes @ {self.offset} on {self.device.id}>"


class MemoryPool:
    """The interface every pool implements; one pool per device.

    ``limit`` is the most bytes the pool may reserve from the device (``None``: the device's memory).
    """

    #: True where :meth:`hold` may be skipped for resident items while no move is under way (the
    #: pool's ``_moving`` false): the C launch path then only stamps ``last_use`` itself, as
    #: CachingPool.hold's lock-free barrier does (see there for why that is safe).
    lock_free_hold = False

    def __init__(self, device: Device, *, limit: int | None = None) -> None:
        self.device = device
        #: The only way the pool reaches device memory (see :mod:`dsrt.memory.allocator`).
        self.allocator: Allocator = device.allocator
        self.limit = limit

    def allocate(self, nbytes: int, stream: Stream | None = None) -> Allocation:
        """Return an Allocation of at least ``nbytes`` bytes, usable on ``stream``."""
        raise NotImplementedError

    def free(self, alloc: Allocation) -> None:
        """Take ``alloc`` back (called by :meth:`Allocation.release`)."""
        raise NotImplementedError

    def fetch(self, alloc: Allocation) -> None:
        """Bring a spilled allocation back onto the device (no-op for pools that never spill)."""

    def hold(self, items: Iterable[Any]) -> None:
        """Make ``items`` (Allocations of this pool, or Arrays standing for theirs) resident for a caller
        that has listed them in :data:`IN_USE` and will read their raw handles; a pool that moves
        bytes must also wait here for a move already under way (see :meth:`CachingPool.hold`)."""
        for item in items:
            alloc = getattr(item, "allocation", item)
            if alloc.pool is self:
                alloc.touch()

    def set_limit(self, limit: int | float | None) -> None:
        """Cap reserved bytes: an int is bytes, a float in (0, 1] a fraction of device memory."""
        if limit is None:
            self.limit = None
        elif isinstance(limit, float) and 0 < limit <= 1:
            self.limit = int(limit * self.allocator.memory_bytes)
        else:
            self.limit = int(limit)

    def empty_cache(self) -> int:
        """Return every unused cached segment to the device; returns bytes released."""
        return 0

    def trim(self, keep_bytes: int = 0) -> int:
        """Return unused cached segments until at most ``keep_bytes`` stay cached; returns bytes."""
        return self.empty_cache()

    def stats(self) -> dict[str, Any]:
        """Counters in bytes and counts (see the caching pool for the full list)."""
        raise NotImplementedError

    def snapshot(self) -> list[dict[str, Any]]:
        """Segments and blocks, for debugging."""
        return []
