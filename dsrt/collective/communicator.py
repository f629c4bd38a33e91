"""``Communicator``: collectives over devices of this process and, through MPI, other processes.

Participants are numbered globally: rank 0's devices first (in the order given), then rank 1's, and
so on; ranks may hold different numbers of devices. Every collective takes one array per local device
(a single Array when there is one), all of equal shape and dtype, and returns its results in the
same form.

Algorithms: among the devices of one process, the size/shape rule of :mod:`.algorithms`. Across
ranks, all-reduce is hierarchical: reduce-scatter within the process, an all-reduce over MPI of each
shard by the device that owns it (shard boundaries are the union of every rank's, so ranks with
different device counts still line up and no single root is involved), then all-gather within the
process. With one device per rank, an inter transport with device collectives (``device_all_reduce``,
``device_broadcast``; see :mod:`.transport`) works on the device arrays directly, e.g. HCCL for NPUs,
and ``last_algorithm`` is the name it returns; otherwise the arrays are staged through host memory for
MPI. Deterministic mode reduces every element as a fold in a fixed order: within a process in
device order, then across ranks in rank order; results are bit-identical run to run and whichever
algorithm is chosen.

Ownership: the communicator owns its duplicated MPI communicators and its worker thread for
asynchronous operations; results are written into the caller's arrays (or new arrays it returns).
Sizes are bytes, times seconds.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..array import Array
from ..device import Device
from ..errors import CollectiveError, ConfigurationError, ShapeError
from ..memory import IN_USE, in_use
from ..memory import _use_clock as use_clock
from . import algorithms as alg
from .buffers import HostStage, flat, host_view, retype, segment
from .local import synchronize_devices
from .mpi import BLOCKING_FROM_BYTES, launched_by_mpiexec, mpi_available
from .ops import ReducePlan, plan_reduction
from .transport import select_transport

__all__ = ["Communicator", "Handle"]

ArrayArg = Array | Sequence[Array]


class Handle:
    """The pending result of an asynchronous collective: :meth:`wait` returns it or raises its error."""

    def __init__(self, future: Future[Any]) -> None:
        self._future = future

    def done(self) -> bool:
        """True once the collective has finished (successfully or not)."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Any:
        """Block up to ``timeout`` seconds (``None``: until the collective's own deadline)."""
        try:
            return self._future.result(timeout)
        except TimeoutError:
            raise CollectiveError(f"asynchronous collective not finished after {timeout} s") from None

    result = wait


