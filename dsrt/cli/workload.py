"""The main job's workload: a mixed set of kernels run on every device and checked against numpy.

Each :class:`Check` builds host inputs, runs one kernel on a device, and compares with the numpy
reference using a tolerance that fits the dtype (and, for GEMM, the accumulation length). Plugins add
their own checks through the ``dsrt_workload_items`` hook (quantum circuits, spiking networks...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dsrt.dtypes as dt

from ..accuracy import relative_error, tolerance
from ..device import Device
from ..errors import DsrtError
from ..hookspecs import WorkloadItem
from ..kernels import get_kernel, reference

__all__ = ["Check", "CheckResult", "standard_checks", "run_check", "run_item", "tolerance", "relative_error", "balance_demo"]


@dataclass(frozen=True)
class Check:
    """One kernel on one shape and dtype; ``make(rng)`` returns host inputs and params."""

    name: str
    kernel: str
    dtype: str
    make: Callable[[np.random.Generator], tuple[list[np.ndarray], dict[str, Any]]]
    accumulate: int = 1


@dataclass
class CheckResult:
    """The outcome of one check on one device: seconds are device time of the measured run."""

    device: str
    name: str
    ok: bool
    error: float
    tolerance: float
    seconds: float
    flops: float
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "check": self.name, "ok": self.ok, "max_rel_error": self.error,
                "tolerance": self.tolerance, "seconds": self.seconds, "flops": self.flops,
                "message": self.message}


def _rand(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    d = dt.as_dtype(dtype)
    if d in dt.INTEGER_DTYPES:
        return rng.integers(-100, 100, size=shape).astype(d)
    return rng.standard_normal(shape).astype(np.float32).astype(d)


def _gemm(m: int, k: int, n: int, dtype: str) -> Check:
    return Check(f"gemm {dtype} {m}x{k}x{n}", "gemm", dtype,
                 lambda rng: ([_rand(rng, (m, k), dtype), _rand(rng, (k, n), dtype)], {}), accumulate=k)


def standard_checks(*, quick: bool = False) -> list[Check]:
    """The mixed workload of ``dsrt run``: GEMMs in several dtypes, reductions, quantized GEMM."""
    big = 256 if quick else 512
    checks = [
        _gemm(big, big, big, "float32"),
        _gemm(257, 129, 65, "float32"),
        _gemm(128, 128, 128, "float64"),
        _gemm(128, 128, 128, "float16"),
        _gemm(128, 128, 128, "bfloat16"),
        Check("qgemm_int8 256^3", "qgemm_int8", "int8",
              lambda rng: ([rng.integers(-127, 128, (256, 256)).astype(np.int8),
                            rng.integers(-127, 128, (256, 256)).astype(np.int8)], {})),
        Check("quantize_int8 per-channel", "quantize_int8", "float32",
              lambda rng: ([rng.standard_normal((256, 64)).astype(np.float32),
                            rng.uniform(0.01, 0.05, 64).astype(np.float32)], {"axis": 1})),
        Check("reduce_sum float32 1M", "reduce_sum", "float32",
              lambda rng: ([rng.standard_normal(1 << 20).astype(np.float32)], {}), accumulate=1 << 20),
        Check("reduce_max float32 rows", "reduce_max", "float32",
              lambda rng: ([rng.standard_normal((512, 1000)).astype(np.float32)], {"axis": -1})),
        Check("softmax float32 512x1000", "softmax", "float32",
              lambda rng: ([rng.standard_normal((512, 1000)).astype(np.float32)], {}), accumulate=1000),
        Check("add float32 4M", "add", "float32",
              lambda rng: ([rng.standard_normal(1 << 22).astype(np.float32),
                            rng.standard_normal(1 << 22).astype(np.float32)], {})),
        Check("axpy float16 1M", "axpy", "float16",
              lambda rng: ([_rand(rng, (1 << 20,), "float16"), _rand(rng, (1 << 20,), "float16")], {"alpha": 0.5})),
    ]
    return checks


def run_check(device: Device, check: Check, *, seed: int = 0) -> CheckResult | None:
    """Run ``check`` on ``device`` (None when the device does not implement it)."""
    if not device.supports(check.kernel, check.dtype):
        return None
    rng = np.random.default_rng(seed)
    host, params = check.make(rng)
    spec = get_kernel(check.kernel)
    try:
        inputs = [device.asarray(h) for h in host]
        out = device.launch(check.kernel, *inputs, **params)  # warm-up: compiles, fills caches
        device.synchronize()
        t0 = time.perf_counter()
        out = device.launch(check.kernel, *inputs, out=out, **params)
        device.synchronize()
        seconds = time.perf_counter() - t0
        got = out.numpy()
    except DsrtError as exc:
        return CheckResult(device.id, check.name, False, math.inf, 0.0, 0.0, 0.0, str(exc))
    want = reference(check.kernel, *host, **params)
    err = relative_error(got, want)
    tol = tolerance(want.dtype, accumulate=check.accumulate)
    if check.kernel == "quantize_int8":
        # One int8 step of disagreement on exact .5 ties between rounding implementations is allowed.
        err = float(np.max(np.abs(got.astype(np.int32) - want.astype(np.int32))))
        tol = 1.0
    return CheckResult(device.id, check.name, err <= tol, err, tol, seconds, spec.flops(host, {**spec.params, **params}))


def run_item(device: Device, item: WorkloadItem) -> CheckResult:
    """Run a plugin's workload item on ``device``."""
    t0 = time.perf_counter()
    try:
        err, tol, flops = item.run(device)
    except DsrtError as exc:
        return CheckResult(device.id, item.name, False, math.inf, 0.0, time.perf_counter() - t0, 0.0, str(exc))
    return CheckResult(device.id, item.name, err <= tol, float(err), float(tol), time.perf_counter() - t0, float(flops))


