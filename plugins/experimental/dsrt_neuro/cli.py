"""``dsrt snn run FILE.nir`` and the ``dsrt run`` workload item of the neuromorphic backend."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from dsrt.device import Device
from dsrt.errors import check_output_file
from dsrt.hookspecs import CliCommand, WorkloadItem

from .errors import NetworkError

__all__ = ["COMMAND", "WORKLOAD", "MAX_STEPS"]

#: Most time steps one ``dsrt snn run`` simulates; ``DSRT_SNN_MAX_STEPS`` overrides it.
MAX_STEPS = 10_000_000


def _max_steps() -> int:
    text = os.environ.get("DSRT_SNN_MAX_STEPS", "").strip()
    try:
        return max(1, int(text)) if text else MAX_STEPS
    except ValueError:
        raise NetworkError(f"DSRT_SNN_MAX_STEPS='{text}' is not an integer") from None



def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="snn_command", required=True)
    run = sub.add_parser("run", help="run an NIR graph on a simulated neuromorphic chip")
    run.add_argument("file", help="NIR file (.nir, HDF5)")
    run.add_argument("--steps", type=int, required=True, help="time steps to simulate")
    run.add_argument("--dt", type=float, required=True, help="time step in seconds")
    run.add_argument("--input", help=".npy array (steps, input channels) of spikes or graded payloads")
    run.add_argument("--device", default="snn:0", help="neuromorphic device id (default snn:0)")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.add_argument("--raster", help="write the spike raster to this .npz file")


def _run(args: argparse.Namespace, make: Callable[[], Any]) -> int:
    from .nir_import import default_max_bytes, from_nir

    limit = _max_steps()
    if not 1 <= args.steps <= limit:
        raise NetworkError(f"--steps {args.steps}: give 1 to {limit} steps (DSRT_SNN_MAX_STEPS)")
    if not (math.isfinite(args.dt) and args.dt > 0):
        raise NetworkError(f"--dt {args.dt}: give a positive, finite time step in seconds")
    if args.raster:
        check_output_file(args.raster, "--raster", NetworkError)
    rt = make()
    dev = rt.device(args.device)
    if dev.info.backend != "neuromorphic":
        raise NetworkError(f"{dev.id} is not a neuromorphic device (use --device snn:N)")
    net = from_nir(args.file, args.dt, max_bytes=default_max_bytes())
    x = None
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NetworkError(f"{args.input}: cannot read input spikes: {first}") from None
    res = dev.run(net, args.steps, args.dt, inputs=x)  # type: ignore[attr-defined]
    if args.raster:
        try:
            res.save_raster(args.raster)
        except OSError as exc:
            raise NetworkError(f"--raster {args.raster}: cannot write: {exc.strerror or exc}") from None
    outs = net.outputs or {p.name: p.name for p in net.populations.values() if p.kind == "neurons"}
    report: dict[str, Any] = {"device": dev.id, "file": args.file, "steps": args.steps, "dt": args.dt, "outputs": {}}
    for oname, pname in outs.items():
        ids = net.populations[pname].indices()
        report["outputs"][oname] = {"population": pname, "spike_counts": res.counts[ids].tolist(),
                                    "rates_hz": res.rates_hz[ids].tolist()}
    report["total_spikes"] = int(res.spike_ids.size)
    report["wall_seconds"] = res.wall_seconds
    report["estimate"] = res.estimate
    if args.raster:
        report["raster"] = args.raster
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{dev.id}: {args.steps} steps of {args.dt:g} s, {report['total_spikes']} spikes,"
          f" {res.wall_seconds:.3f} s wall")
    for oname, o in report["outputs"].items():
        print(f"output {oname} ({o['population']}):")
        for i, (c, r) in enumerate(zip(o["spike_counts"], o["rates_hz"], strict=True)):
            print(f"  neuron {i:>5}: {c:>8} spikes  {r:10.3f} Hz")
    est = res.estimate
    print(f"estimate (stated constants, not measured): {est['chip_seconds']:.3e} s on chip,"
          f" {est['energy_joules']:.3e} J, {est['synaptic_ops']} synaptic ops")
    if args.raster:
        print(f"raster written to {args.raster}")
    return 0


COMMAND = CliCommand(name="snn", help="spiking networks on the simulated neuromorphic chip",
                     configure=_configure, run=_run)


def _single_lif(device: Device) -> tuple[float, float, float]:
    """A LIF neuron under a constant current, below threshold, against the closed form."""
    from .network import Network

    net = Network()
    net.add_population("n", 1, "lif", tau_mem=0.02, r=1.0e3, v_leak=-0.07, v_threshold=0.0, bias=2.0e-5)
    dt, steps = 1e-4, 2000
    res = device.run(net, steps, dt, trace=[0])  # type: ignore[attr-defined]
    t = (np.arange(steps) + 1) * dt
    exact = -0.07 + 0.02 * (1 - np.exp(-t / 0.02))
    got = res.traces_real[:, 0] if res.traces_real is not None else res.traces[:, 0]
    err = float(np.max(np.abs(got - exact)))
    # Fixed point: 12-bit decay (time constant off by up to ~2%) and a quantised voltage.
    tol = 1e-12 if res.arithmetic == "float" else 1e-3
    return err, tol, float(steps * 10)


def _applies(device: Device) -> bool:
    return device.info.backend == "neuromorphic"


WORKLOAD = [WorkloadItem(name="snn-single-lif", applies=_applies, run=_single_lif, tags=("neuro",))]
