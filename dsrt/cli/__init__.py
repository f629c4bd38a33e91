"""The ``dsrt`` command: devices | topology | run | bench | simulate | conformance (+ plugin commands).

A user error (a ``DsrtError``, a bad argument) prints one line on stderr and exits 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import DsrtError, format_bytes
from . import checkpoint as cli_checkpoint
from . import cluster as cli_cluster
from . import simulate as scheduler_cli
from . import topology as cli_topology

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with how the command was called (printed as one line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def _runtime_factory(args: argparse.Namespace) -> Callable[[], Any]:
    cache: dict[str, Any] = {}

    def make() -> Any:
        if "rt" not in cache:
            from ..runtime import Runtime

            cache["rt"] = Runtime(topology=getattr(args, "topology", None), cluster=getattr(args, "cluster", None))
        return cache["rt"]

    return make


def _human_rate(flops_per_s: float) -> str:
    for unit, scale in (("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if flops_per_s >= scale:
            return f"{flops_per_s / scale:.1f} {unit}"
    return f"{flops_per_s:.0f} FLOP/s"


# ---------------------------------------------------------------------------------------- devices
def _cmd_devices(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    rt = make()
    backends = rt.backends
    devices = rt.devices  # binds the topology, creating declared simulated devices
    report: dict[str, Any] = {"backends": [b.to_dict() for b in backends.values()]}
    for b in report["backends"]:
        b["devices"] = [d.info.to_dict() for d in devices if d.info.backend == b["name"]]
        if b["devices"]:
            b["status"] = "available"
    if rt.conflicts:
        report["conflicts"] = list(rt.conflicts)
    if args.memory:
        report["memory"] = {d.id: d.pool.stats() for d in devices if hasattr(d, "pool")}
    if args.topology:
        binding = rt.binding
        report["topology"] = cli_topology.describe_binding(rt.topology, binding)
    if getattr(args, "cluster", None):
        report["cluster"] = cli_cluster.describe(rt)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for b in report["backends"]:
        tag = " (experimental)" if b["experimental"] else ""
        if b["devices"]:
            print(f"{b['name']}{tag}: {len(b['devices'])} device(s)")
            for d in b["devices"]:
                speed = f"~{_human_rate(d['peak_flops'])}"
                if d.get("modelled_peak_flops"):
                    speed = f"model {_human_rate(d['modelled_peak_flops'])}; simulated here {speed}"
                print(f"  {d['id']:<12} {d['name'][:40]:<40} {format_bytes(d['memory_bytes']):>24}"
                      f"  {d['compute_units']:>4} CU  {speed}")
        else:
            print(f"{b['name']}{tag}: {b['status']}: {b['reason']}")
    for line in report.get("conflicts", []):
        print(f"refused: {line}")
    if args.memory:
        print("memory:")
        for dev_id, stats in report["memory"].items():
            print(f"  {dev_id:<12} " + ", ".join(f"{k}={v}" for k, v in stats.items() if not isinstance(v, dict)))
    if args.topology:
        print(cli_topology.format_description(report["topology"]))
    if report.get("cluster"):
        print(cli_cluster.format_description(report["cluster"]))
    return 0


# ---------------------------------------------------------------------------------------- run
class _Progress:
    """A one-line progress bar on a terminal; plain lines otherwise."""

    def __init__(self, total: int, enabled: bool, tty: bool) -> None:
        self.total, self.done, self.enabled, self.tty = max(total, 1), 0, enabled, tty

    def step(self, label: str, ok: bool) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label[:40]:<40}")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        else:
            print(f"{'ok  ' if ok else 'FAIL'} {label}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    from .workload import run_check, run_item, standard_checks, summarize

    rt = make()
    devices = [d for d in rt.devices if args.device is None or d.id in args.device]
    if args.device:
        unknown = set(args.device) - {d.id for d in devices}
        if unknown:
            rt.device(sorted(unknown)[0])  # raises the precise error
    checks = standard_checks(quick=args.quick)
    items = rt.workload_items()
    plan: list[tuple[Any, Any, str]] = []
    for dev in devices:
        if not dev.info.simulated:
            plan += [(dev, c, "check") for c in checks if dev.supports(c.kernel, c.dtype)]
        plan += [(dev, it, "item") for it in items if it.applies(dev)]
    progress = _Progress(len(plan), enabled=not args.json, tty=sys.stderr.isatty())
    results = []
    ctx = rt.trace(args.trace) if args.trace else None
    t_start = time.perf_counter()
    if ctx is not None:
        ctx.__enter__()
    try:
        for dev, what, kind in plan:
            res = run_check(dev, what) if kind == "check" else run_item(dev, what)
            if res is not None:
                results.append(res)
                progress.step(f"{dev.id} {res.name}", res.ok)
        balance = _balanced_run(rt, devices, quick=args.quick)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    table = summarize(results)
    verdict = "PASS" if results and all(r.ok for r in results) and (balance is None or balance.get("ok", True)) else "FAIL"
    if args.json:
        print(json.dumps({"verdict": verdict, "seconds": time.perf_counter() - t_start,
                          "devices": table, "checks": [r.to_dict() for r in results], "balance": balance},
                         indent=2, default=str))
    else:
        print(f"\n{'device':<14}{'checks':>7}{'failed':>7}{'time (s)':>10}{'throughput':>16}{'worst err/tol':>15}  verdict")
        for dev_id, row in table.items():
            print(f"{dev_id:<14}{row['checks']:>7}{row['failed']:>7}{row['seconds']:>10.4f}"
                  f"{_human_rate(row['gflops'] * 1e9):>16}{row['worst']:>15.3f}  {row['verdict']}")
        for r in results:
            if not r.ok:
                print(f"  FAIL {r.device} {r.name}: error {r.error:.3g} > tolerance {r.tolerance:.3g} {r.message}")
        if balance is not None:
            _print_balance(balance)
        print(f"\nverdict: {verdict} ({len(results)} checks on {len(table)} devices)")
    return 0 if verdict == "PASS" else 1


def _balanced_run(rt: Any, devices: Sequence[Any], *, quick: bool) -> dict[str, Any] | None:
    """Spread GEMM chunks over every real device with ``rt.map``; compare with each device alone."""
    real = [d for d in devices if not d.info.simulated and d.supports("gemm", "float32")]
    if len(real) < 2:
        return None
    from .workload import balance_demo

    return balance_demo(rt, real, quick=quick)


def _print_balance(balance: dict[str, Any]) -> None:
    print(f"\nload balancing: {balance['chunks']} gemm chunks with rt.map defaults; alone on {', '.join(balance['devices'])}")
    for dev in balance["devices"]:
        print(f"  {dev:<12} share {balance['share'][dev]:>6.1%}  ({balance['chunks_per_device'][dev]} chunks);"
              f" alone {balance['gflops_alone'][dev]:.1f} GFLOP/s")
    print(f"  together     {balance['gflops_together']:.1f} GFLOP/s,"
          f" {balance['speedup_vs_best_alone']:.2f}x the best device alone;"
          f" results {'correct' if balance['ok'] else 'WRONG'}")
    for hw, ids in balance.get("shared_hardware", {}).items():
        print(f"  note: {', '.join(ids)} run on the same hardware ({hw}); together they share its cores,"
              f" so they cannot beat the faster one alone")
    print("  run report (rt.last_run):")
    for line in balance["report_text"].splitlines():
        print(f"    {line}")


# ---------------------------------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    from .bench import device_throughput, dispatch_overhead

    rt = make()
    report: dict[str, Any] = {"dispatch": dispatch_overhead(rt.default_device, repeats=args.repeats)}
    report["devices"] = {d.id: device_throughput(d) for d in rt.devices if not d.info.simulated}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


# ---------------------------------------------------------------------------------------- conformance
def _cmd_conformance(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    import pytest

    # An unknown or unusable backend is an error with its reason, not a run where everything skips.
    if args.backend != "all":
        from ..errors import BackendNotFoundError, DeviceUnavailableError

        rt = make()
        backends = rt.backends
        for name in [n.strip() for n in args.backend.split(",") if n.strip()] or [args.backend]:
            status = backends.get(name)
            if status is None:
                raise BackendNotFoundError(f"conformance: no backend '{name}' (installed: {', '.join(sorted(backends))})")
            if not any(d.info.backend == name for d in rt.devices):
                raise DeviceUnavailableError(f"conformance: backend '{name}' has no device here ({status.status}:"
                                             f" {status.reason or 'no devices'})")
    argv = ["--pyargs", "dsrt.testing", "--dsrt-backend", args.backend, "-q", "-p", "no:cacheprovider"]
    return int(pytest.main(argv + list(args.pytest_args)))


# ---------------------------------------------------------------------------------------- wiring
def build_parser(plugin_commands: Sequence[Any] = ()) -> argparse.ArgumentParser:
    parser = _Parser(prog="dsrt", description="dsrt: a hardware abstraction runtime")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("devices", help="list backends and their devices, or why they have none")
    p.add_argument("--json", action="store_true")
    p.add_argument("--memory", action="store_true", help="show memory pool statistics")
    p.add_argument("--topology", metavar="FILE", help="bind a topology file and show the result")
    cli_cluster.add_option(p)
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("run", help="the main job: a mixed, checked workload on every device")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument("--device", action="append", help="only this device id (repeatable)")
    p.add_argument("--topology", metavar="FILE")
    p.add_argument("--trace", metavar="FILE", help="write a Perfetto/Chrome trace")
    cli_cluster.add_option(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("bench", help="dispatch overhead and per-device throughput, as JSON")
    p.add_argument("--json", action="store_true", help="compact JSON")
    p.add_argument("--repeats", type=int, default=20000)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("conformance", help="run the conformance kit against a backend")
    p.add_argument("backend", help="backend name, or 'all'")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments")
    p.set_defaults(func=_cmd_conformance)

    cli_topology.configure(sub).set_defaults(func=cli_topology.run)
    cli_checkpoint.configure(sub).set_defaults(func=cli_checkpoint.run)
    p = sub.add_parser("simulate", help="plan a workload or a collective on a topology with the virtual clock")
    scheduler_cli.configure(p)
    p.set_defaults(func=scheduler_cli.run)

    for cmd in plugin_commands:
        p = sub.add_parser(cmd.name, help=cmd.help)
        cmd.configure(p)
        p.set_defaults(func=cmd.run)
    return parser


def _plugin_commands() -> list[Any]:
    try:
        from ..plugins import PluginManager

        return [c for _p, c in PluginManager().collect("dsrt_cli_commands")]
    except DsrtError:
        return []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("DSRT_DEBUG"))
    try:
        parser = build_parser(_plugin_commands())
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USER_ERROR
        return int(args.func(args, _runtime_factory(args)) or 0)
    except (DsrtError, UserError) as exc:
        if debug:
            traceback.print_exc()
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            more = " (more with --debug)" if "\n" in str(exc).strip() else ""
            print(f"dsrt: error: {first}{more}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dsrt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