class Communicator:
    """A group of devices (this process) and ranks (MPI) that run collectives together.

    - ``devices``: local participants (Devices or ids); default: the runtime's default device.
    - ``mpi``: ``"auto"`` (MPI when launched by mpiexec), ``True`` (COMM_WORLD), ``False``, or an
      mpi4py communicator.
    - ``timeout``: seconds a collective may wait before raising :class:`CollectiveError`.
    - ``deterministic``: fixed reduction order (see the module docstring).
    - ``algorithm``: ``auto``, ``ring``, ``tree`` or ``recursive_doubling`` (within the process).
    - ``transport``: the name of the intra-process transport to use (default: highest priority).
    - ``inter_transport``: the name of the transport between ranks (default: highest priority
      applicable, e.g. ``"hccl-mpi"`` for NPUs; ``"mpi"`` stages every array through host memory).
    """

    def __init__(
        self,
        devices: Sequence[Device | str] | None = None,
        *,
        runtime: Any = None,
        mpi: Any = "auto",
        timeout: float = 60.0,
        deterministic: bool = False,
        algorithm: str = "auto",
        transport: str | None = None,
        inter_transport: str | None = None,
    ) -> None:
        if runtime is None:
            from ..runtime import default_runtime

            runtime = default_runtime()
        self.runtime = runtime
        devs = [runtime.device(d) for d in devices] if devices is not None else [runtime.default_device]
        if not devs:
            raise ConfigurationError("a communicator needs at least one local device")
        if len({id(d) for d in devs}) != len(devs):
            raise ConfigurationError(f"devices listed twice in a communicator: {[d.id for d in devs]}")
        self.devices: list[Device] = devs
        self.timeout = float(timeout)
        self.deterministic = bool(deterministic)
        alg.choose_algorithm(0, 1, algorithm)  # validates the name
        self.algorithm = algorithm
        spec = select_transport("intra", devs, runtime, transport)
        self.intra = spec.factory(devs)
        self.intra_name = spec.name
        self.inter: Any = None
        if mpi == "auto":
            mpi = launched_by_mpiexec() and mpi_available()
        if mpi is not False and mpi is not None:
            comm = None if mpi is True else mpi
            self.inter = select_transport("inter", devs, runtime, inter_transport).factory(comm)
            self.inter.timeout = self.timeout
            if hasattr(self.inter, "setup"):
                self.inter.setup(time.perf_counter() + self.timeout)
        self.rank = self.inter.rank if self.inter else 0
        self.size = self.inter.size if self.inter else 1
        self.local_size = len(devs)
        # The inter transport's device collectives, if it has them (HCCL for NPUs); kept only when
        # every rank's transport has them (agreed in _exchange_counts), so all ranks take one path.
        self._device_all_reduce: Callable[..., str | None] | None = getattr(self.inter, "device_all_reduce", None)
        self._device_broadcast: Callable[..., str | None] | None = getattr(self.inter, "device_broadcast", None)
        self.counts = self._exchange_counts()
        self.offsets = [int(x) for x in np.concatenate(([0], np.cumsum(self.counts)[:-1]))]
        self.world_size = int(sum(self.counts))
        self._one_device_per_rank = max(self.counts) == 1
        self._lean = self._one_device_per_rank and self.size > 1
        # The inter transport's latency path for small all-reduces, if it has one (MPI does).
        self._small_all_reduce: Callable[..., None] | None = getattr(self.inter, "all_reduce_small", None)
        self._plans: dict[tuple[str, np.dtype], ReducePlan] = {}
        self._lean_last: _LeanCall | None = None
        self.last_algorithm = ""
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Any] | None = None
        self._lock = threading.Lock()
        self._mailbox: dict[tuple[int, int, int], Array] = {}

    # ------------------------------------------------------------------ setup helpers
    def _exchange_counts(self) -> list[int]:
        """Every rank's device count; also drops the device collectives unless every rank has them."""
        if self.inter is None or self.size == 1:
            return [self.local_size]
        mine = np.array([self.local_size, self._device_all_reduce is not None, self._device_broadcast is not None],
                        np.int64)
        table = np.zeros((self.size, 3), np.int64)
        self.inter.begin("communicator setup")
        req = self.inter.comm.Iallgather(mine, table)
        self.inter.wait([req], time.perf_counter() + self.timeout, "communicator setup")
        if not table[:, 1].all():
            self._device_all_reduce = None
        if not table[:, 2].all():
            self._device_broadcast = None
        return [int(c) for c in table[:, 0]]

    def locate(self, participant: int) -> tuple[int, int]:
        """``(rank, local index)`` of global participant ``participant``."""
        if not 0 <= participant < self.world_size:
            raise ConfigurationError(f"participant {participant} out of range: the group has {self.world_size}")
        for r in range(self.size - 1, -1, -1):
            if participant >= self.offsets[r]:
                return r, participant - self.offsets[r]
        raise AssertionError("unreachable")

    def participant(self, local: int = 0) -> int:
        """The global index of this process's ``local``-th device."""
        return self.offsets[self.rank] + local

    def _arrays(self, x: ArrayArg, what: str, *, name: str = "input") -> list[Array]:
        xs = [x] if isinstance(x, Array) else list(x)
        if len(xs) != self.local_size:
            raise ShapeError(f"{what}: expected {self.local_size} {name} array(s), one per local device, got {len(xs)}")
        first = xs[0]
        for i, (a, dev) in enumerate(zip(xs, self.devices, strict=False)):
            if a.device is not dev:
                raise ShapeError(f"{what}: {name} {i} lives on {a.device.id}, expected {dev.id}")
            if a.shape != first.shape or a.dtype != first.dtype:
                raise ShapeError(
                    f"{what}: {name} {i} is {dt.dtype_name(a.dtype)}{a.shape}, "
                    f"{name} 0 is {dt.dtype_name(first.dtype)}{first.shape}"
                )
            if not a.is_contiguous:
                raise ShapeError(f"{what}: {name} {i} on {a.device.id} is not contiguous")
        return xs

    @staticmethod
    def _same_form(template: ArrayArg, arrays: list[Array]) -> ArrayArg:
        return arrays[0] if isinstance(template, Array) else arrays

    def _deadline(self, timeout: float | None) -> float:
        return time.perf_counter() + (self.timeout if timeout is None else float(timeout))

    def _sync(self, deadline: float, what: str) -> None:
        synchronize_devices(self.devices, deadline, what)

    # ------------------------------------------------------------------ async plumbing
    def _call(self, fn: Callable[[], Any], async_op: bool, held: tuple[Array, ...] = ()) -> Any:
        """Run ``fn`` now, or on the collective thread if ``async_op``, with ``held`` listed in
        :data:`dsrt.memory.IN_USE` while it runs (no pool moves or spills them under the transport)."""
        if held:
            inner = fn

            def fn() -> Any:
                with in_use(held):
                    return inner()

        with self._lock:
            pending = self._pending
            if async_op:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsrt-collective")
                fut = self._executor.submit(fn)
                self._pending = fut
                return Handle(fut)
        if pending is not None and not pending.done():
            # Keep every rank's sequence of collectives in program order.
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - the handle's owner sees that error
                pass
        return fn()

    # ------------------------------------------------------------------ reduction helpers
    def _work(self, src: Array, plan: ReducePlan, *, copy: bool) -> Array:
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

    def _finish(self, work: Array, out: Array, plan: ReducePlan) -> None:
        """Scale (avg) and round back (low precision) from ``work`` into ``out`` (same elements)."""
        dev = work.device
        if plan.scale:
            dev.launch("scale", work, alpha=1.0 / self.world_size, out=work)
        target = flat(out)
        if plan.cast:
            dev.launch("cast", work, dtype=plan.dtype, out=target)
        else:
            target = retype(target, plan.compute) if plan.view else target
            if target._alloc is not work._alloc or target._byte_offset != work._byte_offset:
                dev.copy(target, work)

    def _host_bytes(self, arr: Array, *, load: bool = True) -> HostStage:
        return HostStage(flat(arr), load=load)

    # ------------------------------------------------------------------ all_reduce
    def all_reduce(self, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Every participant gets the reduction of all inputs; in place unless ``out`` is given."""
        if not async_op and self._lean and type(x) is Array:
            last = self._lean_last
            if (last is not None and last.x is x and last.out is out and last.op == op
                    and x._alloc.generation == last.x_gen and (out is None or out._alloc.generation == last.out_gen)
                    and (self._pending is None or self._pending.done())):
                # The same arrays as last time, not moved since: only the MPI call is left to do.
                x._alloc.last_use = next(use_clock)
                if last.sync is not None:
                    last.sync()
                deadline = time.perf_counter() + (self.timeout if timeout is None else float(timeout))
                # MPI reads and writes the arrays' bytes: no pool may move them meanwhile.
                IN_USE[last.key] = last.held
                try:
                    last.run(last.send, last.recv, last.kernel, deadline, last.describe)
                finally:
                    del IN_USE[last.key]
                return x if out is None else out
            with in_use((x,) if out is None else (x, out)):
                done = self._lean_all_reduce(x, op, out, timeout)
            if done:
                return x if out is None else out
        xs = self._arrays(x, "all_reduce")
        outs = self._arrays(out, "all_reduce", name="out") if out is not None else xs
        plan = plan_reduction(op, xs[0].dtype)

        def run() -> ArrayArg:
            self._all_reduce(xs, outs, plan, self._deadline(timeout))
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    def _lean_all_reduce(self, x: Array, op: Any, out: Any, timeout: float | None) -> bool:
        """The small-message path: one host-resident device per rank, no cast, nothing pending.

        MPI reads and writes the arrays' host memory directly; returns False (doing nothing) when
        any condition does not hold, and the general path runs instead. Every step here is on the
        8-byte latency path, so the plan is cached and the description is built only for errors.
        """
        dev = self.devices[0]
        if x.device is not dev or (out is not None and (type(out) is not Array or out.device is not dev
                                                        or out.shape != x.shape or out.dtype != x.dtype)):
            return False
        pending = self._pending
        if pending is not None and not pending.done():
            return False
        plan = self._plans.get((op, x.dtype)) if type(op) is str else None
        if plan is None:
            plan = plan_reduction(op, x.dtype)
            if type(op) is str:
                self._plans[(op, x.dtype)] = plan
        if plan.cast or plan.scale:
            return False
        recv = host_view(x if out is None else out)
        send = None if out is None or out is x else host_view(x)
        if recv is None or not recv.flags.c_contiguous or (out is not None and out is not x and
                                                          (send is None or not send.flags.c_contiguous)):
            self._lean = recv is not None  # not host memory: never try again on this communicator
            return False
        if plan.view:
            recv = recv.view(plan.compute)
            send = None if send is None else send.view(plan.compute)

        def describe() -> str:
            return f"all_reduce({plan.op.value}, {dt.dtype_name(plan.dtype)}{x.shape})"

        sync = None if type(dev)._synchronize is Device._synchronize else dev.synchronize
        if sync is not None:
            sync()
        deadline = time.perf_counter() + (self.timeout if timeout is None else float(timeout))
        small = self._small_all_reduce
        if small is not None and recv.nbytes < BLOCKING_FROM_BYTES and not self.deterministic:
            self._lean_last = _LeanCall(x, out, op, send, recv, plan.kernel, small, describe, sync)
            small(send, recv, plan.kernel, deadline, describe)
        else:
            what = describe()
            self.inter.begin(what)
            self.inter.all_reduce(send, recv, plan.kernel, deterministic=self.deterministic, deadline=deadline,
                                  what=what)
        self.last_algorithm = "mpi"
        return True

    def _all_reduce(self, xs: list[Array], outs: list[Array], plan: ReducePlan, deadline: float) -> None:
        what = f"all_reduce({plan.op.value}, {dt.dtype_name(plan.dtype)}{xs[0].shape})"
        inter = self.inter if self.size > 1 else None
        if inter is not None:
            inter.begin(what)
        if inter is not None and self._one_device_per_rank and not plan.cast and not plan.scale:
            if self._device_all_reduce is not None and self._device_reduce(
                    None if outs[0] is xs[0] else self._compute_view(xs[0], plan), self._compute_view(outs[0], plan),
                    plan, deadline, what):
                return
            # One device on every rank: MPI reads the input and writes the output directly.
            send = self._host_bytes(xs[0]) if outs[0] is not xs[0] else None
            recv = self._host_bytes(outs[0], load=send is None)
            s = None if send is None else (send.array.view(plan.compute) if plan.view else send.array)
            r = recv.array.view(plan.compute) if plan.view else recv.array
            self._sync(deadline, what)
            inter.all_reduce(s, r, plan.kernel, deterministic=self.deterministic, deadline=deadline, what=what)
            recv.store()
            self.last_algorithm = "mpi"
            return
        # In place, the work buffers are the inputs themselves (unless widened to float32).
        work = [self._work(a, plan, copy=o is not a) for a, o in zip(xs, outs, strict=False)]
        if inter is None:
            self.last_algorithm = self.intra.all_reduce(work, plan.kernel, algorithm=self.algorithm,
                                                        deterministic=self.deterministic)
        elif not (self._one_device_per_rank and self._device_reduce(None, work[0], plan, deadline, what)):
            self._hierarchical(work, plan, deadline, what)
        self._sync(deadline, what)
        for w, o in zip(work, outs, strict=False):
            self._finish(w, o, plan)
        self._sync(deadline, what)

    @staticmethod
    def _compute_view(a: Array, plan: ReducePlan) -> Array:
        """``a`` flat, its bytes seen in the plan's compute dtype (bool as uint8; no cast plans)."""
        f = flat(a)
        return retype(f, plan.compute) if plan.view else f

    def _device_reduce(self, send: Array | None, recv: Array, plan: ReducePlan, deadline: float, what: str) -> bool:
        """The inter transport's device all-reduce of ``send`` (None: in place) into ``recv`` (both flat, in
        the compute dtype), waited for; False (nothing done) when there is none, in deterministic mode (a
        vendor library does not fix its reduction order), or when it declines these arrays."""
        run = self._device_all_reduce
        if run is None or self.deterministic:
            return False
        name = run(send, recv, plan.kernel, deadline=deadline, what=what)
        if not name:
            return False
        self._sync(deadline, what)
        self.last_algorithm = name
        return True

    def _hierarchical(self, work: list[Array], plan: ReducePlan, deadline: float, what: str) -> None:
        n = work[0].size
        local = alg.even_bounds(n, self.local_size)
        self.intra.reduce_scatter(work, local, plan.kernel, deterministic=self.deterministic)
        cuts = sorted({b for c in self.counts for b in alg.even_bounds(n, c)})
        stages: list[tuple[HostStage, Array]] = []
        owner = 0
        for a, b in itertools.pairwise(cuts):
            if a == b:
                continue
            while not local[owner] <= a < local[owner + 1]:
                owner += 1
            seg = segment(work[owner], a, b)
            stages.append((HostStage(seg), seg))
        self._sync(deadline, what)
        self.inter.all_reduce_many([s.array for s, _ in stages], plan.kernel, deterministic=self.deterministic,
                                   deadline=deadline, what=what)
        for s, _ in stages:
            s.store()
        self.intra.all_gather(work, local)
        self.last_algorithm = f"hierarchical(ring x{self.local_size}, mpi x{self.size}, {len(stages)} shards)"

    # ------------------------------------------------------------------ reduce
    def reduce(self, x: ArrayArg, root: int = 0, op: Any = "sum", *, out: ArrayArg | None = None,
               async_op: bool = False, timeout: float | None = None) -> Any:
        """Participant ``root`` gets the reduction of all inputs (in its input, or ``out``); the other
        participants' arrays are left unchanged."""
        xs = self._arrays(x, "reduce")
        outs = self._arrays(out, "reduce", name="out") if out is not None else xs
        plan = plan_reduction(op, xs[0].dtype)
        root_rank, root_local = self.locate(root)

        def run() -> ArrayArg:
            what = f"reduce({plan.op.value}, root={root})"
            deadline = self._deadline(timeout)
            inter = self.inter if self.size > 1 else None
            if inter is not None:
                inter.begin(what)
            work = [self._work(a, plan, copy=True) for a in xs]
            target = root_local if self.rank == root_rank else 0
            self.intra.reduce(work, target, plan.kernel, deterministic=self.deterministic)
            if inter is not None:
                self._sync(deadline, what)
                stage = HostStage(work[target])
                recv = np.empty_like(stage.array) if self.rank == root_rank else None
                inter.reduce(stage.array, recv, root_rank, plan.kernel, deterministic=self.deterministic,
                             deadline=deadline, what=what)
                if recv is not None:
                    stage.array[...] = recv
                    stage.store()
            if self.rank == root_rank:
                self._finish(work[root_local], outs[root_local], plan)
            self._sync(deadline, what)
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    # ------------------------------------------------------------------ broadcast
    def broadcast(self, x: ArrayArg, root: int = 0, *, out: ArrayArg | None = None, async_op: bool = False,
                  timeout: float | None = None) -> Any:
        """Every participant gets participant ``root``'s array (in its input, or ``out``)."""
        xs = self._arrays(x, "broadcast")
        outs = self._arrays(out, "broadcast", name="out") if out is not None else xs
        root_rank, root_local = self.locate(root)

        def run() -> ArrayArg:
            what = f"broadcast(root={root})"
            deadline = self._deadline(timeout)
            bufs = [flat(o) for o in outs]
            src = root_local if self.rank == root_rank else 0
            if self.rank == root_rank and outs[root_local] is not xs[root_local]:
                self.intra.copy(bufs[root_local], flat(xs[root_local]))
            inter = self.inter if self.size > 1 else None
            if inter is not None:
                inter.begin(what)
                on_device = self._device_broadcast if self._one_device_per_rank else None
                if on_device is None or not on_device(bufs[0], root_rank, deadline=deadline, what=what):
                    self._sync(deadline, what)
                    stage = HostStage(bufs[src], load=self.rank == root_rank)
                    inter.broadcast(stage.array.view(np.uint8), root_rank, deadline=deadline, what=what)
                    stage.store()
            self.intra.broadcast(bufs, src)
            self._sync(deadline, what)
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    # ------------------------------------------------------------------ all_gather
    def all_gather(self, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Every participant gets ``stack([x_0, ..., x_{P-1}])`` of shape ``(P, *x.shape)``."""
        xs = self._arrays(x, "all_gather")
        shape = (self.world_size, *xs[0].shape)
        if out is None:
            outs = [d.empty(shape, xs[0].dtype) for d in self.devices]
        else:
            outs = self._arrays(out, "all_gather", name="out")
            if outs[0].shape != shape or outs[0].dtype != xs[0].dtype:
                raise ShapeError(f"all_gather: out must be {dt.dtype_name(xs[0].dtype)}{shape}, got "
                                 f"{dt.dtype_name(outs[0].dtype)}{outs[0].shape}")

        def run() -> ArrayArg:
            what = "all_gather"
            deadline = self._deadline(timeout)
            n = xs[0].size
            bufs = [flat(o) for o in outs]
            base = self.offsets[self.rank]
            for j, a in enumerate(xs):
                self.intra.copy(segment(bufs[0], (base + j) * n, (base + j + 1) * n), flat(a))
            inter = self.inter if self.size > 1 else None
            if inter is not None:
                inter.begin(what)
                self._sync(deadline, what)
                stage = HostStage(bufs[0])
                allb = stage.array.view(np.uint8)
                item = xs[0].dtype.itemsize
                mine = allb[base * n * item:(base + self.local_size) * n * item].copy()
                inter.all_gather_v(mine, allb, [c * n * item for c in self.counts], deadline=deadline, what=what)
                stage.store()
            for b in bufs[1:]:
                self.intra.copy(b, bufs[0])
            self._sync(deadline, what)
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    # ------------------------------------------------------------------ reduce_scatter
    def reduce_scatter(self, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None, async_op: bool = False,
                       timeout: float | None = None) -> Any:
        """Participant p gets block p of the reduction; inputs have a leading dimension of ``P * k``
        and outputs shape ``(k, *x.shape[1:])``."""
        xs = self._arrays(x, "reduce_scatter")
        plan = plan_reduction(op, xs[0].dtype)
        P = self.world_size
        if not xs[0].shape or xs[0].shape[0] % P:
            raise ShapeError(f"reduce_scatter: the leading dimension of {xs[0].shape} must be a multiple of {P}")
        shape = (xs[0].shape[0] // P, *xs[0].shape[1:])
        if out is None:
            outs = [d.empty(shape, xs[0].dtype) for d in self.devices]
        else:
            outs = self._arrays(out, "reduce_scatter", name="out")
            if outs[0].shape != shape:
                raise ShapeError(f"reduce_scatter: out must have shape {shape}, got {outs[0].shape}")

        def run() -> ArrayArg:
            what = f"reduce_scatter({plan.op.value})"
            deadline = self._deadline(timeout)
            k = xs[0].size // P
            work = [self._work(a, plan, copy=True) for a in xs]
            inter = self.inter if self.size > 1 else None
            if inter is None:
                bounds = [i * k for i in range(P + 1)]
                self.intra.reduce_scatter(work, bounds, plan.kernel, deterministic=self.deterministic)
                for j in range(self.local_size):
                    self._finish(segment(work[j], j * k, (j + 1) * k), outs[j], plan)
            else:
                inter.begin(what)
                self.intra.reduce(work, 0, plan.kernel, deterministic=self.deterministic)
                self._sync(deadline, what)
                stage = HostStage(work[0])
                mine = np.empty(self.local_size * k, stage.array.dtype)
                inter.reduce_scatter_v(stage.array, mine, [c * k for c in self.counts], plan.kernel,
                                       deterministic=self.deterministic, deadline=deadline, what=what)
                for j, dev in enumerate(self.devices):
                    w = dev.asarray(mine[j * k:(j + 1) * k])
                    self._finish(w, outs[j], plan)
            self._sync(deadline, what)
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    # ------------------------------------------------------------------ all_to_all
    def all_to_all(self, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Block ``q`` of participant ``p``'s input becomes block ``p`` of participant ``q``'s output;
        inputs and outputs have a leading dimension of ``P`` blocks."""
        xs = self._arrays(x, "all_to_all")
        P = self.world_size
        if not xs[0].shape or xs[0].shape[0] != P:
            raise ShapeError(f"all_to_all: inputs need a leading dimension of {P} blocks, got {xs[0].shape}")
        outs = [d.empty(xs[0].shape, xs[0].dtype) for d in self.devices] if out is None else \
            self._arrays(out, "all_to_all", name="out")

        def run() -> ArrayArg:
            what = "all_to_all"
            deadline = self._deadline(timeout)
            k = xs[0].size // P
            fx = [flat(a) for a in xs]
            fo = [flat(o) for o in outs]
            base = self.offsets[self.rank]
            L = self.local_size
            for i in range(L):
                for j in range(L):
                    self.intra.copy(segment(fo[j], (base + i) * k, (base + i + 1) * k),
                                    segment(fx[i], (base + j) * k, (base + j + 1) * k))
            inter = self.inter if self.size > 1 else None
            if inter is not None:
                inter.begin(what)
                self._sync(deadline, what)
                item = xs[0].dtype.itemsize
                hx = [HostStage(a).array.view(np.uint8).reshape(P, k * item) for a in fx]
                send_parts: list[np.ndarray] = []
                send_counts: list[int] = []
                recv_counts: list[int] = []
                for s in range(self.size):
                    off, cnt = self.offsets[s], self.counts[s]
                    send_parts.extend(hx[i][off:off + cnt] for i in range(L))
                    send_counts.append(L * cnt * k * item)
                    recv_counts.append(cnt * L * k * item)
                send = np.concatenate([p.reshape(-1) for p in send_parts]) if send_parts else np.empty(0, np.uint8)
                recv = np.empty(sum(recv_counts), np.uint8)
                inter.all_to_all_v(send, send_counts, recv, recv_counts, deadline=deadline, what=what)
                stages = [HostStage(o) for o in fo]
                ho = [s.array.view(np.uint8).reshape(P, k * item) for s in stages]
                pos = 0
                for s in range(self.size):
                    cnt = self.counts[s]
                    block = recv[pos:pos + cnt * L * k * item].reshape(cnt, L, k * item)
                    pos += cnt * L * k * item
                    if s == self.rank:
                        continue
                    for j in range(L):
                        ho[j][self.offsets[s]:self.offsets[s] + cnt] = block[:, j]
                for st in stages:
                    st.store()
            self._sync(deadline, what)
            return self._same_form(x, outs)

        return self._call(run, async_op, (*xs, *outs))

    # ------------------------------------------------------------------ barrier, point to point
    def barrier(self, *, async_op: bool = False, timeout: float | None = None) -> Any:
        """Return once every device has finished its queued work and every rank got here."""

        def run() -> None:
            deadline = self._deadline(timeout)
            self._sync(deadline, "barrier")
            if self.inter is not None and self.size > 1:
                self.inter.begin("barrier")
                self.inter.barrier(deadline=deadline, what="barrier")

        return self._call(run, async_op)

    def _p2p_tag(self, tag: int, src_local: int, dst_local: int) -> int:
        if not 0 <= tag < 1 << 16:
            raise ConfigurationError(f"point-to-point tag {tag} out of range [0, 65536)")
        return (tag << 12) | (src_local << 6) | dst_local

    def _local_index(self, arr: Array, what: str) -> int:
        for i, d in enumerate(self.devices):
            if arr.device is d:
                return i
        raise ShapeError(f"{what}: array on {arr.device.id} is not on a device of this communicator")

    def send(self, x: Array, dst: int, *, tag: int = 0, timeout: float | None = None) -> None:
        """Send ``x`` (on one of this process's devices) to global participant ``dst``."""
        me = self._local_index(x, "send")
        dst_rank, dst_local = self.locate(dst)
        if dst_rank == self.rank:
            copy = x.device.empty(x.shape, x.dtype)
            self.intra.copy(copy, x)
            self._mailbox[(me, dst_local, tag)] = copy
            return
        deadline = self._deadline(timeout)
        self._sync(deadline, "send")
        with in_use((x,)):
            stage = HostStage(flat(x))
            self.inter.send(stage.array.view(np.uint8), dst_rank, self._p2p_tag(tag, me, dst_local),
                            deadline=deadline, what=f"send to participant {dst}")

    def recv(self, x: Array, src: int, *, tag: int = 0, timeout: float | None = None) -> Array:
        """Receive into ``x`` (on one of this process's devices) from global participant ``src``."""
        me = self._local_index(x, "recv")
        src_rank, src_local = self.locate(src)
        deadline = self._deadline(timeout)
        if src_rank == self.rank:
            key = (src_local, me, tag)
            got = self._mailbox.pop(key, None)
            if got is None:
                raise CollectiveError(
                    f"recv from participant {src} ({self.devices[src_local].id}, tag {tag}): nothing was sent;"
                    " in one process the send must come first", missing=[self.devices[src_local].id])
            if got.shape != x.shape or got.dtype != x.dtype:
                raise ShapeError(f"recv: sent {got.dtype}{got.shape}, receiving into {x.dtype}{x.shape}")
            self.intra.copy(x, got)
            return x
        with in_use((x,)):
            stage = HostStage(flat(x), load=False)
            self.inter.recv(stage.array.view(np.uint8), src_rank, self._p2p_tag(tag, src_local, me),
                            deadline=deadline, what=f"recv from participant {src} (rank {src_rank})")
            stage.store()
        return x

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Finish pending asynchronous work and free the transports' resources (MPI, vendor libraries)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        intra_close = getattr(self.intra, "close", None)
        if intra_close is not None:
            intra_close()
        if self.inter is not None:
            self.inter.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Communicator rank {self.rank}/{self.size} devices={[d.id for d in self.devices]} "
                f"participants={self.world_size}>")


class _LeanCall:
    """The prepared small all-reduce of one (input, output, op): host views, kernel, MPI entry point.

    Valid while both arrays' allocations keep the generations recorded here (a spill or move bumps
    them); owned by the communicator, which keeps only the latest one.
    """

    __slots__ = ("x", "out", "op", "x_gen", "out_gen", "send", "recv", "kernel", "run", "describe", "sync", "held", "key")

    def __init__(self, x: Array, out: Array | None, op: Any, send: np.ndarray | None, recv: np.ndarray, kernel: str,
                 run: Callable[..., None], describe: Callable[[], str], sync: Callable[[], None] | None) -> None:
        self.x, self.out, self.op = x, out, op
        self.x_gen = x._alloc.generation
        self.out_gen = -1 if out is None else out._alloc.generation
        self.send, self.recv, self.kernel = send, recv, kernel
        self.run, self.describe, self.sync = run, describe, sync
        self.held = (x,) if out is None else (x, out)  # what IN_USE lists while the call runs
        self.key = id(self)
