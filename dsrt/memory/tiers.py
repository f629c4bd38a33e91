"""The tiers a :class:`~dsrt.memory.CachingPool` spills to, and the thread that shrinks idle pools.

Tiers, nearest first: the device itself, then pinned (page-locked) host memory where the device's
allocator offers it (``pinned_host``), then ordinary host memory (numpy). A spilled allocation's
bytes live in a :class:`SpillRecord` until :meth:`Allocation.touch` brings them back. All sizes are
in bytes, all times in seconds.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .allocator import Allocator

__all__ = ["SpillRecord", "HostTiers", "IdleReaper"]


class SpillRecord:
    """Where a spilled allocation's bytes are: ``tier`` (``'pinned_host'`` or ``'host'``), a 1-D
    ``uint8`` host ``buffer`` of at least ``size`` bytes, and the device block size ``size`` it
    needs when it comes back (the pool owns the buffer)."""

    __slots__ = ("buffer", "native", "size", "tier")

    def __init__(self, tier: str, buffer: np.ndarray, size: int, native: Any = None) -> None:
        self.tier = tier
        self.buffer = buffer
        self.size = size
        self.native = native


class HostTiers:
    """Hands out host buffers for spills: pinned first (up to ``pinned_limit`` bytes), then host.

    Pinned buffers come from the allocator's :meth:`~dsrt.memory.allocator.Allocator.allocate_pinned`
    (a host object exposing the buffer protocol of at least ``nbytes`` bytes) and go back through
    its ``free_pinned``. Called under the pool lock.
    """

    def __init__(self, allocator: Allocator, pinned_limit: int | None) -> None:
        self.allocator = allocator
        self.has_pinned = bool(allocator.pinned_host)
        if pinned_limit is None:
            pinned_limit = allocator.memory_bytes if self.has_pinned else 0
        self.pinned_limit = pinned_limit if self.has_pinned else 0
        self.bytes = {"pinned_host": 0, "host": 0}
        self.peak = {"pinned_host": 0, "host": 0}

    def take(self, nbytes: int) -> SpillRecord:
        """A host buffer of ``nbytes`` bytes in the nearest tier with room."""
        if self.has_pinned and self.bytes["pinned_host"] + nbytes <= self.pinned_limit:
            native = self.allocator.allocate_pinned(nbytes)  # None: exhausted, use pageable memory
            if native is not None:
                buf = native if isinstance(native, np.ndarray) else np.frombuffer(native, np.uint8)
                return self._account(SpillRecord("pinned_host", buf.reshape(-1)[:nbytes], nbytes, native))
        return self._account(SpillRecord("host", np.empty(nbytes, np.uint8), nbytes))

    def _account(self, rec: SpillRecord) -> SpillRecord:
        b = self.bytes[rec.tier] = self.bytes[rec.tier] + rec.size
        if b > self.peak[rec.tier]:
            self.peak[rec.tier] = b
        return rec

    def give_back(self, rec: SpillRecord) -> None:
        """Release ``rec``'s host buffer."""
        self.bytes[rec.tier] -= rec.size
        if rec.tier == "pinned_host":
            self.allocator.free_pinned(rec.native)
        rec.buffer = rec.native = None  # type: ignore[assignment]


class IdleReaper:
    """One daemon thread for the process; every ``interval`` seconds it asks each registered pool
    to shrink if it has been idle (see :meth:`CachingPool.shrink_if_idle`)."""

    _instance: IdleReaper | None = None
    _guard = threading.Lock()

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self.thread = threading.Thread(target=self._run, name="dsrt-memory-reaper", daemon=True)
        self.thread.start()

    @classmethod
    def register(cls, pool: Any, interval: float) -> None:
        with cls._guard:
            if cls._instance is None:
                cls._instance = IdleReaper(interval)
            inst = cls._instance
            inst.interval = min(inst.interval, interval)
            inst.pools.add(pool)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            for pool in list(self.pools):
                try:
                    pool.shrink_if_idle()
                except Exception:  # noqa: BLE001 - a broken device must not kill the reaper thread
                    pass
