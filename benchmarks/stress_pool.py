#!/usr/bin/env python3
"""Threaded stress of the memory pool: do bytes survive spilling and compaction under concurrency?

    python benchmarks/stress_pool.py --threads 8 --seconds 20 --json
    python benchmarks/stress_pool.py --threads 8 --seconds 5 --devices cpu:0 --json

Each of ``--threads`` threads repeatedly picks one of ``--devices`` and does one operation on its
own arrays there: allocate a ``uint8`` array of a lognormal size (median 48 KiB, at most 4 MiB)
filled with random bytes (its CRC-32 is remembered), read an array back and compare its CRC, drop
an array, or (10% of operations) launch the ``copy`` kernel on an array and keep the copy. Every
device's pool is capped at ``--limit-mib`` (``pool.set_limit``) while the threads together keep
about ``--live-factor`` times that live on it, so the pool spills, fetches and compacts all the
time; the ``copy`` launches and host copies race those moves.

An array is *corrupted* when a read-back's CRC differs from the one remembered; it is then read once
more, and counted ``transient`` if the second read is right (a read that raced a move) or
``persistent`` if not (bytes lost). Exceptions raised by an operation are counted in ``errors``
(with the first few messages), never stop a thread. Output (one JSON object): threads, seconds, ops,
and per device the pool's spills, fetches, compactions, moves and the corrupted/error counts.
Exit status 1 if any array was corrupted or any operation raised.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import zlib
from typing import Any

import numpy as np

import dsrt

MiB = 1 << 20
KiB = 1 << 10
MEDIAN = 48 * KiB
MAX_SIZE = 4 * MiB
SIGMA = 1.0


class DeviceTally:
    """Counters for one device, updated under ``lock`` by every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops = 0
        self.corrupted = 0
        self.transient = 0
        self.persistent = 0
        self.errors = 0
        self.messages: list[str] = []

    def error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors += 1
            if len(self.messages) < 5:
                self.messages.append(f"{type(exc).__name__}: {exc}"[:300])


def worker(devices: list[dsrt.Device], tallies: dict[str, DeviceTally], live_budget: int, deadline: float,
           seed: int, stop: threading.Event) -> None:
    """One thread's loop; ``live_budget`` is the bytes this thread keeps live per device."""
    rng = np.random.default_rng(seed)
    held: dict[str, list[tuple[dsrt.Array, int, int]]] = {d.id: [] for d in devices}  # (array, crc, nbytes)
    live = {d.id: 0 for d in devices}
    while not stop.is_set() and time.monotonic() < deadline:
        dev = devices[int(rng.integers(len(devices)))]
        mine = held[dev.id]
        tally = tallies[dev.id]
        r = rng.random()
        try:
            if mine and r < 0.10:  # launch the copy kernel and keep the copy
                arr, crc, n = mine[int(rng.integers(len(mine)))]
                mine.append((arr.copy(), crc, n))
                live[dev.id] += n
            elif mine and (r < 0.55 or live[dev.id] > live_budget):
                i = int(rng.integers(len(mine)))
                arr, crc, n = mine[i]
                if live[dev.id] > live_budget and r >= 0.35:  # drop to stay near the budget
                    mine[i] = mine[-1]
                    mine.pop()
                    live[dev.id] -= n
                    del arr
                else:
                    check(arr, crc, tally)
            else:
                n = int(min(max(rng.lognormal(np.log(MEDIAN), SIGMA), 1), MAX_SIZE))
                data = rng.integers(0, 256, n, dtype=np.uint8)
                mine.append((dev.asarray(data), zlib.crc32(data.data), n))
                live[dev.id] += n
        except Exception as exc:  # noqa: BLE001 - a raced pool can fail in any way: count it, go on
            tally.error(exc)
        with tally.lock:
            tally.ops += 1
    for dev_id, mine in held.items():  # a last read of everything still held
        for arr, crc, _n in mine:
            try:
                check(arr, crc, tallies[dev_id])
            except Exception as exc:  # noqa: BLE001
                tallies[dev_id].error(exc)


def check(arr: dsrt.Array, crc: int, tally: DeviceTally) -> None:
    """Read ``arr`` back; count it corrupted (transient or persistent) if its CRC is not ``crc``."""
    if zlib.crc32(arr.numpy().data) == crc:
        return
    again = zlib.crc32(arr.numpy().data) == crc
    with tally.lock:
        tally.corrupted += 1
        if again:
            tally.transient += 1
        else:
            tally.persistent += 1


def run(threads: int, seconds: float, seed: int, device_ids: list[str], limit_mib: float,
        live_factor: float, runtime: dsrt.Runtime | None = None) -> dict[str, Any]:
    """Run the stress and return the JSON-ready result (``runtime``: where the devices come from)."""
    rt = runtime or dsrt.Runtime(backends=sorted({d.split(":", 1)[0] for d in device_ids}))
    devices = [rt.device(d) for d in device_ids]
    limit = int(limit_mib * MiB)
    before: dict[str, dict[str, int]] = {}
    for dev in devices:
        dev.pool.set_limit(limit)
        st = dev.pool.stats()
        before[dev.id] = {k: int(st.get(k, 0)) for k in ("spills", "fetches", "compactions", "moves", "num_allocs")}
    tallies = {d.id: DeviceTally() for d in devices}
    budget = int(limit * live_factor / threads)
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    pool_threads = [threading.Thread(target=worker, args=(devices, tallies, budget, deadline, seed * 1000 + i, stop),
                                     name=f"stress-{i}", daemon=True) for i in range(threads)]
    t0 = time.monotonic()
    for t in pool_threads:
        t.start()
    try:
        for t in pool_threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in pool_threads:
            t.join()
    elapsed = time.monotonic() - t0
    per_device: dict[str, Any] = {}
    for dev in devices:
        st = dev.pool.stats()
        dev.pool.set_limit(None)
        tally = tallies[dev.id]
        per_device[dev.id] = {
            "ops": tally.ops,
            **{k: int(st.get(k, 0)) - before[dev.id][k] for k in ("spills", "fetches", "compactions", "moves")},
            "allocations": int(st["num_allocs"]) - before[dev.id]["num_allocs"],
            "corrupted": tally.corrupted,
            "corrupted_transient": tally.transient,
            "corrupted_persistent": tally.persistent,
            "errors": tally.errors,
            "error_messages": tally.messages,
        }
    return {
        "threads": threads,
        "seconds": round(elapsed, 2),
        "seed": seed,
        "limit_bytes": limit,
        "ops": sum(t.ops for t in tallies.values()),
        "spills": sum(d["spills"] for d in per_device.values()),
        "fetches": sum(d["fetches"] for d in per_device.values()),
        "compactions": sum(d["compactions"] for d in per_device.values()),
        "moves": sum(d["moves"] for d in per_device.values()),
        "corrupted": sum(d["corrupted"] for d in per_device.values()),
        "errors": sum(d["errors"] for d in per_device.values()),
        "devices": per_device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--devices", default="cpu:0,opencl:0", help="comma-separated device ids")
    parser.add_argument("--limit-mib", type=float, default=32.0, help="pool limit per device, MiB")
    parser.add_argument("--live-factor", type=float, default=2.0, help="live bytes per device / limit")
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    args = parser.parse_args()
    result = run(args.threads, args.seconds, args.seed, [d.strip() for d in args.devices.split(",") if d.strip()],
                 args.limit_mib, args.live_factor)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    sys.exit(1 if result["corrupted"] or result["errors"] else 0)


if __name__ == "__main__":
    main()
