"""Virtual devices and workloads: plan a run on cost models instead of hardware.

A :class:`VirtualDevice` is a device model: a launch of ``kernel`` over ``ops`` operations takes
``overhead + ops / speeds[kernel]`` seconds. Its ``DeviceInfo`` carries what the scheduler may read
(kernels, peak estimate, precision); the true ``speeds`` stay hidden from the scheduler, which learns
them through its performance model exactly as it does on real devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import dsrt.dtypes as dt

from ..device import DeviceInfo
from ..errors import ConfigurationError
from ..kernels import get_kernel
from .engine import Engine, Worker
from .executors import VirtualExecutor
from .links import LinkModel
from .perfmodel import PerfModel
from .policies import PolicySpec
from .task import RunStats, ShapeStub, Task

__all__ = ["VirtualDevice", "make_chunks", "make_tasks", "simulate", "devices_from_topology"]


class VirtualDevice:
    """A device cost model. ``speeds``: kernel -> operations per second; ``overhead``: seconds per launch.

    ``peak_flops`` is the estimate the scheduler is told (default: the fastest kernel's speed);
    ``fail_at``: virtual time in seconds at which the device dies (``None``: never).
    """

    def __init__(
        self,
        id: str,
        speeds: Mapping[str, float],
        *,
        overhead: float = 0.0,
        peak_flops: float | None = None,
        memory_bandwidth: float = 0.0,
        precision_bits: float | None = None,
        dtypes: Sequence[str] = ("float32",),
        name: str = "",
        fail_at: float | None = None,
    ) -> None:
        self.id = id
        self.speeds = {k: float(v) for k, v in speeds.items()}
        self.overhead = float(overhead)
        self.fail_at = fail_at
        _, _, idx = id.rpartition(":")
        self.info = DeviceInfo(
            id=id, backend="virtual", index=int(idx) if idx.isdigit() else 0, name=name or f"virtual {id}",
            dtypes=frozenset(dtypes), kernels={k: frozenset(dtypes) for k in self.speeds},
            peak_flops=float(peak_flops if peak_flops is not None else max(self.speeds.values(), default=0.0)),
            memory_bandwidth=float(memory_bandwidth), simulated=True, precision_bits=precision_bits,
        )

    def supports(self, kernel: str, dtype: Any = None) -> bool:
        return kernel in self.speeds and (dtype is None or dt.dtype_name(dtype) in self.info.dtypes)

    def run_time(self, kernel: str, ops: float, nbytes: int = 0) -> float:
        """Seconds to run ``ops`` operations of ``kernel`` (the model's truth)."""
        return self.overhead + ops / self.speeds[kernel]

    def __repr__(self) -> str:
        return f"<VirtualDevice {self.id}>"


def make_chunks(kernel: str, nbytes: int, dtype: str = "float32") -> tuple[ShapeStub, ...]:
    """Input shapes of one chunk of about ``nbytes`` input bytes for ``kernel``.

    Matrix kernels (two 2-D inputs, e.g. ``gemm``) get two square matrices; others get ``arity``
    vectors of equal length.
    """
    spec = get_kernel(kernel)
    d = dt.as_dtype(dtype)
    lo = max(spec.arity[0], 1)
    stubs: tuple[ShapeStub, ...]
    side = max(int(math.sqrt(nbytes / (2 * d.itemsize))), 1)
    n = max(nbytes // (lo * d.itemsize), 1)
    attempts = [tuple(ShapeStub((n,), d) for _ in range(lo)), (ShapeStub((side, side), d),) * 2]
    for stubs in attempts:
        try:
            spec.infer(stubs, spec.bind(stubs, {}))
            return stubs
        except Exception:  # noqa: BLE001 - try the next layout
            continue
    raise ConfigurationError(f"cannot build a synthetic workload for kernel '{kernel}' ({nbytes} bytes, {dtype})")


def make_tasks(items: Sequence[tuple[str, int]], *, dtype: str = "float32", start: int = 0) -> list[Task]:
    """Tasks for ``(kernel, input bytes)`` pairs, inputs in host memory."""
    return [Task.build(start + i, k, make_chunks(k, b, dtype), {}) for i, (k, b) in enumerate(items)]


def simulate(
    devices: Sequence[VirtualDevice],
    links: LinkModel,
    tasks: Sequence[Task],
    policy: PolicySpec,
    *,
    model: PerfModel | None = None,
    noise: Callable[[Worker, Task], float] | None = None,
    tracer: Any = None,
) -> RunStats:
    """Run ``tasks`` on the virtual clock; ``stats.makespan`` is the predicted makespan in seconds."""
    workers = [Worker(d) for d in devices]
    executor = VirtualExecutor(links, tracer=tracer, noise=noise)
    for t in tasks:
        t.committed, t.result, t.device, t.attempts, t.placement = False, None, None, [], None
    engine = Engine(workers, policy, model if model is not None else PerfModel(), links, executor, tracer=tracer)
    return engine.run(tasks)


def devices_from_topology(topology: Any, *, kernels: Sequence[str]) -> tuple[list[VirtualDevice], Any]:
    """Virtual devices for every device a topology declares, and a link model over its links.

    A device declaration's ``params`` may give ``peak_flops`` (operations/s), ``speeds`` (kernel ->
    operations/s), ``kernels`` (names it runs), ``overhead`` (s), ``precision_bits``. Without
    ``speeds``, every kernel runs at ``peak_flops``; without ``peak_flops`` the device cannot be
    planned and the error names it.
    """
    from .links import StarLinks, TopologyLinks

    devices: list[VirtualDevice] = []
    for decl in topology.devices:
        params = dict(decl.params)
        peak = params.get("peak_flops") or params.get("peak_tflops", 0) * 1e12
        speeds = dict(params.get("speeds") or {})
        names = params.get("kernels") or kernels
        if not speeds:
            if not peak:
                raise ConfigurationError(
                    f"topology device {decl.qualified_id}: declare params.peak_flops (operations/s) or params.speeds"
                    " to simulate it")
            speeds = {k: float(peak) for k in names}
        devices.append(VirtualDevice(
            decl.qualified_id, {k: v for k, v in speeds.items() if k in kernels},
            overhead=float(params.get("overhead", 0.0)), peak_flops=float(peak) if peak else None,
            precision_bits=params.get("precision_bits"), name=f"{decl.backend} {decl.qualified_id}",
            dtypes=tuple(params.get("dtypes", ("float32",))),
        ))
    host = topology.nodes[0].name if topology.nodes else "host"
    links = TopologyLinks(topology, lambda q: q, host, StarLinks({}))
    return devices, links


def lognormal_sizes(rng: np.random.Generator, n: int, mean_bytes: float, sigma: float = 0.75) -> np.ndarray:
    """``n`` sizes (bytes) lognormal with the given mean and shape ``sigma``."""
    mu = math.log(mean_bytes) - sigma * sigma / 2
    return rng.lognormal(mu, sigma, n)
