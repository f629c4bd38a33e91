"""Scheduling policies: where each ready task goes. The same code runs on wall and virtual clocks.

A policy sees the run through a :class:`PolicyContext` (the engine) and implements up to three calls:

- ``prepare(tasks)``: once per run with every task (ranking a DAG);
- ``submit(tasks)``: tasks that became ready (inputs available); push policies place them on
  per-device queues with ``ctx.assign``, pull policies keep them;
- ``pull(worker)``: an idle device whose queue is empty asks for work.

Tasks re-dispatched after a device failure come back through ``submit``. Plugins add policies with the
``dsrt_register_policies`` hook, returning :class:`PolicySpec` records.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .task import Candidate, Placement, Task

__all__ = [
    "PolicySpec",
    "PolicyContext",
    "Policy",
    "RoundRobin",
    "Eager",
    "WorkStealing",
    "Dmda",
    "Heft",
    "BUILTIN_POLICIES",
]


class PolicyContext(Protocol):
    """What the engine offers a policy. Times are seconds on the run's clock."""

    def now(self) -> float: ...

    @property
    def workers(self) -> Sequence[Any]:
        """Devices still alive, in a stable order (``.id``, ``.info``)."""
        ...

    def capable(self, task: Task, worker: Any) -> tuple[bool, str]:
        """Whether ``worker`` may run ``task``; if not, why (kernel, dtype, precision, failed before)."""
        ...

    def estimate(self, task: Task, worker: Any) -> Candidate:
        """Predicted queue wait + transfer + run and the finish time if ``task`` were queued on ``worker``."""
        ...

    def expected_free(self, worker: Any) -> float:
        """Predicted time at which ``worker`` finishes everything it holds."""
        ...

    def needs_calibration(self, task: Task, worker: Any) -> int:
        """How many more measurements of ``task.kernel`` on ``worker`` the model wants."""
        ...

    def assign(self, task: Task, worker: Any, placement: Placement) -> None:
        """Append ``task`` to ``worker``'s queue."""
        ...

    def queued(self, worker: Any) -> Sequence[Task]: ...

    def steal(self, victim: Any, task: Task) -> bool:
        """Remove ``task`` from ``victim``'s queue; False if it already started."""
        ...

    def unplaceable(self, task: Task, reason: str) -> None:
        """No alive device can run ``task``; the engine fails it."""
        ...


@dataclass(frozen=True)
class PolicySpec:
    """A scheduling policy registered by name: ``factory(ctx) -> Policy``."""

    name: str
    factory: Callable[[PolicyContext], Policy]
    description: str = ""
    cost_based: bool = False


class Policy:
    """Base: no preparation, no pulling. Subclasses override ``submit`` at least."""

    name = "base"

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    def prepare(self, tasks: Sequence[Task]) -> None:
        return None

    def submit(self, tasks: Sequence[Task]) -> None:
        raise NotImplementedError

    def pull(self, worker: Any) -> Task | None:
        return None

    def pending(self) -> list[Task]:
        """Tasks this policy still holds (not on any device queue)."""
        return []

    def _capable(self, task: Task) -> list[Any]:
        return [w for w in self.ctx.workers if self.ctx.capable(task, w)[0]]


