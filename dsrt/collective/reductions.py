"""The reductions: all_reduce (with its small-message latency path), reduce and reduce_scatter.

Each public function checks its arguments and hands a body to the communicator's skeleton
(:meth:`~.communicator.Communicator._collective`), which registers the operands in use, brackets
the body with the inter transport's ``begin``/``end`` (outcome agreement), applies ``on_timeout`` and
traces. The bodies work in the plan's compute dtype (see :mod:`.ops`): ``_work`` makes the flat work
buffer, ``_finish`` scales (avg) and rounds back.

The exception is :func:`lean_all_reduce` and the prepared call it leaves behind (:class:`LeanCall`,
replayed by ``Communicator.all_reduce``): with one host-resident device per rank, a small
all-reduce is one MPI call on views of the arrays' memory, and the inter transport's
``all_reduce_small`` is the whole collective (it counts it and agrees on its outcome itself).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

import dsrt.collective.algorithms as alg
import dsrt.dtypes as dt

from ..array import Array
from ..device import Device
from ..errors import ShapeError
from .buffers import HostStage, flat, host_view, retype, segment
from .mpi import GATED_FROM_BYTES
from .ops import ReducePlan, plan_reduction

if TYPE_CHECKING:
    from .communicator import ArrayArg, Communicator

__all__ = ["all_reduce", "lean_all_reduce", "LeanCall", "reduce", "reduce_scatter"]


class LeanCall:
    """The prepared small all-reduce of one (input, output, op): host views, kernel, MPI entry point.

    Valid while both arrays' allocations keep the generations recorded here (a spill or move bumps
    them); owned by the communicator, which keeps only the latest one.
    """

    __slots__ = ("x", "out", "op", "x_gen", "out_gen", "send", "recv", "kernel", "run", "describe", "sync", "held",
                 "key")

    def __init__(self, x: Array, out: Array | None, op: Any, send: np.ndarray | None, recv: np.ndarray, kernel: str,
                 run: Callable[..., None], describe: Callable[[], str], sync: Callable[[], None] | None) -> None:
        self.x, self.out, self.op = x, out, op
        self.x_gen = x.allocation.generation
        self.out_gen = -1 if out is None else out.allocation.generation
        self.send, self.recv, self.kernel = send, recv, kernel
        self.run, self.describe, self.sync = run, describe, sync
        self.held = (x,) if out is None else (x, out)  # what IN_USE lists while the call runs
        self.key = id(self)


# ---------------------------------------------------------------------- helpers
def _work(src: Array, plan: ReducePlan, *, copy: bool) -> Array:
    """The flat compute-dtype buffer a reduction works in (a new array when ``copy`` or cast)."""
    f = flat(src)
    dev = f.device
    if plan.cast:
        return dev.launch("cast", f, dtype=plan.compute)
    if copy:
        c = dev.empty(f.shape, f.dtype)
        dev.copy(c, f)
        f = c
    return retype(f, plan.compute) if plan.view else f


def _finish(comm: Communicator, work: Array, out: Array, plan: ReducePlan) -> None:
    """Scale (avg) and round back (low precision) from ``work`` into ``out`` (same elements)."""
    dev = work.device
    if plan.scale:
        dev.launch("scale", work, alpha=1.0 / comm.world_size, out=work)
    target = flat(out)
    if plan.cast:
        dev.launch("cast", work, dtype=plan.dtype, out=target)
    else:
        target = retype(target, plan.compute) if plan.view else target
        if target.allocation is not work.allocation or target.byte_offset != work.byte_offset:
            dev.copy(target, work)


def _compute_view(a: Array, plan: ReducePlan) -> Array:
    """``a`` flat, its bytes seen in the plan's compute dtype (bool as uint8; no cast plans)."""
    f = flat(a)
    return retype(f, plan.compute) if plan.view else f


def _describe(plan: ReducePlan, shape: tuple[int, ...]) -> str:
    return f"all_reduce({plan.op.value}, {dt.dtype_name(plan.dtype)}{shape})"


