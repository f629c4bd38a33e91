"""Photonic backend benchmark: effective bits, forward throughput vs neuroptica, programming time.

Run: ``.venv/bin/python benchmarks/photonic.py --json``. neuroptica (the peer) is run in the same
invocation from a separate virtual environment (``.cache/venv-neuroptica``, created on demand with
``pip install neuroptica``) because it pins older dependencies; if it cannot be installed or run, the
JSON says so with the error instead of a ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from dsrt_photonic.clements import decompose
from dsrt_photonic.engine import PhotonicEngine
from dsrt_photonic.params import REALISTIC

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".cache" / "venv-neuroptica"
N_FORWARD, BATCH, REPEATS = 64, 1024, 5

PEER_SCRIPT = textwrap.dedent("""
    import json, time, numpy as np, neuroptica as neu
    n, batch, repeats = {n}, {batch}, {repeats}
    layer = neu.ClementsLayer(n)
    x = (np.random.default_rng(0).standard_normal((n, batch)) + 0j)
    layer.forward_pass(x)
    best = min((lambda t0: (layer.forward_pass(x), time.perf_counter() - t0)[1])(time.perf_counter())
               for _ in range(repeats))
    print(json.dumps({{"seconds": best, "version": getattr(neu, "__version__", "unknown")}}))
""")


def _peer_python() -> tuple[Path | None, str]:
    py = PEER_VENV / "bin" / "python"
    if py.exists():
        return py, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, capture_output=True, text=True)
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "neuroptica"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create {PEER_VENV}: {exc}"
    if res.returncode != 0:
        return None, f"pip install neuroptica failed: {res.stderr.strip().splitlines()[-1:]}"
    return py, ""


def neuroptica_forward() -> dict[str, Any]:
    py, why = _peer_python()
    if py is None:
        return {"error": why}
    res = subprocess.run([str(py), "-c", PEER_SCRIPT.format(n=N_FORWARD, batch=BATCH, repeats=REPEATS)],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        return {"error": f"neuroptica run failed: {res.stderr.strip()[-400:]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def effective_bits() -> dict[str, Any]:
    out = {}
    for n in (8, 16, 32, 64):
        eng = PhotonicEngine(REALISTIC.replace(mesh_size=n))
        before = eng.measure_bits(trials=3)
        eng.calibrate()
        out[str(n)] = {"before_calibration": round(before, 3), "after_calibration": round(eng.measure_bits(trials=3), 3),
                       "coupler_compensation": eng.coupler_compensation}
    return out


def forward() -> dict[str, Any]:
    eng = PhotonicEngine(REALISTIC.replace(mesh_size=N_FORWARD))
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((N_FORWARD, N_FORWARD)))[0]
    mesh = eng.mesh_u.program(decompose(u))
    x = rng.standard_normal((N_FORWARD, BATCH)) + 0j
    # Like neuroptica's forward_pass: build the mesh's transfer matrix from its phases, then apply it.
    cold = min(_timed(lambda: mesh.transfer() @ x) for _ in range(REPEATS))
    t = mesh.transfer()
    warm = min(_timed(lambda: t @ x) for _ in range(REPEATS))
    direct = min(_timed(lambda: mesh.propagate(x)) for _ in range(REPEATS))
    return {"vectors": BATCH, "n": N_FORWARD, "rebuild_transfer_s": cold, "cached_transfer_s": warm,
            "layer_by_layer_s": direct}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def programming() -> dict[str, Any]:
    eng = PhotonicEngine(REALISTIC.replace(mesh_size=64))
    eng.calibrate()
    rng = np.random.default_rng(1)
    times = []
    for _ in range(REPEATS):
        w = rng.standard_normal((64, 64))
        t0 = time.perf_counter()
        eng._program(w)  # uncached: SVD, two Clements decompositions, two calibrated programmings
        times.append(time.perf_counter() - t0)
    return {"matrix": "64x64", "best_s": min(times), "median_s": float(np.median(times)),
            "modelled_hardware_s": REALISTIC.reprogram_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    fwd = forward()
    peer = neuroptica_forward()
    report: dict[str, Any] = {
        "setting": "8-bit I/O, 12-bit phase DAC, 2 mrad phase, 5 mrad coupler, 0.1 dB/MZI, noise 1e-3 FS",
        "effective_bits": effective_bits(),
        "forward": fwd,
        "neuroptica": peer,
        "programming": programming(),
    }
    if "seconds" in peer:
        fwd["ratio_vs_neuroptica"] = peer["seconds"] / fwd["rebuild_transfer_s"]
        fwd["ratio_vs_neuroptica_cached"] = peer["seconds"] / fwd["cached_transfer_s"]
    bits32 = report["effective_bits"]["32"]["after_calibration"]
    report["targets"] = {
        "bits_n32_after_calibration>=6": bits32 >= 6,
        "forward_ratio>=4": fwd.get("ratio_vs_neuroptica", 0) >= 4,
        "programming_64_best<50ms": report["programming"]["best_s"] < 0.05,
    }
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
