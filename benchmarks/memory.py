#!/usr/bin/env python3
"""Replay allocation traces through dsrt's caching pool, ``numpy.empty`` and a naive per-size cache.

    python benchmarks/memory.py --json            # full run (about 20 seconds on 2 cores)
    python benchmarks/memory.py --json --quick    # smaller traces, for a smoke test
    python benchmarks/memory.py --json --fault-check   # also: which slow allocations were misses or page faults

Traces: (1) ``lognormal_<N>``: N live blocks of lognormal sizes (median 4 KiB), then random
free-and-replace; (2) ``bad_order``: eight 16 MiB blocks, free them, four 32 MiB blocks, repeated;
(3) ``transformer``: per layer a few activations grow through a forward pass and are freed in
reverse order by the backward pass, with short-lived temporaries, over varying sequence lengths.

For each trace and allocator, the median over ``--repeats`` replays of ``alloc_p50_us``,
``alloc_p99_us``, ``free_p50_us`` (each call timed with ``perf_counter_ns``, garbage collector off,
all allocators in the same process on the same trace) and ``reserved_over_requested`` = peak bytes
reserved from the system / peak bytes requested. ``numpy.empty`` reserves exactly what is
requested (ratio 1 by construction); the naive cache keeps one free list per exact size and never
returns memory. ``best_fit_heap`` is a fragmentation reference (see :func:`best_fit_heap_ratio`):
textbook exact best fit on one unbounded heap, which never moves a block; dsrt's pool compacts
(moves live blocks to open a hole rather than grow), and ``compactions_per_alloc`` and
``moved_bytes`` say how often and how much. Targets for dsrt: alloc p50 <= 1 us, p99 <= 5 us
at every trace size, ratio <= 1.05 on every trace.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dsrt.memory import CachingPool

MiB = 1 << 20
TARGET_P50_US, TARGET_P99_US, TARGET_RATIO = 1.0, 5.0, 1.05

# A trace is a sequence of ("a", key, nbytes) and ("f", key, 0) events.
Trace = list[tuple[str, int, int]]


def lognormal_trace(live: int, steady_ops: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    n = live + steady_ops
    sizes = np.minimum(rng.lognormal(np.log(4096), 1.25, n).astype(np.int64) + 1, 64 * MiB).tolist()
    events: Trace = [("a", k, sizes[k]) for k in range(live)]
    keys = list(range(live))
    picks = rng.integers(0, live, steady_ops).tolist()
    for j in range(steady_ops):
        i = picks[j]
        events.append(("f", keys[i], 0))
        keys[i] = live + j
        events.append(("a", live + j, sizes[live + j]))
    events.extend(("f", k, 0) for k in keys)
    return events


def bad_order_trace(repeats: int) -> Trace:
    events: Trace = []
    key = 0
    for _ in range(repeats):
        for size, count in ((16 * MiB, 8), (32 * MiB, 4)):
            batch = list(range(key, key + count))
            key += count
            events.extend(("a", k, size) for k in batch)
            events.extend(("f", k, 0) for k in batch)
    return events


def transformer_trace(iterations: int, layers: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    events: Trace = []
    key = 0
    batch, hidden, heads = 2, 768, 12
    for _ in range(iterations):
        seq = int(rng.choice([256, 384, 448, 512]))
        saved: list[int] = []
        for _layer in range(layers):
            for nbytes in (batch * seq * hidden * 4, batch * heads * seq * seq * 2,
                           batch * seq * 4 * hidden * 4, batch * seq * hidden * 4):
                events.append(("a", key, nbytes))
                saved.append(key)
                key += 1
            for nbytes in (batch * seq * 4, hidden * 4):  # short-lived temporaries (norm stats, bias)
                events.append(("a", key, nbytes))
                events.append(("f", key, 0))
                key += 1
        for k in reversed(saved):  # backward: a gradient temporary, then the activation goes
            events.append(("a", key, 1 + k % 7 * 4096))
            events.append(("f", key, 0))
            key += 1
            events.append(("f", k, 0))
    return events


class NaiveCache:
    """One free list per exact size; never returns memory. ``reserved`` counts every buffer made."""

    def __init__(self) -> None:
        self.free: dict[int, list[np.ndarray]] = {}
        self.reserved = 0

    def alloc(self, n: int) -> np.ndarray:
        lst = self.free.get(n)
        if lst:
            return lst.pop()
        self.reserved += n
        return np.empty(n, np.uint8)

    def release(self, buf: np.ndarray) -> None:
        self.free.setdefault(buf.nbytes, []).append(buf)


def best_fit_heap_ratio(trace: Trace, align: int = 256) -> float:
    """Peak extent / peak requested bytes of textbook exact best fit over one unbounded address range.

    A reference for fragmentation, not a peer allocator: every request (rounded to ``align``
    bytes) takes the smallest free hole that fits, ties to the lowest address, else grows the heap
    top; freed holes coalesce with free neighbours. No segments, bins or size limits constrain it,
    so a non-moving allocator's ``reserved_over_requested`` on the same trace is rarely far below.
    """
    holes: list[tuple[int, int]] = []  # (size, offset), sorted: best fit is a bisection
    by_start: dict[int, int] = {}  # offset -> size of each hole
    by_end: dict[int, int] = {}  # end offset -> offset of each hole
    live: dict[int, tuple[int, int, int]] = {}
    top = peak_top = requested = peak_requested = 0

    def drop(offset: int) -> int:
        size = by_start.pop(offset)
        del by_end[offset + size]
        del holes[bisect.bisect_left(holes, (size, offset))]
        return size

    for op, key, n in trace:
        if op == "a":
            size = max(-(-n // align) * align, align)
            i = bisect.bisect_left(holes, (size, -1))
            if i < len(holes):
                hole_size, offset = holes[i]
                drop(offset)
                if hole_size > size:
                    rest = (hole_size - size, offset + size)
                    bisect.insort(holes, rest)
                    by_start[rest[1]] = rest[0]
                    by_end[rest[1] + rest[0]] = rest[1]
            else:
                offset = top
                if top in by_end:  # a free hole at the top: start there
                    offset = by_end[top]
                    drop(offset)
                top = offset + size
                peak_top = max(peak_top, top)
            live[key] = (offset, size, n)
            requested += n
            peak_requested = max(peak_requested, requested)
        else:
            offset, size, n = live.pop(key)
            requested -= n
            if offset in by_end:
                left = by_end[offset]
                size += drop(left)
                offset = left
            if offset + size in by_start:
                size += drop(offset + size)
            if offset + size == top:
                top = offset
                continue
            bisect.insort(holes, (size, offset))
            by_start[offset] = size
            by_end[offset + size] = offset
    return round(peak_top / max(peak_requested, 1), 4)


def replay(trace: Trace, alloc: Callable[[int], Any], release: Callable[[Any], None]) -> dict[str, Any]:
    """Run ``trace``; return per-call latencies (ns) and the peak requested bytes."""
    live: dict[int, Any] = {}
    sizes: dict[int, int] = {}
    a_ns: list[int] = []
    f_ns: list[int] = []
    clock = time.perf_counter_ns
    requested = peak = 0
    gc.collect()
    gc.disable()
    try:
        for op, key, n in trace:
            if op == "a":
                t0 = clock()
                obj = alloc(n)
                t1 = clock()
                a_ns.append(t1 - t0)
                live[key] = obj
                sizes[key] = n
                requested += n
                if requested > peak:
                    peak = requested
            else:
                obj = live.pop(key)
                t0 = clock()
                release(obj)
                del obj
                t1 = clock()
                f_ns.append(t1 - t0)
                requested -= sizes.pop(key)
    finally:
        gc.enable()
    return {"a": np.array(a_ns), "f": np.array(f_ns), "peak_requested": peak}


def summarize(r: dict[str, Any], peak_reserved: int, fill: int = 0) -> dict[str, float]:
    """The figures of one replay. With ``fill`` (the trace's first ``fill`` events are allocations
    that build its live set), ``alloc_p99_steady_us`` is the p99 of the allocations after them: the
    fill makes the interpreter's heap grow, and first touches of fresh heap pages (page faults) put
    part of its tail there, for every allocator alike."""
    out = {
        "alloc_p50_us": round(float(np.percentile(r["a"], 50)) / 1e3, 3),
        "alloc_p99_us": round(float(np.percentile(r["a"], 99)) / 1e3, 3),
        "free_p50_us": round(float(np.percentile(r["f"], 50)) / 1e3, 3),
        "reserved_over_requested": round(peak_reserved / max(r["peak_requested"], 1), 4),
    }
    if fill and len(r["a"]) > fill:
        out["alloc_p99_steady_us"] = round(float(np.percentile(r["a"][fill:], 99)) / 1e3, 3)
    return out


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated replays (latencies vary from run to run on a busy host)."""
    return {k: round(float(np.median([r[k] for r in runs])), 4) for k in runs[0]}


