"""``dsrt simulate TOPOLOGY --workload ...``: plan a run on a topology's cost models (virtual clock).

Each ``--workload KERNEL:COUNT:BYTES[:uniform|lognormal]`` adds COUNT chunks of about BYTES input
bytes each (``1MiB``, ``64KB``...); without ``--workload`` the command plans
:data:`DEFAULT_WORKLOAD`, a mixed set of GEMM, elementwise and reduction chunks. At most
:data:`MAX_CHUNKS` chunks in total (``DSRT_SIMULATE_MAX_CHUNKS``), each of 1 byte to
:data:`MAX_CHUNK_BYTES`. Devices come from the topology; a device's speed is its
``params.peak_flops`` (or ``params.speeds``) when declared, else the nominal peak of its backend kind
given with ``--peak KIND=OPS`` (defaults: what each plugin declares, :func:`nominal_peaks`). Chunk data starts in the host memory
of the first node (``--data first``) or spread over the nodes (``--data spread``).

With ``--collective NAME --size BYTES`` (NAME one of ``all_reduce``, ``reduce_scatter``,
``all_gather``) the command instead predicts one collective with
``dsrt.collective.simulate.simulate_collective`` and prints its result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..collective.simulate import SUPPORTED as COLLECTIVES
from ..errors import ConfigurationError, check_output_file
from ..plugins import installed_backends
from ..scheduler.perfmodel import PerfModel
from ..scheduler.policies import BUILTIN_POLICIES
from ..scheduler.virtual import devices_from_topology, lognormal_sizes, make_tasks, simulate

__all__ = ["configure", "run", "nominal_peaks", "parse_workload", "parse_bytes", "DEFAULT_WORKLOAD", "MAX_CHUNKS",
           "MAX_CHUNK_BYTES"]



def nominal_peaks() -> dict[str, float]:
    """Nominal fp32 operations/s per backend, used only when a topology declares none: what each
    installed plugin declares as ``BackendSpec.nominal_peak_flops``."""
    return {name: spec.nominal_peak_flops for name, spec in installed_backends().items() if spec.nominal_peak_flops > 0}

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 1 << 10, "MIB": 1 << 20,
          "GIB": 1 << 30, "TIB": 1 << 40}

#: The mixed workload planned when no ``--workload`` is given.
DEFAULT_WORKLOAD = ("gemm:256:4MiB:lognormal", "add:512:1MiB:uniform", "reduce_sum:256:2MiB:uniform")
#: Most chunks one simulation plans (``DSRT_SIMULATE_MAX_CHUNKS`` overrides it).
MAX_CHUNKS = 100_000
#: Largest chunk or collective message, in bytes (1 PiB).
MAX_CHUNK_BYTES = 1 << 50


def parse_bytes(text: str, *, what: str = "size") -> int:
    """``'1MiB'`` -> 1048576; ``'64KB'`` -> 64000; plain integers are bytes. 1 byte to :data:`MAX_CHUNK_BYTES`."""
    m = re.fullmatch(r"\s*([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigurationError(f"{what} '{text}' is not a size in bytes (use e.g. 4096, 64KB, 1MiB)")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not 1 <= value <= MAX_CHUNK_BYTES:
        raise ConfigurationError(f"{what} '{text}' must be 1 byte to {MAX_CHUNK_BYTES} bytes (1 PiB)")
    return int(value)


def parse_workload(spec: str) -> tuple[str, int, int, str]:
    """``'gemm:256:1MiB:lognormal'`` -> ``('gemm', 256, 1048576, 'lognormal')``."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ConfigurationError(f"--workload '{spec}': expected KERNEL:COUNT:BYTES[:uniform|lognormal]")
    dist = parts[3] if len(parts) == 4 else "uniform"
    if dist not in ("uniform", "lognormal", "fixed"):
        raise ConfigurationError(f"--workload '{spec}': distribution must be uniform, lognormal or fixed")
    if not re.fullmatch(r"[0-9]{1,12}", parts[1].strip()):
        raise ConfigurationError(f"--workload '{spec}': COUNT '{parts[1]}' is not a positive integer")
    count = int(parts[1])
    if count < 1:
        raise ConfigurationError(f"--workload '{spec}': COUNT must be at least 1")
    if not parts[0]:
        raise ConfigurationError(f"--workload '{spec}': KERNEL is empty")
    return parts[0], count, parse_bytes(parts[2], what=f"--workload '{spec}': BYTES"), dist


def _max_chunks() -> int:
    text = os.environ.get("DSRT_SIMULATE_MAX_CHUNKS", "").strip()
    try:
        return max(1, int(text)) if text else MAX_CHUNKS
    except ValueError:
        raise ConfigurationError(f"DSRT_SIMULATE_MAX_CHUNKS='{text}' is not an integer") from None



def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topology", help="topology YAML file (see specs/)")
    parser.add_argument("--workload", action="append", default=[], metavar="KERNEL:COUNT:BYTES[:DIST]",
                        help="chunks to plan (repeatable), e.g. gemm:2048:4MiB:lognormal; default: a mixed"
                             f" workload ({' '.join(DEFAULT_WORKLOAD)})")
    parser.add_argument("--policy", default="dmda", help="policy name, or 'all' to compare every policy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chunk sizes")
    parser.add_argument("--peak", action="append", default=[], metavar="KIND=OPS",
                        help="peak operations/s for a backend kind without declared params (repeatable)")
    parser.add_argument("--data", choices=("first", "spread"), default="first",
                        help="where chunk data starts: first node's host memory, or spread over nodes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--trace", metavar="FILE", help="write a Perfetto trace of the simulated run")
    parser.add_argument("--collective", metavar="NAME", choices=COLLECTIVES,
                        help=f"predict a collective instead: {', '.join(COLLECTIVES)}")
    parser.add_argument("--size", metavar="BYTES", help="message size for --collective")
    parser.add_argument("--backend", metavar="NAME",
                        help="devices taking part in --collective (default: the most numerous backend)")


