"""Collectives over devices of one process and, through MPI, over processes and machines.

    from dsrt.collective import Communicator
    comm = Communicator([rt.device("cpu:0"), rt.device("opencl:0")])   # mpi="auto": MPI under mpiexec
    comm.all_reduce([a0, a1], op="sum")                                 # in place; out=... for a copy

Modules: :mod:`.ops` (operators, dtype plan), :mod:`.algorithms` (selection thresholds, schedules),
:mod:`.base` (transport base classes), :mod:`.local` (in-process transport), :mod:`.mpi` (MPI
transport, outcome agreement), :mod:`.transport` (transport plugins), :mod:`.communicator` (the
dispatcher and the collective skeleton), :mod:`.reductions`, :mod:`.movement`, :mod:`.pointtopoint`
(the collectives' bodies), :mod:`.world` (discovery under mpiexec), :mod:`.simulate` (cost model).
"""

from __future__ import annotations

from typing import Any

from .algorithms import ALGORITHMS, SMALL_MESSAGE_BYTES, choose_algorithm
from .base import InterTransport, IntraTransport
from .communicator import ON_TIMEOUT, Communicator, Handle
from .local import InProcessTransport
from .mpi import MpiTransport, launched_by_mpiexec
from .ops import ReduceOp, plan_reduction
from .transport import BUILTIN_TRANSPORTS, TransportSpec, select_transport, transports
from .world import local_devices, world, world_rank_size

__all__ = [
    "ALGORITHMS",
    "BUILTIN_TRANSPORTS",
    "Communicator",
    "Handle",
    "InProcessTransport",
    "InterTransport",
    "IntraTransport",
    "MpiTransport",
    "ON_TIMEOUT",
    "ReduceOp",
    "SMALL_MESSAGE_BYTES",
    "TransportSpec",
    "choose_algorithm",
    "launched_by_mpiexec",
    "local_devices",
    "plan_reduction",
    "select_transport",
    "simulate_collective",
    "transports",
    "world",
    "world_rank_size",
]


def simulate_collective(topology: Any, name: str, nbytes: int, **kwargs: Any) -> dict[str, Any]:
    """See :func:`dsrt.collective.simulate.simulate_collective` (imported lazily)."""
    from .simulate import simulate_collective as _sim

    return _sim(topology, name, nbytes, **kwargs)
