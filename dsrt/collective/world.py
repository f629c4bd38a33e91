"""Discovering the world: which rank this process is, how many there are, and which devices it owns.

Under ``mpiexec`` the world comes from MPI (``COMM_WORLD`` rank and size); otherwise it is one rank.
With a topology, the devices of this rank are its node's group (``Topology.groups()``): node ``r``
of the topology is rank ``r`` when the topology has one node per rank, else the node the runtime
bound as local. Devices of the group that are not bound here are left out.
"""

from __future__ import annotations

from typing import Any

from ..context import default_runtime
from .communicator import Communicator
from .mpi import launched_by_mpiexec, mpi_available

__all__ = ["world_rank_size", "local_devices", "world"]


def world_rank_size() -> tuple[int, int]:
    """``(rank, size)`` of this process: from MPI under mpiexec, else ``(0, 1)``."""
    if launched_by_mpiexec() and mpi_available():
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    return 0, 1


def local_devices(runtime: Any, rank: int = 0, size: int = 1) -> list[Any]:
    """The devices this rank contributes: its node's group in the topology, else the default device."""
    topo = getattr(runtime, "topology", None)
    binding = getattr(runtime, "binding", None)
    groups = topo.groups() if topo is not None and hasattr(topo, "groups") else []
    bound = getattr(binding, "bound", None) or {}
    if groups and bound and topo is not None:
        nodes = [n.name for n in topo.nodes]
        if len(nodes) == size:
            index = rank
        else:
            local = getattr(binding, "local_node", None)
            index = nodes.index(local) if local in nodes else 0
        devs = [bound[q] for q in groups[index] if q in bound]
        if devs:
            return devs
    return [runtime.default_device]


def world(runtime: Any = None, **options: Any) -> Communicator:
    """A communicator over every rank of the MPI world (or this process alone) and its devices.

    ``options`` go to :class:`Communicator` (``timeout``, ``on_timeout``, ``deterministic``, ``algorithm``...):
    ``world(timeout=30, on_timeout="abort")`` ends a batch job with ``MPI_Abort`` once a collective
    names missing ranks, instead of leaving ``mpiexec`` to wait for them.
    """
    if runtime is None:
        runtime = default_runtime()
    rank, size = world_rank_size()
    devices = options.pop("devices", None) or local_devices(runtime, rank, size)
    return Communicator(devices, runtime=runtime, mpi=size > 1 or launched_by_mpiexec(), **options)
