"""Tasks, futures and per-run statistics: the records the scheduler passes around.

A :class:`Task` is one kernel launch over one chunk. It owns nothing on a device: its inputs belong to
the caller, and copies the scheduler makes for a launch are released by the worker that made them.
Sizes are bytes, work is operations (``KernelSpec.flops``), times are seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

import dsrt.dtypes as dt

from ..accuracy import tolerance
from ..errors import SchedulingError
from ..kernels import get_kernel

__all__ = ["Task", "Future", "ShapeStub", "RunReport", "RunStats", "Placement", "Candidate", "Attempt",
           "RemoteResult", "describe_inputs", "default_tolerance"]


@runtime_checkable
class RemoteResult(Protocol):
    """An array that lives on another machine (``dsrt.distributed.RemoteArray``): a chunk's result
    on a cluster worker. The scheduler reads its ``shape``/``dtype``/``nbytes`` and ``device`` (whose
    ``id`` is the task's source), and copies it here with :meth:`fetch_to` when a chunk that takes it
    runs on a local device or when ``map`` returns results here."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    device: Any

    def fetch_to(self, device: Any) -> Any:
        """A dsrt Array on local ``device`` holding this array's values (the caller owns it)."""
        ...


@dataclass(frozen=True)
class ShapeStub:
    """Shape and dtype of an array that does not exist (virtual clock workloads)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class Candidate:
    """One device considered for a task: predicted seconds, or why it was excluded."""

    device: str
    capable: bool
    reason: str = ""
    queue_wait: float = 0.0
    transfer: float = 0.0
    run: float = 0.0
    finish: float = float("inf")
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Attempt:
    """One try of a chunk on a device. ``outcome``: ``committed``, ``failed``, ``timed out``,
    ``retried`` (same device again), ``discarded`` (a late result of a chunk already committed).

    ``predicted_s``/``actual_s``: wall-clock seconds on this host (transfer + run); ``modelled_s`` and
    ``modelled_j``: the chip time and energy a simulated device's cost model charged for it.
    """

    device: str
    outcome: str
    predicted_s: float = 0.0
    actual_s: float = 0.0
    message: str = ""
    modelled_s: float | None = None
    modelled_j: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def __str__(self) -> str:
        text = f"{self.device}: {self.outcome} after {self.actual_s:.3g}s (predicted {self.predicted_s:.3g}s)"
        if self.modelled_s is not None:
            text += f"; modelled chip time {self.modelled_s:.3g}s"
        return text + (f": {self.message}" if self.message else "")


@dataclass
class Placement:
    """A placement decision: the chosen device, when (scheduler clock, seconds), and the candidates.

    ``attempts``: every try of the chunk in its run, failures and retries included (filled in as
    the run goes).
    """

    device: str
    policy: str
    at: float
    why: str
    candidates: list[Candidate] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "policy": self.policy, "at": self.at, "why": self.why,
                "candidates": [c.to_dict() for c in self.candidates],
                "attempts": [a.to_dict() for a in self.attempts]}

    def __str__(self) -> str:
        lines = [f"placed on {self.device} by {self.policy}: {self.why}"]
        for c in sorted(self.candidates, key=lambda c: (not c.capable, c.finish)):
            if c.capable:
                lines.append(f"  {c.device:>16}  finish {c.finish:.6g}s = wait {c.queue_wait:.3g}"
                             f" + transfer {c.transfer:.3g} + run {c.run:.3g} ({c.model})")
            else:
                lines.append(f"  {c.device:>16}  excluded: {c.reason}")
        if self.attempts:
            lines.append("  attempts:")
            lines.extend(f"    {a}" for a in self.attempts)
        return "\n".join(lines)


def default_tolerance(kernel: str, dtype: str | None, work: float, out_nbytes: int) -> float | None:
    """The accuracy a task needs when its caller names none: the conformance kit's tolerance.

    The kit allows ``tolerance(dtype, accumulate=K)`` for a result that sums ``K`` terms; ``K`` is
    estimated as the operations per output element (``gemm``: the inner dimension; ``add``: 1;
    a reduction: its length). ``None`` where the dtype is unknown (task kernels).
    """
    if dtype is None:
        return None
    try:
        d = np.dtype(dt.as_dtype(dtype))
    except Exception:  # noqa: BLE001 - a dtype the accuracy table does not know: no constraint
        return None
    elements = max(out_nbytes // max(d.itemsize, 1), 1)
    accumulate = max(1, round(work / elements / 2.0))
    try:
        return tolerance(d, accumulate=accumulate)
    except KeyError:
        return None


def describe_inputs(inputs: Sequence[Any]) -> str:
    return ", ".join(f"{dt.dtype_name(a.dtype)}{tuple(a.shape)}" for a in inputs if hasattr(a, "shape"))


@dataclass(eq=False)
class Task:
    """One launch of ``kernel`` over ``inputs`` with ``params``; ``index`` is its position in the run.

    ``work``: operations; ``nbytes``: input bytes to move; ``out_nbytes``: result bytes; ``dtype``: the
    dtype name that selects an implementation (``None`` for task kernels); ``source``: the device id
    holding the inputs (``None`` = host memory); ``tolerance``: largest acceptable relative error
    (devices with too few ``precision_bits`` are excluded); ``tolerance_source``: ``"caller"`` or
    ``"default"`` (the kit's tolerance). ``deps``: tasks that must finish first. ``history``: every
    attempt, in order (``attempts`` keeps the failures as ``(device, message)`` pairs).
    ``keep_remote``: a remote device's result stays on its worker (a :class:`RemoteResult`
    handle) instead of being fetched before the chunk commits.
    """

    index: int
    kernel: str
    inputs: tuple[Any, ...]
    params: dict[str, Any]
    work: float
    nbytes: int
    out_nbytes: int
    dtype: str | None
    source: str | None = None
    tolerance: float | None = None
    tolerance_source: str = "caller"
    inplace: bool = False
    deps: list[Task] = field(default_factory=list)
    children: list[Task] = field(default_factory=list)
    attempts: list[tuple[str, str]] = field(default_factory=list)
    history: list[Attempt] = field(default_factory=list)
    transient: dict[str, int] = field(default_factory=dict)  # device -> same-device retries used
    placement: Placement | None = None
    priority: float = 0.0
    committed: bool = False
    result: Any = None
    device: str | None = None  # where the committed result lives
    future: Future | None = None
    keep_remote: bool = False

    @classmethod
    def build(cls, index: int, kernel: str, inputs: Sequence[Any], params: Mapping[str, Any], *,
              tolerance: float | None = None, inplace: bool | None = None,
              source: str | None = None) -> Task:
        """Validate ``inputs``/``params`` against the kernel spec and measure work and bytes."""
        spec = get_kernel(kernel)
        shaped = [a for a in inputs if hasattr(a, "shape")]
        bound = spec.bind(shaped, params) if len(shaped) == len(inputs) else dict(params)
        infer_inputs = shaped if len(shaped) == len(inputs) else None
        out_nbytes, dtype = 0, None
        if infer_inputs is not None:
            inferred = spec.infer(infer_inputs, bound)
            if inferred is not None:
                shape, out_dtype = inferred
                out_nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(out_dtype).itemsize
                dtype = dt.dtype_name(spec.key_dtype(infer_inputs, out_dtype))
            try:
                work = float(spec.flops(infer_inputs, bound))
            except Exception:  # noqa: BLE001 - a user kernel without a usable flops estimate
                work = 0.0
        else:
            work = 0.0
        nbytes = sum(int(getattr(a, "nbytes", 0)) for a in shaped)
        if source is None:
            from ..array import Array

            devs = {a.device.id for a in shaped if isinstance(a, (Array, RemoteResult))}
            source = devs.pop() if len(devs) == 1 else None
        return cls(index=index, kernel=kernel, inputs=tuple(inputs), params=dict(params), work=max(work, 1.0),
                   nbytes=nbytes, out_nbytes=out_nbytes, dtype=dtype, source=source, tolerance=tolerance,
                   inplace=bool(inplace if inplace is not None else getattr(spec, "inplace", False)))

    @property
    def size_hint(self) -> float:
        """What "largest first" sorts by: operations plus bytes moved."""
        return self.work + self.nbytes

    def __repr__(self) -> str:
        return f"<Task {self.index} {self.kernel} work={self.work:.3g} bytes={self.nbytes}>"


class Future:
    """The result of :meth:`Scheduler.submit`. Work runs when a result is asked for (or on ``flush``)."""

    def __init__(self, task: Task, flush: Callable[[], object]) -> None:
        self.task = task
        self._flush = flush
        self._error: BaseException | None = None
        self._done = threading.Event()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> Any:
        """The task's result (an Array on the device it ran on); runs pending work first."""
        if not self._done.is_set():
            self._flush()
        if self._error is not None:
            raise self._error
        if not self._done.is_set():
            raise SchedulingError(f"task {self.task.index} ({self.task.kernel}) did not run")
        return self.task.result

    def exception(self) -> BaseException | None:
        if not self._done.is_set():
            self._flush()
        return self._error

    def _set(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<Future task={self.task.index} {self.task.kernel} {state}>"


@dataclass
class RunReport:
    """What happened in one run (``Scheduler.last_run``, ``rt.last_run``, printed by ``dsrt run``).

    ``clock`` is ``"wall"`` (real devices, seconds of ``perf_counter``) or ``"virtual"`` (cost model).
    Per device: ``chunks`` committed, ``busy`` seconds (transfer + run), ``predicted`` seconds the
    model expected for those chunks, ``retries`` on it, ``slower`` (a note where it ran slower than
    predicted), ``modelled_s``/``modelled_j`` (chip time and energy of simulated devices).
    ``quarantined``: device -> reason; ``excluded``: devices never considered, with the reason
    (precision, simulated, health). ``commits`` counts results committed per chunk index (each must
    be 1); ``duplicates`` counts late results dropped because the chunk was already committed.
    ``placements`` holds each chunk's placement with every attempt; ``verified`` the chunks re-run
    by ``verify=`` with their error; ``recomputed`` the chunks run again because their device
    was caught returning wrong results.
    """

    policy: str
    clock: str
    tasks: int = 0
    makespan: float = 0.0
    chunks: dict[str, int] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, float] = field(default_factory=dict)
    work: dict[str, float] = field(default_factory=dict)
    transfer: dict[str, float] = field(default_factory=dict)
    retries_on: dict[str, int] = field(default_factory=dict)
    slower: dict[str, str] = field(default_factory=dict)
    modelled_s: dict[str, float] = field(default_factory=dict)
    modelled_j: dict[str, float] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    poisoned: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    commits: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    duplicates: int = 0
    placements: dict[int, Placement] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    verified: dict[int, dict[str, Any]] = field(default_factory=dict)
    recomputed: list[int] = field(default_factory=list)

    def share(self) -> dict[str, float]:
        """Fraction of the run's operations done by each device."""
        total = sum(self.work.values()) or 1.0
        return {d: self.work.get(d, 0.0) / total for d in self.devices}

    def moved(self) -> dict[str, list[int]]:
        """Chunks that moved off each quarantined device: device -> indices of the chunks that
        failed or timed out there (a lost cluster worker, say) and were committed elsewhere."""
        out: dict[str, list[int]] = {}
        for index, placement in sorted(self.placements.items()):
            final = next((a.device for a in reversed(placement.attempts) if a.outcome == "committed"), None)
            for dev in dict.fromkeys(a.device for a in placement.attempts
                                     if a.outcome in ("failed", "timed out", "late failure")):
                if dev in self.quarantined and final is not None and final != dev:
                    out.setdefault(dev, []).append(index)
        return out

    def attempts(self, index: int) -> list[Attempt]:
        """Every attempt of chunk ``index`` in this run, in order."""
        placement = self.placements.get(index)
        return list(placement.attempts) if placement is not None else []

    def to_dict(self) -> dict[str, Any]:
        share = self.share()
        return {
            "policy": self.policy, "clock": self.clock, "tasks": self.tasks, "makespan_s": self.makespan,
            "devices": {d: {"chunks": self.chunks.get(d, 0), "busy_s": self.busy.get(d, 0.0),
                            "predicted_s": self.predicted.get(d, 0.0), "transfer_s": self.transfer.get(d, 0.0),
                            "retries": self.retries_on.get(d, 0), "share": share.get(d, 0.0),
                            **({"slower_than_predicted": self.slower[d]} if d in self.slower else {}),
                            **({"modelled_s": self.modelled_s[d], "modelled_j": self.modelled_j.get(d, 0.0)}
                               if d in self.modelled_s else {})}
                        for d in self.devices},
            "quarantined": dict(self.quarantined),
            "moved": self.moved(),
            "excluded": dict(self.excluded),
            "poisoned": {str(k): v for k, v in self.poisoned.items()},
            "retries": self.retries, "duplicates": self.duplicates,
            "verified": {str(k): v for k, v in self.verified.items()}, "recomputed": list(self.recomputed),
            "chunks": {str(i): [a.to_dict() for a in p.attempts] for i, p in sorted(self.placements.items())},
        }

    def __str__(self) -> str:
        lines = [f"{self.tasks} chunks by {self.policy} in {self.makespan:.4g}s ({self.clock} clock)"]
        for d in self.devices:
            if d in self.excluded:
                lines.append(f"  {d:>14}  excluded: {self.excluded[d]}")
                continue
            line = (f"  {d:>14}  {self.chunks.get(d, 0):4d} chunks  busy {self.busy.get(d, 0.0):.4g}s"
                    f"  predicted {self.predicted.get(d, 0.0):.4g}s")
            if self.retries_on.get(d):
                line += f"  retries {self.retries_on[d]}"
            if d in self.modelled_s:
                line += f"  modelled chip {self.modelled_s[d]:.4g}s / {self.modelled_j.get(d, 0.0):.4g}J"
            if d in self.quarantined:
                line += f"  QUARANTINED: {self.quarantined[d]}"
            if d in self.slower:
                line += f"  ({self.slower[d]})"
            lines.append(line)
        for dev, moved in self.moved().items():
            lines.append(f"  moved off {dev}: chunks {moved}")
        if self.poisoned:
            lines.append(f"  given up: chunks {sorted(self.poisoned)}")
        if self.verified:
            bad = [i for i, v in self.verified.items() if not v.get("ok")]
            lines.append(f"  verified {len(self.verified)} chunks; disagreed: {bad or 'none'}"
                         + (f"; recomputed {self.recomputed}" if self.recomputed else ""))
        return "\n".join(lines)


#: The earlier name of :class:`RunReport`.
RunStats = RunReport
