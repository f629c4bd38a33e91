"""The transport base classes: what a transport must do, and the defaults it inherits.

A transport moves and combines collective data. :class:`IntraTransport` works among the devices of
one process (the built-in :class:`~.local.InProcessTransport`; NCCL for CUDA GPUs and HCCL for NPUs
in their plugins); :class:`InterTransport` works between processes (the built-in
:class:`~.mpi.MpiTransport`; ``hccl-mpi`` in the NPU plugin). The communicator calls only the methods
declared here, so a transport states what it offers by overriding them, never by the presence of an
attribute:

- optional capabilities have a default that declines (``InterTransport.device_all_reduce`` returns
  ``None``: "not on the device, stage through host memory") or falls back to the general method
  (``InterTransport.all_reduce_small`` calls ``all_reduce``);
- lifetime hooks (``setup``, ``close``) default to doing nothing.

Every method runs on the calling thread: the user's thread, or the communicator's single worker
thread for ``async_op=True`` (one collective at a time per communicator). Buffers are borrowed for
the duration of a call; sizes are elements unless named bytes; deadlines are ``time.perf_counter``
seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CollectiveError

if TYPE_CHECKING:
    from ..array import Array

__all__ = ["IntraTransport", "InterTransport"]


class IntraTransport:
    """Collectives among the devices of one process, on their flat work arrays.

    ``bufs`` holds one flat, contiguous array per participating device (in the communicator's device
    order), all of one dtype (the reduction's compute dtype); ``kernel`` is ``add``, ``mul``,
    ``maximum`` or ``minimum``. Work may be left queued on the devices' default streams: the
    communicator waits for the streams against its deadline.
    """

    name = "intra"

    def all_reduce(self, bufs: Sequence[Array], kernel: str, *, algorithm: str = "auto",
                   deterministic: bool = False) -> str:
        """Every buffer gets the reduction of all; returns the name of the algorithm used."""
        raise NotImplementedError(f"{type(self).__name__}.all_reduce")

    def reduce_scatter(self, bufs: Sequence[Array], bounds: Sequence[int], kernel: str, *,
                       deterministic: bool = False) -> None:
        """Afterwards ``bufs[i][bounds[i]:bounds[i+1]]`` holds the reduction of that segment."""
        raise NotImplementedError(f"{type(self).__name__}.reduce_scatter")

    def all_gather(self, bufs: Sequence[Array], bounds: Sequence[int]) -> None:
        """Every buffer gets segment ``i`` (elements ``bounds[i]:bounds[i+1]``) from buffer ``i``."""
        raise NotImplementedError(f"{type(self).__name__}.all_gather")

    def reduce(self, bufs: Sequence[Array], root: int, kernel: str, *, deterministic: bool = False) -> None:
        """``bufs[root]`` gets the reduction of all (the others are scratch afterwards)."""
        raise NotImplementedError(f"{type(self).__name__}.reduce")

    def broadcast(self, bufs: Sequence[Array], root: int) -> None:
        """Every buffer gets ``bufs[root]``."""
        raise NotImplementedError(f"{type(self).__name__}.broadcast")

    def copy(self, dst: Array, src: Array) -> None:
        """``dst`` := ``src`` (any two devices); default: the destination device's copy."""
        dst.device.copy(dst, src)

    def close(self) -> None:
        """Free vendor resources (communicators, threads); called once by the communicator's close."""


class InterTransport:
    """Collectives between the ranks of a group of processes, on host (numpy) buffers.

    A subclass sets ``rank`` and ``size`` in its constructor. The communicator sets ``timeout``
    (seconds; named in errors) and brackets every collective with :meth:`begin` and :meth:`end`;
    the transport numbers the collectives in ``seq`` and, after a failure, sets ``broken`` (a
    description) so that every later call raises at once.

    Failure contract (what the communicator relies on): a call never blocks past its ``deadline``;
    past it, it raises :class:`~dsrt.errors.CollectiveError` whose ``missing`` names the ranks that
    never arrived; and every rank reports the same outcome for the same collective (see
    :mod:`.mpi` for how MPI agrees).
    """

    name = "inter"
    rank: int = 0
    size: int = 1
    timeout: float | None = None
    seq: int = 0
    broken: str | None = None

    # ------------------------------------------------------------------ lifetime and bookkeeping
    def setup(self, deadline: float | None) -> None:
        """Collective set-up every rank runs together from the communicator's constructor (default: none)."""

    def begin(self, what: str) -> None:
        """Count one collective; raise :class:`CollectiveError` if the transport is unusable."""
        if self.broken is not None:
            raise CollectiveError(f"{what}: this communicator is unusable since an earlier failure: {self.broken}")
        self.seq += 1

    def end(self, what: str) -> None:
        """After a collective completed here: raise if another rank gave up on it (default: trust it)."""

    def abort(self, code: int = 1) -> None:
        """End the whole job (``on_timeout="abort"``); default: this process only."""
        import os

        os._exit(code)

    def close(self) -> None:
        """Free the transport's resources."""

    # ------------------------------------------------------------------ collectives on host buffers
    def all_reduce(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, *, deterministic: bool,
                   deadline: float | None, what: str) -> None:
        """``recv`` := reduction over ranks of ``send`` (``None``: in place, of ``recv``)."""
        raise NotImplementedError(f"{type(self).__name__}.all_reduce")

    def all_reduce_small(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, deadline: float,
                         describe: Callable[[], str]) -> None:
        """The latency path for a small, non-deterministic all-reduce of host memory: the whole
        collective, :meth:`begin` and :meth:`end` included. ``describe()`` builds the operation's
        name, only when an error needs it. Default: :meth:`begin`, :meth:`all_reduce`, :meth:`end`."""
        what = describe()
        self.begin(what)
        self.all_reduce(send, recv, kernel, deterministic=False, deadline=deadline, what=what)
        self.end(what)

    def all_reduce_many(self, bufs: Sequence[np.ndarray], kernel: str, *, deterministic: bool,
                        deadline: float | None, what: str) -> None:
        """In-place all-reduce of several independent buffers; default: one after the other."""
        for b in bufs:
            self.all_reduce(None, b, kernel, deterministic=deterministic, deadline=deadline, what=what)

    def reduce(self, send: np.ndarray, recv: np.ndarray | None, root: int, kernel: str, *,
               deterministic: bool, deadline: float | None, what: str) -> None:
        """``recv`` on rank ``root`` := reduction over ranks of ``send`` (``recv`` is ``None`` elsewhere)."""
        raise NotImplementedError(f"{type(self).__name__}.reduce")

    def broadcast(self, buf: np.ndarray, root: int, *, deadline: float | None, what: str) -> None:
        """``buf`` := rank ``root``'s ``buf``."""
        raise NotImplementedError(f"{type(self).__name__}.broadcast")

    def all_gather_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], *,
                     deadline: float | None, what: str) -> None:
        """``recv`` := concatenation of every rank's ``send`` (``counts[r]`` elements from rank r)."""
        raise NotImplementedError(f"{type(self).__name__}.all_gather_v")

    def reduce_scatter_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], kernel: str, *,
                         deterministic: bool, deadline: float | None, what: str) -> None:
        """Rank r gets its ``counts[r]`` elements of the reduction of every rank's ``send``."""
        raise NotImplementedError(f"{type(self).__name__}.reduce_scatter_v")

    def all_to_all_v(self, send: np.ndarray, send_counts: Sequence[int], recv: np.ndarray,
                     recv_counts: Sequence[int], *, deadline: float | None, what: str) -> None:
        """Personalised exchange: ``send_counts[r]`` elements to rank r, ``recv_counts[r]`` from it."""
        raise NotImplementedError(f"{type(self).__name__}.all_to_all_v")

    def all_gather_small(self, mine: np.ndarray, table: np.ndarray, *, deadline: float | None, what: str) -> None:
        """``table[r]`` := rank r's ``mine`` (set-up exchanges); default: :meth:`all_gather_v` on bytes."""
        self.all_gather_v(mine.view(np.uint8).reshape(-1), table.view(np.uint8).reshape(-1),
                          [mine.nbytes] * self.size, deadline=deadline, what=what)

    def barrier(self, *, deadline: float | None, what: str) -> None:
        """Every rank reaches this point."""
        raise NotImplementedError(f"{type(self).__name__}.barrier")

    def send(self, buf: np.ndarray, dest: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Send ``buf`` to rank ``dest``."""
        raise NotImplementedError(f"{type(self).__name__}.send")

    def recv(self, buf: np.ndarray, source: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Receive into ``buf`` from rank ``source``."""
        raise NotImplementedError(f"{type(self).__name__}.recv")

    # ------------------------------------------------------------------ optional device collectives
    def device_all_reduce(self, send: Array | None, recv: Array, kernel: str, *, deadline: float | None,
                          what: str) -> str | None:
        """All-reduce on device arrays (see :mod:`.transport`); default ``None``: not offered, stage
        through host memory."""
        return None

    def device_broadcast(self, buf: Array, root: int, *, deadline: float | None, what: str) -> str | None:
        """Broadcast on a device array (see :mod:`.transport`); default ``None``: not offered."""
        return None

    def offers(self) -> tuple[bool, bool]:
        """``(device_all_reduce, device_broadcast)``: which device collectives this class overrides."""
        cls = type(self)
        return (cls.device_all_reduce is not InterTransport.device_all_reduce,
                cls.device_broadcast is not InterTransport.device_broadcast)
