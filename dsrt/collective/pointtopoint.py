"""Barrier and point-to-point messages between participants.

The barrier is a collective (counted and agreed on by the inter transport like the others); send and
recv are not: they run in the communicator's skeleton for the operand registration, ``on_timeout`` and
tracing, but outside ``begin``/``end``. Within one process a send leaves a copy in the communicator's
mailbox, which the matching recv takes; across ranks the bytes go through the inter transport, tagged
with the user's tag and both local device indices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..array import Array
from ..errors import CollectiveError, ConfigurationError, ShapeError
from .buffers import HostStage, flat

if TYPE_CHECKING:
    from .communicator import Communicator

__all__ = ["barrier", "send", "recv"]


def barrier(comm: Communicator, *, async_op: bool = False, timeout: float | None = None) -> Any:
    """See :meth:`Communicator.barrier`."""

    def body(inter: Any, deadline: float) -> None:
        comm._sync(deadline, "barrier")
        if inter is not None:
            inter.barrier(deadline=deadline, what="barrier")

    return comm._collective("barrier", "barrier", body, (), async_op, timeout)


def _tag(tag: int, src_local: int, dst_local: int) -> int:
    if not 0 <= tag < 1 << 16:
        raise ConfigurationError(f"point-to-point tag {tag} out of range [0, 65536)")
    return (tag << 12) | (src_local << 6) | dst_local


def _local_index(comm: Communicator, arr: Array, what: str) -> int:
    for i, d in enumerate(comm.devices):
        if arr.device is d:
            return i
    raise ShapeError(f"{what}: array on {arr.device.id} is not on a device of this communicator")


def send(comm: Communicator, x: Array, dst: int, *, tag: int = 0, timeout: float | None = None) -> None:
    """See :meth:`Communicator.send`."""
    me = _local_index(comm, x, "send")
    dst_rank, dst_local = comm.locate(dst)
    what = f"send to participant {dst}"
    if dst_rank == comm.rank:
        copy = x.device.empty(x.shape, x.dtype)
        comm.intra.copy(copy, x)
        comm._mailbox[(me, dst_local, tag)] = copy
        return
    wire_tag = _tag(tag, me, dst_local)

    def body(_inter: Any, deadline: float) -> None:
        comm._sync(deadline, "send")
        stage = HostStage(flat(x))
        comm.inter.send(stage.array.view(np.uint8), dst_rank, wire_tag, deadline=deadline, what=what)

    comm._collective("send", what, body, (x,), False, timeout, across=False)


def recv(comm: Communicator, x: Array, src: int, *, tag: int = 0, timeout: float | None = None) -> Array:
    """See :meth:`Communicator.recv`."""
    me = _local_index(comm, x, "recv")
    src_rank, src_local = comm.locate(src)
    if src_rank == comm.rank:
        key = (src_local, me, tag)
        got = comm._mailbox.pop(key, None)
        if got is None:
            raise CollectiveError(
                f"recv from participant {src} ({comm.devices[src_local].id}, tag {tag}): nothing was sent;"
                " in one process the send must come first", missing=[comm.devices[src_local].id])
        if got.shape != x.shape or got.dtype != x.dtype:
            raise ShapeError(f"recv: sent {got.dtype}{got.shape}, receiving into {x.dtype}{x.shape}")
        comm.intra.copy(x, got)
        return x
    what = f"recv from participant {src} (rank {src_rank})"
    wire_tag = _tag(tag, src_local, me)

    def body(_inter: Any, deadline: float) -> Array:
        stage = HostStage(flat(x), load=False)
        comm.inter.recv(stage.array.view(np.uint8), src_rank, wire_tag, deadline=deadline, what=what)
        stage.store()
        return x

    result: Array = comm._collective("recv", what, body, (x,), False, timeout, across=False)
    return result