# ---------------------------------------------------------------------- all_reduce
def lean_all_reduce(comm: Communicator, x: Array, op: Any, out: Any, timeout: float | None) -> bool:
    """The small-message path: one host-resident device per rank, no cast, nothing pending.

    MPI reads and writes the arrays' host memory directly; returns False (doing nothing) when
    any condition does not hold, and the general path runs instead. Every step here is on the
    8-byte latency path, so the plan is cached and the description is built only for errors.
    """
    dev = comm.devices[0]
    if x.device is not dev or (out is not None and (type(out) is not Array or out.device is not dev
                                                    or out.shape != x.shape or out.dtype != x.dtype)):
        return False
    pending = comm._pending
    if (pending is not None and not pending.done()) or dev.tracer is not None:
        return False
    plan = comm._plans.get((op, x.dtype)) if type(op) is str else None
    if plan is None:
        plan = plan_reduction(op, x.dtype)
        if type(op) is str:
            comm._plans[(op, x.dtype)] = plan
    if plan.cast or plan.scale:
        return False
    recv = host_view(x if out is None else out)
    send = None if out is None or out is x else host_view(x)
    if recv is None or not recv.flags.c_contiguous or (out is not None and out is not x and
                                                      (send is None or not send.flags.c_contiguous)):
        comm._lean = recv is not None  # not host memory: never try again on this communicator
        return False
    if plan.view:
        recv = recv.view(plan.compute)
        send = None if send is None else send.view(plan.compute)

    def describe() -> str:
        return _describe(plan, x.shape)

    sync = None if type(dev)._synchronize is Device._synchronize else dev.synchronize
    if sync is not None:
        sync()
    deadline = time.perf_counter() + (comm.timeout if timeout is None else float(timeout))
    inter = comm.inter
    if recv.nbytes < GATED_FROM_BYTES and not comm.deterministic:
        comm._lean_last = LeanCall(x, out, op, send, recv, plan.kernel, inter.all_reduce_small, describe, sync)
        inter.all_reduce_small(send, recv, plan.kernel, deadline, describe)
    else:
        what = describe()
        inter.begin(what)
        inter.all_reduce(send, recv, plan.kernel, deterministic=comm.deterministic, deadline=deadline, what=what)
        inter.end(what)
    comm.last_algorithm = "mpi"
    return True


