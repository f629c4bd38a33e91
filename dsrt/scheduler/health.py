"""Device health that outlives one ``map``: quarantine with exponential backoff, health checks, manual marks.

The :class:`DeviceHealth` registry belongs to a :class:`~dsrt.scheduler.Scheduler` (so to its runtime).
A device the engine quarantines during a run stays out of later runs until its backoff has passed
(``base_backoff * 2 ** (failures - 1)`` seconds, at most ``max_backoff``); the next run that wants it
first runs a *health check* (a small launch compared with the kernel's numpy reference). A device
that passes takes work again; one that fails is quarantined again with a doubled backoff. A device
that completes work has its failure count reset. ``mark_down`` takes a device out until
``mark_up``; neither a backoff nor a health check brings it back.

States: ``healthy``, ``quarantined`` (backoff running or expired, waiting for its check), ``down``.
Thread-safe. Times are seconds of ``time.monotonic`` unless a clock is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..accuracy import relative_error, tolerance
from ..errors import DsrtError
from ..kernels import get_kernel

__all__ = ["DeviceHealth", "HealthRecord", "health_check"]

#: Kernels a health check tries, in order, with the inputs they take (shapes).
_CHECKS: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = (
    ("add", ((64,), (64,))),
    ("gemm", ((16, 16), (16, 16))),
    ("copy", ((64,),)),
)


@dataclass
class HealthRecord:
    """One device's health: ``state``, why, consecutive ``failures`` and when its backoff ends."""

    device: str
    state: str = "healthy"
    reason: str = ""
    failures: int = 0
    until: float = 0.0
    checks: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"device": self.device, "state": self.state, "reason": self.reason, "failures": self.failures,
                "retry_in_s": round(max(self.until - now, 0.0), 3) if self.state == "quarantined" else 0.0,
                "health_checks": self.checks, "events": [e for _t, e in self.events[-8:]]}


class DeviceHealth:
    """Per-device health across runs (see the module docstring). ``clock()`` returns seconds."""

    def __init__(self, *, base_backoff: float = 1.0, max_backoff: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_backoff = float(base_backoff)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, HealthRecord] = {}

    def record(self, device: str) -> HealthRecord:
        with self._lock:
            return self._get(device)

    def _get(self, device: str) -> HealthRecord:
        rec = self._records.get(device)
        if rec is None:
            rec = self._records[device] = HealthRecord(device)
        return rec

    def _event(self, rec: HealthRecord, what: str) -> None:
        rec.events.append((self.clock(), what))
        del rec.events[:-32]

    # ------------------------------------------------------------------ transitions
    def quarantine(self, device: str, reason: str) -> HealthRecord:
        """Take ``device`` out of service; its backoff doubles with each consecutive failure."""
        with self._lock:
            rec = self._get(device)
            if rec.state == "down":
                return rec
            rec.failures += 1
            backoff = min(self.base_backoff * 2.0 ** (rec.failures - 1), self.max_backoff)
            rec.state, rec.reason, rec.until = "quarantined", reason, self.clock() + backoff
            self._event(rec, f"quarantined for {backoff:.3g}s: {reason}")
            return rec

    def succeeded(self, device: str) -> None:
        """``device`` completed work: its consecutive failure count starts again from zero."""
        with self._lock:
            rec = self._records.get(device)
            if rec is not None and rec.state == "healthy" and rec.failures:
                rec.failures = 0

    def mark_down(self, device: str, reason: str = "marked down by the user") -> None:
        """Take ``device`` out of service until :meth:`mark_up`."""
        with self._lock:
            rec = self._get(device)
            rec.state, rec.reason = "down", reason
            self._event(rec, f"down: {reason}")

    def mark_up(self, device: str) -> None:
        """Put ``device`` back in service now (no backoff, no health check)."""
        with self._lock:
            rec = self._get(device)
            rec.state, rec.reason, rec.failures, rec.until = "healthy", "", 0, 0.0
            self._event(rec, "marked up")

    # ------------------------------------------------------------------ admission
    def admit(self, device: Any, check: Callable[[Any], str | None] | None = None) -> tuple[bool, str]:
        """Whether ``device`` may take work now, and if not why.

        A quarantined device whose backoff has passed runs ``check(device)`` (``None`` = passed, else
        the failure); the check runs outside the lock, on the calling thread.
        """
        with self._lock:
            rec = self._get(device.id)
            if rec.state == "healthy":
                return True, ""
            if rec.state == "down":
                return False, f"marked down: {rec.reason}"
            wait = rec.until - self.clock()
            if wait > 0:
                return False, f"quarantined ({rec.reason}); retried in {wait:.3g}s"
        failure = check(device) if check is not None else None
        with self._lock:
            rec.checks += 1
            if failure is None:
                rec.state, rec.reason = "healthy", ""
                self._event(rec, "passed its health check; back in service")
                return True, ""
        rec = self.quarantine(device.id, f"health check failed: {failure}")
        return False, f"quarantined ({rec.reason}); retried in {rec.until - self.clock():.3g}s"

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every device this registry has seen, by id (JSON-ready)."""
        now = self.clock()
        with self._lock:
            return {d: r.to_dict(now) for d, r in sorted(self._records.items())}


def health_check(device: Any) -> str | None:
    """Run one small standard kernel on ``device`` and compare it with the numpy reference.

    Returns ``None`` when the device computed it within the kit's tolerance (or supports none of
    the check kernels, where only a synchronize is possible), else what went wrong.
    """
    rng = np.random.default_rng(0)
    for kernel, shapes in _CHECKS:
        dtypes = [d for d in ("float32", "float64") if device.supports(kernel, d)]
        if not dtypes:
            continue
        host = [rng.standard_normal(s).astype(dtypes[0]) for s in shapes]
        try:
            out = device.launch(kernel, *[device.asarray(x) for x in host])
            got = out.numpy()
        except DsrtError as exc:
            return f"{kernel} failed: {exc}"
        want = get_kernel(kernel).reference(host, get_kernel(kernel).bind(host, {}))
        err = relative_error(got, want)
        bits = getattr(device.info, "precision_bits", None)
        limit = max(tolerance(dtypes[0], accumulate=16), 2.0 ** -bits if bits is not None else 0.0)
        if not err <= limit:
            return f"{kernel} off by {err:.3g} (tolerance {limit:.3g})"
        return None
    try:
        device.synchronize()
    except DsrtError as exc:
        return f"synchronize failed: {exc}"
    return None
