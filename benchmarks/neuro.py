#!/usr/bin/env python
"""CUBA network on the simulated neuromorphic chip vs Brian2 (cython target), in the same run.

The classic current-based network (Vogels & Abbott 2005 as in Brian's examples): 10,000 LIF neurons,
80% excitatory, connection probability 0.01 (about 1,000,000 synapses), dt = 0.1 ms, 1 s simulated.
Connectivity and initial membrane values are drawn once here and handed to both simulators through
one .npz file. Brian2 needs numpy < 2.3 on Python 3.11, so it runs in its own virtual environment,
created on first use under ``.venv-brian2/`` (which ignores itself in git). Times exclude compilation
on both sides (a warm-up run compiles first). ``ratio`` = seconds_dsrt / seconds_brian2_cython.

    python benchmarks/neuro.py --json [--neurons 10000] [--seconds 1.0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-brian2"
PACKAGES = ["brian2", "numpy<2.3", "cython", "setuptools"]

# Model constants (volts, seconds), as in Brian's CUBA example.
TAUM, TAUE, TAUI = 20e-3, 5e-3, 10e-3
VT, VR, EL = -50e-3, -60e-3, -49e-3
WE, WI = 60 * 0.27 / 10 * 1e-3, -20 * 4.5 / 10 * 1e-3
REFRACTORY = 5e-3

BRIAN_SCRIPT = r'''
import json, sys, time
import numpy as np
import brian2 as b2
from brian2 import ms, mV, second
d = np.load(sys.argv[1])
b2.prefs.codegen.target = "cython"
b2.defaultclock.dt = float(d["dt"]) * second
taum, taue, taui = 20*ms, 5*ms, 10*ms
Vt, Vr, El = -50*mV, -60*mV, -49*mV
eqs = """
dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
dge/dt = -ge/taue : volt
dgi/dt = -gi/taui : volt
"""
N, NE = int(d["n"]), int(d["ne"])
P = b2.NeuronGroup(N, eqs, threshold="v>Vt", reset="v = Vr", refractory=5*ms, method="exact")
P.v = d["v0"] * b2.volt
P.ge = 0 * mV
P.gi = 0 * mV
pre, post = d["pre"], d["post"]
exc = pre < NE
Ce = b2.Synapses(P, P, on_pre="ge += %r*volt" % float(d["we"]))
Ce.connect(i=pre[exc], j=post[exc])
Ci = b2.Synapses(P, P, on_pre="gi += %r*volt" % float(d["wi"]))
Ci.connect(i=pre[~exc], j=post[~exc])
M = b2.SpikeMonitor(P)
net = b2.Network(P, Ce, Ci, M)
t0 = time.perf_counter()
net.run(0 * ms)          # compiles every code object (excluded from the timing)
t_compile = time.perf_counter() - t0
t0 = time.perf_counter()
net.run(float(d["duration"]) * second)
seconds = time.perf_counter() - t0
steps = np.rint(np.asarray(M.t / second) / float(d["dt"])).astype(np.int64)
np.savez(sys.argv[2], steps=steps, ids=np.asarray(M.i, np.int64))
print(json.dumps({"seconds": seconds, "compile_seconds": t_compile, "version": b2.__version__}))
'''


def brian_python() -> Path:
    """The Brian2 environment's interpreter, created with its packages on first use."""
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import brian2, Cython"], capture_output=True).returncode == 0:
        return py
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    (VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return py


def make_network(n: int, p: float, seed: int) -> dict[str, np.ndarray]:
    """Bernoulli(p) connectivity over all ordered pairs, drawn in row blocks; initial v in [Vr, Vt)."""
    rng = np.random.default_rng(seed)
    pres, posts = [], []
    block = 500
    for start in range(0, n, block):
        rows = min(block, n - start)
        i, j = np.nonzero(rng.random((rows, n)) < p)
        pres.append(i + start)
        posts.append(j)
    v0 = VR + rng.random(n) * (VT - VR)
    return {"pre": np.concatenate(pres), "post": np.concatenate(posts), "v0": v0}


def run_dsrt(data: dict[str, np.ndarray], n: int, ne: int, steps: int, dt: float, repeat: int) -> dict:
    import dsrt
    from dsrt_neuro import Network

    rt = dsrt.Runtime()
    dev = rt.device("snn:0")
    net = Network()
    pop = net.add_population("cuba", n, "cuba_lif", tau_mem=TAUM, tau_syn=TAUE, tau_syn2=TAUI, v_leak=EL,
                             v_threshold=VT, v_reset=VR, refractory=REFRACTORY, v0=data["v0"])
    pre, post = data["pre"], data["post"]
    inh = (pre >= ne).astype(np.int64)
    net.connect_sparse(pop, pop, pre, post, np.where(inh == 1, WI, WE), delay=1, channel=inh)
    dev.run(net, 10, dt)  # compiles the engine (excluded, like Brian's compile)
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = dev.run(net, steps, dt)
        took = time.perf_counter() - t0
        if took < best:
            best, res = took, r
    assert res is not None
    return {"seconds": best, "engine_seconds": res.wall_seconds, "steps": res.spike_steps, "ids": res.spike_ids,
            "cores_used": res.cores_used, "estimate": res.estimate}


def first_difference(a_steps: np.ndarray, a_ids: np.ndarray, b_steps: np.ndarray, b_ids: np.ndarray) -> int | None:
    """The first step at which the two rasters' spike sets differ (None if identical)."""
    ka = np.lexsort((a_ids, a_steps))
    kb = np.lexsort((b_ids, b_steps))
    a = np.stack([a_steps[ka], a_ids[ka]], 1)
    b = np.stack([b_steps[kb], b_ids[kb]], 1)
    m = min(len(a), len(b))
    neq = np.nonzero(np.any(a[:m] != b[:m], axis=1))[0]
    if neq.size:
        return int(min(a[neq[0], 0], b[neq[0], 0]))
    if len(a) != len(b):
        return int((a if len(a) > len(b) else b)[m, 0])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--neurons", type=int, default=10_000)
    ap.add_argument("--p", type=float, default=0.01)
    ap.add_argument("--seconds", type=float, default=1.0, help="simulated time")
    ap.add_argument("--dt", type=float, default=1e-4)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-brian2", action="store_true", help="skip the peer (the result then has no ratio)")
    args = ap.parse_args()
    n, ne = args.neurons, round(args.neurons * 0.8)
    steps = round(args.seconds / args.dt)
    data = make_network(n, args.p, args.seed)
    out: dict = {"benchmark": "neuro-cuba", "neurons": n, "excitatory": ne, "synapses": int(data["pre"].size),
                 "dt": args.dt, "steps": steps, "simulated_seconds": args.seconds}
    d = run_dsrt(data, n, ne, steps, args.dt, args.repeat)
    out["seconds_dsrt"] = d["seconds"]
    out["seconds_dsrt_engine"] = d["engine_seconds"]
    out["rate_dsrt_hz"] = d["ids"].size / n / args.seconds
    out["cores_used"] = d["cores_used"]
    out["chip_estimate"] = {k: d["estimate"][k] for k in ("chip_seconds", "energy_joules", "synaptic_ops", "note")}
    if not args.no_brian2:
        py = brian_python()
        with tempfile.TemporaryDirectory(prefix="dsrt-neuro-bench-") as tmp:
            inp, res = os.path.join(tmp, "net.npz"), os.path.join(tmp, "raster.npz")
            script = os.path.join(tmp, "cuba_brian2.py")
            Path(script).write_text(BRIAN_SCRIPT)
            np.savez(inp, n=n, ne=ne, dt=args.dt, duration=args.seconds, we=WE, wi=WI, **data)
            bests: list[dict] = []
            for _ in range(args.repeat):
                proc = subprocess.run([str(py), script, inp, res], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                bests.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            b = min(bests, key=lambda r: r["seconds"])
            r = np.load(res)
            out["seconds_brian2_cython"] = b["seconds"]
            out["brian2_compile_seconds_excluded"] = b["compile_seconds"]
            out["brian2_version"] = b["version"]
            out["rate_brian2_hz"] = r["ids"].size / n / args.seconds
            out["ratio"] = out["seconds_dsrt"] / out["seconds_brian2_cython"]
            out["rate_relative_difference"] = abs(out["rate_dsrt_hz"] - out["rate_brian2_hz"]) / out["rate_brian2_hz"]
            out["first_differing_step"] = first_difference(d["steps"].astype(np.int64), d["ids"].astype(np.int64),
                                                           r["steps"], r["ids"])
            out["targets"] = {"rate_within_1pct": out["rate_relative_difference"] <= 0.01, "ratio_at_most_1": out["ratio"] <= 1.0}
    print(json.dumps(out, indent=2 if args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
