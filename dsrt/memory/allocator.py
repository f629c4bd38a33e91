"""The allocator: the only way the pool reaches device memory.

A backend provides an :class:`Allocator` (every ``Device`` gets one for free as ``device.allocator``,
an adapter over its ``_allocate``/``_free``/``_copy_in``/``_copy_out``/``_copy_between``/
``_synchronize`` primitives). The pool (:mod:`dsrt.memory.pool`) and the host tiers
(:mod:`dsrt.memory.tiers`) call nothing else on the device side.

Subclasses implement the underscored hooks (``_allocate``, ``_free``, ``_copy_in``, ``_copy_out``,
``_transfer``, ``_synchronize`` and optionally ``_allocate_pinned``/``_free_pinned`` and
``_translate``); the public methods wrap them and turn a vendor exception into a
:class:`~dsrt.errors.DsrtError` naming the device and the byte sizes, once, for every path the pool
takes (allocate a segment, spill, fetch, move for compaction). A hook that raises a ``DsrtError``
already has it passed through unchanged.

Threads: the pool calls every method with its own lock held, from whichever thread is allocating
(or fetching, spilling, compacting); methods must not call back into the pool. Handles are opaque
to the pool: it only passes back what ``allocate`` returned, with byte offsets into it. All sizes
and offsets are in bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeviceError, DsrtError, OutOfMemoryError, format_bytes

if TYPE_CHECKING:
    from ..device import Stream

__all__ = ["Allocator"]


class Allocator:
    """Raw device memory for one device, and the copies the pool needs to spill, fetch and move it.

    Capabilities, as data (class attributes or set in ``__init__``):

    ``synchronous``
        Every copy (and launch) has finished when the call returns; the pool then never records
        events and may reuse freed bytes at once.
    ``host_visible``
        Handles are host memory the CPU can read directly (1-D ``uint8`` numpy buffers).
    ``peer_transfer``
        :meth:`transfer` can copy device-to-device without staging through the host (otherwise it
        returns ``False`` and the caller stages).
    ``pinned_host``
        :meth:`allocate_pinned` hands out page-locked host buffers for the spill tier.

    ``device_id`` names the device in error messages; ``memory_bytes`` is its capacity in bytes;
    ``default_stream`` is the stream the pool uses when an allocation names none.
    """

    synchronous: bool = False
    host_visible: bool = False
    peer_transfer: bool = False
    pinned_host: bool = False

    def __init__(self, device_id: str, memory_bytes: int, default_stream: Stream) -> None:
        self.device_id = device_id
        self._memory_bytes = int(memory_bytes)
        self.default_stream = default_stream

    @property
    def memory_bytes(self) -> int:
        """The device's memory in bytes (the pool's capacity when it has no limit). Read by the pool,
        on whichever thread checks the capacity; a subclass may return a fresh figure."""
        return self._memory_bytes

    # ------------------------------------------------------------------ public, called by the pool
    def allocate(self, nbytes: int) -> Any:
        """Reserve ``nbytes`` bytes of device memory and return its raw handle (owned by the pool
        until it passes it to :meth:`free`). Called by the pool when it needs a new segment, with its
        lock held, on the thread that is allocating.

        Raises :class:`~dsrt.errors.OutOfMemoryError` when the device has no room (the pool then
        frees cached segments, spills, and retries), or another ``DsrtError`` for any other failure.
        """
        try:
            return self._allocate(nbytes)
        except DsrtError:
            raise
        except MemoryError as exc:
            raise OutOfMemoryError(device=self.device_id, requested=nbytes, capacity=self.memory_bytes,
                                   tried=["the device allocator"], detail=str(exc)) from exc
        except Exception as exc:
            raise self._error(exc, f"allocation of {format_bytes(nbytes)}") from exc

    def free(self, handle: Any) -> None:
        """Give ``handle`` (from :meth:`allocate`, no longer used by anything) back to the device.
        Called by the pool when it trims a segment, with its lock held, on the trimming thread (the
        allocating one, an ``empty_cache`` caller, or the idle reaper). Raises ``DsrtError`` on
        failure."""
        try:
            self._free(handle)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._error(exc, "freeing a segment") from exc

    def copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        """Copy the bytes of contiguous host array ``src`` (the caller owns it; it may be reused as
        soon as this returns) to ``handle`` at byte ``offset``, ordered on ``stream``. Called by the
        pool when it fetches a spilled allocation, with its lock held, on the fetching thread.
        Raises ``DsrtError`` on failure."""
        try:
            self._copy_in(handle, offset, src, stream)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._error(exc, f"copy of {format_bytes(src.nbytes)} to the device at offset {offset}") from exc

    def copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        """Copy ``dst.nbytes`` bytes from ``handle`` at byte ``offset`` into contiguous host array
        ``dst`` (owned by the caller), ordered on ``stream``; complete once :meth:`synchronize`
        returns. Called by the pool when it spills, with its lock held, on the allocating thread.
        Raises ``DsrtError`` on failure."""
        try:
            self._copy_out(handle, offset, dst, stream)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._error(exc, f"copy of {format_bytes(dst.nbytes)} to the host from offset {offset}") from exc

    def transfer(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                 stream: Stream) -> bool:
        """Copy ``nbytes`` bytes device-to-device, from ``src_handle`` at ``src_offset`` to
        ``dst_handle`` at ``dst_offset`` (both handles of this allocator; the ranges do not
        overlap), ordered on ``stream``. Called by the pool when compaction moves a live block,
        with its lock held, on the allocating thread.
        Returns ``False`` when no direct copy is possible (the pool then stages through host memory
        with :meth:`copy_out` and :meth:`copy_in`). Raises ``DsrtError`` on failure."""
        if not self.peer_transfer:
            return False
        try:
            return bool(self._transfer(dst_handle, dst_offset, src_handle, src_offset, nbytes, stream))
        except DsrtError:
            raise
        except Exception as exc:
            raise self._error(exc, f"device-to-device copy of {format_bytes(nbytes)}") from exc

    def synchronize(self, stream: Stream | None = None) -> None:
        """Block until ``stream`` (default: the default stream) has finished its queued work.
        Called by the pool after a spill, fetch or move, and before compaction on asynchronous
        devices, with its lock held, on the thread doing that. Raises ``DsrtError`` on failure."""
        try:
            self._synchronize(stream if stream is not None else self.default_stream)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._error(exc, "synchronize") from exc

    def allocate_pinned(self, nbytes: int) -> Any:
        """A page-locked host buffer of at least ``nbytes`` bytes exposing the buffer protocol, or
        ``None`` when there is none to give (no ``pinned_host`` capability, or pinned memory is
        exhausted: the pool then uses pageable memory). Called by the host tiers when spilling, with
        the pool lock held, on the spilling thread; allocation failures (``MemoryError``, ``OSError``, ``RuntimeError``,
        ``OutOfMemoryError``) are answered with ``None``, never raised."""
        if not self.pinned_host:
            return None
        try:
            return self._allocate_pinned(nbytes)
        except (MemoryError, OSError, RuntimeError, OutOfMemoryError):
            return None

    def free_pinned(self, buffer: Any) -> None:
        """Give back a buffer from :meth:`allocate_pinned` (called when its spill ends: the
        allocation was fetched or freed, with the pool lock held)."""
        if self.pinned_host:
            self._free_pinned(buffer)

    # ------------------------------------------------------------------ hooks, implemented by backends
    def _allocate(self, nbytes: int) -> Any:
        """Reserve ``nbytes`` bytes; return a raw handle (not ``None``), owned by the pool until
        :meth:`_free`. Called by :meth:`allocate` (pool lock held, allocating thread). Raise
        :class:`~dsrt.errors.OutOfMemoryError` (or ``MemoryError``) when the device has no room."""
        raise NotImplementedError

    def _free(self, handle: Any) -> None:
        """Release ``handle``; called by :meth:`free` once per handle, pool lock held, on the
        trimming thread (the allocating one, an ``empty_cache`` caller, or the idle reaper)."""
        raise NotImplementedError

    def _copy_in(self, handle: Any, offset: int, src: np.ndarray, stream: Stream) -> None:
        """Host ``src`` (the caller's; reusable once this returns) to ``handle`` at byte ``offset``,
        ordered on ``stream``. Called by :meth:`copy_in` when the pool fetches (lock held)."""
        raise NotImplementedError

    def _copy_out(self, handle: Any, offset: int, dst: np.ndarray, stream: Stream) -> None:
        """``dst.nbytes`` bytes from ``handle`` at byte ``offset`` into host ``dst`` (the caller's),
        ordered on ``stream``; complete after :meth:`_synchronize`. Called by :meth:`copy_out` when
        the pool spills (lock held)."""
        raise NotImplementedError

    def _transfer(self, dst_handle: Any, dst_offset: int, src_handle: Any, src_offset: int, nbytes: int,
                  stream: Stream) -> bool:
        """Copy ``nbytes`` bytes device to device between two handles of this allocator, ordered on
        ``stream``; ``False`` if it cannot. Called by :meth:`transfer` when compaction moves a block
        (lock held), only when ``peer_transfer`` is set."""
        return False

    def _synchronize(self, stream: Stream) -> None:
        """Block until ``stream``'s queued work has finished. Called by :meth:`synchronize` (pool
        lock held, on the thread that spills, fetches or compacts) after spills, fetches and moves,
        and before compaction on asynchronous devices."""
        return None

    def _allocate_pinned(self, nbytes: int) -> Any:
        """A page-locked host buffer of at least ``nbytes`` bytes, or ``None``. Called by
        :meth:`allocate_pinned` (lock held), only when ``pinned_host`` is set."""
        return None

    def _free_pinned(self, buffer: Any) -> None:
        """Release a buffer from :meth:`_allocate_pinned`. Called by :meth:`free_pinned` (lock held)."""
        return None

    def _translate(self, exc: BaseException, action: str) -> DsrtError:
        """A vendor exception as a dsrt error (backends refine this); ``action`` names what failed,
        with its byte sizes. Called by the public methods, on their thread with the pool lock held,
        for any exception that is not already a ``DsrtError``; return the error, do not raise it."""
        return DeviceError(f"{self.device_id}: {action} failed: {type(exc).__name__}: {exc}", device=self.device_id)

    def _error(self, exc: BaseException, action: str) -> DsrtError:
        """:meth:`_translate`, making sure the message names the device."""
        err = self._translate(exc, action)
        if self.device_id not in str(err):
            err = DeviceError(f"{self.device_id}: {action} failed: {err}", device=self.device_id)
        return err
