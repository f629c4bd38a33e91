"""The CPU backend: numpy for the standard kernel set, C user kernels compiled at run time with cffi."""

from __future__ import annotations

import dsrt
from dsrt.hookspecs import BackendSpec

from .device import CpuDevice

__all__ = ["CpuDevice", "dsrt_register_backends"]


def _probe(runtime: dsrt.Runtime) -> list[CpuDevice]:
    return [CpuDevice(0)]


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="cpu", api_version=1, probe=_probe, priority=0,
        description="host CPU through numpy; C kernels through cffi",
        nominal_peak_flops=3e12,  # a 2-socket server CPU, for planning on topologies that declare none
    )]
