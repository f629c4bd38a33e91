"""The dispatch loop: policies place tasks, executors run them, failures are contained.

One loop serves both clocks. An *executor* starts a task on a worker and reports completions:
:class:`dsrt.scheduler.executors.ThreadExecutor` runs real devices (one thread per device, wall clock),
:class:`dsrt.scheduler.executors.VirtualExecutor` replays cost models (discrete events, virtual clock).

Fault handling (the engine's job, whatever the policy):

- a device that raises :class:`~dsrt.errors.DeviceLostError`, or runs longer than ``timeout_factor``
  times its prediction (and at least ``min_timeout`` seconds), is quarantined for good; its running
  and queued tasks go back to the policy for the survivors;
- a device whose launch fails otherwise is quarantined as a *suspect*; if the same chunk then fails on
  another device too, the chunk is to blame and the suspect is reinstated;
- a chunk that failed on three different devices is *poisoned*: given up and reported;
- a result is committed once; a late result of a chunk already committed is dropped and counted.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import DeviceLostError, KernelError, OutOfMemoryError
from .links import LinkModel
from .perfmodel import PerfModel
from .policies import Policy, PolicySpec, hardware_groups
from .task import Candidate, Placement, RunStats, Task

__all__ = ["Worker", "Completion", "Executor", "Engine", "POISON_AFTER"]

log = logging.getLogger("dsrt.scheduler")

#: A chunk that failed on this many different devices is given up.
POISON_AFTER = 3
#: Measurements the model wants per (kernel, device) before it counts as calibrated (the first is
#: dropped, so one is kept).
CALIBRATION_RUNS = 2


class Worker:
    """A device as the engine sees it: ``handle`` is a dsrt Device or a virtual device model."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.id: str = handle.id
        self.info = handle.info
        self.alive = True
        self.quarantine_reason = ""
        self.suspect_for: Task | None = None
        self.queue: deque[Task] = deque()
        self.queued_pred = 0.0
        self.running: Task | None = None
        self.run_started = 0.0
        self.run_pred = 0.0
        self.deadline = math.inf
        self.assigned_after_death = 0

    def supports(self, kernel: str, dtype: str | None) -> bool:
        handle_supports = getattr(self.handle, "supports", None)
        if handle_supports is not None:
            return bool(handle_supports(kernel, dtype) if dtype is not None else handle_supports(kernel))
        return self.info.supports(kernel, dtype) if dtype is not None else kernel in self.info.kernels

    def __repr__(self) -> str:
        return f"<Worker {self.id} {'alive' if self.alive else 'quarantined'}>"


@dataclass
class Completion:
    """What an executor reports: the result, or the error, with measured seconds."""

    worker: Worker
    task: Task
    result: Any = None
    error: BaseException | None = None
    transfer_s: float = 0.0
    compute_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0


class Executor(Protocol):
    clock: str

    def now(self) -> float: ...

    def start(self, worker: Worker, task: Task) -> None: ...

    def wait(self, timeout: float | None) -> Completion | None: ...

    def close(self) -> None: ...