def _with_peaks(topology: Any, peaks: dict[str, float]) -> Any:
    """A topology-like view whose devices carry a peak_flops param when they declared none."""
    from types import SimpleNamespace

    devices = []
    for d in topology.devices:
        params = dict(d.params)
        if not params.get("peak_flops") and not params.get("speeds") and d.backend in peaks:
            params["peak_flops"] = peaks[d.backend]
        devices.append(SimpleNamespace(qualified_id=d.qualified_id, backend=d.backend, params=params, node=d.node))
    view = SimpleNamespace(devices=devices, nodes=topology.nodes, latency=topology.latency,
                           bandwidth=topology.bandwidth)
    return view


def run(args: argparse.Namespace, runtime_factory: Callable[[], Any]) -> int:
    from ..topology import load_topology

    if args.trace:
        check_output_file(args.trace, "--trace")
    specs = [parse_workload(w) for w in (args.workload or DEFAULT_WORKLOAD)]
    total = sum(count for _k, count, _b, _d in specs)
    if total > _max_chunks():
        raise ConfigurationError(f"--workload: {total} chunks in total; the limit is {_max_chunks()}"
                                 " (DSRT_SIMULATE_MAX_CHUNKS)")
    size = parse_bytes(args.size, what="--size") if args.size else None
    topology = load_topology(args.topology)
    if args.collective:
        if size is None:
            raise ConfigurationError("--collective needs --size BYTES")
        from ..collective.simulate import simulate_collective

        print(json.dumps(simulate_collective(topology, args.collective, size, backend=args.backend), indent=1,
                         default=str))
        return 0
    peaks = nominal_peaks()
    for item in args.peak:
        kind, _, value = item.partition("=")
        try:
            peaks[kind] = float(value)
        except ValueError:
            raise ConfigurationError(f"--peak '{item}': expected KIND=OPS, e.g. cuda=6.7e13") from None
        if not (np.isfinite(peaks[kind]) and peaks[kind] > 0):
            raise ConfigurationError(f"--peak '{item}': OPS must be positive and finite")
    kernels = sorted({k for k, *_ in specs})
    devices, links = devices_from_topology(_with_peaks(topology, peaks), kernels=kernels)
    rng = np.random.default_rng(args.seed)
    items: list[tuple[str, int]] = []
    for kernel, count, nbytes, dist in specs:
        if dist == "lognormal":
            sizes = lognormal_sizes(rng, count, nbytes)
        elif dist == "uniform":
            sizes = rng.uniform(0.25 * nbytes, 1.75 * nbytes, count)
        else:
            sizes = np.full(count, nbytes)
        items += [(kernel, max(int(s), 64)) for s in sizes]
    policies = sorted(BUILTIN_POLICIES) if args.policy == "all" else [args.policy]
    for p in policies:
        if p not in BUILTIN_POLICIES:
            raise ConfigurationError(f"unknown policy '{p}'; known: {', '.join(sorted(BUILTIN_POLICIES))}, all")
    nodes = [n.name for n in topology.nodes]
    report: dict[str, Any] = {"topology": topology.name if hasattr(topology, "name") else args.topology,
                              "devices": len(devices), "chunks": len(items), "clock": "virtual", "policies": {}}
    # Calibrate the model on the truth once (a warm start), as a second run on real hardware would be.
    warm = PerfModel()
    tracer = None
    for p in policies:
        tasks = make_tasks(items)
        if args.data == "spread":
            for t in tasks:
                t.source = nodes[t.index % len(nodes)]
        model = warm.copy()
        simulate(devices, links, make_tasks(items[: min(len(items), 4 * len(devices))]), BUILTIN_POLICIES["dmda"],
                 model=model)
        if args.trace and p == policies[-1]:
            from ..tracing import Tracer

            tracer = Tracer()
        stats = simulate(devices, links, tasks, BUILTIN_POLICIES[p], model=model, tracer=tracer)
        area = sum(min(links.time(t.source, d.id, t.nbytes) + d.run_time(t.kernel, t.work)
                       for d in devices if d.supports(t.kernel)) for t in tasks) / max(len(devices), 1)
        busiest = sorted(stats.busy.items(), key=lambda kv: -kv[1])[:3]
        report["policies"][p] = {"makespan_s": stats.makespan, "area_bound_s": area,
                                 "ratio_to_area_bound": stats.makespan / area if area else None,
                                 "devices_used": len(stats.chunks), "busiest": dict(busiest)}
    if tracer is not None:
        tracer.write(args.trace)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['topology']}: {len(devices)} devices, {len(items)} chunks (virtual clock)")
        for p, r in report["policies"].items():
            print(f"  {p:>14}: predicted makespan {r['makespan_s']:.6g} s  (area bound {r['area_bound_s']:.6g} s,"
                  f" x{r['ratio_to_area_bound']:.3f}; {r['devices_used']} devices used)")
    return 0
