"""Executors: how the engine's started tasks actually run.

:class:`ThreadExecutor` runs real dsrt devices, one daemon thread per device (a device runs one chunk
at a time, in order); times are wall-clock ``perf_counter`` seconds. A thread stuck in a hung launch
is abandoned, never joined.

:class:`VirtualExecutor` runs device cost models on a virtual clock (discrete events, seconds): a
chunk on a device takes ``links.time(source, device, bytes)`` to receive its inputs, then the device
model's ``run_time(kernel, operations, bytes)``; links are not shared (no contention is modelled).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DeviceLostError
from .engine import Completion, Worker
from .links import LinkModel
from .task import Future, RemoteResult, Task

__all__ = ["ThreadExecutor", "VirtualExecutor", "stage_inputs"]


def stage_inputs(task: Task, device: Any) -> list[Any]:
    """Move ``task``'s inputs onto ``device`` (the caller owns the returned arrays).

    Host numpy arrays are copied in; arrays on another device are copied over; arrays on a cluster
    worker (:class:`~dsrt.scheduler.task.RemoteResult`) are fetched; futures resolve to the
    predecessor's result. For in-place kernels an input already on ``device`` is copied too, so the
    caller's data stays pristine for a retry.
    """
    from ..array import Array

    staged = []
    for x in task.inputs:
        if isinstance(x, Future):
            x = x.task.result
        if isinstance(x, Array):
            if x.device is device and task.inplace:
                copy = device.empty(x.shape, x.dtype)
                device.copy(copy, x)
                staged.append(copy)
            else:
                staged.append(x.to(device))
        elif isinstance(x, np.ndarray):
            staged.append(device.asarray(x))
        elif isinstance(x, RemoteResult):
            staged.append(x.fetch_to(device))
        else:
            staged.append(x)
    return staged


def _modelled(device: Any) -> tuple[float, float] | None:
    """A simulated device's cumulative modelled (seconds, joules), or ``None``."""
    cost = getattr(device, "modelled_cost", None)
    return cost() if cost is not None else None


class ThreadExecutor:
    """One thread per real device; completions come back through one queue.

    A device whose handle has ``start_chunk(task, report) -> cancel`` (a remote device: the work runs
    elsewhere) gets no thread: ``start_chunk`` is called on the engine's thread, must not block, and
    calls ``report(result=..., error=..., transfer_s=..., compute_s=..., started=..., ended=...)``
    exactly once from any thread (times ``perf_counter`` seconds). ``cancel()`` is called for chunks
    still unreported when the run ends (late duplicates nobody waits for).
    """

    clock = "wall"

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer
        self.origin = time.perf_counter()
        self._done: queue.Queue[Completion] = queue.Queue()
        self._inboxes: dict[str, queue.Queue[Task | None]] = {}
        self._remote: dict[tuple[str, int], Callable[[], None]] = {}
        self._remote_lock = threading.Lock()

    def now(self) -> float:
        """Seconds since this executor was created (the run's start)."""
        return time.perf_counter() - self.origin

    def start(self, worker: Worker, task: Task) -> None:
        start_chunk = getattr(worker.handle, "start_chunk", None)
        if start_chunk is not None:
            self._start_remote(worker, task, start_chunk)
            return
        inbox = self._inboxes.get(worker.id)
        if inbox is None:
            inbox = self._inboxes[worker.id] = queue.Queue()
            threading.Thread(target=self._serve, args=(worker, inbox), name=f"dsrt-sched-{worker.id}",
                             daemon=True).start()
        inbox.put(task)

    def _serve(self, worker: Worker, inbox: queue.Queue[Task | None]) -> None:
        device = worker.handle
        while True:
            task = inbox.get()
            if task is None:
                return
            t0 = time.perf_counter()
            t1 = t0
            modelled = _modelled(device)
            try:
                staged = stage_inputs(task, device)
                device.synchronize()
                t1 = time.perf_counter()
                if self.tracer is not None:
                    self.tracer.complete("transfer", device.id, t0, t1, {"chunk": task.index, "bytes": task.nbytes,
                                                                         "from": task.source or "host"})
                result = device.launch(task.kernel, *staged, **task.params)
                device.synchronize()
                t2 = time.perf_counter()
            except BaseException as exc:  # noqa: BLE001 - every failure is reported to the engine
                self._done.put(Completion(worker, task, error=exc, transfer_s=t1 - t0, started=t0,
                                          ended=time.perf_counter()))
                continue
            done = Completion(worker, task, result=result, transfer_s=t1 - t0, compute_s=t2 - t1, started=t0, ended=t2)
            after = _modelled(device)
            if modelled is not None and after is not None:
                done.modelled_s, done.modelled_j = after[0] - modelled[0], after[1] - modelled[1]
            self._done.put(done)

    def _start_remote(self, worker: Worker, task: Task, start_chunk: Callable[..., Callable[[], None]]) -> None:
        key = (worker.id, id(task))
        reported = threading.Event()

        def report(**outcome: Any) -> None:
            if reported.is_set():
                return
            reported.set()
            with self._remote_lock:
                self._remote.pop(key, None)
            self._done.put(Completion(worker, task, **outcome))

        try:
            cancel = start_chunk(task, report)
        except BaseException as exc:  # noqa: BLE001 - a failure to hand the chunk over is the device's failure
            now = time.perf_counter()
            report(error=exc, started=now, ended=now)
            return
        with self._remote_lock:
            if not reported.is_set():
                self._remote[key] = cancel

    def wait(self, timeout: float | None) -> Completion | None:
        try:
            return self._done.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        for inbox in self._inboxes.values():
            inbox.put(None)
        self._inboxes.clear()
        with self._remote_lock:
            pending, self._remote = list(self._remote.values()), {}
        for cancel in pending:
            cancel()


