"""Shared by the kernel-cache corruption tests (C on cpu:0, OpenCL on opencl:0).

``run_cases`` starts ONE driver process that imports dsrt and numpy (no backend, no threads), then
forks one child per case, so each cache load runs in its own process: a SIGBUS or SIGSEGV while
loading a corrupt entry shows up as that case's ``signal`` instead of killing pytest, and no case
pays for a fresh interpreter. Each child counts ``pickle.loads`` calls and ``CacheWarning``s,
compiles the kernels its case names, runs each once and compares with numpy. A ``read_only`` case
run as root drops the capability that lets root write through mode bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

#: Corruptions applied to kernel A's entry, and the rejection reasons each may produce.
CORRUPTIONS: dict[str, set[str]] = {
    "half": {"size-mismatch"},
    "overwrite": {"hash-mismatch"},
    "empty": {"size-mismatch"},
    "garbage": {"hash-mismatch"},
    "other-artifact": {"size-mismatch", "hash-mismatch"},
    "other-entry": {"key-mismatch"},
    "no-manifest": {"manifest-missing"},
}

DRIVER = textwrap.dedent(r"""
    import json, os, pickle, sys, traceback, warnings
    import numpy as np

    loads = pickle.loads
    count = [0]
    def counting(*a, **k):
        count[0] += 1
        return loads(*a, **k)
    pickle.loads = counting
    import dsrt
    from dsrt.kernel_cache import CacheWarning

    spec = json.load(sys.stdin)
    # Modules every child would import on its own; imported once here (no backend is initialised).
    import importlib
    for module in ["dsrt.topology", *spec.get("preload", [])]:
        importlib.import_module(module)

    def drop_dac_override():
        # Root writes anywhere: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (bits 1, 2) from this
        # process so mode bits bind it like any user, and a 0555 directory is really read-only.
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        header, data = Header(0x20080522, 0), (Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        data[0].effective &= ~0b110
        data[0].permitted &= ~0b110
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")

    def run(case):
        os.environ["DSRT_CACHE_DIR"] = case["dir"]
        os.environ.update(case.get("env", {}))
        if case.get("read_only") and os.geteuid() == 0:
            drop_dac_override()
        out = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rt = dsrt.Runtime(backends=[spec["backend"]])
            dev = rt.device(spec["device"])
            for name in case["compile"]:
                kern = spec["kernels"][name]
                k = rt.compile(kern["source"], lang=spec["lang"], name=kern["name"], device=dev)
                x = np.arange(1, 65, dtype=spec["dtype"])
                arr = dev.asarray(x)
                if spec["lang"] == "c":
                    k.launch(arr, len(x))
                else:
                    k.launch(arr, np.uint32(len(x)), global_size=len(x))
                want = x * kern["factor"] + kern["offset"]
                out[name] = {"hit": k.cache_hit, "ok": bool(np.allclose(arr.numpy(), want))}
            store = dev.programs.store if hasattr(dev, "programs") else dev._compiler.cache
        out["stats"] = store.stats
        out["warnings"] = sum(issubclass(w.category, CacheWarning) for w in caught)
        out["pickle_loads"] = count[0]
        return out

    def fork(case):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                result = run(case)
            except BaseException:
                result, code = {"error": traceback.format_exc()}, 1
            with os.fdopen(w, "w") as f:
                f.write(json.dumps(result))
            os._exit(code)
        os.close(w)
        return pid, r

    def collect(pid, r):
        with os.fdopen(r) as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"signal": sig, "exit": os.WEXITSTATUS(status) if sig is None else None,
                "result": json.loads(data) if data else None}

    results = {}
    if spec.get("parallel"):
        started = [(case["id"], fork(case)) for case in spec["cases"]]
        for cid, (pid, r) in started:
            results[cid] = collect(pid, r)
    else:
        for case in spec["cases"]:
            results[case["id"]] = collect(*fork(case))
    print(json.dumps(results))
""")


def run_cases(spec: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    """Run the driver on ``spec``; returns ``{case id: {"signal", "exit", "result"}}``."""
    res = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(spec), capture_output=True,
                         text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def check_case(outcome: dict[str, Any], case: str) -> dict[str, Any]:
    """Assert the child neither crashed nor failed; returns its result."""
    assert outcome["signal"] is None, f"{case}: the child died of signal {outcome['signal']}"
    result = outcome["result"]
    assert outcome["exit"] == 0 and result is not None, f"{case}: {result and result.get('error')}"
    return result  # type: ignore[no-any-return]


def manifests(directory: Path) -> list[dict[str, Any]]:
    """Manifests in ``directory``, oldest first."""
    found = [json.loads(p.read_text()) for p in directory.glob("*.json")]
    return sorted(found, key=lambda m: m["created"])


def entry_is_valid(directory: Path, key: str) -> bool:
    """Whether ``key``'s manifest names an artifact of the recorded size and SHA-256."""
    try:
        m = json.loads((directory / f"{key}.json").read_text())
        data = (directory / m["artifact"]).read_bytes()
    except (OSError, ValueError, KeyError):
        return False
    return m["key"] == key and len(data) == m["size"] and hashlib.sha256(data).hexdigest() == m["sha256"]


def corrupt(directory: Path, how: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    """Damage entry ``a`` (a manifest) in ``directory``; ``b`` is another valid entry."""
    art = directory / a["artifact"]
    data = art.read_bytes()
    if how == "half":
        art.write_bytes(data[: len(data) // 2])
    elif how == "overwrite":
        mid = len(data) // 2
        art.write_bytes(data[:mid] + b"\xcc" * 256 + data[mid + 256:])  # int3: SIGTRAP if it ever runs
    elif how == "empty":
        art.write_bytes(b"")
    elif how == "garbage":
        art.write_bytes(os.urandom(len(data)))
    elif how == "other-artifact":
        art.write_bytes((directory / b["artifact"]).read_bytes())
    elif how == "other-entry":
        (directory / f"{a['key']}.json").write_bytes((directory / f"{b['key']}.json").read_bytes())
        art.write_bytes((directory / b["artifact"]).read_bytes())
    elif how == "no-manifest":
        (directory / f"{a['key']}.json").unlink()
    else:
        raise ValueError(how)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
