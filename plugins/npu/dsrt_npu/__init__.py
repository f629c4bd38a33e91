"""The Ascend NPU backend on Huawei CANN (pyACL).

Exercised against an emulated ``acl`` module in the test suite (no Ascend hardware was reachable
while it was written); it follows the pyACL conventions of the CANN 7.0/8.0 documentation.
"""

from __future__ import annotations

from typing import Any

import dsrt
from dsrt.hookspecs import BackendSpec

__all__ = ["dsrt_register_backends", "dsrt_register_transports", "probe"]


def probe(runtime: Any) -> list[Any]:
    """Detect CANN step by step (each failure names what is missing), then one device per NPU."""
    from .detect import detect
    from .device import NpuDevice

    install, acl = detect()
    return [NpuDevice(acl, i) for i in install.devices]


@dsrt.hookimpl
def dsrt_register_transports() -> list[Any]:
    from dsrt.collective import TransportSpec

    from .hccl import HcclTransport, hccl_applies
    from .hccl_ranks import HcclRankTransport, hccl_ranks_applies

    return [TransportSpec(name="hccl", kind="intra", applies=hccl_applies, factory=HcclTransport, priority=10,
                          description="HCCL among the Ascend NPUs of one process (libhccl.so through ctypes)"),
            TransportSpec(name="hccl-mpi", kind="inter", applies=hccl_ranks_applies,
                          factory=lambda comm: HcclRankTransport(comm), priority=10,
                          description="MPI between ranks, with HCCL all-reduce and broadcast of NPU arrays "
                                      "(one NPU per rank; libhccl.so loaded on first use)")]


@dsrt.hookimpl
def dsrt_register_backends() -> list[BackendSpec]:
    return [BackendSpec(name="npu", api_version=1, probe=probe, priority=90,
                        description="Huawei Ascend NPUs through CANN (pyACL)",
                        install_hint="install the CANN toolkit and source set_env.sh",
                        nominal_peak_flops=100e12)]  # an inference NPU, for planning on topologies that declare none
