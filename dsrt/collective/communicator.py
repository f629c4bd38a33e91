"""``Communicator``: collectives over devices of this process and, through MPI, other processes.

Participants are numbered globally: rank 0's devices first (in the order given), then rank 1's, and
so on; ranks may hold different numbers of devices. Every collective takes one array per local device
(a single Array when there is one), all of equal shape and dtype, and returns its results in the
same form.

This module is the dispatcher: set-up, argument checks, and the one skeleton every collective runs
in (:meth:`Communicator._collective`): register the operands in use (no pool moves them while a
transport reads their bytes), count the collective on the inter transport (``begin``), run the
collective's body against its deadline, agree on the outcome (``end``: fails the collective if
another rank gave up on it; see :mod:`.mpi`), apply ``on_timeout``, and record a trace event. The
bodies live in one module per family: :mod:`.reductions` (all_reduce, reduce, reduce_scatter),
:mod:`.movement` (broadcast, all_gather, all_to_all), :mod:`.pointtopoint` (barrier, send, recv).

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

Failures: a collective raises :class:`~dsrt.errors.CollectiveError` by its deadline, on every rank
(the ranks agree; see :mod:`.mpi`), and the communicator is unusable afterwards. ``on_timeout="abort"``
then prints one line on stderr naming the missing ranks and ends the whole job with ``MPI_Abort``.

Ownership: the communicator owns its duplicated MPI communicators and its worker thread for
asynchronous operations; results are written into the caller's arrays (or new arrays it returns).
Sizes are bytes, times seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

import dsrt.collective.algorithms as alg
import dsrt.collective.movement as movement
import dsrt.collective.pointtopoint as pointtopoint
import dsrt.collective.reductions as reductions
import dsrt.dtypes as dt

from ..array import Array
from ..context import default_runtime
from ..device import Device
from ..errors import CollectiveError, ConfigurationError, ShapeError
from ..memory import IN_USE, in_use
from ..memory import _use_clock as use_clock
from ..memory.in_use import settle
from .base import InterTransport, IntraTransport
from .local import synchronize_devices
from .mpi import launched_by_mpiexec, mpi_available
from .ops import ReducePlan
from .transport import select_transport

__all__ = ["Communicator", "Handle", "ON_TIMEOUT"]

ArrayArg = Array | Sequence[Array]

#: What a communicator does after a collective failed across ranks: raise the CollectiveError, or
#: name the missing ranks on stderr and end the job with MPI_Abort.
ON_TIMEOUT = ("raise", "abort")

#: Operands of collectives given up on, listed in IN_USE for the life of the process (see ``_failed``).
_PINNED: list[tuple[Array, ...]] = []


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
    - ``on_timeout``: ``"raise"`` (default) or ``"abort"``: after a collective failed across ranks,
      print one line on stderr naming the missing ranks and end the whole job (``MPI_Abort``).
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
        on_timeout: str = "raise",
        deterministic: bool = False,
        algorithm: str = "auto",
        transport: str | None = None,
        inter_transport: str | None = None,
    ) -> None:
        if runtime is None:
            runtime = default_runtime()
        self.runtime = runtime
        devs = [runtime.device(d) for d in devices] if devices is not None else [runtime.default_device]
        if not devs:
            raise ConfigurationError("a communicator needs at least one local device")
        if len({id(d) for d in devs}) != len(devs):
            raise ConfigurationError(f"devices listed twice in a communicator: {[d.id for d in devs]}")
        if on_timeout not in ON_TIMEOUT:
            raise ConfigurationError(f"on_timeout={on_timeout!r}: expected one of {', '.join(ON_TIMEOUT)}")
        self.devices: list[Device] = devs
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        self.deterministic = bool(deterministic)
        alg.choose_algorithm(0, 1, algorithm)  # validates the name
        self.algorithm = algorithm
        spec = select_transport("intra", devs, runtime, transport)
        intra = spec.factory(devs)
        if not isinstance(intra, IntraTransport):
            raise ConfigurationError(f"intra transport '{spec.name}' built {type(intra).__name__}, which is not a "
                                     "dsrt.collective.IntraTransport")
        self.intra: IntraTransport = intra
        self.intra_name = spec.name
        self.inter: Any = None
        if mpi == "auto":
            mpi = launched_by_mpiexec() and mpi_available()
        if mpi is not False and mpi is not None:
            comm = None if mpi is True else mpi
            ispec = select_transport("inter", devs, runtime, inter_transport)
            inter = ispec.factory(comm)
            if not isinstance(inter, InterTransport):
                raise ConfigurationError(f"inter transport '{ispec.name}' built {type(inter).__name__}, which is "
                                         "not a dsrt.collective.InterTransport")
            self.inter = inter
            inter.timeout = self.timeout
            inter.setup(time.perf_counter() + self.timeout)
        self.rank = self.inter.rank if self.inter else 0
        self.size = self.inter.size if self.inter else 1
        self.local_size = len(devs)
        # The inter transport's device collectives (HCCL for NPUs), kept only when every rank's
        # transport offers them (agreed in _exchange_counts), so all ranks take one path.
        offers = self.inter.offers() if self.inter is not None else (False, False)
        self._device_all_reduce: Callable[..., str | None] | None = self.inter.device_all_reduce if offers[0] else None
        self._device_broadcast: Callable[..., str | None] | None = self.inter.device_broadcast if offers[1] else None
        self.counts = self._exchange_counts()
        self.offsets = [int(x) for x in np.concatenate(([0], np.cumsum(self.counts)[:-1]))]
        self.world_size = int(sum(self.counts))
        self._one_device_per_rank = max(self.counts) == 1
        self._lean = self._one_device_per_rank and self.size > 1
        self._plans: dict[tuple[str, np.dtype], ReducePlan] = {}
        self._lean_last: reductions.LeanCall | None = None
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
        what = "communicator setup"
        self.inter.begin(what)
        try:
            self.inter.all_gather_small(mine, table, deadline=time.perf_counter() + self.timeout, what=what)
            self.inter.end(what)
        except CollectiveError as exc:
            self._failed(exc)
            raise
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

    # ------------------------------------------------------------------ the skeleton
    def _collective(self, name: str, what: str, body: Callable[[Any, float], Any], held: Sequence[Array],
                    async_op: bool, timeout: float | None, *, across: bool = True) -> Any:
        """Run one collective whose arguments are already checked: ``body(inter, deadline)`` with
        ``held`` registered in use, between the inter transport's ``begin`` and ``end`` (``inter``
        is ``None`` within one process, or when not ``across``), failures handed to ``on_timeout``,
        a trace event recorded; on the collective thread when ``async_op``."""
        inter = self.inter if across and self.size > 1 else None

        def run() -> Any:
            deadline = self._deadline(timeout)
            t0 = time.perf_counter()
            with in_use(held):
                try:
                    if inter is not None:
                        inter.begin(what)
                    result = body(inter, deadline)
                    if inter is not None:
                        inter.end(what)
                except CollectiveError as exc:
                    self._failed(exc, held)
                    raise
            tracer = self.devices[0].tracer
            if tracer is not None:
                tracer.complete(name, "collective", t0, time.perf_counter(),
                                {"what": what, "rank": self.rank, "algorithm": self.last_algorithm})
            return result

        return self._call(run, async_op)

    def _failed(self, exc: CollectiveError, held: Sequence[Array] = ()) -> None:
        """After the inter transport gave up on a collective (it is broken): keep ``held`` pinned for
        the life of the process (MPI may still write their memory when a late rank comes: no pool may
        move or reuse it), and with ``on_timeout="abort"`` name the missing ranks in one line on stderr
        and end the job."""
        inter = self.inter
        if inter is None or inter.broken is None:
            return
        if held:
            pinned = tuple(held)
            _PINNED.append(pinned)
            IN_USE[id(pinned)] = pinned
        if self.on_timeout != "abort":
            return
        missing = ", ".join(str(r) for r in exc.missing) or "none"
        sys.stderr.write(f"dsrt: rank {self.rank}: aborting the job (on_timeout='abort'); missing rank(s): "
                         f"{missing}; {exc}\n")
        sys.stderr.flush()
        inter.abort(1)

    def _call(self, fn: Callable[[], Any], async_op: bool) -> Any:
        """Run ``fn`` now, or on the collective thread if ``async_op`` (returning a :class:`Handle`);
        either way after the asynchronous collective still pending, so that every rank runs its
        collectives in program order."""
        with self._lock:
            pending = self._pending
            if async_op:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsrt-collective")
                fut = self._executor.submit(fn)
                self._pending = fut
                return Handle(fut)
        if pending is not None and not pending.done():
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - the handle's owner sees that error
                pass
        return fn()

    # ------------------------------------------------------------------ collectives (dispatch)
    def all_reduce(self, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Every participant gets the reduction of all inputs; in place unless ``out`` is given."""
        if not async_op and self._lean and type(x) is Array:
            last = self._lean_last
            if (last is not None and last.x is x and last.out is out and last.op == op
                    and (self._pending is None or self._pending.done())):
                # MPI reads and writes the arrays' bytes: list them in use and let a move already under
                # way finish (settle) *before* checking that they are where the prepared call points.
                IN_USE[last.key] = last.held
                try:
                    settle(last.held)
                    if x.allocation.generation == last.x_gen and (
                            out is None or out.allocation.generation == last.out_gen):
                        # The same arrays as last time, not moved since: only the MPI call is left to do.
                        x.allocation.last_use = next(use_clock)
                        if last.sync is not None:
                            last.sync()
                        deadline = time.perf_counter() + (self.timeout if timeout is None else float(timeout))
                        try:
                            last.run(last.send, last.recv, last.kernel, deadline, last.describe)
                        except CollectiveError as exc:
                            self._failed(exc, last.held)
                            raise
                        return x if out is None else out
                finally:
                    del IN_USE[last.key]
            with in_use((x,) if out is None else (x, out)):
                try:
                    done = reductions.lean_all_reduce(self, x, op, out, timeout)
                except CollectiveError as exc:
                    self._failed(exc, (x, out) if isinstance(out, Array) else (x,))
                    raise
            if done:
                return x if out is None else out
        return reductions.all_reduce(self, x, op, out=out, async_op=async_op, timeout=timeout)

    def reduce(self, x: ArrayArg, root: int = 0, op: Any = "sum", *, out: ArrayArg | None = None,
               async_op: bool = False, timeout: float | None = None) -> Any:
        """Participant ``root`` gets the reduction of all inputs (in its input, or ``out``); the other
        participants' arrays are left unchanged."""
        return reductions.reduce(self, x, root, op, out=out, async_op=async_op, timeout=timeout)

    def reduce_scatter(self, x: ArrayArg, op: Any = "sum", *, out: ArrayArg | None = None, async_op: bool = False,
                       timeout: float | None = None) -> Any:
        """Participant p gets block p of the reduction; inputs have a leading dimension of ``P * k``
        and outputs shape ``(k, *x.shape[1:])``."""
        return reductions.reduce_scatter(self, x, op, out=out, async_op=async_op, timeout=timeout)

    def broadcast(self, x: ArrayArg, root: int = 0, *, out: ArrayArg | None = None, async_op: bool = False,
                  timeout: float | None = None) -> Any:
        """Every participant gets participant ``root``'s array (in its input, or ``out``)."""
        return movement.broadcast(self, x, root, out=out, async_op=async_op, timeout=timeout)

    def all_gather(self, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Every participant gets ``stack([x_0, ..., x_{P-1}])`` of shape ``(P, *x.shape)``."""
        return movement.all_gather(self, x, out=out, async_op=async_op, timeout=timeout)

    def all_to_all(self, x: ArrayArg, *, out: ArrayArg | None = None, async_op: bool = False,
                   timeout: float | None = None) -> Any:
        """Block ``q`` of participant ``p``'s input becomes block ``p`` of participant ``q``'s output;
        inputs and outputs have a leading dimension of ``P`` blocks."""
        return movement.all_to_all(self, x, out=out, async_op=async_op, timeout=timeout)

    def barrier(self, *, async_op: bool = False, timeout: float | None = None) -> Any:
        """Return once every device has finished its queued work and every rank got here."""
        return pointtopoint.barrier(self, async_op=async_op, timeout=timeout)

    def send(self, x: Array, dst: int, *, tag: int = 0, timeout: float | None = None) -> None:
        """Send ``x`` (on one of this process's devices) to global participant ``dst``."""
        pointtopoint.send(self, x, dst, tag=tag, timeout=timeout)

    def recv(self, x: Array, src: int, *, tag: int = 0, timeout: float | None = None) -> Array:
        """Receive into ``x`` (on one of this process's devices) from global participant ``src``."""
        return pointtopoint.recv(self, x, src, tag=tag, timeout=timeout)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Finish pending asynchronous work and free the transports' resources (MPI, vendor libraries)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.intra.close()
        if self.inter is not None:
            self.inter.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Communicator rank {self.rank}/{self.size} devices={[d.id for d in self.devices]} "
                f"participants={self.world_size}>")
