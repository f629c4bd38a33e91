"""Performance model: predicted run time of a kernel on a device for a given amount of work.

Per ``(kernel, device)`` the model keeps measured ``(operations, seconds)`` samples in size buckets
(one bucket per power of two of operations, at most :attr:`PerfModel.per_bucket` samples each, the
newest kept). A prediction uses, in order:

1. ``history``: the task's bucket has at least two samples; their median seconds per operation times
   the task's operations;
2. ``regression``: samples spanning at least 1.5x in operations; a least-squares fit
   ``seconds = a + b * operations`` (``a, b >= 0``);
3. ``rate``: any sample; its seconds per operation;
4. ``seed``: no measurement on this device yet. If other devices measured the kernel, the
   peak estimate is trusted for relative speed only: ``operations / peak_flops`` times the median,
   over those devices, of (measured seconds per operation x their peak_flops). Otherwise
   ``operations / DeviceInfo.peak_flops + bytes / memory_bandwidth``.

Calibration is online: the first measurement of a kernel on a device is dropped (compilation, caches,
first-touch allocation), and a sample more than :attr:`PerfModel.outlier_factor` times off its bucket's
median rate is discarded once the bucket holds three samples. Models persist as JSON under
``$DSRT_CACHE_DIR`` (default ``~/.cache/dsrt``; ``DSRT_PERFMODEL=off`` keeps them in memory only).

Writes are batched (at most one every :attr:`PerfModel.save_interval` seconds, plus one at exit) and
atomic (a temporary file renamed into place). Processes sharing the file merge instead of
overwriting: a save takes an exclusive ``flock`` on ``perfmodel.json.lock``, re-reads the file,
keeps every entry it does not hold itself, and renames the merged file into place, so two
processes writing at once never corrupt it nor lose each other's devices.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PerfModel", "default_model_path", "device_key"]

log = logging.getLogger("dsrt.scheduler")

_FORMAT_VERSION = 1


def default_model_path() -> Path:
    """``$DSRT_CACHE_DIR/perfmodel.json`` or ``~/.cache/dsrt/perfmodel.json``."""
    base = os.environ.get("DSRT_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "dsrt"
    return root / "perfmodel.json"


def device_key(info: Any) -> str:
    """The model's key for a device: its id and model name (another machine's ``cpu:0`` differs)."""
    return f"{info.id}|{info.name}"


def _bucket(work: float) -> int:
    return math.floor(math.log2(max(work, 1.0)))


class _Entry:
    __slots__ = ("buckets", "cache", "discarded", "outliers", "peak", "seen")

    def __init__(self, seen: int = 0, buckets: dict[int, list[list[float]]] | None = None, discarded: int = 0,
                 peak: float = 0.0):
        self.seen = seen
        self.buckets: dict[int, list[list[float]]] = buckets or {}
        self.discarded = discarded
        self.peak = peak  # the device's declared peak operations/s when measured
        self.cache: tuple[dict[int, float], tuple[float, float] | None, float] | None = None
        # bucket -> the latest consecutive outliers (not persisted): a run of agreeing ones means
        # conditions changed (load went away, a driver was upgraded) and replaces the history.
        self.outliers: dict[int, list[list[float]]] = {}

    def derived(self) -> tuple[dict[int, float], tuple[float, float] | None, float]:
        """(median rate per bucket with two samples or more, regression fit, overall median rate)."""
        if self.cache is None:
            samples = self.samples()
            rates = {b: float(np.median([t / w for w, t in s])) for b, s in self.buckets.items() if len(s) >= 2}
            overall = float(np.median([t / w for w, t in samples])) if samples else 0.0
            self.cache = (rates, _fit(samples), overall)
        return self.cache

    def samples(self) -> list[list[float]]:
        return [s for b in self.buckets.values() for s in b]


class PerfModel:
    """History plus regression per (kernel, device); thread-safe. ``path=None`` keeps it in memory."""

    per_bucket = 5
    outlier_factor = 3.0
    #: Seconds between two writes of the file (:meth:`save_soon`); :meth:`save` writes at once.
    save_interval = 2.0

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._scale: dict[str, tuple[float, int]] = {}
        self._dirty = False
        self._saved_at = 0.0
        if self.path is not None:
            self._load()
            _DIRTY_AT_EXIT.add(self)

    # ------------------------------------------------------------------ queries
    def predict(self, kernel: str, info: Any, work: float, nbytes: int = 0) -> tuple[float, str]:
        """Predicted seconds for ``work`` operations on the device ``info`` describes, and the source."""
        with self._lock:
            entry = self._entries.get(f"{kernel}@{device_key(info)}")
            if entry is not None and entry.buckets:
                rates, fit, overall = entry.derived()
                rate = rates.get(_bucket(work))
                if rate is not None:
                    return rate * work, "history"
                if fit is not None:
                    a, b = fit
                    return a + b * work, "regression"
                return overall * work, "rate"
            peak = float(getattr(info, "peak_flops", 0.0) or 0.0)
            bw = float(getattr(info, "memory_bandwidth", 0.0) or 0.0)
            seconds = (work / peak if peak > 0 else work * 1e-9) + (nbytes / bw if bw > 0 else 0.0)
            # Other devices measured this kernel: peak estimates are trusted for relative speed only,
            # so scale the seed by how far measurements on those devices were from their own seeds.
            scale = self._scale.get(kernel)
            if scale is None:
                factors = [other.derived()[2] * other.peak for key, other in self._entries.items()
                           if key.startswith(f"{kernel}@") and other.peak > 0 and other.buckets]
                scale = self._scale[kernel] = (float(np.median(factors)) if factors else 0.0, len(factors))
            if scale[0] > 0 and peak > 0:
                return work / peak * scale[0], f"seed scaled by {scale[1]} measured device(s)"
            return seconds, "seed"

    def calibrated(self, kernel: str, info: Any) -> bool:
        """True once a measurement was kept for this kernel on this device."""
        with self._lock:
            entry = self._entries.get(f"{kernel}@{device_key(info)}")
            return entry is not None and len(entry.samples()) >= 1

    def measurements(self, kernel: str, info: Any) -> int:
        """Measurements offered so far (kept, dropped or discarded) for this kernel on this device."""
        with self._lock:
            entry = self._entries.get(f"{kernel}@{device_key(info)}")
            return 0 if entry is None else entry.seen

    def samples(self, kernel: str, info: Any) -> int:
        with self._lock:
            entry = self._entries.get(f"{kernel}@{device_key(info)}")
            return 0 if entry is None else len(entry.samples())

    # ------------------------------------------------------------------ calibration
    #: This many consecutive outliers that agree with each other replace a bucket's history.
    regime_change_after = 3

    def record(self, kernel: str, info: Any, work: float, seconds: float) -> bool:
        """Add a measurement (operations, seconds); returns False if it was dropped or discarded.

        A sample more than ``outlier_factor`` away from its bucket's median is discarded, unless it
        is the ``regime_change_after``-th consecutive such sample and they agree with each other:
        then the device's behaviour has changed and they replace the bucket's history.
        """
        if not (seconds > 0 and math.isfinite(seconds)):
            return False
        work = max(float(work), 1.0)
        with self._lock:
            key = f"{kernel}@{device_key(info)}"
            entry = self._entries.setdefault(key, _Entry())
            entry.peak = float(getattr(info, "peak_flops", 0.0) or 0.0)
            entry.seen += 1
            self._dirty = True
            if entry.seen == 1:
                return False
            key_b = _bucket(work)
            bucket = entry.buckets.setdefault(key_b, [])
            if len(bucket) >= 3:
                median = float(np.median([t / w for w, t in bucket]))
                ratio = (seconds / work) / median
                if ratio > self.outlier_factor or ratio < 1.0 / self.outlier_factor:
                    entry.discarded += 1
                    streak = entry.outliers.setdefault(key_b, [])
                    streak.append([work, float(seconds)])
                    rates = [t / w for w, t in streak]
                    if len(streak) < self.regime_change_after or max(rates) > self.outlier_factor * min(rates):
                        if len(streak) >= self.regime_change_after:
                            del streak[0]
                        return False
                    entry.buckets[key_b] = [list(x) for x in streak]
                    del entry.outliers[key_b]
                    entry.cache = None
                    self._scale.pop(kernel, None)
                    return True
            entry.outliers.pop(key_b, None)
            bucket.append([work, float(seconds)])
            entry.cache = None
            self._scale.pop(kernel, None)
            if len(bucket) > self.per_bucket:
                del bucket[0]
            return True

    def copy(self) -> PerfModel:
        """An in-memory clone (no path): what-if runs that must not disturb this model."""
        clone = PerfModel()
        with self._lock:
            clone._entries = {k: _Entry(e.seen, {b: [list(s) for s in v] for b, v in e.buckets.items()}, e.discarded,
                                        e.peak) for k, e in self._entries.items()}
        return clone

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._scale.clear()
            self._dirty = True

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"version": _FORMAT_VERSION, "models": {
                k: {"seen": e.seen, "discarded": e.discarded, "peak_flops": e.peak,
                    "buckets": {str(b): s for b, s in sorted(e.buckets.items())}}
                for k, e in sorted(self._entries.items())}}

    def save_soon(self) -> None:
        """Write if the last write is older than :attr:`save_interval` seconds (else at exit)."""
        if self.path is not None and self._dirty and time.monotonic() - self._saved_at >= self.save_interval:
            self.save()

    def save(self) -> Path | None:
        """Merge the models into ``path`` now (lock, re-read, merge, atomic rename); no-op in memory."""
        if self.path is None or not self._dirty:
            return self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.path.with_name(self.path.name + ".lock")):
            ours = self.to_dict()
            merged = {**_read_models(self.path), **ours["models"]}
            data = {"version": _FORMAT_VERSION, "models": dict(sorted(merged.items()))}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "w") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        self._dirty = False
        self._saved_at = time.monotonic()
        return self.path

    def _load(self) -> None:
        assert self.path is not None
        for key, e in _read_models(self.path).items():
            try:
                buckets = {int(b): [[float(w), float(t)] for w, t in s] for b, s in e["buckets"].items()}
                self._entries[key] = _Entry(int(e["seen"]), buckets, int(e.get("discarded", 0)),
                                            float(e.get("peak_flops", 0.0)))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring malformed model entry %s in %s: %s", key, self.path, exc)


def _read_models(path: Path) -> dict[str, Any]:
    """The ``models`` mapping of a model file ({} when absent, unreadable or of another version)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable performance model %s: %s", path, exc)
        return {}
    if not isinstance(raw, dict) or raw.get("version") != _FORMAT_VERSION or not isinstance(raw.get("models"), dict):
        log.warning("ignoring performance model %s: unknown format version", path)
        return {}
    return dict(raw["models"])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the block; a no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_DIRTY_AT_EXIT: weakref.WeakSet[PerfModel] = weakref.WeakSet()


@atexit.register
def _save_at_exit() -> None:
    for model in list(_DIRTY_AT_EXIT):
        try:
            model.save()
        except OSError as exc:
            log.warning("could not save the performance model to %s: %s", model.path, exc)


def _fit(samples: list[list[float]]) -> tuple[float, float] | None:
    """Least-squares ``seconds = a + b * work`` with ``a, b >= 0``; None if the work does not vary."""
    if len(samples) < 2:
        return None
    w = np.array([s[0] for s in samples])
    t = np.array([s[1] for s in samples])
    if w.max() < 1.5 * w.min():
        return None
    # Relative least squares: divide each row by t so small tasks count as much as large ones.
    A = np.stack([np.ones_like(w), w], axis=1) / t[:, None]
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    if a < 0 or b <= 0:
        a, b = 0.0, float(np.sum(w * t / t**2) / np.sum(w * w / t**2))
    return float(a), float(b)
