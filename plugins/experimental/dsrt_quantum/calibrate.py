"""The fusion cost model, measured once per host device and precision (and cached on disk).

Each dense width k = 1..6 and the diagonal kernel are timed on a 2^22-amplitude state (larger than
a typical last-level cache, like the states where fusion matters); the launch overhead is timed on
a 4-qubit state. Results are seconds per amplitude and seconds per launch, stored as JSON under
``$DSRT_CACHE_DIR/quantum`` keyed by the host's name and the precision.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dsrt.device import Device

from .fusion import CostModel
from .statevector import StateVector

__all__ = ["cost_model"]

_N = 22
_lock = threading.Lock()
_models: dict[tuple[str, str], CostModel] = {}


def _cache_file() -> Path:
    from dsrt.kernel_cache import cache_dir

    return cache_dir() / "quantum" / "cost_model.json"


def _best(fn: Callable[[], object], reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _dense_costs(host: Device, dtype: np.dtype) -> tuple[dict[int, float], float]:
    rng = np.random.default_rng(1)
    sv = StateVector(host, _N, dtype)
    dense: dict[int, float] = {}
    for k in range(1, 7):
        qs = [1 + (i * 5) % (_N - 1) for i in range(k)]
        m = np.linalg.qr(rng.normal(size=(1 << k, 1 << k)) + 1j * rng.normal(size=(1 << k, 1 << k)))[0]
        sv.apply_dense(qs, m)
        dense[k] = _best(functools.partial(sv.apply_dense, qs, m)) / (1 << _N)
    d = np.exp(1j * rng.normal(size=1 << 8))
    diag = _best(lambda: sv.apply_diag(list(range(0, 16, 2)), d)) / (1 << _N)
    return dense, diag


def _measure(host: Device, dtype: np.dtype) -> CostModel:
    dense, diag = _dense_costs(host, dtype)
    small = StateVector(host, 4, dtype)
    h = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
    launch = _best(lambda: small.apply_dense([0], h), reps=20)
    return CostModel(dense=dense, diag=diag, launch=launch)


def cost_model(host: Device, dtype: np.dtype) -> CostModel:
    """The measured :class:`CostModel` for states of ``dtype`` on ``host``."""
    key = (f"{host.info.backend}:{host.info.name}:{host.info.compute_units}", np.dtype(dtype).name)
    with _lock:
        model = _models.get(key)
        if model is not None:
            return model
        path = _cache_file()
        stored: dict[str, Any] = {}
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        entry: Any = stored.get("|".join(key))
        if entry is not None:
            model = CostModel(dense={int(k): float(v) for k, v in entry["dense"].items()},
                              diag=float(entry["diag"]), launch=float(entry["launch"]))
        else:
            model = _measure(host, dtype)
            stored["|".join(key)] = {"dense": model.dense, "diag": model.diag, "launch": model.launch}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(stored))
                tmp.replace(path)
            except OSError:
                pass
        _models[key] = model
        return model
