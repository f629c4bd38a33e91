"""The MPI transport: collectives between processes (and machines) through mpi4py.

Only buffer-based (upper-case) mpi4py calls are used, on numpy arrays in host memory: views of
host-resident device memory, or staged copies (see :class:`~dsrt.collective.buffers.HostStage`).
Nothing is pickled. Every operation is nonblocking and polled against a deadline; a collective that
is not complete by then raises :class:`~dsrt.errors.CollectiveError` whose ``missing`` lists the
ranks that never arrived.

Who is missing: on a timeout each waiting rank posts a small notice (its rank) to every other rank
on a private duplicate communicator, tagged with the collective's sequence number, and listens for
the others' notices for a grace period of ``min(2 s, max(0.2 s, timeout / 2))``. Ranks that also
timed out in the same collective answer; the rest are named missing. After a timeout the
communicator is unusable (MPI cannot cancel a started collective) and says so on the next call.

Reductions: sum/prod/max/min map to MPI's predefined operations on the compute dtype (float32 for
fp16/bf16/fp8, uint8 for bool; see :mod:`.ops`). In deterministic mode the transport does not trust
MPI's reduction order: it all-gathers the contributions and folds them on the host in rank order
with the numpy ufunc that matches the device kernel bit for bit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CollectiveError, ConfigurationError
from .ops import NUMPY_OPS

__all__ = ["MpiTransport", "mpi_available", "launched_by_mpiexec"]

#: From this many bytes an all-reduce checks arrival with a nonblocking barrier and then runs MPI's
#: blocking algorithm (see ``MpiTransport._arrive``); smaller ones stay nonblocking, which is faster.
BLOCKING_FROM_BYTES = 64 * 1024

_ENV_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_PMIX_MAPPING_SERV")


_OVERSUBSCRIBED = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")) > (os.cpu_count() or 1)


def launched_by_mpiexec() -> bool:
    """True when this process was started by an MPI launcher (its environment says so)."""
    return any(k in os.environ for k in _ENV_MARKERS)


def mpi_available() -> bool:
    """True when mpi4py imports."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigurationError("MPI collectives need mpi4py and an MPI library: pip install dsrt[mpi]") from exc
    return MPI


