"""``Scheduler``: the runtime's load balancer (``rt.scheduler``, ``rt.map``, ``rt.submit``, ``rt.explain``).

It owns the performance model (persisted between runs), the policy registry (built-ins plus plugins'
``dsrt_register_policies``), the devices' health across runs (:mod:`dsrt.scheduler.health`) and the
report of the last run. Results are dsrt Arrays on the device each chunk ran on; the caller owns them.
A chunk that ran on a remote device (a cluster worker, see :mod:`dsrt.distributed`) returns an Array on
the runtime's default device, or with ``keep_remote=True`` a handle that stays on its worker.

Guarantees, stated precisely:

- **Accuracy.** Every chunk carries the accuracy it needs: the caller's ``tolerance`` (largest
  relative error), else the conformance kit's tolerance for the kernel and dtype. A device whose
  declared ``precision_bits`` cannot meet it never takes the chunk. Simulated devices take no work
  from default placement: name them in ``devices=`` or pass ``tolerance=``.
- **Exactly once.** Each chunk's result is committed exactly once. A chunk may *run* more than once
  (after a device failure, a timeout, or for ``verify=``), but every attempt works on private
  copies of its inputs where the kernel writes in place, so the caller's inputs are never modified
  and a late original's output is discarded, never returned. Kernels with side effects outside
  their output arrays (task kernels that write elsewhere) may see those effects more than once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..accuracy import relative_error
from ..errors import ConfigurationError, PoisonedChunkError, SchedulingError
from ..kernels import get_kernel
from .engine import Engine, Worker
from .executors import ThreadExecutor
from .health import DeviceHealth, health_check
from .links import DefaultLinks, LinkModel, RemoteLinks, TopologyLinks
from .perfmodel import PerfModel, default_model_path
from .policies import BUILTIN_POLICIES, PolicySpec
from .task import Future, Placement, RemoteResult, RunReport, RunStats, Task, default_tolerance

__all__ = ["Scheduler", "DEFAULT_POLICY"]

log = logging.getLogger("dsrt.scheduler")

DEFAULT_POLICY = "dmda"


class Scheduler:
    """Balances kernels over a runtime's devices.

    ``model``: the performance model (default: persisted at :func:`default_model_path`; set
    ``DSRT_PERFMODEL=off`` to keep it in memory). ``timeout_factor``/``min_timeout``: a launch running
    longer than ``max(timeout_factor * predicted, min_timeout)`` seconds quarantines its device
    (``min_timeout`` defaults to ``$DSRT_SCHED_MIN_TIMEOUT`` or 2 seconds).
    """

    def __init__(
        self,
        runtime: Any,
        *,
        model: PerfModel | None = None,
        timeout_factor: float = 4.0,
        min_timeout: float | None = None,
    ) -> None:
        self.runtime = runtime
        if model is None:
            persist = os.environ.get("DSRT_PERFMODEL", "on").lower() not in ("off", "0", "no")
            model = PerfModel(default_model_path() if persist else None)
        self.model = model
        self.timeout_factor = timeout_factor
        self.min_timeout = float(min_timeout if min_timeout is not None
                                 else os.environ.get("DSRT_SCHED_MIN_TIMEOUT", "2.0"))
        self.policies: dict[str, PolicySpec] = dict(BUILTIN_POLICIES)
        for plugin, spec in runtime.plugins.collect("dsrt_register_policies"):
            if not isinstance(spec, PolicySpec):
                log.warning("plugin %s: dsrt_register_policies returned %s, not PolicySpec; ignored",
                            plugin, type(spec).__name__)
                continue
            self.policies[spec.name] = spec
        self.last_run: RunReport | None = None
        self.health = DeviceHealth()
        self._pending: list[Task] = []
        self._pending_opts: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._next_index = 0

    # ------------------------------------------------------------------ configuration
    def register_policy(self, spec: PolicySpec) -> None:
        """Add (or replace) a policy by name."""
        self.policies[spec.name] = spec

    def policy(self, name: str | None) -> PolicySpec:
        key = name or DEFAULT_POLICY
        try:
            return self.policies[key]
        except KeyError:
            raise ConfigurationError(
                f"unknown scheduling policy '{key}'; known: {', '.join(sorted(self.policies))}") from None

    def _devices(self, devices: Sequence[Any] | None) -> list[Any]:
        if devices is None:
            return list(self.runtime.devices)
        return [self.runtime.device(d) for d in devices]

    def links(self, devices: Sequence[Any]) -> LinkModel:
        """The link model: the runtime's topology when one is bound, else :class:`DefaultLinks`.

        Remote devices (with a ``link`` attribute: ``(round trip s, bandwidth B/s, machine)`` measured
        when their cluster was attached) are costed by :class:`RemoteLinks` in front of that model;
        where the topology routes a remote id (``<node>/<device>``, a node named like the worker),
        its bandwidth replaces the measured one (the latency stays at least the measured round trip,
        which includes Dask's dispatch)."""
        remote = {d.id: tuple(d.link) for d in devices if getattr(d, "link", None) is not None}
        local_model = self._local_links([d for d in devices if d.id not in remote])
        if not remote:
            return local_model
        topology, node = self._topology()
        if topology is not None:
            for dev_id, (lat, _bw, machine) in list(remote.items()):
                try:
                    t_lat, t_bw = float(topology.latency(node, dev_id)), float(topology.bandwidth(node, dev_id))
                except Exception:  # noqa: BLE001 - the topology does not name this worker: keep the measurement
                    continue
                if math.isfinite(t_lat) and t_bw > 0:
                    remote[dev_id] = (max(t_lat, lat), t_bw, machine)
        return RemoteLinks(remote, local_model)

    def _topology(self) -> tuple[Any, str]:
        """The bound topology (or ``None``) and the local node's name."""
        try:
            topology = self.runtime.topology
            binding = self.runtime.binding
        except Exception as exc:  # noqa: BLE001 - no usable topology: plan with the fallback links
            log.debug("no topology for link costs (%s); using defaults", exc)
            return None, ""
        if topology is None or binding is None:
            return None, ""
        return topology, getattr(binding, "local_node", None) or (topology.nodes[0].name if topology.nodes else "")

    def _local_links(self, devices: Sequence[Any]) -> LinkModel:
        fallback = DefaultLinks({d.id: d.info for d in devices})
        topology, local = self._topology()
        if topology is None:
            return fallback
        binding = self.runtime.binding
        by_device = {id(dev): q for q, dev in getattr(binding, "bound", {}).items()}
        ids = {d.id: by_device.get(id(d), f"{local}/{d.id}") for d in devices}
        return TopologyLinks(topology, lambda i: ids.get(i, f"{local}/{i}"), local, fallback)

    # ------------------------------------------------------------------ running
    def map(
        self,
        kernel: str,
        chunks: Sequence[Sequence[Any]],
        *,
        devices: Sequence[Any] | None = None,
        policy: str | None = None,
        tolerance: float | None = None,
        timeout: float | None = None,
        verify: float | None = None,
        inplace: bool | None = None,
        keep_remote: bool = False,
        **params: Any,
    ) -> list[Any]:
        """Run ``kernel`` over each chunk (a tuple of arrays); results in input order.

        ``devices``: ids or devices to use (default: every healthy, exact device; simulated devices
        only when named here or admitted by ``tolerance``). ``policy``: a registered policy name
        (default ``dmda``). ``tolerance``: the largest relative error acceptable (default: the
        conformance kit's tolerance for the kernel and dtype, so only devices exact to the dtype take
        work). ``timeout``: seconds the whole run may take; chunks unfinished by then are given up.
        ``verify``: a fraction of chunks (at least one per device used) re-run against the kernel's
        numpy reference or on another exact device; a device whose results disagree is quarantined
        and its chunks computed again elsewhere. ``params`` go to the kernel. What happened is in
        :attr:`last_run` (a :class:`RunReport`).

        Results are Arrays on the device each chunk ran on; a chunk run on a remote device (a cluster
        worker) comes back as an Array on the runtime's default device, unless ``keep_remote=True``:
        then it stays on its worker as a handle (``dsrt.distributed.RemoteArray``) that another
        ``map`` takes as an input without a round trip through here.

        Raises :class:`PoisonedChunkError` (with ``.results``, ``None`` where a chunk was given up)
        when chunks failed on three devices, no capable device was left for them, or the timeout passed.
        """
        if verify is not None and not 0.0 <= float(verify) <= 1.0:
            raise ConfigurationError(f"verify={verify!r}: give the fraction of chunks to re-check, from 0 to 1")
        if tolerance is not None and not (tolerance >= 0 and math.isfinite(tolerance)):
            raise ConfigurationError(f"tolerance={tolerance!r}: give a relative error >= 0")
        tasks = [self._task(i, kernel, chunk, params, tolerance, inplace) for i, chunk in enumerate(chunks)]
        for t in tasks:
            t.keep_remote = keep_remote
        stats = self._run(tasks, policy, devices, tolerance=tolerance, timeout=timeout)
        if verify:
            self._verify(tasks, stats, float(verify), policy, devices, tolerance)
        results = [t.result if t.committed else None for t in tasks]
        if not keep_remote and any(isinstance(r, RemoteResult) for r in results):
            home = self.runtime.default_device
            results = [r.fetch_to(home) if isinstance(r, RemoteResult) else r for r in results]
        if stats.poisoned:
            raise PoisonedChunkError(_poison_message(kernel, stats), poisoned=stats.poisoned, results=results)
        return results

    @staticmethod
    def _task(index: int, kernel: str, chunk: Any, params: dict[str, Any], tolerance: float | None,
              inplace: bool | None) -> Task:
        inputs = tuple(chunk) if isinstance(chunk, (tuple, list)) else (chunk,)
        task = Task.build(index, kernel, inputs, params, tolerance=tolerance, inplace=inplace)
        if tolerance is None:
            task.tolerance = default_tolerance(kernel, task.dtype, task.work, task.out_nbytes)
            task.tolerance_source = "default"
        return task

    def submit(
        self,
        kernel: str,
        *inputs: Any,
        depends_on: Sequence[Any] = (),
        policy: str | None = None,
        devices: Sequence[Any] | None = None,
        tolerance: float | None = None,
        timeout: float | None = None,
        inplace: bool | None = None,
        **params: Any,
    ) -> Future:
        """Queue one task; returns a :class:`Future`. Inputs may be futures of earlier tasks (their
        results feed in); ``depends_on`` adds ordering-only dependencies. Pending tasks run together
        when a result is asked for or on :meth:`flush`, so a DAG is planned as a whole.

        ``devices``, ``policy``, ``tolerance`` and ``timeout`` mean what they mean for :meth:`map`
        (the last ``devices``/``policy``/``timeout`` given applies to the whole pending batch)."""
        with self._lock:
            deps: list[Task] = []
            for x in list(inputs) + list(depends_on):
                t = x.task if isinstance(x, Future) else x if isinstance(x, Task) else None
                if t is not None and t not in deps:
                    deps.append(t)
            stubs = [x.task.result if isinstance(x, Future) and x.task.committed else
                     _future_stub(x) if isinstance(x, Future) else x for x in inputs]
            task = self._task(self._next_index, kernel, stubs, params, tolerance, inplace)
            task.inputs = tuple(inputs)
            task.deps = [d for d in deps if not d.committed]
            for d in task.deps:
                d.children.append(task)
            self._next_index += 1
            task.future = Future(task, self.flush)
            self._pending.append(task)
            self._pending_opts = {"policy": policy, "devices": devices, "timeout": timeout,
                                  "tolerance": tolerance if tolerance is not None else self._pending_opts.get("tolerance")}
            return task.future

    def flush(self) -> RunReport | None:
        """Run every pending submitted task (and their dependencies) now."""
        with self._lock:
            tasks, self._pending = self._pending, []
            if not tasks:
                return None
            opts, self._pending_opts = self._pending_opts, {}
            return self._run(tasks, opts.get("policy") or ("heft" if any(t.deps for t in tasks) else None),
                             opts.get("devices"), tolerance=opts.get("tolerance"), timeout=opts.get("timeout"))

    def exclusion(self, device: Any) -> str:
        """Why ``device`` takes no work in a run ("" = it may): its health (a quarantined device whose
        backoff passed runs its health check here)."""
        ok, why = self.health.admit(device, health_check)
        return "" if ok else why

    def _run(self, tasks: list[Task], policy: str | None, devices: Sequence[Any] | None, *,
             tolerance: float | None = None, timeout: float | None = None) -> RunReport:
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigurationError(f"timeout={timeout!r}: give the seconds the run may take (> 0)")
        spec = self.policy(policy)
        devs = self._devices(devices)
        if not devs:
            raise SchedulingError("no devices to schedule on")
        workers = []
        for d in devs:
            w = Worker(d)
            w.excluded = self.exclusion(d)
            if d.info.simulated and devices is None and tolerance is None:
                w.fallback_only = ("simulated device: name it in devices= or admit it with tolerance="
                                   " (it runs only kernels no real device implements)")
            workers.append(w)
        tracer = self.runtime.tracer
        engine = Engine(workers, spec, self.model, self.links(devs), ThreadExecutor(tracer), tracer=tracer,
                        timeout_factor=self.timeout_factor, min_timeout=self.min_timeout, deadline=timeout)
        stats = engine.run(tasks)
        for w in workers:
            if w.excluded:
                continue
            if not w.alive:
                self.health.quarantine(w.id, w.quarantine_reason)
            elif stats.chunks.get(w.id):
                self.health.succeeded(w.id)
        self.last_run = stats
        try:
            self.model.save_soon()
        except OSError as exc:
            log.warning("could not save the performance model to %s: %s", self.model.path, exc)
        return stats

    # ------------------------------------------------------------------ verifying
    def _verify(self, tasks: list[Task], stats: RunReport, fraction: float, policy: str | None,
                devices: Sequence[Any] | None, tolerance: float | None) -> None:
        """Re-check a ``fraction`` of committed chunks (at least one per device); see :meth:`map`."""
        done = [t for t in tasks if t.committed]
        if not done:
            return
        rng = random.Random(len(tasks))
        by_device: dict[str, list[Task]] = {}
        for t in done:
            by_device.setdefault(str(t.device), []).append(t)
        picked = {rng.choice(ts).index: None for ts in by_device.values()}
        want = math.ceil(fraction * len(done))
        rest = [t.index for t in done if t.index not in picked]
        rng.shuffle(rest)
        for i in rest[: max(want - len(picked), 0)]:
            picked[i] = None
        wrong: dict[str, str] = {}
        for t in (tasks[i] for i in sorted(picked)):
            record = self._check_chunk(t, devices)
            stats.verified[t.index] = record
            if not record["ok"] and t.device not in wrong:
                wrong[str(t.device)] = (f"returned wrong results: chunk {t.index} off by {record['error']:.3g}"
                                        f" (tolerance {record['tolerance']:.3g}, checked against {record['against']})")
        if not wrong:
            return
        for dev, reason in wrong.items():
            stats.quarantined[dev] = reason
            self.health.quarantine(dev, reason)
            log.warning("%s quarantined: %s", dev, reason)
        redo = [t for t in tasks if t.committed and t.device in wrong]
        again = [self._task(t.index, t.kernel, t.inputs, t.params, tolerance, t.inplace) for t in redo]
        for t in again:
            t.keep_remote = any(r.keep_remote for r in redo)
        report = self._run(again, policy, devices, tolerance=tolerance)
        for old, new in zip(redo, again, strict=True):
            old.result, old.device, old.committed = new.result, new.device, new.committed
            if not new.committed:
                stats.poisoned[old.index] = list(new.attempts)
        stats.recomputed = sorted(t.index for t in redo)
        for i, placement in report.placements.items():
            stats.placements[i].attempts.extend(placement.attempts)
        self.last_run = stats

    def _check_chunk(self, task: Task, devices: Sequence[Any] | None) -> dict[str, Any]:
        """Compare one committed chunk with the kernel's numpy reference (or another exact device)."""
        spec = get_kernel(task.kernel)
        host = [x.numpy() if hasattr(x, "numpy") else np.asarray(x) for x in task.inputs]
        got = task.result.numpy()
        tol = task.tolerance if task.tolerance is not None else 0.0
        against = "the numpy reference"
        if spec.reference is not None:
            want = spec.reference(host, spec.bind(host, task.params))
        else:
            others = [d for d in self._devices(devices) if d.id != task.device and not d.info.simulated
                      and d.info.precision_bits is None and d.supports(task.kernel, task.dtype)]
            if not others:
                return {"device": task.device, "ok": True, "error": 0.0, "tolerance": tol, "against": "nothing"}
            other = others[0]
            against = other.id
            want = other.launch(task.kernel, *[other.asarray(x) for x in host], **task.params).numpy()
        err = relative_error(got, want)
        return {"device": task.device, "ok": bool(err <= tol), "error": err, "tolerance": tol,
                "against": against}

    # ------------------------------------------------------------------ explaining
    def explain(self, task: Any) -> Placement:
        """Why ``task`` (a future, a task, or a chunk index of the last run) went where it went."""
        if isinstance(task, Future):
            if not task.done():
                self.flush()
            task = task.task
        if isinstance(task, int):
            if self.last_run is None or task not in self.last_run.placements:
                raise ConfigurationError(f"no placement recorded for chunk {task} in the last run")
            return self.last_run.placements[task]
        if not isinstance(task, Task):
            raise ConfigurationError(f"explain() takes a future, a task or a chunk index, not {type(task).__name__}")
        if task.placement is None:
            raise ConfigurationError(f"task {task.index} ({task.kernel}) has not been placed")
        return task.placement


def _future_stub(f: Future) -> Any:
    """Shape/dtype of a future's result before it exists, from its kernel's inference."""
    from ..kernels import get_kernel
    from .task import ShapeStub

    t = f.task
    spec = get_kernel(t.kernel)
    shaped = [x if not isinstance(x, Future) else _future_stub(x) for x in t.inputs]
    inferred = spec.infer(shaped, spec.bind(shaped, t.params))
    if inferred is None:
        raise ConfigurationError(f"task {t.index} ({t.kernel}) returns no array; pass it in depends_on instead")
    shape, dtype = inferred
    import numpy as np

    return ShapeStub(tuple(shape), np.dtype(dtype))


def _poison_message(kernel: str, stats: RunStats) -> str:
    parts = []
    for idx, attempts in sorted(stats.poisoned.items())[:5]:
        tried = "; ".join(f"{d}: {m}" for d, m in attempts) or "never ran"
        parts.append(f"chunk {idx}: {tried}")
    more = f" (and {len(stats.poisoned) - 5} more)" if len(stats.poisoned) > 5 else ""
    done = stats.tasks - len(stats.poisoned)
    return (f"kernel '{kernel}': {len(stats.poisoned)} of {stats.tasks} chunks given up, {done} completed"
            f"{more}: " + " | ".join(parts))