def fill_length(trace: Trace) -> int:
    """How many allocations open ``trace`` before its first free (its live set being built)."""
    for i, (op, _key, _n) in enumerate(trace):
        if op != "a":
            return i
    return len(trace)


def run_trace(trace: Trace, device: Any, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"events": len(trace), "repeats": repeats}
    fill = fill_length(trace)
    fill = fill if fill >= 1000 else 0  # only the lognormal traces open with a large live set
    runs, numpy_runs, naive_runs = [], [], []
    for _ in range(repeats):
        pool = CachingPool(device, idle_shrink_s=None)
        r = replay(trace, pool.allocate, lambda a: None)  # dropping the last reference frees it
        runs.append(summarize(r, pool.stats()["peak_reserved_bytes"], fill))
        hit_rate, raw = round(pool.cache_hits / max(pool.num_allocs, 1), 4), pool.segment_allocs
        compacted = (round(pool.compactions / max(pool.num_allocs, 1), 5), pool.moved_bytes)
        pool.empty_cache()
        r = replay(trace, lambda n: np.empty(n, np.uint8), lambda a: None)
        numpy_runs.append(summarize(r, r["peak_requested"], fill))
        naive = NaiveCache()
        r = replay(trace, naive.alloc, naive.release)
        naive_runs.append(summarize(r, naive.reserved))
    out["dsrt"] = median_of(runs)
    out["dsrt"]["cache_hit_rate"] = hit_rate
    out["dsrt"]["raw_allocations"] = raw
    out["dsrt"]["compactions_per_alloc"], out["dsrt"]["moved_bytes"] = compacted
    out["numpy_empty"] = median_of(numpy_runs)
    out["naive_cache"] = median_of(naive_runs)
    out["best_fit_heap"] = {"reserved_over_requested": best_fit_heap_ratio(trace)}
    d = out["dsrt"]
    d["meets_target"] = (d["alloc_p50_us"] <= TARGET_P50_US and d["alloc_p99_us"] <= TARGET_P99_US
                         and d["reserved_over_requested"] <= TARGET_RATIO)
    return out


