"""What runs inside each Dask worker: the dsrt runtime plugin and the functions tasks call.

:class:`DsrtWorkerPlugin` is a Dask ``WorkerPlugin`` the client registers once; Dask installs it on
every worker that is or later joins the cluster. Its ``setup`` (called by Dask on the worker's event
loop when the worker starts or the plugin is registered) builds one dsrt runtime with the factory the
attaching runtime passed in and probes its devices. No extra daemon runs.

The module-level functions are what the client submits: :func:`describe` (the worker's devices),
:func:`echo` (link measurement), :func:`run_chunk` (one kernel launch on one device) and
:func:`chunk_meta`. They run on a worker thread.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = ["PLUGIN_NAME", "DsrtWorkerPlugin", "ChunkResult", "describe", "echo", "run_chunk", "chunk_meta",
           "worker_runtime"]

#: The name the plugin is registered under on every worker.
PLUGIN_NAME = "dsrt-runtime"

try:  # the base class only when Dask is importable; this module is imported only when it is
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - dsrt.distributed is never imported without Dask
    _WorkerPluginBase = object  # type: ignore[assignment,misc]


class DsrtWorkerPlugin(_WorkerPluginBase):  # type: ignore[misc,valid-type]
    """Gives a Dask worker one dsrt runtime, built by ``factory()`` (a picklable callable, e.g. the
    ``Runtime`` class with its backend selection) when Dask sets the plugin up on the worker."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.runtime: Any = None

    def setup(self, worker: Any) -> None:
        self.runtime = self.factory()
        self.runtime.devices  # noqa: B018 - probe now, not inside the first chunk

    def teardown(self, worker: Any) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


def worker_runtime(worker: Any = None) -> Any:
    """The dsrt runtime of ``worker`` (default: the Dask worker this task runs on); raises
    :class:`~dsrt.errors.ConfigurationError` if the plugin is not set up there."""
    if worker is None:
        from distributed import get_worker

        worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or getattr(plugin, "runtime", None) is None:
        raise ConfigurationError(f"dask worker {worker.address}: no dsrt runtime (the '{PLUGIN_NAME}' worker"
                                 " plugin is not set up; attach the cluster with dsrt.Runtime(cluster=...))")
    return plugin.runtime


@dataclass
class ChunkResult:
    """One chunk's output as a worker holds it: the host array and the seconds the launch took there
    (``compute_s``: launch to synchronize; ``stage_s``: copying inputs onto the device)."""

    array: Any
    compute_s: float
    stage_s: float
    shape: tuple[int, ...] = ()
    dtype: str = ""


def describe(dask_worker: Any) -> dict[str, Any]:
    """This worker's address, name, host, pid and real devices (``DeviceInfo.to_dict()`` each).
    Run through ``Client.run``, which passes ``dask_worker``; simulated devices are left out."""
    rt = worker_runtime(dask_worker)
    devices = [d.info.to_dict() for d in rt.devices if not d.info.simulated]
    return {"address": dask_worker.address, "name": str(dask_worker.name), "host": socket.gethostname(),
            "pid": os.getpid(), "devices": devices}


def echo(payload: bytes) -> bytes:
    """Returns its argument: a round trip of a known payload measures the link to this worker."""
    return payload


def _unwrap(x: Any) -> Any:
    return x.array if isinstance(x, ChunkResult) else x


def run_chunk(device_id: str, kernel: str, inputs: Sequence[Any], params: dict[str, Any]) -> ChunkResult:
    """Launch ``kernel`` on this worker's device ``device_id`` over ``inputs`` (host arrays, or
    earlier chunks' results that Dask resolved here); returns the result as a host array."""
    rt = worker_runtime()
    dev = rt.device(device_id)
    t0 = time.perf_counter()
    staged = [dev.asarray(np.asarray(_unwrap(x))) if isinstance(_unwrap(x), np.ndarray) else _unwrap(x)
              for x in inputs]
    dev.synchronize()
    t1 = time.perf_counter()
    out = dev.launch(kernel, *staged, **params)
    dev.synchronize()
    t2 = time.perf_counter()
    host = out.numpy() if hasattr(out, "numpy") else out
    return ChunkResult(host, t2 - t1, t1 - t0, tuple(getattr(host, "shape", ())), str(getattr(host, "dtype", "")))


def chunk_meta(result: ChunkResult) -> tuple[float, float, tuple[int, ...], str]:
    """A chunk result's ``(compute_s, stage_s, shape, dtype)`` without its data (keep_remote runs)."""
    return result.compute_s, result.stage_s, result.shape, result.dtype
