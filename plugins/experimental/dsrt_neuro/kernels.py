"""The ``snn_run`` task kernel: run one network (or trial) on a neuromorphic device.

``launch("snn_run", network=..., steps=..., dt=...)`` returns a :class:`~dsrt_neuro.device.SimResult`,
so the scheduler can spread many independent networks or trials over every ``snn`` device.
``network`` is a :class:`~dsrt_neuro.network.Network`, an ``nir.NIRGraph`` or a path to an NIR file.
An optional array input supplies the ``(steps, channels)`` input spikes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsrt.device import Stream
from dsrt.errors import ConfigurationError, KernelLaunchError
from dsrt.kernels import KERNELS, REQUIRED, KernelSpec, register_kernel

__all__ = ["SNN_RUN", "SPEC", "snn_run_impl", "as_network"]

SNN_RUN = "snn_run"


def as_network(obj: Any, dt: float) -> Any:
    """A Network from a Network, an ``nir.NIRGraph`` or an NIR file path."""
    from .network import Network

    if isinstance(obj, Network):
        return obj
    from .nir_import import from_nir

    return from_nir(obj, dt)


def snn_run_impl(inputs: Sequence[Any], out: Any, params: Mapping[str, Any], stream: Stream) -> Any:
    device = stream.device
    run = getattr(device, "run", None)
    if run is None:
        raise KernelLaunchError(f"{device.id}: '{SNN_RUN}' runs on neuromorphic devices only",
                                kernel=SNN_RUN, device=device.id)
    dt = float(params["dt"])
    net = as_network(params["network"], dt)
    x = params["inputs"]
    if inputs:
        x = inputs[0].numpy() if hasattr(inputs[0], "numpy") else np.asarray(inputs[0])
    return run(net, int(params["steps"]), dt, inputs=x, trace=params["trace"], learning=params["learning"],
               reward=params["reward"])


def _reference(inputs: Sequence[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
    raise ConfigurationError(f"'{SNN_RUN}' is a task kernel; it has no array reference")


SPEC = KernelSpec(
    name=SNN_RUN,
    doc="simulate a spiking network for `steps` steps of `dt` seconds; returns a SimResult",
    arity=(0, 1),
    params={"network": REQUIRED, "steps": REQUIRED, "dt": REQUIRED, "inputs": None, "trace": None,
            "learning": None, "reward": None},
    infer=lambda inputs, params: None,
    reference=_reference,
    dtypes=frozenset(),
    flops=lambda inputs, params: 0.0,
)

if SNN_RUN not in KERNELS:  # devices built outside a runtime still find their kernel's spec
    register_kernel(SPEC)
