"""Local stand-ins for what lives on cluster workers: :class:`RemoteDevice` and :class:`RemoteArray`.

A :class:`RemoteDevice` is what ``rt.devices`` lists for a device of a Dask worker. It is **not** a
local :class:`~dsrt.device.Device`: it has no memory pool and nothing can be allocated on it from here
(``empty`` raises). The scheduler places chunks on it like on any device (``id``, ``info``,
``supports``); :meth:`RemoteDevice.start_chunk` ships a chunk through Dask and reports back without
blocking. :meth:`RemoteDevice.launch` runs one kernel there synchronously (one round trip), so the
``dsrt run`` checks work on it too.

Threads: ``start_chunk`` is called on the scheduler's engine thread; the chunk's coroutine and the
cluster's membership events run on the Dask client's event-loop thread; ``report`` callbacks are
called from that thread (or the engine's, for a chunk refused up front). Shared state is behind one lock.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..array import Array
from ..device import DeviceInfo
from ..errors import ConfigurationError, DeviceError, DeviceLostError, DsrtError
from .worker import ChunkResult, chunk_meta, run_chunk

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["RemoteDevice", "RemoteArray", "SCATTER_BYTES", "remote_info"]

#: Chunk inputs at least this large (bytes) are scattered to the worker directly, not embedded in the
#: task (which would route them through the scheduler).
SCATTER_BYTES = 1 << 20
#: Chunks whose inputs total fewer bytes than this are submitted in batches (one Dask graph update
#: for many); larger ones one by one, so no graph update carries megabytes.
BATCH_BYTES = 64 << 10

_tokens = itertools.count()


def remote_info(info: dict[str, Any], device_id: str, address: str) -> DeviceInfo:
    """The :class:`DeviceInfo` of a worker's device (``info``: its ``to_dict()``), renamed ``device_id``.

    ``properties["hardware"]`` is qualified with the worker's address, so the scheduler never takes
    two workers' devices for one piece of silicon; ``properties["worker"]`` is the address. Remote
    devices compile nothing from here (``languages`` empty) and exchange no DLPack.
    """
    props = dict(info.get("properties") or {})
    props["hardware"] = f"{address}/{props.get('hardware') or info['id']}"
    props["worker"] = address
    props["worker_device"] = info["id"]
    return DeviceInfo(
        id=device_id, backend=info["backend"], index=int(info["index"]), name=info["name"],
        vendor=info.get("vendor", ""), memory_bytes=int(info.get("memory_bytes", 0)),
        compute_units=int(info.get("compute_units", 1)), dtypes=frozenset(info.get("dtypes", ())),
        kernels={k: frozenset(v) for k, v in (info.get("kernels") or {}).items()},
        peak_flops=float(info.get("peak_flops", 0.0)), memory_bandwidth=float(info.get("memory_bandwidth", 0.0)),
        simulated=False, precision_bits=info.get("precision_bits"),
        modelled_peak_flops=info.get("modelled_peak_flops"), synchronous=True, host_visible=False,
        languages=frozenset(), dlpack_device_type=None, properties=props,
    )


class RemoteArray:
    """An array held on a cluster worker: a chunk's result from ``rt.map(..., keep_remote=True)``.

    ``future`` is the Dask future holding it on ``device``'s worker (``None`` once only the host copy
    is kept). Passing it to another ``map`` hands the future to Dask, so the data moves worker to
    worker (or not at all), never through here. :meth:`numpy` fetches a host copy (one round trip,
    cached); :meth:`fetch_to` puts it on a local device. The handle dies with its worker: reading
    it after the worker left raises :class:`~dsrt.errors.DeviceLostError`. :meth:`release` lets
    the worker free it (dropping the last reference does too).
    """

    def __init__(self, device: RemoteDevice, future: Any, shape: Sequence[int], dtype: Any,
                 host: np.ndarray | None = None) -> None:
        self.device = device
        self.future = future
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._host = host

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def worker(self) -> str:
        """The address of the Dask worker holding the data."""
        return self.device.address

    def numpy(self) -> np.ndarray:
        """A host copy (fetched from the worker once, then kept)."""
        if self._host is None:
            if self.future is None:
                raise DeviceError(f"{self.device.id}: this remote array was released", device=self.device.id)
            try:
                value = self.future.result()
            except DsrtError:
                raise
            except Exception as exc:
                raise DeviceLostError(f"{self.device.id}: could not fetch a {self.dtype}{self.shape} result from"
                                      f" dask worker {self.device.address}: {type(exc).__name__}: {exc}",
                                      device=self.device.id) from exc
            self._host = np.asarray(value.array if isinstance(value, ChunkResult) else value)
        return self._host

    def fetch_to(self, device: Any) -> Array:
        """A dsrt Array on local ``device`` with these values; the caller owns it."""
        return device.asarray(self.numpy())

    to = fetch_to

    def release(self) -> None:
        """Let the worker free the data (the host copy, if fetched, stays)."""
        self.future = None

    def __repr__(self) -> str:
        where = "here" if self._host is not None and self.future is None else f"on {self.device.address}"
        return f"<RemoteArray {self.dtype}{self.shape} {self.device.id} {where}>"


@dataclass
class _Flight:
    """One chunk handed to a worker and not reported yet."""

    report: Callable[..., None]
    submitted: float
    futures: list[Any] = field(default_factory=list)


class RemoteDevice:
    """A device of a Dask worker, as the scheduler and ``rt.devices`` see it (see the module docstring).

    ``id``: ``<worker>/<device id there>`` (``<worker>`` is the worker's name when it has a readable
    one, else its address, e.g. ``tcp://127.0.0.1:40123/cpu:0``). ``link``: ``(latency s,
    bandwidth B/s, worker address)`` measured when the worker was found. ``pipeline_depth``: chunks
    the scheduler keeps in flight on it to hide the round trip.
    """

    remote = True

    def __init__(self, cluster: Cluster, address: str, label: str, info: dict[str, Any],
                 link: tuple[float, float], pipeline_depth: int = 4) -> None:
        self.cluster = cluster
        self.address = address
        self.local_id = str(info["id"])
        self.id = f"{label}/{self.local_id}"
        self.info = remote_info(info, self.id, address)
        self.link = (float(link[0]), float(link[1]), address)
        self.pipeline_depth = int(pipeline_depth)
        self.tracer: Any = None
        self._alive = True
        self._lost_reason = ""
        self._lock = threading.Lock()
        self._flights: dict[int, _Flight] = {}
        self._busy_until = 0.0

    # ------------------------------------------------------------------ what the scheduler reads
    @property
    def alive(self) -> bool:
        """False once the worker left the cluster (it is then dropped from ``rt.devices``)."""
        return self._alive

    def supports(self, kernel: str, dtype: Any = None) -> bool:
        """True if the worker's device runs ``kernel`` (for ``dtype``, when given)."""
        return self.info.supports(kernel, dtype)

    def in_flight(self) -> int:
        """Chunks handed to the worker and not reported back yet."""
        with self._lock:
            return len(self._flights)

    # ------------------------------------------------------------------ asynchronous chunks
    def start_chunk(self, task: Any, report: Callable[..., None]) -> Callable[[], None]:
        """Ship ``task`` (a :class:`~dsrt.scheduler.Task`) to the worker; returns a cancel callable.

        Called on the engine thread; never blocks on the network. ``report(...)`` is called once, from
        the Dask client's event loop, with the result (a :class:`RemoteArray`, its data fetched here
        first unless ``task.keep_remote``) or the error (:class:`~dsrt.errors.DeviceLostError` when
        the worker left or Dask lost the chunk; the kernel's own error otherwise).
        """
        if not self._alive:
            raise DeviceLostError(f"{self.id}: {self._lost_reason}", device=self.id)
        token = next(_tokens)
        flight = _Flight(report, time.perf_counter())
        args = [self._ship(x) for x in task.inputs]
        with self._lock:
            self._flights[token] = flight
        inline = sum(x.nbytes for x in args if isinstance(x, np.ndarray))
        if inline < BATCH_BYTES and not task.keep_remote:
            # The common case goes through the cluster's batches: one submit and one gather for many chunks.
            self.cluster.batch(self, token, task.kernel, args, dict(task.params))
        else:
            asyncio.run_coroutine_threadsafe(self._run(token, task.kernel, args, dict(task.params), task.keep_remote),
                                             self.cluster.loop)
        return lambda: self._abandon(token)

    def _ship(self, x: Any) -> Any:
        """What goes into the Dask task for one input: a host array, or a future already on a worker."""
        from ..scheduler.task import Future as TaskFuture

        if isinstance(x, TaskFuture):
            x = x.task.result
        if isinstance(x, RemoteArray):
            return x.future if x.future is not None else x.numpy()
        if isinstance(x, Array):
            return x.numpy()
        return x

    async def _run(self, token: int, kernel: str, args: list[Any], params: dict[str, Any], keep: bool) -> None:
        client = self.cluster.client
        pin = {"workers": [self.address], "allow_other_workers": False, "pure": False}
        try:
            for i, x in enumerate(args):
                if isinstance(x, np.ndarray) and x.nbytes >= SCATTER_BYTES:
                    if not self._holds(token):
                        return
                    [args[i]] = await client.scatter([x], workers=[self.address], hash=False, asynchronous=True)
                    self._attach(token, [args[i]])
            if not self._holds(token):
                return
            fut = client.submit(run_chunk, self.local_id, kernel, args, params,
                                key=f"dsrt-{kernel}-{token}-{self.local_id}", **pin)
            if not self._attach(token, [fut]):
                return
            if keep:
                meta = client.submit(chunk_meta, fut, key=f"dsrt-meta-{token}", **pin)
                self._attach(token, [meta])
                [(compute_s, stage_s, shape, dtype)] = await client.gather([meta], asynchronous=True)
                result = RemoteArray(self, fut, shape, dtype)
            else:
                [value] = await client.gather([fut], asynchronous=True)
                compute_s, stage_s = value.compute_s, value.stage_s
                host = np.asarray(value.array)
                result = RemoteArray(self, None, host.shape, host.dtype, host=host)
        except BaseException as exc:
            self._finish(token, error=self._translate(exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        self._finish(token, result=result, compute_s=compute_s, stage_s=stage_s)

    def _delivered(self, token: int, value: Any) -> None:
        """A batched chunk's :class:`ChunkResult` arrived here (client event loop)."""
        host = np.asarray(value.array)
        self._finish(token, result=RemoteArray(self, None, host.shape, host.dtype, host=host),
                     compute_s=value.compute_s, stage_s=value.stage_s)

    def _failed(self, token: int, exc: BaseException) -> None:
        self._finish(token, error=self._translate(exc))

    def _holds(self, token: int) -> bool:
        with self._lock:
            return token in self._flights

    def _attach(self, token: int, futures: list[Any]) -> bool:
        """Remember ``futures`` for cancelling; False (and cancelled) when the chunk is gone already."""
        with self._lock:
            flight = self._flights.get(token)
            if flight is not None:
                flight.futures.extend(futures)
                return True
        self.cluster.cancel(futures)
        return False

    def _finish(self, token: int, *, result: Any = None, error: BaseException | None = None,
                compute_s: float = 0.0, stage_s: float = 0.0) -> None:
        with self._lock:
            flight = self._flights.pop(token, None)
            if flight is None:
                return
            ended = time.perf_counter()
            # The worker runs one chunk at a time: a pipelined chunk starts when the one ahead ended.
            started = max(flight.submitted, min(self._busy_until, ended))
            self._busy_until = ended
        wall = ended - started
        compute = min(compute_s + stage_s, wall) if error is None else 0.0
        flight.report(result=result, error=error, transfer_s=max(wall - compute, 0.0),
                      compute_s=compute_s if error is None else 0.0, started=started, ended=ended)

    def _abandon(self, token: int) -> None:
        with self._lock:
            flight = self._flights.pop(token, None)
        if flight is not None:
            self.cluster.cancel(flight.futures)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DsrtError):
            return exc
        if not self._alive:
            return DeviceLostError(f"{self.id}: {self._lost_reason}", device=self.id)
        name = type(exc).__name__
        if name in ("CancelledError", "FutureCancelledError", "KilledWorker", "CommClosedError") or isinstance(
                exc, (OSError, TimeoutError, asyncio.CancelledError)):
            return DeviceLostError(f"{self.id}: dask lost the chunk on worker {self.address}: {name}: {exc}",
                                   device=self.id)
        return exc

    def lost(self, reason: str) -> None:
        """The worker left the cluster: every chunk in flight fails with DeviceLostError (its Dask
        futures are cancelled) and nothing more is accepted. Called on the client's event loop."""
        with self._lock:
            if not self._alive:
                return
            self._alive, self._lost_reason = False, reason
            tokens = list(self._flights)
        for token in tokens:
            with self._lock:
                flight = self._flights.get(token)
            if flight is not None:
                self.cluster.cancel(flight.futures)
            self._finish(token, error=DeviceLostError(f"{self.id}: {reason}", device=self.id))

    # ------------------------------------------------------------------ synchronous use (dsrt run checks)
    def asarray(self, obj: Any, dtype: Any = None) -> np.ndarray:
        """A host copy of ``obj`` staged for a :meth:`launch` here: nothing is allocated on the worker
        until a launch ships it (a remote device has no memory you can hold from here)."""
        return np.array(obj, dtype=dtype, copy=True)

    def empty(self, shape: Any, dtype: Any = "float32") -> Any:
        raise ConfigurationError(f"{self.id}: cannot allocate {dtype}{tuple(np.atleast_1d(shape))} on a remote"
                                 f" device (dask worker {self.address}) from here; hand it work with rt.map")

    def launch(self, kernel: str, *inputs: Any, out: Any = None, stream: Any = None, timeout: float | None = 600.0,
               **params: Any) -> RemoteArray:
        """Run ``kernel`` on the worker now, one round trip; returns the result fetched (a
        :class:`RemoteArray` whose :meth:`RemoteArray.numpy` needs no more traffic). ``out`` and
        ``stream`` are accepted for signature compatibility and ignored: the worker allocates the result."""
        if not self._alive:
            raise DeviceLostError(f"{self.id}: {self._lost_reason}", device=self.id)
        args = [self._ship(x) for x in inputs]
        try:
            value = self.cluster.client.submit(run_chunk, self.local_id, kernel, args, params, workers=[self.address],
                                               allow_other_workers=False, pure=False).result(timeout=timeout)
        except DsrtError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        host = np.asarray(value.array)
        return RemoteArray(self, None, host.shape, host.dtype, host=host)

    def synchronize(self, stream: Any = None) -> None:
        """Nothing to wait for: :meth:`launch` returns when the worker has finished."""

    def __repr__(self) -> str:
        return f"<RemoteDevice {self.id} {'alive' if self._alive else 'lost'}>"