class RoundRobin(Policy):
    """Each task to the next capable device in turn, ignoring speed and size."""

    name = "round_robin"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self._turn = itertools.count()

    def submit(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            capable = self._capable(task)
            if not capable:
                self.ctx.unplaceable(task, "no capable device")
                continue
            workers = list(self.ctx.workers)
            start = next(self._turn)
            for k in range(len(workers)):
                w = workers[(start + k) % len(workers)]
                if w in capable:
                    self.ctx.assign(task, w, Placement(w.id, self.name, self.ctx.now(), "next device in turn"))
                    break


class Eager(Policy):
    """One central FIFO queue; an idle device takes the first task it can run."""

    name = "eager"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self._queue: deque[Task] = deque()

    def submit(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            if not self._capable(task):
                self.ctx.unplaceable(task, "no capable device")
            else:
                self._queue.append(task)

    def pull(self, worker: Any) -> Task | None:
        for task in self._queue:
            if self.ctx.capable(task, worker)[0]:
                self._queue.remove(task)
                self.ctx.assign(task, worker, Placement(worker.id, self.name, self.ctx.now(), "idle device pulled it"))
                return task
        return None

    def pending(self) -> list[Task]:
        held = list(self._queue)
        self._queue.clear()
        return held


class WorkStealing(Policy):
    """Tasks dealt round-robin to per-device queues; an idle device steals from the longest queue's tail."""

    name = "work_stealing"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self._rr = RoundRobin(ctx)

    def submit(self, tasks: Sequence[Task]) -> None:
        self._rr.submit(tasks)

    def pull(self, worker: Any) -> Task | None:
        victims = sorted((w for w in self.ctx.workers if w is not worker), key=lambda w: -len(self.ctx.queued(w)))
        for victim in victims:
            for task in reversed(list(self.ctx.queued(victim))):
                if self.ctx.capable(task, worker)[0] and self.ctx.steal(victim, task):
                    why = f"stolen from {victim.id} ({len(self.ctx.queued(victim))} left there)"
                    self.ctx.assign(task, worker, Placement(worker.id, self.name, self.ctx.now(), why))
                    return task
        return None


class Dmda(Policy):
    """Earliest finish time: queue wait + predicted transfer over the links + predicted run; largest first.

    Devices whose model of a kernel is not calibrated yet first get a few of that kernel's smallest
    ready tasks (exploration, as StarPU's calibration runs), so a fast device is never starved by an
    estimate that was only a seed; tasks of such kernels wait (held) until measurements arrive.

    A batch placed at once is then *rebalanced* on the predictions: greedy earliest-finish ignores
    comparative advantage (a device fast at both kernels fills up with whichever came first), so moves
    and swaps of tasks off the device predicted to finish last are applied while they lower that
    finish time (bounded number of steps).
    """

    name = "dmda"
    explore = True
    rebalance = True
    max_rebalance_steps = 256
    #: A refresh chunk must be predicted to finish within this share of the planned makespan.
    refresh_share = 0.5

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self._exploring: dict[tuple[str, str], int] = {}
        self._hopeless: set[tuple[str, str]] = set()
        self._held: list[Task] = []

    def order(self, tasks: Sequence[Task]) -> list[Task]:
        """Largest first, where size is the mean predicted transfer + run over the capable devices."""
        workers = list(self.ctx.workers)

        def size(t: Task) -> float:
            costs = [c.transfer + c.run for c in (self.ctx.estimate(t, w) for w in workers
                                                  if self.ctx.capable(t, w)[0])]
            return sum(costs) / len(costs) if costs else 0.0

        return sorted(tasks, key=lambda t: (-t.priority, -size(t), t.index))

    def submit(self, tasks: Sequence[Task]) -> None:
        ordered = self.order(tasks)
        if self.explore and len(self.ctx.workers) > 1:
            ordered = self._calibrate(ordered)
        ready = []
        for task in ordered:
            if self.explore and not self._known(task):
                self._held.append(task)
            else:
                ready.append(task)
        self.place_batch(ready)

    def _known(self, task: Task) -> bool:
        """True when every capable device has measured ``task.kernel`` (predictions beyond seeds),
        leaving out devices not worth exploring (see :meth:`_hopeless_here`)."""
        return all(self.ctx.needs_calibration(task, w) == 0 or (task.kernel, w.id) in self._hopeless
                   for w in self.ctx.workers if self.ctx.capable(task, w)[0])

    def _hopeless_here(self, group: Sequence[Task], smallest: Task, w: Any) -> bool:
        """True when even the seed estimate of ``w`` for the smallest task exceeds what another
        capable device is predicted to need for the whole group: exploring it could only make the
        run slower (a simulated device whose simulation is slow here, say)."""
        mine = self.ctx.estimate(smallest, w).run
        others = [sum(self.ctx.estimate(t, o).run for t in group) for o in self.ctx.workers
                  if o is not w and self.ctx.capable(smallest, o)[0]]
        return bool(others) and mine > min(others)

    def pull(self, worker: Any) -> Task | None:
        """Place held tasks (their kernel was uncalibrated when they arrived) now that measurements came
        in; while some device is still uncalibrated, place one at a time until ``worker`` has work."""
        if not self._held:
            return None
        held, self._held = self.order(self._held), []
        if self.explore and len(self.ctx.workers) > 1:
            held = self._calibrate(held)
        rest: list[Task] = []
        ready: list[Task] = []
        for task in held:
            (ready if self._known(task) else rest).append(task)
        self.place_batch(ready)
        while rest and not self.ctx.queued(worker):
            self.place(rest.pop(0))
        self._held = rest
        return None

    def pending(self) -> list[Task]:
        held, self._held = self._held, []
        return held

    def place_batch(self, tasks: Sequence[Task]) -> None:
        """Place ``tasks`` (already ordered) by earliest finish, then rebalance the plan."""
        workers = list(self.ctx.workers)
        if not self.rebalance or len(tasks) < 2 or len(workers) < 2:
            for task in tasks:
                self.place(task)
            return
        now = self.ctx.now()
        n, m = len(tasks), len(workers)
        cost = np.full((n, m), np.inf)
        cands: list[list[Candidate]] = []
        for i, task in enumerate(tasks):
            row = []
            for j, w in enumerate(workers):
                ok, reason = self.ctx.capable(task, w)
                if ok:
                    c = self.ctx.estimate(task, w)
                    cost[i, j] = c.transfer + c.run
                    row.append(c)
                else:
                    row.append(Candidate(w.id, False, reason))
            cands.append(row)
        base = np.array([self.ctx.expected_free(w) - now for w in workers])
        # Devices on the same hardware form one resource: the plan gives each task to a resource,
        # which runs it on its cheapest member (they would only split the same cores otherwise).
        groups = hardware_groups(workers)
        rows = np.arange(n)
        rcost = np.full((n, len(groups)), np.inf)
        rdev = np.zeros((n, len(groups)), dtype=int)
        for r, members in enumerate(groups):
            pick = np.argmin(cost[:, members], axis=1)
            rdev[:, r] = np.asarray(members)[pick]
            rcost[:, r] = cost[rows, rdev[:, r]]
        load = np.array([base[members[0]] for members in groups])
        rassign = np.full(n, -1)
        for i in range(n):
            if np.isinf(rcost[i]).all():
                continue
            r = int(np.argmin(load + rcost[i]))
            rassign[i] = r
            load[r] += rcost[i, r]
        rgreedy = rassign.copy()
        before = float(load.max())
        _refine(rcost, load, rassign, max_steps=min(4 * n, self.max_rebalance_steps))
        after = float(load.max())
        assign = np.where(rassign >= 0, rdev[rows, np.maximum(rassign, 0)], -1)
        refreshed = self._refresh(cost, base, assign, after, groups)
        greedy = np.where(rgreedy >= 0, rdev[rows, np.maximum(rgreedy, 0)], -1)
        for i, task in enumerate(tasks):
            j = int(assign[i])
            if j < 0:
                self.ctx.unplaceable(task, "; ".join(f"{c.device}: {c.reason}" for c in cands[i]))
                continue
            chosen = cands[i][j]
            if i in refreshed:
                why = (f"refresh: {workers[j].id} got no other {task.kernel} chunk in this batch, so its model"
                       f" is re-measured on the smallest one (predicted {chosen.run:.3g}s, within the plan's"
                       f" {after:.4g}s)")
            elif j == greedy[i]:
                why = (f"earliest predicted finish (wait {chosen.queue_wait:.3g} + transfer {chosen.transfer:.3g}"
                       f" + run {chosen.run:.3g}s)")
            else:
                why = (f"rebalanced from {workers[int(greedy[i])].id}: predicted batch finish {before:.4g}s ->"
                       f" {after:.4g}s (transfer {chosen.transfer:.3g} + run {chosen.run:.3g}s here)")
            self.ctx.assign(task, workers[j], Placement(workers[j].id, self.name, now, why, cands[i]))

    def _refresh(self, cost: np.ndarray, base: np.ndarray, assign: np.ndarray, makespan: float,
                 groups: Sequence[Sequence[int]]) -> set[int]:
        """Give each capable resource left idle by the plan its cheapest task, when that fits in the plan.

        A device the model thinks slow gets no work, so its model never learns that it is fast again
        (it was measured under load once, say). Devices sharing hardware with a busy one are left
        alone: a chunk there would only take cores from it. One small chunk per batch keeps every
        capable resource measured, at a bounded cost: the
        moved task's predicted finish there stays within :attr:`refresh_share` of the planned
        makespan, so even a prediction off by that factor does not lengthen the run. Returns the
        moved tasks' indices (``assign`` is updated in place).
        """
        moved: set[int] = set()
        n, m = cost.shape
        if n < 2 * m:
            return moved
        busy_hardware = {j for members in groups for j in members if np.isin(assign, members).any()}
        for j in range(m):
            if j in busy_hardware or np.isinf(cost[:, j]).all():
                continue
            i = int(np.argmin(cost[:, j]))
            source = int(assign[i])
            if source < 0 or base[j] + cost[i, j] > self.refresh_share * makespan or (assign == source).sum() < 2:
                continue
            assign[i] = j
            moved.add(i)
        return moved

    def _candidates(self, task: Task) -> list[Candidate]:
        out = []
        for w in self.ctx.workers:
            ok, reason = self.ctx.capable(task, w)
            out.append(self.ctx.estimate(task, w) if ok else Candidate(w.id, False, reason))
        return out

    def place(self, task: Task) -> None:
        candidates = self._candidates(task)
        capable = [c for c in candidates if c.capable]
        if not capable:
            self.ctx.unplaceable(task, "; ".join(f"{c.device}: {c.reason}" for c in candidates) or "no devices")
            return
        best = min(capable, key=lambda c: (c.finish, c.run))
        others = [c for c in capable if c is not best]
        if others:
            runner = min(others, key=lambda c: c.finish)
            why = (f"earliest predicted finish {best.finish:.4g}s vs {runner.finish:.4g}s on {runner.device}"
                   f" (wait {best.queue_wait:.3g} + transfer {best.transfer:.3g} + run {best.run:.3g})")
        else:
            why = "the only capable device"
        worker = next(w for w in self.ctx.workers if w.id == best.device)
        self.ctx.assign(task, worker, Placement(best.device, self.name, self.ctx.now(), why, candidates))

    def _calibrate(self, ordered: list[Task]) -> list[Task]:
        """Send the smallest tasks of each kernel to devices still uncalibrated for it."""
        by_kernel: dict[str, list[Task]] = {}
        for t in ordered:
            by_kernel.setdefault(t.kernel, []).append(t)
        explored: set[int] = set()
        for kernel, group in by_kernel.items():
            pool = list(reversed(group))[: max(len(group) // 2, 0)]  # smallest half only
            for w in self.ctx.workers:
                if not pool:
                    break
                key = (kernel, w.id)
                want = self.ctx.needs_calibration(group[0], w) - self._exploring.get(key, 0)
                if want > 0 and self._hopeless_here(group, pool[0], w):
                    self._hopeless.add(key)
                    continue
                for task in list(pool):
                    if want <= 0:
                        break
                    if not self.ctx.capable(task, w)[0]:
                        continue
                    self.ctx.assign(task, w, Placement(w.id, self.name, self.ctx.now(),
                                                       f"calibration: the model of {kernel} on {w.id} is uncalibrated",
                                                       self._candidates(task)))
                    pool.remove(task)
                    explored.add(id(task))
                    self._exploring[key] = self._exploring.get(key, 0) + 1
                    want -= 1
        return [t for t in ordered if id(t) not in explored]


class Heft(Dmda):
    """HEFT for DAGs: tasks ordered by upward rank (mean run + max over children of transfer + rank),
    each placed on the device with the earliest predicted finish including inputs from predecessors."""

    name = "heft"
    rebalance = False  # plain HEFT: insertion order by rank, earliest finish, no plan repair

    def prepare(self, tasks: Sequence[Task]) -> None:
        workers = list(self.ctx.workers)
        rank: dict[int, float] = {}

        def mean_cost(t: Task) -> float:
            runs = [self.ctx.estimate(t, w).run for w in workers if self.ctx.capable(t, w)[0]]
            return sum(runs) / len(runs) if runs else 0.0

        mean_bw_time = {id(t): _mean_comm(self.ctx, t, workers) for t in tasks}
        # Tasks arrive in submission order, so children come after parents: walk backwards.
        for t in reversed(list(tasks)):
            succ = max((mean_bw_time[id(c)] + rank.get(id(c), 0.0) for c in t.children), default=0.0)
            rank[id(t)] = mean_cost(t) + succ
            t.priority = rank[id(t)]

    def order(self, tasks: Sequence[Task]) -> list[Task]:
        return sorted(tasks, key=lambda t: (-t.priority, t.index))


_SWAP_WINDOW = 96


def hardware_groups(workers: Sequence[Any]) -> list[list[int]]:
    """Indices of ``workers`` grouped by ``info.properties["hardware"]`` (a device without one alone)."""
    groups: list[list[int]] = []
    seen: dict[str, int] = {}
    for j, w in enumerate(workers):
        hw = w.info.properties.get("hardware") if getattr(w, "info", None) is not None else None
        if hw is None:
            groups.append([j])
        elif hw in seen:
            groups[seen[hw]].append(j)
        else:
            seen[hw] = len(groups)
            groups.append([j])
    return groups


def _refine(cost: np.ndarray, load: np.ndarray, assign: np.ndarray, *, max_steps: int) -> None:
    """Lower ``load.max()`` by moving or swapping tasks off the most loaded device (in place).

    ``cost[i, j]``: predicted seconds of task i on device j (inf: incapable); ``load[j]``: predicted
    seconds of device j; ``assign[i]``: device of task i (-1: none).
    """
    m = cost.shape[1]
    for _ in range(max_steps):
        top = int(np.argmax(load))
        peak = float(load[top])
        eps = 1e-9 * peak
        mine = np.flatnonzero(assign == top)
        if mine.size == 0:
            return
        own = cost[mine, top]
        # Best single move: the task leaves ``top`` for device j.
        after_dst = load[None, :] + cost[mine]
        after = np.maximum(after_dst, (peak - own)[:, None])
        after[:, top] = np.inf
        k = int(np.argmin(after))
        best, move = float(after.flat[k]), ("move", int(mine[k // m]), k % m, -1)
        # Best swap with a task u on another device j (among the largest tasks when there are many).
        if mine.size > _SWAP_WINDOW:
            keep = np.argpartition(own, -_SWAP_WINDOW)[-_SWAP_WINDOW:]
            mine, own = mine[keep], own[keep]
        for j in range(m):
            if j == top:
                continue
            theirs = np.flatnonzero(assign == j)
            if theirs.size == 0:
                continue
            if theirs.size > _SWAP_WINDOW:
                theirs = theirs[np.argpartition(cost[theirs, j], -_SWAP_WINDOW)[-_SWAP_WINDOW:]]
            src = peak - own[:, None] + cost[theirs, top][None, :]
            dst = load[j] - cost[theirs, j][None, :] + cost[mine, j][:, None]
            both = np.maximum(src, dst)
            k = int(np.argmin(both))
            if both.flat[k] < best:
                best = float(both.flat[k])
                move = ("swap", int(mine[k // theirs.size]), j, int(theirs[k % theirs.size]))
        if not best < peak - eps:
            return
        kind, i, j, u = move
        load[top] -= cost[i, top]
        load[j] += cost[i, j]
        assign[i] = j
        if kind == "swap":
            load[j] -= cost[u, j]
            load[top] += cost[u, top]
            assign[u] = top


def _mean_comm(ctx: PolicyContext, task: Task, workers: Sequence[Any]) -> float:
    times = [ctx.estimate(task, w).transfer for w in workers if ctx.capable(task, w)[0]]
    return sum(times) / len(times) if times else 0.0


BUILTIN_POLICIES: dict[str, PolicySpec] = {
    "round_robin": PolicySpec("round_robin", RoundRobin, "next capable device in turn"),
    "eager": PolicySpec("eager", Eager, "central FIFO queue; idle devices pull"),
    "work_stealing": PolicySpec("work_stealing", WorkStealing, "dealt round-robin; idle devices steal"),
    "dmda": PolicySpec("dmda", Dmda, "earliest finish time with transfer costs; largest first", cost_based=True),
    "heft": PolicySpec("heft", Heft, "HEFT upward-rank list scheduling for DAGs", cost_based=True),
}
