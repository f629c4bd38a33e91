#!/usr/bin/env python3
"""Launch overhead of ``add`` on tiny arrays through ``rt.launch`` against numpy, in one process.

    python benchmarks/dispatch.py --json

Prints ``overhead_us`` (median dsrt launch minus median numpy call, synchronous) and ``numpy_us``.
Target: overhead at most 3 microseconds.

``c_abi_overhead_us``: the same overhead of ``add`` on 8 float32 through the C example backend
(``cexample``, examples/c-plugin, loaded through dsrt's C ABI), measured in the same run as the
Python example backend's (``acme``, examples/vendor-plugin: ``acme_overhead_us``), rounds
interleaved, medians of rounds. Target: within 1 microsecond of acme's. Both are skipped (``null``
with a reason) when the example packages are not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import dsrt
from dsrt.cli.bench import dispatch_overhead


def c_abi_overhead(rt: dsrt.Runtime, *, repeats: int, rounds: int = 3) -> dict[str, Any]:
    """Launch overhead through the C example backend beside the Python example backend's (same run)."""
    missing = [name for name in ("cexample", "acme") if name not in rt.backends or rt.backends[name].status != "available"]
    if missing:
        return {"c_abi_overhead_us": None, "acme_overhead_us": None,
                "c_abi_skipped": f"not installed or unavailable: {', '.join(missing)}"
                                 " (pip install -e ./examples/vendor-plugin -e ./examples/c-plugin)"}
    c_dev, py_dev = rt.device("cexample:0"), rt.device("acme:0")
    c_runs: list[dict[str, Any]] = []
    py_runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        c_runs.append(dispatch_overhead(c_dev, repeats=repeats))
        py_runs.append(dispatch_overhead(py_dev, repeats=repeats))
    c_us = statistics.median(r["overhead_us"] for r in c_runs)
    py_us = statistics.median(r["overhead_us"] for r in py_runs)
    return {
        "c_abi_overhead_us": round(c_us, 3),
        "c_abi_launch_us": round(statistics.median(r["dsrt_launch_us"] for r in c_runs), 3),
        "acme_overhead_us": round(py_us, 3),
        "acme_launch_us": round(statistics.median(r["dsrt_launch_us"] for r in py_runs), 3),
        "c_abi_minus_acme_us": round(c_us - py_us, 3),
        "c_abi_target_us": "within 1.0 of acme_overhead_us",
        "c_abi_meets_target": c_us - py_us <= 1.0,
        "c_abi_rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--repeats", type=int, default=60000)
    args = parser.parse_args()
    rt = dsrt.default_runtime()
    result = dispatch_overhead(rt.device("cpu:0"), repeats=args.repeats)
    result["target_overhead_us"] = 3.0
    result["meets_target"] = result["overhead_us"] <= 3.0
    result.update(c_abi_overhead(rt, repeats=args.repeats // 2))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
