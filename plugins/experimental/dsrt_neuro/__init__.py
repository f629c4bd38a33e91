"""dsrt_neuro: a simulated Loihi-like neuromorphic chip (``snn:N``) running spiking networks.

Registers the ``neuromorphic`` backend (one default device ``snn:0`` with Loihi-2-like limits;
topologies declare more with their own limits and arithmetic mode), the ``snn_run`` task kernel, the
``dsrt snn`` command and a ``dsrt run`` check. Build networks with :class:`Network` or import NIR
graphs with :func:`from_nir`; run them with ``device.run(network, steps, dt)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dsrt
from dsrt.hookspecs import BackendSpec, CliCommand, WorkloadItem
from dsrt.kernels import KernelSpec

from .chip import ChipLimits, EnergyModel, TimingModel
from .device import NeuromorphicDevice, SimResult
from .engine import Learning
from .errors import ChipLimitError, NetworkError, UnsupportedNodeError
from .kernels import SPEC
from .network import Network
from .nir_import import from_nir

if TYPE_CHECKING:
    from dsrt.runtime import Runtime

__all__ = [
    "ChipLimits", "ChipLimitError", "EnergyModel", "Learning", "Network", "NetworkError", "NeuromorphicDevice",
    "SimResult", "TimingModel", "UnsupportedNodeError", "from_nir",
]


def _probe(runtime: Runtime) -> list[NeuromorphicDevice]:
    return [NeuromorphicDevice(runtime, "snn:0", {})]


def _create(runtime: Runtime, device_id: str, params: Mapping[str, Any]) -> NeuromorphicDevice:
    return NeuromorphicDevice(runtime, device_id, params)


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="neuromorphic", device_prefix="snn", api_version=1, probe=_probe, create_simulated=_create,
        experimental=True, priority=-10, install_hint="pip install dsrt[neuro]",
        description="simulated Loihi-like spiking chip: LIF/CUBA/IF/LI, float or 24-bit fixed point, NIR import",
    )]


@dsrt.hookimpl
def dsrt_register_kernels() -> list[KernelSpec]:
    return [SPEC]


@dsrt.hookimpl
def dsrt_cli_commands() -> list[CliCommand]:
    from .cli import COMMAND

    return [COMMAND]


@dsrt.hookimpl
def dsrt_workload_items() -> list[WorkloadItem]:
    from .cli import WORKLOAD

    return list(WORKLOAD)
