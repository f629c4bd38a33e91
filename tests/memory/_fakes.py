"""Fake devices for the memory pool tests: count raw allocations, model asynchronous streams."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrt.device import Device, DeviceInfo, Event, Stream
from dsrt.memory.hostmem import HostMemory


class FakeDevice(HostMemory, Device):
    """A host-memory device that counts raw allocations; ``memory_bytes`` is its capacity."""

    _queues_work = False  # synchronous: every copy has finished when it returns

    def __init__(self, memory_bytes: int = 64 << 20, *, pinned: bool = False) -> None:
        super().__init__(DeviceInfo(id="fake:0", backend="fake", index=0, name="fake", memory_bytes=memory_bytes,
                                    synchronous=not self._queues_work, host_visible=True))
        self.raw_allocs = 0
        self.raw_frees = 0
        self.live_raw = 0
        self.pinned_allocs = 0
        if pinned:
            self._allocate_pinned = self._pinned  # type: ignore[method-assign]

    def _allocate(self, nbytes: int) -> np.ndarray:
        if self.live_raw + nbytes > self.info.memory_bytes:
            raise MemoryError("fake device full")
        self.raw_allocs += 1
        self.live_raw += nbytes
        return super()._allocate(nbytes)

    def _free(self, handle: Any) -> None:
        self.raw_frees += 1
        self.live_raw -= handle.nbytes

    def _pinned(self, nbytes: int) -> np.ndarray:
        self.pinned_allocs += 1
        return np.empty(nbytes, np.uint8)


class AsyncDevice(FakeDevice):
    """Streams whose work completes only when the test says so (``finish(stream)``).

    Each stream has a counter of queued work items; an event remembers the counter at record
    time and completes once ``finish`` has advanced the stream's done mark past it.
    """

    _queues_work = True

    def __init__(self, memory_bytes: int = 64 << 20) -> None:
        self.queued: dict[int, int] = {}
        self.done: dict[int, int] = {}
        super().__init__(memory_bytes)

    def enqueue(self, stream: Stream) -> None:
        self.queued[id(stream)] = self.queued.get(id(stream), 0) + 1

    def finish(self, stream: Stream) -> None:
        self.done[id(stream)] = self.queued.get(id(stream), 0)

    def _record_event(self, stream: Stream) -> Event:
        return Event(stream, native=self.queued.get(id(stream), 0))

    def _query_event(self, event: Event) -> bool:
        return self.done.get(id(event.stream), 0) >= event.native

    def _wait_event(self, event: Event) -> None:
        self.finish(event.stream)

    def _synchronize(self, stream: Stream) -> None:
        self.finish(stream)
