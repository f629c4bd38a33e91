"""The dispatch loop: policies place tasks, executors run them, failures are contained.

One loop serves both clocks. An *executor* starts a task on a worker and reports completions:
:class:`dsrt.scheduler.executors.ThreadExecutor` runs real devices (one thread per device, wall clock),
:class:`dsrt.scheduler.executors.VirtualExecutor` replays cost models (discrete events, virtual clock).

Fault handling (the engine's job, whatever the policy):

- a device that raises :class:`~dsrt.errors.DeviceLostError` is quarantined for the run; its running
  and queued tasks go back to the policy for the survivors;
- a chunk running longer than its deadline (``timeout_factor`` times its prediction, at least
  ``min_timeout`` seconds; four times both while the prediction is only a seed) is given more time
  ``transient_retries`` times, then its device is quarantined and the chunk placed again (a
  speculative re-run on private copies of the inputs; the late original's result is discarded).
  The last capable device for a chunk is never given up while it runs: its deadline keeps growing
  and the report says it was slower than predicted;
- a :class:`~dsrt.errors.TransientDeviceError` is retried on the same device up to
  ``transient_retries`` times before the device is quarantined;
- a device whose launch fails otherwise is quarantined as a *suspect*; if the same chunk then fails on
  another device too, the chunk is to blame and the suspect is reinstated;
- a chunk that failed on three different devices is *poisoned*: given up and reported;
- a result is committed once; a late result of a chunk already committed is dropped and counted.

A device whose handle declares ``pipeline_depth`` > 1 (a remote device behind a network round trip)
holds that many chunks in flight: the oldest is ``running`` (its deadline is timed from when it
became the oldest), the others wait in ``inflight``, already handed to the executor. A device
quarantined with chunks in flight has them placed again, like its queue.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import DeviceLostError, KernelError, OutOfMemoryError, TransientDeviceError
from .links import LinkModel
from .perfmodel import PerfModel
from .policies import Policy, PolicySpec, hardware_groups
from .task import Attempt, Candidate, Placement, RunReport, RunStats, Task

__all__ = ["Worker", "Completion", "Executor", "Engine", "POISON_AFTER"]

log = logging.getLogger("dsrt.scheduler")

#: A chunk that failed on this many different devices is given up.
POISON_AFTER = 3
#: Measurements the model wants per (kernel, device) before it counts as calibrated (the first is
#: dropped, so one is kept).
CALIBRATION_RUNS = 2
#: Deadline multiplier while a prediction is only a seed (no measurement on that device yet).
SEED_UNCERTAINTY = 4.0


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
        #: Why this device takes no work in this run at all ("" = it may): precision, health, simulated.
        self.excluded = ""
        #: Takes a chunk only when no other device can run its kernel ("" = no such restriction):
        #: simulated devices nobody asked for, which still run kernels only they implement.
        self.fallback_only = ""
        self.patience = 0  # deadline extensions granted to the running chunk
        #: Chunks handed to the executor at once (1: one at a time; more hides a network round trip).
        self.slots = max(1, int(getattr(handle, "pipeline_depth", 1) or 1))
        #: Started behind ``running`` (only when ``slots`` > 1): (task, predicted seconds).
        self.inflight: deque[tuple[Task, float]] = deque()

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
    modelled_s: float | None = None
    modelled_j: float | None = None


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
        transient_retries: int = 1,
        deadline: float | None = None,
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
        self.transient_retries = transient_retries
        self.run_deadline = deadline  # seconds on the run's clock after which unfinished chunks are given up
        self.spec = policy
        self.stats = RunReport(policy=policy.name, clock=executor.clock, devices=[w.id for w in workers])
        for w in workers:
            if w.excluded:
                self.stats.excluded[w.id] = w.excluded
        self._outstanding = 0
        self._finished: set[int] = set()
        self._implementer_cache: dict[tuple[str, str | None], list[Worker]] = {}
        self.policy: Policy = policy.factory(self)

    # ------------------------------------------------------------------ policy context
    def now(self) -> float:
        return self.executor.now()

    @property
    def workers(self) -> list[Worker]:
        return [w for w in self._all if w.alive]

    def capable(self, task: Task, worker: Worker) -> tuple[bool, str]:
        if worker.excluded:
            return False, worker.excluded
        if worker.fallback_only and any(o.alive for o in self._implementers(task.kernel, task.dtype)):
            return False, worker.fallback_only
        if not worker.alive:
            return False, f"quarantined: {worker.quarantine_reason}"
        if any(dev == worker.id for dev, _ in task.attempts):
            return False, "this chunk already failed there"
        if not worker.supports(task.kernel, task.dtype):
            what = f"kernel '{task.kernel}'" + (f" for {task.dtype}" if task.dtype else "")
            return False, f"does not implement {what}"
        bits = getattr(worker.info, "precision_bits", None)
        if task.tolerance is not None and bits is not None and 2.0 ** (-bits) > task.tolerance:
            why = (f"precision {bits:g} bits (error ~{2.0 ** -bits:.2g}) cannot meet tolerance {task.tolerance:.3g}")
            if task.tolerance_source == "default":
                why += (f", the default for {task.kernel} in {task.dtype}; pass tolerance= to admit"
                        " inexact devices")
            return False, why
        return True, ""

    def _implementers(self, kernel: str, dtype: str | None) -> list[Worker]:
        """Workers that may take ``kernel`` in ``dtype`` without being fallback-only (per run, cached:
        ``capable`` asks this for every simulated device and every task)."""
        key = (kernel, dtype)
        found = self._implementer_cache.get(key)
        if found is None:
            found = self._implementer_cache[key] = [
                o for o in self._all if not o.excluded and not o.fallback_only and o.supports(kernel, dtype)]
        return found

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
            held += w.queued_pred + sum(pred for _t, pred in w.inflight)
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
        placement.attempts = task.history
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
        excluded = [Candidate(w.id, False, self.capable(task, w)[1] or "not chosen") for w in self._all]
        placement = Placement("-", self.spec.name, self.now(), f"no device can run it: {reason}", excluded,
                              task.history)
        task.placement = self.stats.placements[task.index] = placement
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
                if self.run_deadline is not None:
                    deadline = min(deadline, self.run_deadline)
                timeout = None if math.isinf(deadline) else max(deadline - self.now(), 0.0)
                done = self.executor.wait(timeout)
                if done is None:
                    if self.run_deadline is not None and self.now() >= self.run_deadline:
                        self._give_up_all(tasks, f"the run's timeout of {self.run_deadline:.3g}s passed")
                        break
                    self._check_timeouts()
                else:
                    self._complete(done)
                    if self.executor.clock == "wall":
                        # Take every completion already in before placing more, so a pipelined device's
                        # freed slots are refilled in one pass (the virtual clock must not run ahead).
                        while (more := self.executor.wait(0.0)) is not None:
                            self._complete(more)
        finally:
            self.executor.close()
        stats.makespan = self.now() - t0
        for w in self._all:
            if w.fallback_only and not stats.chunks.get(w.id):
                stats.excluded[w.id] = w.fallback_only
        return stats

    def _dispatch(self) -> None:
        # A pull may queue work on other idle devices too: scan until nothing more starts.
        started = True
        while started:
            started = False
            for w in self._all:
                if not w.alive:
                    continue
                if w.running is None and w.inflight:
                    self._promote(w, *w.inflight.popleft())
                if w.running is not None and len(w.inflight) + 1 >= w.slots:
                    continue
                task = self._next(w)
                if task is None:
                    continue
                pred = getattr(task, "_pred", 0.0)
                w.queued_pred = max(w.queued_pred - pred, 0.0)
                if w.running is None:
                    self._promote(w, task, pred)
                else:
                    w.inflight.append((task, pred))
                self.executor.start(w, task)
                started = True

    def _promote(self, w: Worker, task: Task, pred: float) -> None:
        """Make ``task`` the chunk ``w`` is timed on (its deadline starts now)."""
        w.running, w.run_started, w.run_pred, w.patience = task, self.now(), pred, 0
        w.deadline = self.now() + self._allowance(task, w) if self.executor.clock == "wall" else math.inf

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
        run, source = self.model.predict(task.kernel, worker.info, task.work, task.nbytes)
        task._pred_source = source  # type: ignore[attr-defined]
        return run + self.transfer_time(task, worker)

    def _allowance(self, task: Task, w: Worker) -> float:
        """Seconds a chunk may run before its deadline: wider while the prediction is only a seed."""
        seeded = str(getattr(task, "_pred_source", "seed")).startswith("seed")
        scale = SEED_UNCERTAINTY if seeded else 1.0
        return max(self.timeout_factor * scale * w.run_pred, self.min_timeout * scale)

    def _attempt(self, task: Task, w: Worker, outcome: str, done: Completion | None = None, message: str = "") -> None:
        actual = (done.transfer_s + done.compute_s) if done is not None and done.error is None else \
            (done.ended - done.started if done is not None else self.now() - w.run_started)
        task.history.append(Attempt(w.id, outcome, getattr(task, "_pred", 0.0), max(actual, 0.0), message,
                                    done.modelled_s if done is not None else None,
                                    done.modelled_j if done is not None else None))

    def _complete(self, done: Completion) -> None:
        w, task = done.worker, done.task
        if w.running is task:
            w.running, w.deadline = None, math.inf
        else:
            for entry in w.inflight:
                if entry[0] is task:
                    w.inflight.remove(entry)
                    break
        if done.error is None:
            if w.alive:
                self.model.record(task.kernel, w.info, task.work, done.compute_s)
            if done.modelled_s is not None:
                self.stats.modelled_s[w.id] = self.stats.modelled_s.get(w.id, 0.0) + done.modelled_s
                self.stats.modelled_j[w.id] = self.stats.modelled_j.get(w.id, 0.0) + (done.modelled_j or 0.0)
            if task.index in self._finished:
                self._attempt(task, w, "discarded", done, "the chunk was already committed")
                self.stats.duplicates += 1
                return
            self._attempt(task, w, "committed", done)
            pred = getattr(task, "_pred", 0.0)
            self.stats.predicted[w.id] = self.stats.predicted.get(w.id, 0.0) + pred
            self.stats.chunks[w.id] = self.stats.chunks.get(w.id, 0) + 1
            self.stats.busy[w.id] = self.stats.busy.get(w.id, 0.0) + done.compute_s + done.transfer_s
            self.stats.transfer[w.id] = self.stats.transfer.get(w.id, 0.0) + done.transfer_s
            self.stats.work[w.id] = self.stats.work.get(w.id, 0.0) + task.work
            self._commit(task, done.result, w)
            return
        if not w.alive and w.running is None:
            # A late failure from a device already quarantined (e.g. after a timeout): nothing new.
            self._attempt(task, w, "late failure", done, _describe(done.error))
            if task.index not in self._finished and not any(d == w.id for d, _ in task.attempts):
                task.attempts.append((w.id, _describe(done.error)))
            return
        if isinstance(done.error, TransientDeviceError) and self._retry_here(w, task, done):
            return
        self._attempt(task, w, "failed", done, _describe(done.error))
        self._failure(w, task, done.error)

    def _retry_here(self, w: Worker, task: Task, done: Completion) -> bool:
        """Put ``task`` back at the head of ``w``'s queue after a transient fault, a bounded number of times."""
        used = task.transient.get(w.id, 0)
        if used >= self.transient_retries or task.index in self._finished or done.error is None:
            return False
        task.transient[w.id] = used + 1
        self._attempt(task, w, "retried", done, _describe(done.error))
        self.stats.retries += 1
        self.stats.retries_on[w.id] = self.stats.retries_on.get(w.id, 0) + 1
        w.queue.appendleft(task)
        w.queued_pred += getattr(task, "_pred", 0.0)
        return True

    def _commit(self, task: Task, result: Any, w: Worker) -> None:
        if task.index in self._finished:
            self.stats.duplicates += 1
            log.debug("chunk %d: late result from %s dropped (already committed)", task.index, w.id)
            return
        elapsed = task.history[-1].actual_s if task.history else 0.0
        pred = getattr(task, "_pred", 0.0)
        if self.executor.clock == "wall" and pred > 0 and elapsed > self.timeout_factor * pred and elapsed > 0.05:
            self.stats.slower[w.id] = (f"chunk {task.index} took {elapsed:.3g}s, predicted {pred:.3g}s"
                                       f" ({elapsed / pred:.3g}x)")
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
        self.stats.retries_on[w.id] = self.stats.retries_on.get(w.id, 0) + 1
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
        # A pipelined device can fail on a chunk behind the one it is timed on: that one moves too.
        ahead = [w.running] if w.running is not None else []
        w.running, w.deadline = None, math.inf
        orphans = [t for t in ahead if t.index not in self._finished]
        orphans += [t for t, _pred in w.inflight if t.index not in self._finished]
        orphans += [t for t in w.queue if t.index not in self._finished]
        w.inflight.clear()
        w.queue.clear()
        w.queued_pred = 0.0
        if orphans:
            self.policy.submit(orphans)

    def _check_timeouts(self) -> None:
        now = self.now()
        for w in self._all:
            if w.alive and w.running is not None and now >= w.deadline:
                task = w.running
                limit = w.deadline - w.run_started
                others = [o for o in self._all if o is not w and o.alive and self.capable(task, o)[0]]
                if not others or w.patience < self.transient_retries:
                    # More time: once as a transient fault, and always for the last device that can run it.
                    w.patience += 1
                    w.deadline = now + max(limit, self._allowance(task, w))
                    self.stats.slower[w.id] = (f"chunk {task.index} still running after {now - w.run_started:.3g}s,"
                                               f" predicted {w.run_pred:.3g}s")
                    continue
                w.running = None
                timeout = _Timeout(f"timeout: {w.id} ran chunk {task.index} for more than {limit:.3g}s"
                                   f" (predicted {w.run_pred:.3g}s)")
                self._attempt(task, w, "timed out", None, str(timeout))
                self._failure(w, task, timeout)

    def _give_up_all(self, tasks: Sequence[Task], reason: str) -> None:
        for t in list(self.policy.pending()) + list(tasks):
            if t.index not in self._finished:
                t.attempts.append(("-", reason))
                self._fail(t)

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