def peak_ratio(trace: Trace, device: Any) -> float:
    """dsrt's peak reserved / peak requested bytes on ``trace`` (no timing)."""
    pool = CachingPool(device, idle_shrink_s=None)
    live: dict[int, tuple[Any, int]] = {}
    requested = peak = 0
    for op, key, n in trace:
        if op == "a":
            live[key] = (pool.allocate(n), n)
            requested += n
            peak = max(peak, requested)
        else:
            requested -= live.pop(key)[1]
    return pool.peak_reserved / max(peak, 1)


def seed_sweep(seeds: int, device: Any) -> dict[str, Any]:
    """``reserved_over_requested`` of dsrt and of the best-fit reference over ``seeds`` lognormal traces
    per size: where a trace's peak falls relative to segment growth makes one seed's figure jumpy."""
    out: dict[str, Any] = {}
    for live in (1000, 10000):
        rows = [(peak_ratio(t, device), best_fit_heap_ratio(t))
                for t in (lognormal_trace(live, 20000, seed=s) for s in range(1, seeds + 1))]
        for who, col in (("dsrt", 0), ("best_fit_heap", 1)):
            vals = [r[col] for r in rows]
            out[f"lognormal_{live}_{who}"] = {"median": round(float(np.median(vals)), 4),
                                              "min": round(min(vals), 4), "max": round(max(vals), 4)}
    return out