def all_reduce(comm: Communicator, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None,
               async_op: bool = False, timeout: float | None = None) -> Any:
    """See :meth:`Communicator.all_reduce` (the general path)."""
    xs = comm._arrays(x, "all_reduce")
    outs = comm._arrays(out, "all_reduce", name="out") if out is not None else xs
    plan = plan_reduction(op, xs[0].dtype)
    what = _describe(plan, xs[0].shape)

    def body(inter: Any, deadline: float) -> ArrayArg:
        _all_reduce(comm, inter, xs, outs, plan, deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("all_reduce", what, body, (*xs, *outs), async_op, timeout)


def _all_reduce(comm: Communicator, inter: Any, xs: list[Array], outs: list[Array], plan: ReducePlan,
                deadline: float, what: str) -> None:
    if inter is not None and comm._one_device_per_rank and not plan.cast and not plan.scale:
        if comm._device_all_reduce is not None and _device_reduce(
                comm, None if outs[0] is xs[0] else _compute_view(xs[0], plan), _compute_view(outs[0], plan),
                plan, deadline, what):
            return
        # One device on every rank: MPI reads the input and writes the output directly.
        send = HostStage(flat(xs[0])) if outs[0] is not xs[0] else None
        recv = HostStage(flat(outs[0]), load=send is None)
        s = None if send is None else (send.array.view(plan.compute) if plan.view else send.array)
        r = recv.array.view(plan.compute) if plan.view else recv.array
        comm._sync(deadline, what)
        inter.all_reduce(s, r, plan.kernel, deterministic=comm.deterministic, deadline=deadline, what=what)
        recv.store()
        comm.last_algorithm = "mpi"
        return
    # In place, the work buffers are the inputs themselves (unless widened to float32).
    work = [_work(a, plan, copy=o is not a) for a, o in zip(xs, outs, strict=False)]
    if inter is None:
        comm.last_algorithm = comm.intra.all_reduce(work, plan.kernel, algorithm=comm.algorithm,
                                                    deterministic=comm.deterministic)
    elif not (comm._one_device_per_rank and _device_reduce(comm, None, work[0], plan, deadline, what)):
        _hierarchical(comm, inter, work, plan, deadline, what)
    comm._sync(deadline, what)
    for w, o in zip(work, outs, strict=False):
        _finish(comm, w, o, plan)
    comm._sync(deadline, what)


def _device_reduce(comm: Communicator, send: Array | None, recv: Array, plan: ReducePlan, deadline: float,
                   what: str) -> bool:
    """The inter transport's device all-reduce of ``send`` (None: in place) into ``recv`` (both flat, in
    the compute dtype), waited for; False (nothing done) when there is none, in deterministic mode (a
    vendor library does not fix its reduction order), or when it declines these arrays."""
    run = comm._device_all_reduce
    if run is None or comm.deterministic:
        return False
    name = run(send, recv, plan.kernel, deadline=deadline, what=what)
    if not name:
        return False
    comm._sync(deadline, what)
    comm.last_algorithm = name
    return True


def _hierarchical(comm: Communicator, inter: Any, work: list[Array], plan: ReducePlan, deadline: float,
                  what: str) -> None:
    n = work[0].size
    local = alg.even_bounds(n, comm.local_size)
    comm.intra.reduce_scatter(work, local, plan.kernel, deterministic=comm.deterministic)
    cuts = sorted({b for c in comm.counts for b in alg.even_bounds(n, c)})
    stages: list[HostStage] = []
    owner = 0
    for a, b in itertools.pairwise(cuts):
        if a == b:
            continue
        while not local[owner] <= a < local[owner + 1]:
            owner += 1
        stages.append(HostStage(segment(work[owner], a, b)))
    comm._sync(deadline, what)
    inter.all_reduce_many([s.array for s in stages], plan.kernel, deterministic=comm.deterministic,
                          deadline=deadline, what=what)
    for s in stages:
        s.store()
    comm.intra.all_gather(work, local)
    comm.last_algorithm = f"hierarchical(ring x{comm.local_size}, mpi x{comm.size}, {len(stages)} shards)"


# ---------------------------------------------------------------------- reduce
def reduce(comm: Communicator, x: ArrayArg, root: int = 0, op: Any = "sum", *, out: ArrayArg | None = None,
           async_op: bool = False, timeout: float | None = None) -> Any:
    """See :meth:`Communicator.reduce`."""
    xs = comm._arrays(x, "reduce")
    outs = comm._arrays(out, "reduce", name="out") if out is not None else xs
    plan = plan_reduction(op, xs[0].dtype)
    root_rank, root_local = comm.locate(root)
    what = f"reduce({plan.op.value}, root={root})"

    def body(inter: Any, deadline: float) -> ArrayArg:
        work = [_work(a, plan, copy=True) for a in xs]
        target = root_local if comm.rank == root_rank else 0
        comm.intra.reduce(work, target, plan.kernel, deterministic=comm.deterministic)
        if inter is not None:
            comm._sync(deadline, what)
            stage = HostStage(work[target])
            recv = np.empty_like(stage.array) if comm.rank == root_rank else None
            inter.reduce(stage.array, recv, root_rank, plan.kernel, deterministic=comm.deterministic,
                         deadline=deadline, what=what)
            if recv is not None:
                stage.array[...] = recv
                stage.store()
        if comm.rank == root_rank:
            _finish(comm, work[root_local], outs[root_local], plan)
        comm._sync(deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("reduce", what, body, (*xs, *outs), async_op, timeout)


# ---------------------------------------------------------------------- reduce_scatter
def reduce_scatter(comm: Communicator, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None,
                   async_op: bool = False, timeout: float | None = None) -> Any:
    """See :meth:`Communicator.reduce_scatter`."""
    xs = comm._arrays(x, "reduce_scatter")
    plan = plan_reduction(op, xs[0].dtype)
    P = comm.world_size
    if not xs[0].shape or xs[0].shape[0] % P:
        raise ShapeError(f"reduce_scatter: the leading dimension of {xs[0].shape} must be a multiple of {P}")
    shape = (xs[0].shape[0] // P, *xs[0].shape[1:])
    if out is None:
        outs = [d.empty(shape, xs[0].dtype) for d in comm.devices]
    else:
        outs = comm._arrays(out, "reduce_scatter", name="out")
        if outs[0].shape != shape:
            raise ShapeError(f"reduce_scatter: out must have shape {shape}, got {outs[0].shape}")
    what = f"reduce_scatter({plan.op.value})"

    def body(inter: Any, deadline: float) -> ArrayArg:
        k = xs[0].size // P
        work = [_work(a, plan, copy=True) for a in xs]
        if inter is None:
            bounds = [i * k for i in range(P + 1)]
            comm.intra.reduce_scatter(work, bounds, plan.kernel, deterministic=comm.deterministic)
            for j in range(comm.local_size):
                _finish(comm, segment(work[j], j * k, (j + 1) * k), outs[j], plan)
        else:
            comm.intra.reduce(work, 0, plan.kernel, deterministic=comm.deterministic)
            comm._sync(deadline, what)
            stage = HostStage(work[0])
            mine = np.empty(comm.local_size * k, stage.array.dtype)
            inter.reduce_scatter_v(stage.array, mine, [c * k for c in comm.counts], plan.kernel,
                                   deterministic=comm.deterministic, deadline=deadline, what=what)
            for j, dev in enumerate(comm.devices):
                w = dev.asarray(mine[j * k:(j + 1) * k])
                _finish(comm, w, outs[j], plan)
        comm._sync(deadline, what)
        return comm._same_form(x, outs)

    return comm._collective("reduce_scatter", what, body, (*xs, *outs), async_op, timeout)