def summarize(results: Iterable[CheckResult]) -> dict[str, dict[str, Any]]:
    """Per device: checks run, seconds, GFLOP/s over the checks, worst error/tolerance, verdict."""
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(r.device, {"checks": 0, "failed": 0, "seconds": 0.0, "flops": 0.0, "worst": 0.0})
        row["checks"] += 1
        row["failed"] += 0 if r.ok else 1
        row["seconds"] += r.seconds
        row["flops"] += r.flops
        ratio = r.error / r.tolerance if r.tolerance > 0 else (0.0 if r.error == 0 else math.inf)
        row["worst"] = max(row["worst"], ratio)
    for row in table.values():
        row["gflops"] = row["flops"] / row["seconds"] / 1e9 if row["seconds"] > 0 else 0.0
        row["verdict"] = "PASS" if row["failed"] == 0 else "FAIL"
    return table


def balance_demo(runtime: Any, devices: Sequence[Device], *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Spread float32 GEMM chunks with plain ``rt.map`` defaults; compare with each device alone.

    The together run is exactly what a user writes (``rt.map("gemm", chunks)``: default devices,
    tolerance and policy); ``devices`` are the ones timed alone (those the default placement admits
    are added). Every chunk's result is checked against numpy. Returns per-device shares of the work,
    seconds and GFLOP/s together and alone, the run report, and ``ok``.
    """
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.choice([128, 192, 256, 384] if quick else [256, 384, 512, 640], size=24 if quick else 32)]
    host = [(rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32))
            for n in sizes]
    flops = float(sum(2 * n**3 for n in sizes))

    def run(on: list[str] | None, repeats: int = 3) -> tuple[float, list[Any]]:
        """Best of ``repeats`` wall-clock seconds for the whole map, and the last results."""
        best, out = float("inf"), []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = runtime.map("gemm", host, devices=on)
            for r in out:
                r.device.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best, out

    # Each device alone first: this also measures every device for the performance model.
    ids = [d.id for d in devices]
    alone = {d: run([d])[0] for d in ids}
    run(None, repeats=1)
    seconds, results = run(None)
    stats = runtime.last_run
    for d in stats.devices:
        if d not in alone and d not in stats.excluded and runtime.device(d).supports("gemm", "float32"):
            ids.append(d)
            alone[d] = run([d])[0]
    worst = max(relative_error(r.numpy(), a @ b) / tolerance("float32", accumulate=a.shape[1])
                for r, (a, b) in zip(results, host, strict=True))
    best = min(alone.values())
    return {
        "devices": ids,
        "chunks": len(sizes),
        "share": {d: round(stats.share().get(d, 0.0), 3) for d in ids},
        "chunks_per_device": {d: stats.chunks.get(d, 0) for d in ids},
        "excluded": dict(stats.excluded),
        "seconds_together": round(seconds, 4),
        "gflops_together": round(flops / seconds / 1e9, 2),
        "seconds_alone": {d: round(s, 4) for d, s in alone.items()},
        "gflops_alone": {d: round(flops / s / 1e9, 2) for d, s in alone.items()},
        "speedup_vs_best_alone": round(best / seconds, 3),
        "worst_error_over_tolerance": round(worst, 4),
        "ok": worst <= 1.0,
        "shared_hardware": _shared_hardware([runtime.device(d) for d in ids]),
        "report": stats.to_dict(),
        "report_text": str(stats),
    }


def _shared_hardware(devices: Sequence[Device]) -> dict[str, list[str]]:
    """Hardware names (``properties["hardware"]``) that more than one of ``devices`` runs on."""
    by_hw: dict[str, list[str]] = {}
    for d in devices:
        hw = d.info.properties.get("hardware")
        if hw:
            by_hw.setdefault(str(hw), []).append(d.id)
    return {hw: ids for hw, ids in by_hw.items() if len(ids) > 1}
