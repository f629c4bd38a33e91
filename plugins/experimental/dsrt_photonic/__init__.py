"""dsrt_photonic: a simulated photonic accelerator (MZI meshes) with honestly modelled analog errors.

Devices: ``photonic:0`` by default (realistic settings, :data:`~dsrt_photonic.params.REALISTIC`), or
any number declared in a topology's ``simulated`` section, e.g.::

    simulated:
      - id: photonic:1
        backend: photonic
        params: {mesh_size: 64, phase_bits: 12, input_bits: 8, output_bits: 8, phase_error: 0.002,
                 coupler_error: 0.005, loss_db: 0.1, detector_noise: 0.001, clock_hz: 1.0e10, seed: 7}

Kernels: ``gemm`` and ``matvec`` (float32). Time and energy come from a stated cost model
(:mod:`dsrt_photonic.cost`), never from the simulator's wall time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dsrt
from dsrt.errors import ConfigurationError
from dsrt.hookspecs import BackendSpec, WorkloadItem
from dsrt.kernels import KernelSpec

from .cost import CostModel
from .device import PhotonicDevice
from .kernels import MATVEC
from .params import IDEAL, REALISTIC, PhotonicParams
from .workload import workload_items

__all__ = [
    "PhotonicDevice", "PhotonicParams", "CostModel", "IDEAL", "REALISTIC", "create_simulated",
    "dsrt_register_backends", "dsrt_register_kernels", "dsrt_workload_items",
]


def _probe(runtime: Any) -> list[PhotonicDevice]:
    return [PhotonicDevice(0, REALISTIC)]


def create_simulated(runtime: Any, device_id: str, params: Mapping[str, Any]) -> PhotonicDevice:
    """Build the device a topology declares as ``device_id`` (``photonic:<index>``) with ``params``."""
    prefix, _, tail = device_id.partition(":")
    if prefix != "photonic" or not tail.isdigit():
        raise ConfigurationError(f"simulated photonic device id must look like 'photonic:<index>', got '{device_id}'")
    settings = PhotonicParams.from_mapping(params or {}, where=f"simulated device '{device_id}'")
    return PhotonicDevice(int(tail), settings, device_id=device_id)


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="photonic", api_version=1, probe=_probe, experimental=True, create_simulated=create_simulated,
        description="simulated MZI-mesh matrix engine (Clements meshes, analog errors, cost model)",
    )]


@dsrt.hookimpl
def dsrt_register_kernels() -> list[KernelSpec]:
    return [MATVEC]


@dsrt.hookimpl
def dsrt_workload_items() -> list[WorkloadItem]:
    return workload_items()
