"""Load-balancing quality on a virtual clock: makespan over a lower bound, for every policy.

Workload: N independent chunks (N in 32, 256, 2048), input sizes uniform or lognormal (sigma 0.75)
around MEAN_BYTES, each chunk running ``gemm`` or ``softmax`` (chosen at random), from fixed seeds.
Devices (virtual, cost models; operations per second per kernel, host link latency and bandwidth):
speeds spread over 16x, relative speeds of the two kernels differ per device, ``npu:0`` runs only
``gemm``, ``remote:0`` sits behind a slow link. Run times get multiplicative lognormal noise
(``--noise``, default sigma 0.02) so the performance model has something to calibrate against.

Lower bound per instance: max(LP area bound, the largest chunk's time on its fastest capable device),
where the LP (scipy.optimize.linprog, HiGHS) is the minimum T such that chunks split fractionally
over capable devices load every device at most T; a chunk's cost on a device is its input transfer
plus its noise-free run time. R = makespan / bound; median and p95 over the seeds.

"Calibrated": every run starts from a performance model trained on a separate workload (seed 10_000).
"Uncalibrated": a fresh model (seeded only from DeviceInfo peak_flops), run twice on each instance.

    python benchmarks/balance.py --json [--seeds 10] [--sizes 32,256,2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from dsrt.scheduler import BUILTIN_POLICIES, PerfModel, StarLinks, VirtualDevice, make_tasks, simulate
from dsrt.scheduler.virtual import lognormal_sizes

MEAN_BYTES = 1 << 20
KERNELS = ("gemm", "softmax")
POLICIES = ("round_robin", "eager", "work_stealing", "dmda", "heft")


def make_devices() -> tuple[list[VirtualDevice], StarLinks]:
    """The device set: (id, gemm ops/s, softmax ops/s or None, launch overhead s, link (latency s, B/s))."""
    table = [
        ("gpu:0", 16e10, 8e8, 10e-6, (5e-6, 16e9)),
        ("gpu:1", 8e10, 12e8, 10e-6, (5e-6, 16e9)),
        ("cpu:0", 1e10, 6e8, 2e-6, (1e-6, 20e9)),
        ("npu:0", 12e10, None, 20e-6, (10e-6, 16e9)),
        ("remote:0", 6e10, 4e8, 10e-6, (50e-6, 0.5e9)),
    ]
    devices, links = [], {}
    for ident, gemm, softmax, overhead, link in table:
        speeds = {"gemm": gemm} if softmax is None else {"gemm": gemm, "softmax": softmax}
        # What the scheduler is told before measuring: the gemm peak only (honestly wrong for softmax).
        devices.append(VirtualDevice(ident, speeds, overhead=overhead, peak_flops=gemm, memory_bandwidth=0.0))
        links[ident] = link
    return devices, StarLinks(links)


def make_instance(n: int, dist: str, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        sizes = rng.uniform(0.25 * MEAN_BYTES, 1.75 * MEAN_BYTES, n)
    else:
        sizes = lognormal_sizes(rng, n, MEAN_BYTES, 0.75)
    kernels = rng.choice(len(KERNELS), n)
    return [(KERNELS[k], max(int(s), 1024)) for k, s in zip(kernels, sizes, strict=True)]


def lower_bound(tasks: list[Any], devices: list[VirtualDevice], links: StarLinks) -> float:
    """max(LP area bound, largest chunk's best time), seconds."""
    cols: list[tuple[int, int, float]] = []
    best_each = []
    for i, t in enumerate(tasks):
        costs = [(d, links.time(None, dev.id, t.nbytes) + dev.run_time(t.kernel, t.work))
                 for d, dev in enumerate(devices) if dev.supports(t.kernel)]
        best_each.append(min(c for _, c in costs))
        cols.extend((i, d, c) for d, c in costs)
    n, m, k = len(tasks), len(devices), len(cols)
    # Variables: x_0..x_{k-1} (fraction of chunk i on device d), then T.
    c = np.zeros(k + 1)
    c[-1] = 1.0
    rows_ub = [d for _, d, _ in cols] + list(range(m))
    cols_ub = list(range(k)) + [k] * m
    vals_ub = [cost for _, _, cost in cols] + [-1.0] * m
    a_ub = sparse.csr_matrix((vals_ub, (rows_ub, cols_ub)), shape=(m, k + 1))
    a_eq = sparse.csr_matrix(([1.0] * k, ([i for i, _, _ in cols], list(range(k)))), shape=(n, k + 1))
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(m), A_eq=a_eq, b_eq=np.ones(n), bounds=(0, None), method="highs")
    if not res.success:
        raise RuntimeError(f"LP failed: {res.message}")
    return max(float(res.fun), max(best_each))


