"""Seeded input fuzzing for the file formats dsrt reads: YAML topologies, OpenQASM 2 and 3, NIR.

Each format has a few valid seed inputs; :func:`mutants` derives mutants from them with byte flips,
truncation, duplicated and deleted lines, numbers inflated to huge values, bytes that are not
UTF-8 and deep nesting (NIR files are mutated through HDF5: inflated dataset shapes, renamed
types, deleted keys, nested graphs, and raw byte flips). :func:`run_batch` feeds every mutant to
the format's reader (and, for QASM and NIR, runs what loads on its simulated device) and sorts the
outcome:

- ``located``: a ``DsrtError`` whose one-line message names the file (or a device id);
- ``unlocated``: a ``DsrtError`` that does not (or spans several lines);
- ``accepted``: loaded (and ran) without error;
- ``other``: any other exception -- a traceback a user would see (must be 0);
- ``hangs``: ran past the per-mutant budget (interrupted by ``SIGALRM``; must be 0).

Run it in a child process so that a memory or time bomb cannot take the caller down; the child
caps its address space (``RLIMIT_AS``) so a missing budget shows as ``MemoryError`` in ``other``::

    python tests/fuzz_common.py FORMAT COUNT SEED [PER_MUTANT_SECONDS]   # prints one JSON object

Used by the fuzz tests of each format and by ``benchmarks/fuzz_inputs.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
FORMATS = ("yaml", "qasm2", "qasm3", "nir")

QASM2_SEEDS = [
    b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
    b"measure q -> c;\n",
    b'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate g(theta) a, b { rx(theta) a; cx a, b; u3(pi/2, 0, pi) b; }\n'
    b"gate h2 a, b { g(0.5*pi) a, b; g(-pi/4) b, a; }\nqreg q[3];\ncreg c[3];\nh2 q[0], q[1];\n"
    b"h2 q[1], q[2];\nbarrier q;\nmeasure q[0] -> c[0];\nif (c == 1) x q[2];\nmeasure q -> c;\n",
    b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg a[2];\nqreg b[2];\ncreg m[4];\n'
    b"rz(sin(0.3) + cos(2^2) * (1 - 2/3)) a;\ncx a, b;\nreset a[0];\nmeasure a[0] -> m[0];\n"
    b"measure b[1] -> m[3];\n",
]
QASM3_SEEDS = [
    b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\n'
    b"c = measure q;\n",
    b'OPENQASM 3;\ninclude "stdgates.inc";\ngate g(t) a, b { rx(t) a; cx a, b; }\n'
    b"gate h2 a, b { g(pi/2) a, b; g(-tau/8) b, a; }\nqubit[3] q;\nbit[3] c;\nh2 q[0], q[1];\n"
    b"ctrl @ h q[0], q[2];\ninv @ s q[1];\npow(2) @ t q[2];\nc[0] = measure q[0];\n"
    b"if (c[0]) x q[1];\nc = measure q;\n",
    b"OPENQASM 3.0;\nqubit[2] q;\nbit[2] c;\nU(pi/2, 0, pi) q[0];\nreset q[1];\nbarrier q;\n"
    b"measure q -> c;\n",
]

_HUGE = ["4294967297", "18446744073709551617", "9" * 40, "9" * 400, "9" * 5000, "1e308", "1e999",
         "65536", "4096", "1000000000", "-1", "0", "100000"]
_NOT_UTF8 = [b"\xff", b"\xc3(", b"\x80\x80", b"\x00", b"\xe9", b"\xfe\xff", b"\xed\xa0\x80"]


# ------------------------------------------------------------------------------------------ mutation
def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [data]


def _nest(rng: random.Random, fmt: str) -> bytes:
    depth = rng.choice([50, 500, 5000, 50000])
    if fmt == "yaml":
        return rng.choice([b"[" * depth, b"{a: " * depth, b"- " * depth, b"&a [*a, " * min(depth, 500)])
    return rng.choice([b"(" * depth, b"-" * depth, b"{" * depth, b"sin(" * depth, b"ctrl @ " * depth])


def mutate_text(data: bytes, rng: random.Random, fmt: str) -> bytes:
    """One to three random mutations of a text input."""
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        if not data:
            data = b"\n"
        if op == 0:  # byte flip
            i = rng.randrange(len(data))
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
        elif op == 1:  # truncation
            data = data[: rng.randrange(len(data) + 1)]
        elif op == 2:  # duplicate a line, or a block of lines, many times
            lines = _lines(data)
            i = rng.randrange(len(lines))
            j = min(len(lines), i + rng.randint(1, 4))
            data = b"".join(lines[:j] + lines[i:j] * rng.choice([1, 2, 10, 200]) + lines[j:])
        elif op == 3:  # number inflation
            numbers = list(re.finditer(rb"\d+(?:\.\d+)?", data))
            if numbers:
                m = rng.choice(numbers)
                data = data[: m.start()] + rng.choice(_HUGE).encode() + data[m.end():]
        elif op == 4:  # bytes that are not UTF-8
            i = rng.randrange(len(data) + 1)
            data = data[:i] + rng.choice(_NOT_UTF8) + data[i:]
        elif op == 5:  # deep nesting
            i = rng.randrange(len(data) + 1)
            data = data[:i] + _nest(rng, fmt) + data[i:]
        elif op == 6:  # delete a line
            lines = _lines(data)
            del lines[rng.randrange(len(lines))]
            data = b"".join(lines)
        elif op == 7:  # swap two lines
            lines = _lines(data)
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"".join(lines)
        else:  # move a token somewhere else
            toks = re.findall(rb"[A-Za-z_][A-Za-z0-9_]*|\S", data)
            if toks:
                i = rng.randrange(len(data) + 1)
                data = data[:i] + rng.choice(toks) + b" " + data[i:]
    return data


def _nir_seed(path: Path) -> None:
    import nir
    import numpy as np

    rng = np.random.default_rng(0)
    lif = nir.LIF(tau=np.full(3, 0.02), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.full(3, 0.5),
                  v_reset=np.zeros(3))
    g = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([2])), "fc1": nir.Affine(weight=rng.normal(size=(3, 2)), bias=np.ones(3)),
        "lif": lif, "fc2": nir.Linear(weight=rng.normal(size=(1, 3))),
        "li": nir.LI(tau=np.array([0.01]), r=np.ones(1), v_leak=np.zeros(1)),
        "out": nir.Output(output_type=np.array([1])),
    }, edges=[("in", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "out")])
    nir.write(str(path), g)


def mutate_nir(seed_file: Path, out: Path, rng: random.Random) -> None:
    """Write a mutant of an NIR (HDF5) file to ``out``: structural changes through h5py, or raw bytes."""
    import h5py
    import numpy as np

    if rng.random() < 0.25:
        out.write_bytes(mutate_text(seed_file.read_bytes(), rng, "nir"))
        return
    shutil.copyfile(seed_file, out)
    with h5py.File(out, "r+") as f:
        nodes = f["node/nodes"]
        for _ in range(rng.randint(1, 2)):
            name = rng.choice(sorted(nodes))
            node = nodes[name]
            keys = [k for k in node if isinstance(node[k], h5py.Dataset)]
            op = rng.randrange(7)
            if op == 0 and keys:  # inflate a dataset's shape (chunked and unwritten: tiny on disk)
                k = rng.choice(keys)
                if node[k].dtype.kind in "fiu":
                    shape = rng.choice([(200_000, 200_000), (10**9,), (3, 10**8), (2**31,), (65536, 65536),
                                        (4000, 4000), (1, 1, 1, 1, 1)])
                    del node[k]
                    node.create_dataset(k, shape=shape, dtype="f8", chunks=(1,) * (len(shape) - 1) + (min(shape[-1], 1024),),
                                        compression="gzip", fillvalue=0.5)
            elif op == 1:  # rename the node type (an earlier pass may have deleted it)
                if "type" in node:
                    del node["type"]
                node.create_dataset("type", data=rng.choice([b"Linear", b"LIF", b"Conv2d", b"NIRGraph", b"Nope",
                                                             b"\xff\xfe", b"Input", b"Flatten", b"Delay"]))
            elif op == 2 and keys:  # delete a key
                del node[rng.choice(keys)]
            elif op == 3 and keys:  # odd values
                k = rng.choice(keys)
                if node[k].dtype.kind in "fiu":
                    val = rng.choice([np.nan, np.inf, -1.0, 0.0, 1e308, -1e308])
                    shape = node[k].shape
                    del node[k]
                    node.create_dataset(k, data=np.full(shape, val) if shape else val)
            elif op == 4 and "nodes" not in node:  # nest the graph deeply (once per node)
                depth = rng.choice([10, 200, 2000])
                grp = node
                for _i in range(depth):
                    grp = grp.create_group("nodes/x")
                    grp.create_dataset("type", data=b"NIRGraph")
                    grp.create_dataset("edges", data=np.zeros((0, 2), dtype="S4"))
                if "type" in node:
                    del node["type"]
                node.create_dataset("type", data=b"NIRGraph")
                if "edges" not in node:
                    node.create_dataset("edges", data=np.zeros((0, 2), dtype="S4"))
            elif op == 5:  # edges naming nodes that do not exist, or not UTF-8
                del f["node/edges"]
                f["node"].create_dataset("edges", data=np.array(
                    [[b"in", rng.choice([b"nope", b"\xff", b"fc1.x.y", b""])]], dtype="S8"))
            elif keys:  # a scalar or a 3-D array where a vector was
                k = rng.choice(keys)
                if node[k].dtype.kind in "fiu":
                    del node[k]
                    node.create_dataset(k, data=rng.choice([np.float64(2.0), np.ones((2, 2, 2)), np.zeros((0,))]))


def mutants(fmt: str, count: int, seed: int, workdir: Path) -> Iterator[Path]:
    """``count`` mutant files of ``fmt`` written into ``workdir`` (the same file name is reused)."""
    rng = random.Random(seed)
    if fmt == "yaml":
        for f in SPECS.glob("*.yaml"):
            shutil.copyfile(f, workdir / f.name)
        seeds = [f.read_bytes() for f in sorted(SPECS.glob("*.yaml"))]
    elif fmt in ("qasm2", "qasm3"):
        seeds = QASM2_SEEDS if fmt == "qasm2" else QASM3_SEEDS
    else:
        seed_file = workdir / "seed.nir"
        _nir_seed(seed_file)
    suffix = {"yaml": ".yaml", "qasm2": ".qasm", "qasm3": ".qasm", "nir": ".nir"}[fmt]
    for i in range(count):
        path = workdir / f"mutant{i % 4}{suffix}"
        if fmt == "nir":
            mutate_nir(seed_file, path, rng)
        else:
            path.write_bytes(mutate_text(rng.choice(seeds), rng, fmt))
        yield path


# ------------------------------------------------------------------------------------------ targets
def target(fmt: str) -> Callable[[Path], Any]:
    """What the command line does with a file of ``fmt``: load it, and run it where it loads."""
    if fmt == "yaml":
        from dsrt.topology import load_topology

        return load_topology
    import dsrt

    rt = dsrt.default_runtime()
    if fmt in ("qasm2", "qasm3"):
        from dsrt_quantum.qasm import load_qasm

        qpu: Any = rt.device("qpu:0")

        def run_qasm(path: Path) -> Any:
            return qpu.run(load_qasm(path), shots=64, seed=0, return_state=False)

        return run_qasm
    from dsrt_neuro.nir_import import from_nir

    snn: Any = rt.device("snn:0")

    def run_nir(path: Path) -> Any:
        return snn.run(from_nir(path, 1e-3), 20, 1e-3)

    return run_nir


class _Hang(BaseException):
    """Raised by the alarm when one mutant runs past its budget."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