class Engine:
    """Runs ``tasks`` under one policy to completion (or poisoning). Implements the policy context."""

    def __init__(
        self,
        workers: Sequence[Worker],
        policy: PolicySpec,
        model: PerfModel,
        links: LinkModel,
        executor: Executor,
        *,
        tracer: Any = None,
        timeout_factor: float = 4.0,
        min_timeout: float = 2.0,
        on_commit: Callable[[Task], None] | None = None,
    ) -> None:
        self._all = list(workers)
        self._hardware_groups: dict[str, list[Worker]] = {}
        self.model = model
        self.links = links
        self.executor = executor
        self.tracer = tracer
        self.timeout_factor = timeout_factor
        self.min_timeout = min_timeout
        self.on_commit = on_commit
        self.spec = policy
        self.stats = RunStats(policy=policy.name, clock=executor.clock, devices=[w.id for w in workers])
        self._outstanding = 0
        self._finished: set[int] = set()
        self.policy: Policy = policy.factory(self)

    # ------------------------------------------------------------------ policy context
    def now(self) -> float:
        return self.executor.now()

    @property
    def workers(self) -> list[Worker]:
        return [w for w in self._all if w.alive]

    def capable(self, task: Task, worker: Worker) -> tuple[bool, str]:
        if not worker.alive:
            return False, f"quarantined: {worker.quarantine_reason}"
        if any(dev == worker.id for dev, _ in task.attempts):
            return False, "this chunk already failed there"
        if not worker.supports(task.kernel, task.dtype):
            what = f"kernel '{task.kernel}'" + (f" for {task.dtype}" if task.dtype else "")
            return False, f"does not implement {what}"
        bits = getattr(worker.info, "precision_bits", None)
        if task.tolerance is not None and bits is not None and 2.0 ** (-bits) > task.tolerance:
            return False, (f"precision {bits:g} bits (error ~{2.0 ** -bits:.2g})"
                           f" cannot meet tolerance {task.tolerance:g}")
        return True, ""

    def expected_free(self, worker: Worker) -> float:
        """Predicted time at which ``worker`` has finished everything it holds (seconds, run clock).

        Devices that report the same ``properties["hardware"]`` share silicon (the CPU and a CPU
        OpenCL device): their work is modelled as one queue, since running both at once only
        splits the same cores.
        """
        now = self.now()
        held = 0.0
        for w in self._same_hardware(worker):
            if not w.alive and w is not worker:
                continue
            if w.running is not None:
                held += max(0.0, w.run_started + w.run_pred - now)
            held += w.queued_pred
        return now + held

    def _same_hardware(self, worker: Worker) -> list[Worker]:
        if not self._hardware_groups:
            for members in hardware_groups(self._all):
                group = [self._all[j] for j in members]
                for w in group:
                    self._hardware_groups[w.id] = group
        return self._hardware_groups[worker.id]

    def transfer_time(self, task: Task, worker: Worker) -> float:
        t = 0.0
        if task.deps:
            for dep in task.deps:
                t += self.links.time(dep.device, worker.id, dep.out_nbytes)
            own = task.nbytes - sum(d.out_nbytes for d in task.deps)
            if own > 0:
                t += self.links.time(task.source, worker.id, own)
        else:
            t = self.links.time(task.source, worker.id, task.nbytes)
        return t

    def estimate(self, task: Task, worker: Worker) -> Candidate:
        run, source = self.model.predict(task.kernel, worker.info, task.work, task.nbytes)
        transfer = self.transfer_time(task, worker)
        now = self.now()
        wait = self.expected_free(worker) - now
        # An input produced by a predecessor still running elsewhere is ready only when it finishes.
        return Candidate(worker.id, True, "", wait, transfer, run, now + wait + transfer + run, source)

    def needs_calibration(self, task: Task, worker: Worker) -> int:
        return max(0, CALIBRATION_RUNS - self.model.measurements(task.kernel, worker.info))

    def assign(self, task: Task, worker: Worker, placement: Placement) -> None:
        if not worker.alive:
            worker.assigned_after_death += 1
            raise AssertionError(f"policy {self.spec.name} assigned chunk {task.index} to quarantined {worker.id}")
        task.placement = placement
        self.stats.placements[task.index] = placement
        pred = self._predicted(task, worker)
        worker.queue.append(task)
        worker.queued_pred += pred
        task._pred = pred  # type: ignore[attr-defined]
        if log.isEnabledFor(logging.DEBUG):
            cands = ", ".join(f"{c.device}={c.finish:.4g}s" if c.capable else f"{c.device}=excluded({c.reason})"
                              for c in placement.candidates)
            log.debug("chunk %d (%s, %.3g ops) -> %s [%s]: %s%s", task.index, task.kernel, task.work, worker.id,
                      placement.policy, placement.why, f"; candidates: {cands}" if cands else "")
        if self.tracer is not None:
            self.tracer.instant("place", worker.id, {"chunk": task.index, "kernel": task.kernel,
                                                     "policy": placement.policy, "why": placement.why},
                                at=self._trace_time(self.now()))

    def queued(self, worker: Worker) -> Sequence[Task]:
        return worker.queue

    def steal(self, victim: Worker, task: Task) -> bool:
        try:
            victim.queue.remove(task)
        except ValueError:
            return False
        victim.queued_pred -= getattr(task, "_pred", 0.0)
        return True

    def unplaceable(self, task: Task, reason: str) -> None:
        task.attempts.append(("-", f"no device can run it: {reason}"))
        self._fail(task)

    # ------------------------------------------------------------------ the loop
    def run(self, tasks: Sequence[Task]) -> RunStats:
        """Run every task; returns the run's statistics (poisoned chunks are listed, never raised here)."""
        stats = self.stats
        stats.tasks = len(tasks)
        self._outstanding = len(tasks)
        self._pending = {id(t): sum(1 for d in t.deps if not d.committed) for t in tasks}
        t0 = self.now()
        self.policy.prepare(tasks)
        ready = [t for t in tasks if self._pending[id(t)] == 0]
        failed_deps = [t for t in tasks if any(d.index in stats.poisoned and not d.committed for d in t.deps)]
        self.policy.submit(ready)
        for t in failed_deps:
            self._fail(t)
        try:
            while self._outstanding > 0:
                self._dispatch()
                running = [w for w in self._all if w.alive and w.running is not None]
                if not running:
                    self._stall(tasks)
                    break
                deadline = min(w.deadline for w in running)
                timeout = None if math.isinf(deadline) else max(deadline - self.now(), 0.0)
                done = self.executor.wait(timeout)
                if done is None:
                    self._check_timeouts()
                else:
                    self._complete(done)
        finally:
            self.executor.close()
        stats.makespan = self.now() - t0
        return stats

    def _dispatch(self) -> None:
        # A pull may queue work on other idle devices too: scan until nothing more starts.
        started = True
        while started:
            started = False
            for w in self._all:
                if not w.alive or w.running is not None:
                    continue
                task = self._next(w)
                if task is None:
                    continue
                pred = getattr(task, "_pred", 0.0)
                w.queued_pred = max(w.queued_pred - pred, 0.0)
                w.running, w.run_started, w.run_pred = task, self.now(), pred
                w.deadline = self.now() + max(self.timeout_factor * pred, self.min_timeout) \
                    if self.executor.clock == "wall" else math.inf
                self.executor.start(w, task)
                started = True

    def _next(self, w: Worker) -> Task | None:
        """The next task for idle ``w``: the head of its queue, else whatever the policy hands it."""
        while True:
            if not w.queue:
                self.policy.pull(w)
                if not w.queue:
                    return None
            task = w.queue.popleft()
            if task.index not in self._finished:
                return task
            w.queued_pred = max(w.queued_pred - getattr(task, "_pred", 0.0), 0.0)

    def _predicted(self, task: Task, worker: Worker) -> float:
        run = self.model.predict(task.kernel, worker.info, task.work, task.nbytes)[0]
        return run + self.transfer_time(task, worker)

    def _complete(self, done: Completion) -> None:
        w, task = done.worker, done.task
        if w.running is task:
            w.running, w.deadline = None, math.inf
        if done.error is None:
            if w.alive:
                self.model.record(task.kernel, w.info, task.work, done.compute_s)
            self.stats.chunks[w.id] = self.stats.chunks.get(w.id, 0) + 1
            self.stats.busy[w.id] = self.stats.busy.get(w.id, 0.0) + done.compute_s + done.transfer_s
            self.stats.transfer[w.id] = self.stats.transfer.get(w.id, 0.0) + done.transfer_s
            self.stats.work[w.id] = self.stats.work.get(w.id, 0.0) + task.work
            self._commit(task, done.result, w)
            return
        if not w.alive and w.running is None:
            # A late failure from a device already quarantined (e.g. after a timeout): nothing new.
            if task.index not in self._finished and not any(d == w.id for d, _ in task.attempts):
                task.attempts.append((w.id, _describe(done.error)))
            return
        self._failure(w, task, done.error)

    def _commit(self, task: Task, result: Any, w: Worker) -> None:
        if task.index in self._finished:
            self.stats.duplicates += 1
            log.debug("chunk %d: late result from %s dropped (already committed)", task.index, w.id)
            return
        task.result, task.device, task.committed = result, w.id, True
        self.stats.commits[task.index] = self.stats.commits.get(task.index, 0) + 1
        self._finished.add(task.index)
        self._outstanding -= 1
        if task.future is not None:
            task.future._set()
        if self.on_commit is not None:
            self.on_commit(task)
        ready = []
        for child in task.children:
            key = id(child)
            if key in self._pending:
                self._pending[key] -= 1
                if self._pending[key] == 0 and child.index not in self._finished:
                    ready.append(child)
        if ready:
            self.policy.submit(ready)

    def _fail(self, task: Task) -> None:
        if task.index in self._finished:
            return
        self._finished.add(task.index)
        self._outstanding -= 1
        self.stats.poisoned[task.index] = list(task.attempts)
        from ..errors import PoisonedChunkError

        if task.future is not None:
            task.future._set(PoisonedChunkError(
                f"task {task.index} ({task.kernel}) was given up: "
                + "; ".join(f"{d}: {m}" for d, m in task.attempts), poisoned={task.index: list(task.attempts)}))
        for child in task.children:
            if child.index not in self._finished and id(child) in self._pending:
                child.attempts.append(("-", f"input chunk {task.index} failed"))
                self._fail(child)

    def _failure(self, w: Worker, task: Task, error: BaseException) -> None:
        msg = _describe(error)
        earlier_launch_failure = any(d != "-" and not m.startswith(("lost:", "timeout:")) for d, m in task.attempts)
        task.attempts.append((w.id, msg))
        self.stats.retries += 1
        if isinstance(error, DeviceLostError) or msg.startswith("timeout:"):
            self._quarantine(w, msg)
        elif isinstance(error, OutOfMemoryError):
            pass  # too big for this device: retry elsewhere, the device is fine
        elif earlier_launch_failure:
            # The chunk failed elsewhere too: blame the chunk, reinstate devices it got quarantined.
            for other in self._all:
                if other.suspect_for is task and not other.alive:
                    other.alive, other.suspect_for, other.quarantine_reason = True, None, ""
                    log.info("%s reinstated: chunk %d fails on other devices too", other.id, task.index)
        else:
            self._quarantine(w, msg, suspect=task)
        tried = {d for d, _ in task.attempts if d != "-"}
        if len(tried) >= POISON_AFTER:
            log.warning("chunk %d poisoned after failing on %s", task.index, ", ".join(sorted(tried)))
            self._fail(task)
        elif task.index not in self._finished:
            self.policy.submit([task])

    def _quarantine(self, w: Worker, reason: str, suspect: Task | None = None) -> None:
        if not w.alive:
            return
        w.alive, w.quarantine_reason, w.suspect_for = False, reason, suspect
        self.stats.quarantined[w.id] = reason
        log.warning("%s quarantined: %s", w.id, reason)
        if self.tracer is not None:
            self.tracer.instant("quarantine", w.id, {"reason": reason}, at=self._trace_time(self.now()))
        orphans = [t for t in w.queue if t.index not in self._finished]
        w.queue.clear()
        w.queued_pred = 0.0
        if orphans:
            self.policy.submit(orphans)

    def _check_timeouts(self) -> None:
        now = self.now()
        for w in self._all:
            if w.alive and w.running is not None and now >= w.deadline:
                task = w.running
                w.running = None
                limit = w.deadline - w.run_started
                self._failure(w, task, _Timeout(f"timeout: {w.id} ran chunk {task.index} for more than {limit:.3g}s"
                                                f" (predicted {w.run_pred:.3g}s)"))

    def _stall(self, tasks: Sequence[Task]) -> None:
        held = self.policy.pending()
        for t in list(held) + [t for t in tasks if t.index not in self._finished]:
            if t.index not in self._finished:
                alive = ", ".join(w.id for w in self.workers) or "none"
                t.attempts.append(("-", f"no capable device left (alive: {alive})"))
                self._fail(t)

    def _trace_time(self, t: float) -> float | None:
        if self.executor.clock == "wall":
            return None
        return self.tracer.origin + t


class _Timeout(Exception):
    pass


def _describe(error: BaseException) -> str:
    if isinstance(error, _Timeout):
        return str(error)
    if isinstance(error, DeviceLostError):
        return f"lost: {error}"
    if isinstance(error, KernelError):
        return f"launch failed: {error}"
    return f"{type(error).__name__}: {error}"