def traces(quick: bool) -> Iterator[tuple[str, Trace]]:
    lives = (1000, 10000) if quick else (1000, 10000, 100000)
    for live in lives:
        yield f"lognormal_{live}", lognormal_trace(live, 5000 if quick else 20000, seed=live)
    yield "bad_order", bad_order_trace(20 if quick else 200)
    yield "transformer", transformer_trace(3 if quick else 200, 12, seed=1)


def fault_check(trace: Trace, device: Any, slow_us: float = TARGET_P99_US) -> dict[str, Any]:
    """Why allocations of ``trace`` are slow: one untimed-by-the-figures replay that reads the
    process's minor page faults (``getrusage``) around every allocation. Reports how many took more
    than ``slow_us`` microseconds, how many of those were pool misses (a new segment, compaction), and
    how many of the rest touched fresh memory (a page fault: the interpreter's heap growing)."""
    import resource

    pool = CachingPool(device, idle_shrink_s=None)
    usage, who, clock = resource.getrusage, resource.RUSAGE_SELF, time.perf_counter_ns
    live: dict[int, Any] = {}
    slow = slow_miss = slow_fault = faulted = allocs = 0
    gc.collect()
    gc.disable()
    try:
        for op, key, n in trace:
            if op != "a":
                del live[key]
                continue
            misses, faults = pool.cache_misses, usage(who).ru_minflt
            t0 = clock()
            live[key] = pool.allocate(n)
            dt = clock() - t0
            fault = usage(who).ru_minflt > faults
            allocs += 1
            faulted += fault
            if dt > slow_us * 1e3:
                slow += 1
                if pool.cache_misses > misses:
                    slow_miss += 1
                elif fault:
                    slow_fault += 1
    finally:
        gc.enable()
    return {"allocations": allocs, "with_page_fault": faulted, f"over_{slow_us:g}_us": slow,
            "of_which_misses": slow_miss, "of_which_page_faults": slow_fault,
            "of_which_neither": slow - slow_miss - slow_fault}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--quick", action="store_true", help="smaller traces")
    parser.add_argument("--repeats", type=int, default=5, help="replays per allocator; medians are printed")
    parser.add_argument("--fault-check", action="store_true",
                        help="also say which slow allocations of the largest lognormal trace were misses or page faults")
    parser.add_argument("--seed-sweep", type=int, default=0, metavar="N",
                        help="also give reserved/requested over N seeds of the 1k and 10k lognormal traces")
    args = parser.parse_args()
    from dsrt_cpu import CpuDevice

    device = CpuDevice(0)
    result: dict[str, Any] = {
        "device": device.id,
        "targets": {"alloc_p50_us": TARGET_P50_US, "alloc_p99_us": TARGET_P99_US,
                    "reserved_over_requested": TARGET_RATIO},
        "traces": {name: run_trace(trace, device, max(args.repeats, 1)) for name, trace in traces(args.quick)},
    }
    result["meets_targets"] = all(t["dsrt"]["meets_target"] for t in result["traces"].values())
    if args.fault_check:
        name, trace = [(n, t) for n, t in traces(args.quick) if n.startswith("lognormal")][-1]
        result["fault_check"] = {"trace": name, **fault_check(trace, device)}
    if args.seed_sweep:
        result["reserved_over_requested_over_seeds"] = seed_sweep(args.seed_sweep, device)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
