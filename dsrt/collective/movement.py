"""The data-movement collectives: broadcast, all_gather and all_to_all.

Each public function checks its arguments and hands a body to the communicator's skeleton
(:meth:`~.communicator.Communicator._collective`). Within the process the bodies copy with the intra
transport; across ranks they stage the arrays' bytes through host memory
(:class:`~.buffers.HostStage`) for the inter transport, except broadcast, which uses the inter
transport's device broadcast when every rank has one device and every rank's transport offers it.
The MPI transport gates broadcast and all_to_all on every rank's arrival (see :mod:`.mpi`), so a
missing rank fails the collective on every rank, the root included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.dtypes as dt

from ..array import Array
from ..errors import ShapeError
from .buffers import HostStage, flat, segment

if TYPE_CHECKING:
    from .communicator import ArrayArg, Communicator

__all__ = ["broadcast", "all_gather", "all_to_all"]


def broadcast(comm: Communicator, x: ArrayArg, root: int = 0, *, out: ArrayArg | None = None,
              async_op: bool = False, timeout: float | None = None) -> Any:
    """See :meth:`Communicator.broadcast`."""
    xs = comm._arrays(x, "broadcast")
    outs = comm._arrays(out, "broadcast", name="out") if out is not None else xs
    root_rank, root_local = comm.locate(root)
    what = f"broadcast(root={root})"

    def body(inter: Any, deadline: float) -> ArrayArg:
        bufs = [flat(o) for o in outs]
        src = root_local if comm.rank == root_rank else 0
        if comm.rank == root_rank and outs[root_local] is not xs[root_local]:
            comm.intra.copy(bufs[root_local], flat(xs[root_local]))
        if inter is not None:
            on_device = comm._device_broadcast if comm._one_device_per_rank else None
            if on_device is None or not on_device(bufs[0], root_rank, deadline=deadline, what=what):
                comm._sync(deadline, what)
                stage = HostStage(bufs[src], load=comm.rank == root_rank)
                inter.broadcast(stage.array.view(np.uint8), root_rank, deadline=deadline, what=what)
                stage.store()
        comm.intra.broadcast(bufs, src)
        comm._sync(deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("broadcast", what, body, (*xs, *outs), async_op, timeout)


def all_gather(comm: Communicator, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
               timeout: float | None = None) -> Any:
    """See :meth:`Communicator.all_gather`."""
    xs = comm._arrays(x, "all_gather")
    shape = (comm.world_size, *xs[0].shape)
    if out is None:
        outs = [d.empty(shape, xs[0].dtype) for d in comm.devices]
    else:
        outs = comm._arrays(out, "all_gather", name="out")
        if outs[0].shape != shape or outs[0].dtype != xs[0].dtype:
            raise ShapeError(f"all_gather: out must be {dt.dtype_name(xs[0].dtype)}{shape}, got "
                             f"{dt.dtype_name(outs[0].dtype)}{outs[0].shape}")
    what = "all_gather"

    def body(inter: Any, deadline: float) -> ArrayArg:
        n = xs[0].size
        bufs = [flat(o) for o in outs]
        base = comm.offsets[comm.rank]
        for j, a in enumerate(xs):
            comm.intra.copy(segment(bufs[0], (base + j) * n, (base + j + 1) * n), flat(a))
        if inter is not None:
            comm._sync(deadline, what)
            stage = HostStage(bufs[0])
            allb = stage.array.view(np.uint8)
            item = xs[0].dtype.itemsize
            mine = allb[base * n * item:(base + comm.local_size) * n * item].copy()
            inter.all_gather_v(mine, allb, [c * n * item for c in comm.counts], deadline=deadline, what=what)
            stage.store()
        for b in bufs[1:]:
            comm.intra.copy(b, bufs[0])
        comm._sync(deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("all_gather", what, body, (*xs, *outs), async_op, timeout)


def all_to_all(comm: Communicator, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
               timeout: float | None = None) -> Any:
    """See :meth:`Communicator.all_to_all`."""
    xs = comm._arrays(x, "all_to_all")
    P = comm.world_size
    if not xs[0].shape or xs[0].shape[0] != P:
        raise ShapeError(f"all_to_all: inputs need a leading dimension of {P} blocks, got {xs[0].shape}")
    outs = [d.empty(xs[0].shape, xs[0].dtype) for d in comm.devices] if out is None else \
        comm._arrays(out, "all_to_all", name="out")
    what = "all_to_all"

    def body(inter: Any, deadline: float) -> ArrayArg:
        k = xs[0].size // P
        fx = [flat(a) for a in xs]
        fo = [flat(o) for o in outs]
        base = comm.offsets[comm.rank]
        L = comm.local_size
        for i in range(L):
            for j in range(L):
                comm.intra.copy(segment(fo[j], (base + i) * k, (base + i + 1) * k),
                                segment(fx[i], (base + j) * k, (base + j + 1) * k))
        if inter is not None:
            comm._sync(deadline, what)
            _exchange(comm, inter, fx, fo, k, xs[0].dtype.itemsize, deadline, what)
        comm._sync(deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("all_to_all", what, body, (*xs, *outs), async_op, timeout)


def _exchange(comm: Communicator, inter: Any, fx: list[Array], fo: list[Array], k: int, item: int,
              deadline: float, what: str) -> None:
    """The across-ranks part of all_to_all: pack the blocks for every other rank, exchange, unpack."""
    P, L = comm.world_size, comm.local_size
    hx = [HostStage(a).array.view(np.uint8).reshape(P, k * item) for a in fx]
    send_parts: list[np.ndarray] = []
    send_counts: list[int] = []
    recv_counts: list[int] = []
    for s in range(comm.size):
        off, cnt = comm.offsets[s], comm.counts[s]
        send_parts.extend(hx[i][off:off + cnt] for i in range(L))
        send_counts.append(L * cnt * k * item)
        recv_counts.append(cnt * L * k * item)
    send = np.concatenate([p.reshape(-1) for p in send_parts]) if send_parts else np.empty(0, np.uint8)
    recv = np.empty(sum(recv_counts), np.uint8)
    inter.all_to_all_v(send, send_counts, recv, recv_counts, deadline=deadline, what=what)
    stages = [HostStage(o) for o in fo]
    ho = [s.array.view(np.uint8).reshape(P, k * item) for s in stages]
    pos = 0
    for s in range(comm.size):
        cnt = comm.counts[s]
        block = recv[pos:pos + cnt * L * k * item].reshape(cnt, L, k * item)
        pos += cnt * L * k * item
        if s == comm.rank:
            continue
        for j in range(L):
            ho[j][comm.offsets[s]:comm.offsets[s] + cnt] = block[:, j]
    for st in stages:
        st.store()
