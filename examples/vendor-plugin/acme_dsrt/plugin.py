"""The acme backend: registration hooks, a new kernel, and its CPU implementation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import dsrt
from dsrt.kernels import KernelSpec

from .device import AcmeDevice


def _clip_infer(inputs: Sequence[Any], params: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    x = inputs[0]
    if params["low"] > params["high"]:
        raise dsrt.ShapeError(f"kernel 'clip': low {params['low']} is above high {params['high']}")
    return tuple(x.shape), x.dtype


CLIP = KernelSpec(
    name="clip", doc="out = min(max(x, low), high)", arity=(1, 1), params={"low": 0.0, "high": 1.0},
    infer=_clip_infer, reference=lambda inputs, p: np.clip(inputs[0], p["low"], p["high"]).astype(inputs[0].dtype),
    dtypes=frozenset({"float32", "float64"}),
)


def _probe(runtime: dsrt.Runtime) -> list[AcmeDevice]:
    return [AcmeDevice(0)]


@dsrt.hookimpl
def dsrt_register_backends() -> list[dsrt.BackendSpec]:
    return [dsrt.BackendSpec(name="acme", api_version=1, probe=_probe, priority=-10,
                             description="example vendor backend (host-emulated)",
                             install_hint="pip install acme-dsrt")]


@dsrt.hookimpl
def dsrt_register_kernels() -> list[KernelSpec]:
    return [CLIP]


@dsrt.hookimpl
def dsrt_kernel_impls(device: dsrt.Device) -> list[tuple[str, Any, Any]]:
    if device.info.backend != "cpu":
        return []

    def clip_on_cpu(inputs: Sequence[dsrt.Array], out: dsrt.Array, params: Mapping[str, Any], stream: Any) -> None:
        from dsrt.memory.hostmem import host_view

        np.clip(host_view(inputs[0]), params["low"], params["high"], out=host_view(out))

    return [("clip", {"float32", "float64"}, clip_on_cpu)]