class MpiTransport:
    """Collectives among the ranks of an mpi4py communicator (which it duplicates and owns)."""

    name = "mpi"

    def __init__(self, comm: Any = None) -> None:
        MPI = _mpi()
        self.MPI = MPI
        self._base = MPI.COMM_WORLD if comm is None else comm
        self.comm: Any = None
        self._ctl: Any = None
        self.rank: int = self._base.Get_rank()
        self.size: int = self._base.Get_size()
        self._ops = {"add": MPI.SUM, "mul": MPI.PROD, "maximum": MPI.MAX, "minimum": MPI.MIN}
        self.seq = 0
        self.broken: str | None = None
        self.timeout: float | None = None

    def setup(self, deadline: float | None) -> None:
        """Duplicate the communicator twice (data, diagnosis), nonblocking, before ``deadline``."""
        self.seq += 1
        comm, r1 = self._base.Idup()
        ctl, r2 = self._base.Idup()
        self.comm, self._ctl = comm, self._base  # diagnose on the base communicator until ctl exists
        self.wait([r1, r2], deadline, "communicator setup (MPI_Comm_idup)")
        self.comm, self._ctl = comm, ctl

    # ------------------------------------------------------------------ waiting
    def begin(self, what: str) -> None:
        """Count one collective (its sequence number names it in timeouts)."""
        if self.broken is not None:
            raise CollectiveError(f"{what}: this communicator is unusable since an earlier failure: {self.broken}")
        self.seq += 1

    def wait(self, reqs: Sequence[Any], deadline: float | None, what: str, *, peers: Sequence[int] = ()) -> None:
        """Poll ``reqs`` until all complete; past ``deadline`` find who is missing and raise.

        ``peers``: for point-to-point operations, the ranks waited on; on a timeout the requests are
        cancelled and those ranks are named without the collective diagnosis.
        """
        if not reqs:
            return
        testall = self.MPI.Request.Testall
        if deadline is None:
            self.MPI.Request.Waitall(list(reqs))
            return
        spins = 0
        while not testall(reqs):
            spins += 1
            if spins > 64 and _OVERSUBSCRIBED:
                # Let a peer sharing this core progress (more ranks than cores on this node).
                os.sched_yield()
            if spins & 63 == 0 and time.perf_counter() > deadline:
                if peers:
                    for req in reqs:
                        try:
                            req.Cancel()
                        except Exception:  # noqa: BLE001 - cancelling is best effort
                            pass
                    names = ", ".join(str(p) for p in peers)
                    raise CollectiveError(
                        f"{what}: timed out after {self.timeout or 0:g} s; rank(s) that never arrived: {names}",
                        missing=list(peers),
                    )
                self._fail(what)

    def _fail(self, what: str) -> None:
        timeout = self.timeout or 0.0
        grace = min(2.0, max(0.2, timeout / 2))
        missing = self._who_is_missing(grace)
        ranks = ", ".join(str(r) for r in missing) or "none (all ranks reached it; a peer is stuck)"
        msg = f"{what}: timed out after {timeout:g} s (collective #{self.seq}); ranks that never arrived: {ranks}"
        self.broken = msg
        raise CollectiveError(msg, missing=missing)

    def _who_is_missing(self, grace: float) -> list[int]:
        tag = 30000 + self.seq % 2000
        me = np.array([self.rank], np.int64)
        sends = [self._ctl.Isend(me, dest=r, tag=tag) for r in range(self.size) if r != self.rank]
        inbox = {r: np.full(1, -1, np.int64) for r in range(self.size) if r != self.rank}
        recvs = {r: self._ctl.Irecv(buf, source=r, tag=tag) for r, buf in inbox.items()}
        end = time.perf_counter() + grace
        while time.perf_counter() < end and not all(req.Test() for req in recvs.values()):
            time.sleep(0.001)
        missing = sorted(r for r, req in recvs.items() if not req.Test())
        for r in missing:
            try:
                recvs[r].Cancel()
            except Exception:  # noqa: BLE001 - cancelling is best effort
                pass
        del sends  # small eager messages: completed or dropped with the broken communicator
        return missing

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, *, deterministic: bool,
                   deadline: float | None, what: str) -> None:
        """``recv`` := reduction over ranks (``send`` is ``None`` for in place)."""
        if deterministic:
            src = recv if send is None else send
            gathered = np.empty((self.size, *src.shape), src.dtype)
            self.wait([self.comm.Iallgather(src, gathered)], deadline, what)
            self._fold(gathered, recv, kernel)
            return
        sendbuf = self.MPI.IN_PLACE if send is None else send
        if recv.nbytes >= BLOCKING_FROM_BYTES:
            self._arrive(deadline, what)
            self.comm.Allreduce(sendbuf, recv, self._ops[kernel])
            return
        self.wait([self.comm.Iallreduce(sendbuf, recv, self._ops[kernel])], deadline, what)

    def all_reduce_small(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, deadline: float,
                         describe: Callable[[], str]) -> None:
        """:meth:`all_reduce` for a message under :data:`BLOCKING_FROM_BYTES`, not deterministic.

        The latency path: one nonblocking MPI call polled with ``Test`` (cheaper than ``Testall``)
        and the description built only if it is needed for an error.
        """
        if self.broken is not None:
            self.begin(describe())
        self.seq += 1
        req = self.comm.Iallreduce(self.MPI.IN_PLACE if send is None else send, recv, self._ops[kernel])
        test = req.Test
        spins = 0
        while not test():
            spins += 1
            if spins > 64 and _OVERSUBSCRIBED:
                os.sched_yield()
            if spins & 63 == 0 and time.perf_counter() > deadline:
                self._fail(describe())

    def _arrive(self, deadline: float | None, what: str) -> None:
        """Wait (against the deadline) until every rank has reached this collective.

        Large reductions then run as Open MPI's tuned blocking algorithms, which are much faster than
        its nonblocking ones (1 MiB over 2 ranks here: 171 us blocking, 272 us nonblocking); the
        nonblocking barrier keeps the timeout and its diagnosis of ranks that never arrived.
        """
        self.wait([self.comm.Ibarrier()], deadline, what)

    def all_reduce_many(self, bufs: Sequence[np.ndarray], kernel: str, *, deterministic: bool,
                        deadline: float | None, what: str) -> None:
        """In-place all-reduce of several independent host buffers, all in flight together."""
        if deterministic:
            for b in bufs:
                self.all_reduce(None, b, kernel, deterministic=True, deadline=deadline, what=what)
            return
        op = self._ops[kernel]
        if sum(b.nbytes for b in bufs) >= BLOCKING_FROM_BYTES:
            self._arrive(deadline, what)
            for b in bufs:
                if b.size:
                    self.comm.Allreduce(self.MPI.IN_PLACE, b, op)
            return
        reqs = [self.comm.Iallreduce(self.MPI.IN_PLACE, b, op) for b in bufs if b.size]
        self.wait(reqs, deadline, what)

    @staticmethod
    def _fold(gathered: np.ndarray, out: np.ndarray, kernel: str) -> None:
        fn = NUMPY_OPS[kernel]
        acc = gathered[0].copy()
        for r in range(1, gathered.shape[0]):
            fn(acc, gathered[r], out=acc)
        out[...] = acc

    def reduce(self, send: np.ndarray, recv: np.ndarray | None, root: int, kernel: str, *,
               deterministic: bool, deadline: float | None, what: str) -> None:
        """``recv`` on rank ``root`` := reduction over ranks of ``send``."""
        if deterministic:
            gathered = np.empty((self.size, *send.shape), send.dtype) if self.rank == root else None
            self.wait([self.comm.Igather(send, gathered, root=root)], deadline, what)
            if self.rank == root and recv is not None and gathered is not None:
                self._fold(gathered, recv, kernel)
            return
        self.wait([self.comm.Ireduce(send, recv, self._ops[kernel], root=root)], deadline, what)

    def broadcast(self, buf: np.ndarray, root: int, *, deadline: float | None, what: str) -> None:
        """``buf`` := rank ``root``'s ``buf``."""
        self.wait([self.comm.Ibcast(buf, root=root)], deadline, what)

    def all_gather_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], *,
                     deadline: float | None, what: str) -> None:
        """``recv`` := concatenation of every rank's ``send`` (``counts`` elements from rank r)."""
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(int).tolist()
        self.wait([self.comm.Iallgatherv(send, [recv, (list(counts), displs)])], deadline, what)

    def reduce_scatter_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], kernel: str, *,
                         deterministic: bool, deadline: float | None, what: str) -> None:
        """Rank r gets its ``counts[r]`` elements of the reduction of every rank's ``send``."""
        if deterministic:
            full = send.copy()
            self.all_reduce(None, full, kernel, deterministic=True, deadline=deadline, what=what)
            start = int(sum(counts[: self.rank]))
            recv[...] = full[start:start + counts[self.rank]]
            return
        self.wait([self.comm.Ireduce_scatter(send, recv, list(counts), self._ops[kernel])], deadline, what)

    def all_to_all_v(self, send: np.ndarray, send_counts: Sequence[int], recv: np.ndarray,
                     recv_counts: Sequence[int], *, deadline: float | None, what: str) -> None:
        """Personalised exchange: ``send_counts[r]`` elements to rank r, ``recv_counts[r]`` from it."""
        sd = np.concatenate(([0], np.cumsum(send_counts)[:-1])).astype(int).tolist()
        rd = np.concatenate(([0], np.cumsum(recv_counts)[:-1])).astype(int).tolist()
        req = self.comm.Ialltoallv([send, (list(send_counts), sd)], [recv, (list(recv_counts), rd)])
        self.wait([req], deadline, what)

    def barrier(self, *, deadline: float | None, what: str) -> None:
        """Every rank reaches this point."""
        self.wait([self.comm.Ibarrier()], deadline, what)

    def send(self, buf: np.ndarray, dest: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Send ``buf`` to rank ``dest``."""
        self.wait([self.comm.Isend(buf, dest=dest, tag=tag)], deadline, what, peers=[dest])

    def recv(self, buf: np.ndarray, source: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Receive into ``buf`` from rank ``source``; a sender that never comes is named missing."""
        self.wait([self.comm.Irecv(buf, source=source, tag=tag)], deadline, what, peers=[source])

    def close(self) -> None:
        """Free the duplicated communicators."""
        for c in (self.comm, self._ctl):
            try:
                c.Free()
            except Exception:  # noqa: BLE001 - already finalised
                pass