class VirtualExecutor:
    """Discrete-event replay of device and link cost models; ``now()`` is virtual seconds from 0.

    ``noise(worker, task) -> factor`` multiplies each run time (1.0 = exact model).
    """

    clock = "virtual"

    def __init__(self, links: LinkModel, *, tracer: Any = None,
                 noise: Callable[[Worker, Task], float] | None = None) -> None:
        self.links = links
        self.tracer = tracer
        self.noise = noise
        self._t = 0.0
        self._events: list[tuple[float, int, Completion]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._t

    def start(self, worker: Worker, task: Task) -> None:
        model = worker.handle
        if task.deps:
            transfer = sum(self.links.time(d.device, worker.id, d.out_nbytes) for d in task.deps)
            own = task.nbytes - sum(d.out_nbytes for d in task.deps)
            if own > 0:
                transfer += self.links.time(task.source, worker.id, own)
        else:
            transfer = self.links.time(task.source, worker.id, task.nbytes)
        run = model.run_time(task.kernel, task.work, task.nbytes)
        if self.noise is not None:
            run *= self.noise(worker, task)
        start = self._t
        end = start + transfer + run
        error = None
        fail_at = getattr(model, "fail_at", None)
        if fail_at is not None and end > fail_at:
            error = DeviceLostError(f"{worker.id}: simulated device failure at t={fail_at:g}s", device=worker.id)
            end = max(start, fail_at)
        done = Completion(worker, task, result=None if error else ("virtual", task.index), error=error,
                          transfer_s=transfer, compute_s=run, started=start, ended=end)
        heapq.heappush(self._events, (end, next(self._seq), done))
        if self.tracer is not None:
            origin = self.tracer.origin
            if transfer > 0:
                self.tracer.complete("transfer", worker.id, origin + start, origin + start + transfer,
                                     {"chunk": task.index, "bytes": task.nbytes})
            self.tracer.complete(task.kernel, worker.id, origin + start + transfer, origin + end,
                                 {"chunk": task.index, "ops": task.work})

    def wait(self, timeout: float | None) -> Completion | None:
        if not self._events:
            return None
        end, _seq, done = heapq.heappop(self._events)
        self._t = max(self._t, end)
        return done

    def close(self) -> None:
        self._events.clear()