_DEVICE_ID = re.compile(r"\b(qpu|snn|cpu):\d+")


def run_batch(fmt: str, count: int, seed: int, per_mutant_s: float = 5.0) -> dict[str, Any]:
    """Feed ``count`` seeded mutants of ``fmt`` to its reader; return the tally (see the module docstring)."""
    from dsrt.errors import DsrtError

    fn = target(fmt)
    tally: dict[str, Any] = {"format": fmt, "mutants": 0, "located": 0, "unlocated": 0, "accepted": 0,
                             "other": 0, "hangs": 0, "slowest_s": 0.0, "examples": []}
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{fmt}-") as tmp:
            for path in mutants(fmt, count, seed, Path(tmp)):
                tally["mutants"] += 1
                t0 = time.perf_counter()
                outcome, detail = "accepted", ""
                signal.setitimer(signal.ITIMER_REAL, per_mutant_s)
                try:
                    fn(path)
                except _Hang:
                    outcome, detail = "hangs", path.read_bytes()[:200].decode("latin-1")
                except DsrtError as exc:
                    msg = str(exc)
                    one_line = "\n" not in msg.strip()
                    named = path.name in msg or bool(_DEVICE_ID.search(msg))
                    outcome = "located" if one_line and named else "unlocated"
                    detail = msg[:300]
                except BaseException as exc:  # noqa: BLE001 - what the fuzzer looks for
                    outcome = "other"
                    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
                    detail += " @ " + " < ".join(f"{fr.filename.rsplit('/', 1)[-1]}:{fr.lineno}"
                                                 for fr in traceback.extract_tb(exc.__traceback__)[-3:])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                dt = time.perf_counter() - t0
                tally["slowest_s"] = max(tally["slowest_s"], round(dt, 4))
                tally[outcome] += 1
                if (outcome in ("other", "hangs", "unlocated") or dt > 1.0) and len(tally["examples"]) < 12:
                    tally["examples"].append({"outcome": outcome, "seconds": round(dt, 3), "detail": detail[:300],
                                              "input": path.read_bytes()[:120].decode("latin-1")})
    finally:
        signal.signal(signal.SIGALRM, old)
    return tally


def limit_memory(nbytes: int) -> None:
    """Cap this process's address space so that an unbounded allocation fails instead of swapping."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main(argv: list[str]) -> int:
    fmt, count, seed = argv[0], int(argv[1]), int(argv[2])
    per = float(argv[3]) if len(argv) > 3 else 5.0
    limit_memory(int(os.environ.get("FUZZ_MAX_AS", 6 << 30)))
    print(json.dumps(run_batch(fmt, count, seed, per)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
