"""``--cluster ADDRESS`` for ``dsrt devices`` and ``dsrt run``: the devices of a Dask cluster.

The runtime attaches to the Dask scheduler at ``ADDRESS`` (see :mod:`dsrt.distributed`); every
worker runs a dsrt runtime and its real devices join the local ones. ``dsrt devices`` then also
prints each worker with its measured link; ``dsrt run`` checks every device, remote ones included,
and balances its GEMM chunks across all of them.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_option", "describe", "format_description"]


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="also use the devices of the Dask cluster whose scheduler is at ADDRESS"
                             " (tcp://host:8786; needs dsrt[distributed] here and on the workers)")


def describe(rt: Any) -> dict[str, Any] | None:
    """The attached cluster: scheduler address and each worker (address, name, pid, link, devices)."""
    cluster = getattr(rt, "cluster", None)
    return cluster.to_dict() if cluster is not None else None


def format_description(desc: dict[str, Any]) -> str:
    lines = [f"cluster {desc['scheduler']}: {sum(1 for w in desc['workers'] if w['alive'])} worker(s)"]
    for w in desc["workers"]:
        state = "" if w["alive"] else f"  LEFT: {w.get('left', '')}"
        lines.append(f"  {w['address']} (name {w['name']}, pid {w['pid']} on {w['host']}):"
                     f" round trip {w['round_trip_s'] * 1e3:.3g} ms, {w['bandwidth_Bps'] / 1e6:.3g} MB/s;"
                     f" devices {', '.join(w['devices']) or 'none'}{state}")
    return "\n".join(lines)
