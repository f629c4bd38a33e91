"""Transports are plugins: the base classes, the registration record, the built-in transports, selection.

A transport moves and combines collective data. ``kind`` says where: ``"intra"`` transports work
among devices of one process (the built-in :class:`~.local.InProcessTransport`; a vendor library
such as NCCL for CUDA devices), ``"inter"`` transports between processes (the built-in MPI one).
Plugins add transports through the ``dsrt_register_transports`` hook::

    @dsrt.hookimpl
    def dsrt_register_transports():
        return [TransportSpec(name="nccl", kind="intra", applies=all_cuda, factory=NcclTransport, priority=10)]

An ``intra`` factory is called with the list of participating devices and must return an
:class:`~.base.IntraTransport` (``all_reduce``, ``reduce_scatter``, ``all_gather``, ``reduce``,
``broadcast``; ``copy`` and ``close`` have defaults: free vendor communicators in ``close``). An
``inter`` factory is called with an mpi4py communicator (or ``None`` for the world) and must return an
:class:`~.base.InterTransport` (usually a subclass of :class:`~.mpi.MpiTransport`). The communicator
refuses anything else with a :class:`~dsrt.errors.ConfigurationError` naming the transport.

An ``inter`` transport may also offer device collectives by overriding them (the base class's
versions return ``None``); the communicator uses them when every rank has exactly one device (and, for
reductions, outside deterministic mode), instead of staging the arrays through host memory:

- ``device_all_reduce(send, recv, kernel, *, deadline, what) -> str | None``: ``recv`` := the reduction
  over ranks of ``send`` (``None``: in place), both flat contiguous arrays on this rank's device in the
  dtype the reduction runs in (after the plan's widening; ``avg`` arrives as ``add`` and is scaled
  afterwards by the communicator); ``kernel`` is ``add``, ``mul``, ``maximum`` or ``minimum``.
- ``device_broadcast(buf, root, *, deadline, what) -> str | None``: ``buf`` := rank ``root``'s ``buf``.

Each returns the algorithm's name once the work is enqueued on the device's default stream in stream
order (the communicator then waits for the stream against ``deadline``), or ``None``, having done
nothing, when it cannot take the arrays (another device kind, a dtype or operator the library lacks);
then the host path runs. The decision must depend only on what every rank shares (dtype, operator,
size), so that all ranks take the same path; the communicator keeps these methods only if every rank's
transport overrides them (:meth:`~.base.InterTransport.offers`). A transport must not let a missing
rank hang the device: pass the arrival gate (``MpiTransport.arrive``) against ``deadline`` before
enqueuing, which raises :class:`~dsrt.errors.CollectiveError` naming the ranks that never arrived.
The ``hccl-mpi`` transport of the NPU plugin (``dsrt_npu.hccl_ranks``) is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .base import InterTransport, IntraTransport
from .local import InProcessTransport
from .mpi import MpiTransport, mpi_available

if TYPE_CHECKING:
    from ..device import Device
    from ..runtime import Runtime

__all__ = ["TransportSpec", "BUILTIN_TRANSPORTS", "transports", "select_transport", "IntraTransport",
           "InterTransport"]


@dataclass(frozen=True)
class TransportSpec:
    """A transport's registration record.

    - ``name``: unique name (``"inprocess"``, ``"mpi"``, ``"nccl"``).
    - ``kind``: ``"intra"`` (devices of one process) or ``"inter"`` (between processes).
    - ``applies(devices)``: True if it can serve this group of devices (cheap; no hardware probing).
    - ``factory(arg)``: builds the transport; ``arg`` is the device list (intra) or the mpi4py
      communicator or ``None`` (inter).
    - ``priority``: the highest-priority applicable transport wins.
    """

    name: str
    kind: str
    applies: Callable[[Sequence[Device]], bool]
    factory: Callable[[Any], Any]
    priority: int = 0
    description: str = ""


BUILTIN_TRANSPORTS: tuple[TransportSpec, ...] = (
    TransportSpec(
        name="inprocess", kind="intra", applies=lambda devices: True,
        factory=lambda devices: InProcessTransport(), priority=0,
        description="device-to-device copies and the devices' own reduction kernels",
    ),
    TransportSpec(
        name="mpi", kind="inter", applies=lambda devices: mpi_available(),
        factory=lambda comm: MpiTransport(comm), priority=0,
        description="mpi4py nonblocking buffer collectives on host memory, polled against a deadline, outcome agreed",
    ),
)


def transports(runtime: Runtime | None = None) -> list[TransportSpec]:
    """Built-in transports followed by those plugins of ``runtime`` register (invalid records skipped
    with an error naming the plugin)."""
    found = list(BUILTIN_TRANSPORTS)
    if runtime is not None:
        for plugin, item in runtime.plugins.collect("dsrt_register_transports"):
            if not isinstance(item, TransportSpec) or item.kind not in ("intra", "inter"):
                raise ConfigurationError(
                    f"plugin '{plugin}' returned {item!r} from dsrt_register_transports;"
                    " expected a dsrt.collective.TransportSpec with kind 'intra' or 'inter'"
                )
            found.append(item)
    return found


def select_transport(kind: str, devices: Sequence[Device], runtime: Runtime | None = None,
                     name: str | None = None) -> TransportSpec:
    """The transport of ``kind`` to use for ``devices``: ``name`` if given, else the applicable one of
    highest priority (ties: the later registration, so a plugin can replace a built-in)."""
    specs = [s for s in transports(runtime) if s.kind == kind]
    if name is not None:
        for s in specs:
            if s.name == name:
                return s
        raise ConfigurationError(
            f"no {kind} transport named '{name}'; available: {', '.join(s.name for s in specs) or 'none'}"
        )
    best: TransportSpec | None = None
    for s in specs:
        if s.applies(devices) and (best is None or s.priority >= best.priority):
            best = s
    if best is None:
        raise ConfigurationError(f"no {kind} transport applies to devices {[d.id for d in devices]}")
    return best
