"""The MPI transport: collectives between processes (and machines) through mpi4py.

Only buffer-based (upper-case) mpi4py calls are used, on numpy arrays in host memory: views of
host-resident device memory, or staged copies (see :class:`~dsrt.collective.buffers.HostStage`).
Nothing is pickled, and nothing blocks: every operation is a nonblocking MPI call (``Iallreduce``,
``Ibcast``...) polled with ``Test`` against the collective's deadline, so a collective never waits
past it, whether a rank never arrives or arrives and then stalls.

Agreement on the outcome (every rank reports the same result for the same collective):

- *Notices.* A rank that gives up on collective ``#k`` (its deadline passed, or it learnt that another
  rank gave up) sends a notice ``(k, late, rank)`` to every other rank on a private control communicator,
  once; from then on the transport is *broken* (poisoned) and every later call raises at once.
  Every rank keeps one receive for notices posted, and checks it while it polls (every 64 polls) and
  once after each collective completes (:meth:`MpiTransport.end`; inside :meth:`all_reduce_small` on
  the 8-byte latency path, where it costs one ``Test`` of that posted receive). A rank that sees a
  notice fails the collective too, even one that completed here: a rank arriving after the others
  gave up gets their abandoned operation's data, and must not report it as a success.
- *Arrival gate.* Collectives whose completion on one rank does not prove that every rank arrived
  (broadcast and reduce: the root may finish before a leaf shows up), and large all-reduces (so that a
  rank that gave up never posted the data operation a late rank could complete), first pass a
  nonblocking barrier (:meth:`MpiTransport.arrive`); a missing rank is then caught at the barrier by
  every rank, and a late rank's data operation never completes (it fails on the notices).
- *Who is missing.* After sending its notice, a failing rank listens for the others' notices for a
  grace period of ``min(2 s, max(0.2 s, timeout / 2))`` (fewer if all answered). Ranks that answered
  for the same collective were there; ranks that never answered, answered for another collective, or
  said they arrived late (they found a notice at the first check of a wait: they came, or woke from a
  stall, after the others had given up) are named missing, on every rank. A late rank names itself.

The residual race: a rank whose collective completed and whose post-completion check came before
another rank's notice reached it reports success while that rank fails; its very next call on the
communicator fails (the notice is there by then), so a poisoned communicator is never used again.

Leaving after a failure: MPI cannot cancel a started collective, and ``MPI_Finalize`` would wait for
ranks that never come. So the first failure tells mpi4py to call ``MPI_Abort`` instead of
``MPI_Finalize`` at interpreter exit (``mpi4py.MPI._set_abort_status``): the process can still handle
the error, and its exit then ends the job with a non-zero status instead of hanging. With
``on_timeout="abort"`` the communicator calls :meth:`MpiTransport.abort` right away.

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
from .base import InterTransport
from .ops import NUMPY_OPS

__all__ = ["MpiTransport", "mpi_available", "launched_by_mpiexec", "GATED_FROM_BYTES", "ABANDONED"]

#: From this many bytes an all-reduce passes the arrival gate (a nonblocking barrier) before its data
#: operation; smaller ones are one nonblocking call, agreed on by the notice check alone.
GATED_FROM_BYTES = 64 * 1024

#: The tag of failure notices on the control communicator (below the MPI-guaranteed bound 32767).
NOTICE_TAG = 32001

#: Requests and buffers of collectives given up on: kept alive for the life of the process, since MPI cannot
#: cancel a started collective and may still write them when a late rank comes (freed, that memory would be
#: corrupted). The device arrays involved stay pinned in :data:`dsrt.memory.IN_USE` (see the communicator).
ABANDONED: list[Any] = []

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


def abort_at_exit(MPI: Any) -> None:
    """Make this process's exit call ``MPI_Abort`` instead of ``MPI_Finalize`` (which would wait for
    ranks that never come); the whole job then ends with status 1."""
    setter = getattr(MPI, "_set_abort_status", None)
    if setter is not None:
        setter(1)
        return
    import atexit

    atexit.register(os._exit, 1)  # older mpi4py: leave before its finalize hook (registered earlier) runs


class MpiTransport(InterTransport):
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
        self._inbox = np.zeros(3, np.int64)  # the posted notice receive's buffer: (collective, late, rank)
        self._notice: Any = None  # that receive (None until setup made the control communicator)
        self._notice_test: Callable[[], bool] = lambda: False
        self._notices: dict[int, tuple[int, int]] = {}  # rank -> (collective, late) of its notice
        self._sent: list[Any] = []  # our notices in flight (their buffers must outlive the sends)
        self._first = True  # no notice check made yet in the current wait

    def setup(self, deadline: float | None) -> None:
        """Duplicate the communicator twice (data, control), nonblocking, before ``deadline``; post
        the notice receive."""
        self.seq += 1
        comm, r1 = self._base.Idup()
        ctl, r2 = self._base.Idup()
        self.comm, self._ctl = comm, self._base  # diagnose on the base communicator until ctl exists
        self.wait([r1, r2], deadline, "communicator setup (MPI_Comm_idup)")
        self.comm, self._ctl = comm, ctl
        self._post_notice_recv()

    def _post_notice_recv(self) -> None:
        self._notice = self._ctl.Irecv(self._inbox, source=self.MPI.ANY_SOURCE, tag=NOTICE_TAG)
        self._notice_test = self._notice.Test

    # ------------------------------------------------------------------ agreement
    def begin(self, what: str) -> None:
        """Count one collective; raise if this transport is broken or a notice is already here (the
        others gave up before this rank arrived)."""
        if self.broken is not None:
            raise CollectiveError(f"{what}: this communicator is unusable since an earlier failure: {self.broken}")
        self.seq += 1
        self._first = True
        if self._notice_test():
            self._take_notice()
            self._fail(what, late=True)

    def end(self, what: str) -> None:
        """After the collective completed here: fail it if another rank gave up on it meanwhile."""
        if self._notice_test():
            self._take_notice()
            self._fail(what, late=self._first)

    def _take_notice(self) -> None:
        """Record the notice the posted receive got (its ``Test`` returned True), and post it again."""
        seq, late, rank = (int(v) for v in self._inbox)
        self._notices[rank] = (seq, late)
        self._post_notice_recv()

    def _check(self, what: str, keep: Any) -> None:
        """One check during polling: a notice fails this collective (late if this is the first check)."""
        if self._notice_test():
            self._take_notice()
            self._fail(what, late=self._first, keep=keep)
        self._first = False

    # ------------------------------------------------------------------ waiting
    def wait(self, reqs: Sequence[Any], deadline: float | None, what: str, *, peers: Sequence[int] = (),
             keep: tuple[Any, ...] = ()) -> None:
        """Poll ``reqs`` until all complete; a notice, or the deadline passing, fails the collective.

        ``keep``: the requests' buffers; on a failure they are kept alive for the life of the process
        (with the requests, in :data:`ABANDONED`), since MPI may still write them when a late rank
        comes. ``peers``: for point-to-point operations, the ranks waited on; on a timeout the requests
        are cancelled and those ranks are named without the collective diagnosis (the group stays
        usable). ``deadline=None`` waits without a limit (still failing on a notice).
        """
        if not reqs:
            return
        testall = self.MPI.Request.Testall
        self._first = True
        spins = 0
        while not testall(reqs):
            spins += 1
            if spins > 64 and _OVERSUBSCRIBED:
                # Let a peer sharing this core progress (more ranks than cores on this node).
                os.sched_yield()
            if spins & 63 == 0:
                if not peers:
                    self._check(what, (reqs, keep))
                if deadline is not None and time.perf_counter() > deadline:
                    if peers:
                        self._cancel(reqs)
                        ABANDONED.append((reqs, keep))
                        names = ", ".join(str(p) for p in peers)
                        raise CollectiveError(
                            f"{what}: timed out after {self.timeout or 0:g} s; rank(s) that never arrived: {names}",
                            missing=list(peers),
                        )
                    if testall(reqs):
                        return  # completed at the last moment: not a failure
                    self._fail(what, keep=(reqs, keep))

    @staticmethod
    def _cancel(reqs: Sequence[Any]) -> None:
        for req in reqs:
            try:
                req.Cancel()
            except Exception:  # noqa: BLE001 - cancelling is best effort
                pass

    def _fail(self, what: str, *, late: bool = False, keep: Any = None) -> None:
        """Give up on the current collective: notify every rank, find who is missing, raise. ``keep``:
        the abandoned requests and buffers, kept alive (see :meth:`wait`)."""
        if keep is not None:
            ABANDONED.append(keep)
        timeout = self.timeout or 0.0
        seq = self.seq
        if self.broken is None:
            note = np.array([seq, int(late), self.rank], np.int64)
            self._sent = [note] + [self._ctl.Isend(note, dest=r, tag=NOTICE_TAG)
                                   for r in range(self.size) if r != self.rank]
            ABANDONED.append(self._sent)
            abort_at_exit(self.MPI)
        others = [r for r in range(self.size) if r != self.rank]
        if late:
            while self._notice_test():  # the other notices already here, for the message
                self._take_notice()
            quitters = ", ".join(str(r) if s == seq else f"{r} (in collective #{s})"
                                 for r, (s, _l) in sorted(self._notices.items()))
            msg = (f"{what}: collective #{seq} was given up by rank(s) {quitters} "
                   f"(timeout {timeout:g} s) before this rank (rank {self.rank}) arrived at it or while it "
                   f"stalled; ranks that never arrived: {self.rank}")
            self.broken = msg
            raise CollectiveError(msg, missing=[self.rank])
        grace = min(2.0, max(0.2, timeout / 2))
        end = time.perf_counter() + grace
        while len(self._notices) < len(others) and time.perf_counter() < end:
            if self._notice_test():
                self._take_notice()
            else:
                time.sleep(0.001)
        present = {r for r, (s, lt) in self._notices.items() if s == seq and not lt}
        missing = [r for r in others if r not in present]
        elsewhere = {r: s for r, (s, _l) in self._notices.items() if s != seq}
        ranks = ", ".join(str(r) for r in missing) or "none (all ranks reached it; a peer is stuck)"
        msg = f"{what}: timed out after {timeout:g} s (collective #{seq}); ranks that never arrived: {ranks}"
        if elsewhere:
            msg += "; " + ", ".join(f"rank {r} gave up in collective #{s}" for r, s in sorted(elsewhere.items()))
        self.broken = msg
        raise CollectiveError(msg, missing=missing)

    def arrive(self, deadline: float | None, what: str) -> None:
        """The arrival gate: wait (against the deadline) until every rank has reached this collective."""
        self.wait([self.comm.Ibarrier()], deadline, what)

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, *, deterministic: bool,
                   deadline: float | None, what: str) -> None:
        """``recv`` := reduction over ranks (``send`` is ``None`` for in place)."""
        if deterministic:
            src = recv if send is None else send
            gathered = np.empty((self.size, *src.shape), src.dtype)
            self.wait([self.comm.Iallgather(src, gathered)], deadline, what, keep=(src, gathered))
            self._fold(gathered, recv, kernel)
            return
        if recv.nbytes >= GATED_FROM_BYTES:
            self.arrive(deadline, what)
            self._ring(send, recv, kernel, deadline, what)
            return
        sendbuf = self.MPI.IN_PLACE if send is None else send
        self.wait([self.comm.Iallreduce(sendbuf, recv, self._ops[kernel])], deadline, what, keep=(send, recv))

    def _ring(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, deadline: float | None,
              what: str) -> None:
        """Ring all-reduce of a large message with nonblocking point-to-point steps, polled.

        Reduce-scatter then all-gather over ``size`` near-equal segments, ``2 (size - 1)`` steps; rank
        r sends to r + 1 and receives from r - 1 (tag = step, on the control communicator), and combines
        with the numpy ufunc of ``kernel`` on the host. Open MPI's own nonblocking all-reduce is much
        slower at these sizes than its blocking one (1 MiB over 2 ranks here: about 2.5x), which this
        matches while keeping the deadline; every rank ends with the same bits (the all-gather copies
        each fully reduced segment from its owner).
        """
        n, r = self.size, self.rank
        src = recv.reshape(-1) if send is None else send.reshape(-1)
        out = recv.reshape(-1)
        count = out.size
        if n == 1 or count < n:
            if send is not None:
                out[...] = src
            if n > 1:
                self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, out, self._ops[kernel])], deadline, what,
                          keep=(out,))
            return
        cuts = [count * i // n for i in range(n + 1)]
        fn = NUMPY_OPS[kernel]
        right, left = (r + 1) % n, (r - 1) % n
        tmp = np.empty(cuts[1] - cuts[0] + 1, out.dtype)
        ctl = self._ctl
        for step in range(n - 1):  # reduce-scatter: rank r ends owning segment r + 1
            s_out, s_in = (r - step) % n, (r - step - 1) % n
            outgoing = (src if step == 0 else out)[cuts[s_out]:cuts[s_out + 1]]
            incoming = tmp[:cuts[s_in + 1] - cuts[s_in]]
            self.wait([ctl.Irecv(incoming, source=left, tag=step), ctl.Isend(outgoing, dest=right, tag=step)],
                      deadline, what, keep=(src, out, tmp))
            fn(src[cuts[s_in]:cuts[s_in + 1]], incoming, out=out[cuts[s_in]:cuts[s_in + 1]])
        for step in range(n - 1):  # all-gather
            s_out, s_in = (r + 1 - step) % n, (r - step) % n
            self.wait([ctl.Irecv(out[cuts[s_in]:cuts[s_in + 1]], source=left, tag=n + step),
                       ctl.Isend(out[cuts[s_out]:cuts[s_out + 1]], dest=right, tag=n + step)], deadline, what,
                      keep=(out,))

    def all_reduce_small(self, send: np.ndarray | None, recv: np.ndarray, kernel: str, deadline: float,
                         describe: Callable[[], str]) -> None:
        """The whole collective for a message under :data:`GATED_FROM_BYTES`, not deterministic.

        The latency path: one nonblocking MPI call polled with ``Test`` (cheaper than ``Testall``),
        one ``Test`` of the notice receive after it completed, and the description built only if an
        error needs it.
        """
        if self.broken is not None:
            self.begin(describe())
        self.seq += 1
        self._first = True
        req = self.comm.Iallreduce(self.MPI.IN_PLACE if send is None else send, recv, self._ops[kernel])
        test = req.Test
        spins = 0
        while not test():
            spins += 1
            if spins > 64 and _OVERSUBSCRIBED:
                os.sched_yield()
            if spins & 63 == 0:
                self._check_small(describe, (req, send, recv))
                if time.perf_counter() > deadline and not test():
                    self._fail(describe(), keep=(req, send, recv))
        if self._notice_test():
            self._take_notice()
            self._fail(describe(), late=self._first)

    def _check_small(self, describe: Callable[[], str], keep: Any) -> None:
        if self._notice_test():
            self._take_notice()
            self._fail(describe(), late=self._first, keep=keep)
        self._first = False

    def all_reduce_many(self, bufs: Sequence[np.ndarray], kernel: str, *, deterministic: bool,
                        deadline: float | None, what: str) -> None:
        """In-place all-reduce of several independent host buffers, all in flight together."""
        if deterministic:
            for b in bufs:
                self.all_reduce(None, b, kernel, deterministic=True, deadline=deadline, what=what)
            return
        op = self._ops[kernel]
        if sum(b.nbytes for b in bufs) >= GATED_FROM_BYTES:
            self.arrive(deadline, what)
            for b in bufs:
                if b.size:
                    self._ring(None, b, kernel, deadline, what)
            return
        reqs = [self.comm.Iallreduce(self.MPI.IN_PLACE, b, op) for b in bufs if b.size]
        self.wait(reqs, deadline, what, keep=tuple(bufs))

    @staticmethod
    def _fold(gathered: np.ndarray, out: np.ndarray, kernel: str) -> None:
        fn = NUMPY_OPS[kernel]
        acc = gathered[0].copy()
        for r in range(1, gathered.shape[0]):
            fn(acc, gathered[r], out=acc)
        out[...] = acc

    def reduce(self, send: np.ndarray, recv: np.ndarray | None, root: int, kernel: str, *,
               deterministic: bool, deadline: float | None, what: str) -> None:
        """``recv`` on rank ``root`` := reduction over ranks of ``send`` (gated: a leaf may finish
        before every rank arrived)."""
        self.arrive(deadline, what)
        if deterministic:
            gathered = np.empty((self.size, *send.shape), send.dtype) if self.rank == root else None
            self.wait([self.comm.Igather(send, gathered, root=root)], deadline, what, keep=(send, gathered))
            if self.rank == root and recv is not None and gathered is not None:
                self._fold(gathered, recv, kernel)
            return
        self.wait([self.comm.Ireduce(send, recv, self._ops[kernel], root=root)], deadline, what, keep=(send, recv))

    def broadcast(self, buf: np.ndarray, root: int, *, deadline: float | None, what: str) -> None:
        """``buf`` := rank ``root``'s ``buf`` (gated: the root and its children may finish before
        every rank arrived)."""
        self.arrive(deadline, what)
        self.wait([self.comm.Ibcast(buf, root=root)], deadline, what, keep=(buf,))

    def all_gather_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], *,
                     deadline: float | None, what: str) -> None:
        """``recv`` := concatenation of every rank's ``send`` (``counts`` elements from rank r)."""
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(int).tolist()
        self.wait([self.comm.Iallgatherv(send, [recv, (list(counts), displs)])], deadline, what, keep=(send, recv))

    def all_gather_small(self, mine: np.ndarray, table: np.ndarray, *, deadline: float | None, what: str) -> None:
        """``table[r]`` := rank r's ``mine``."""
        self.wait([self.comm.Iallgather(mine, table)], deadline, what, keep=(mine, table))

    def reduce_scatter_v(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int], kernel: str, *,
                         deterministic: bool, deadline: float | None, what: str) -> None:
        """Rank r gets its ``counts[r]`` elements of the reduction of every rank's ``send``."""
        if deterministic:
            full = send.copy()
            self.all_reduce(None, full, kernel, deterministic=True, deadline=deadline, what=what)
            start = int(sum(counts[: self.rank]))
            recv[...] = full[start:start + counts[self.rank]]
            return
        if send.nbytes >= GATED_FROM_BYTES:
            self.arrive(deadline, what)
        self.wait([self.comm.Ireduce_scatter(send, recv, list(counts), self._ops[kernel])], deadline, what,
                  keep=(send, recv))

    def all_to_all_v(self, send: np.ndarray, send_counts: Sequence[int], recv: np.ndarray,
                     recv_counts: Sequence[int], *, deadline: float | None, what: str) -> None:
        """Personalised exchange: ``send_counts[r]`` elements to rank r, ``recv_counts[r]`` from it
        (gated: with empty blocks a rank need not hear from every other)."""
        self.arrive(deadline, what)
        sd = np.concatenate(([0], np.cumsum(send_counts)[:-1])).astype(int).tolist()
        rd = np.concatenate(([0], np.cumsum(recv_counts)[:-1])).astype(int).tolist()
        req = self.comm.Ialltoallv([send, (list(send_counts), sd)], [recv, (list(recv_counts), rd)])
        self.wait([req], deadline, what, keep=(send, recv))

    def barrier(self, *, deadline: float | None, what: str) -> None:
        """Every rank reaches this point."""
        self.wait([self.comm.Ibarrier()], deadline, what)

    def send(self, buf: np.ndarray, dest: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Send ``buf`` to rank ``dest``."""
        self.wait([self.comm.Isend(buf, dest=dest, tag=tag)], deadline, what, peers=[dest], keep=(buf,))

    def recv(self, buf: np.ndarray, source: int, tag: int, *, deadline: float | None, what: str) -> None:
        """Receive into ``buf`` from rank ``source``; a sender that never comes is named missing."""
        self.wait([self.comm.Irecv(buf, source=source, tag=tag)], deadline, what, peers=[source], keep=(buf,))

    # ------------------------------------------------------------------ lifetime
    def abort(self, code: int = 1) -> None:
        """``MPI_Abort`` on the world: every process of the job ends (``on_timeout="abort"``)."""
        self.MPI.COMM_WORLD.Abort(code)

    def close(self) -> None:
        """Cancel the notice receive and free the duplicated communicators (not after a failure:
        freeing a communicator with an abandoned collective can block; the exit aborts instead)."""
        if self._notice is not None:
            try:
                self._notice.Cancel()
                self._notice.Wait()
            except Exception:  # noqa: BLE001 - MPI already finalised
                pass
            self._notice = None
            self._notice_test = lambda: False
        if self.broken is not None:
            return
        for c in (self.comm, self._ctl):
            try:
                c.Free()
            except Exception:  # noqa: BLE001 - already finalised
                pass