def noise_fn(sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    if sigma <= 0:
        return None
    return lambda worker, task: float(rng.lognormal(0.0, sigma))


def run_policy(policy: str, items: list[tuple[str, int]], devices: list[VirtualDevice], links: StarLinks,
               model: PerfModel, sigma: float, seed: int) -> float:
    tasks = make_tasks(items)
    stats = simulate(devices, links, tasks, BUILTIN_POLICIES[policy], model=model, noise=noise_fn(sigma, seed))
    if stats.poisoned or len(stats.commits) != len(tasks):
        raise RuntimeError(f"{policy}: run incomplete")
    return stats.makespan


def calibrated_model(devices: list[VirtualDevice], links: StarLinks, sigma: float) -> PerfModel:
    model = PerfModel()
    for rep in range(2):
        run_policy("dmda", make_instance(256, "lognormal", 10_000 + rep), devices, links, model, sigma, 10_000 + rep)
    return model


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--sizes", default="32,256,2048")
    ap.add_argument("--noise", type=float, default=0.02, help="sigma of lognormal run-time noise (0: exact)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    t_start = time.perf_counter()
    devices, links = make_devices()
    base_model = calibrated_model(devices, links, args.noise)

    results: dict[str, Any] = {}
    uncal: dict[str, Any] = {}
    improvement: dict[str, float] = {}
    eager_ratio: dict[str, float] = {}
    for n in sizes:
        for dist in ("uniform", "lognormal"):
            key = f"N={n}/{dist}"
            ratios: dict[str, list[float]] = {p: [] for p in POLICIES}
            first, second, reductions, eager_over = [], [], [], []
            for seed in range(args.seeds):
                items = make_instance(n, dist, seed)
                bound = lower_bound(make_tasks(items), devices, links)
                spans = {}
                for p in POLICIES:
                    spans[p] = run_policy(p, items, devices, links, base_model.copy(), args.noise, seed)
                    ratios[p].append(spans[p] / bound)
                reductions.append(1.0 - spans["dmda"] / spans["eager"])
                eager_over.append(spans["eager"] / spans["dmda"])
                fresh = PerfModel()
                first.append(run_policy("dmda", items, devices, links, fresh, args.noise, seed) / bound)
                second.append(run_policy("dmda", items, devices, links, fresh, args.noise, seed + 7919) / bound)
            results[key] = {p: {"median": round(float(np.median(r)), 4), "p95": round(pct(r, 95), 4)}
                            for p, r in ratios.items()}
            improvement[key] = round(float(np.median(reductions)), 4)
            eager_ratio[key] = round(float(np.median(eager_over)), 4)
            cal = float(np.median(ratios["dmda"]))
            uncal[key] = {"calibrated_median": round(cal, 4), "first_run_median": round(float(np.median(first)), 4),
                          "second_run_median": round(float(np.median(second)), 4),
                          "second_vs_calibrated": round(float(np.median(second)) / cal - 1.0, 4)}

    def med(key: str, p: str = "dmda") -> float | None:
        return results.get(key, {}).get(p, {}).get("median")

    targets = {}
    if "N=256/lognormal" in results:
        targets["dmda_median_R_N256_lognormal<=1.05"] = med("N=256/lognormal") <= 1.05
    for dist in ("uniform", "lognormal"):
        k = f"N=32/{dist}"
        if k in results:
            targets[f"dmda_median_R_N32_{dist}<=1.10"] = med(k) <= 1.10
            # "30% better": eager's makespan at least 1.3x dmda's (median over seeds); the stricter
            # reading (dmda's makespan 30% shorter) is reported beside it.
            targets[f"eager_makespan_over_dmda>=1.3_N32_{dist}"] = eager_ratio[k] >= 1.30
    for k, u in uncal.items():
        targets[f"uncalibrated_second_run_within_2pct_{k}"] = abs(u["second_vs_calibrated"]) <= 0.02

    out = {
        "benchmark": "balance", "clock": "virtual", "seeds": args.seeds, "noise_sigma": args.noise,
        "mean_chunk_bytes": MEAN_BYTES, "kernels": list(KERNELS),
        "devices": {d.id: {"speeds_ops_per_s": d.speeds, "overhead_s": d.overhead,
                           "link_latency_s": links.links[d.id][0], "link_bytes_per_s": links.links[d.id][1]}
                    for d in devices},
        "R": results, "dmda_makespan_reduction_vs_eager_median": improvement,
        "eager_over_dmda_makespan_median": eager_ratio,
        "uncalibrated": uncal, "targets": targets, "all_targets_met": all(targets.values()),
        "wall_s": round(time.perf_counter() - t_start, 2),
    }
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for key, row in results.items():
            print(key, "  ".join(f"{p}={v['median']:.3f}/{v['p95']:.3f}" for p, v in row.items()))
        print(json.dumps({"uncalibrated": uncal, "targets": targets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
