"""``Scheduler``: the runtime's load balancer (``rt.scheduler``, ``rt.map``, ``rt.submit``, ``rt.explain``).

It owns the performance model (persisted between runs), the policy registry (built-ins plus plugins'
``dsrt_register_policies``) and the statistics of the last run. Results are dsrt Arrays on the device
each chunk ran on; the caller owns them. Inputs are never modified.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError, PoisonedChunkError, SchedulingError
from .engine import Engine, Worker
from .executors import ThreadExecutor
from .links import DefaultLinks, LinkModel, TopologyLinks
from .perfmodel import PerfModel, default_model_path
from .policies import BUILTIN_POLICIES, PolicySpec
from .task import Future, Placement, RunStats, Task

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
        self.last_run: RunStats | None = None
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
        """The link model: the runtime's topology when one is bound, else :class:`DefaultLinks`."""
        fallback = DefaultLinks({d.id: d.info for d in devices})
        try:
            topology = self.runtime.topology
            binding = self.runtime.binding
        except Exception as exc:  # noqa: BLE001 - no usable topology: plan with the fallback links
            log.debug("no topology for link costs (%s); using defaults", exc)
            return fallback
        if topology is None or binding is None:
            return fallback
        local = getattr(binding, "local_node", None) or (topology.nodes[0].name if topology.nodes else "")
        by_device = {id(dev): q for q, dev in getattr(binding, "bound", {}).items()}
        ids = {d.id: by_device.get(id(d), f"{local}/{d.id}") for d in devices}
        return TopologyLinks(topology, lambda i: ids.get(i, f"{local}/{i}"), local, fallback)

    # ------------------------------------------------------------------ running
    def map(
        self,
        kernel: str,
        chunks: Sequence[Sequence[Any]],
        *,
        policy: str | None = None,
        devices: Sequence[Any] | None = None,
        tolerance: float | None = None,
        inplace: bool | None = None,
        **params: Any,
    ) -> list[Any]:
        """Run ``kernel`` over each chunk (a tuple of arrays); results in input order.

        Raises :class:`PoisonedChunkError` (with ``.results``, ``None`` where a chunk was given up)
        when chunks failed on three devices or no capable device was left for them.
        """
        tasks = []
        for i, chunk in enumerate(chunks):
            inputs = tuple(chunk) if isinstance(chunk, (tuple, list)) else (chunk,)
            tasks.append(Task.build(i, kernel, inputs, params, tolerance=tolerance, inplace=inplace))
        stats = self._run(tasks, policy, devices)
        results = [t.result if t.committed else None for t in tasks]
        if stats.poisoned:
            raise PoisonedChunkError(_poison_message(kernel, stats), poisoned=stats.poisoned, results=results)
        return results

    def submit(
        self,
        kernel: str,
        *inputs: Any,
        depends_on: Sequence[Any] = (),
        policy: str | None = None,
        devices: Sequence[Any] | None = None,
        tolerance: float | None = None,
        inplace: bool | None = None,
        **params: Any,
    ) -> Future:
        """Queue one task; returns a :class:`Future`. Inputs may be futures of earlier tasks (their
        results feed in); ``depends_on`` adds ordering-only dependencies. Pending tasks run together
        when a result is asked for or on :meth:`flush`, so a DAG is planned as a whole."""
        with self._lock:
            deps: list[Task] = []
            for x in list(inputs) + list(depends_on):
                t = x.task if isinstance(x, Future) else x if isinstance(x, Task) else None
                if t is not None and t not in deps:
                    deps.append(t)
            stubs = [x.task.result if isinstance(x, Future) and x.task.committed else
                     _future_stub(x) if isinstance(x, Future) else x for x in inputs]
            task = Task.build(self._next_index, kernel, stubs, params, tolerance=tolerance, inplace=inplace)
            task.inputs = tuple(inputs)
            task.deps = [d for d in deps if not d.committed]
            for d in task.deps:
                d.children.append(task)
            self._next_index += 1
            task.future = Future(task, self.flush)
            self._pending.append(task)
            self._pending_opts = {"policy": policy, "devices": devices}
            return task.future

    def flush(self) -> RunStats | None:
        """Run every pending submitted task (and their dependencies) now."""
        with self._lock:
            tasks, self._pending = self._pending, []
            if not tasks:
                return None
            return self._run(tasks, self._pending_opts.get("policy") or ("heft" if any(t.deps for t in tasks)
                                                                          else None),
                             self._pending_opts.get("devices"))

    def _run(self, tasks: list[Task], policy: str | None, devices: Sequence[Any] | None) -> RunStats:
        spec = self.policy(policy)
        devs = self._devices(devices)
        if not devs:
            raise SchedulingError("no devices to schedule on")
        workers = [Worker(d) for d in devs]
        tracer = self.runtime.tracer
        engine = Engine(workers, spec, self.model, self.links(devs), ThreadExecutor(tracer), tracer=tracer,
                        timeout_factor=self.timeout_factor, min_timeout=self.min_timeout)
        stats = engine.run(tasks)
        self.last_run = stats
        try:
            self.model.save()
        except OSError as exc:
            log.warning("could not save the performance model to %s: %s", self.model.path, exc)
        return stats

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
