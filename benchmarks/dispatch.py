#!/usr/bin/env python3
"""Launch overhead of ``add`` on tiny arrays through ``rt.launch`` against numpy, in one process.

    python benchmarks/dispatch.py --json

Prints ``overhead_us`` (median dsrt launch minus median numpy call, synchronous) and ``numpy_us``.
Target: overhead at most 3 microseconds.
"""

from __future__ import annotations

import argparse
import json

import dsrt
from dsrt.cli.bench import dispatch_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--repeats", type=int, default=60000)
    args = parser.parse_args()
    rt = dsrt.default_runtime()
    result = dispatch_overhead(rt.device("cpu:0"), repeats=args.repeats)
    result["target_overhead_us"] = 3.0
    result["meets_target"] = result["overhead_us"] <= 3.0
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
